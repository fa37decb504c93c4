"""A small TTL + LRU cache for the results of `query` and `webhook` rules (`cache: {ttl}`)
and of token introspection (`auth.introspection[].cache`).

The one cache-key rule: a key holds every input that can change the answer (for a query,
the values of its filter; for a webhook, the body, the minted claims and the forwarded
token). Keys are built by `freeze`, which tags every scalar with its type: `True`, `1` and
`1.0` are different keys (they match different documents). Values are deep-copied in and
out, so a later rule changing a stored result cannot change what the next request sees.

The cache is bounded by entries and by bytes (an estimate of what keys and values hold):
request text ends up in keys, so an entry limit alone lets large requests grow memory.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from typing import Any

_MISS: Any = object()
DEFAULT_MAX_BYTES = 16 << 20  # per cached rule
_OVERHEAD = 64  # rough bytes of a Python object around a scalar or container


def freeze(value: Any) -> Any:
    """A hashable, type-exact key for a JSON-like value."""
    if isinstance(value, dict):
        return ("d", tuple((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return ("l", tuple(freeze(v) for v in value))
    return (type(value).__name__, value)


def approx_size(value: Any) -> int:
    """Bytes a JSON-like value (or a frozen key) roughly holds in memory."""
    if isinstance(value, str | bytes | bytearray):
        return _OVERHEAD + len(value)
    if isinstance(value, dict):
        return _OVERHEAD + sum(approx_size(k) + approx_size(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return _OVERHEAD + sum(approx_size(v) for v in value)
    return _OVERHEAD


class ResultCache:
    def __init__(self, ttl: float, size: int, max_bytes: int = DEFAULT_MAX_BYTES):
        self.ttl = ttl
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[Any, tuple[float, Any, int]] = OrderedDict()

    def get(self, key: Any) -> Any:
        """The cached value, or `MISS`."""
        item = self._items.get(key)
        if item is None:
            return _MISS
        expires, value, _ = item
        if time.monotonic() >= expires:
            self._pop(key)
            return _MISS
        self._items.move_to_end(key)
        return copy.deepcopy(value)

    def put(self, key: Any, value: Any, ttl: float | None = None) -> None:
        """`ttl`: this entry's lifetime when shorter than the cache's (a token's exp)."""
        ttl = self.ttl if ttl is None else min(ttl, self.ttl)
        cost = approx_size(key) + approx_size(value)
        if key in self._items:
            self._pop(key)
        if cost > self.max_bytes or ttl <= 0:
            return  # larger than the whole budget, or already expired: not cached
        self._items[key] = (time.monotonic() + ttl, copy.deepcopy(value), cost)
        self.bytes += cost
        while len(self._items) > self.size or self.bytes > self.max_bytes:
            _, (_, _, dropped) = self._items.popitem(last=False)
            self.bytes -= dropped

    def _pop(self, key: Any) -> None:
        self.bytes -= self._items.pop(key)[2]

    def __len__(self) -> int:
        return len(self._items)


MISS = _MISS
