"""`query`: run a Mongo-style `find` on a declared datastore (docs/rules.md, query).

The filter's structure (fields, operators, `$and`/`$or`) is fixed at load; references fill
*value slots* only, and a value taken from a reference must be a scalar (or, for `$in`/`$nin`,
a list of scalars). So a request value such as `{"$ne": null}` fails the rule and never
reaches the datastore (NoSQL injection: docs/rules.md, differences from Space Cloud).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from authz.cache import MISS, ResultCache, freeze
from authz.config.schema import QueryRule
from authz.datastores.base import Datastore
from authz.datastores.filters import (
    FIELD,
    LIST_OPERATORS,
    LOGICAL,
    MATCH_ALL,
    OPERATORS,
    Cond,
    Expr,
    FilterError,
    Logic,
    check_collection,
    check_field,
    value_problem,
)
from authz.datastores.template import FilterTemplate, Hole
from authz.errors import DependencyError
from authz.rules.base import Context, Failure, Rule, run
from authz.rules.compiling import CompileContext, CompileFn
from authz.rules.refs import compile_value, is_reference
from authz.values import MISSING

Fill = Callable[[dict[str, Any]], Any]
# args keys a rule may not overwrite with results: what the request and the token say
RESERVED = frozenset(
    ("auth", "token", "params", "query", "headers", "pathParams", "method", "path", "service",
     "endpoint")
)  # fmt: skip


class SlotError(Exception):
    """A value slot could not be filled: reference missing, or a value of the wrong shape."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class Query(Rule):
    kind = "query"
    __slots__ = ("alias", "cache", "clause", "col", "filter", "limit", "set_store")
    alias: str
    cache: ResultCache | None
    clause: Rule | None
    col: str
    filter: FilterTemplate
    limit: int
    set_store: Callable[[dict[str, Any], Any], None]

    def children(self) -> tuple[Rule, ...]:
        return (self.clause,) if self.clause is not None else ()

    async def evaluate(self, ctx: Context) -> Failure | None:
        try:
            values = self.filter.values(ctx.args)
        except SlotError as exc:
            return self.fail(f"{exc.path}: {exc.reason}", error=True)
        if self.cache is None:  # not through a helper: one coroutine fewer per query
            store = datastore(ctx, self.alias)
            docs = await store.find_template(self.col, self.filter, values, self.limit)
        else:
            docs = await self._cached(ctx, values)
        self.set_store(ctx.args, docs)
        if ctx.trace is not None:
            ctx.detail = f"{self.alias}.{self.col}: {len(docs)} document(s)"
        if self.clause is not None:
            failure = await run(self.clause, ctx)
            return None if failure is None else self.own(failure)
        if docs:
            return None
        if ctx.trace is not None:  # explaining: say when a value can never match its column
            why = self._mismatch(ctx, values)
            if why:
                return self.fail(f"no document matched: {why}")
        return self.fail("no document matched")

    def _mismatch(self, ctx: Context, values: list[Any]) -> str | None:
        from authz.datastores.schema import mismatch

        return mismatch(datastore(ctx, self.alias), self.col, self.filter, values)

    async def _cached(self, ctx: Context, values: list[Any]) -> list[dict[str, Any]]:
        cache = self.cache
        assert cache is not None  # only called for a rule with a cache
        key = freeze(values)  # the template is the rule's: its values say which filter
        docs: list[dict[str, Any]] = cache.get(key)
        count_cache(ctx, "query", docs is not MISS)
        if docs is MISS:
            store = datastore(ctx, self.alias)
            docs = await store.find_template(self.col, self.filter, values, self.limit)
            cache.put(key, docs)
        return docs


def count_cache(ctx: Context, name: str, hit: bool) -> None:
    """Cache hit/miss metrics, when the runtime has metrics (the server; not the CLI)."""
    metrics = ctx.runtime.metrics if ctx.runtime is not None else None
    if metrics is not None:
        cache = metrics.cache(name)
        cache.hit() if hit else cache.miss()


def datastore(ctx: Context, alias: str) -> Datastore:
    store = ctx.runtime.datastores.get(alias) if ctx.runtime is not None else None
    if store is None:
        raise DependencyError(f"datastore {alias} is not open")
    return store


def compile_query(model: QueryRule, cc: CompileContext, path: str) -> Rule:
    rule = Query(path, model.error)
    rule.alias, rule.col, rule.limit = model.db, model.col, model.limit
    _check_alias(model.db, cc, f"{path}.db")
    try:
        check_collection(model.col, f"{path}.col")
    except FilterError as exc:
        cc.error(exc.path, exc.message)
    rule.filter = compile_filter(model.find, cc, f"{path}.find")
    rule.set_store = compile_store(model.store, cc, f"{path}.store")
    rule.clause = cc.compile(model.clause, f"{path}.clause") if model.clause else None
    rule.cache = (
        ResultCache(model.cache.ttl, model.cache.size, model.cache.maxBytes)
        if model.cache
        else None
    )
    return rule


def _check_alias(alias: str, cc: CompileContext, path: str) -> None:
    if cc.config is None:
        return  # compiled on its own (tests); the authorizer always passes the config
    declared = getattr(cc.config, "databases", None) or {}
    if alias not in declared:
        known = ", ".join(sorted(declared)) or "none declared"
        cc.error(path, f"unknown database alias {alias!r} (databases: {known})")


# --- the filter --------------------------------------------------------------------------


def compile_filter(raw: Any, cc: CompileContext, path: str) -> FilterTemplate:
    """Compile a `find` object into a FilterTemplate: the structure (fields, operators) is checked
    here, once, and each value as it fills its slot per request; the datastore never parses
    the filter per request (see datastores/template.py)."""
    slots: list[Fill] = []
    ops: list[str] = []
    filled, expr = _compile_object(raw, cc, path, slots, ops)
    return FilterTemplate(filled, expr, slots, ops)


def _compile_object(
    raw: Any, cc: CompileContext, path: str, slots: list[Fill], ops: list[str]
) -> tuple[dict[str, Any], Expr]:
    """The filter object with holes and its expression (as `filters.parse` would make it);
    `slots`/`ops` collect each hole's fill function and operator, in expression order."""
    if not isinstance(raw, dict):
        cc.error(path, "must be an object")
        return {}, MATCH_ALL
    filled: dict[str, Any] = {}
    exprs: list[Expr] = []
    for key, value in raw.items():
        p = f"{path}.{key}"
        if key in LOGICAL:
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(v, dict) for v in value)
            ):
                cc.error(p, f"{key} takes a non-empty list of filter objects")
                continue
            subs = [_compile_object(v, cc, f"{p}[{i}]", slots, ops) for i, v in enumerate(value)]
            filled[key] = [f for f, _ in subs]
            exprs.append(Logic(key, tuple(e for _, e in subs)))
        elif isinstance(key, str) and key.startswith("$"):
            cc.error(p, f"unknown operator {key!r} (allowed: {_allowed()})")
        else:
            try:
                check_field(key, p)
            except FilterError as exc:
                cc.error(exc.path, exc.message)
                continue
            filled[key] = _compile_field(key, value, cc, p, slots, ops, exprs)
    return filled, exprs[0] if len(exprs) == 1 else Logic("$and", tuple(exprs))


def _compile_field(
    field: str,
    value: Any,
    cc: CompileContext,
    path: str,
    slots: list[Fill],
    ops: list[str],
    exprs: list[Expr],
) -> Any:
    """One `field: value` or `field: {op: value, ...}` member: its holes and conditions."""

    def hole(raw: Any, op: str, p: str) -> Hole:
        slots.append(_compile_slot(raw, op, cc, p))
        ops.append(op)
        h = Hole(len(slots) - 1, slot_hint(raw))
        exprs.append(Cond(field, op, h))
        return h

    if isinstance(value, list):
        cc.error(path, "a list is not a value here; use {$in: [...]}")
        return None
    if not isinstance(value, dict):
        return hole(value, "$eq", path)
    if not value:
        cc.error(path, "an empty operator object")
    operators: dict[str, Any] = {}
    for op, operand in value.items():
        if not isinstance(op, str) or not op.startswith("$"):
            cc.error(path, "objects are not values; use dotted field names (a.b)")
            continue
        if op not in OPERATORS:
            cc.error(f"{path}.{op}", f"unknown operator {op!r} (allowed: {_allowed()})")
            continue
        operators[op] = hole(operand, op, f"{path}.{op}")
    return operators


def _compile_slot(raw: Any, op: str, cc: CompileContext, path: str) -> Fill:
    """One operand: a literal (checked now) or references (checked per request)."""
    if not _has_reference(raw):
        problem = value_problem(op, raw)
        if problem:
            cc.error(path, problem)
        return lambda args: raw
    if op in LIST_OPERATORS and isinstance(raw, list):
        items = tuple(_compile_slot(v, "$eq", cc, f"{path}[{i}]") for i, v in enumerate(raw))
        return _checked(lambda args: [f(args) for f in items], op, path)
    return _checked(compile_value(raw, cc, path), op, path)


# Request parts whose values are always strings (a canonical decimal one is `numtext`).
_STRING_SOURCES = ("args.pathParams.", "args.query.", "args.headers.")


def slot_hint(raw: Any) -> frozenset[str] | None:
    """The classes a slot's values can have, when the config says; None: unknown."""
    from authz.datastores.sql import sql_class

    if isinstance(raw, list):
        hints = [slot_hint(v) for v in raw]
        if any(h is None for h in hints):
            return None
        return frozenset().union(*hints)  # type: ignore[arg-type]
    if not is_reference(raw):
        return frozenset((sql_class(raw),))
    if raw.startswith(_STRING_SOURCES):
        return frozenset(("string", "numtext"))
    if raw.startswith("utils.number("):
        return frozenset(("number",))
    return None


def _has_reference(raw: Any) -> bool:
    if isinstance(raw, list):
        return any(is_reference(v) for v in raw)
    return is_reference(raw)


def _checked(getter: Fill, op: str, path: str) -> Fill:
    """Resolve a reference and refuse any value that does not fit the slot."""
    scalar = op not in LIST_OPERATORS and op != "$exists"

    def fill(args: dict[str, Any]) -> Any:
        value = getter(args)
        if scalar and type(value) is str:
            return value  # any string fits a scalar slot (the common case: ids)
        if value is MISSING:
            raise SlotError(path, "reference does not resolve")
        problem = value_problem(op, value)
        if problem:
            raise SlotError(path, problem)
        return value

    return fill


def _allowed() -> str:
    return " ".join(sorted(OPERATORS | set(LOGICAL)))


# --- where results go --------------------------------------------------------------------


def compile_store(raw: str, cc: CompileContext, path: str) -> Callable[[dict[str, Any], Any], None]:
    """`args.result` or `args.a.b`: a setter writing a result into args (parents created)."""
    parts = raw.split(".") if isinstance(raw, str) else []
    if len(parts) < 2 or parts[0] != "args" or not FIELD.fullmatch(".".join(parts[1:])):
        cc.error(path, f"must be a path args.<name>[.<name>...], got {raw!r}")
        return lambda args, value: None
    if parts[1] in RESERVED:
        cc.error(path, f"cannot store results under args.{parts[1]} (request data)")
    *parents, last = parts[1:]

    def store(args: dict[str, Any], value: Any) -> None:
        obj = args
        for key in parents:
            nxt = obj.get(key)
            if not isinstance(nxt, dict):
                nxt = obj[key] = {}
            obj = nxt
        obj[last] = value

    return store


# The kinds this family compiles (the table in rules/compiler.py).
COMPILERS: dict[str, CompileFn] = {
    "query": compile_query,
}
