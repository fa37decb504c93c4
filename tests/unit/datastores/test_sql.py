"""The SQL translator's statement cache: one compiled text per expression shape, values
bound per request in the right order, bounded, recompiled when the table's columns change."""

from __future__ import annotations

import random

import pytest

from authz.datastores import sql
from authz.datastores.filters import parse
from authz.datastores.sql import PostgresDialect, SqliteDialect, where
from tests.unit.datastores import cases

COLUMNS = {"id": "number", "s": "string", "n": "number", "b": "bool", "j": "json"}


def test_same_shape_same_text_own_values():
    d = SqliteDialect()
    sql1, params1 = where(parse({"s": "a", "n": {"$gt": 1}}), COLUMNS, "items", d)
    sql2, params2 = where(parse({"s": "b", "n": {"$gt": 2.5}}), COLUMNS, "items", d)
    assert sql2 is sql1  # from the cache
    assert (params1, params2) == (["a", 1], ["b", 2.5])
    assert len(d.cache) == 1


@pytest.mark.parametrize(
    ("f1", "f2"),
    [
        ({"o": "5"}, {"o": 5}),  # value class: typeof guards differ
        ({"s": "a"}, {"s": None}),  # None-ness
        ({"s": {"$exists": True}}, {"s": {"$exists": False}}),  # $exists operand
        ({"s": {"$in": ["a"]}}, {"s": {"$in": ["a", "b"]}}),  # list length
        ({"j.v": {"$in": [1, "a"]}}, {"j.v": {"$in": ["a", 1]}}),  # class order in a list
        ({"s": "a"}, {"s": {"$ne": "a"}}),  # operator
        ({"$or": [{"s": "a"}, {"n": 1}]}, {"$and": [{"s": "a"}, {"n": 1}]}),  # logic
        ({"s": "a", "n": 1}, {"n": 1, "s": "a"}),  # order of the members
    ],
)
def test_a_different_shape_is_a_different_statement(f1, f2):
    d = SqliteDialect()
    columns = {**COLUMNS, "o": "other"}
    sql1, _ = where(parse(f1), columns, "items", d)
    sql2, _ = where(parse(f2), columns, "items", d)
    assert sql1 != sql2
    assert len(d.cache) == 2


def test_string_and_number_values_get_their_own_guards():
    d, columns = SqliteDialect(), {"o": "other"}
    text, _ = where(parse({"o": "5"}), columns, "t", d)
    number, _ = where(parse({"o": 5}), columns, "t", d)
    assert "('text')" in text and "'integer'" not in text
    assert "('integer', 'real')" in number


def test_params_of_a_cached_shape_are_bound_in_order():
    d = SqliteDialect()
    shape = {"b": True, "j.v": {"$in": [1, "x", None, 2]}, "$or": [{"s": {"$nin": ["p", 3]}}]}
    where(parse(shape), COLUMNS, "items", d)
    values = {"b": False, "j.v": {"$in": [7, "y", None, 8]}, "$or": [{"s": {"$nin": ["q", 4]}}]}
    text, params = where(parse(values), COLUMNS, "items", d)
    fresh = where(parse(values), COLUMNS, "items", SqliteDialect())
    assert (text, params) == fresh
    # bool bound as 0/1; the JSON column's numbers grouped before its strings, each with
    # its path; the string column drops the number 4 (no match), keeps "q"
    assert params == [0, "$.v", "$.v", "$.v", 7, 8, "$.v", "$.v", "y", "q"]
    assert text.count("?") == len(params)


def test_cached_and_fresh_translations_agree_on_random_filters():
    """Random filters repeat shapes with other values: every answer equals a fresh compile."""
    rng = random.Random(7)
    d = SqliteDialect()
    n = 3000
    for _ in range(n):
        expr = parse(cases.random_filter(rng))
        assert where(expr, COLUMNS, "items", d) == where(expr, COLUMNS, "items", SqliteDialect())
    assert len(d.cache) < n  # shapes did repeat


def test_new_columns_recompile():
    d = SqliteDialect()
    expr = parse({"o": "5"})
    where(expr, {"o": "string"}, "t", d)
    text, _ = where(expr, {"o": "json"}, "t", d)  # the table was re-read: a new dict
    assert "json_type" in text


def test_same_shape_on_another_table_is_its_own_entry():
    d = SqliteDialect()
    where(parse({"s": "a"}), COLUMNS, "items", d)
    text, _ = where(parse({"s": "a"}), {"s": "number"}, "other", d)
    assert text == SqliteDialect.false


def test_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(sql, "CACHE_SIZE", 10)
    d = SqliteDialect()
    for k in range(25):
        where(parse({"n": {"$in": list(range(k))}}), COLUMNS, "items", d)
        assert len(d.cache) <= 10
    text, params = where(parse({"n": {"$in": [1, 2, 3]}}), COLUMNS, "items", d)
    assert params == [1, 2, 3] and text.count("?") == 3


def test_values_never_in_the_cached_text():
    d = SqliteDialect()
    where(parse({"s": "harmless"}), COLUMNS, "items", d)
    text, params = where(parse({"s": "x'); DROP TABLE items; --"}), COLUMNS, "items", d)
    assert "DROP" not in text and params == ["x'); DROP TABLE items; --"]


def test_postgres_binds_json_values_per_request():
    jsonb = pytest.importorskip("psycopg.types.json").Jsonb
    d = PostgresDialect()
    where(parse({"j.v": 1, "s": "a"}), COLUMNS, "items", d)
    text, params = where(parse({"j.v": 2, "s": "b"}), COLUMNS, "items", d)
    assert len(d.cache) == 1
    assert text.count("%s") == len(params)
    values = [p.obj for p in params if isinstance(p, jsonb)]
    assert values == [2] and params[-1] == "b"
    assert ["v"] in params  # the JSON path, a constant of the statement
