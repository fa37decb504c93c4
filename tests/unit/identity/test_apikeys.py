"""API keys: digests only, the right key and the wrong one, where a key is read, constant-time
comparison, the key file and its reload."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydantic import ValidationError

from authz.config.auth import ApiKeySettings
from authz.errors import ConfigError, TokenError
from authz.identity import apikeys
from authz.identity.apikeys import ApiKeys, config_line, digest, new_key
from authz.identity.keys import Problems

KEY = "azk_test-key-for-billing-0123456789"
OTHER = "azk_test-key-for-reports-0123456789"


def keys(extra: dict | None = None, base_dir: Path = Path(".")) -> ApiKeys:
    settings = ApiKeySettings.model_validate(
        {"keys": [{"sha256": digest(KEY), "claims": {"id": "billing"}}], **(extra or {})}
    )
    problems = Problems()
    made = ApiKeys(settings, base_dir, problems)
    if problems:
        raise ConfigError(problems)
    return made


def test_digest_is_sha256_hex_of_the_key():
    assert digest("test") == hashlib.sha256(b"test").hexdigest()
    made = new_key()
    assert made.startswith("azk_") and len(made) > 40 and made != new_key()
    assert (
        config_line("ab" * 32, {"id": "x"}) == f'- {{sha256: {"ab" * 32}, claims: {{"id": "x"}}}}'
    )


def test_right_key_gives_its_claims_and_a_copy():
    store = keys()
    claims = store.claims(KEY)
    assert claims == {"id": "billing"}
    claims["id"] = "admin"  # a rule changing args.auth changes nothing stored
    assert store.claims(KEY) == {"id": "billing"}


@pytest.mark.parametrize("wrong", [OTHER, KEY + "x", KEY[:-1], digest(KEY), KEY.upper()])
def test_wrong_keys_are_401(wrong):
    with pytest.raises(TokenError, match="unknown API key"):
        keys().claims(wrong)


def test_the_key_itself_is_never_held():
    store = keys()
    assert KEY not in repr(vars(store))
    # the lookup index is salted: it is not the digest the config shows
    assert bytes.fromhex(digest(KEY)) not in store.table


def test_comparison_is_constant_time(monkeypatch):
    calls = []

    def compare(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return False  # the compare decides, not the dict lookup

    monkeypatch.setattr(apikeys.hmac, "compare_digest", compare)
    with pytest.raises(TokenError):
        keys().claims(KEY)
    assert calls == [(hashlib.sha256(KEY.encode()).digest(),) * 2]


def test_where_keys_are_read():
    store = keys()
    assert store.extract({"x-api-key": KEY}) == (KEY, False)
    assert store.extract({"authorization": f"APIKey {KEY}"}) == (KEY, True)
    assert store.extract({"authorization": f"apikey  {KEY} "}) == (KEY, True)
    assert store.extract({"authorization": "Bearer abc"}) == (None, False)
    assert store.extract({}) == (None, False)


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"x-api-key": KEY, "authorization": f"APIKey {KEY}"}, "twice"),
        ({"x-api-key": f"{KEY},{OTHER}"}, "malformed"),  # Envoy joined two headers
        ({"x-api-key": f"{KEY} {OTHER}"}, "malformed"),
        ({"x-api-key": ""}, "malformed"),
        ({"authorization": "APIKey"}, "malformed"),
        ({"x-api-key": "k" * 300}, "too large"),
    ],
)
def test_malformed_or_doubled_keys_are_401(headers, why):
    with pytest.raises(TokenError, match=why):
        keys().extract(headers)


def test_header_and_scheme_are_configurable():
    store = keys({"header": "X-Key", "scheme": None})
    assert store.extract({"x-key": KEY}) == (KEY, False)
    assert store.extract({"authorization": f"APIKey {KEY}"}) == (None, False)


@pytest.mark.parametrize(
    "bad",
    [
        {"keys": [{"sha256": "abc"}]},
        {"keys": [{"sha256": digest(KEY).upper()}]},
        {"keys": [{"sha256": digest(KEY), "key": KEY}]},  # no place for a clear key
        {"header": None, "scheme": None},
        {"header": "authorization"},
    ],
)
def test_config_errors(bad):
    with pytest.raises(ValidationError):
        ApiKeySettings.model_validate(bad)


def test_a_key_listed_twice_is_a_config_error():
    entry = {"sha256": digest(KEY)}
    with pytest.raises(ConfigError, match="listed twice"):
        keys({"keys": [entry, entry]})


def write_keys(path: Path, *entries: tuple[str, str]) -> None:
    lines = ["keys:"] + [f"  - {{sha256: {digest(k)}, claims: {{id: {i}}}}}" for k, i in entries]
    path.write_text("\n".join(lines) + "\n")


def test_key_file_is_read_at_load_and_reloaded(tmp_path):
    path = tmp_path / "keys.yaml"
    write_keys(path, (OTHER, "reports"))
    store = keys({"file": "keys.yaml"}, tmp_path)
    assert store.claims(OTHER) == {"id": "reports"} and store.claims(KEY) == {"id": "billing"}
    assert store.reload() is False  # unchanged
    write_keys(path, ("azk_rotated-key-000000000000000", "reports"))
    assert store.reload() is True
    assert store.claims("azk_rotated-key-000000000000000") == {"id": "reports"}
    with pytest.raises(TokenError):
        store.claims(OTHER)  # revoked by the new file
    assert store.claims(KEY) == {"id": "billing"}  # inline keys stay


def test_a_bad_key_file_keeps_the_last_good_keys(tmp_path):
    path = tmp_path / "keys.yaml"
    write_keys(path, (OTHER, "reports"))
    store = keys({"file": "keys.yaml"}, tmp_path)
    path.write_text("keys: [{sha256: nope}]\n")
    assert store.reload() is False
    assert "not a key file" in (store.problem or "")
    assert store.claims(OTHER) == {"id": "reports"}
    path.unlink()
    assert store.reload() is False and "cannot read" in (store.problem or "")
    write_keys(path, (OTHER, "again"))
    assert store.reload() is True and store.problem is None


def test_a_missing_or_bad_key_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        keys({"file": "absent.yaml"}, tmp_path)
    (tmp_path / "k.yaml").write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="not a key file"):
        keys({"file": "k.yaml"}, tmp_path)


async def test_the_file_is_polled(tmp_path):
    import asyncio

    path = tmp_path / "keys.yaml"
    write_keys(path, (OTHER, "reports"))
    store = keys({"file": "keys.yaml", "watch": "50ms"}, tmp_path)
    await store.start()
    try:
        write_keys(path, (OTHER, "changed"))
        for _ in range(100):
            if store.claims(OTHER) == {"id": "changed"}:
                break
            await asyncio.sleep(0.05)
        assert store.claims(OTHER) == {"id": "changed"}
    finally:
        await store.close()
