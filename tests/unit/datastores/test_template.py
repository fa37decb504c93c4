"""A query rule's compiled filter (datastores/template.py) and the SQL statements the SQL
datastores reuse for it: the signature says exactly when the SQL text may be reused, `flat`
lists values in binding order, and `find_template` returns what `find` of the filled filter
returns, and what the reference evaluator says, on SQLite and PostgreSQL, for random filters
whose values change (same types: a cached statement; new types: a new one)."""

from __future__ import annotations

import json
import random
import sqlite3
import uuid
from typing import Any

import pytest

import authz.config  # noqa: F401  (loads the schema before the settings models)
from authz.config.databases import PostgresSettings, SqliteSettings
from authz.datastores import sql
from authz.datastores.factory import create_datastore
from authz.datastores.filters import evaluate, parse
from authz.datastores.sql import PostgresDialect, SqliteDialect, params, statement, where
from authz.datastores.template import FilterTemplate
from authz.rules.compiling import CompileContext
from authz.rules.query import compile_filter
from tests.helpers import pg_dsn, pg_schema
from tests.unit.datastores import cases


def _template(raw: dict[str, Any]) -> FilterTemplate:
    cc = CompileContext()
    t = compile_filter(raw, cc, "find")
    assert cc.errors == []
    return t


# --- signature, plain, flat --------------------------------------------------------------

SCALARS = ["s", 1, True, None, 1.5]  # str, int, bool, None, float


@pytest.mark.parametrize(
    "raw",
    [
        {"a": "args.x"},  # plain
        {"a": {"$gt": "args.x"}, "b": {"$in": [1]}},  # has lists
        {"$or": [{"c": {"$exists": True}}, {"a": {"$ne": "args.x"}}]},  # has $exists
    ],
    ids=["plain", "lists", "exists"],
)
def test_signature_follows_each_value_type(raw):
    t = _template(raw)
    sigs = {t.signature(t.values({"x": v})) for v in SCALARS}
    assert len(sigs) == len(SCALARS)
    # the same types with other values: the same signature
    for a, b in [("s", "other"), (1, -7), (True, False), (1.5, -0.25)]:
        assert t.signature(t.values({"x": a})) == t.signature(t.values({"x": b}))


def test_signature_follows_the_exists_operand():
    t = _template({"a": {"$exists": "args.e"}, "b": "args.x"})
    assert not t.plain
    on, off = (t.signature(t.values({"e": e, "x": 1})) for e in (True, False))
    assert on != off
    assert t.signature(t.values({"e": True, "x": 2})) == on


@pytest.mark.parametrize("op", ["$in", "$nin"])
def test_signature_follows_list_lengths_and_item_types(op):
    t = _template({"a": {op: "args.l"}, "b": "args.x"})
    assert not t.plain

    def sig(items):
        return t.signature(t.values({"l": items, "x": "s"}))

    lists = [[], [1], [1, 2], [1, "2"], ["1", 2], [1, None], [1, True], [1, 2.0], [1, 2, 3]]
    assert len({sig(items) for items in lists}) == len(lists)
    assert sig([1, 2]) == sig([7, -3])
    assert sig(["a", None, 2.5]) == sig(["b", None, 0.5])


@pytest.mark.parametrize(
    ("raw", "plain"),
    [
        ({}, True),
        ({"a": 1, "b": {"$gt": "args.x", "$lte": 3}, "c": {"$ne": None}}, True),
        ({"$or": [{"a": 1}, {"$and": [{"b": {"$eq": "args.x"}}]}]}, True),
        ({"a": {"$in": [1]}}, False),
        ({"a": {"$nin": "args.l"}}, False),
        ({"a": {"$exists": True}}, False),
        ({"a": 1, "$or": [{"b": 2}, {"c": {"$exists": "args.e"}}]}, False),
        ({"$and": [{"b": {"$in": []}}]}, False),
    ],
)
def test_plain_only_without_lists_and_exists(raw, plain):
    t = _template(raw)
    assert t.plain is plain
    assert t.has_lists is any(op in ("$in", "$nin") for op in t.ops)


def test_flat_expands_lists_in_order():
    t = _template({"a": 1, "b": {"$in": "args.l"}, "c": "args.x", "d": {"$nin": [None, "args.x"]}})
    values = t.values({"l": [2, "3"], "x": "x"})
    assert values == [1, [2, "3"], "x", [None, "x"]]
    assert t.flat(values) == [1, 2, "3", "x", None, "x"]
    assert t.flat(t.values({"l": [], "x": 0})) == [1, 0, None, 0]


def test_flat_of_scalars_is_the_values_list_itself():
    t = _template({"a": 1, "b": {"$gt": "args.x"}, "c": {"$exists": True}})
    values = t.values({"x": 5})
    assert t.flat(values) is values


# --- the statement cache -----------------------------------------------------------------

COLUMNS = {"id": "number", "s": "string", "n": "number", "b": "bool", "j": "json"}


def test_same_value_types_reuse_one_statement():
    d = SqliteDialect()
    t = _template({"s": "args.x", "n": {"$gt": "args.y"}, "j.v": {"$in": "args.l"}})
    v1 = t.values({"x": "a", "y": 1, "l": [1, "b"]})
    v2 = t.values({"x": "b", "y": 2, "l": [3, "c"]})
    s1 = statement(d, "items", COLUMNS, t, v1)
    s2 = statement(d, "items", COLUMNS, t, v2)
    assert s2 is s1 and len(d.statements) == 1
    assert params(d, s1, t, v1, 10) != params(d, s2, t, v2, 10)
    assert params(d, s2, t, v2, 10) == [*where(t.build(v2)[1], COLUMNS, "items", d)[1], 10]
    assert s1.sql.count("?") == len(params(d, s1, t, v1, 10))

    v3 = t.values({"x": "a", "y": 1.5, "l": [1, "b"]})  # a float is another type
    s3 = statement(d, "items", COLUMNS, t, v3)
    assert s3 is not s1 and len(d.statements) == 2
    v4 = t.values({"x": "a", "y": 1, "l": [1, "b", None]})  # a longer list
    s4 = statement(d, "items", COLUMNS, t, v4)
    assert s4.sql != s1.sql and len(d.statements) == 3
    assert statement(d, "items", COLUMNS, t, v2) is s1  # still cached


@pytest.mark.parametrize(
    ("dialect", "raw", "values", "as_is"),
    [
        (SqliteDialect(), {"s": "args.a", "n": "args.b"}, ["x", 2], True),
        (SqliteDialect(), {"n": {"$in": "args.a"}}, [[1, 2]], True),  # list items, in order
        (SqliteDialect(), {"s": "args.a", "b": "args.b"}, ["x", True], False),  # bool -> 1
        (SqliteDialect(), {"j.v": "args.a"}, [3], False),  # the JSON path is a parameter
        (SqliteDialect(), {"s": "args.a", "n": {"$ne": "args.b"}}, ["x", None], False),
        (PostgresDialect(), {"s": "args.a", "n": "args.b"}, ["x", 2], True),
        (PostgresDialect(), {"j": "args.a"}, [3], False),  # a JSON operand is wrapped
    ],
)
def test_statements_without_conversions_bind_the_values_as_they_are(dialect, raw, values, as_is):
    t = _template(raw)
    stmt = statement(dialect, "items", COLUMNS, t, values)
    assert stmt.as_is is as_is
    flat = t.flat(values)
    slow = [
        dialect.bind(p.cls, flat[p.index], p.target) if type(p) is sql.Slot else p
        for p in stmt.slots
    ]
    plain = lambda xs: [getattr(x, "obj", x) for x in xs]  # noqa: E731  (Jsonb wraps .obj)
    assert plain(params(dialect, stmt, t, values, 7)) == plain([*slow, 7])  # same parameters


def test_another_template_or_table_is_another_statement():
    d = SqliteDialect()
    raw = {"s": "args.x"}
    t1, t2 = _template(raw), _template(raw)
    values = t1.values({"x": "a"})
    s1 = statement(d, "items", COLUMNS, t1, values)
    assert statement(d, "items", COLUMNS, t2, values) is not s1
    other = statement(d, "other", {"s": "number"}, t1, values)
    assert other.sql == d.select("other", d.false)
    assert len(d.statements) == 3


def test_a_reread_table_recompiles():
    d = SqliteDialect()
    t = _template({"o": "args.x"})
    values = t.values({"x": "5"})
    s1 = statement(d, "t", {"o": "string"}, t, values)
    s2 = statement(d, "t", {"o": "json"}, t, values)  # the table was re-read: a new dict
    assert s2 is not s1 and "json_type" in s2.sql and "json_type" not in s1.sql
    assert len(d.statements) == 1


def test_statement_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(sql, "CACHE_SIZE", 5)
    d = SqliteDialect()
    t = _template({"n": {"$in": "args.l"}})
    for k in range(13):
        values = t.values({"l": list(range(k))})
        stmt = statement(d, "items", COLUMNS, t, values)
        assert len(d.statements) <= 5
        assert params(d, stmt, t, values, 3) == [*range(k), 3]
        assert stmt.sql.count("?") == k + 1


async def test_the_store_caches_one_statement_per_signature(tmp_path):
    ds = await _sqlite_store(tmp_path, ROWS_FIXED)
    try:
        t = _template({"s": "args.x", "i": {"$gte": "args.y"}})
        await ds.find_template("docs", t, t.values({"x": "a", "y": 0}), 10)
        (stmt,) = ds._dialect.statements.values()
        docs = await ds.find_template("docs", t, t.values({"x": "b", "y": -5}), 10)
        assert [d["id"] for d in docs] == [2]
        assert list(ds._dialect.statements.values()) == [stmt]
        await ds.find_template("docs", t, t.values({"x": "b", "y": 0.5}), 10)
        assert len(ds._dialect.statements) == 2
    finally:
        await ds.close()


# --- random templates: statement + params == a fresh translation ---------------------------

TYPES: dict[type, list[Any]] = {
    type(None): [None],
    bool: [True, False],
    int: [0, 1, -1, 5, 10],
    float: [2.5, 1.0, -0.5, 5.5],
    str: ["", "1", "5", "a", "B", "aa", "é", "z"],
}
FIELDS = ("s", "i", "b", "j.v", "j.w", "j.x", "j.x.y", "o")
OPS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists")


# the types a field's values mostly have (values of other types are drawn too)
NATURAL: dict[str, tuple[type, ...]] = {
    "s": (str,),
    "i": (int, float),
    "b": (bool,),
    "o": (str, int, float),
}


def _scalar(rng: random.Random, t: type | None = None, field: str = "") -> Any:
    if t is None:
        natural = NATURAL.get(field)
        t = rng.choice(natural if natural and rng.random() < 0.6 else list(TYPES))
    return rng.choice(TYPES[t])


class Gen:
    """Random filters whose values are literals or references `args.rN`, and their args."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.refs: dict[str, tuple[str, str]] = {}  # name -> (scalar|list|exists, field)

    def ref(self, kind: str, field: str) -> str:
        name = f"r{len(self.refs)}"
        self.refs[name] = (kind, field)
        return f"args.{name}"

    def operand(self, op: str, field: str) -> Any:
        rng = self.rng
        if op == "$exists":
            return self.ref("exists", field) if rng.random() < 0.5 else rng.random() < 0.5
        if op in ("$in", "$nin"):
            how = rng.randrange(3)
            if how == 0:
                return self.ref("list", field)
            items = [_scalar(rng, field=field) for _ in range(rng.randint(0, 4))]
            if how == 2:
                items = [self.ref("scalar", field) if rng.random() < 0.5 else v for v in items]
            return items
        return self.ref("scalar", field) if rng.random() < 0.6 else _scalar(rng, field=field)

    def filter(self, depth: int = 0) -> dict[str, Any]:
        rng = self.rng
        out: dict[str, Any] = {}
        if depth and rng.random() < 0.05:
            return out  # an empty filter inside $and/$or: matches everything
        for _ in range(rng.choice([1, 1, 2, 3])):
            if depth < 2 and rng.random() < 0.25:
                op = rng.choice(["$and", "$or"])
                if op not in out:
                    out[op] = [self.filter(depth + 1) for _ in range(rng.randint(1, 3))]
                continue
            field = rng.choice(FIELDS)
            ops = rng.sample(OPS, rng.choice([1, 1, 1, 2]))
            if ops == ["$eq"] and rng.random() < 0.5:
                out[field] = self.operand("$eq", field)
            else:
                out[field] = {op: self.operand(op, field) for op in ops}
        return out

    def args(self) -> dict[str, Any]:
        rng = self.rng
        out: dict[str, Any] = {}
        for name, (kind, field) in self.refs.items():
            if kind == "exists":
                out[name] = rng.random() < 0.5
            elif kind == "list":
                out[name] = [_scalar(rng, field=field) for _ in range(rng.randint(0, 4))]
            else:
                out[name] = _scalar(rng, field=field)
        return out

    def same_types(self, args: dict[str, Any]) -> dict[str, Any]:
        """Other values of the same types (lists: same length and item types)."""
        rng = self.rng
        out: dict[str, Any] = {}
        for name, v in args.items():
            if self.refs[name][0] == "exists":
                out[name] = v
            elif type(v) is list:
                out[name] = [_scalar(rng, type(x)) for x in v]
            else:
                out[name] = _scalar(rng, type(v))
        return out


def _rounds(gen: Gen) -> list[dict[str, Any]]:
    """Values; other values of the same types (the cached statement); values of new types
    (mostly a new statement); other values of the first types again (cached, after)."""
    first = gen.args()
    return [first, gen.same_types(first), gen.args(), gen.same_types(first)]


def _comparable(values: list[Any]) -> list[Any]:
    """Parameters with psycopg's Jsonb wrappers (no __eq__) as (type, class, value)."""
    return [
        ("jsonb", type(v.obj), v.obj) if type(v).__name__ == "Jsonb" else (type(v), v)
        for v in values
    ]


@pytest.mark.parametrize("dialect", [SqliteDialect, PostgresDialect])
def test_cached_statements_equal_a_fresh_translation(dialect):
    """Random templates and values: the cached statement and its parameters are exactly
    what translating the filled filter from scratch gives."""
    if dialect is PostgresDialect:
        pytest.importorskip("psycopg")
    rng = random.Random(41)
    d = dialect()
    columns = {"id": "number", "s": "string", "i": "number", "b": "bool", "j": "json"}
    columns["o"] = "other" if dialect is SqliteDialect else "json:json"
    calls = 0
    for _ in range(400):
        gen = Gen(rng)
        t = _template(gen.filter())
        for args in _rounds(gen):
            values = t.values(args)
            filled, expr = t.build(values)
            assert expr == parse(filled)
            stmt = statement(d, "docs", columns, t, values)
            clause, expected = where(expr, columns, "docs", dialect())
            assert stmt.sql == d.select("docs", clause), filled
            got = _comparable(params(d, stmt, t, values, 7))
            assert got == _comparable([*expected, 7]), filled
            calls += 1
    assert len(d.statements) < calls  # statements were reused


# --- SQLite and PostgreSQL: find_template == find == the evaluator ------------------------

NAMES = ("id", "s", "i", "b", "j", "o")
# id, s (text), i (integer), b (bool), j (JSON), o (untyped; json on PostgreSQL)
ROWS_FIXED: list[tuple[Any, ...]] = [
    (1, "a", 1, True, {"v": 1}, "5"),
    (2, "b", 0, False, {"v": "a", "x": {"y": "z"}}, 5),
    (3, None, None, None, None, None),
]
SQLITE_DDL = "CREATE TABLE docs (id INTEGER PRIMARY KEY, s TEXT, i INTEGER, b BOOLEAN, j JSON, o)"
POSTGRES_DDL = (
    "CREATE TABLE docs (id integer PRIMARY KEY, s text, i bigint, b boolean, j jsonb, o json)"
)


def _random_rows(rng: random.Random, count: int) -> list[tuple[Any, ...]]:
    def maybe(choices: list[Any]) -> Any:
        return None if rng.random() < 0.25 else rng.choice(choices)

    json_values = [None, 1, 0, "1", "a", "z", True, False, 2.5, [1], {"y": "z"}]
    rows = []
    for k in range(count):
        j = cases.random_json(rng, json_values)
        s = maybe(TYPES[str])
        i = maybe([0, 1, -1, 5, 10, 2**40])
        b = maybe([True, False])
        o = maybe(["5", 5, 5.5, "a", 0, "", -1])
        rows.append((k + 1, s, i, b, j, o))
    return rows


def _document(row: tuple[Any, ...]) -> dict[str, Any]:
    """The row as the evaluator sees it: a NULL column is a missing field."""
    return {k: v for k, v in zip(NAMES, row, strict=True) if v is not None}


async def _sqlite_store(tmp_path, rows):
    path = tmp_path / f"t{uuid.uuid4().hex[:8]}.db"
    conn = sqlite3.connect(path)
    conn.execute(SQLITE_DDL)
    conn.executemany(
        "INSERT INTO docs VALUES (?, ?, ?, ?, ?, ?)",
        [
            (k, s, i, None if b is None else int(b), None if j is None else json.dumps(j), o)
            for k, s, i, b, j, o in rows
        ],
    )
    conn.commit()
    conn.close()
    ds = create_datastore("t", SqliteSettings(type="sqlite", path=str(path), timeout=5), tmp_path)
    await ds.open()
    return ds


def _id(doc: dict[str, Any]) -> Any:
    return doc["id"]


async def _compare(ds, rng: random.Random, rows, count: int) -> tuple[int, int, int]:
    """`count` random templates, each with its rounds of values: find_template returns
    what find of the filled filter returns and the evaluator's documents. Returns the
    number of templates, of rounds of values and of distinct (template, signature)."""
    docs = [_document(r) for r in rows]
    keys: set[tuple[int, tuple[Any, ...]]] = set()
    calls = 0
    templates = []
    for _ in range(count):
        gen = Gen(rng)
        t = _template(gen.filter())
        templates.append(t)  # kept alive: the cache key holds it, ids stay unique
        for args in _rounds(gen):
            values = t.values(args)
            filled, expr = t.build(values)
            got = await ds.find_template("docs", t, values, 1000)
            want = await ds.find("docs", filled, 1000)
            assert sorted(got, key=_id) == sorted(want, key=_id), filled
            expected = {doc["id"] for doc in docs if evaluate(expr, doc)}
            assert {doc["id"] for doc in got} == expected, filled
            limited = await ds.find_template("docs", t, values, 2)
            assert len(limited) == min(2, len(expected))
            assert {doc["id"] for doc in limited} <= expected
            keys.add((id(t), t.signature(values)))
            calls += 1
    return len(templates), calls, len(keys)


async def test_sqlite_find_template_equals_find_and_the_evaluator(tmp_path):
    rng = random.Random(20260215)
    rows = _random_rows(rng, 40)
    ds = await _sqlite_store(tmp_path, rows)
    try:
        templates, calls, keys = await _compare(ds, rng, rows, 300)
        # cached statements were reused (same types) and new ones compiled (new types)
        assert templates < keys < calls
        assert len(ds._dialect.statements) == keys
    finally:
        await ds.close()


# --- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture
def pg_rows():
    """A fresh schema holding `docs` with random rows (dropped afterwards): (schema, rows)."""
    pytest.importorskip("psycopg")
    from psycopg.types.json import Json, Jsonb

    rows = _random_rows(random.Random(11), 40)
    with pg_schema("authz_tpl") as (admin, name):
        admin.execute(POSTGRES_DDL)
        with admin.cursor() as cur:
            cur.executemany(
                "INSERT INTO docs VALUES (%s, %s, %s, %s, %s, %s)",
                [
                    (k, s, i, b, None if j is None else Jsonb(j), None if o is None else Json(o))
                    for k, s, i, b, j, o in rows
                ],
            )
        yield name, rows


async def test_postgres_find_template_equals_find_and_the_evaluator(pg_rows):
    schema, rows = pg_rows
    dsn = pg_dsn(schema)
    ds = create_datastore("pg", PostgresSettings(type="postgres", dsn=dsn, timeout=5))
    await ds.open()
    try:
        templates, calls, keys = await _compare(ds, random.Random(12), rows, 100)
        assert templates < keys < calls
        assert len(ds._dialect.statements) == keys
    finally:
        await ds.close()
