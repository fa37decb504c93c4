"""Shared helpers for the identity tests: keys, hand-built tokens, a local JWKS server."""

from __future__ import annotations

import base64
import json
import threading
import time
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, get_default_algorithms

from authz.config.auth import AuthSettings
from authz.identity.identity import Identity
from tests.helpers import free_port

ALGS = get_default_algorithms()
HS_SECRET = "s" * 64  # long enough for HS512


class Clock:
    """A settable wall clock (and a separate monotonic one) for expiry and rate-limit tests."""

    def __init__(self, now: float | None = None):
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


@cache
def rsa_key(bits: int = 2048, n: int = 0) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@cache
def ec_key(curve: str, n: int = 0) -> ec.EllipticCurvePrivateKey:
    curves = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}
    return ec.generate_private_key(curves[curve]())


@cache
def ed_key(kind: str = "Ed25519", n: int = 0) -> Any:
    return (ed25519.Ed25519PrivateKey if kind == "Ed25519" else ed448.Ed448PrivateKey).generate()


def private_key_for(alg: str, n: int = 0) -> Any:
    """A private key (cached per alg and n) able to sign `alg`."""
    if alg.startswith(("RS", "PS")):
        return rsa_key(2048, n)
    if alg.startswith("ES"):
        return ec_key({"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[alg], n)
    return ed_key("Ed25519", n)


def public_pem(private: Any) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def private_pem(private: Any) -> str:
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def jwk(private: Any, kid: str | None = None, alg: str | None = None, **extra: Any) -> dict:
    """The public JWK of a key, as an identity provider would publish it."""
    public = private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        out = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        out = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        out = OKPAlgorithm.to_jwk(public, as_dict=True)
    if kid is not None:
        out["kid"] = kid
    if alg is not None:
        out["alg"] = alg
    return {**out, **extra}


def b64(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(part: dict | bytes | str) -> str:
    """A dict is JSON-encoded; bytes/str are taken as the raw JSON text."""
    if isinstance(part, dict):
        part = json.dumps(part)
    return b64(part)


def token(
    header: dict | bytes | str,
    payload: dict | bytes | str,
    key: Any = HS_SECRET,
    alg: str | None = None,
) -> str:
    """Sign exactly these header and payload bytes (unlike jwt.encode, which normalises)."""
    if alg is None:
        alg = header["alg"] if isinstance(header, dict) else "HS256"
    signing_input = f"{segment(header)}.{segment(payload)}"
    impl = ALGS[alg]
    if isinstance(key, str):
        key = key.encode()
    sig = impl.sign(signing_input.encode(), key)
    return f"{signing_input}.{b64(sig)}"


def hs_token(payload: dict, *, alg: str = "HS256", secret: str = HS_SECRET, **header: Any) -> str:
    return token({"alg": alg, "typ": "JWT", **header}, payload, secret, alg)


def make_identity(
    auth: dict | None = None,
    *,
    base_dir: Path = Path("."),
    clock: Clock | None = None,
    monotonic: Clock | None = None,
    project: str = "demo",
) -> Identity:
    settings = AuthSettings.model_validate(auth if auth is not None else {})
    extra: dict[str, Any] = {}
    if clock is not None:
        extra["clock"] = clock
    if monotonic is not None:
        extra["monotonic"] = monotonic
    return Identity(settings, base_dir=base_dir, project=project, **extra)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeout tests) is expected, not a failure


class LocalServer:
    """A stdlib HTTP server on 127.0.0.1 in a thread, run with `with`; `_handler` says what it
    answers (subclasses)."""

    def _listen(self) -> None:
        self.port = free_port()
        self._server = _QuietServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class HttpServer(LocalServer):
    """A stdlib HTTP server on 127.0.0.1 in a thread; serves `body` and counts requests."""

    def __init__(self, body: bytes | dict = b"{}", status: int = 200):
        self.status = status
        self.delay = 0.0
        self.headers: dict[str, str] = {}
        self.requests: list[str] = []
        self.set(body)
        self._listen()

    def set(self, body: bytes | dict, status: int = 200) -> None:
        self.body = json.dumps(body).encode() if isinstance(body, dict) else body
        self.status = status

    def set_keys(self, *keys: dict) -> None:
        self.set({"keys": list(keys)})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                if server.delay:
                    time.sleep(server.delay)
                self.send_response(server.status)
                for name, value in server.headers.items():
                    self.send_header(name, value)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler
