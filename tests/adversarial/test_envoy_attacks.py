"""Attacks on the HTTP side, through a real Envoy (envoy/envoy.yaml's HCM settings and
routes, free ports) in front of `authz serve` with config/example.yaml plus a cookie token
source and an RS256 public key (for key-confusion attacks).

Every denial must leave the upstream untouched; every allow of a mangled path must be an
allow the canonical path would get too.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jwt
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.adversarial.support import (
    Canary,
    b64,
    claims,
    good_header,
    hs256,
    raw_request,
    segment,
)
from tests.integration.harness import EXAMPLE_CONFIG, SECRET, Stack, start_stack

pytestmark = pytest.mark.integration

USER = {"id": "u1", "role": "user", "orders": ["o-1", "o-2"]}
ADMIN = {"id": "admin-1", "role": "admin"}
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
ATTACKER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def adversarial_config() -> str:
    """config/example.yaml + a cookie token source + an RS256 verification key (kid rsa)."""
    doc = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    doc["auth"]["token"] = {"header": "authorization", "scheme": "Bearer", "cookie": "session"}
    doc["auth"]["secrets"].append({"kid": "rsa", "alg": "RS256", "publicKey": RSA_PEM.decode()})
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    c = Canary()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def stack(log_dir: Path) -> Iterator[Stack]:
    config = log_dir / "adversarial.yaml"
    config.write_text(adversarial_config(), encoding="utf-8")
    s = start_stack(config, log_dir, plain=True)
    yield s
    s.stop()


def tok(who: dict[str, Any], **extra: Any) -> str:
    return hs256(good_header(), claims(**{**who, **extra}))


def send(
    stack: Stack,
    target: str,
    headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
    *,
    method: str = "GET",
    body: bytes = b"",
    plain: bool = False,
) -> tuple[int, bytes, list[dict[str, Any]]]:
    """Status, body and what the upstream saw (matched by a fresh x-request-id)."""
    rid = str(uuid.uuid4())
    port = stack.envoy.plain_port if plain else stack.envoy.port
    assert port is not None
    status, data = raw_request(port, target, [("x-request-id", rid), *headers], method, body)
    return status, data, stack.seen(rid)


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def assert_denied(status: int, body: bytes, seen: list[Any], expected: int | None = None) -> None:
    assert 400 <= status < 500, (status, body[:300])
    if expected is not None:
        assert status == expected, (status, body[:300])
    assert seen == [], "a denied request reached the upstream"


# --- path confusion (row 18) -------------------------------------------------------------

_DOTS = re.compile(r"/\.(?=/|$)")


def lenient(path: str) -> str:
    """How a permissive upstream framework might read a path: decoded, case-folded,
    `;params` dropped, slashes merged, dot segments resolved, no trailing slash."""
    path = unquote(path.split("?", 1)[0].split("#", 1)[0]).replace("\\", "/").lower()
    out: list[str] = []
    for seg in path.split("/"):
        seg = seg.split(";", 1)[0]
        if seg in ("", "."):
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    return "/" + "/".join(out)


ADMIN_PATH = "/v1/admin/stats"
ORDER_PATH = "/v1/orders/o-3"  # USER may read o-1, o-2 only
EXPORT_PATH = "/v1/legacy/export"  # always denied
VARIANTS: list[tuple[str, str]] = (
    [
        (ADMIN_PATH, v)
        for v in [
            "//v1/admin/stats",
            "/v1//admin//stats",
            "/v1/health/../admin/stats",
            "/v1/health/%2e%2e/admin/stats",
            "/v1/health/%2E%2E/admin/stats",
            "/v1/health/.%2e/admin/stats",
            "/v1/./admin/stats",
            "/v1/%2e/admin/stats",
            "/v1/health/../../../v1/admin/stats",
            "/v1/admin/stats/",
            "/v1/admin/stats;x=1",
            "/v1/admin;x=1/stats",
            "/v1/health;/../admin/stats",
            "/V1/ADMIN/STATS",
            "/v1/Admin/stats",
            "/v1/%61dmin/stats",
            "/v1/admin%2Fstats",
            "/v1/health%2F..%2Fadmin%2Fstats",
            "/v1/health/..%5Cadmin%5Cstats",
            "/v1/health/..%5cadmin/stats",
            "/v1/admin/stats?x=/../health",
            "/v1/admin/stats#frag",
            "http://127.0.0.1/v1/admin/stats",
            "http://127.0.0.1/v1/health/../admin/stats",
            "http://evil.example/v1/health/%2e%2e/admin/stats",
        ]
    ]
    + [
        (ORDER_PATH, v)
        for v in [
            "/v1/orders/o-1/../o-3",
            "/v1/orders/o-1/%2e%2e/o-3",
            "/v1/orders/o-1%2F..%2Fo-3",
            "/v1/orders/./o-3",
            "//v1//orders//o-3",
            "/v1/orders/o-1;/../o-3",
            "/v1/orders/O-3",
        ]
    ]
    + [(EXPORT_PATH, v) for v in ["/v1/health/../legacy/export", "/v1/health/%2e%2e/legacy/export"]]
)
CALLERS: dict[str, dict[str, Any] | None] = {"anonymous": None, "user": USER, "admin": ADMIN}


def caller_headers(who: dict[str, Any] | None) -> list[tuple[str, str]]:
    return auth(tok(who)) if who else []


@pytest.fixture(scope="module")
def canonical(stack: Stack) -> dict[tuple[str, str, bool], int]:
    """The decision (status) for each canonical path, caller and listener."""
    out = {}
    for path in (ADMIN_PATH, ORDER_PATH, EXPORT_PATH):
        for name, who in CALLERS.items():
            for plain in (False, True):
                status, _, _ = send(stack, path, caller_headers(who), plain=plain)
                out[(path, name, plain)] = status
    # the table must be able to tell allow from deny, or the test below proves nothing
    assert out[(ADMIN_PATH, "admin", False)] == 200 and out[(ADMIN_PATH, "user", False)] == 403
    assert out[(ORDER_PATH, "admin", True)] == 200 and out[(ORDER_PATH, "user", True)] == 403
    return out


@pytest.mark.parametrize(("canon", "variant"), VARIANTS, ids=[v for _, v in VARIANTS])
def test_path_variants_decide_like_the_canonical_path_or_deny(
    stack: Stack, canonical: dict[tuple[str, str, bool], int], canon: str, variant: str
) -> None:
    for name, who in CALLERS.items():
        for plain in (False, True):
            status, body, seen = send(stack, variant, caller_headers(who), plain=plain)
            where = f"{variant} as {name} ({'plain' if plain else 'ingress'})"
            if status == 200:
                assert canonical[(canon, name, plain)] == 200, f"{where}: allowed, canonical not"
                assert len(seen) == 1, where
                assert lenient(seen[0]["path"]) == canon, (where, seen[0]["path"])
            else:
                assert_denied(status, body, seen)


# --- duplicate credentials and spoofed identity headers (rows 19, 20) ---------------------


def test_two_authorization_headers_are_refused(stack: Stack) -> None:
    good = tok(USER)
    for second in (good, tok(ADMIN), "garbage"):
        headers = [("authorization", f"Bearer {good}"), ("authorization", f"Bearer {second}")]
        status, body, seen = send(stack, "/v1/orders", headers)
        assert_denied(status, body, seen, 401)
    status, _, seen = send(stack, "/v1/orders", auth(good))  # control: one header passes
    assert status == 200 and len(seen) == 1


def test_token_in_header_and_cookie_is_refused(stack: Stack) -> None:
    good = tok(USER)
    status, _, seen = send(stack, "/v1/orders", [("cookie", f"session={good}")])
    assert status == 200 and len(seen) == 1  # control: the cookie alone is accepted
    for cookie in (f"session={good}", f"a=1; session={tok(ADMIN)}"):
        status, body, seen = send(stack, "/v1/orders", [*auth(good), ("cookie", cookie)])
        assert_denied(status, body, seen, 401)
    two = [("cookie", f"session={good}"), ("cookie", f"session={good}")]
    status, body, seen = send(stack, "/v1/orders", two)
    assert_denied(status, body, seen, 401)


def test_token_in_the_query_string_is_not_a_credential(stack: Stack) -> None:
    status, body, seen = send(stack, f"/v1/orders?access_token={tok(USER)}")
    assert_denied(status, body, seen, 401)


FORGED = jwt.encode({"id": "admin-1", "role": "admin", "iss": "demo"}, SECRET, "HS256")
SPOOFS = [("x-sc-token", FORGED), ("X-SC-TOKEN", FORGED), ("x-authz-dry-run", "deny 403")]


@pytest.mark.parametrize(
    ("target", "who"),
    [("/v1/health", None), ("/v1/health", USER), ("/v1/orders", USER), ("/v1/orders/o-1", USER)],
)
def test_client_copies_of_our_headers_never_reach_the_upstream(
    stack: Stack, target: str, who: dict[str, Any] | None
) -> None:
    headers = [*caller_headers(who), *SPOOFS, ("x-sc-token", "second-copy")]
    status, _, seen = send(stack, target, headers)
    assert status == 200 and len(seen) == 1
    upstream = seen[0]["headers"]
    assert "x-authz-dry-run" not in upstream
    ours = upstream["x-sc-token"]
    assert isinstance(ours, str), f"several x-sc-token values upstream: {ours!r}"
    service = jwt.decode(ours, SECRET, algorithms=["HS256"])
    # a top-level allow never reads the token (docs/rules.md, tokens): no caller id then
    expected = None if target == "/v1/health" else (who or {}).get("id")
    assert service["iss"] == "demo" and service.get("id") == expected


@pytest.mark.parametrize("spoof", [("x_sc_token", FORGED), ("x_authz_dry_run", "deny 403")])
def test_underscore_copies_of_our_headers_are_refused_at_the_edge(
    stack: Stack, spoof: tuple[str, str]
) -> None:
    # headers_with_underscores_action: REJECT_REQUEST (on HTTP/1: 400 or the connection closed)
    status, _, seen = send(stack, "/v1/health", [spoof])
    assert status in (0, 400) and seen == []


@pytest.mark.parametrize("who", [None, USER])
def test_the_service_token_an_upstream_sees_is_not_a_user_token(
    stack: Stack, who: dict[str, Any] | None
) -> None:
    """The demo upstream echoes the x-sc-token it got; replayed as a Bearer it is refused:
    service tokens are typed (JWT header `typ: service+jwt`), user tokens are not."""
    target = "/v1/health" if who is None else "/v1/orders"
    status, _, seen = send(stack, target, caller_headers(who))
    assert status == 200 and len(seen) == 1
    service_token = seen[0]["headers"]["x-sc-token"]
    status, body, seen = send(stack, "/v1/orders", auth(service_token))
    assert_denied(status, body, seen, 401)
    assert jwt.get_unverified_header(service_token)["typ"] == "service+jwt"


# --- JSON body bombs (row 23) --------------------------------------------------------------

BOMBS = {
    "nested-arrays-100k": b"[" * 100_000 + b"]" * 100_000,
    "nested-objects": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "5000-digit-int": b'{"item": "x", "amount": ' + b"9" * 5000 + b"}",
    "nan": b'{"item": "x", "amount": NaN}',
    "infinity": b'{"item": "x", "amount": -Infinity}',
    "duplicate-keys": b'{"item": "x", "amount": 1, "amount": 99999}',
    "10k-keys": b'{"item": "x", "amount": 1, '
    + b",".join(b'"k%d": 1' % i for i in range(10_000))
    + b"}",
    "invalid-utf8": b'{"item": "\xff\xfe", "amount": 1}',
    "lone-surrogate-escape": b'{"item": "\\ud800", "amount": 1, "x": "\\udfff\\ud800"}',
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_json_body_bombs_are_400(stack: Stack, name: str) -> None:
    headers = [*auth(tok(USER)), ("content-type", "application/json")]
    start = time.monotonic()
    status, body, seen = send(stack, "/v1/orders", headers, method="POST", body=BOMBS[name])
    elapsed = time.monotonic() - start
    if name == "lone-surrogate-escape":
        # valid JSON whose strings are not valid Unicode: a deny, or the same decision as
        # for the sanitised body (amount 1 with an item is allowed); never a 5xx
        assert status in (200, 400), (status, body[:300])
        if status == 200:
            assert len(seen) == 1
            return
    assert_denied(status, body, seen, 400)
    assert set(json.loads(body)) == {"error", "requestId"}
    assert elapsed < 2.0, f"{name}: {elapsed:.2f}s"


def test_a_sane_body_passes(stack: Stack) -> None:
    headers = [*auth(tok(USER)), ("content-type", "application/json")]
    status, _, seen = send(
        stack, "/v1/orders", headers, method="POST", body=b'{"item": "x", "amount": 5}'
    )
    assert status == 200 and len(seen) == 1


# --- the JWT attack list of SECURITY.md, end to end ---------------------------------------


def _rsa_sign(header: dict[str, Any], payload: dict[str, Any], key: Any = ATTACKER_KEY) -> str:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return jwt.encode(payload, pem, algorithm="RS256", headers=header)


def _attacker_cert_b64() -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ATTACKER_KEY.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(ATTACKER_KEY, hashes.SHA256())
    )
    import base64

    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def _attacker_jwk() -> dict[str, Any]:
    return json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(ATTACKER_KEY.public_key()))


def _none(alg: str, sig: str = "") -> str:
    return f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(claims(**ADMIN))}.{sig}"


def _deep_header() -> str:
    header = b'{"alg":"HS256","kid":"main","x":' + b"[" * 1000 + b"1" + b"]" * 1000 + b"}"
    return _raw_signed(header, json.dumps(claims(**ADMIN)).encode())


def _jwt_attacks(canary_url: str) -> dict[str, Callable[[], str]]:
    der = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk_text = jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key())
    admin = claims(**ADMIN)
    return {
        "alg-none": lambda: _none("none"),
        "alg-None": lambda: _none("None"),
        "alg-NONE-with-sig": lambda: _none("NONE", b64(b"x" * 32)),
        "alg-nOnE": lambda: _none("nOnE"),
        "alg-empty": lambda: _none(""),
        "signature-stripped": lambda: tok(ADMIN).rsplit(".", 1)[0] + ".",
        "signature-of-other-token": lambda: (
            tok(ADMIN).rsplit(".", 1)[0] + "." + tok(USER).rsplit(".", 1)[1]
        ),
        "hs-with-rsa-pem-kid-rsa": lambda: hs256({"alg": "HS256", "kid": "rsa"}, admin, RSA_PEM),
        "hs-with-rsa-pem-no-kid": lambda: hs256({"alg": "HS256"}, admin, RSA_PEM),
        "hs-with-rsa-der": lambda: hs256({"alg": "HS256", "kid": "rsa"}, admin, der),
        "hs-with-rsa-jwk-text": lambda: hs256({"alg": "HS256", "kid": "rsa"}, admin, jwk_text),
        "rs-by-attacker-kid-rsa": lambda: _rsa_sign({"kid": "rsa"}, admin),
        "jku-canary": lambda: _rsa_sign({"jku": f"{canary_url}/jku"}, admin),
        "x5u-canary": lambda: _rsa_sign({"x5u": f"{canary_url}/x5u"}, admin),
        "jwk-embedded": lambda: _rsa_sign({"jwk": _attacker_jwk()}, admin),
        "jwk-with-x5u": lambda: _rsa_sign({"jwk": {**_attacker_jwk(), "x5u": canary_url}}, admin),
        "x5c-self-signed": lambda: _rsa_sign({"x5c": [_attacker_cert_b64()]}, admin),
        "jku-on-valid-hs": lambda: hs256(good_header(jku=f"{canary_url}/k"), admin),
        "crit-unknown": lambda: hs256(good_header(crit=["exp"]), admin),
        "crit-b64-false": lambda: hs256(good_header(crit=["b64"], b64=False), admin),
        "b64-false": lambda: hs256(good_header(b64=False), admin),
        "oversized-9k": lambda: hs256(good_header(), claims(**ADMIN, pad="x" * 9000)),
        "nested-header-1000": _deep_header,
        "duplicate-header-alg": lambda: _raw_signed(
            b'{"alg":"none","alg":"HS256","kid":"main"}', json.dumps(admin).encode()
        ),
        "duplicate-claim-role": lambda: _raw_signed(
            json.dumps(good_header()).encode(),
            b'{"id":"u1","role":"user","role":"admin","exp":%d}' % (time.time() + 600),
        ),
        "exp-string": lambda: hs256(good_header(), {**admin, "exp": str(int(time.time()) + 600)}),
        "exp-bool": lambda: hs256(good_header(), {**admin, "exp": True}),
        "exp-null": lambda: hs256(good_header(), {**admin, "exp": None}),
        "exp-list": lambda: hs256(good_header(), {**admin, "exp": [9999999999]}),
        "exp-zero": lambda: hs256(good_header(), {**admin, "exp": 0}),
        "exp-past": lambda: hs256(good_header(), {**admin, "exp": int(time.time()) - 120}),
        "exp-huge-float": lambda: _raw_signed(
            json.dumps(good_header()).encode(), b'{"id":"admin-1","role":"admin","exp":1e400}'
        ),
        "nbf-future": lambda: hs256(good_header(), {**admin, "nbf": int(time.time()) + 3600}),
        "kid-not-string": lambda: hs256({"alg": "HS256", "kid": ["main"]}, admin),
        "non-canonical-b64": lambda: tok(ADMIN).replace(".", "=.", 1),
        "header-not-object": lambda: _raw_signed(b'["HS256"]', json.dumps(admin).encode()),
    }


def _raw_signed(header: bytes, payload: bytes) -> str:
    import hashlib
    import hmac

    signing_input = f"{b64(header)}.{b64(payload)}"
    sig = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


ATTACK_NAMES = list(_jwt_attacks("http://x"))


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_jwt_attacks_are_401(stack: Stack, canary: Canary, name: str) -> None:
    token = _jwt_attacks(canary.url)[name]()
    for target in ("/v1/orders", ADMIN_PATH):
        status, body, seen = send(stack, target, auth(token))
        assert_denied(status, body, seen, 401)
        assert json.loads(body)["error"] == "invalid token"
    assert canary.hits == [], f"the server fetched a key location: {canary.hits}"


def test_the_attack_generators_can_make_a_valid_token(stack: Stack) -> None:
    # Control for the list above: the same builders, used honestly, are accepted.
    status, _, seen = send(stack, ADMIN_PATH, auth(hs256(good_header(), claims(**ADMIN))))
    assert status == 200 and len(seen) == 1
    rsa_pem = RSA_KEY.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    honest = jwt.encode(claims(**ADMIN), rsa_pem, algorithm="RS256", headers={"kid": "rsa"})
    status, _, seen = send(stack, ADMIN_PATH, auth(honest))
    assert status == 200 and len(seen) == 1


def test_100_kib_token_is_refused_by_envoy_or_authz(stack: Stack) -> None:
    token = hs256(good_header(), claims(**ADMIN, pad="x" * 100 * 1024))
    status, _, seen = send(stack, ADMIN_PATH, auth(token))
    # Envoy's 431 (header limit; it may close before we read it: status 0) or authz's 401
    assert status == 0 or 400 <= status < 500, status
    assert seen == []


def test_no_traceback_and_no_grpc_error_after_the_attacks(stack: Stack) -> None:
    assert "Traceback" not in stack.authz.process.log(tail=100_000)
    stats = stack.envoy.stats("ext_authz")
    assert stats.get("http.ingress.ext_authz.error", 0) == 0, stats
    assert stats.get("http.plain.ext_authz.error", 0) == 0, stats
    assert stats.get("http.ingress.ext_authz.denied", 0) > 0, stats
