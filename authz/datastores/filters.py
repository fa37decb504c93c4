"""The Mongo-style filter language of `query` rules: validation and an in-memory evaluator.

A filter is `{field: value | {op: value, ...}, "$and": [filter, ...], "$or": [...]}` with the
closed operator set below. `parse` validates a filter (identifiers, operators, value slots)
into a small expression tree that the SQL translator walks; `matches` evaluates that tree
against a document in memory and is the reference semantics every backend must agree with:

- values are scalars: null, bool, number (int/float, `1 == 1.0`), string, ObjectId;
  values of different classes never compare equal or ordered (`"1" != 1`, `true != 1`);
- `{f: null}` / `$eq: null` matches a missing or null field, `$ne: null` a present non-null one;
- `$ne` / `$nin` are the exact negations of `$eq` / `$in` (so they match missing fields);
- `$gt $gte $lt $lte` match only values of the operand's class; with a null operand,
  `$gte`/`$lte` behave like `$eq: null` and `$gt`/`$lt` match nothing (MongoDB's rules);
- `$exists: true` matches a present field, even null;
- a field holding an array or object equals no scalar (MongoDB's array matching is not
  portable to SQL and is not part of the language).

SQL backends map a NULL column to a *missing* field (JSON null inside a JSON column is null),
and compare a canonical decimal string with a plain numeric column as the number it spells
(`"1"` matches `id INTEGER` 1: path parameters are strings); this evaluator and MongoDB keep
strings and numbers apart (`utils.number` converts explicitly). See sql.py.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, final

_SEGMENT = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
FIELD = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT}){{0,15}}")
COLLECTION = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})?")  # table or schema.table

COMPARISONS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
LIST_OPERATORS = ("$in", "$nin")
OPERATORS = frozenset((*COMPARISONS, *LIST_OPERATORS, "$exists"))
LOGICAL = ("$and", "$or")
MAX_LIST = 1000  # items in an $in/$nin operand
_INT64 = (-(1 << 63), (1 << 63) - 1)


class FilterError(ValueError):
    """A filter that is not in the language, or a value that may not fill its slot."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


@final  # so `type(expr) is Logic` tells a checker the other branch is a Cond
@dataclass(frozen=True, slots=True)
class Cond:
    field: str
    op: str  # one of OPERATORS
    value: Any


@final
@dataclass(frozen=True, slots=True)
class Logic:
    op: str  # "$and" | "$or"
    items: tuple[Expr, ...]


Expr = Cond | Logic
MATCH_ALL = Logic("$and", ())


# --- values ------------------------------------------------------------------------------


def _is_object_id(v: Any) -> bool:
    return type(v).__name__ == "ObjectId" and type(v).__module__.startswith("bson")


def value_class(v: Any) -> str:
    """null, bool, number, string, objectid, or other (arrays, objects, anything else)."""
    if v is None:
        return "null"
    t = type(v)
    if t is bool:
        return "bool"
    if t is int or t is float:
        return "number"
    if t is str:
        return "string"
    if _is_object_id(v):
        return "objectid"
    return "other"


def scalar_problem(v: Any) -> str | None:
    """Why `v` cannot fill a scalar value slot, or None when it can."""
    cls = value_class(v)
    if cls == "other":
        return f"a {type(v).__name__} is not a scalar value (only string, number, bool, null)"
    if cls == "number":
        if type(v) is int and not _INT64[0] <= v <= _INT64[1]:
            return "integer out of the 64-bit range"
        if type(v) is float and not math.isfinite(v):
            return "number is not finite"
    return None


def value_problem(op: str, v: Any) -> str | None:
    """Why `v` cannot be the operand of `op`, or None when it can."""
    if op == "$exists":
        return None if type(v) is bool else "the operand of $exists must be true or false"
    if op in LIST_OPERATORS:
        if type(v) is not list:
            return f"the operand of {op} must be a list"
        if len(v) > MAX_LIST:
            return f"the operand of {op} has more than {MAX_LIST} items"
        for item in v:
            problem = scalar_problem(item)
            if problem:
                return f"{op} item: {problem}"
        return None
    return scalar_problem(v)


# --- parsing -----------------------------------------------------------------------------


def check_field(name: Any, path: str) -> None:
    if not isinstance(name, str) or not FIELD.fullmatch(name):
        raise FilterError(path, f"invalid field name {name!r} (letters, digits, '_', dots)")


def check_collection(name: Any, path: str) -> None:
    if not isinstance(name, str) or not COLLECTION.fullmatch(name):
        raise FilterError(path, f"invalid collection/table name {name!r}")


def parse(filter: Any, path: str = "find") -> Expr:
    """Validate a filled filter into an expression tree; raise FilterError."""
    if not isinstance(filter, dict):
        raise FilterError(path, "a filter must be an object")
    items: list[Expr] = []
    for key, value in filter.items():
        items.extend(_parse_member(key, value, f"{path}.{key}"))
    return items[0] if len(items) == 1 else Logic("$and", tuple(items))


def _parse_member(key: Any, value: Any, path: str) -> list[Expr]:
    if isinstance(key, str) and key in LOGICAL:
        if not isinstance(value, list) or not value:
            raise FilterError(path, f"{key} takes a non-empty list of filters")
        return [Logic(key, tuple(parse(v, f"{path}[{i}]") for i, v in enumerate(value)))]
    if isinstance(key, str) and key.startswith("$"):
        raise FilterError(path, f"unknown operator {key!r}")
    check_field(key, path)
    if isinstance(value, dict):
        if not value:
            raise FilterError(path, "an empty operator object")
        conds: list[Expr] = []
        for op, operand in value.items():
            if not isinstance(op, str) or not op.startswith("$"):
                raise FilterError(path, "objects are not values; use dotted field names")
            if op not in OPERATORS:
                raise FilterError(f"{path}.{op}", f"unknown operator {op!r}")
            problem = value_problem(op, operand)
            if problem:
                raise FilterError(f"{path}.{op}", problem)
            conds.append(Cond(key, op, operand))
        return conds
    problem = scalar_problem(value)
    if problem:
        raise FilterError(path, problem)
    return [Cond(key, "$eq", value)]


# --- in-memory evaluation ----------------------------------------------------------------


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


ABSENT: Any = _Missing()

_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}


def lookup(doc: Any, field: str) -> Any:
    """The value at a dotted field, or ABSENT."""
    v = doc
    for seg in field.split("."):
        if not isinstance(v, dict) or seg not in v:
            return ABSENT
        v = v[seg]
    return v


def equals(x: Any, v: Any) -> bool:
    """MongoDB equality of a document value `x` (maybe ABSENT) with a scalar operand `v`."""
    if v is None:
        return x is ABSENT or x is None
    if x is ABSENT:
        return False
    cls = value_class(v)
    return value_class(x) == cls and x == v


def compare(op: str, x: Any, v: Any) -> bool:
    if op == "$eq":
        return equals(x, v)
    if op == "$ne":
        return not equals(x, v)
    if op == "$in":
        return any(equals(x, item) for item in v)
    if op == "$nin":
        return not any(equals(x, item) for item in v)
    if op == "$exists":
        return (x is not ABSENT) is v
    if v is None:
        return op in ("$gte", "$lte") and equals(x, None)
    if x is ABSENT or value_class(x) != value_class(v):
        return False
    return _ORDER[op](x, v)


def evaluate(expr: Expr, doc: dict[str, Any]) -> bool:
    if isinstance(expr, Logic):
        if expr.op == "$and":
            return all(evaluate(e, doc) for e in expr.items)
        return any(evaluate(e, doc) for e in expr.items)
    return compare(expr.op, lookup(doc, expr.field), expr.value)


def matches(doc: dict[str, Any], filter: dict[str, Any] | Expr) -> bool:
    """Does `doc` match `filter` (a filter object or a parsed expression)?"""
    expr = filter if isinstance(filter, Cond | Logic) else parse(filter)
    return evaluate(expr, doc)
