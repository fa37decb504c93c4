"""The verified-token cache: hits skip all parsing, expire on time, stay bounded (J28)."""

from __future__ import annotations

import pytest

from authz.errors import TokenError
from authz.identity.cache import TokenCache
from authz.identity.keys import Key
from tests.unit.identity.support import HS_SECRET, Clock, hs_token, make_identity

NOW = 1_800_000_000.0


@pytest.fixture
def clock():
    return Clock(NOW)


def ident_with(clock, **auth):
    return make_identity({"secrets": [{"secret": HS_SECRET}], "leeway": 0, **auth}, clock=clock)


def spy(monkeypatch, ident) -> list[str]:
    """Record every full verification (cache miss)."""
    calls: list[str] = []
    real = ident.verifier.verify

    async def counting(token):
        calls.append(token)
        return await real(token)

    monkeypatch.setattr(ident.verifier, "verify", counting)
    return calls


async def test_hit_returns_claims_without_verifying(clock, monkeypatch):
    ident = ident_with(clock)
    calls = spy(monkeypatch, ident)
    tok = hs_token({"id": "u1", "exp": NOW + 60})
    assert await ident.verify(tok) == {"id": "u1", "exp": NOW + 60}
    assert await ident.verify(tok) == {"id": "u1", "exp": NOW + 60}
    assert calls == [tok]


async def test_caller_cannot_poison_the_cache(clock):
    ident = ident_with(clock)
    tok = hs_token({"id": "u1"})
    (await ident.verify(tok))["id"] = "admin"
    assert (await ident.verify(tok))["id"] == "u1"


async def test_expired_entry_rejected_on_hit(clock, monkeypatch):
    ident = ident_with(clock)
    calls = spy(monkeypatch, ident)
    tok = hs_token({"id": "u1", "exp": NOW + 60})
    await ident.verify(tok)
    clock.now = NOW + 60
    with pytest.raises(TokenError, match="expired"):
        await ident.verify(tok)
    assert len(ident.cache) == 0  # dropped for good
    with pytest.raises(TokenError, match="expired"):
        await ident.verify(tok)
    assert calls == [tok, tok]


async def test_hit_honours_leeway_and_nbf(clock):
    ident = make_identity({"secrets": [{"secret": HS_SECRET}], "leeway": 10}, clock=clock)
    tok = hs_token({"exp": NOW + 5, "nbf": NOW + 5})
    await ident.verify(tok)  # nbf within leeway
    clock.now = NOW - 6  # stepped back: nbf now beyond the leeway
    with pytest.raises(TokenError, match="not yet valid"):
        await ident.verify(tok)
    clock.now = NOW + 14
    assert await ident.verify(tok)
    clock.now = NOW + 15
    with pytest.raises(TokenError, match="expired"):
        await ident.verify(tok)


async def test_size_bound_evicts_least_recently_used(clock, monkeypatch):
    ident = ident_with(clock, cacheSize=3)
    calls = spy(monkeypatch, ident)
    toks = [hs_token({"n": i}) for i in range(5)]
    for t in toks[:3]:
        await ident.verify(t)
    await ident.verify(toks[0])  # refresh 0: 1 is now the oldest
    await ident.verify(toks[3])
    await ident.verify(toks[4])
    assert len(ident.cache) == 3
    calls.clear()
    for t in (toks[0], toks[3], toks[4]):
        await ident.verify(t)
    assert calls == []
    await ident.verify(toks[1])
    assert calls == [toks[1]]


async def test_cache_size_zero_disables(clock, monkeypatch):
    ident = ident_with(clock, cacheSize=0)
    calls = spy(monkeypatch, ident)
    tok = hs_token({"id": "u1"})
    await ident.verify(tok)
    await ident.verify(tok)
    assert len(calls) == 2 and len(ident.cache) == 0


async def test_failures_are_not_cached(clock, monkeypatch):
    ident = ident_with(clock)
    calls = spy(monkeypatch, ident)
    tok = hs_token({"id": "u1"}, secret="t" * 64)
    for _ in range(2):
        with pytest.raises(TokenError):
            await ident.verify(tok)
    assert len(calls) == 2 and len(ident.cache) == 0


async def test_each_identity_has_its_own_cache(clock):
    """J28: a new config version (new Identity) trusts nothing the old one cached."""
    old = ident_with(clock)
    tok = hs_token({"id": "u1"})
    await old.verify(tok)
    new = make_identity({"secrets": [{"secret": "n" * 64}]}, clock=clock)
    with pytest.raises(TokenError, match="signature"):
        await new.verify(tok)


def _key(alg: str = "HS256") -> Key:
    return Key(alg, None, b"k" * 32)


def test_purge_drops_only_tokens_of_removed_keys():
    cache = TokenCache(10, 0)
    a, b = _key(), _key()
    cache.put("t1", {"n": 1}, None, None, a)
    cache.put("t2", {"n": 2}, None, None, b)
    cache.put("t3", {"n": 3}, None, None, a)
    assert cache.purge([a]) == 2
    assert cache.get("t1", NOW) is None and cache.get("t3", NOW) is None
    assert cache.get("t2", NOW) == {"n": 2}


def test_put_skips_a_key_removed_during_verification():
    cache = TokenCache(10, 0)
    key = _key()
    key.removed = True
    cache.put("t1", {"n": 1}, None, None, key)
    assert len(cache) == 0


async def test_identify_gives_cached_claims_without_a_coroutine(clock, monkeypatch):
    ident = ident_with(clock)
    calls = spy(monkeypatch, ident)
    tok = hs_token({"id": "u1", "exp": NOW + 60})
    headers = {"authorization": f"Bearer {tok}"}
    assert ident.identify({}) == (None, None)
    assert ident.identify(headers) == (tok, None)  # not verified yet: the caller awaits verify
    await ident.verify(tok)
    token, claims = ident.identify(headers)
    assert (token, claims) == (tok, {"id": "u1", "exp": NOW + 60})
    claims["id"] = "admin"  # a copy, like verify's
    assert ident.identify(headers)[1]["id"] == "u1"
    clock.now = NOW + 60
    with pytest.raises(TokenError, match="expired"):
        ident.identify(headers)
    assert calls == [tok]


async def test_a_verified_token_skips_only_checks_it_passed_before(clock):
    ident = ident_with(clock)
    tok = hs_token({"id": "u1"})
    await ident.verify(tok)
    assert ident.extract({"authorization": f"Bearer {tok}"}) == tok
    for bad in (f"Bearer {tok} x", f"Bearer {tok[:10]} {tok[10:]}", f"Bearer {tok},x"):
        with pytest.raises(TokenError):
            ident.extract({"authorization": bad})
    with pytest.raises(TokenError, match="scheme"):
        ident.extract({"authorization": f"Basic {tok}"})
