import base64
import hashlib
import hmac
import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authz.config.schema import CryptoKey, CryptoSettings
from authz.crypto import Keyring, hash_value, seal, unseal
from authz.errors import ConfigError, CryptoError, RequestError

K1 = bytes(range(32))
K2 = bytes(range(100, 132))
VECTORS = json.loads(
    (Path(__file__).parent.parent / "data" / "wycheproof_aes_gcm.json").read_text()
)
ENVELOPE = re.compile(r"^v1\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def ring(*keys: tuple[str, bytes] | tuple[str, bytes, str], hash_key: str | None = None):
    items = [CryptoKey(id=k[0], key=b64(k[1]), legacy=k[2] if len(k) > 2 else None) for k in keys]
    return Keyring.from_settings(CryptoSettings(keys=items, hashKey=hash_key))


def blob_of(envelope: str) -> bytes:
    payload = envelope.split(".")[2]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))


def envelope_of(kid: str, blob: bytes) -> str:
    return f"v1.{kid}." + base64.urlsafe_b64encode(blob).rstrip(b"=").decode()


# --- AES-256-GCM envelopes -----------------------------------------------------------------


def test_round_trip_and_envelope_format():
    kr = ring(("k1", K1))
    env = kr.encrypt("alice@example.com", "email")
    m = ENVELOPE.match(env)
    assert m and m.group(1) == "k1" and "=" not in env
    assert len(blob_of(env)) == 12 + len("alice@example.com") + 16
    assert kr.decrypt(env, "email") == "alice@example.com"
    assert kr.decrypt(kr.encrypt("", "x"), "x") == ""
    assert kr.decrypt(kr.encrypt("héllo ✓", "x"), "x") == "héllo ✓"


def test_two_encryptions_of_the_same_value_differ():
    kr = ring(("k1", K1))
    a, b = kr.encrypt("same", "f"), kr.encrypt("same", "f")
    assert a != b
    assert blob_of(a)[:12] != blob_of(b)[:12]  # fresh nonce each time


def test_the_envelope_is_really_aes_gcm_with_the_path_as_associated_data():
    env = ring(("k1", K1)).encrypt("secret", "user.email")
    blob = blob_of(env)
    assert AESGCM(K1).decrypt(blob[:12], blob[12:], b"user.email") == b"secret"


@pytest.mark.parametrize("index", [-1, -16, 12, 0])  # tag end, tag start, ciphertext, nonce
def test_any_flipped_bit_fails_closed(index):
    kr = ring(("k1", K1))
    blob = bytearray(blob_of(kr.encrypt("secret", "f")))
    blob[index] ^= 0x01
    with pytest.raises(CryptoError):
        kr.decrypt(envelope_of("k1", bytes(blob)), "f")


def test_a_ciphertext_moved_to_another_field_does_not_decrypt():
    kr = ring(("k1", K1))
    env = kr.encrypt("123-45-6789", "ssn")
    with pytest.raises(CryptoError):
        kr.decrypt(env, "nickname")
    assert kr.decrypt(env, "ssn") == "123-45-6789"


def test_unknown_key_id_fails():
    env = ring(("k1", K1)).encrypt("v", "f")
    with pytest.raises(CryptoError, match="unknown key"):
        ring(("k2", K2)).decrypt(env, "f")
    # same key bytes under another id: the kid in the envelope decides
    with pytest.raises(CryptoError):
        ring(("other", K1)).decrypt(env, "f")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "v1.",
        "v1.k1",
        "v1.k1.",
        "v1.k1.AAAA",  # shorter than nonce + tag
        "v1.k1.abc.def",
        "v2.k1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1.k1.AAAA+AAA/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # standard, not URL alphabet
        "v1.k1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",  # padding
        "v1.k1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB",  # non-canonical last char
        "plain text",
    ],
)
def test_malformed_envelopes_fail(text):
    with pytest.raises(CryptoError):
        ring(("k1", K1)).decrypt(text, "f")


def test_crypto_errors_are_400s_and_say_nothing_of_the_value():
    kr = ring(("k1", K1))
    env = kr.encrypt("top-secret", "a")
    with pytest.raises(RequestError) as info:
        kr.decrypt(env, "b")
    assert "top-secret" not in str(info.value) and env not in str(info.value)


def test_rotation_old_key_still_decrypts_new_key_encrypts():
    old = ring(("k1", K1))
    stored = [old.encrypt("first", "f"), old.encrypt("second", "f")]
    rotated = ring(("k2", K2), ("k1", K1))  # the first key encrypts
    stored.append(rotated.encrypt("third", "f"))
    assert ENVELOPE.match(stored[2]).group(1) == "k2"
    assert [rotated.decrypt(e, "f") for e in stored] == ["first", "second", "third"]
    retired = ring(("k2", K2))  # k1 removed: its data no longer decrypts
    assert retired.decrypt(stored[2], "f") == "third"
    with pytest.raises(CryptoError):
        retired.decrypt(stored[0], "f")


# --- Wycheproof ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS["tests"], ids=lambda c: f"tc{c['tcId']}")
def test_wycheproof_vectors_through_the_wrapper(case):
    key, iv, aad = (bytes.fromhex(case[k]) for k in ("key", "iv", "aad"))
    msg, sealed = bytes.fromhex(case["msg"]), bytes.fromhex(case["ct"] + case["tag"])
    kr = Keyring.from_settings(CryptoSettings(keys=[CryptoKey(id="w", key=b64(key))]))
    envelope = envelope_of("w", iv + sealed)
    if case["result"] == "valid":
        assert seal(AESGCM(key), iv, msg, aad) == iv + sealed
        assert unseal(AESGCM(key), iv + sealed, aad) == msg
        assert kr.open(envelope, aad) == msg
    else:
        with pytest.raises(CryptoError):
            unseal(AESGCM(key), iv + sealed, aad)
        with pytest.raises(CryptoError):
            kr.open(envelope, aad)


def test_vector_file_has_both_kinds():
    results = {c["result"] for c in VECTORS["tests"]}
    assert results == {"valid", "invalid"}
    assert all(len(c["key"]) == 64 for c in VECTORS["tests"])


def test_seal_refuses_other_nonce_sizes():
    with pytest.raises(ValueError):
        seal(AESGCM(K1), b"\0" * 16, b"x", b"")


# --- hash ------------------------------------------------------------------------------------


def test_hash_matches_space_cloud():
    assert hash_value("password") == "XohImNooBHFR0OVvjcYpJ3NgPQ1qq73WKhHvch0VQtg="
    assert hash_value("password", "hex") == hashlib.sha256(b"password").hexdigest()
    assert hash_value("password", "hex").islower()
    assert ring().hash("password") == "XohImNooBHFR0OVvjcYpJ3NgPQ1qq73WKhHvch0VQtg="
    assert hash_value("é") == b64(hashlib.sha256("é".encode()).digest())


def test_keyed_hash_is_hmac_sha256():
    key = bytes(range(40, 72))
    kr = ring(hash_key=b64(key))
    expected = hmac.new(key, b"password", hashlib.sha256).digest()
    assert kr.hash("password") == b64(expected)
    assert kr.hash("password", "hex") == expected.hex()
    assert kr.hash("password") != hash_value("password")


def test_empty_hash_key_means_unkeyed():
    kr = ring(hash_key="")
    assert kr.hash("password") == "XohImNooBHFR0OVvjcYpJ3NgPQ1qq73WKhHvch0VQtg="


# --- Space Cloud legacy ------------------------------------------------------------------------


def space_cloud_encrypt(key: bytes, value: str) -> str:
    """Space Cloud's utils.Encrypt, written out from the CFB definition (Go's full-block CFB):
    C_i = P_i XOR AES(C_{i-1}), C_0 = IV = key[:16]; the result in standard base64."""
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    data, prev, out = value.encode(), key[:16], b""
    for i in range(0, len(data), 16):
        stream = ecb.update(prev)
        block = bytes(a ^ b for a, b in zip(data[i : i + 16], stream, strict=False))
        out += block
        prev = block if len(block) == 16 else prev
    return base64.b64encode(out).decode()


@pytest.mark.parametrize("value", ["a", "alice@example.com", "x" * 16, "long " * 20, "ünï ✓"])
def test_legacy_key_decrypts_space_cloud_ciphertexts(value):
    kr = ring(("new", K1), ("sc", K2, "spacecloud-cfb"))
    assert kr.decrypt(space_cloud_encrypt(K2, value), "any.field") == value


def test_legacy_key_sizes_follow_space_cloud():
    key16 = bytes(range(16))
    kr = ring(("sc", key16, "spacecloud-cfb"))
    assert kr.decrypt(space_cloud_encrypt(key16, "hello"), "f") == "hello"


def test_legacy_keys_never_encrypt():
    only_legacy = ring(("sc", K2, "spacecloud-cfb"))
    assert not only_legacy.can_encrypt
    with pytest.raises(CryptoError):
        only_legacy.encrypt("v", "f")
    mixed = ring(("sc", K2, "spacecloud-cfb"), ("new", K1))
    assert ENVELOPE.match(mixed.encrypt("v", "f")).group(1) == "new"


def test_without_a_legacy_key_space_cloud_text_is_rejected():
    with pytest.raises(CryptoError):
        ring(("k1", K1)).decrypt(space_cloud_encrypt(K1, "hello"), "f")


@pytest.mark.parametrize("text", ["", "not base64!", "AAA", "AAAA="])
def test_legacy_rejects_non_base64(text):
    with pytest.raises(CryptoError):
        ring(("sc", K2, "spacecloud-cfb")).decrypt(text, "f")


# --- configuration -----------------------------------------------------------------------------


def test_config_errors_name_every_bad_key():
    settings = CryptoSettings(
        keys=[
            CryptoKey(id="ok", key=b64(K1)),
            CryptoKey(id="short", key=b64(b"x" * 16)),
            CryptoKey(id="notb64", key="%%%"),
            CryptoKey(id="ok", key=b64(K2)),
            CryptoKey(id="a.b", key=b64(K2)),
            CryptoKey(id="sc1", key=b64(K2), legacy="spacecloud-cfb"),
            CryptoKey(id="sc2", key=b64(K1), legacy="spacecloud-cfb"),
        ],
        hashKey=b64(b"tiny"),
    )
    with pytest.raises(ConfigError) as info:
        Keyring.from_settings(settings)
    text = "\n".join(info.value.errors)
    assert "crypto.keys[1].key: must decode to 32 bytes, got 16" in text
    assert "crypto.keys[2].key: not valid base64" in text
    assert "crypto.keys[3].id: duplicate key id 'ok'" in text
    assert "crypto.keys[4].id:" in text
    assert "crypto.keys: at most one key may be legacy" in text
    assert "crypto.hashKey: must decode to at least 16 bytes" in text
    assert len(info.value.errors) == 6


def test_key_material_never_appears_in_config_errors():
    secret = b64(b"s" * 31)
    with pytest.raises(ConfigError) as info:
        Keyring.from_settings(CryptoSettings(keys=[CryptoKey(id="k", key=secret)]))
    assert secret not in str(info.value)
