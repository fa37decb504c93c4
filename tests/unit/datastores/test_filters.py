"""The filter language: what parses, what is refused, and the reference evaluator."""

from __future__ import annotations

import pytest
from bson import ObjectId

from authz.datastores.filters import (
    MATCH_ALL,
    Cond,
    FilterError,
    Logic,
    check_collection,
    matches,
    parse,
)
from tests.unit.datastores.cases import ALL, CASES, EVALUATOR_CASES, ROWS, document


def test_parse_builds_the_tree():
    expr = parse({"a": 1, "b.c": {"$gt": 2, "$lt": 5}, "$or": [{"d": None}, {"e": "x"}]})
    assert expr == Logic(
        "$and",
        (
            Cond("a", "$eq", 1),
            Cond("b.c", "$gt", 2),
            Cond("b.c", "$lt", 5),
            Logic("$or", (Cond("d", "$eq", None), Cond("e", "$eq", "x"))),
        ),
    )
    assert parse({}) == MATCH_ALL
    assert parse({"a": {"$exists": False}}) == Cond("a", "$exists", False)


@pytest.mark.parametrize(
    "bad",
    [
        {"$where": "1"},
        {"a": {"$regex": ".*"}},
        {"a": {"$foo": 1}},
        {"a": {"$not": {"$eq": 1}}},
        {"$nor": [{"a": 1}]},
        {"$or": []},
        {"$and": {"a": 1}},
        {"a": {}},
        {"a": {"b": 1}},  # embedded document: use dotted names
        {"a": {"$eq": {"$ne": None}}},
        {"a": [1, 2]},
        {"a": {"$in": "x"}},
        {"a": {"$in": [{"$gt": ""}]}},
        {"a": {"$exists": 1}},
        {"a": 1 << 64},
        {"a": float("nan")},
        {"a)": 1},
        {"a;drop": 1},
        {'a"b': 1},
        {"a..b": 1},
        {"1a": 1},
        {"": 1},
    ],
)
def test_parse_refuses(bad):
    with pytest.raises(FilterError):
        parse(bad)


@pytest.mark.parametrize("name", ["t)", "t;", 't"', "a.b.c", "", "x y", "é"])
def test_collection_names_are_strict(name):
    with pytest.raises(FilterError):
        check_collection(name, "col")


def test_collection_names_allowed():
    check_collection("followers", "col")
    check_collection("app.followers", "col")


DOCS = [document(row) for row in ROWS]


@pytest.mark.parametrize(
    ("filter", "expected"),
    CASES + EVALUATOR_CASES,
    ids=[repr(c[0]) for c in CASES + EVALUATOR_CASES],
)
def test_evaluator_cases(filter, expected):
    assert {d["id"] for d in DOCS if matches(d, filter)} == expected


def test_null_versus_missing():
    assert matches({"a": None}, {"a": {"$exists": True}})
    assert not matches({}, {"a": {"$exists": True}})
    assert matches({}, {"a": None}) and matches({"a": None}, {"a": None})
    assert matches({"a": None}, {"a": {"$lte": None}})
    assert not matches({"a": None}, {"a": {"$lt": None}})


def test_object_ids_compare_as_their_own_class():
    oid = ObjectId("64b7f0c2a1b2c3d4e5f60718")
    assert matches({"_id": oid}, {"_id": oid})
    assert not matches({"_id": str(oid)}, {"_id": oid})


def test_all_rows_covered():
    assert {d["id"] for d in DOCS} == ALL
