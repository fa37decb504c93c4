"""A query rule's compiled filter gives the datastore the expression `filters.parse` would
make of the filled filter (the datastore no longer parses it per request)."""

from __future__ import annotations

import pytest

from authz.datastores.filters import parse
from authz.rules.compiler import CompileContext
from authz.rules.query import SlotError, compile_filter

ARGS = {
    "auth": {"id": "alice", "age": 30, "admin": False},
    "params": {"ids": ["a", "b", None], "n": 2.5, "missing": None},
}


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"userId": "args.auth.id"},
        {"userId": "args.auth.id", "isPublic": True},
        {"age": {"$gte": 18, "$lt": "args.auth.age"}, "deleted": None},
        {"id": {"$in": "args.params.ids"}, "tag": {"$nin": ["x", "args.auth.id", 3]}},
        {"a.b": {"$exists": True}, "n": {"$ne": "args.params.n"}},
        {"$or": [{"owner": "args.auth.id"}, {"public": True}], "kind": "post"},
        {"$and": [{}, {"$or": [{"x": 1}, {"y": {"$eq": None}}]}], "z": "args.params.missing"},
    ],
)
def test_the_expression_is_what_parse_makes_of_the_filled_filter(raw):
    cc = CompileContext()
    fill = compile_filter(raw, cc, "find")
    assert cc.errors == []
    filled, expr = fill(ARGS)
    assert expr == parse(filled)


def test_each_value_is_still_checked_as_it_is_filled():
    fill = compile_filter({"id": "args.params.ids"}, CompileContext(), "find")
    with pytest.raises(SlotError, match="not a scalar"):
        fill(ARGS)  # a list where a scalar goes: the rule fails, the datastore never runs
