"""Signature verification: every algorithm, keys pinned to their alg, kid routing (J3, J5, J6)."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from authz.errors import TokenError
from tests.unit.identity.support import (
    HS_SECRET,
    b64,
    ec_key,
    ed_key,
    hs_token,
    jwk,
    make_identity,
    private_key_for,
    public_pem,
    rsa_key,
    segment,
    token,
)

NOW = int(time.time())
CLAIMS = {"id": "u1", "exp": NOW + 600}
ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]


async def rejected(ident, tok: str, reason: str = "") -> None:
    with pytest.raises(TokenError) as e:
        await ident.verify(tok)
    assert reason in e.value.reason


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
async def test_hmac_algorithms(alg):
    ident = make_identity({"secrets": [{"alg": alg, "secret": HS_SECRET}]})
    tok = jwt.encode(CLAIMS, HS_SECRET, algorithm=alg)
    assert await ident.verify(tok) == CLAIMS
    await rejected(ident, jwt.encode(CLAIMS, "t" * 64, algorithm=alg), "bad signature")


@pytest.mark.parametrize("alg", ASYMMETRIC)
async def test_asymmetric_algorithms(alg):
    key = private_key_for(alg)
    ident = make_identity({"secrets": [{"alg": alg, "publicKey": public_pem(key)}]})
    assert await ident.verify(jwt.encode(CLAIMS, key, algorithm=alg)) == CLAIMS
    other = private_key_for(alg, 1)
    await rejected(ident, jwt.encode(CLAIMS, other, algorithm=alg), "bad signature")


@pytest.mark.parametrize("kind", ["Ed25519", "Ed448"])
async def test_eddsa(kind):
    key = ed_key(kind)
    ident = make_identity({"secrets": [{"alg": "EdDSA", "publicKey": public_pem(key)}]})
    assert await ident.verify(jwt.encode(CLAIMS, key, algorithm="EdDSA")) == CLAIMS
    await rejected(ident, jwt.encode(CLAIMS, ed_key(kind, 1), algorithm="EdDSA"))


async def test_key_accepts_only_its_own_alg():
    key = rsa_key()
    ident = make_identity({"secrets": [{"alg": "RS256", "publicKey": public_pem(key)}]})
    for alg in ("RS384", "PS256"):  # same key material, another algorithm
        await rejected(ident, jwt.encode(CLAIMS, key, algorithm=alg), f"no key for alg {alg}")


def _confusion_secrets() -> dict[str, bytes]:
    public = rsa_key().public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ssh = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return {"pem": pem, "der": der, "ssh": ssh, "jwk": json.dumps(jwk(rsa_key())).encode()}


@pytest.mark.parametrize("form", ["pem", "der", "ssh", "jwk"])
@pytest.mark.parametrize("kid", [None, "rs"])
async def test_hs_rs_key_confusion(form, kid):
    """HS256 token whose HMAC key is the server's RSA public key in some encoding (J3)."""
    pem = public_pem(rsa_key())
    ident = make_identity(
        {
            "secrets": [
                {"kid": "rs", "alg": "RS256", "publicKey": pem},
                {"kid": "hs", "secret": HS_SECRET},
            ]
        }
    )
    header = {"alg": "HS256", **({"kid": kid} if kid else {})}
    await rejected(ident, token(header, CLAIMS, _confusion_secrets()[form], "HS256"))
    # the RSA-only configuration has no HS key at all
    ident = make_identity({"secrets": [{"alg": "RS256", "publicKey": pem}]})
    await rejected(ident, token(header, CLAIMS, _confusion_secrets()[form], "HS256"))


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512"])
async def test_zero_ecdsa_signature(alg):
    """J6: r = s = 0 (psychic signatures) and other junk signature lengths."""
    key = private_key_for(alg)
    ident = make_identity({"secrets": [{"alg": alg, "publicKey": public_pem(key)}]})
    size = {"ES256": 64, "ES384": 96, "ES512": 132}[alg]
    signing_input = f"{segment({'alg': alg})}.{segment(CLAIMS)}"
    for sig in (b"\0" * size, b"\0" * 8, b"\x01" * (size + 1)):
        await rejected(ident, f"{signing_input}.{b64(sig)}", "bad signature")


async def test_kid_selects_the_key():
    k1, k2 = rsa_key(), rsa_key(2048, 1)
    ident = make_identity(
        {
            "secrets": [
                {"kid": "one", "alg": "RS256", "publicKey": public_pem(k1)},
                {"kid": "two", "alg": "RS256", "publicKey": public_pem(k2)},
            ]
        }
    )
    assert await ident.verify(jwt.encode(CLAIMS, k2, "RS256", headers={"kid": "two"})) == CLAIMS
    await rejected(ident, jwt.encode(CLAIMS, k2, "RS256", headers={"kid": "one"}), "signature")
    await rejected(ident, jwt.encode(CLAIMS, k2, "RS256", headers={"kid": "nope"}), "unknown kid")


async def test_without_kid_keys_of_the_alg_are_tried_in_order():
    k1, k2 = rsa_key(), rsa_key(2048, 1)
    ident = make_identity(
        {
            "secrets": [
                {"secret": HS_SECRET},
                {"kid": "one", "alg": "RS256", "publicKey": public_pem(k1)},
                {"kid": "two", "alg": "RS256", "publicKey": public_pem(k2)},
            ]
        }
    )
    assert await ident.verify(jwt.encode(CLAIMS, k2, "RS256")) == CLAIMS
    assert await ident.verify(hs_token(CLAIMS)) == CLAIMS


async def test_kidless_key_accepts_a_token_with_an_unknown_kid():
    """Space Cloud secrets carry no kid; tokens from other tools often name one."""
    ident = make_identity({"secrets": [{"secret": HS_SECRET}]})
    assert await ident.verify(hs_token(CLAIMS, kid="whatever")) == CLAIMS


async def test_key_issuer_binding():
    """J17: a key bound to an issuer verifies only that exact iss."""
    key = rsa_key()
    ident = make_identity(
        {
            "secrets": [
                {
                    "kid": "idp",
                    "alg": "RS256",
                    "publicKey": public_pem(key),
                    "issuer": "https://a/",
                },
                {"secret": HS_SECRET, "issuer": "demo"},
            ]
        }
    )
    good = {**CLAIMS, "iss": "https://a/"}
    assert await ident.verify(jwt.encode(good, key, "RS256", headers={"kid": "idp"})) == good
    for iss in ("https://a", "https://A/", "https://a/ ", "demo", None, ["https://a/"]):
        claims = {**CLAIMS, **({"iss": iss} if iss is not None else {})}
        tok = token({"alg": "RS256", "kid": "idp"}, claims, key)
        await rejected(ident, tok, "issuer")
    # the HS key accepts only "demo", even for claims the RSA issuer would sign
    await rejected(ident, hs_token({**CLAIMS, "iss": "https://a/"}), "issuer")
    assert (await ident.verify(hs_token({**CLAIMS, "iss": "demo"})))["iss"] == "demo"


def _shared_key_identity(order: list[str]):
    """Two key entries holding the SAME public key, each bound to its issuer and audience."""
    pem = public_pem(rsa_key())
    entries = {
        "a": {
            "kid": "k",
            "alg": "RS256",
            "publicKey": pem,
            "issuer": "https://a/",
            "audience": "x",
        },
        "b": {
            "kid": "k",
            "alg": "RS256",
            "publicKey": pem,
            "issuer": "https://b/",
            "audience": "y",
        },
    }
    return make_identity({"secrets": [entries[name] for name in order]})


@pytest.mark.parametrize("order", [["a", "b"], ["b", "a"]])
async def test_a_key_shared_by_two_issuers_accepts_each_issuers_tokens(order):
    """The first key that verifies does not decide the issuer: each entry's own checks do."""
    ident = _shared_key_identity(order)
    key = rsa_key()
    for iss, aud in (("https://a/", "x"), ("https://b/", "y")):
        claims = {**CLAIMS, "iss": iss, "aud": aud}
        assert await ident.verify(token({"alg": "RS256", "kid": "k"}, claims, key)) == claims


@pytest.mark.parametrize("order", [["a", "b"], ["b", "a"]])
async def test_a_shared_key_never_mixes_one_issuer_with_anothers_audience(order):
    ident = _shared_key_identity(order)
    key = rsa_key()
    for iss, aud in (("https://a/", "y"), ("https://b/", "x"), ("https://c/", "x")):
        claims = {**CLAIMS, "iss": iss, "aud": aud}
        with pytest.raises(TokenError) as e:
            await ident.verify(token({"alg": "RS256", "kid": "k"}, claims, key))
        # the reason is the first verifying entry's, whatever the token: deterministic
        first = order[0]
        wanted = "audience" if iss == f"https://{first}/" else "issuer"
        assert e.value.kind == wanted, (order, iss, aud, e.value.reason)


async def test_unexpected_exception_becomes_token_error(monkeypatch):
    ident = make_identity({"secrets": [{"secret": HS_SECRET}]})

    async def boom(token):
        raise RuntimeError("bug")

    monkeypatch.setattr(ident.verifier, "verify", boom)
    await rejected(ident, hs_token(CLAIMS), "could not be verified")


@pytest.mark.parametrize("value", [None, 42, b"bytes", ["a"]])
async def test_non_string_token(value):
    ident = make_identity({"secrets": [{"secret": HS_SECRET}]})
    with pytest.raises(TokenError):
        await ident.verify(value)


async def test_no_keys_configured():
    await rejected(make_identity({}), hs_token(CLAIMS), "no key")


async def test_differential_against_pyjwt():
    """Row 55: tokens PyJWT accepts (and some it refuses) get the same verdict from us."""
    key = ec_key("P-256")
    ident = make_identity({"secrets": [{"alg": "ES256", "publicKey": public_pem(key)}]})
    cases = [
        jwt.encode(CLAIMS, key, "ES256"),
        jwt.encode({**CLAIMS, "exp": NOW - 3600}, key, "ES256"),
        jwt.encode({**CLAIMS, "nbf": NOW + 3600}, key, "ES256"),
        jwt.encode({**CLAIMS, "exp": "soon"}, key, "ES256"),
        jwt.encode(CLAIMS, ec_key("P-256", 1), "ES256"),
    ]
    for tok in cases:
        try:
            jwt.decode(tok, key.public_key(), algorithms=["ES256"], leeway=30)
            theirs = True
        except jwt.PyJWTError:
            theirs = False
        try:
            await ident.verify(tok)
            ours = True
        except TokenError:
            ours = False
        assert ours == theirs, tok


async def refusal(ident, tok: str) -> tuple[str, str]:
    with pytest.raises(TokenError) as e:
        await ident.verify(tok)
    return e.value.reason, e.value.kind


async def test_reasons_and_kinds_of_key_choice():
    # what the decision log and the token-failure metric say, per cause
    key = rsa_key()
    ident = make_identity(
        {"secrets": [{"alg": "RS256", "publicKey": public_pem(key), "kid": "one"}]}
    )
    assert await refusal(ident, jwt.encode(CLAIMS, key, "RS256", headers={"kid": "two"})) == (
        "unknown kid", "unknown_key",
    )  # fmt: skip
    assert await refusal(ident, jwt.encode(CLAIMS, key, "PS256")) == (
        "no key for alg PS256", "unknown_key",
    )  # fmt: skip
    odd = token({"alg": "XX999"}, CLAIMS, HS_SECRET, "HS256")
    assert await refusal(ident, odd) == ("no key for alg (unsupported)", "unknown_key")
    other = jwt.encode(CLAIMS, rsa_key(2048, 1), "RS256", headers={"kid": "one"})
    assert await refusal(ident, other) == ("bad signature", "signature")
    assert await refusal(ident, token({"typ": "JWT"}, CLAIMS, HS_SECRET, "HS256")) == (
        "token header has no alg", "malformed",
    )  # fmt: skip


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", "application/jwt", "service", 7])
async def test_other_typ_values_are_end_user_tokens(typ):
    ident = make_identity({"secrets": [{"secret": HS_SECRET}]})
    assert await ident.verify(hs_token(CLAIMS, typ=typ)) == CLAIMS


@pytest.mark.parametrize(
    ("aud", "service"),
    [("orders", True), (["x", "orders"], True), ("billing", False), (["billing"], False),
     ("ORDERS", False), ({"orders": 1}, False)],
)  # fmt: skip
async def test_a_token_for_the_upstream_service_is_refused(aud, service):
    ident = make_identity(
        {"secrets": [{"secret": HS_SECRET}], "serviceToken": {"audience": "orders"}}
    )
    tok = hs_token({**CLAIMS, "aud": aud})
    if service:
        assert await refusal(ident, tok) == (
            "a token for the upstream service is not an end-user token", "service_token",
        )  # fmt: skip
    else:
        await ident.verify(tok)


async def test_without_kid_the_keys_of_the_alg_are_tried_and_a_kidless_key_serves_any_kid():
    k1, k2 = rsa_key(2048, 0), rsa_key(2048, 1)
    ident = make_identity(
        {"secrets": [
            {"alg": "RS256", "publicKey": public_pem(k1), "kid": "one"},
            {"alg": "RS256", "publicKey": public_pem(k2)},
        ]}
    )  # fmt: skip
    assert await ident.verify(jwt.encode(CLAIMS, k2, "RS256", headers={"kid": "nope"}))
    assert await ident.verify(jwt.encode(CLAIMS, k1, "RS256"))  # no kid: every RS256 key
    assert await ident.verify(jwt.encode(CLAIMS, k2, "RS256"))
    # a known kid picks its own key only: the kid-less key is not tried for it
    reason = await refusal(ident, jwt.encode(CLAIMS, k2, "RS256", headers={"kid": "one"}))
    assert reason == ("bad signature", "signature")
