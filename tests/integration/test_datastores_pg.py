"""PostgreSQL backend against the real server: every operator, agreement with SQLite and the
reference evaluator, and faults (refused connection, slow query, server going away)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3

import pytest

import authz.config  # noqa: F401  (loads the schema before the settings models)
from authz.config.databases import PostgresSettings, SqliteSettings
from authz.datastores.factory import create_datastore
from authz.datastores.filters import matches
from authz.errors import DependencyError
from tests.helpers import PG, free_port, pg_dsn, pg_schema
from tests.unit.datastores import cases

pytestmark = pytest.mark.integration
psycopg = pytest.importorskip("psycopg")


@pytest.fixture
def schema():
    """A fresh schema with the shared table, dropped afterwards."""
    with pg_schema("authz_t") as (admin, name):
        _fill(admin, cases.ROWS, create=True)
        admin.execute(
            "CREATE TABLE extra (id int PRIMARY KEY, j json, u uuid, t timestamptz, c varchar(10))"
        )
        admin.execute(
            'INSERT INTO extra VALUES (1, \'{"k": "x"}\', '
            "'00000000-0000-0000-0000-000000000001', '2026-01-02T03:04:05Z', 'a'), "
            "(2, '{\"k\": 2}', NULL, NULL, NULL)"
        )
        admin.execute("CREATE VIEW slow AS SELECT id, pg_sleep(2)::text AS z FROM items")
        yield name


def _fill(conn, rows, create: bool = False) -> None:
    conn.execute(cases.POSTGRES_DDL if create else "TRUNCATE items")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO items VALUES (%s, %s, %s, %s, %s)",
            [cases.sql_params(r, "postgres") for r in rows],
        )


async def _open(dsn: str, timeout: float = 5.0):
    ds = create_datastore("pg", PostgresSettings(type="postgres", dsn=dsn, timeout=timeout))
    await ds.open()
    return ds


@pytest.fixture
async def store(schema):
    ds = await _open(pg_dsn(schema))
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


async def test_rows_are_plain_data(store):
    rows = await store.find("extra", {"id": 1}, 10)
    assert rows == [
        {
            "id": 1,
            "j": {"k": "x"},
            "u": "00000000-0000-0000-0000-000000000001",
            "t": "2026-01-02T03:04:05Z",
            "c": "a",
        }
    ]


async def test_json_uuid_and_varchar_columns(store):
    assert await _ids(store, {"j.k": "x"}, "extra") == {1}
    assert await _ids(store, {"j.k": 2}, "extra") == {2}
    assert await _ids(store, {"j.k": "2"}, "extra") == set()
    assert await _ids(store, {"u": "00000000-0000-0000-0000-000000000001"}, "extra") == {1}
    assert await _ids(store, {"u": "not-a-uuid"}, "extra") == set()  # no cast error
    assert await _ids(store, {"u": 1}, "extra") == set()
    assert await _ids(store, {"c": {"$in": ["a", "b"]}}, "extra") == {1}
    assert await _ids(store, {"c": None}, "extra") == {2}


async def test_differential_sqlite_postgres_evaluator(store, schema, tmp_path):
    """Seeded random data and filters: PostgreSQL, SQLite and the evaluator agree."""
    rng = random.Random(7)
    admin = psycopg.connect(PG, autocommit=True)
    admin.execute(f'SET search_path TO "{schema}"')
    try:
        for round_ in range(3):
            rows = cases.random_rows(rng, 40)
            _fill(admin, rows)
            path = tmp_path / f"d{round_}.db"
            lite = sqlite3.connect(path)
            lite.execute(cases.SQLITE_DDL)
            lite.executemany(
                "INSERT INTO items VALUES (?, ?, ?, ?, ?)",
                [cases.sql_params(r, "sqlite") for r in rows],
            )
            lite.commit()
            lite.close()
            sq = create_datastore(
                "sq", SqliteSettings(type="sqlite", path=str(path), timeout=5), tmp_path
            )
            await sq.open()
            docs = [cases.document(r) for r in rows]
            try:
                for _ in range(120):
                    f = cases.random_filter(rng)
                    expected = {d["id"] for d in docs if matches(d, cases.sql_view(f))}
                    assert await _ids(store, f) == expected, f
                    assert await _ids(sq, f) == expected, f
            finally:
                await sq.close()
    finally:
        admin.close()


async def test_connection_refused_is_a_dependency_error(schema):
    ds = await _open(pg_dsn(schema, port=free_port()), timeout=0.2)
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(DependencyError):
            await ds.find("items", {}, 10)
        assert loop.time() - start < 2.0
        assert not await ds.ping()
    finally:
        await ds.close()


async def test_slow_query_hits_the_deadline_then_works(schema):
    ds = await _open(pg_dsn(schema), timeout=0.3)
    try:
        assert await _ids(ds, {"s": "a"}) == {1}
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(DependencyError, match="timed out"):
            await ds.find("slow", {}, 10)
        assert loop.time() - start < 1.5
        assert await _ids(ds, {"s": "a"}) == {1}
        assert await ds.ping()
    finally:
        await ds.close()


async def test_read_only_connections(store):
    async with store._connection() as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            await conn.execute("DELETE FROM items")


class _Proxy:
    """A TCP proxy to PostgreSQL that can be cut (connections dropped, port refused)."""

    def __init__(self, port: int):
        self.port = port
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self.writers):
            w.close()
        await self.server.wait_closed()

    async def _handle(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5432)
        self.writers.update((writer, up_writer))

        async def pipe(src, dst):
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_reconnects_when_the_server_comes_back(schema):
    proxy = _Proxy(free_port())
    await proxy.start()
    ds = await _open(pg_dsn(schema, port=proxy.port), timeout=0.5)
    try:
        assert await _ids(ds, {"b": True}) == {1, 4, 7}
        await proxy.stop()
        with pytest.raises(DependencyError):
            await ds.find("items", {"b": True}, 10)
        assert not ds.healthy
        await proxy.start()
        # the pool reconnects by itself: a bounded number of attempts must succeed
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while True:
            try:
                assert await _ids(ds, {"b": True}) == {1, 4, 7}
                break
            except DependencyError:
                assert loop.time() < deadline, "did not reconnect"
                await asyncio.sleep(0.2)
        assert ds.healthy
    finally:
        await ds.close()
        await proxy.stop()


async def test_connections_the_server_closed_are_replaced_not_a_503(schema):
    # a PostgreSQL restart (here: every connection of the pool terminated) must not fail
    # one query per pooled connection: the SELECT runs again on a fresh one
    name = f"authz_term_{random.randrange(1 << 30)}"
    settings = PostgresSettings(
        type="postgres", dsn=f"{pg_dsn(schema)}&application_name={name}", timeout=5, poolSize=3
    )
    ds = create_datastore("pg", settings)
    await ds.open()
    admin = await psycopg.AsyncConnection.connect(PG, autocommit=True)
    try:
        await asyncio.gather(*(_ids(ds, {"b": True}) for _ in range(6)))  # every conn in use
        rows = await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            [name],
        )
        assert len(await rows.fetchall()) == 3
        for _ in range(5):
            assert await _ids(ds, {"b": True}) == {1, 4, 7}
        assert ds.healthy
    finally:
        await admin.close()
        await ds.close()
