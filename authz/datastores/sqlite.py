"""SQLite datastore: the embedded default. Read-only connections, one per worker thread.

sqlite3 blocks, so queries run in a small thread pool; a progress handler aborts a statement
that runs past its deadline, so a slow query frees its thread soon after the caller gave up.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from authz.datastores.base import Datastore
from authz.datastores.filters import Expr
from authz.datastores.sql import SqliteDialect, quote, quote_table, sqlite_kind, where
from authz.errors import DependencyError

_THREADS = 4
_PROGRESS_STEPS = 1000  # VM instructions between deadline checks


class SqliteDatastore(Datastore):
    type = "sqlite"

    def __init__(self, alias: str, settings: Any, base_dir: Path):
        super().__init__(alias, settings)
        path = Path(settings.path)
        self.path = (path if path.is_absolute() else base_dir / path).resolve()
        self._dialect = SqliteDialect()
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._columns: dict[str, dict[str, str]] = {}
        self._executor: ThreadPoolExecutor | None = None

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(_THREADS, thread_name_prefix=f"sqlite-{self.alias}")

    async def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._executor is None:
            raise DependencyError(f"datastore {self.alias}: not open")
        deadline = time.monotonic() + self.timeout
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, deadline, fn, args)

    def _call(self, deadline: float, fn: Any, args: tuple[Any, ...]) -> Any:
        conn = self._connection()
        self._local.deadline = deadline
        return fn(conn, *args)

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # Opened per thread on first use, so a file that appears later is picked up.
            uri = self.path.as_uri() + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA query_only = ON")
            local = self._local
            conn.set_progress_handler(lambda: time.monotonic() > local.deadline, _PROGRESS_STEPS)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    async def _ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def _find(
        self, col: str, filter: dict[str, Any], expr: Expr, limit: int
    ) -> list[dict[str, Any]]:
        return await self._run(self._select, col, expr, limit)

    def _select(
        self, conn: sqlite3.Connection, col: str, expr: Expr, limit: int
    ) -> list[dict[str, Any]]:
        columns = self._table(conn, col)
        clause, params = where(expr, columns, col, self._dialect)
        sql = f"SELECT * FROM {quote_table(col)} WHERE {clause} LIMIT ?"
        cur = conn.execute(sql, [*params, limit])
        names = [d[0] for d in cur.description]
        kinds = [columns.get(n, "other") for n in names]
        return [_decode(names, kinds, row) for row in cur.fetchall()]

    def _table(self, conn: sqlite3.Connection, col: str) -> dict[str, str]:
        columns = self._columns.get(col)
        if columns is None:
            schema, _, table = col.rpartition(".")
            prefix = f"{quote(schema)}." if schema else ""
            rows = conn.execute(f"PRAGMA {prefix}table_info({quote(table)})").fetchall()
            if not rows:
                raise DependencyError(f"datastore {self.alias}: no table {col!r}")
            columns = {r[1]: sqlite_kind(r[2]) for r in rows}
            self._columns[col] = columns
        return columns


def _decode(names: list[str], kinds: list[str], row: tuple[Any, ...]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for name, kind, value in zip(names, kinds, row, strict=True):
        if value is not None and kind == "json" and isinstance(value, str):
            value = json.loads(value)
        elif kind == "bool" and type(value) is int:
            value = bool(value)
        elif isinstance(value, bytes):
            value = value.hex()
        doc[name] = value
    return doc
