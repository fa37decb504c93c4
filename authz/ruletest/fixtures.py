"""What a rule test case runs against instead of real dependencies: in-memory datastores
filled from its fixtures, and canned webhook replies (nothing leaves the process)."""

from __future__ import annotations

import json
from typing import Any, Protocol

import httpx

from authz.config.schema import Config
from authz.datastores.filters import Expr
from authz.datastores.memory import MemoryDatastore
from authz.ruletest.spec import Fixtures, WebhookReply


class FixtureStores(Protocol):
    """Makes the datastores a case runs against (authz.datastores provides the memory one)."""

    def filled(self, alias: str, collections: dict[str, list[dict[str, Any]]]) -> Any: ...
    def unavailable(self, alias: str) -> Any: ...


class MemoryStores:
    def __init__(self) -> None:
        self._cls = MemoryDatastore

    def filled(self, alias: str, collections: dict[str, list[dict[str, Any]]]) -> Any:
        return self._cls(alias, collections)

    def unavailable(self, alias: str) -> Any:
        store = _Unavailable(alias, {})
        store.healthy = False
        return store


class _Unavailable(MemoryDatastore):
    """Every find fails: Datastore.find turns it into DependencyError -> 503."""

    async def _find(
        self, col: str, filter: dict[str, Any], expr: Expr, limit: int
    ) -> list[dict[str, Any]]:
        raise ConnectionError("unavailable (rule test fixture)")


def default_stores() -> FixtureStores | None:
    try:
        return MemoryStores()
    except ImportError:
        return None


def merged(base: Fixtures, case: Fixtures | None) -> Fixtures:
    if case is None:
        return base
    return Fixtures(
        databases={**base.databases, **case.databases},
        webhooks={**base.webhooks, **case.webhooks},
    )


def fixture_stores(config: Config, fixtures: Fixtures, stores: FixtureStores) -> dict[str, Any]:
    out = {}
    for alias in config.databases:  # every declared alias: no case ever reaches a real one
        data = fixtures.databases.get(alias, {})
        out[alias] = (
            stores.unavailable(alias) if data == "unavailable" else stores.filled(alias, data)
        )
    return out


def webhook_transport(replies: dict[str, WebhookReply | str]) -> httpx.MockTransport:
    """Canned webhook replies by exact URL; any other URL fails to connect."""

    def handle(request: httpx.Request) -> httpx.Response:
        reply = replies.get(str(request.url))
        if reply is None or isinstance(reply, str) or reply.unavailable:  # "unavailable"
            raise httpx.ConnectError("no canned reply (rule test)", request=request)
        body = reply.body
        if isinstance(body, str):
            content, kind = body.encode(), "text/plain"
        else:
            content, kind = (b"" if body is None else json.dumps(body).encode()), "application/json"
        # A stream, not `content=`: the webhook rule reads the raw stream, bounded.
        return httpx.Response(
            reply.status,
            headers={"content-type": kind},
            stream=httpx.ByteStream(content),
        )

    return httpx.MockTransport(handle)
