"""A small TTL + LRU cache for the results of `query` and `webhook` rules (`cache: {ttl}`).

Keys are built by `freeze`, which tags every scalar with its type: `True`, `1` and `1.0`
are different keys (they match different documents). Values are deep-copied in and out, so
a later rule changing a stored result cannot change what the next request sees.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from typing import Any

_MISS: Any = object()


def freeze(value: Any) -> Any:
    """A hashable, type-exact key for a JSON-like value."""
    if isinstance(value, dict):
        return ("d", tuple((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return ("l", tuple(freeze(v) for v in value))
    return (type(value).__name__, value)


class ResultCache:
    def __init__(self, ttl: float, size: int):
        self.ttl = ttl
        self.size = size
        self._items: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def get(self, key: Any) -> Any:
        """The cached value, or `MISS`."""
        item = self._items.get(key)
        if item is None:
            return _MISS
        expires, value = item
        if time.monotonic() >= expires:
            del self._items[key]
            return _MISS
        self._items.move_to_end(key)
        return copy.deepcopy(value)

    def put(self, key: Any, value: Any) -> None:
        self._items[key] = (time.monotonic() + self.ttl, copy.deepcopy(value))
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


MISS = _MISS
