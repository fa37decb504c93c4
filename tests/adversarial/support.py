"""Shared pieces of the adversarial suite: raw HTTP (paths sent exactly as written), a canary
HTTP server that must never be called, and hand-built JWTs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.integration.harness import KID, SECRET


def raw_request(
    port: int,
    target: str,
    headers: list[tuple[str, str]],
    method: str = "GET",
    body: bytes = b"",
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request with the target and headers byte for byte (repeats allowed).
    Status 0: the proxy closed the connection without an answer (a refusal)."""
    lines = [f"{method} {target} HTTP/1.1", "host: 127.0.0.1", "connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"content-length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return 0, b""
        chunks = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    raw = b"".join(chunks)
    return (0, b"") if not raw else _parse_response(raw)


def _parse_response(raw: bytes) -> tuple[int, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    parts = status_line.split(b" ")
    if len(parts) < 2 or not parts[1].isdigit():
        raise AssertionError(f"no HTTP response: {raw[:200]!r}")
    return int(parts[1]), body


class Canary:
    """An HTTP server that counts every request it gets: key-locating token headers point here."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        canary = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                canary.hits.append(self.path)
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(obj: Any) -> str:
    return b64(obj if isinstance(obj, bytes) else json.dumps(obj).encode())


def hs256(header: Any, payload: Any, secret: bytes | str = SECRET) -> str:
    """A token signed with HMAC-SHA256 over whatever header and payload are given."""
    key = secret.encode() if isinstance(secret, str) else secret
    signing_input = f"{segment(header)}.{segment(payload)}"
    sig = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"id": "u1", "role": "user", "iat": now, "exp": now + 600, **extra}


def good_header(**extra: Any) -> dict[str, Any]:
    return {"alg": "HS256", "typ": "JWT", "kid": KID, **extra}
