"""SQLite backend: every operator on real SQLite, agreement with the reference evaluator,
SQL safety, deadlines and recovery, inline queries and the move to the pool."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import authz.config  # noqa: F401  (loads the schema before the settings models)
import authz.datastores.sqlite as sqlite_module
from authz.config.databases import SqliteSettings
from authz.datastores.factory import create_datastore, open_datastores
from authz.datastores.filters import matches, parse
from authz.datastores.sql import SqliteDialect, where
from authz.errors import DependencyError
from tests.unit.datastores import cases


def _make_db(path: Path, rows=cases.ROWS) -> None:
    conn = sqlite3.connect(path)
    conn.execute(cases.SQLITE_DDL)
    conn.executemany(
        "INSERT INTO items VALUES (?, ?, ?, ?, ?)", [cases.sql_params(r, "sqlite") for r in rows]
    )
    conn.execute("CREATE TABLE loose (id INTEGER PRIMARY KEY, o)")  # no declared type
    conn.executemany("INSERT INTO loose VALUES (?, ?)", [(1, "5"), (2, 5), (3, None), (4, 5.5)])
    conn.commit()
    conn.close()


@pytest.fixture
async def store(tmp_path):
    _make_db(tmp_path / "app.db")
    ds = create_datastore("main", SqliteSettings(type="sqlite", path="app.db", timeout=5), tmp_path)
    await ds.open()
    yield ds
    await ds.close()


async def _ids(ds, filter, col="items"):
    return {row["id"] for row in await ds.find(col, filter, 1000)}


@pytest.mark.parametrize(
    ("filter", "expected"),
    cases.CASES + cases.SQL_CASES,
    ids=[repr(c[0]) for c in cases.CASES + cases.SQL_CASES],
)
async def test_cases(store, filter, expected):
    assert await _ids(store, filter) == expected


async def test_rows_are_decoded(store):
    rows = await store.find("items", {"id": {"$in": [1, 4]}}, 10)
    assert rows == [
        {"id": 1, "s": "a", "n": 1.0, "b": True, "j": {"v": 1, "w": "a"}},
        {"id": 4, "s": None, "n": 0.0, "b": True, "j": {}},
    ]


async def test_limit(store):
    assert len(await store.find("items", {}, 3)) == 3


async def test_untyped_column_keeps_types_apart(store):
    assert await _ids(store, {"o": "5"}, "loose") == {1}
    assert await _ids(store, {"o": 5}, "loose") == {2}
    assert await _ids(store, {"o": {"$gt": 5}}, "loose") == {4}
    assert await _ids(store, {"o": {"$gt": "4"}}, "loose") == {1}
    assert await _ids(store, {"o": True}, "loose") == set()


async def test_differential_against_the_evaluator(tmp_path):
    """Seeded random data and filters: SQLite returns exactly what the evaluator says."""
    rng = random.Random(20260101)
    for round_ in range(3):
        rows = cases.random_rows(rng, 40)
        path = tmp_path / f"r{round_}.db"
        _make_db(path, rows)
        ds = create_datastore(
            "r", SqliteSettings(type="sqlite", path=str(path), timeout=5), tmp_path
        )
        await ds.open()
        docs = [cases.document(r) for r in rows]
        try:
            for _ in range(150):
                f = cases.random_filter(rng)
                expected = {d["id"] for d in docs if matches(d, cases.sql_view(f))}
                assert await _ids(ds, f) == expected, f
        finally:
            await ds.close()


def test_sql_has_only_placeholders_for_values():
    expr = parse({"s": "x'); DROP TABLE items; --", "j.v": {"$in": [1, "a"]}})
    columns = {"s": "string", "j": "json"}
    sql, params = where(expr, columns, "items", SqliteDialect())
    assert "DROP" not in sql and "'x'" not in sql
    assert "x'); DROP TABLE items; --" in params
    assert sql.count("?") == len(params)


async def test_unknown_table_or_column_is_a_dependency_error(store):
    with pytest.raises(DependencyError):
        await store.find("nope", {}, 10)
    with pytest.raises(DependencyError):
        await store.find("items", {"nope": 1}, 10)
    with pytest.raises(DependencyError):
        await store.find("items", {"s.x": 1}, 10)  # s is not a JSON column


async def test_read_only(store):
    # the datastore only runs SELECTs; even its own connection refuses writes
    conn = store._connection()
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("DELETE FROM items")


async def test_slow_query_times_out_then_works(tmp_path):
    _make_db(tmp_path / "app.db")
    conn = sqlite3.connect(tmp_path / "app.db")
    # a view whose every row costs a long recursive computation
    conn.execute(
        "CREATE VIEW slow AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
        "WHERE x < 50000000) SELECT max(x) AS id FROM c"
    )
    conn.commit()
    conn.close()
    ds = create_datastore("s", SqliteSettings(type="sqlite", path="app.db", timeout=0.1), tmp_path)
    await ds.open()
    try:
        with pytest.raises(DependencyError, match="timed out"):
            await ds.find("slow", {}, 1)
        assert await _ids(ds, {"s": "a"}) == {1}
        assert ds.healthy
    finally:
        await ds.close()


async def test_missing_file_fails_then_recovers(tmp_path):
    ds = create_datastore("m", SqliteSettings(type="sqlite", path="late.db", timeout=5), tmp_path)
    await ds.open()
    try:
        with pytest.raises(DependencyError):
            await ds.find("items", {}, 10)
        assert not await ds.ping()
        _make_db(tmp_path / "late.db")
        assert await ds.ping()
        assert await _ids(ds, {"b": True}) == {1, 4, 7}
    finally:
        await ds.close()


async def test_open_datastores_uses_base_dir(tmp_path):
    _make_db(tmp_path / "app.db")
    config = SimpleNamespace(
        databases={"main": SqliteSettings(type="sqlite", path="app.db")}, base_dir=tmp_path
    )
    stores = await open_datastores(config)
    try:
        assert set(stores) == {"main"}
        assert await stores["main"].ping()
    finally:
        await stores["main"].close()


def test_cases_data_is_json():
    json.dumps([r[4] for r in cases.ROWS])


# --- inline on the loop, else in the pool ------------------------------------------------


def _spy_pool(ds) -> list[object]:
    """Record what the datastore hands to its thread pool."""
    submitted: list[object] = []
    submit = ds._executor.submit

    def recording_submit(fn, *args):
        submitted.append(fn)
        return submit(fn, *args)

    ds._executor.submit = recording_submit
    return submitted


def _spy_attempts(ds) -> list[tuple[bool, float, str]]:
    """Each attempt: (on the loop's thread, seconds, "ok" or the error)."""
    attempts: list[tuple[bool, float, str]] = []
    loop_thread = threading.get_ident()
    call = ds._call

    def recording_call(*args):
        start = time.monotonic()
        outcome = "ok"
        try:
            return call(*args)
        except Exception as exc:
            outcome = str(exc)
            raise
        finally:
            on_loop = threading.get_ident() == loop_thread
            attempts.append((on_loop, time.monotonic() - start, outcome))

    ds._call = recording_call
    return attempts


async def _slow_store(tmp_path, timeout: float, count: int):
    """A store whose view `slow` costs a recursive count to `count` (~0.2 µs a step)."""
    _make_db(tmp_path / "app.db")
    conn = sqlite3.connect(tmp_path / "app.db")
    conn.execute(
        "CREATE VIEW slow AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
        f"WHERE x < {count}) SELECT max(x) AS id FROM c"
    )
    conn.commit()
    conn.close()
    ds = create_datastore(
        "s", SqliteSettings(type="sqlite", path="app.db", timeout=timeout), tmp_path
    )
    await ds.open()
    return ds


async def test_a_fast_query_runs_inline_without_the_pool(store):
    submitted = _spy_pool(store)
    attempts = _spy_attempts(store)
    assert await _ids(store, {"s": "a"}) == {1}
    assert await store.ping()
    assert submitted == []
    assert [a[0] for a in attempts] == [True, True]


def _suspends(coro) -> bool:
    """Does `coro` give the loop a turn before it finishes? (drives it by hand)"""
    try:
        coro.send(None)
    except StopIteration:
        return False
    coro.close()
    return True


@pytest.mark.parametrize(("yield_after", "suspends"), [(10.0, False), (-1.0, True)])
async def test_only_a_long_inline_query_yields_the_loop(store, monkeypatch, yield_after, suspends):
    # an indexed lookup is cheaper than a loop iteration: it does not yield; a query that
    # ran longer than _YIELD_AFTER lets the other Checks run first
    monkeypatch.setattr(sqlite_module, "_YIELD_AFTER", yield_after)
    assert _suspends(store.find("items", {"s": "a"}, 10)) is suspends


async def test_a_slow_query_moves_to_the_pool_and_answers(tmp_path):
    ds = await _slow_store(tmp_path, timeout=5, count=1_000_000)
    try:
        submitted = _spy_pool(ds)
        attempts = _spy_attempts(ds)
        assert await ds.find("slow", {}, 1) == [{"id": 1_000_000}]
        assert len(submitted) == 1
        (on_loop, inline_s, inline_out), (in_pool_on_loop, _, pool_out) = attempts
        assert on_loop and inline_out == "interrupted"
        assert inline_s < 0.05  # stopped near the 2 ms budget, not after the whole ~200 ms
        assert not in_pool_on_loop and pool_out == "ok"
    finally:
        await ds.close()


async def test_inline_queries_do_not_shorten_a_pooled_one(tmp_path):
    """Each thread's progress handler reads its own deadline: the loop's short budgets,
    set by fast queries meanwhile, never interrupt the statement running in the pool."""
    ds = await _slow_store(tmp_path, timeout=5, count=1_000_000)
    try:

        async def fast() -> None:
            for _ in range(20):
                assert await _ids(ds, {"s": "a"}) == {1}
                await asyncio.sleep(0.001)

        slow, _ = await asyncio.gather(ds.find("slow", {}, 1), fast())
        assert slow == [{"id": 1_000_000}]
    finally:
        await ds.close()


@pytest.mark.parametrize(
    ("timeout", "within", "pool_calls"),
    [
        (0.1, 1.0, 1),  # past the inline budget: the pool enforces the deadline
        (0.001, 0.5, 0),  # a deadline shorter than the budget is enforced inline
    ],
    ids=["in-the-pool", "inline"],
)
async def test_the_deadline_holds(tmp_path, timeout, within, pool_calls):
    ds = await _slow_store(tmp_path, timeout=timeout, count=50_000_000)
    try:
        submitted = _spy_pool(ds)
        start = time.monotonic()
        with pytest.raises(DependencyError, match="timed out"):
            await ds.find("slow", {}, 1)
        assert time.monotonic() - start < within
        assert len(submitted) == pool_calls
    finally:
        await ds.close()


async def test_a_locked_database_waits_in_the_pool_not_on_the_loop(tmp_path):
    _make_db(tmp_path / "app.db")
    writer = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")  # rollback journal: readers are locked out
    ds = create_datastore("l", SqliteSettings(type="sqlite", path="app.db", timeout=5), tmp_path)
    await ds.open()
    try:
        submitted = _spy_pool(ds)
        # runs only if the loop is free while the read waits for the lock
        asyncio.get_running_loop().call_later(0.05, writer.execute, "ROLLBACK")
        start = time.monotonic()
        assert await _ids(ds, {"s": "a"}) == {1}
        assert 0.04 < time.monotonic() - start < 2.0
        assert len(submitted) == 1
    finally:
        writer.close()
        await ds.close()


async def test_reopened_store_gets_new_connections(store):
    assert await _ids(store, {"s": "a"}) == {1}
    await store.close()
    await store.open()
    assert await _ids(store, {"s": "a"}) == {1}


async def test_blobs_are_hex_in_every_column(tmp_path):
    _make_db(tmp_path / "app.db")
    conn = sqlite3.connect(tmp_path / "app.db")
    conn.execute("INSERT INTO items VALUES (9, x'00ff', 1, 0, x'ab')")
    conn.commit()
    conn.close()
    ds = create_datastore("b", SqliteSettings(type="sqlite", path="app.db", timeout=5), tmp_path)
    await ds.open()
    try:
        rows = await ds.find("items", {"id": 9}, 1)
        assert rows == [{"id": 9, "s": "00ff", "n": 1, "b": False, "j": "ab"}]
    finally:
        await ds.close()


@pytest.mark.parametrize(("journal", "hinted"), [("delete", True), ("wal", False)])
async def test_a_rollback_journal_is_reported_once(tmp_path, caplog, journal, hinted):
    # WAL is what a file another process writes should use: say so when it is not
    _make_db(tmp_path / "app.db")
    with sqlite3.connect(tmp_path / "app.db") as conn:
        assert conn.execute(f"PRAGMA journal_mode = {journal}").fetchone()[0] == journal
    conn.close()
    ds = create_datastore("main", SqliteSettings(type="sqlite", path="app.db", timeout=5), tmp_path)
    await ds.open()
    caplog.set_level("INFO", logger="authz.datastores")
    try:
        for _ in range(3):
            assert await _ids(ds, {"s": "a"}) == {1}
        await asyncio.to_thread(ds._connection)  # a second connection (a pool thread's)
    finally:
        await ds.close()
    hints = [r.getMessage() for r in caplog.records if "rollback journal" in r.getMessage()]
    assert len(hints) == (1 if hinted else 0)
    if hinted:
        assert "journal_mode=delete" in hints[0] and "main" in hints[0]


class _Meter:
    """Records what a datastore reports to its DependencyMetrics."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.errors: list[str] = []

    def observe(self, seconds: float) -> None:
        self.seconds.append(seconds)

    def error(self, kind: str = "error") -> None:
        self.errors.append(kind)


async def test_every_query_is_metered_and_failures_counted_by_kind(tmp_path):
    ds = await _slow_store(tmp_path, timeout=0.1, count=50_000_000)
    ds.metrics = meter = _Meter()
    try:
        assert await _ids(ds, {"s": "a"}) == {1}  # a query: timed, healthy
        assert len(meter.seconds) == 1 and 0 <= meter.seconds[0] < 5 and ds.healthy
        with pytest.raises(DependencyError, match="timed out"):
            await ds.find("slow", {}, 1)
        assert meter.errors == ["timeout"] and not ds.healthy
        with pytest.raises(DependencyError, match="no table"):
            await ds.find("nope", {}, 1)
        with pytest.raises(DependencyError, match="no column"):
            await ds.find("items", {"nope": 1}, 1)
        assert meter.errors == ["timeout", "error", "error"] and len(meter.seconds) == 1
        assert await ds.ping() and meter.errors == ["timeout", "error", "error"]  # not a query
        assert len(meter.seconds) == 1
    finally:
        await ds.close()
    gone = create_datastore("g", SqliteSettings(type="sqlite", path="gone.db"), tmp_path)
    await gone.open()
    gone.metrics = meter = _Meter()
    try:  # SQLite's own error, described
        with pytest.raises(DependencyError, match="datastore g: OperationalError: unable to open"):
            await gone.find("items", {}, 1)
        assert meter.errors == ["error"] and not gone.healthy
    finally:
        await gone.close()
