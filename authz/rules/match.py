"""`match`: compare two values of a declared type (docs/rules.md, match).

Three outcomes: pass, fail (the comparison is false) and error (a side does not resolve or has
the wrong type). Literals are type-checked and normalised at load.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from authz.config.schema import MatchRule
from authz.observability.masking import sensitive_reference
from authz.rules.base import Context, Failure, Rule
from authz.rules.compiling import CompileContext, CompileFn
from authz.rules.functions import parse_date
from authz.rules.refs import compile_structure, compile_value, is_reference
from authz.values import MISSING, Getter, constant, is_constant

EVALS_BY_TYPE = {
    "string": ("==", "!=", "in", "notIn"),
    "number": ("==", "!=", "<", "<=", ">", ">=", "in", "notIn"),
    "bool": ("==", "!="),
    "date": ("==", "!=", "<", "<=", ">", ">="),
}
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "in": lambda a, b: a in b,
    "notIn": lambda a, b: a not in b,
}


class _Wrong:
    __slots__ = ()


WRONG: Any = _Wrong()  # a value of the wrong type for the declared `type`
_PER_REQUEST: Any = object()  # Match.f2_value when f2 is not a literal


def _string(v: Any) -> Any:
    return v if type(v) is str else WRONG


def _number(v: Any) -> Any:
    return v if (type(v) is int or type(v) is float) else WRONG


def _bool(v: Any) -> Any:
    return v if type(v) is bool else WRONG


def _date(v: Any) -> Any:
    d = parse_date(v)
    return WRONG if d is None else d


# The types whose coercion only tests the value's exact type (no bool for a number).
_EXACT: dict[str, tuple[type, ...]] = {"string": (str,), "number": (int, float), "bool": (bool,)}
COERCE: dict[str, Callable[[Any], Any]] = {
    "string": _string,
    "number": _number,
    "bool": _bool,
    "date": _date,
}


class Match(Rule):
    kind = "match"
    sync = True
    __slots__ = (
        "coerce", "exact", "f1", "f1_text", "f2", "f2_list", "f2_text", "f2_value", "masked",
        "op", "op_text", "type",
    )  # fmt: skip
    coerce: Callable[[Any], Any]  # to the declared type, or WRONG
    exact: tuple[type, ...] | None  # the types that need no coercion
    f1: Getter
    f1_text: str
    f2: Getter
    f2_list: bool  # in / notIn
    f2_text: str
    f2_value: Any  # f2 coerced once at load when it is a literal, else _PER_REQUEST
    masked: str
    op: Callable[[Any, Any], bool]
    op_text: str
    type: str

    async def evaluate(self, ctx: Context) -> Failure | None:
        return self.evaluate_now(ctx)

    def evaluate_now(self, ctx: Context) -> Failure | None:
        args = ctx.args
        a = self.f1(args)
        if a is MISSING:
            return self.fail(f"f1 {self.f1_text} does not resolve", error=True)
        if self.exact is None:
            a = self.coerce(a)
        elif type(a) not in self.exact:  # what coerce would test, without a call
            a = WRONG
        if a is WRONG:
            return self.fail(f"f1 {self.f1_text} is not a {self.type}", error=True)
        b = self.f2_value
        if b is _PER_REQUEST:
            b = self._f2(args)
            if type(b) is Failure:
                return b
        if ctx.trace is not None:
            ctx.detail = self.masked or f"{a!r} {self.op_text} {b!r}"
        if self.op(a, b):
            return None
        if self.masked:
            return self.fail(f"{self.masked} is false (values not shown)")
        return self.fail(f"{a!r} {self.op_text} {b!r} is false")

    def _f2(self, args: dict[str, Any]) -> Any:
        """The coerced f2 of this request, or the Failure when it has none."""
        b = self.f2(args)
        if b is MISSING:
            return self.fail(f"f2 {self.f2_text} does not resolve", error=True)
        if not self.f2_list:
            b = self.coerce(b)
            if b is WRONG:
                return self.fail(f"f2 {self.f2_text} is not a {self.type}", error=True)
            return b
        if type(b) is not list:
            return self.fail(f"f2 {self.f2_text} is not a list", error=True)
        coerce = self.coerce
        items = [coerce(x) for x in b]
        if any(x is WRONG for x in items):
            return self.fail(f"f2 {self.f2_text} has an item that is not a {self.type}", True)
        return items


def compile_match(model: MatchRule, cc: CompileContext, path: str) -> Rule:
    rule = Match(path, model.error)
    rule.type, rule.op_text, rule.op = model.type, model.eval, _OPS[model.eval]
    rule.coerce = COERCE[model.type]
    rule.exact = _EXACT.get(model.type)
    rule.f2_list = model.eval in ("in", "notIn")
    if model.eval not in EVALS_BY_TYPE[model.type]:
        cc.error(
            f"{path}.eval",
            f"operator '{model.eval}' is not allowed for type '{model.type}' "
            f"(allowed: {' '.join(EVALS_BY_TYPE[model.type])})",
        )
    rule.f1, rule.f1_text = _side(model.f1, model.type, cc, f"{path}.f1"), _text(model.f1)
    if rule.f2_list:
        rule.f2 = _list_side(model.f2, model.type, cc, f"{path}.f2")
    else:
        rule.f2 = _side(model.f2, model.type, cc, f"{path}.f2")
    rule.f2_text = _text(model.f2)
    secrets = cc.config._interpolated if cc.config is not None else frozenset[str]()
    rule.masked = _masked(model.f1, model.f2, model.eval, secrets)
    rule.f2_value = _PER_REQUEST
    if is_constant(rule.f2):  # coercion is pure: a literal f2 is coerced once, here
        fixed = rule._f2({})
        if type(fixed) is not Failure:
            rule.f2_value = fixed
    return rule


def _masked(f1: Any, f2: Any, op: str, secrets: frozenset[str] = frozenset()) -> str:
    """When a side reads a secret (a token, an API key header, a password field...) or is a
    literal filled from the environment (`"${INTERNAL_KEY}"`), failure reasons and traces show
    the references, never the values (nor the literal compared with them); else ""."""
    sides = (f1, *(f2 if isinstance(f2, list) else [f2]))
    refs = [x for x in sides if is_reference(x)]
    configured = any(isinstance(x, str) and not is_reference(x) and x in secrets for x in sides)
    if not configured and not any(sensitive_reference(r) for r in refs):
        return ""

    def side(raw: Any) -> str:
        if isinstance(raw, list):
            return "[" + ", ".join(side(x) for x in raw) + "]"
        return raw if is_reference(raw) else "<literal>"

    return f"{side(f1)} {op} {side(f2)}"


def _side(raw: Any, type_: str, cc: CompileContext, path: str) -> Getter:
    getter = compile_value(raw, cc, path)
    if is_constant(getter) and not is_reference(raw):
        _check_literal(raw, type_, cc, path)
    return getter


def _list_side(raw: Any, type_: str, cc: CompileContext, path: str) -> Getter:
    if is_reference(raw):
        return compile_value(raw, cc, path)
    if not isinstance(raw, list):
        cc.error(path, f"must be a list (or a reference to one), got {type(raw).__name__}")
        return constant(MISSING)
    for i, item in enumerate(raw):
        if not is_reference(item):
            _check_literal(item, type_, cc, f"{path}[{i}]")
    return compile_structure(raw, cc, path)


def _check_literal(value: Any, type_: str, cc: CompileContext, path: str) -> None:
    if COERCE[type_](value) is WRONG:
        cc.error(path, f"literal {value!r} is not a {type_}")


def _text(raw: Any) -> str:
    return raw if isinstance(raw, str) and is_reference(raw) else repr(raw)


# The kinds this family compiles (the table in rules/compiler.py).
COMPILERS: dict[str, CompileFn] = {
    "match": compile_match,
}
