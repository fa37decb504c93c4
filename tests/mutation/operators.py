"""The mutants of one module: one small change each, made on the AST and written back as source.

Operators (what a test of a security check must notice): comparison flips (`<`/`<=`,
`>`/`>=`, `==`/`!=`), `and`/`or`, a removed `not`, an integer constant off by one, a deleted
`raise` (-> `pass`) or `return` (-> `return None`, an early bare `return` -> `pass`), and
operator tables: `operator.lt` -> `operator.le` and friends, neighbouring entries swapped.
Decorated functions are mutated like any other; annotations, docstrings and
`if TYPE_CHECKING:` blocks are not.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_COMPARE_FLIPS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
}  # fmt: skip
_OPERATOR_PARTNERS = {"lt": "le", "le": "lt", "gt": "ge", "ge": "gt", "eq": "ne", "ne": "eq"}
_SKIPPED_FIELDS = {"annotation", "returns", "decorator_list", "type_comment", "type_params"}


@dataclass(frozen=True)
class Mutant:
    path: str  # relative to the repository root, e.g. authz/rules/match.py
    line: int
    scope: str  # the enclosing class/function, "<module>" at the top level
    before: str  # the changed code, unparsed (first line)
    after: str
    source: str  # the whole mutated module
    nth: int = 1  # the same change in the same scope: the how-manyth in source order

    @property
    def key(self) -> str:
        """What the equivalent-mutants file records (stable when unrelated lines move)."""
        again = f" #{self.nth}" if self.nth > 1 else ""
        return f"{self.path} {self.scope}: `{self.before}` -> `{self.after}`{again}"

    def __str__(self) -> str:
        return f"{self.path}:{self.line} {self.scope}: `{self.before}` -> `{self.after}`"


class _Slot:
    """Where a node sits in its parent: parent.field, or parent.field[index]."""

    def __init__(self, parent: Any, field: str, index: int | None) -> None:
        self.parent, self.field, self.index = parent, field, index

    def get(self) -> Any:
        value = getattr(self.parent, self.field)
        return value if self.index is None else value[self.index]

    def put(self, node: Any) -> None:
        if self.index is None:
            setattr(self.parent, self.field, node)
        else:
            getattr(self.parent, self.field)[self.index] = node

    def ends_a_function(self) -> bool:
        """The last statement of a function body (a bare `return` there changes nothing)."""
        body = getattr(self.parent, self.field)
        return isinstance(self.parent, ast.FunctionDef | ast.AsyncFunctionDef) and (
            self.field == "body" and self.index == len(body) - 1
        )


# A change: (the node shown before, the node that replaces it) applied at a slot.
Change = tuple[ast.AST, ast.AST]


def _changes(node: ast.AST, slot: _Slot) -> Iterator[Change]:
    """Whole-node replacements this node allows (its children are visited separately)."""
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            flip = _COMPARE_FLIPS.get(type(op))
            if flip is not None:
                new = copy.copy(node)
                new.ops = [*node.ops[:i], flip(), *node.ops[i + 1 :]]
                yield node, new
    elif isinstance(node, ast.BoolOp):
        other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        yield node, ast.BoolOp(op=other, values=node.values)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield node, node.operand
    elif isinstance(node, ast.Constant) and type(node.value) is int:
        yield node, ast.Constant(node.value + 1)
    elif isinstance(node, ast.Raise):
        yield node, ast.Pass()
    elif isinstance(node, ast.Return):
        if node.value is not None and not (
            isinstance(node.value, ast.Constant) and node.value.value is None
        ):
            yield node, ast.Return(value=ast.Constant(None))
        elif not slot.ends_a_function():
            yield node, ast.Pass()
    elif isinstance(node, ast.Dict):
        yield from _table_changes(node)


def _table_changes(node: ast.Dict) -> Iterator[Change]:
    """Operator tables: a dict whose values are all functions (names, attributes, lambdas)."""
    values = node.values
    if len(values) < 2 or not all(
        isinstance(v, ast.Name | ast.Attribute | ast.Lambda) for v in values
    ):
        return
    for i, v in enumerate(values):
        if (
            isinstance(v, ast.Attribute)
            and isinstance(v.value, ast.Name)
            and v.value.id == "operator"
            and v.attr in _OPERATOR_PARTNERS
        ):
            new_values = list(values)
            new_values[i] = ast.Attribute(value=v.value, attr=_OPERATOR_PARTNERS[v.attr])
            yield _entries(node, [i]), _entries(ast.Dict(keys=node.keys, values=new_values), [i])
    for i in range(len(values) - 1):
        if ast.dump(values[i]) == ast.dump(values[i + 1]):
            continue  # one function under two names: a swap changes nothing
        swapped = list(values)
        swapped[i], swapped[i + 1] = values[i + 1], values[i]
        pair = [i, i + 1]
        yield _entries(node, pair), _entries(ast.Dict(keys=node.keys, values=swapped), pair)


class _Entries(ast.Dict):
    """A table shown as its changed entries only (the whole dict is what is replaced)."""

    shown: ast.AST


def _entries(table: ast.Dict, indexes: list[int]) -> ast.AST:
    new = _Entries(keys=table.keys, values=table.values)
    new.shown = ast.Dict(
        keys=[table.keys[i] for i in indexes], values=[table.values[i] for i in indexes]
    )
    return ast.copy_location(new, table)


def _walk(node: ast.AST, scope: list[str], slot: _Slot) -> Iterator[tuple[_Slot, str, Change]]:
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        return
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
        return  # a docstring
    for change in _changes(node, slot):
        yield slot, ".".join(scope) or "<module>", change
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        scope = [*scope, node.name]
    for field, value in ast.iter_fields(node):
        if field in _SKIPPED_FIELDS:
            continue
        if isinstance(value, list):
            for i, child in enumerate(value):
                if isinstance(child, ast.AST):
                    yield from _walk(child, scope, _Slot(node, field, i))
        elif isinstance(value, ast.AST):
            yield from _walk(value, scope, _Slot(node, field, None))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def mutants(path: str, source: str) -> Iterator[Mutant]:
    """Every mutant of one module's source, in source order."""
    tree = ast.parse(source)
    root = _Slot(ast.Module(body=[tree], type_ignores=[]), "body", 0)
    seen: dict[tuple[str, str, str], int] = {}
    for slot, scope, (old, new) in list(_walk(tree, [], root)):
        original = slot.get()
        real_new = ast.Dict(keys=new.keys, values=new.values) if isinstance(new, _Entries) else new
        slot.put(ast.copy_location(real_new, original))
        try:
            text = ast.unparse(ast.fix_missing_locations(tree))
        finally:
            slot.put(original)
        line = getattr(old, "lineno", 0)
        before, after = _show(old), _show(new)
        nth = seen[scope, before, after] = seen.get((scope, before, after), 0) + 1
        yield Mutant(path, line, scope, before, after, text + "\n", nth)


def _show(node: ast.AST) -> str:
    shown = node.shown if isinstance(node, _Entries) else node
    text = ast.unparse(shown).splitlines()[0]
    return text if len(text) <= 100 else text[:97] + "..."
