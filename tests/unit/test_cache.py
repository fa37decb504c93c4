"""The result cache of `query` and `webhook` rules: TTL, LRU, copies, and a byte bound."""

from __future__ import annotations

import tracemalloc

from authz.cache import MISS, ResultCache, approx_size, freeze


def test_hit_miss_and_copies():
    cache = ResultCache(ttl=30, size=10)
    key = freeze(["u1", 1])
    assert cache.get(key) is MISS
    cache.put(key, {"docs": [1]})
    got = cache.get(key)
    got["docs"].append(2)
    assert cache.get(key) == {"docs": [1]}
    assert cache.get(freeze(["u1", 1.0])) is MISS  # type-exact keys
    assert cache.get(freeze(["u1", True])) is MISS


def test_bounded_by_entries():
    cache = ResultCache(ttl=30, size=3)
    for i in range(10):
        cache.put(freeze([i]), i)
    assert len(cache) == 3 and cache.get(freeze([9])) == 9 and cache.get(freeze([0])) is MISS


def test_bounded_by_bytes_with_the_default_settings():
    """Request text ends up in keys (a webhook's default body holds the path): 400 requests
    with 60 KB path segments must not hold 24 MB in one rule's cache."""
    tracemalloc.start()
    try:
        cache = ResultCache(ttl=30, size=10_000)
        before = tracemalloc.get_traced_memory()[0]
        for i in range(400):
            cache.put(freeze([f"/v1/{i}/" + "x" * 60_000, None]), {"denied": True})
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 17 << 20, held
    assert len(cache) < 400


def test_bytes_are_accounted_on_replace_expiry_and_eviction(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("authz.cache.time.monotonic", lambda: clock[0])
    cache = ResultCache(ttl=30, size=100, max_bytes=10_000)
    small, big = "a" * 100, "b" * 4_000
    cache.put(small, 1)
    cache.put(small, 2)  # replaced, not counted twice
    assert cache.bytes == approx_size(small) + approx_size(2)
    cache.put("big1", big)
    cache.put("big2", big)
    cache.put("big3", big)  # over 10 KB: the oldest go
    assert cache.bytes <= 10_000 and cache.get(small) is MISS and cache.get("big3") == big
    cache.put("huge", "c" * 20_000)  # larger than the whole budget: not cached
    assert cache.get("huge") is MISS and cache.get("big3") == big
    clock[0] = 31.0
    assert cache.get("big3") is MISS
    assert cache.bytes == sum(e[2] for e in cache._items.values())
