"""Token introspection (RFC 7662) against a local server: active, inactive, expired, server
down, timeouts, garbage, the cache (keyed by the token's digest, bounded by exp) and shared
calls."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from authz.errors import DependencyError, TokenError
from authz.identity.introspection import MAX_BYTES, basic_credentials
from tests.helpers import free_port
from tests.unit.identity.providers import IntrospectionServer
from tests.unit.identity.support import make_identity

TOKEN = "opaque-token-0123456789"


@pytest.fixture
async def http():
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


@pytest.fixture
def idp():
    with IntrospectionServer() as server:
        server.answers[TOKEN] = {"active": True, "sub": "u1", "scope": "orders:read"}
        yield server


async def started(http, *entries: dict):
    ident = make_identity({"introspection": list(entries)})
    await ident.start(http)
    return ident


async def test_active_token_gives_the_providers_answer(idp, http):
    ident = await started(http, idp.settings())
    try:
        claims = await ident.introspect(TOKEN)
        assert claims == {"active": True, "sub": "u1", "scope": "orders:read"}
        assert idp.forms == [{"token": [TOKEN], "token_type_hint": ["access_token"]}]
        assert ident.dependencies() == {"introspection:auth.introspection[0]": "ok"}
    finally:
        await ident.close()


async def test_inactive_and_unknown_tokens_are_401(idp, http):
    idp.answers["revoked"] = {"active": False, "sub": "u1"}
    ident = await started(http, idp.settings())
    try:
        for token in ("revoked", "never-issued"):
            with pytest.raises(TokenError, match="not active") as e:
                await ident.introspect(token)
            assert e.value.kind == "inactive"
    finally:
        await ident.close()


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ({"active": True, "exp": 1}, "expired"),
        ({"active": True, "nbf": 4_000_000_000}, "not yet valid"),
        ({"active": True, "exp": "soon"}, "not a number"),
        ({"active": True, "iss": "https://other/", "aud": "orders"}, "issuer"),
        ({"active": True, "iss": "https://idp/", "aud": "billing"}, "audience"),
        ({"active": True, "iss": "https://idp/"}, "audience"),
    ],
)
async def test_active_but_unacceptable_is_401(idp, http, answer, why):
    idp.answers[TOKEN] = answer
    ident = await started(http, idp.settings(issuer="https://idp/", audience=["orders"]))
    try:
        with pytest.raises(TokenError, match=why):
            await ident.introspect(TOKEN)
    finally:
        await ident.close()


@pytest.mark.parametrize(
    "served",
    [
        500,
        302,
        b"not json",
        b'{"active": "true"}',  # a string is not true
        b'{"active": 1}',
        b"[true]",
        b'{"active": true, "active": false}',  # duplicate members
        b'{"active": true, "x": "' + b"a" * MAX_BYTES + b'"}',  # oversized
    ],
)
async def test_a_provider_that_does_not_answer_properly_is_503(idp, http, served):
    idp.override = served
    ident = await started(http, idp.settings())
    try:
        with pytest.raises(DependencyError, match="introspection"):
            await ident.introspect(TOKEN)
        assert ident.dependencies()["introspection:auth.introspection[0]"].startswith("failing")
    finally:
        await ident.close()


async def test_wrong_client_credentials_are_503_not_401(idp, http):
    ident = await started(http, idp.settings(clientSecret="wrong"))
    try:
        with pytest.raises(DependencyError, match="HTTP 401"):
            await ident.introspect(TOKEN)
    finally:
        await ident.close()


async def test_server_down_and_timeout_are_503(idp, http):
    down = {"url": f"http://127.0.0.1:{free_port()}/introspect", "clientId": "a",
            "clientSecret": "b"}  # fmt: skip
    ident = await started(http, down)
    try:
        with pytest.raises(DependencyError):
            await ident.introspect(TOKEN)
    finally:
        await ident.close()
    idp.delay = 0.5
    ident = await started(http, idp.settings(timeout="100ms"))
    try:
        with pytest.raises(DependencyError, match="TimeoutError"):
            await ident.introspect(TOKEN)
    finally:
        await ident.close()


async def test_answers_are_cached_by_digest(idp, http):
    idp.answers["revoked"] = {"active": False}
    ident = await started(http, idp.settings(cache="60s"))
    try:
        for _ in range(3):
            assert (await ident.introspect(TOKEN))["sub"] == "u1"
            with pytest.raises(TokenError):
                await ident.introspect("revoked")
        assert len(idp.forms) == 2
        cache = ident.introspectors[0].cache
        assert all(TOKEN not in repr(k) for k in cache._items)  # the digest, never the token
    finally:
        await ident.close()


async def test_the_cache_never_outlives_exp(idp, http):
    idp.answers[TOKEN] = {"active": True, "exp": time.time() + 0.3}
    ident = await started(http, idp.settings(cache="60s"))
    ident.introspectors[0].leeway = 0
    try:
        await ident.introspect(TOKEN)
        await ident.introspect(TOKEN)
        assert len(idp.forms) == 1
        await asyncio.sleep(0.4)
        with pytest.raises(TokenError, match="expired"):  # asked again: now expired
            await ident.introspect(TOKEN)
        assert len(idp.forms) == 2
    finally:
        await ident.close()


async def test_cache_off_and_cache_bounded(idp, http):
    ident = await started(http, idp.settings(cacheSize=0))
    try:
        await ident.introspect(TOKEN)
        await ident.introspect(TOKEN)
        assert len(idp.forms) == 2
    finally:
        await ident.close()
    ident = await started(http, idp.settings(cacheSize=2))
    try:
        for n in range(5):
            idp.answers[f"t{n}"] = {"active": True}
            await ident.introspect(f"t{n}")
        assert len(ident.introspectors[0].cache) == 2
    finally:
        await ident.close()


async def test_concurrent_checks_of_one_token_share_one_call(idp, http):
    idp.delay = 0.2
    ident = await started(http, idp.settings(timeout="2s"))
    try:
        results = await asyncio.gather(*(ident.introspect(TOKEN) for _ in range(10)))
        assert all(r["sub"] == "u1" for r in results)
        assert len(idp.forms) == 1
    finally:
        await ident.close()


async def test_providers_in_order_first_active_wins(http):
    with IntrospectionServer() as a, IntrospectionServer() as b:
        b.answers[TOKEN] = {"active": True, "sub": "from-b"}
        ident = await started(http, a.settings(), b.settings())
        try:
            assert (await ident.introspect(TOKEN))["sub"] == "from-b"
            a.override = 500  # a is down and b says inactive: cannot decide
            with pytest.raises(DependencyError):
                await ident.introspect("unknown")
        finally:
            await ident.close()


def test_basic_credentials_are_form_encoded_first():
    # RFC 6749 §2.3.1: "a:b" as a client id must not split the pair
    assert basic_credentials("a:b", "p w") == "Basic " + "YSUzQWI6cCUyMHc="


def test_config():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="link-local"):
        make_identity({"introspection": [{"url": "http://169.254.169.254/i", "clientId": "a",
                                          "clientSecret": "b"}]})  # fmt: skip
    with pytest.raises(ValidationError):
        make_identity({"introspection": [{"url": "http://idp/i", "clientId": "a"}]})
