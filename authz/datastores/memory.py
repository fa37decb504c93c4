"""In-memory datastore: collections of documents evaluated with the reference semantics.

For rule tests (`authz test` fixtures) and the differential tests of the real backends.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

from authz.datastores.base import Datastore
from authz.datastores.filters import Expr, evaluate


class MemoryDatastore(Datastore):
    type = "memory"

    def __init__(self, alias: str, collections: dict[str, list[dict[str, Any]]] | None = None):
        super().__init__(alias, SimpleNamespace(timeout=1.0))
        self.collections = collections or {}
        self.finds: list[tuple[str, dict[str, Any]]] = []  # every query, for assertions
        self.healthy = True

    async def _ping(self) -> None:
        return None

    async def _find(
        self, col: str, filter: dict[str, Any], expr: Expr, limit: int
    ) -> list[dict[str, Any]]:
        self.finds.append((col, copy.deepcopy(filter)))
        docs = [d for d in self.collections.get(col, ()) if evaluate(expr, d)]
        return copy.deepcopy(docs[:limit])
