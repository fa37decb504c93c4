"""Builds the datastores of a config (one per `databases:` alias) and opens, pings and
closes them together. The interface they implement is datastores/base.py."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from authz.datastores.base import Datastore

log = logging.getLogger("authz.datastores")


def create_datastore(alias: str, settings: Any, base_dir: Path | None = None) -> Datastore:
    """The datastore for one `databases:` entry (not opened yet)."""
    if settings.type == "sqlite":
        from authz.datastores.sqlite import SqliteDatastore

        return SqliteDatastore(alias, settings, base_dir or Path.cwd())
    if settings.type == "postgres":
        from authz.datastores.postgres import PostgresDatastore

        return PostgresDatastore(alias, settings)
    if settings.type == "mongo":
        from authz.datastores.mongo import MongoDatastore

        return MongoDatastore(alias, settings)
    raise ValueError(f"unknown datastore type {settings.type!r}")


async def open_datastores(config: Any) -> dict[str, Datastore]:
    """Create and open every datastore of `config.databases`, keyed by alias."""
    stores = {
        alias: create_datastore(alias, settings, config.base_dir)
        for alias, settings in config.databases.items()
    }
    try:
        for store in stores.values():
            await store.open()
    except BaseException:
        await close_datastores(stores)
        raise
    return stores


async def close_datastores(stores: dict[str, Datastore]) -> None:
    for store in stores.values():
        try:
            await store.close()
        except Exception as exc:  # closing must not stop closing the others
            log.warning("closing datastore %s failed: %r", store.alias, exc)


async def ping_datastores(stores: dict[str, Datastore]) -> dict[str, bool]:
    """Ping every datastore concurrently (for /readyz)."""
    aliases = list(stores)
    results = await asyncio.gather(*(stores[a].ping() for a in aliases))
    return dict(zip(aliases, results, strict=True))
