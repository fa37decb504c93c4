"""The one small interface every datastore implements, the factory, and open/close of all.

A datastore is opened once at start (connecting in the background: a datastore that is down
does not stop the service from starting, it only makes the rules that use it deny with 503
and /readyz report it) and reused by every Check. Every call is bounded by the datastore's
`timeout`; any failure or timeout raises `DependencyError`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

from authz.datastores.filters import Expr, check_collection, parse
from authz.datastores.template import FilterTemplate
from authz.errors import DependencyError

log = logging.getLogger("authz.datastores")
T = TypeVar("T")


class Datastore:
    """Base class: `find` validates, bounds and wraps; subclasses implement `_find`/`_ping`."""

    type = ""
    # A store that enforces `timeout` itself (raising TimeoutError) skips asyncio.timeout,
    # which costs a timer per query and cannot interrupt a synchronous read anyway.
    bounds_itself = False

    def __init__(self, alias: str, settings: Any):
        self.alias = alias
        self.settings = settings
        self.timeout: float = settings.timeout
        self.healthy = False  # last known state (a find or ping), for readiness
        self.metrics: Any = None  # observability.DependencyMetrics, set by the runtime

    async def open(self) -> None:
        """Create the client/pool and start connecting. Never raises for an unreachable store."""

    async def close(self) -> None:
        """Release connections; safe to call twice."""

    async def ping(self) -> bool:
        """True when the datastore answers within its timeout."""
        try:
            async with asyncio.timeout(self.timeout):
                await self._ping()
        except Exception as exc:  # any failure means "not reachable"
            log.debug("datastore %s ping failed: %r", self.alias, exc)
            self.healthy = False
            return False
        self.healthy = True
        return True

    async def find(self, col: str, filter: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        """Documents of `col` matching `filter` (at most `limit`); DependencyError on failure.

        The filter is validated again here (FilterError, a ValueError, for a bad one): no
        caller can make a backend run something outside the language."""
        check_collection(col, "col")
        return await self.find_parsed(col, filter, parse(filter), limit)

    async def find_parsed(
        self, col: str, filter: dict[str, Any], expr: Expr, limit: int
    ) -> list[dict[str, Any]]:
        """`find` for a caller that checked `col` and built `expr` (== parse(filter)) itself."""
        return await self._guarded(self._find(col, filter, expr, limit))

    async def find_template(
        self, col: str, template: FilterTemplate, values: list[Any], limit: int
    ) -> list[dict[str, Any]]:
        """`find` for a query rule: its compiled filter (structure checked at config load)
        and this request's values (each checked as it filled its slot: rules/query.py).
        Parsing every filter per request was a large share of a Check; SQL stores also reuse
        the statement compiled for the template (they override this)."""
        filled, expr = template.build(values)
        return await self.find_parsed(col, filled, expr, limit)

    async def _guarded(
        self, find: Coroutine[Any, Any, list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """Await one query: bounded by `timeout`, failures as DependencyError, metered."""
        start = time.perf_counter()
        try:
            if self.bounds_itself:
                docs = await find
            else:
                async with asyncio.timeout(self.timeout):
                    docs = await find
        except Exception as exc:
            self._fail(exc)
        self._succeeded(start)
        return docs

    def _succeeded(self, start: float) -> None:
        self.healthy = True
        if self.metrics is not None:
            self.metrics.observe(time.perf_counter() - start)

    def _fail(self, exc: Exception) -> NoReturn:
        """Count a query that raised `exc` and raise it as a DependencyError."""
        self.healthy = False
        timeout = isinstance(exc, TimeoutError)
        if self.metrics is not None:
            self.metrics.error("timeout" if timeout else "error")
        if isinstance(exc, DependencyError):
            raise exc
        if timeout:
            raise DependencyError(f"datastore {self.alias}: timed out") from None
        raise DependencyError(f"datastore {self.alias}: {_describe(exc)}") from exc

    async def _find(
        self, col: str, filter: dict[str, Any], expr: Any, limit: int
    ) -> list[dict[str, Any]]:
        raise NotImplementedError

    # What `validate --connect` and /readyz check (datastores/schema.py): None = schemaless.
    dialect: Any = None

    async def describe(self, col: str) -> dict[str, str] | None:
        """`col`'s columns and their kinds, read now (DependencyError: no such table)."""
        return None

    def known_columns(self, col: str) -> dict[str, str] | None:
        """The columns a query already read for `col` (for --explain), or None."""
        return None

    async def _unmetered(self, read: Coroutine[Any, Any, T]) -> T:
        """Await a schema read: bounded, failures as DependencyError; unlike a query it
        neither counts in the metrics nor changes `healthy` (a missing table is no outage)."""
        try:
            async with asyncio.timeout(self.timeout):
                return await read
        except DependencyError:
            raise
        except TimeoutError:
            raise DependencyError(f"datastore {self.alias}: timed out") from None
        except Exception as exc:
            raise DependencyError(f"datastore {self.alias}: {_describe(exc)}") from exc

    async def _ping(self) -> None:
        raise NotImplementedError


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
