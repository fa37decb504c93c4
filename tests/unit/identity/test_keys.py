"""Static keys from the config: loaded at construction, every problem reported at once."""

from __future__ import annotations

import re
from pathlib import Path

import pydantic
import pytest
from cryptography.hazmat.primitives import serialization

from authz.config.auth import AuthSettings
from authz.errors import ConfigError
from authz.identity.keys import MIN_RSA_BITS, PUBLISHED_SECRETS, check_public_key
from tests.unit.identity.support import (
    HS_SECRET,
    ec_key,
    ed_key,
    make_identity,
    private_pem,
    public_pem,
    rsa_key,
)


def config_errors(auth: dict, **kw) -> list[str]:
    with pytest.raises(ConfigError) as e:
        make_identity(auth, **kw)
    return e.value.errors


def test_static_keys_load(tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "ec.pem").write_text(public_pem(ec_key("P-256")))
    ident = make_identity(
        {
            "secrets": [
                {"secret": HS_SECRET},
                {"kid": "rs", "alg": "RS256", "publicKey": public_pem(rsa_key())},
                {"kid": "ec", "alg": "ES256", "publicKeyFile": "keys/ec.pem"},
                {"alg": "EdDSA", "publicKey": public_pem(ed_key())},
            ]
        },
        base_dir=tmp_path,
    )
    keys = ident.verifier.providers
    assert [k.alg for k in keys] == ["HS256", "RS256", "ES256", "EdDSA"]
    assert [k.kid for k in keys] == [None, "rs", "ec", None]
    assert ident.ready  # static keys are always ready


def test_certificate_is_accepted_as_public_key():
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = rsa_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    ident = make_identity({"secrets": [{"alg": "RS256", "publicKey": pem}]})
    assert ident.verifier.providers[0].alg == "RS256"


def test_all_problems_reported_at_once(tmp_path):
    errors = config_errors(
        {
            "secrets": [
                {"secret": "short"},
                {"alg": "RS256", "publicKey": "-----BEGIN PUBLIC KEY-----\nnope\n"},
                {"alg": "ES256", "publicKeyFile": "missing.pem"},
                {"alg": "HS512", "secret": "x" * 48},
            ]
        },
        base_dir=tmp_path,
    )
    assert len(errors) == 4, errors
    assert errors[0].startswith("auth.secrets[0].secret: HS256 needs a secret of at least 32")
    assert errors[1].startswith("auth.secrets[1].publicKey: not a PEM public key")
    assert errors[2].startswith("auth.secrets[2].publicKeyFile: cannot read 'missing.pem'")
    assert errors[3].startswith("auth.secrets[3].secret: HS512 needs a secret of at least 64")


@pytest.mark.parametrize(("alg", "need"), [("HS256", 32), ("HS384", 48), ("HS512", 64)])
def test_hmac_secret_length(alg, need):
    make_identity({"secrets": [{"alg": alg, "secret": "k" * need}]})
    (error,) = config_errors({"secrets": [{"alg": alg, "secret": "k" * (need - 1)}]})
    assert "at least" in error and "openssl rand -base64" in error  # says how to make one


@pytest.mark.parametrize(
    "secret",
    [
        *sorted(PUBLISHED_SECRETS),
        "REPLACE-ME-with-your-own-secret-of-32-bytes-or-more",  # an edited placeholder
        "my-demo-secret-CHANGE-ME-0123456789abcdef",
    ],
)
def test_published_example_secrets_are_refused(secret):
    (error,) = config_errors({"secrets": [{"secret": secret}]})
    assert error.startswith("auth.secrets[0].secret: is an example value published with authz")
    assert "openssl rand -base64 48" in error


def test_published_secrets_cover_every_shipped_manifest_and_compose_default():
    # The one list must hold what the deployment files ship today, so a new example value
    # cannot be added to them without being refused.
    root = Path(__file__).resolve().parents[3]
    texts = [p.read_text() for p in (root / "deploy").rglob("*") if p.is_file()]
    texts.append((root / "docker-compose.yml").read_text())
    found = {
        m
        for t in texts
        for m in re.findall(r"AUTHZ_SECRET(?::\s*\"?|:-|=)([A-Za-z0-9_+/=.-]{8,})", t)
    }
    assert found <= PUBLISHED_SECRETS, found - PUBLISHED_SECRETS


@pytest.mark.parametrize(
    "secret",
    [
        public_pem(rsa_key()),
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ" + "A" * 40 + " user@host",
    ],
)
def test_asymmetric_key_text_is_not_an_hmac_secret(secret):
    errors = config_errors({"secrets": [{"secret": secret}]})
    assert errors[0].startswith("auth.secrets[0].secret: looks like an asymmetric key")


@pytest.mark.parametrize(
    ("alg", "pem", "message"),
    [
        ("RS256", lambda: public_pem(ec_key("P-256")), "RS256 needs an RSA key"),
        ("PS256", lambda: public_pem(ed_key()), "PS256 needs an RSA key"),
        ("ES256", lambda: public_pem(ec_key("P-384")), "ES256 needs curve secp256r1"),
        ("ES512", lambda: public_pem(rsa_key()), "ES512 needs an EC key"),
        ("EdDSA", lambda: public_pem(rsa_key()), "EdDSA needs an Ed25519 or Ed448 key"),
        ("RS256", lambda: public_pem(rsa_key(1024)), f"at least {MIN_RSA_BITS}"),
    ],
)
def test_key_must_fit_its_algorithm(alg, pem, message):
    errors = config_errors({"secrets": [{"alg": alg, "publicKey": pem()}]})
    assert errors == [f"auth.secrets[0].publicKey: {errors[0].split(': ', 1)[1]}"]
    assert message in errors[0]


def test_private_key_must_match_public_key():
    errors = config_errors(
        {
            "secrets": [
                {
                    "alg": "RS256",
                    "publicKey": public_pem(rsa_key()),
                    "privateKey": private_pem(rsa_key(2048, 1)),
                }
            ]
        }
    )
    assert errors == ["auth.secrets[0].privateKey: does not match the public key"]
    errors = config_errors(
        {"secrets": [{"alg": "RS256", "publicKey": public_pem(rsa_key()), "privateKey": "x"}]}
    )
    assert errors == ["auth.secrets[0].privateKey: not an unencrypted PEM private key"]


@pytest.mark.parametrize(
    "entry",
    [
        {"alg": "RS256", "secret": HS_SECRET},
        {"alg": "HS256", "publicKey": "pem"},
        {"publicKey": "pem"},  # a public key needs its alg
        {"secret": HS_SECRET, "jwksUrl": "http://127.0.0.1/jwks"},
        {"jwksUrl": "http://127.0.0.1/jwks", "primary": True},
        {"jwksUrl": "http://127.0.0.1/jwks", "kid": "a"},
        {"secret": HS_SECRET, "privateKey": "pem"},
        {},
    ],
)
def test_settings_shape(entry):
    with pytest.raises(pydantic.ValidationError):
        AuthSettings.model_validate({"secrets": [entry]})


def test_secret_defaults_to_hs256_and_jwks_alg_is_optional():
    settings = AuthSettings.model_validate(
        {"secrets": [{"secret": HS_SECRET}, {"jwksUrl": "http://127.0.0.1/jwks"}]}
    )
    assert [s.alg for s in settings.secrets] == ["HS256", None]


def test_a_key_verifies_what_it_signs_and_can_sign_only_with_a_private_key():
    private = rsa_key()
    signer = make_identity(
        {"secrets": [{"alg": "RS256", "publicKey": public_pem(private),
                      "privateKey": private_pem(private)}]}
    ).verifier.providers[0]  # fmt: skip
    verifier = make_identity(
        {"secrets": [{"alg": "RS256", "publicKey": public_pem(private)}]}
    ).verifier.providers[0]
    assert signer.can_sign is True and verifier.can_sign is False
    signature = signer.sign(b"input")
    assert verifier.verify(b"input", signature) is True
    assert verifier.verify(b"other", signature) is False
    assert verifier.verify(b"input", b"not a signature") is False  # malformed: False, no raise


def test_check_public_key_names_what_is_wrong():
    public = rsa_key().public_key()
    assert check_public_key("RS256", public) is None
    assert check_public_key("PS384", public) is None
    assert check_public_key("HS256", public) == "unsupported algorithm HS256"
    assert check_public_key("ES256", public) == "ES256 needs an EC key"


def test_unreadable_and_empty_key_files(tmp_path):
    private = rsa_key()
    (tmp_path / "pub.pem").write_text(public_pem(private))
    (tmp_path / "empty.pem").write_text("")
    errors = config_errors(
        {"secrets": [
            {"alg": "RS256", "publicKeyFile": "nope.pem"},
            {"alg": "RS256", "publicKeyFile": "pub.pem", "privateKeyFile": "empty.pem"},
            {"alg": "RS256", "publicKeyFile": "pub.pem", "privateKeyFile": "gone.pem"},
        ]},
        base_dir=tmp_path,
    )  # fmt: skip
    assert errors == [
        "auth.secrets[0].publicKeyFile: cannot read 'nope.pem': No such file or directory",
        "auth.secrets[1].privateKeyFile: empty",
        "auth.secrets[2].privateKeyFile: cannot read 'gone.pem': No such file or directory",
        "auth.secrets[2].privateKeyFile: empty",
    ]


def test_a_key_that_cannot_check_a_signature_says_false():
    hs = make_identity({"secrets": [{"secret": HS_SECRET}]}).verifier.providers[0]
    assert hs.verify(b"input", "a str, not bytes") is False  # raises inside: still False


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        # each entry has one problem, and only that one is reported
        ({"secret": "changeme"}, "auth.secrets[0].secret: HS256 needs a secret of at least 32"),
        ({"secret": "ssh-rsa changeme " + "x" * 40},  # an example value that is also no HMAC key
         "auth.secrets[0].secret: is an example value published with authz"),
        ({"alg": "ES256", "publicKey": public_pem(rsa_key()),
          "privateKey": private_pem(rsa_key(2048, 1))},  # nor its private key's
         "auth.secrets[0].publicKey: ES256 needs an EC key"),
        ({"alg": "RS256", "publicKeyFile": "nope.pem", "privateKey": private_pem(rsa_key())},
         "auth.secrets[0].publicKeyFile: cannot read 'nope.pem'"),
    ],
)  # fmt: skip
def test_one_problem_one_error(entry, error, tmp_path):
    errors = config_errors({"secrets": [entry]}, base_dir=tmp_path)
    assert len(errors) == 1 and errors[0].startswith(error), errors


def test_two_primaries_are_one_error_whatever_the_keys():
    public_only = {"alg": "RS256", "publicKey": public_pem(rsa_key()), "primary": True}
    errors = config_errors({"secrets": [public_only, {"secret": HS_SECRET, "primary": True}]})
    assert errors == ["auth.secrets: only one key may be primary (got secrets[0], secrets[1])"]
