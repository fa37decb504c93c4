"""Fuzz targets: each takes bytes and raises only when it finds a bug (an exception other than
the documented ConfigError/RequestError/TokenError, an internal-error decision, or an allow no
rule could give). Shared by atheris (tests.fuzz.worker) and the smoke test."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import jwt

from authz.authorizer import Authorizer
from authz.config.load import load_config, load_config_text
from authz.config.schema import Limits
from authz.envoy.decode import decode
from authz.envoy.encode import encode
from authz.errors import ConfigError, RequestError, TokenError
from authz.request import parse_json_body
from tests.fuzz.http_targets import serve_bytes

ROOT = Path(__file__).resolve().parents[2]
SECRET = "fuzz-secret-0123456789abcdef0123456789"
AES_KEY = "ZnV6ei1hZXMta2V5LTMyLWJ5dGVzLWxvbmctZW5vdWc="  # base64 of 32 bytes
ENV = {"AUTHZ_SECRET": SECRET, "AUTHZ_AES_KEY": AES_KEY}
LOOP = asyncio.new_event_loop()  # one loop for every input: asyncio.run per input is slow
AUTHORIZER = Authorizer(load_config(ROOT / "config" / "example.yaml", ENV))
IDENTITY = AUTHORIZER.runtime.identity
LIMITS = Limits()
NEVER_ALLOWED = {("orders", "export"), ("orders", "refund")}


class FuzzFinding(AssertionError):
    """A property the target checks does not hold."""


def _verified(token: str | None) -> dict[str, object] | None:
    """Claims PyJWT accepts for this token with our secret (a second opinion), else None."""
    try:
        return jwt.decode(token or "", SECRET, algorithms=["HS256"], leeway=30)
    except Exception:
        return None


def check_request(data: bytes) -> None:
    """CheckRequest bytes through decode -> Authorizer.check -> encode on config/example.yaml."""
    try:
        req = decode(data)
    except RequestError:
        return
    decision = LOOP.run_until_complete(AUTHORIZER.check(req))
    encode(decision).SerializeToString()
    if decision.status == 500:
        raise FuzzFinding(f"internal error: {decision.reason}")
    if not decision.allowed:
        return
    where = (decision.service, decision.endpoint)
    if where in NEVER_ALLOWED:
        raise FuzzFinding(f"allowed on {where}")
    if decision.endpoint not in ("health", None):  # anything else needs a verified token
        auth = req.headers.get("authorization", "")
        claims = _verified(auth.partition(" ")[2].strip())
        if claims is None:
            raise FuzzFinding(f"allowed on {where} without a token PyJWT accepts")
        if decision.endpoint == "admin" and claims.get("role") != "admin":
            raise FuzzFinding("admin endpoint allowed for a non-admin")


def token(data: bytes) -> None:
    """A token string into Identity.verify: TokenError or claims PyJWT agrees with."""
    text = data.decode("utf-8", errors="surrogateescape")
    try:
        claims = LOOP.run_until_complete(IDENTITY.verify(text))
    except TokenError:
        return
    if _verified(text) != claims:
        raise FuzzFinding(f"verified a token PyJWT rejects: {text[:200]!r}")


def json_body(data: bytes) -> None:
    """parse_json_body: RequestError, or strict JSON within the limits."""
    try:
        value = parse_json_body(data, LIMITS)
    except RequestError:
        return
    json.dumps(value, allow_nan=False)  # NaN/Infinity would raise here
    if _depth(value) > LIMITS.maxJsonDepth:
        raise FuzzFinding("a body deeper than maxJsonDepth was accepted")


def _depth(value: object) -> int:
    best, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            best = max(best, d)
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return best


def config(data: bytes) -> None:
    """A config document through load_config_text and the rule compiler: ConfigError or a
    compiled Authorizer, nothing else."""
    text = data.decode("utf-8", errors="replace")
    try:
        Authorizer(load_config_text(text, ENV, name="fuzz.yaml", base_dir=Path("/nonexistent")))
    except ConfigError:
        return


def http_request(data: bytes) -> None:
    """Raw bytes into the HTTP Check server (tests/fuzz/http_targets.py)."""
    statuses, decisions, _closed = serve_bytes(LOOP, AUTHORIZER, data)
    if any(s >= 500 for s in statuses):
        raise FuzzFinding(f"internal error answer: {statuses}")
    if len(statuses) < len(decisions):
        raise FuzzFinding(f"{len(decisions)} Checks, {len(statuses)} answers")
    for d in decisions:
        if d is not None and d.allowed and (d.service, d.endpoint) in NEVER_ALLOWED:
            raise FuzzFinding(f"allowed on {(d.service, d.endpoint)}")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "http_request": http_request,
    "check_request": check_request,
    "token": token,
    "json_body": json_body,
    "config": config,
}


# --- seeds --------------------------------------------------------------------------------


def seeds(name: str) -> list[bytes]:
    """A few meaningful starting inputs per target (the saved corpus adds the rest)."""
    from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

    now = int(time.time())
    good = jwt.encode({"id": "u1", "role": "admin", "exp": now + 10 * 365 * 86400}, SECRET,
                      "HS256", headers={"kid": "main"})  # fmt: skip
    if name == "check_request":
        out = []
        for method, path, ctx, body in [
            ("GET", "/v1/health", {}, b""),
            ("GET", "/v1/admin/stats", {"service": "orders", "endpoint": "admin"}, b""),
            ("POST", "/v1/orders", {}, b'{"item": "x", "amount": 5}'),
            ("GET", "/v1/orders/o-1?x=1", {"service": "orders", "endpoint": "get"}, b""),
            ("PATCH", "/v1/orders/o-1", {}, b'{"amount": 1, "userId": "x"}'),
        ]:
            msg = CheckRequest()
            http = msg.attributes.request.http
            http.method, http.path, http.raw_body = method, path, body
            http.headers["authorization"] = f"Bearer {good}"
            if body:
                http.headers["content-type"] = "application/json"
            msg.attributes.context_extensions.update(ctx)
            out.append(msg.SerializeToString())
        return out
    if name == "http_request":
        auth = f"authorization: Bearer {good}\r\n".encode()
        return [
            b"GET /v1/health HTTP/1.1\r\nhost: a\r\n\r\n",
            b"GET /v1/admin/stats HTTP/1.1\r\n" + auth + b"\r\nHEAD /v1/health HTTP/1.1\r\n\r\n",
            b"POST /v1/orders HTTP/1.1\r\n" + auth + b"content-type: application/json\r\n"
            b'content-length: 26\r\n\r\n{"item": "x", "amount": 5}',
            b"PATCH /v1/orders/o-1 HTTP/1.1\r\n" + auth + b"transfer-encoding: chunked\r\n"
            b'content-type: application/json\r\n\r\n5\r\n{"a":\r\n2\r\n1}\r\n0\r\n\r\n',
            b"GET /v1/orders?_method=DELETE HTTP/1.0\r\n" + auth + b"\r\n",
        ]
    if name == "token":
        return [good.encode(), b"a.b.c", good.rsplit(".", 1)[0].encode() + b"."]
    if name == "json_body":
        return [b'{"a": [1, 2.5, null, true, "x"]}', b"[[[]]]", b'{"a": {"b": {"c": 1e5}}}']
    return [(ROOT / "config" / "example.yaml").read_bytes(),
            b"project: p\nservices: {s: {endpoints: {e: {rule: {rule: allow}}}}}\n"]  # fmt: skip
