"""A filter whose structure is fixed and whose values change per request: a `query` rule's
`find`, compiled once.

The rule's compiler (rules/query.py) builds the filter and its expression with a `Hole` at
each value and one function per hole that fills it from the request. Per request the rule
only computes the values; a SQL datastore then reuses the statement it compiled for this
template and the values' types (`signature`) and binds the values into it, so no expression
is built, walked or translated per request. Other datastores get the filled filter and its
expression from `build`, equal to what `filters.parse` makes of the filled filter.

Holes are numbered in the order `sql.shape` visits values, and `flat` lists the values in
exactly that order (a `$in` list contributes its items).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from authz.datastores.filters import LIST_OPERATORS, Cond, Expr, Logic
from authz.numeric import is_canonical

NUMTEXT = "numtext"  # the signature's type of a canonical decimal string (see sql.py)


def _type(v: Any) -> Any:
    """A value's type for the signature: a canonical decimal string is its own type."""
    t = type(v)
    return NUMTEXT if t is str and is_canonical(v) else t


class Hole:
    """Where value number `index` of the template goes. `hint`: the classes (sql.sql_class)
    its values can have when the config says (a literal, a path parameter), else None; for
    `validate --connect` and /readyz (datastores/schema.py), never per request."""

    __slots__ = ("hint", "index")

    def __init__(self, index: int, hint: frozenset[str] | None = None):
        self.index, self.hint = index, hint

    def __repr__(self) -> str:
        return f"Hole({self.index})"


class FilterTemplate:
    """`filled` and `expr` with holes, the functions filling them (`slots`, one per hole) and
    each hole's operator. Hashed by identity: a SQL dialect caches statements per template."""

    __slots__ = ("expr", "filled", "has_lists", "ops", "plain", "slots")

    def __init__(
        self,
        filled: dict[str, Any],
        expr: Expr,
        slots: Sequence[Callable[[Any], Any]],
        ops: Sequence[str],
    ):
        self.filled, self.expr = filled, expr
        self.slots = tuple(slots)
        self.ops = tuple(ops)
        self.has_lists = any(op in LIST_OPERATORS for op in ops)
        # The SQL text depends on each value's class only, except $exists (its operand picks
        # the SQL) and $in/$nin lists (their lengths): "plain" templates have neither.
        self.plain = not self.has_lists and "$exists" not in ops

    def values(self, args: Any) -> list[Any]:
        """Each hole's value for `args` (a slot raises when its value does not fit)."""
        return [slot(args) for slot in self.slots]

    def signature(self, values: list[Any]) -> tuple[Any, ...]:
        """Everything of `values` that the SQL text depends on (hashable)."""
        if self.plain:
            return tuple(map(_type, values))
        return tuple(_signature(op, v) for op, v in zip(self.ops, values, strict=True))

    def flat(self, values: list[Any]) -> list[Any]:
        """The values in `sql.shape`'s order: lists expanded into their items."""
        if not self.has_lists:
            return values
        out: list[Any] = []
        for v in values:
            out.extend(v) if type(v) is list else out.append(v)
        return out

    def build(self, values: list[Any]) -> tuple[dict[str, Any], Expr]:
        """The filled filter and its expression."""
        return _fill(self.filled, values), _fill_expr(self.expr, values)


def _signature(op: str, v: Any) -> Any:
    if op == "$exists":
        return v
    if type(v) is list:
        return (len(v), *map(_type, v))
    return _type(v)


def _fill(raw: Any, values: list[Any]) -> Any:
    if type(raw) is Hole:
        return values[raw.index]
    if type(raw) is dict:
        return {k: _fill(v, values) for k, v in raw.items()}
    if type(raw) is list:
        return [_fill(v, values) for v in raw]
    return raw


def _fill_expr(expr: Expr, values: list[Any]) -> Expr:
    if type(expr) is Logic:
        return Logic(expr.op, tuple(_fill_expr(e, values) for e in expr.items))
    return Cond(expr.field, expr.op, values[expr.value.index])
