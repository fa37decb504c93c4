"""Field encryption and hashing for the `encrypt`, `decrypt` and `hash` rules (docs/rules.md).

- encrypt: AES-256-GCM, a random 96-bit nonce per value, the field path as associated data
  (so a ciphertext moved to another field does not decrypt), envelope
  `v1.<kid>.<base64url(nonce | ciphertext | tag)>` without padding. The first current key
  encrypts; every key decrypts, chosen by the envelope's key id (rotation).
- decrypt fails closed with `CryptoError` on anything but an authentic envelope.
- A key marked `legacy: spacecloud-cfb` reads Space Cloud's format (AES-CFB, IV = the key's
  first 16 bytes, standard base64) for migration only: it never encrypts.
- hash: SHA-256 of the UTF-8 bytes (HMAC-SHA-256 with `crypto.hashKey`), standard base64 with
  padding as Space Cloud writes it, or lower-case hex.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

try:  # CFB moved to `decrepit` in newer releases (legacy reading only)
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

from authz.config.schema import CryptoSettings
from authz.errors import ConfigError, CryptoError

VERSION = "v1"
NONCE_BYTES = 12
TAG_BYTES = 16
LEGACY_CFB = "spacecloud-cfb"
_KID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # no '.', the envelope separator
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_B64STD = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")

Encoding = Literal["base64", "hex"]


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str
    raw: bytes
    legacy: bool


class Keyring:
    """The configured keys, decoded and checked once at load."""

    __slots__ = ("_aead", "_current", "_hash_key", "_legacy")

    def __init__(self, keys: list[_Key], hash_key: bytes | None = None):
        self._aead = {k.kid: AESGCM(k.raw) for k in keys if not k.legacy}
        self._current = next((k.kid for k in keys if not k.legacy), None)
        self._legacy = next((k for k in keys if k.legacy), None)
        self._hash_key = hash_key

    @classmethod
    def from_settings(cls, settings: CryptoSettings, path: str = "crypto") -> Keyring:
        """Decode and validate every key; raise ConfigError naming each bad one."""
        errors: list[str] = []
        keys: list[_Key] = []
        for i, key in enumerate(settings.keys):
            decoded = _decode_key(key.id, key.key, key.legacy, f"{path}.keys[{i}]", errors)
            if decoded is not None:
                if any(k.kid == decoded.kid for k in keys):
                    errors.append(f"{path}.keys[{i}].id: duplicate key id {key.id!r}")
                keys.append(decoded)
        if sum(k.legacy for k in keys) > 1:
            # CFB has no integrity check: with two legacy keys we could not tell which one fits.
            errors.append(f"{path}.keys: at most one key may be legacy: {LEGACY_CFB}")
        hash_key = _decode_hash_key(settings.hashKey, f"{path}.hashKey", errors)
        if errors:
            raise ConfigError(errors)
        return cls(keys, hash_key)

    @property
    def can_encrypt(self) -> bool:
        return self._current is not None

    def encrypt(self, value: str, aad_path: str) -> str:
        """Encrypt with the current key, binding the value to `aad_path`."""
        if self._current is None:
            raise CryptoError("no key to encrypt with")
        aead = self._aead[self._current]
        blob = seal(aead, os.urandom(NONCE_BYTES), value.encode(), aad_path.encode())
        return f"{VERSION}.{self._current}.{_b64url(blob)}"

    def decrypt(self, envelope: str, aad_path: str) -> str:
        """The plaintext of an envelope written for `aad_path`; CryptoError otherwise."""
        if envelope.startswith(VERSION + "."):
            return _utf8(self.open(envelope, aad_path.encode()))
        if self._legacy is not None:
            return _cfb_decrypt(self._legacy.raw, envelope)
        raise CryptoError("not an encrypted value")

    def open(self, envelope: str, aad: bytes) -> bytes:
        """The plaintext bytes of a v1 envelope (the AEAD wrapper the vectors test)."""
        parts = envelope.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise CryptoError("malformed encrypted value")
        aead = self._aead.get(parts[1])
        if aead is None:
            raise CryptoError("encrypted with an unknown key")
        return unseal(aead, _unb64url(parts[2]), aad)

    def hash(self, value: str, encoding: Encoding = "base64") -> str:
        return hash_value(value, encoding, self._hash_key)


def seal(aead: AESGCM, nonce: bytes, data: bytes, aad: bytes) -> bytes:
    """nonce | ciphertext | tag."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError("AES-GCM nonces here are 96 bits")
    return nonce + aead.encrypt(nonce, data, aad)


def unseal(aead: AESGCM, blob: bytes, aad: bytes) -> bytes:
    """Open nonce | ciphertext | tag; CryptoError on any failure (fail closed)."""
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise CryptoError("malformed encrypted value")
    try:
        return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except (InvalidTag, ValueError):
        raise CryptoError("cannot decrypt the value") from None


def hash_value(value: str, encoding: Encoding = "base64", key: bytes | None = None) -> str:
    """SHA-256 (or HMAC-SHA-256 with a key) of the UTF-8 bytes, base64 (padded) or hex."""
    data = value.encode()
    digest = hmac.digest(key, data, "sha256") if key else hashlib.sha256(data).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


# --- helpers -----------------------------------------------------------------------------


def _decode_key(
    kid: str, text: str, legacy: str | None, path: str, errors: list[str]
) -> _Key | None:
    ok = True
    if not _KID.match(kid):
        errors.append(f"{path}.id: a key id is 1-64 letters, digits, '_' or '-'")
        ok = False
    raw = _std_b64(text)
    sizes = (16, 24, 32) if legacy else (32,)  # Space Cloud accepted any AES key size
    if raw is None:
        errors.append(f"{path}.key: not valid base64")
        return None
    if len(raw) not in sizes:
        want = "16, 24 or 32" if legacy else "32"
        errors.append(f"{path}.key: must decode to {want} bytes, got {len(raw)}")
        return None
    return _Key(kid, raw, legacy == LEGACY_CFB) if ok else None


def _decode_hash_key(text: str | None, path: str, errors: list[str]) -> bytes | None:
    if not text:  # unset, or `${AUTHZ_HASH_KEY:-}` left empty: plain SHA-256
        return None
    raw = _std_b64(text)
    if raw is None:
        errors.append(f"{path}: not valid base64")
    elif len(raw) < 16:
        errors.append(f"{path}: must decode to at least 16 bytes, got {len(raw)}")
    else:
        return raw
    return None


def _std_b64(text: str) -> bytes | None:
    text = text.strip()
    if not _B64STD.match(text) or len(text) % 4:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    # Strict: only the URL alphabet, no padding, and canonical (re-encodes to the same text).
    if not _B64URL.match(text) or len(text) % 4 == 1:
        raise CryptoError("malformed encrypted value")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise CryptoError("malformed encrypted value") from None
    if _b64url(data) != text:
        raise CryptoError("malformed encrypted value")
    return data


def _cfb_decrypt(key: bytes, text: str) -> str:
    """Space Cloud: AES-CFB (full-block, as Go's cipher.NewCFBDecrypter) with IV = key[:16]."""
    if not text or not _B64STD.match(text) or len(text) % 4:
        raise CryptoError("not an encrypted value")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError("not an encrypted value") from None
    decryptor = Cipher(algorithms.AES(key), CFB(key[:16])).decryptor()
    # UTF-8 is the only check CFB allows: a wrong key or a non-ciphertext gives garbage.
    return _utf8(decryptor.update(data) + decryptor.finalize())


def _utf8(data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise CryptoError("cannot decrypt the value") from None
