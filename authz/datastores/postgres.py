"""PostgreSQL datastore: psycopg 3 with an async connection pool.

The pool connects in the background and reconnects by itself; each connection is read-only
(`default_transaction_read_only`) with a server-side `statement_timeout` as a backstop to the
client-side deadline. A table's column kinds are read once (`SELECT * ... LIMIT 0`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from authz.datastores.base import Datastore
from authz.datastores.filters import Expr
from authz.datastores.sql import (
    PostgresDialect,
    params,
    postgres_kind,
    quote_table,
    statement,
    where,
)
from authz.datastores.template import FilterTemplate
from authz.errors import DependencyError


class PostgresDatastore(Datastore):
    type = "postgres"

    def __init__(self, alias: str, settings: Any):
        super().__init__(alias, settings)
        self._pool: Any = None
        self._dialect = PostgresDialect()
        self._columns: dict[str, dict[str, str]] = {}

    async def open(self) -> None:
        from psycopg_pool import AsyncConnectionPool

        self._pool = AsyncConnectionPool(
            self.settings.dsn,
            min_size=self.settings.poolSize,
            max_size=self.settings.poolSize,
            kwargs={"autocommit": True, "connect_timeout": 5},
            configure=self._configure,
            open=False,
            name=f"authz-{self.alias}",
            reconnect_timeout=5.0,  # then give up; the next request starts a new attempt
        )
        await self._pool.open(wait=False)

    async def _configure(self, conn: Any) -> None:
        ms = str(max(1, int(self.timeout * 1000)))
        await conn.execute("SELECT set_config('statement_timeout', %s, false)", [ms])
        await conn.execute("SELECT set_config('default_transaction_read_only', 'on', false)")

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close(timeout=1.0)

    def _connection(self) -> Any:
        if self._pool is None:
            raise DependencyError(f"datastore {self.alias}: not open")
        return self._pool.connection(timeout=self.timeout)

    async def _ping(self) -> None:
        async with self._connection() as conn:
            await conn.execute("SELECT 1")

    async def _find(
        self, col: str, filter: dict[str, Any], expr: Expr, limit: int
    ) -> list[dict[str, Any]]:
        def sql(columns: dict[str, str]) -> tuple[str, list[Any]]:
            clause, params = where(expr, columns, col, self._dialect)
            return self._dialect.select(col, clause), [*params, limit]

        return await self._select(col, sql)

    async def find_template(
        self, col: str, template: FilterTemplate, values: list[Any], limit: int
    ) -> list[dict[str, Any]]:
        def sql(columns: dict[str, str]) -> tuple[str, list[Any]]:
            stmt = statement(self._dialect, col, columns, template, values)
            return stmt.sql, params(self._dialect, stmt, template, values, limit)

        return await self._guarded(self._select(col, sql))

    async def _select(
        self, col: str, sql: Callable[[dict[str, str]], tuple[str, list[Any]]]
    ) -> list[dict[str, Any]]:
        """Run the SELECT that `sql` makes for the table's columns.

        A pooled connection the server has closed (a restart, `pg_terminate_backend`, an
        idle timeout) only shows when it is used. The pool replaces it, and the SELECT, which
        changes nothing, runs again on another connection: a restart is not one 503 per
        pooled connection. At most once per pooled connection, within the deadline."""
        for _ in range(self.settings.poolSize + 1):
            rows = await self._select_once(col, sql)
            if rows is not None:
                return rows
        raise DependencyError(f"datastore {self.alias}: every connection was closed by the server")

    async def _select_once(
        self, col: str, sql: Callable[[dict[str, str]], tuple[str, list[Any]]]
    ) -> list[dict[str, Any]] | None:
        """The rows, or None when the connection turned out to be closed by the server."""
        import psycopg
        from psycopg.rows import dict_row

        async with self._connection() as conn:
            try:
                text, args = sql(await self._table(conn, col))
                async with conn.cursor(row_factory=dict_row) as cur:
                    await cur.execute(text.encode(), args)
                    rows = await cur.fetchall()
            except psycopg.Error:
                if conn.broken:
                    return None  # the pool discards it when it comes back
                self._columns.pop(col, None)  # the table may have changed
                raise
        return [{k: _plain(v) for k, v in row.items()} for row in rows]

    @property
    def dialect(self) -> PostgresDialect:
        return self._dialect

    async def describe(self, col: str) -> dict[str, str] | None:
        async def read() -> dict[str, str]:
            async with self._connection() as conn:
                self._columns.pop(col, None)  # read it again: the table may have changed
                return await self._table(conn, col)

        return await self._unmetered(read())

    def known_columns(self, col: str) -> dict[str, str] | None:
        return self._columns.get(col)

    async def _table(self, conn: Any, col: str) -> dict[str, str]:
        columns = self._columns.get(col)
        if columns is None:
            async with conn.cursor() as cur:
                await cur.execute(f"SELECT * FROM {quote_table(col)} LIMIT 0".encode())
                columns = {d.name: postgres_kind(d.type_code) for d in cur.description or ()}
            self._columns[col] = columns
        return columns


def _plain(v: Any) -> Any:
    """Column values as JSON-like data (rules and webhooks see plain values)."""
    if v is None or isinstance(v, bool | int | float | str | list | dict):
        return v
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, dt.datetime):
        return v.isoformat().replace("+00:00", "Z")
    if isinstance(v, dt.date | dt.time | uuid.UUID):
        return str(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).hex()
    return str(v)
