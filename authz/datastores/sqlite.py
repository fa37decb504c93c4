"""SQLite datastore: the embedded default. Read-only connections, one per thread.

A query first runs inline, on the event-loop thread (its own connection), within a small
budget (`_INLINE_BUDGET`): an indexed lookup on the embedded database takes microseconds,
while a hop to a worker thread (future, thread wake-up, loop wake-up) costs far more CPU.
A statement that outlives the budget is interrupted by the progress handler and runs again,
from the start, in a small thread pool with what is left of the datastore's deadline; so a
slow statement blocks the loop for at most the budget. The loop's connection never waits for
a locked database either (busy timeout 0): a locked read also moves to the pool, whose
connections wait up to the timeout. Re-running is safe: the connections are read-only
(`mode=ro`, `query_only`). In the pool the progress handler aborts a statement past the
deadline, so a slow query frees its thread soon after the caller gave up.
(`asyncio.timeout` cannot interrupt synchronous code: each attempt sets the deadline its
thread's progress handler checks.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from authz.datastores.base import Datastore
from authz.datastores.filters import Expr
from authz.datastores.sql import SqliteDialect, params, quote, sqlite_kind, statement, where
from authz.datastores.template import FilterTemplate
from authz.errors import DependencyError

log = logging.getLogger("authz.datastores")

_THREADS = 4
_PROGRESS_STEPS = 1000  # VM instructions between deadline checks
_INLINE_BUDGET = 0.002  # seconds a statement may run on the event loop before moving off it
_YIELD_AFTER = 0.0002  # seconds of an inline query after which the Check yields to the others
_MOVE_OFF_LOOP = (sqlite3.SQLITE_INTERRUPT, sqlite3.SQLITE_BUSY)
_OFF_LOOP = object()  # _inline: run it in the pool


class SqliteDatastore(Datastore):
    type = "sqlite"
    bounds_itself = True  # the progress handler enforces the deadline (TimeoutError)

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
        self._journal_checked = False

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(_THREADS, thread_name_prefix=f"sqlite-{self.alias}")

    async def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        with self._lock:
            conns, self._conns = self._conns, []
            self._local = threading.local()  # the loop thread outlives the pool: forget its conn
        for conn in conns:
            conn.close()

    def _inline(self, now: float, fn: Any, args: tuple[Any, ...]) -> Any:
        """`fn(conn, *args)` on the loop's connection within the budget, or _OFF_LOOP: out
        of budget (interrupted) or the database is locked (the loop never waits for a lock).
        TimeoutError past the datastore's deadline (this store bounds itself: see Datastore)."""
        if self._executor is None:
            raise DependencyError(f"datastore {self.alias}: not open")
        deadline = now + self.timeout
        try:
            return self._call(min(now + _INLINE_BUDGET, deadline), False, fn, args)
        except sqlite3.OperationalError as exc:
            if _code(exc) not in _MOVE_OFF_LOOP:
                raise
            if time.monotonic() >= deadline:
                raise TimeoutError from None
            return _OFF_LOOP

    async def _pooled(self, deadline: float, fn: Any, args: tuple[Any, ...]) -> Any:
        """`fn` again in the pool with what is left of the deadline."""
        loop = asyncio.get_running_loop()
        try:
            # The timeout also covers waiting for a free pool thread.
            async with asyncio.timeout(deadline - time.monotonic()):
                return await loop.run_in_executor(
                    self._executor, self._call, deadline, True, fn, args
                )
        except sqlite3.OperationalError as exc:
            if _code(exc) == sqlite3.SQLITE_INTERRUPT:
                raise TimeoutError from None
            raise

    def _call(self, deadline: float, wait: bool, fn: Any, args: tuple[Any, ...]) -> Any:
        # The progress handler of this thread's connection reads this thread's deadline.
        conn = self._connection(wait)
        self._local.deadline = deadline
        return fn(conn, *args)

    def _connection(self, wait: bool = False) -> sqlite3.Connection:
        """This thread's connection; `wait`: may wait for a locked database (pool threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # Opened per thread on first use, so a file that appears later is picked up.
            uri = self.path.as_uri() + "?mode=ro"
            busy = self.timeout if wait else 0.0
            conn = sqlite3.connect(
                uri, uri=True, timeout=busy, check_same_thread=False, isolation_level=None
            )
            conn.execute("PRAGMA query_only = ON")
            self._check_journal(conn)
            local = self._local
            conn.set_progress_handler(lambda: time.monotonic() > local.deadline, _PROGRESS_STEPS)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _check_journal(self, conn: sqlite3.Connection) -> None:
        """Say once when the file is not in WAL mode: with the rollback journal a write
        blocks every read (the Checks that query wait in the pool, up to `timeout`) and each
        query takes 8 system calls for its locks instead of 2. The writer sets the mode."""
        if self._journal_checked:
            return
        try:
            mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        except sqlite3.Error:
            return  # locked right now: the next connection asks again
        self._journal_checked = True
        if mode != "wal":
            log.info(
                "datastore %s: %s uses the rollback journal (journal_mode=%s): a write blocks "
                "these reads. If another process writes it, WAL mode lets reads go on during "
                "writes and costs fewer system calls per query (set once: sqlite3 FILE "
                "'PRAGMA journal_mode=WAL'; see the README)",
                self.alias, self.path, mode,
            )  # fmt: skip

    async def _ping(self) -> None:
        now = time.monotonic()
        if self._inline(now, _select_one, ()) is _OFF_LOOP:
            await self._pooled(now + self.timeout, _select_one, ())

    # find_parsed and find_template return _query's coroutine: no coroutine of their own.
    def find_parsed(  # type: ignore[override]
        self, col: str, filter: dict[str, Any], expr: Expr, limit: int
    ) -> Awaitable[list[dict[str, Any]]]:
        return self._query(self._select, (col, expr, limit))

    def find_template(  # type: ignore[override]
        self, col: str, template: FilterTemplate, values: list[Any], limit: int
    ) -> Awaitable[list[dict[str, Any]]]:
        return self._query(self._prepared, (col, template, values, limit))

    async def _query(self, fn: Any, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        """`fn(conn, *args)` inline, or in the pool when it must; metered, failures as
        DependencyError (Datastore._guarded, unrolled: one coroutine per query instead of
        three)."""
        start, now = time.perf_counter(), time.monotonic()
        try:
            docs = self._inline(now, fn, args)
            if docs is _OFF_LOOP:
                docs = await self._pooled(now + self.timeout, fn, args)
            elif time.monotonic() - now > _YIELD_AFTER:
                # A long inline query lets other Checks run before this one goes on; a short
                # one does not (the yield, a loop iteration, costs more than a lookup).
                await asyncio.sleep(0)
        except Exception as exc:
            self._fail(exc)
        self._succeeded(start)
        found: list[dict[str, Any]] = docs
        return found

    def _select(
        self, conn: sqlite3.Connection, col: str, expr: Expr, limit: int
    ) -> list[dict[str, Any]]:
        columns = self._table(conn, col)
        clause, params = where(expr, columns, col, self._dialect)
        params.append(limit)
        return _fetch(conn, self._dialect.select(col, clause), params, columns)

    def _prepared(
        self,
        conn: sqlite3.Connection,
        col: str,
        template: FilterTemplate,
        values: list[Any],
        limit: int,
    ) -> list[dict[str, Any]]:
        columns = self._table(conn, col)
        stmt = statement(self._dialect, col, columns, template, values)
        return _fetch(conn, stmt.sql, params(self._dialect, stmt, template, values, limit), columns)

    def _table(self, conn: sqlite3.Connection, col: str) -> dict[str, str]:
        columns = self._columns.get(col)
        if columns is None:
            columns = self._columns[col] = self._read_table(conn, col)
        return columns

    def _read_table(self, conn: sqlite3.Connection, col: str) -> dict[str, str]:
        schema, _, table = col.rpartition(".")
        prefix = f"{quote(schema)}." if schema else ""
        rows = conn.execute(f"PRAGMA {prefix}table_info({quote(table)})").fetchall()
        if not rows:
            raise DependencyError(f"datastore {self.alias}: no table {col!r}")
        return {r[1]: sqlite_kind(r[2]) for r in rows}

    @property
    def dialect(self) -> SqliteDialect:
        return self._dialect

    async def describe(self, col: str) -> dict[str, str] | None:
        return await self._unmetered(
            self._pooled(time.monotonic() + self.timeout, self._read_table, (col,))
        )

    def known_columns(self, col: str) -> dict[str, str] | None:
        return self._columns.get(col)


def _fetch(
    conn: sqlite3.Connection, sql: str, params: list[Any], columns: dict[str, str]
) -> list[dict[str, Any]]:
    cur = conn.execute(sql, params)
    rows = cur.fetchall()
    return _decode(cur.description, columns, rows) if rows else []


def _select_one(conn: sqlite3.Connection) -> Any:
    return conn.execute("SELECT 1").fetchone()


def _code(exc: sqlite3.Error) -> int:
    """The primary result code of a sqlite3 error (extended codes carry it in the low byte)."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF


def _decode(
    description: Any, columns: dict[str, str], rows: list[tuple[Any, ...]]
) -> list[dict[str, Any]]:
    """Rows as documents: JSON text parsed, booleans as bool, blobs as hex."""
    names = [d[0] for d in description]
    json_names = [n for n in names if columns.get(n) == "json"]
    bool_names = [n for n in names if columns.get(n) == "bool"]
    docs = []
    for row in rows:
        doc = dict(zip(names, row, strict=True))
        for name in json_names:
            if type(doc[name]) is str:
                doc[name] = json.loads(doc[name])
        for name in bool_names:
            if type(doc[name]) is int:
                doc[name] = bool(doc[name])
        if bytes in map(type, row):  # any column may hold a blob
            for name, value in doc.items():
                if type(value) is bytes:
                    doc[name] = value.hex()
        docs.append(doc)
    return docs
