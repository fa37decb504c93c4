"""Translate a parsed filter (datastores.filters) into a SQL WHERE clause with bound values.

Identifiers come only from the config (validated by `filters`), are resolved against the
table's real columns and always quoted; every value is a bound parameter. Each column has a
*kind* read from the table once (number, string, bool, json, other): a value is compared only
with columns of its class, so `true` never matches 1 and a type mismatch is "no match", never
a database error. One exception, class `numtext`: a canonical decimal string (numeric.py)
compared with a plain numeric column is the number it spells (`/posts/{id}` fills `"1"`,
which matches `id INTEGER` 1, as SQLite's column affinity would compare them; PostgreSQL
needs the bound value typed as a number, so `bind` converts it).
Every generated predicate is two-valued (never SQL NULL), so `NOT` is the
exact negation MongoDB's `$ne`/`$nin` need. A NULL column is a missing field; inside a JSON
column, a missing key is missing and a JSON null is null (see filters.py for the semantics).

The SQL text depends only on the expression's *shape* (structure, fields, operators, each
value's class, list lengths), never on the values: `where` compiles a shape once per dialect
instance (one per datastore) into the text and a list of parameter slots, and later requests
of that shape only bind their values into the slots. Building the text cost more than running
an indexed lookup on SQLite.
"""

from __future__ import annotations

from typing import Any

from authz.datastores.filters import Cond, Expr, Logic, value_class
from authz.datastores.template import FilterTemplate
from authz.errors import DependencyError
from authz.numeric import is_canonical, parse_canonical

CACHE_SIZE = 1024  # compiled shapes per dialect instance; cleared when full
KINDS = ("number", "string", "bool", "json", "other")
_SQL_OPS = {"$eq": "=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_RANGE = ("$gt", "$gte", "$lt", "$lte")


def quote(ident: str) -> str:
    """Quote one validated identifier (letters, digits, '_': nothing to escape)."""
    return '"' + ident + '"'


def quote_table(name: str) -> str:
    return ".".join(quote(part) for part in name.split("."))


class Target:
    """One field resolved to a column (and a path inside it for JSON columns)."""

    __slots__ = ("column", "kind", "path")

    def __init__(self, column: str, kind: str, path: tuple[str, ...]):
        self.column, self.kind, self.path = column, kind, path


class Slot:
    """A parameter filled per request: `Dialect.bind` of the `index`-th value of the shape."""

    __slots__ = ("cls", "index", "target")

    def __init__(self, index: int, cls: str, target: Target):
        self.index, self.cls, self.target = index, cls, target


class Dialect:
    """SQL fragments one backend needs; `params` collects, in order, constants (JSON paths)
    and `Slot`s for the values (`values` are the values' indexes in the expression)."""

    placeholder = "?"
    true, false = "1=1", "1=0"

    def __init__(self) -> None:
        # (table, shape) -> (columns, sql, params); `columns` is the table's dict the entry was
        # compiled for: a re-read table is a new dict, which recompiles.
        self.cache: dict[tuple[str, Any], tuple[dict[str, str], str, list[Any]]] = {}
        # (table, template, signature) -> the whole SELECT for a query rule's filter
        self.statements: dict[tuple[str, FilterTemplate, tuple[Any, ...]], Statement] = {}

    def select(self, table: str, clause: str) -> str:
        return f"SELECT * FROM {quote_table(table)} WHERE {clause} LIMIT {self.placeholder}"

    def absent(self, t: Target, params: list[Any]) -> str:
        raise NotImplementedError

    def present(self, t: Target, params: list[Any]) -> str:
        raise NotImplementedError

    def typed(self, t: Target, cls: str, sql_op: str, values: list[int], params: list[Any]) -> str:
        """`t` holds a value of class `cls` and `t <op> value` (or `t IN (values)`)."""
        raise NotImplementedError

    def accepts(self, t: Target, cls: str) -> bool:
        """Can column `t` hold values of class `cls`? (else: no match)"""
        if t.kind == "json":
            return cls in ("number", "string", "bool")
        if t.kind == "other":
            return cls in self.other_classes
        return t.kind == cls

    other_classes: tuple[str, ...] = ("string",)

    def bind(self, cls: str, value: Any, t: Target) -> Any:
        return value


def sql_class(v: Any) -> str:
    """`value_class`, with canonical decimal strings as their own class `numtext`."""
    return "numtext" if type(v) is str and is_canonical(v) else value_class(v)


def target_class(cls: str, t: Target) -> str:
    """The class a value of class `cls` is compared as in column `t`: a `numtext` is a number
    for a plain numeric column and a string everywhere else (JSON keeps its own types)."""
    if cls == "numtext":
        return "numtext" if t.kind == "number" else "string"
    return cls


def bind_numtext(value: Any) -> Any:
    """A `numtext` slot's value as the number it spells (a number passes unchanged)."""
    return parse_canonical(value) if type(value) is str else value


def resolve(field: str, columns: dict[str, str], table: str) -> Target:
    """Map a dotted field to a column of `table` (exact name, else PostgreSQL's lower-case)."""
    head, *rest = field.split(".")
    name = head if head in columns else head.lower() if head.lower() in columns else None
    if name is None:
        raise DependencyError(f"table {table} has no column {head!r}")
    kind = columns[name]
    if rest and not kind.startswith("json"):
        raise DependencyError(f"field {field!r}: column {name!r} of {table} is not a JSON column")
    return Target(name, kind, tuple(rest))


def where(expr: Expr, columns: dict[str, str], table: str, d: Dialect) -> tuple[str, list[Any]]:
    """The WHERE clause for `expr` on `table` and its bound parameters, in order."""
    values: list[Any] = []
    key = (table, shape(expr, values))
    entry = d.cache.get(key)
    if entry is None or entry[0] is not columns:
        entry = (columns, *_compile(expr, columns, table, d))
        if len(d.cache) >= CACHE_SIZE:
            d.cache.clear()
        d.cache[key] = entry
    _, sql, slots = entry
    return sql, _bind(d, slots, values)


class Statement:
    """A query rule's SELECT for one signature of its values; `params` binds them.

    `as_is`: the parameters are exactly the values, in order, each bound unchanged (no JSON
    paths, no conversions): the common `{col: args.x}` filter skips binding altogether. It is
    decided from one set of values and holds for every set of the same types (the key)."""

    __slots__ = ("as_is", "columns", "slots", "sql")

    def __init__(
        self, d: Dialect, columns: dict[str, str], sql: str, slots: list[Any], flat: list[Any]
    ):
        self.columns, self.sql, self.slots = columns, sql, slots
        self.as_is = len(slots) == len(flat) and all(
            type(p) is Slot and p.index == i and d.bind(p.cls, flat[i], p.target) is flat[i]
            for i, p in enumerate(slots)
        )


def statement(
    d: Dialect, table: str, columns: dict[str, str], template: FilterTemplate, values: list[Any]
) -> Statement:
    """The SELECT (ending in `LIMIT <placeholder>`) for `template` filled with `values`."""
    key = (table, template, template.signature(values))
    stmt = d.statements.get(key)
    if stmt is None or stmt.columns is not columns:
        clause, slots = _compile(template.build(values)[1], columns, table, d)
        stmt = Statement(d, columns, d.select(table, clause), slots, template.flat(values))
        if len(d.statements) >= CACHE_SIZE:
            d.statements.clear()
        d.statements[key] = stmt
    return stmt


def params(
    d: Dialect, stmt: Statement, template: FilterTemplate, values: list[Any], limit: int
) -> list[Any]:
    """The statement's parameters: the values bound into its slots, then the limit."""
    flat = template.flat(values)
    if stmt.as_is:
        return [*flat, limit]
    out = _bind(d, stmt.slots, flat)
    out.append(limit)
    return out


def _bind(d: Dialect, slots: list[Any], values: list[Any]) -> list[Any]:
    bind = d.bind
    return [bind(p.cls, values[p.index], p.target) if type(p) is Slot else p for p in slots]


def shape(expr: Expr, values: list[Any]) -> tuple[Any, ...]:
    """Everything of `expr` the SQL text depends on (hashable); appends its values, in order.

    A Cond's tuple starts with its field, a Logic's with `$and`/`$or` (never a field)."""
    if type(expr) is Logic:
        return (expr.op, *[shape(e, values) for e in expr.items])
    v = expr.value
    if type(v) is list:
        values.extend(v)
        return (expr.field, expr.op, len(v), *[sql_class(x) for x in v])
    values.append(v)
    # $exists: the operand itself picks the SQL; otherwise only its class does.
    return (expr.field, expr.op, v if expr.op == "$exists" else sql_class(v))


def _compile(expr: Expr, columns: dict[str, str], table: str, d: Dialect) -> tuple[str, list[Any]]:
    params: list[Any] = []
    return _expr(expr, columns, table, d, params, [0]), params


def _expr(
    expr: Expr, columns: dict[str, str], table: str, d: Dialect, params: list[Any], n: list[int]
) -> str:
    """SQL for `expr`; `n[0]` counts the values seen so far, in `shape`'s order."""
    if isinstance(expr, Logic):
        if not expr.items:
            return d.true
        joiner = " AND " if expr.op == "$and" else " OR "
        return "(" + joiner.join(_expr(e, columns, table, d, params, n) for e in expr.items) + ")"
    first = n[0]
    n[0] += len(expr.value) if type(expr.value) is list else 1
    return _cond(expr, first, resolve(expr.field, columns, table), d, params)


def _cond(c: Cond, first: int, t: Target, d: Dialect, params: list[Any]) -> str:
    """SQL for `c`, whose value (or first list item) is value number `first`."""
    op, v = c.op, c.value
    if op == "$exists":
        return d.present(t, params) if v else "NOT " + d.present(t, params)
    if op in ("$ne", "$nin"):
        negated = Cond(c.field, "$eq" if op == "$ne" else "$in", v)
        return "NOT " + _cond(negated, first, t, d, params)
    if op == "$in":
        return _in(t, v, first, d, params)
    if v is None:
        return d.absent(t, params) if op in ("$eq", "$gte", "$lte") else d.false
    cls = target_class(sql_class(v), t)
    if not d.accepts(t, cls):
        return d.false
    return d.typed(t, cls, _SQL_OPS[op], [first], params)


def _in(t: Target, values: list[Any], first: int, d: Dialect, params: list[Any]) -> str:
    parts = []
    if any(v is None for v in values):
        parts.append(d.absent(t, params))
    by_class: dict[str, list[int]] = {}
    for i, v in enumerate(values, first):
        if v is not None:
            by_class.setdefault(target_class(sql_class(v), t), []).append(i)
    for cls, group in by_class.items():
        if d.accepts(t, cls):
            parts.append(d.typed(t, cls, "IN", group, params))
    if not parts:
        return d.false
    return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"


def _operand(
    d: Dialect, sql_op: str, cls: str, values: list[int], t: Target, params: list[Any]
) -> str:
    """`= ?` or `IN (?, ?)`, a slot per value (bound as class `cls`)."""
    params.extend(Slot(i, cls, t) for i in values)
    if sql_op == "IN":
        return "IN (" + ", ".join([d.placeholder] * len(values)) + ")"
    return f"{sql_op} {d.placeholder}"


# --- SQLite ------------------------------------------------------------------------------

_SQLITE_TYPES = {
    "number": "('integer', 'real')",
    "string": "('text')",
    "bool": "('integer')",
}
_SQLITE_JSON_TYPES = {
    "number": "('integer', 'real')",
    "string": "('text')",
    "bool": "('true', 'false')",
}


_SQLITE_AS = {"objectid": "string", "numtext": "number"}  # compared as


class SqliteDialect(Dialect):
    """SQLite: typeof() guards (a column may hold any type), json_type/json_extract for JSON.

    `other` columns (no declared type, NUMERIC affinity) are compared through `+col`, which
    has no affinity, so SQLite never converts the bound value ('5' stays text)."""

    placeholder = "?"
    other_classes = ("number", "string")

    def _json(self, t: Target, params: list[Any], fn: str) -> str:
        params.append("$" + "".join("." + p for p in t.path))
        return f"{fn}({quote(t.column)}, ?)"

    def absent(self, t: Target, params: list[Any]) -> str:
        if t.kind == "json":
            return f"coalesce({self._json(t, params, 'json_type')}, 'null') = 'null'"
        return f"{quote(t.column)} IS NULL"

    def present(self, t: Target, params: list[Any]) -> str:
        if t.kind == "json":
            return f"{self._json(t, params, 'json_type')} IS NOT NULL"
        return f"{quote(t.column)} IS NOT NULL"

    def bind(self, cls: str, value: Any, t: Target) -> Any:
        if cls == "bool":
            return int(value)
        if cls == "numtext":
            return bind_numtext(value)
        # a "string" slot holds a str or an ObjectId (compared as its hex text)
        return str(value) if cls == "string" else value

    def accepts(self, t: Target, cls: str) -> bool:
        return super().accepts(t, _SQLITE_AS.get(cls, cls))

    def typed(self, t: Target, cls: str, sql_op: str, values: list[int], params: list[Any]) -> str:
        cls = "string" if cls == "objectid" else cls
        if t.kind == "json":
            guard = f"coalesce({self._json(t, params, 'json_type')}, '') IN "
            guard += _SQLITE_JSON_TYPES[cls]
            value = self._json(t, params, "json_extract")
        else:
            col = quote(t.column)
            guard = f"typeof({col}) IN {_SQLITE_TYPES[_SQLITE_AS.get(cls, cls)]}"
            value = "+" + col if t.kind == "other" else col
        return f"({guard} AND {value} {_operand(self, sql_op, cls, values, t, params)})"


def sqlite_kind(declared: str) -> str:
    """A column's kind from its declared type (SQLite's affinity rules, plus BOOL and JSON)."""
    d = (declared or "").upper()
    if "BOOL" in d:
        return "bool"
    if "JSON" in d:
        return "json"
    if "INT" in d:
        return "number"
    if any(s in d for s in ("CHAR", "CLOB", "TEXT")):
        return "string"
    if any(s in d for s in ("REAL", "FLOA", "DOUB")):
        return "number"
    return "other"


# --- PostgreSQL --------------------------------------------------------------------------

_PG_NUMBER = {20, 21, 23, 26, 700, 701, 1700}  # int8 int2 int4 oid float4 float8 numeric
_PG_TEXT = {25, 1042, 1043, 19}  # text bpchar varchar name
_PG_JSON = {114: "json", 3802: "jsonb"}
_PG_JSON_TYPES = {"number": "number", "string": "string", "bool": "boolean"}


def postgres_kind(oid: int) -> str:
    if oid in _PG_NUMBER:
        return "number"
    if oid in _PG_TEXT:
        return "string"
    if oid == 16:
        return "bool"
    if oid in _PG_JSON:
        return "json" if oid == 3802 else "json:json"
    return "other"


class PostgresDialect(Dialect):
    """PostgreSQL: typed comparisons on plain columns (index-friendly), jsonb for JSON.

    Ordering of strings uses COLLATE "C" (byte order, as MongoDB and SQLite); `other`
    columns (uuid, timestamps, ...) compare through their text form."""

    placeholder = "%s"

    def _x(self, t: Target, params: list[Any]) -> str:
        col = quote(t.column)
        if t.kind == "json:json":
            col += "::jsonb"
        if not t.path:
            return col
        params.append(list(t.path))
        return f"({col} #> %s::text[])"

    def accepts(self, t: Target, cls: str) -> bool:
        cls = "string" if cls == "objectid" else "number" if cls == "numtext" else cls
        if t.kind == "json:json":
            return cls in ("number", "string", "bool")
        return super().accepts(t, cls)

    def absent(self, t: Target, params: list[Any]) -> str:
        if t.kind.startswith("json"):
            return f"coalesce(jsonb_typeof({self._x(t, params)}), 'null') = 'null'"
        return f"{quote(t.column)} IS NULL"

    def present(self, t: Target, params: list[Any]) -> str:
        if t.kind.startswith("json"):
            return f"{self._x(t, params)} IS NOT NULL"
        return f"{quote(t.column)} IS NOT NULL"

    def bind(self, cls: str, value: Any, t: Target) -> Any:
        if cls == "numtext":
            return bind_numtext(value)
        if t.kind.startswith("json") and cls != "string":
            from psycopg.types.json import Jsonb

            return Jsonb(value)
        return str(value) if cls == "string" else value  # a str, or an ObjectId as hex text

    def typed(self, t: Target, cls: str, sql_op: str, values: list[int], params: list[Any]) -> str:
        cls = "string" if cls == "objectid" else cls
        collate = ' COLLATE "C"' if sql_op not in ("=", "IN") else ""
        if t.kind.startswith("json"):
            x = self._x(t, params)
            guard = f"coalesce(jsonb_typeof({x}), '') = '{_PG_JSON_TYPES[cls]}'"
            value = f"({self._x(t, params)} #>> '{{}}')" if cls == "string" else self._x(t, params)
        else:
            col = quote(t.column)
            guard = f"{col} IS NOT NULL"
            value = f"{col}::text" if t.kind == "other" else col
        if cls == "string":
            value += collate
        return f"({guard} AND {value} {_operand(self, sql_op, cls, values, t, params)})"
