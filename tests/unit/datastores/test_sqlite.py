"""SQLite backend: every operator on real SQLite, agreement with the reference evaluator,
SQL safety, deadlines and recovery."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

import authz.config  # noqa: F401  (loads the schema before the settings models)
from authz.datastores.base import create_datastore, open_datastores
from authz.datastores.filters import matches, parse
from authz.datastores.settings import SqliteSettings
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


@pytest.mark.parametrize(("filter", "expected"), cases.CASES, ids=[repr(c[0]) for c in cases.CASES])
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
                expected = {d["id"] for d in docs if matches(d, f)}
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
        with pytest.raises(DependencyError, match=r"timed out|interrupted"):
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
