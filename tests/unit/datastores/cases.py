"""Shared fixtures for the datastore tests: one table, hand-checked filter cases, and a
seeded generator of random data and filters for the differential tests.

Every backend (in-memory evaluator, SQLite, PostgreSQL) must return exactly the expected
ids for every case: same rule, same data, same decision.
"""

from __future__ import annotations

import json
import random
from typing import Any

from authz.numeric import parse_canonical

# id, s (text), n (number), b (bool), j (JSON); None = SQL NULL
ROWS: list[tuple[Any, ...]] = [
    (1, "a", 1, True, {"v": 1, "w": "a"}),
    (2, "b", 2.5, False, {"v": "1"}),
    (3, "B", None, None, {"v": None}),
    (4, None, 0, True, {}),
    (5, "5", 5, False, None),
    (6, "", -1, None, {"v": True, "x": {"y": "z"}}),
    (7, "aa", 10, True, {"v": [1], "w": "b"}),
    (8, "é", 3, False, {"v": {"a": 1}, "w": None}),
]
ALL = set(range(1, 9))

SQLITE_DDL = "CREATE TABLE items (id INTEGER PRIMARY KEY, s TEXT, n REAL, b BOOLEAN, j JSON)"
POSTGRES_DDL = (
    "CREATE TABLE items (id integer PRIMARY KEY, s text, n double precision, b boolean, j jsonb)"
)

CASES: list[tuple[dict[str, Any], set[int]]] = [
    ({}, ALL),
    ({"s": "a"}, {1}),
    ({"s": {"$eq": "B"}}, {3}),
    ({"s": None}, {4}),
    ({"s": {"$ne": None}}, ALL - {4}),
    ({"s": {"$ne": "a"}}, ALL - {1}),
    ({"s": 5}, set()),
    ({"s": "5"}, {5}),
    ({"s": "é"}, {8}),
    ({"s": {"$gt": "a"}}, {2, 7, 8}),
    ({"s": {"$lt": "a"}}, {3, 5, 6}),
    ({"s": {"$gte": None}}, {4}),
    ({"s": {"$gt": None}}, set()),
    ({"s": {"$lt": None}}, set()),
    ({"s": {"$in": ["a", "b", None]}}, {1, 2, 4}),
    ({"s": {"$nin": ["a", "b"]}}, {3, 4, 5, 6, 7, 8}),
    ({"s": {"$in": []}}, set()),
    ({"s": {"$nin": []}}, ALL),
    ({"s": {"$exists": True}}, ALL - {4}),
    ({"s": {"$exists": False}}, {4}),
    ({"s": {"$gt": "a", "$lt": "b"}}, {7}),
    ({"n": 1}, {1}),
    ({"n": 1.0}, {1}),
    ({"n": True}, set()),
    ({"n": {"$gt": 2}}, {2, 5, 7, 8}),
    ({"n": {"$lte": 0}}, {4, 6}),
    ({"n": {"$ne": 0}}, ALL - {4}),
    ({"n": {"$gt": "a"}}, set()),
    ({"b": True}, {1, 4, 7}),
    ({"b": False}, {2, 5, 8}),
    ({"b": 1}, set()),
    ({"b": {"$ne": True}}, {2, 3, 5, 6, 8}),
    ({"b": {"$gt": False}}, {1, 4, 7}),
    ({"b": {"$lt": True}}, {2, 5, 8}),
    ({"j.v": 1}, {1}),
    ({"j.v": "1"}, {2}),
    ({"j.v": None}, {3, 4, 5}),
    ({"j.v": {"$exists": True}}, {1, 2, 3, 6, 7, 8}),
    ({"j.v": {"$exists": False}}, {4, 5}),
    ({"j.v": True}, {6}),
    ({"j.v": {"$gte": 1}}, {1}),
    ({"j.v": {"$ne": 1}}, ALL - {1}),
    ({"j.v": {"$in": [1, "1", True]}}, {1, 2, 6}),
    ({"j.v": {"$nin": [None]}}, {1, 2, 6, 7, 8}),
    ({"j.w": None}, {2, 3, 4, 5, 6, 8}),
    ({"j.w": {"$gt": "a"}}, {7}),
    ({"j.x.y": "z"}, {6}),
    ({"j.x.y": {"$exists": True}}, {6}),
    ({"j.x": {"$exists": True}}, {6}),
    ({"$or": [{"s": "a"}, {"n": {"$gt": 5}}]}, {1, 7}),
    ({"$and": [{"b": True}, {"n": {"$gte": 1}}]}, {1, 7}),
    ({"b": True, "s": {"$ne": "a"}}, {4, 7}),
    ({"$or": [{"j.w": {"$exists": False}}, {"s": None}]}, {2, 3, 4, 5, 6}),
    ({"$or": [{"$and": [{"s": {"$gte": "a"}}, {"b": False}]}, {"n": -1}]}, {2, 6, 8}),
]


def sql_params(row: tuple[Any, ...], dialect: str) -> tuple[Any, ...]:
    id_, s, n, b, j = row
    if dialect == "sqlite":
        return id_, s, n, None if b is None else int(b), None if j is None else json.dumps(j)
    from psycopg.types.json import Jsonb

    return id_, s, n, b, None if j is None else Jsonb(j)


# Where the backends differ on purpose: on SQL backends a canonical decimal string compared
# with a plain numeric column (`n`) is the number it spells; the evaluator (and MongoDB) keep
# strings and numbers apart.
EVALUATOR_CASES: list[tuple[dict[str, Any], set[int]]] = [
    ({"n": "1"}, set()),
    ({"n": {"$in": ["1", "5"]}}, set()),
    ({"n": {"$in": [0, 2.5, "5"]}}, {2, 4}),
]
SQL_CASES: list[tuple[dict[str, Any], set[int]]] = [
    ({"n": "1"}, {1}),
    ({"n": "2.5"}, {2}),
    ({"n": "-1"}, {6}),
    ({"n": "01"}, set()),
    ({"n": "1.0"}, set()),
    ({"n": "+1"}, set()),
    ({"n": " 1"}, set()),
    ({"n": "1e0"}, set()),
    ({"n": {"$ne": "1"}}, ALL - {1}),
    ({"n": {"$gt": "2"}}, {2, 5, 7, 8}),
    ({"n": {"$in": ["1", "5", "x"]}}, {1, 5}),
    ({"n": {"$in": ["x", 10]}}, {7}),
    ({"n": {"$in": [0, 2.5, "5"]}}, {2, 4, 5}),
    ({"n": {"$nin": ["1", "zz"]}}, ALL - {1}),
    ({"s": "5"}, {5}),  # a text column compares text
    ({"j.v": "1"}, {2}),  # JSON keeps its types
]


def sql_view(filter: Any) -> Any:
    """`filter` as the SQL backends read it on this schema: canonical decimal strings
    compared with column `n` become numbers (so the evaluator can be the reference)."""
    if isinstance(filter, list):
        return [sql_view(f) for f in filter]
    if not isinstance(filter, dict):
        return filter
    return {k: (_numbers(v) if k == "n" else sql_view(v)) for k, v in filter.items()}


def _numbers(v: Any) -> Any:
    if isinstance(v, dict):
        return {op: _numbers(x) for op, x in v.items()}
    if isinstance(v, list):
        return [_numbers(x) for x in v]
    if isinstance(v, str):
        n = parse_canonical(v)
        return v if n is None else n
    return v


def document(row: tuple[Any, ...]) -> dict[str, Any]:
    """The row as the evaluator sees it: a NULL column is a missing field."""
    names = ("id", "s", "n", "b", "j")
    return {k: v for k, v in zip(names, row, strict=True) if v is not None}


# --- random data and filters (seeded, bounded) -------------------------------------------

VALUES: list[Any] = [None, True, False, 0, 1, -1, 2.5, 5, "", "1", "5", "a", "B", "aa", "é", "z"]
FIELDS = ("s", "n", "b", "j.v", "j.w", "j.x.y")
OPS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists")


def random_rows(rng: random.Random, count: int) -> list[tuple[Any, ...]]:
    def pick(kind: str) -> Any:
        if rng.random() < 0.25:
            return None
        if kind == "s":
            return rng.choice(["", "1", "5", "a", "B", "aa", "é", "z"])
        if kind == "n":
            return rng.choice([0, 1, -1, 2.5, 5])
        return rng.choice([True, False])

    values = [None, 1, "1", "a", True, False, 2.5, [1], {"y": "z"}]
    rows = []
    for i in range(count):
        j = random_json(rng, values)
        rows.append((i + 1, pick("s"), pick("n"), pick("b"), j))
    return rows


def random_json(rng: random.Random, values: list[Any]) -> Any:
    """A JSON column's document: null, or some of the keys v and w (one of `values`) and x
    (an object {"y": ...})."""
    if rng.random() <= 0.2:
        return None
    doc: dict[str, Any] = {}
    for key in ("v", "w", "x"):
        if rng.random() < 0.6:
            doc[key] = {"y": rng.choice(["z", "a", None, 1])} if key == "x" else rng.choice(values)
    return doc


def random_filter(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    if depth < 2 and rng.random() < 0.2:
        op = rng.choice(["$and", "$or"])
        return {op: [random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]}
    field, op = rng.choice(FIELDS), rng.choice(OPS)
    if op == "$exists":
        value: Any = rng.choice([True, False])
    elif op in ("$in", "$nin"):
        value = rng.sample(VALUES, rng.randint(0, 4))
    else:
        value = rng.choice(VALUES)
    if op == "$eq" and rng.random() < 0.5:
        return {field: value}
    return {field: {op: value}}
