"""Do the tables and columns the `query` rules name exist, with types their values can match?

A misspelled table (`col: postz`) or column validates (the config cannot know the database)
and then answers 503 or never matches. `authz validate --connect` runs these checks once and
fails on a problem; the server runs them in the background and reports the problems in
/readyz without flipping readiness (an endpoint that needs a missing table answers 503;
restarting the pod would not help). `--explain` uses `mismatch` to say why a query whose
values cannot match their columns found nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from authz.datastores.filters import Cond, Expr, Logic
from authz.datastores.sql import Target, resolve, sql_class, target_class
from authz.datastores.template import FilterTemplate
from authz.errors import DependencyError


@dataclass(frozen=True, slots=True)
class Use:
    """One `query` rule: where it is, which datastore and table, its compiled filter."""

    path: str
    alias: str
    col: str
    template: FilterTemplate


def query_uses(rules: Iterable[Any]) -> list[Use]:
    """Every `query` rule under `rules` (compiled rule trees), in config order."""
    uses: list[Use] = []
    stack = [r for r in rules if r is not None][::-1]
    while stack:
        rule = stack.pop()
        if rule.kind == "query":
            uses.append(Use(rule.path, rule.alias, rule.col, rule.filter))
        stack.extend(reversed(rule.children()))
    return uses


async def check_uses(uses: list[Use], stores: dict[str, Any]) -> dict[str, list[str]]:
    """Problems per datastore alias checked (an empty list: all good). A datastore that
    cannot be reached is left out (its ping reports it); each table is read once."""
    problems: dict[str, list[str]] = {}
    tables: dict[tuple[str, str], dict[str, str] | str | None] = {}
    unreachable: set[str] = set()
    for use in uses:
        store = stores.get(use.alias)
        if store is None:
            continue
        key = (use.alias, use.col)
        if key not in tables:
            tables[key] = await _describe(store, use.col)
        columns = tables[key]
        if columns == "unreachable":
            unreachable.add(use.alias)
            continue
        found = problems.setdefault(use.alias, [])
        if isinstance(columns, str):
            found.append(f"{use.path}.col: {columns}")
        elif columns is not None:
            found.extend(_filter_problems(use, columns, store.dialect))
    return {alias: p for alias, p in problems.items() if alias not in unreachable}


async def _describe(store: Any, col: str) -> dict[str, str] | str | None:
    """The columns; None when schemaless; a problem text; or "unreachable"."""
    try:
        columns: dict[str, str] | None = await store.describe(col)
        return columns
    except DependencyError as exc:
        if not await store.ping():
            return "unreachable"
        detail = str(exc).removeprefix(f"datastore {store.alias}: ")
        if any(s in detail for s in ("no table", "no collection", "does not exist")):
            return f"no table {col!r} in the {store.type} datastore {store.alias}"
        return f"cannot read table {col!r} of datastore {store.alias}: {detail}"


def _filter_problems(use: Use, columns: dict[str, str], dialect: Any) -> Iterator[str]:
    for cond in _conds(use.template.expr):
        where = f"{use.path}.find.{cond.field}"
        try:
            target = resolve(cond.field, columns, use.col)
        except DependencyError as exc:
            yield f"{where}: {exc} (columns: {', '.join(sorted(columns))})"
            continue
        problem = _type_problem(cond, target, dialect, use.col)
        if problem:
            yield f"{where}: {problem}"


def _conds(expr: Expr) -> Iterator[Cond]:
    if isinstance(expr, Logic):
        for item in expr.items:
            yield from _conds(item)
    else:
        yield expr


def _type_problem(cond: Cond, t: Target, dialect: Any, table: str) -> str | None:
    hint = getattr(cond.value, "hint", None)
    if cond.op == "$exists" or not hint:
        return None
    classes = hint - {"null"}
    if not classes or any(dialect.accepts(t, target_class(c, t)) for c in classes):
        return None
    what = " or ".join(sorted(_NAMES.get(c, c) for c in classes))
    return f"{what} value never matches column {table}.{t.column} ({_kind(t)})"


def mismatch(store: Any, col: str, template: FilterTemplate, values: list[Any]) -> str | None:
    """Why this request's values cannot match their columns (for --explain), or None."""
    columns = store.known_columns(col)
    dialect = store.dialect
    if not columns or dialect is None:
        return None
    for cond in _conds(template.expr):
        value = values[cond.value.index]
        if cond.op == "$exists" or value is None or type(value) is list:
            continue
        try:
            t = resolve(cond.field, columns, col)
        except DependencyError:
            return None
        if not dialect.accepts(t, target_class(sql_class(value), t)):
            shown = _NAMES.get(sql_class(value), sql_class(value))
            return (
                f"find.{cond.field}: a {shown} value never matches column {t.column} ({_kind(t)})"
            )
    return None


_NAMES = {"numtext": "numeric string", "string": "string", "objectid": "ObjectId"}


def _kind(t: Target) -> str:
    return "JSON" if t.kind.startswith("json") else t.kind
