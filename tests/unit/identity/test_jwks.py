"""JWKS against a real HTTP server on 127.0.0.1: start, rotation (K3, K4), unknown-kid floods
(K1), outage and garbage (K2), remote key hygiene (K5)."""

from __future__ import annotations

import asyncio
import time

import httpx
import jwt
import pytest

from authz.errors import DependencyError, TokenError
from authz.identity.jwks import MAX_BYTES
from tests.unit.identity.support import (
    HS_SECRET,
    Clock,
    HttpServer,
    b64,
    ec_key,
    ed_key,
    hs_token,
    jwk,
    make_identity,
    rsa_key,
    token,
)

NOW = int(time.time())
CLAIMS = {"id": "u1", "exp": NOW + 600, "iss": "https://idp/"}
KEY_A, KEY_B = rsa_key(2048, 0), rsa_key(2048, 1)
JWK_A, JWK_B = jwk(KEY_A, "a", "RS256"), jwk(KEY_B, "b", "RS256")


def rs(key, kid: str | None, claims: dict = CLAIMS, alg: str = "RS256") -> str:
    return jwt.encode(claims, key, alg, headers={"kid": kid} if kid else None)


async def rejected(ident, tok: str, reason: str = "") -> None:
    with pytest.raises(TokenError) as e:
        await ident.verify(tok)
    assert reason in e.value.reason


@pytest.fixture
async def http():
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


@pytest.fixture
def server():
    with HttpServer({"keys": [JWK_A]}) as s:
        yield s


@pytest.fixture
def mono():
    return Clock(1000.0)


@pytest.fixture
async def started(server, http, mono):
    """An Identity on the server's JWKS, started (one fetch done)."""
    ident = make_identity(
        {"secrets": [{"jwksUrl": server.url, "issuer": "https://idp/"}]}, monotonic=mono
    )
    await ident.start(http)
    yield ident
    await ident.close()


def keys_of(ident) -> list[str | None]:
    return [k.kid for k in ident.sources[0].keys or ()]


async def test_fetch_at_start(server, http, mono):
    ident = make_identity({"secrets": [{"jwksUrl": server.url}]}, monotonic=mono)
    assert not ident.ready
    await ident.start(http)
    try:
        assert ident.ready and server.requests == ["/jwks.json"]
        assert (await ident.verify(rs(KEY_A, "a")))["id"] == "u1"
        assert (await ident.verify(rs(KEY_A, None, {"id": "u2"})))["id"] == "u2"  # no kid: tried
        await rejected(ident, rs(KEY_B, "a"), "bad signature")
    finally:
        await ident.close()


async def test_issuer_and_audience_of_the_jwks_entry(server, http, mono):
    ident = make_identity(
        {"secrets": [{"jwksUrl": server.url, "issuer": "https://idp/", "audience": "orders"}]},
        monotonic=mono,
    )
    await ident.start(http)
    try:
        assert await ident.verify(rs(KEY_A, "a", {**CLAIMS, "aud": "orders"}))
        await rejected(ident, rs(KEY_A, "a", {**CLAIMS, "aud": "billing"}), "audience")
        await rejected(ident, rs(KEY_A, "a", {**CLAIMS, "iss": "https://evil/"}), "issuer")
    finally:
        await ident.close()


async def test_start_failure_leaves_not_ready_then_recovers(server, http, mono):
    server.set(b"oops", status=503)
    ident = make_identity({"secrets": [{"jwksUrl": server.url}]}, monotonic=mono)
    await ident.start(http)  # does not raise
    try:
        assert not ident.ready
        # the token may be good: a key set that never loaded is a 503, not a 401
        with pytest.raises(DependencyError, match="has not loaded"):
            await ident.verify(rs(KEY_A, "a"))
        server.set({"keys": [JWK_A]})
        mono.now += 31
        assert (await ident.verify(rs(KEY_A, "a")))["id"] == "u1"  # on-demand refresh
        assert ident.ready
    finally:
        await ident.close()


async def test_unreachable_server_at_start(http, mono):
    from tests.helpers import free_port

    url = f"http://127.0.0.1:{free_port()}/jwks.json"  # nothing listens there
    ident = make_identity({"secrets": [{"jwksUrl": url}, {"secret": HS_SECRET}]}, monotonic=mono)
    await ident.start(http)
    try:
        assert not ident.ready
        assert await ident.verify(hs_token({"id": "u1"}))  # static keys unaffected
    finally:
        await ident.close()


async def test_rotation_new_kid_by_on_demand_refresh(started, server, mono):
    assert await started.verify(rs(KEY_A, "a"))
    server.set_keys(JWK_A, JWK_B)
    # within 30 s of the last fetch the new kid is not fetched for
    await rejected(started, rs(KEY_B, "b"), "unknown kid")
    assert len(server.requests) == 1
    mono.now += 31
    assert (await started.verify(rs(KEY_B, "b")))["id"] == "u1"
    assert len(server.requests) == 2
    assert keys_of(started) == ["a", "b"]


async def test_rotation_removed_key_denied_and_cache_purged(started, server, mono):
    tok_a = rs(KEY_A, "a")
    assert await started.verify(tok_a)
    assert len(started.cache) == 1
    server.set_keys(JWK_B)
    mono.now += 31
    assert await started.verify(rs(KEY_B, "b"))  # the refresh that drops "a"
    assert keys_of(started) == ["b"]
    assert len(started.cache) == 1  # a's token is gone, b's is cached
    await rejected(started, tok_a, "unknown kid")


async def test_unchanged_keys_keep_their_cached_tokens(started, server, mono):
    tok_a = rs(KEY_A, "a")
    await started.verify(tok_a)
    server.set_keys(JWK_A, JWK_B)
    mono.now += 31
    await started.verify(rs(KEY_B, "b"))
    assert len(started.cache) == 2


async def test_unknown_kid_flood_is_single_flight_and_rate_limited(started, server, mono):
    server.delay = 0.2  # keep the first refresh in flight while the flood arrives
    mono.now += 31
    flood = [rs(KEY_B, f"invented-{i}") for i in range(200)]
    results = await asyncio.gather(*(started.verify(t) for t in flood), return_exceptions=True)
    assert all(isinstance(r, TokenError) for r in results), results[:3]
    assert len(server.requests) == 2  # start + one shared refresh
    mono.now += 10
    for tok in flood[:50]:  # still inside the 30 s window: no further fetch
        await rejected(started, tok, "unknown kid")
    assert len(server.requests) == 2
    assert await started.verify(rs(KEY_A, "a"))  # other traffic unaffected


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 500),
        (b'{"keys": []}', 404),
        (b"<html>not json</html>", 200),
        (b'{"keys": []}', 200),
        (b'{"keys": "a"}', 200),
        (b"[]", 200),
        (b'{"keys": [], "keys": []}', 200),
        (b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', 200),
        (b'{"keys": [' + b"1," * (MAX_BYTES // 2) + b"1]}", 200),
    ],
    ids=["500", "404", "html", "empty", "keys-str", "list", "dup", "only-oct", "huge"],
)
async def test_outage_or_garbage_keeps_last_good_keys(started, server, mono, body, status):
    server.set(body, status)
    mono.now += 31
    await rejected(started, rs(KEY_B, "b"), "unknown kid")  # forces a refresh
    assert len(server.requests) == 2
    assert keys_of(started) == ["a"] and started.ready
    started.cache.clear()
    assert await started.verify(rs(KEY_A, "a"))


async def test_redirect_is_not_followed(started, server, mono):
    with HttpServer({"keys": [JWK_B]}) as elsewhere:
        server.set(b"", 302)
        server.headers = {"location": elsewhere.url}
        mono.now += 31
        await rejected(started, rs(KEY_B, "b"), "unknown kid")
        assert elsewhere.requests == []
    assert keys_of(started) == ["a"]


async def test_hanging_server_bounds_the_wait(started, server, mono):
    source = started.sources[0]
    source._timeout = 0.3
    server.delay = 3.0
    mono.now += 31
    began = time.monotonic()
    await rejected(started, rs(KEY_B, "b"), "unknown kid")
    assert time.monotonic() - began < 2.0
    assert keys_of(started) == ["a"]
    assert await started.verify(rs(KEY_A, "a"))


async def test_remote_key_hygiene(server, http, mono):
    small = rsa_key(1024)
    server.set_keys(
        {"kty": "oct", "kid": "sym", "k": b64(HS_SECRET), "alg": "HS256"},
        jwk(small, "small", "RS256"),
        jwk(KEY_B, "dup", "RS256"),
        jwk(rsa_key(2048, 2), "dup", "RS256"),
        jwk(rsa_key(2048, 3), "enc", "RS256", use="enc"),
        jwk(rsa_key(2048, 3), "ops", "RS256", key_ops=["encrypt"]),
        jwk(rsa_key(2048, 3), "weird", "RS1"),
        {"kty": "RSA", "kid": "broken", "n": "AQAB"},
        {"kty": "EC", "kid": "ec-bad-curve", "crv": "P-256", "x": "AA", "y": "AA"},
        "not an object",
        JWK_A,
    )
    ident = make_identity({"secrets": [{"jwksUrl": server.url}]}, monotonic=mono)
    await ident.start(http)
    try:
        assert keys_of(ident) == ["a"]
        await rejected(ident, hs_token(CLAIMS, kid="sym"), "unknown kid")
        await rejected(ident, token({"alg": "RS256", "kid": "small"}, CLAIMS, small), "unknown kid")
        await rejected(ident, rs(KEY_B, "dup"), "unknown kid")
    finally:
        await ident.close()


async def test_jwk_alg_pins_the_key(server, http, mono):
    server.set_keys(jwk(KEY_A, "a", "PS256"), jwk(KEY_B, "b"))  # b has no alg: RS256 by type
    ident = make_identity({"secrets": [{"jwksUrl": server.url}]}, monotonic=mono)
    await ident.start(http)
    try:
        assert await ident.verify(rs(KEY_A, "a", alg="PS256"))
        await rejected(ident, rs(KEY_A, "a", alg="RS256"), "")
        assert await ident.verify(rs(KEY_B, "b"))
        await rejected(ident, rs(KEY_B, "b", alg="RS512"), "")
    finally:
        await ident.close()


async def test_config_alg_restricts_remote_keys(server, http, mono):
    es = ec_key("P-256")
    server.set_keys(JWK_A, jwk(es, "ec"))
    ident = make_identity({"secrets": [{"jwksUrl": server.url, "alg": "ES256"}]}, monotonic=mono)
    await ident.start(http)
    try:
        assert keys_of(ident) == ["ec"]
        assert await ident.verify(jwt.encode(CLAIMS, es, "ES256", headers={"kid": "ec"}))
    finally:
        await ident.close()


async def test_ec_and_okp_keys_by_curve(server, http, mono):
    p384, ed = ec_key("P-384"), ed_key()
    server.set_keys(jwk(p384, "p384"), jwk(ed, "ed"))
    ident = make_identity({"secrets": [{"jwksUrl": server.url}]}, monotonic=mono)
    await ident.start(http)
    try:
        assert await ident.verify(jwt.encode(CLAIMS, p384, "ES384", headers={"kid": "p384"}))
        assert await ident.verify(jwt.encode(CLAIMS, ed, "EdDSA", headers={"kid": "ed"}))
    finally:
        await ident.close()


async def test_background_refresh_and_close(server, http, mono):
    ident = make_identity(
        {"secrets": [{"jwksUrl": server.url, "refresh": "100ms"}]}, monotonic=mono
    )
    await ident.start(http)
    try:
        server.set_keys(JWK_B)
        deadline = time.monotonic() + 5
        while keys_of(ident) != ["b"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert keys_of(ident) == ["b"]
    finally:
        await ident.close()
    count = len(server.requests)
    await asyncio.sleep(0.3)
    assert len(server.requests) == count  # no refresh after close


async def test_key_locating_header_with_jwks_configured(started, server, mono):
    """jku pointing at our own JWKS host or a canary is never followed (row 12)."""
    with HttpServer({"keys": [JWK_B]}) as canary:
        tok = jwt.encode(CLAIMS, KEY_B, "RS256", headers={"kid": "b", "jku": canary.url})
        mono.now += 31
        await rejected(started, tok, "jku")
        assert canary.requests == []
    assert len(server.requests) == 1


async def test_close_during_a_refresh_gives_token_errors(server, http, mono):
    """An old config version closed mid-refresh: waiting verifications end in TokenError."""
    ident = make_identity({"secrets": [{"jwksUrl": server.url}]}, monotonic=mono)
    await ident.start(http)
    server.delay = 1.0
    mono.now += 31
    waiting = asyncio.create_task(ident.verify(rs(KEY_B, "b")))
    deadline = time.monotonic() + 5
    while len(server.requests) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await ident.close()
    with pytest.raises(TokenError, match="unknown kid"):
        await asyncio.wait_for(waiting, 5)
    mono.now += 31
    await rejected(ident, rs(KEY_B, "b"), "unknown kid")  # closed: no new fetch
    assert len(server.requests) == 2


# When a verification re-fetches the JWKS on demand (past the rate limit): only when no key
# of the token's kid is known. Each case: the keys served, the token, whether it fetches.
async def test_no_refetch_for_a_known_kid(started, server, mono):
    mono.now += 31
    assert await started.verify(rs(KEY_A, "a"))
    await rejected(started, rs(KEY_B, "a"), "bad signature")  # known kid, wrong key
    assert len(server.requests) == 1


async def test_no_refetch_for_a_token_without_kid(started, server, mono):
    mono.now += 31
    assert await started.verify(rs(KEY_A, None))
    await rejected(started, rs(KEY_B, None), "bad signature")
    assert len(server.requests) == 1


async def test_unknown_kid_refetches_while_kidless_keys_exist(server, http, mono):
    server.set_keys(jwk(KEY_A, None, "RS256"))  # a kid-less key would be tried for any kid
    ident = make_identity({"secrets": [{"jwksUrl": server.url}]}, monotonic=mono)
    await ident.start(http)
    try:
        server.set_keys(jwk(KEY_A, None, "RS256"), JWK_B)
        mono.now += 31
        assert (await ident.verify(rs(KEY_B, "b")))["id"] == "u1"  # rotated in by the re-fetch
        assert len(server.requests) == 2
        assert await ident.verify(rs(KEY_A, "zzz"))  # unknown kid, the kid-less key after a
        assert len(server.requests) == 2  # fetch that the rate limit skipped
    finally:
        await ident.close()


async def test_no_key_of_the_alg_refetches(started, server, mono):
    server.set_keys(JWK_A, jwk(ec_key("P-256"), None, "ES256"))
    mono.now += 31
    assert await started.verify(rs(ec_key("P-256"), None, alg="ES256"))
    assert len(server.requests) == 2


async def test_static_keys_never_fetch(server, http, mono):
    ident = make_identity(
        {"secrets": [{"secret": HS_SECRET}, {"jwksUrl": server.url}]}, monotonic=mono
    )
    await ident.start(http)
    try:
        mono.now += 31
        assert await ident.verify(hs_token({"id": "u1"}))
        assert len(server.requests) == 1
    finally:
        await ident.close()


def test_each_unusable_remote_key_is_logged_with_its_reason(caplog):
    from authz.config.auth import SecretSettings
    from authz.identity.jwks import JwksError, keys_from_jwks

    settings = SecretSettings(jwksUrl="http://127.0.0.1/jwks.json")
    doc = {"keys": [
        "not an object",
        {"kty": "oct", "k": "c2VjcmV0"},
        jwk(KEY_B, "enc", "RS256", use="enc"),
        jwk(KEY_B, "ops", "RS256", key_ops=["sign"]),
        jwk(KEY_B, 7, "RS256"),
        jwk(KEY_B, "hs", "HS256"),
        jwk(KEY_B, "rs1", "RS1"),
        JWK_A,
    ]}  # fmt: skip
    with caplog.at_level("WARNING", logger="authz.identity.jwks"):
        keys = keys_from_jwks(doc, settings, "auth.secrets[0]")
    assert [k.kid for k in keys] == ["a"]
    assert [r.getMessage() for r in caplog.records] == [
        "jwks auth.secrets[0]: ignoring key 0: not an object",
        "jwks auth.secrets[0]: ignoring key 1: key type 'oct' not accepted",
        "jwks auth.secrets[0]: ignoring key 2: not a signing key",
        "jwks auth.secrets[0]: ignoring key 3: key_ops does not allow verify",
        "jwks auth.secrets[0]: ignoring key 4: kid is not a string",
        "jwks auth.secrets[0]: ignoring key 5: unsupported alg 'HS256'",
        "jwks auth.secrets[0]: ignoring key 6: unsupported alg 'RS1'",
    ]
    for bad in ({"keys": "a"}, [JWK_A], {"other": []}):
        with pytest.raises(JwksError, match=r"^not a JWKS document$"):
            keys_from_jwks(bad, settings, "auth.secrets[0]")


async def test_a_valid_key_set_with_an_error_status_is_not_installed(started, server, mono):
    server.set({"keys": [JWK_A, JWK_B]}, status=404)
    mono.now += 31
    await rejected(started, rs(KEY_B, "b"), "unknown kid")
    assert keys_of(started) == ["a"] and started.sources[0].fetches == 2


async def test_the_rate_limit_ends_at_exactly_min_interval(started, server, mono):
    assert started.sources[0].fetches == 1
    server.set_keys(JWK_A, JWK_B)
    mono.now += 29.9
    await rejected(started, rs(KEY_B, "b"), "unknown kid")
    mono.now += 0.1  # 30 s after the last fetch: allowed again
    assert await started.verify(rs(KEY_B, "b"))
    assert started.sources[0].fetches == 2


async def test_a_reply_over_one_mib_is_not_read(started, server, mono):
    pad = {"kty": "RSA", "kid": "pad", "n": "x" * ((1 << 20) - 100), "e": "AQAB"}
    server.set_keys(JWK_A, JWK_B, pad)
    assert len(server.body) > 1 << 20
    mono.now += 31
    await rejected(started, rs(KEY_B, "b"), "unknown kid")
    server.set_keys(JWK_A, JWK_B, {**pad, "n": "x" * ((1 << 20) - 1200)})
    assert len(server.body) < 1 << 20
    mono.now += 31
    assert await started.verify(rs(KEY_B, "b"))


async def test_close_cancels_the_background_refresh(started):
    loop_task = started.sources[0]._loop_task
    assert loop_task is not None and not loop_task.done()
    await started.sources[0].close()
    assert loop_task.cancelled()


async def test_refresh_backs_off_until_ready_then_waits_the_refresh_period(monkeypatch):
    import types

    from authz.config.auth import SecretSettings
    from authz.identity import jwks

    source = jwks.JwksSource(
        SecretSettings(jwksUrl="http://127.0.0.1/jwks.json", refresh="10s"), "s", on_removed=list
    )
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 7:
            raise asyncio.CancelledError

    async def fetch() -> None:
        if len(delays) == 5:
            source.keys = ()  # ready from the fifth fetch on

    monkeypatch.setattr(jwks, "asyncio", types.SimpleNamespace(sleep=sleep))
    monkeypatch.setattr(source, "_fetch_shared", fetch)
    with pytest.raises(asyncio.CancelledError):
        await source._refresh_loop()
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


async def test_an_unloaded_key_set_is_a_503_only_for_the_algorithm_it_is_pinned_to(
    server, http, mono
):
    server.set(b"oops", status=503)
    ident = make_identity({"secrets": [{"jwksUrl": server.url, "alg": "ES256"}]}, monotonic=mono)
    await ident.start(http)
    try:
        es = jwt.encode(CLAIMS, ec_key("P-256"), "ES256")
        with pytest.raises(
            DependencyError, match=r"^key set auth.secrets\[0\] has not loaded yet$"
        ):
            await ident.verify(es)
        await rejected(ident, rs(KEY_A, None), "no key for alg RS256")  # it could never hold one
    finally:
        await ident.close()


def test_a_failure_without_a_message_is_named_by_its_type():
    from authz.identity.jwks import _why

    assert _why(TimeoutError()) == "TimeoutError"
    assert _why(ValueError("not JSON")) == "not JSON"


async def test_a_closed_source_never_fetches_again(started, server, mono):
    source = started.sources[0]
    await source.close()
    mono.now += 31
    await rejected(started, rs(KEY_B, "b"), "unknown kid")
    assert source.fetches == 1 and len(server.requests) == 1
