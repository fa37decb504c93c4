"""A query rule's compiled filter (a FilterTemplate) gives the datastore the expression
`filters.parse` would make of the filled filter (the datastore no longer parses it per
request), with its holes numbered in the order the SQL translator binds values."""

from __future__ import annotations

import pytest

from authz.datastores import sql
from authz.datastores.filters import parse
from authz.rules.compiling import CompileContext
from authz.rules.query import SlotError, compile_filter

ARGS = {
    "auth": {"id": "alice", "age": 30, "admin": False},
    "params": {"ids": ["a", "b", None], "n": 2.5, "missing": None},
}

RAW_FILTERS = [
    {},
    {"userId": "args.auth.id"},
    {"userId": "args.auth.id", "isPublic": True},
    {"age": {"$gte": 18, "$lt": "args.auth.age"}, "deleted": None},
    {"id": {"$in": "args.params.ids"}, "tag": {"$nin": ["x", "args.auth.id", 3]}},
    {"a.b": {"$exists": True}, "n": {"$ne": "args.params.n"}},
    {"$or": [{"owner": "args.auth.id"}, {"public": True}], "kind": "post"},
    {"$and": [{}, {"$or": [{"x": 1}, {"y": {"$eq": None}}]}], "z": "args.params.missing"},
    {
        "a": "args.auth.admin",
        "$or": [{"b": {"$in": [1, "args.auth.age"]}}, {"c": {"$exists": "args.auth.admin"}}],
        "d": {"$nin": "args.params.ids", "$gt": "args.params.n"},
    },
]


@pytest.mark.parametrize("raw", RAW_FILTERS)
def test_the_expression_is_what_parse_makes_of_the_filled_filter(raw):
    cc = CompileContext()
    t = compile_filter(raw, cc, "find")
    assert cc.errors == []
    filled, expr = t.build(t.values(ARGS))
    assert expr == parse(filled)


@pytest.mark.parametrize("raw", RAW_FILTERS)
def test_holes_are_numbered_in_the_order_sql_shape_visits_values(raw):
    t = compile_filter(raw, CompileContext(), "find")
    values = t.values(ARGS)
    _, expr = t.build(values)
    collected: list = []
    sql.shape(expr, collected)
    assert collected == t.flat(values)
    # the same order with other values: each hole is one position, not a coincidence
    other = [_distinct(i, v) for i, v in enumerate(values)]
    collected = []
    sql.shape(t.build(other)[1], collected)
    assert collected == t.flat(other)


def _distinct(i, v):
    """A value unique to hole `i` (a list of unique items for a list)."""
    return [f"v{i}.{k}" for k in range(len(v))] if type(v) is list else f"v{i}"


def test_each_value_is_still_checked_as_it_is_filled():
    t = compile_filter({"id": "args.params.ids"}, CompileContext(), "find")
    with pytest.raises(SlotError, match="not a scalar"):
        t.values(ARGS)  # a list where a scalar goes: the rule fails, the datastore never runs
