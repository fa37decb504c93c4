"""Real identity providers the tests start on 127.0.0.1: an OpenID Connect provider
(discovery + JWKS, signing with keys made at test time) and an RFC 7662 introspection
endpoint. Both are stdlib HTTP servers in a thread that record what they were asked."""

from __future__ import annotations

import base64
import json
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs

import jwt

from tests.unit.identity.support import LocalServer, jwk, rsa_key

Reply = tuple[int, bytes]


class Server(LocalServer):
    """Routes by path; `reply(method, path, headers, body)` is overridden by each provider."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self._listen()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply(self, method: str, path: str, headers: Any, body: bytes) -> Reply:
        return 404, b"{}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                server.requests.append((self.command, self.path))
                if server.delay:
                    time.sleep(server.delay)
                status, out = server.reply(self.command, self.path, self.headers, body)
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = _serve

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


class OidcProvider(Server):
    """`issuer` is this server's base URL; `discovery` and `keys` may be changed by a test
    (a dict is served as JSON, bytes as they are, an int as that HTTP status)."""

    def __init__(self, issuer_path: str = "") -> None:
        super().__init__()
        self.issuer = self.base + issuer_path
        self.signing = {"k1": rsa_key(2048, 0)}  # kid -> private key
        self.discovery: Any = {
            "issuer": self.issuer,
            "jwks_uri": self.base + "/keys",
            "id_token_signing_alg_values_supported": ["RS256"],
        }
        self.keys: Any = None  # None: the public keys of `signing`

    def rotate(self, kid: str, n: int) -> None:
        """Publish only a new key (the old one is gone)."""
        self.signing = {kid: rsa_key(2048, n)}

    def jwks(self) -> dict[str, Any]:
        return {"keys": [jwk(k, kid, "RS256") for kid, k in self.signing.items()]}

    def sign(self, claims: dict[str, Any], kid: str | None = None, **extra: Any) -> str:
        kid = kid or next(iter(self.signing))
        now = int(time.time())
        body = {"iss": self.issuer, "iat": now, "exp": now + 600, **claims}
        return jwt.encode(body, self.signing[kid], "RS256", headers={"kid": kid, **extra})

    def reply(self, method: str, path: str, headers: Any, body: bytes) -> Reply:
        if path.endswith("/.well-known/openid-configuration"):
            return _out(self.discovery)
        if path == "/keys":
            return _out(self.jwks() if self.keys is None else self.keys)
        return 404, b"{}"


class IntrospectionServer(Server):
    """RFC 7662: `answers` maps a token to its answer (unknown tokens are inactive); the
    client must authenticate with `client_id`/`secret` (HTTP Basic), else 401."""

    def __init__(self, client_id: str = "authz", secret: str = "introspection-secret") -> None:
        super().__init__()
        self.client_id, self.secret = client_id, secret
        self.answers: dict[str, dict[str, Any]] = {}
        self.override: Any = None  # a dict/bytes/status served whatever the token
        self.forms: list[dict[str, list[str]]] = []

    @property
    def url(self) -> str:
        return self.base + "/introspect"

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {"url": self.url, "clientId": self.client_id, "clientSecret": self.secret, **extra}

    def reply(self, method: str, path: str, headers: Any, body: bytes) -> Reply:
        if method != "POST" or path != "/introspect":
            return 405, b"{}"
        pair = f"{self.client_id}:{self.secret}".encode()
        if headers.get("authorization") != "Basic " + base64.b64encode(pair).decode():
            return 401, b'{"error": "invalid_client"}'
        form = parse_qs(body.decode())
        self.forms.append(form)
        if self.override is not None:
            return _out(self.override)
        token = form.get("token", [""])[0]
        return _out(self.answers.get(token, {"active": False}))


def _out(value: Any) -> Reply:
    if isinstance(value, int):
        return value, b"{}"
    if isinstance(value, bytes):
        return 200, value
    return 200, json.dumps(value).encode()
