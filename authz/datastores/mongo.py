"""MongoDB datastore: PyMongo's async client, connected in the background at open.

The filter is already in MongoDB's own language and validated (datastores.filters), so it
is sent as it is; MongoDB's semantics are the reference the SQL backends follow. Every
operation is bounded by `timeoutMS` (PyMongo's client-side operation timeout) as well as by
the caller's deadline.
"""

from __future__ import annotations

from typing import Any

from authz.datastores.base import Datastore
from authz.datastores.filters import Expr
from authz.errors import DependencyError


class MongoDatastore(Datastore):
    type = "mongo"

    def __init__(self, alias: str, settings: Any):
        super().__init__(alias, settings)
        self._client: Any = None
        self._db: Any = None

    async def open(self) -> None:
        from pymongo import AsyncMongoClient

        ms = max(1, int(self.timeout * 1000))
        self._client = AsyncMongoClient(
            self.settings.uri,
            appname="authz",
            tz_aware=True,
            timeoutMS=ms,
            serverSelectionTimeoutMS=ms,
            connectTimeoutMS=max(ms, 1000),
        )
        self._db = self._client[self.settings.database]

    async def close(self) -> None:
        if self._client is not None:
            client, self._client, self._db = self._client, None, None
            await client.close()

    def _database(self) -> Any:
        if self._db is None:
            raise DependencyError(f"datastore {self.alias}: not open")
        return self._db

    async def _ping(self) -> None:
        await self._database().command("ping")

    async def describe(self, col: str) -> dict[str, str] | None:
        """A collection that does not exist is an error; documents have no fixed columns."""

        async def read() -> None:
            if col not in await self._database().list_collection_names():
                raise DependencyError(f"datastore {self.alias}: no collection {col!r}")

        return await self._unmetered(read())

    async def _find(
        self, col: str, filter: dict[str, Any], expr: Expr, limit: int
    ) -> list[dict[str, Any]]:
        cursor = self._database()[col].find(filter, limit=limit)
        docs: list[dict[str, Any]] = await cursor.to_list(None)
        return docs
