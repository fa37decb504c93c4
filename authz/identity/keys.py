"""Keys: one verification (and maybe signing) key pinned to one algorithm.

Static keys come from the config and are loaded once, with every problem reported at once;
JWKS keys are built by `jwks.py` through `key_from_jwk` here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)
from jwt.algorithms import Algorithm, get_default_algorithms

from authz.config.auth import SecretSettings

ALGORITHMS: dict[str, Algorithm] = {
    name: impl
    for name, impl in get_default_algorithms().items()
    if name not in ("none", "ES256K", "ES521")
}
MIN_RSA_BITS = 2048
_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
# Every HMAC secret this repository ships or has shipped as a deployment example (manifests,
# compose defaults). Whoever has read the repository can sign any token with them, so they
# are refused like a short secret. Add each new example value here.
PUBLISHED_SECRETS = frozenset(
    {
        # the Secret placeholder of deploy/kubernetes/ (and sidecar/) up to 0.1.0
        "REPLACE-ME-placeholder-hs256-secret-at-least-32-bytes",
        # docker-compose.yml's default AUTHZ_SECRET up to 0.1.0
        "demo-only-hs256-secret-change-me-0123456789",
    }
)
# Placeholder markers: an edited copy of an example value is still an example value.
_PLACEHOLDER_MARKERS = ("replace-me", "change-me", "changeme")
_EC_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}
_ED_TYPES = (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)


@dataclass(eq=False, slots=True)
class Key:
    """A key accepts only tokens of its own `alg` (no HS/RS confusion is possible)."""

    alg: str
    kid: str | None
    verify_key: Any  # what ALGORITHMS[alg].verify takes: bytes or a cryptography public key
    issuer: str | None = None
    audience: tuple[str, ...] | None = None
    sign_key: Any = None  # bytes or a cryptography private key; None = cannot sign
    fingerprint: str = ""  # identifies the key material, to notice removals across refreshes
    source: str = ""  # for logs: "auth.secrets[0]"
    removed: bool = False  # set when a JWKS refresh drops this key
    algorithm: Algorithm = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.algorithm = ALGORITHMS[self.alg]

    @property
    def can_sign(self) -> bool:
        return self.sign_key is not None

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        try:
            return bool(self.algorithm.verify(signing_input, self.verify_key, signature))
        except Exception:  # malformed signature bytes for this key type: just a bad signature
            return False

    def sign(self, signing_input: bytes) -> bytes:
        return self.algorithm.sign(signing_input, self.sign_key)


def audiences(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return (value,) if isinstance(value, str) else tuple(value)


def fingerprint(alg: str, kid: str | None, verify_key: Any) -> str:
    if isinstance(verify_key, bytes):
        material = verify_key
    else:
        material = verify_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(f"{alg}\0{kid}\0".encode() + material).hexdigest()


def check_public_key(alg: str, key: Any) -> str | None:
    """Why `key` cannot verify `alg` tokens, or None when it can."""
    if alg[:2] in ("RS", "PS"):
        if not isinstance(key, rsa.RSAPublicKey):
            return f"{alg} needs an RSA key"
        if key.key_size < MIN_RSA_BITS:
            return f"RSA key of {key.key_size} bits is too short (at least {MIN_RSA_BITS})"
    elif alg in _EC_CURVES:
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return f"{alg} needs an EC key"
        if not isinstance(key.curve, _EC_CURVES[alg]):
            return f"{alg} needs curve {_EC_CURVES[alg].name}, not {key.curve.name}"
    elif alg == "EdDSA":
        if not isinstance(key, _ED_TYPES):
            return "EdDSA needs an Ed25519 or Ed448 key"
    else:
        return f"unsupported algorithm {alg}"
    return None


# --- static keys from the config -------------------------------------------------------------


class Problems(list[str]):
    def add(self, path: str, message: str) -> None:
        self.append(f"{path}: {message}")


def _read(s: SecretSettings, name: str, base_dir: Path, path: str, problems: Problems) -> bytes:
    inline: str | None = getattr(s, name)
    if inline is not None:
        return inline.encode()
    file: str = getattr(s, name + "File")
    try:
        return (base_dir / file).read_bytes()
    except OSError as e:
        problems.add(f"{path}.{name}File", f"cannot read {file!r}: {e.strerror or e}")
        return b""


def _load_public(pem: bytes) -> Any:
    if b"-----BEGIN CERTIFICATE-----" in pem:
        return x509.load_pem_x509_certificate(pem).public_key()
    return load_pem_public_key(pem)


def _secret_key(s: SecretSettings, path: str, problems: Problems) -> bytes | None:
    text = s.secret or ""
    secret = text.encode()
    need = _HMAC_MIN_BYTES[s.alg or "HS256"]
    make_one = f"generate one with `openssl rand -base64 {max(48, need)}`"
    if len(secret) < need:
        problems.add(
            f"{path}.secret", f"{s.alg} needs a secret of at least {need} bytes; {make_one}"
        )
        return None
    if text in PUBLISHED_SECRETS or any(m in text.lower() for m in _PLACEHOLDER_MARKERS):
        problems.add(
            f"{path}.secret",
            "is an example value published with authz (anyone can sign tokens with it); "
            + make_one,
        )
        return None
    try:  # PyJWT refuses PEM/SSH-looking secrets: an asymmetric key is never an HMAC key
        key: bytes = ALGORITHMS[s.alg or "HS256"].prepare_key(secret)
        return key
    except Exception:
        problems.add(f"{path}.secret", "looks like an asymmetric key, not an HMAC secret")
        return None


def _asymmetric_keys(
    s: SecretSettings, path: str, base_dir: Path, problems: Problems
) -> tuple[Any, Any] | None:
    name = "publicKey" if s.publicKey is not None else "publicKeyFile"
    pem = _read(s, "publicKey", base_dir, path, problems)
    if not pem:
        return None
    try:
        public = _load_public(pem)
    except (ValueError, TypeError):
        problems.add(f"{path}.{name}", "not a PEM public key or certificate")
        return None
    if why := check_public_key(s.alg or "", public):
        problems.add(f"{path}.{name}", why)
        return None
    private = None
    if s.privateKey is not None or s.privateKeyFile is not None:
        pname = "privateKey" if s.privateKey is not None else "privateKeyFile"
        private = _load_private(_read(s, "privateKey", base_dir, path, problems), public)
        if isinstance(private, str):
            problems.add(f"{path}.{pname}", private)
            return None
    return public, private


def _load_private(pem: bytes, public: Any) -> Any:
    """The private key, or a string saying why it is unusable."""
    if not pem:
        return "empty"
    try:
        private = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        return "not an unencrypted PEM private key"
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if private.public_key().public_bytes(*spki) != public.public_bytes(*spki):
        return "does not match the public key"
    return private


def load_static_key(s: SecretSettings, path: str, base_dir: Path, problems: Problems) -> Key | None:
    alg = s.alg or "HS256"
    if s.secret is not None:
        secret = _secret_key(s, path, problems)
        if secret is None:
            return None
        verify_key, sign_key = secret, secret
    else:
        pair = _asymmetric_keys(s, path, base_dir, problems)
        if pair is None:
            return None
        verify_key, sign_key = pair
    return Key(
        alg=alg,
        kid=s.kid,
        verify_key=verify_key,
        issuer=s.issuer,
        audience=audiences(s.audience),
        sign_key=sign_key,
        fingerprint=fingerprint(alg, s.kid, verify_key),
        source=path,
    )


def pick_primary(
    secrets: Sequence[SecretSettings], keys: dict[int, Key], problems: Problems
) -> Key | None:
    """The signing key: the one marked `primary`, else the first static key able to sign."""
    marked = [i for i, s in enumerate(secrets) if s.primary]
    if len(marked) > 1:
        where = ", ".join(f"secrets[{i}]" for i in marked)
        problems.add("auth.secrets", f"only one key may be primary (got {where})")
        return None
    if marked:
        i = marked[0]
        key = keys.get(i)
        if key is not None and not key.can_sign:
            problems.add(
                f"auth.secrets[{i}].primary", "the primary key cannot sign (add privateKey)"
            )
        return key
    return next((k for k in keys.values() if k.can_sign), None)
