"""Signing: the primary-key rule, minted tokens, and the cached upstream service token."""

from __future__ import annotations

import jwt
import pytest

from authz.errors import ConfigError, TokenError
from tests.unit.identity.support import (
    HS_SECRET,
    Clock,
    make_identity,
    private_key_for,
    private_pem,
    public_pem,
)

NOW = 1_800_000_000.0


@pytest.fixture
def clock():
    return Clock(NOW)


def rs_entry(n: int = 0, **extra) -> dict:
    key = private_key_for("RS256", n)
    return {"alg": "RS256", "publicKey": public_pem(key), "privateKey": private_pem(key), **extra}


async def test_mint_round_trip(clock):
    ident = make_identity({"secrets": [{"kid": "main", "secret": HS_SECRET}]}, clock=clock)
    tok = ident.mint({"id": "u1", "role": "admin"}, ttl=120)
    assert jwt.get_unverified_header(tok) == {"alg": "HS256", "typ": "JWT", "kid": "main"}
    claims = await ident.verify(tok)
    assert claims == {"id": "u1", "role": "admin", "iat": int(NOW), "exp": int(NOW) + 120}


async def test_mint_overrides_caller_times(clock):
    ident = make_identity({"secrets": [{"secret": HS_SECRET}]}, clock=clock)
    claims = await ident.verify(ident.mint({"exp": 0, "iat": 0}, ttl=60))
    assert claims["exp"] == int(NOW) + 60


def test_asymmetric_primary_signs_with_its_private_key(clock):
    key = private_key_for("RS256")
    ident = make_identity(
        {"secrets": [{"secret": HS_SECRET}, rs_entry(kid="rs", primary=True)]}, clock=clock
    )
    tok = ident.mint({"id": "u1"}, 60)
    assert jwt.get_unverified_header(tok)["alg"] == "RS256"
    lax = {"verify_exp": False, "verify_iat": False}
    decoded = jwt.decode(tok, key.public_key(), algorithms=["RS256"], options=lax)
    assert decoded["id"] == "u1"


@pytest.mark.parametrize("alg", ["PS256", "ES384", "EdDSA"])
async def test_other_asymmetric_primaries(alg, clock):
    key = private_key_for(alg)
    ident = make_identity(
        {"secrets": [{"alg": alg, "publicKey": public_pem(key), "privateKey": private_pem(key)}]},
        clock=clock,
    )
    assert (await ident.verify(ident.mint({"id": "u1"}, 60)))["id"] == "u1"


def test_primary_defaults_to_first_key_able_to_sign():
    public_only = {"alg": "RS256", "publicKey": public_pem(private_key_for("RS256", 2))}
    ident = make_identity(
        {"secrets": [public_only, rs_entry(kid="signer"), {"kid": "hs", "secret": HS_SECRET}]}
    )
    assert ident.minter.key.kid == "signer"


def test_marked_primary_wins():
    ident = make_identity(
        {"secrets": [rs_entry(kid="first"), {"kid": "hs", "secret": HS_SECRET, "primary": True}]}
    )
    assert ident.minter.key.kid == "hs"


def test_two_primaries_is_a_config_error():
    with pytest.raises(ConfigError) as e:
        make_identity(
            {
                "secrets": [
                    {"secret": HS_SECRET, "primary": True},
                    {"secret": "x" * 32, "primary": True},
                ]
            }
        )
    assert e.value.errors == [
        "auth.secrets: only one key may be primary (got secrets[0], secrets[1])"
    ]


def test_primary_that_cannot_sign_is_a_config_error():
    public_only = {
        "alg": "RS256",
        "publicKey": public_pem(private_key_for("RS256")),
        "primary": True,
    }
    with pytest.raises(ConfigError) as e:
        make_identity({"secrets": [public_only]})
    assert e.value.errors[0].startswith("auth.secrets[0].primary: the primary key cannot sign")


def test_no_signing_key_fails_loudly_when_used():
    """Verify-only configs load (JWKS, public keys); signing then raises ConfigError (500)."""
    ident = make_identity(
        {"secrets": [{"alg": "ES256", "publicKey": public_pem(private_key_for("ES256"))}]}
    )
    assert not ident.can_sign
    with pytest.raises(ConfigError, match="no key can sign"):
        ident.mint({"id": "u1"}, 60)
    with pytest.raises(ConfigError, match="no key can sign"):
        ident.service_token("u1")
    assert not make_identity({}).can_sign


def _space_cloud_decode(token: str, **options) -> dict:
    """What a Space Cloud service does with X-SC-Token: verify it with the project secret
    (PyJWT here; like most verifiers it ignores `typ`, and rejects an unexpected `aud`)."""
    lax = {"verify_exp": False, "verify_iat": False}
    return jwt.decode(token, HS_SECRET, algorithms=["HS256"], options=lax, **options)


async def test_service_token_claims(clock):
    ident = make_identity(
        {"secrets": [{"secret": HS_SECRET}], "serviceToken": {"ttl": "60s"}},
        project="shop",
        clock=clock,
    )
    token = ident.service_token("u1")
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "service+jwt"}
    claims = _space_cloud_decode(token)
    assert claims == {"iss": "shop", "id": "u1", "iat": int(NOW), "exp": int(NOW) + 60}
    anonymous = _space_cloud_decode(ident.service_token(None))
    assert anonymous == {"iss": "shop", "iat": int(NOW), "exp": int(NOW) + 60}


@pytest.mark.parametrize("kind", ["service", "webhook"])
async def test_service_tokens_are_not_end_user_tokens(clock, kind):
    """An upstream (or a webhook) that echoes the token it got cannot replay it to us."""
    ident = make_identity({"secrets": [{"secret": HS_SECRET}]}, clock=clock)
    if kind == "service":
        token = ident.service_token("u1")
    else:
        token = ident.mint_service({"id": "u1", "role": "admin"}, 60)
    with pytest.raises(TokenError) as e:
        await ident.verify(token)
    assert e.value.kind == "service_token"
    assert len(ident.cache) == 0


@pytest.mark.parametrize("typ", ["service+jwt", "SERVICE+JWT", "application/service+jwt"])
async def test_service_typ_refused_in_any_spelling(clock, typ):
    token = jwt.encode({"id": "u1"}, HS_SECRET, algorithm="HS256", headers={"typ": typ})
    ident = make_identity({"secrets": [{"secret": HS_SECRET}]}, clock=clock)
    with pytest.raises(TokenError, match="service token"):
        await ident.verify(token)


async def test_service_audience_is_opt_in(clock):
    settings = {"secrets": [{"secret": HS_SECRET}], "serviceToken": {"audience": "orders"}}
    ident = make_identity(settings, clock=clock)
    token = ident.service_token("u1")
    assert _space_cloud_decode(token, audience="orders")["aud"] == "orders"
    with pytest.raises(jwt.InvalidAudienceError):  # why it is not the default
        _space_cloud_decode(token)
    assert ident.mint_service({"id": "u1"}, 60).count(".") == 2
    assert _space_cloud_decode(ident.mint_service({"id": "u1"}, 60), audience="orders")
    # a token for the upstream, even untyped, is not an end-user token here
    untyped = jwt.encode({"id": "u1", "aud": ["orders"]}, HS_SECRET, algorithm="HS256")
    with pytest.raises(TokenError) as e:
        await ident.verify(untyped)
    assert e.value.kind == "service_token"
    assert (await ident.verify(ident.mint({"id": "u1"}, 60)))["id"] == "u1"


async def test_service_token_key(clock):
    user_key = {"kid": "users", "secret": HS_SECRET, "primary": True}
    svc_key = {"kid": "svc", "secret": "s" * 32}
    ident = make_identity(
        {"secrets": [user_key, svc_key], "serviceToken": {"key": "svc"}}, clock=clock
    )
    token = ident.service_token("u1")
    assert jwt.get_unverified_header(token)["kid"] == "svc"
    lax = {"verify_exp": False, "verify_iat": False}
    assert jwt.decode(token, "s" * 32, algorithms=["HS256"], options=lax)["id"] == "u1"
    assert jwt.get_unverified_header(ident.mint({"id": "u1"}, 60))["kid"] == "users"


@pytest.mark.parametrize(
    ("secrets", "what"),
    [
        ([{"kid": "a", "secret": HS_SECRET}], "no static key of auth.secrets has kid 'svc'"),
        (
            [{"kid": "svc", "alg": "RS256", "publicKey": public_pem(private_key_for("RS256"))}],
            "cannot sign",
        ),
    ],
)
def test_service_token_key_must_sign(secrets, what):
    with pytest.raises(ConfigError) as e:
        make_identity({"secrets": secrets, "serviceToken": {"key": "svc"}})
    assert any(
        line.startswith("auth.serviceToken.key:") and what in line for line in e.value.errors
    )


def test_service_token_cached_until_half_ttl(clock, monkeypatch):
    ident = make_identity(
        {"secrets": [{"secret": HS_SECRET}], "serviceToken": {"ttl": "60s"}}, clock=clock
    )
    signed: list[dict] = []
    real_sign = ident.service_minter.sign
    monkeypatch.setattr(ident.service_minter, "sign", lambda p: signed.append(p) or real_sign(p))
    first = ident.service_token("u1")
    clock.now = NOW + 29
    assert ident.service_token("u1") == first
    other = ident.service_token("u2")
    assert other != first
    assert len(signed) == 2
    clock.now = NOW + 30  # half the ttl has passed: a fresh token
    fresh = ident.service_token("u1")
    assert fresh != first and len(signed) == 3
    assert signed[-1]["exp"] == int(NOW) + 90


def test_service_token_cache_is_bounded(clock, monkeypatch):
    ident = make_identity({"secrets": [{"secret": HS_SECRET}]}, clock=clock)
    monkeypatch.setattr(ident.service_tokens, "MAX_ENTRIES", 10)
    for i in range(50):
        ident.service_token(f"user-{i}")
    assert len(ident.service_tokens._tokens) == 10


def test_key_and_primary_problems_reported_together():
    with pytest.raises(ConfigError) as e:
        make_identity(
            {
                "secrets": [
                    {"secret": "short", "primary": True},
                    {"secret": HS_SECRET, "primary": True},
                ]
            }
        )
    assert len(e.value.errors) == 2
    assert e.value.errors[0].startswith("auth.secrets[0].secret:")
    assert e.value.errors[1].startswith("auth.secrets: only one key may be primary")


def test_service_audience_must_not_be_an_end_user_audience():
    with pytest.raises(ValueError, match="also an end-user audience of secrets"):
        make_identity(
            {
                "secrets": [{"secret": HS_SECRET, "audience": ["web", "orders"]}],
                "serviceToken": {"audience": "orders"},
            }
        )
