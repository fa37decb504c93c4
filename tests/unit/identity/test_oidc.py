"""OIDC discovery against a local provider (discovery document + JWKS, keys made at test time):
discovery, key rotation, issuer mismatch, discovery pointing elsewhere, oversized documents,
outage at start (503 until it recovers)."""

from __future__ import annotations

import httpx
import pytest

from authz.errors import DependencyError, TokenError
from authz.identity.oidc import (
    MAX_DISCOVERY_BYTES,
    DiscoveryError,
    OidcSource,
    discovery_url,
    jwks_uri_of,
)
from tests.unit.identity.providers import OidcProvider
from tests.unit.identity.support import Clock, make_identity


@pytest.fixture
async def http():
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


@pytest.fixture
def idp():
    with OidcProvider() as provider:
        yield provider


@pytest.fixture
def mono():
    return Clock(1000.0)


async def started(idp: OidcProvider, http, mono, **entry) -> object:
    ident = make_identity({"oidc": [{"issuer": idp.issuer, **entry}]}, monotonic=mono)
    await ident.start(http)
    return ident


def oidc_of(ident) -> OidcSource:
    return next(s for s in ident.sources if isinstance(s, OidcSource))


async def test_discovery_then_jwks_then_tokens_of_the_issuer(idp, http, mono):
    ident = await started(idp, http, mono, audience="orders")
    try:
        assert ident.ready
        assert [p for _, p in idp.requests] == ["/.well-known/openid-configuration", "/keys"]
        claims = await ident.verify(idp.sign({"sub": "u1", "aud": "orders"}))
        assert claims["sub"] == "u1" and claims["iss"] == idp.issuer
        with pytest.raises(TokenError, match="issuer"):  # iss must be the issuer, exactly
            await ident.verify(idp.sign({"aud": "orders", "iss": idp.issuer + "/"}))
        with pytest.raises(TokenError, match="audience"):
            await ident.verify(idp.sign({"aud": "billing"}))
        assert ident.dependencies() == {f"oidc:{idp.issuer}": "ok"}
    finally:
        await ident.close()


async def test_issuer_with_a_path_and_trailing_slash():
    assert discovery_url("https://idp.example/realms/a/") == (
        "https://idp.example/realms/a/.well-known/openid-configuration"
    )
    assert discovery_url("https://idp.example") == (
        "https://idp.example/.well-known/openid-configuration"
    )


async def test_key_rotation_is_picked_up_on_an_unknown_kid(idp, http, mono):
    ident = await started(idp, http, mono)
    try:
        old = idp.sign({"sub": "u1"})
        assert await ident.verify(old)
        idp.rotate("k2", 1)
        mono.now += 31  # past the on-demand rate limit
        assert (await ident.verify(idp.sign({"sub": "u2"})))["sub"] == "u2"
        assert [k.kid for k in oidc_of(ident).keys] == ["k2"]
        with pytest.raises(TokenError):  # the removed key's tokens, cached or not
            await ident.verify(old)
    finally:
        await ident.close()


async def test_discovery_naming_another_issuer_is_refused(idp, http, mono):
    idp.discovery = {**idp.discovery, "issuer": "https://evil.example"}
    ident = await started(idp, http, mono)
    try:
        assert not ident.ready
        assert "names 'https://evil.example'" in ident.dependencies()[f"oidc:{idp.issuer}"]
        assert ("GET", "/keys") not in idp.requests  # no keys fetched on its word
        with pytest.raises(DependencyError):  # never loaded: 503, not 401, never an allow
            await ident.verify(idp.sign({"sub": "u1"}))
    finally:
        await ident.close()


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        ({"jwks_uri": "http://169.254.169.254/keys"}, "link-local"),
        ({"jwks_uri": "file:///etc/passwd"}, "http or https"),
        ({"jwks_uri": "http://user:pw@idp/keys"}, "credentials"),
        ({"jwks_uri": 7}, "no jwks_uri"),
        ({}, "no jwks_uri"),
    ],
)
def test_discovery_pointing_elsewhere(doc, why):
    with pytest.raises(DiscoveryError, match=why):
        jwks_uri_of({"issuer": "http://idp", **doc}, "http://idp")


def test_an_https_issuer_never_takes_keys_over_http():
    doc = {"issuer": "https://idp", "jwks_uri": "http://idp/keys"}
    with pytest.raises(DiscoveryError, match="over https"):
        jwks_uri_of(doc, "https://idp")
    assert jwks_uri_of({**doc, "jwks_uri": "https://keys.idp/k"}, "https://idp")


@pytest.mark.parametrize("issuer", ["HTTP://IDP", "http://idp/", "http://idp "])
def test_issuer_is_compared_exactly(issuer):
    with pytest.raises(DiscoveryError, match="names"):
        jwks_uri_of({"issuer": issuer, "jwks_uri": "http://idp/keys"}, "http://idp")


@pytest.mark.parametrize(
    "served",
    [
        b"{" + b'"x": "' + b"a" * MAX_DISCOVERY_BYTES + b'"}',  # oversized
        b"not json",
        b'{"issuer": "a", "issuer": "b"}',  # duplicate members
        b"[]",
        503,
    ],
)
async def test_bad_discovery_documents_leave_it_not_loaded(idp, http, mono, served):
    idp.discovery = served
    ident = await started(idp, http, mono)
    try:
        assert not ident.ready
        assert ("GET", "/keys") not in idp.requests
    finally:
        await ident.close()


async def test_outage_at_start_denies_503_then_recovers(idp, http, mono):
    good = idp.discovery
    idp.discovery = 503
    ident = await started(idp, http, mono)
    try:
        with pytest.raises(DependencyError, match="has not loaded"):
            await ident.verify(idp.sign({"sub": "u1"}))
        assert "HTTP 503" in ident.dependencies()[f"oidc:{idp.issuer}"]
        idp.discovery = good
        mono.now += 31
        assert (await ident.verify(idp.sign({"sub": "u1"})))["sub"] == "u1"
        assert ident.ready and ident.dependencies()[f"oidc:{idp.issuer}"] == "ok"
    finally:
        await ident.close()


async def test_later_discovery_failure_keeps_the_known_jwks_uri(idp, http, mono):
    ident = await started(idp, http, mono)
    try:
        idp.discovery = 500
        idp.rotate("k2", 1)
        mono.now += 31
        assert await ident.verify(idp.sign({"sub": "u1"}))  # the JWKS at the known URI
    finally:
        await ident.close()


async def test_jwks_garbage_keeps_the_last_good_keys(idp, http, mono):
    ident = await started(idp, http, mono)
    try:
        idp.keys = b"garbage"
        mono.now += 31
        await oidc_of(ident).refresh_on_demand()
        assert await ident.verify(idp.sign({"sub": "u1"}))
    finally:
        await ident.close()


def test_config_rejects_bad_issuers():
    from pydantic import ValidationError

    for issuer in ("http://169.254.169.254", "ftp://idp", "https://idp/?a=1"):
        with pytest.raises(ValidationError):
            make_identity({"oidc": [{"issuer": issuer}]})
    with pytest.raises(ValidationError, match="alg"):
        make_identity({"oidc": [{"issuer": "https://idp", "alg": "HS256"}]})
