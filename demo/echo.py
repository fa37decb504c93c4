"""A demo upstream: answers every request with JSON describing what it received.

`make run` starts it as the service behind Envoy; the integration tests run it in a thread
and read `EchoServer.requests` to see exactly what Envoy forwarded (headers set or removed
by authz, the body). Standard library only.

    python demo/echo.py --port 8001
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 8 << 20  # the demo never needs more; refuse instead of buffering without bound


class EchoServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that records each request it answers."""

    daemon_threads = True  # a stuck client never blocks shutdown
    allow_reuse_address = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, verbose: bool = False):
        super().__init__((host, port), _Handler)
        self.verbose = verbose
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A copy of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def record(self, seen: dict[str, Any]) -> None:
        with self._lock:
            self._requests.append(seen)

    def start(self) -> EchoServer:
        """Serve in a background thread (tests)."""
        self._thread = threading.Thread(target=self.serve_forever, name="echo", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: Envoy reuses upstream connections
    server: EchoServer

    def _answer(self) -> None:
        try:
            body = self._read_body()
        except ValueError as exc:
            self._send(400, {"error": str(exc)})
            return
        url = urlsplit(self.path)
        seen = {
            "method": self.command,
            "path": url.path,
            "query": _query(url.query),
            "headers": _headers(self.headers.items()),
            "body": body.decode("utf-8", errors="replace"),
        }
        self.server.record(seen)
        self._send(200, seen)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _answer

    def do_HEAD(self) -> None:
        self._read_body()
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("content-length") or 0)
        if not 0 <= length <= MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        out = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(out)
            if len(out) + size > MAX_BODY:
                raise ValueError("body too large")
            out += self.rfile.read(size)
            self.rfile.readline()  # CRLF after each chunk

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, indent=2).encode() + b"\n"
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"[echo] {self.command} {self.path}\n")


def _query(raw: str) -> dict[str, str | list[str]]:
    parsed = parse_qs(raw, keep_blank_values=True)
    return {k: v[0] if len(v) == 1 else v for k, v in parsed.items()}


def _headers(items: list[tuple[str, str]]) -> dict[str, str | list[str]]:
    """Lower-case names; a repeated header becomes a list (tests can see duplicates)."""
    out: dict[str, str | list[str]] = {}
    for name, value in items:
        key = name.lower()
        if key in out:
            prev = out[key]
            out[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[key] = value
    return out


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Echo upstream for the authz demo.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = parser.parse_args(argv)
    try:
        server = EchoServer(args.host, args.port, verbose=args.verbose)
    except OSError as exc:
        print(f"echo: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"echo: listening on http://{args.host}:{server.port}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM ends it like Ctrl-C: exit 0
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
