"""Random rule trees and random request variables: the compiled evaluator agrees with a
reference interpreter written here straight from docs/rules.md (pass / fail / error,
error-inside-or, config errors for literals of the wrong type)."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from authz.config.schema import AnyRule
from authz.errors import ConfigError
from authz.rules.base import Context
from authz.rules.compiler import compile_rule
from authz.rules.compiling import CompileContext
from tests.helpers import examples

EVALS = {
    "string": ["==", "!=", "in", "notIn"],
    "number": ["==", "!=", "<", "<=", ">", ">=", "in", "notIn"],
    "bool": ["==", "!="],
    "date": ["==", "!=", "<", "<=", ">", ">="],
}
ALL_EVALS = ["==", "!=", "<", "<=", ">", ">=", "in", "notIn"]
DATES = ["2024-01-01", "2024-01-01T00:00:00Z", "2024-01-01T01:00:00+01:00", "2023-12-31",
         "2024-06-30T12:30:00-02:00", "2024-13-01", "not a date", "2024-01-01X00:00"]  # fmt: skip
KEYS = ["a", "b", "c", "0", "1"]

# --- random request variables -------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False, allow_infinity=False),
    st.sampled_from(["x", "y", "", "args.auth.a", "utils.now()", "1", *DATES]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=8,
)
request_args = st.fixed_dictionaries(
    {
        "auth": st.dictionaries(st.sampled_from(KEYS), values, max_size=4),
        "params": st.dictionaries(st.sampled_from(KEYS), values, max_size=4),
        "query": st.dictionaries(st.sampled_from(KEYS), st.sampled_from(["x", "1"]), max_size=2),
    }
)

# --- random rules ---------------------------------------------------------------------------

references = st.builds(
    lambda root, path: "args." + ".".join([root, *path]),
    st.sampled_from(["auth", "params", "query", "nothere"]),
    st.lists(st.sampled_from(KEYS), min_size=1, max_size=3),
)
utils_calls = st.builds(
    lambda fn, ref: f"utils.{fn}({ref})", st.sampled_from(["exists", "length"]), references
)
literals = st.one_of(scalars, st.lists(scalars, max_size=3))


def side(type_: str) -> st.SearchStrategy[Any]:
    fitting = {
        "string": st.sampled_from(["x", "y", ""]),
        "number": st.one_of(st.integers(-5, 5), st.sampled_from([1.0, 2.5])),
        "bool": st.booleans(),
        "date": st.sampled_from(DATES[:5]),
    }[type_]
    # mostly values that fit; sometimes anything (a literal of the wrong type is a config error)
    return st.one_of(references, utils_calls, fitting, fitting, literals)


@st.composite
def matches(draw: st.DrawFn) -> dict[str, Any]:
    type_ = draw(st.sampled_from(list(EVALS)))
    op = draw(
        st.sampled_from(EVALS[type_]) if draw(st.integers(0, 9)) else st.sampled_from(ALL_EVALS)
    )
    f1 = draw(side(type_))
    if op in ("in", "notIn") and draw(st.booleans()):
        f2: Any = draw(st.lists(side(type_), max_size=3))
    else:
        f2 = draw(side(type_))
    return {"rule": "match", "type": type_, "eval": op, "f1": f1, "f2": f2}


leaves = st.one_of(
    st.just({"rule": "allow"}),
    st.just({"rule": "deny"}),
    st.just({"rule": "authenticated"}),
    matches(),
    matches(),
)
rules = st.recursive(
    leaves,
    lambda inner: st.builds(
        lambda kind, clauses: {"rule": kind, "clauses": clauses},
        st.sampled_from(["and", "or"]),
        st.lists(inner, min_size=1, max_size=3),
    ),
    max_leaves=8,
)

# --- the reference interpreter (docs/rules.md) -----------------------------------------------


class Missing:
    pass


MISSING = Missing()
WRONG = object()


class BadConfig(Exception):
    pass


def resolve(ref: str, args: dict[str, Any]) -> Any:
    value: Any = args
    for seg in ref.split(".")[1:]:
        if isinstance(value, dict) and seg in value:
            value = value[seg]
        elif isinstance(value, list) and seg.isdigit() and int(seg) < len(value):
            value = value[int(seg)]
        else:
            return MISSING
    return value


def value_of(raw: Any, args: dict[str, Any]) -> Any:
    if isinstance(raw, str) and raw.startswith("args."):
        return resolve(raw, args)
    if isinstance(raw, str) and raw.startswith("utils."):
        fn, ref = raw[6:].split("(", 1)
        if fn == "now":  # docs/rules.md: the current time, as an RFC 3339 UTC timestamp
            return datetime.now(UTC).isoformat().replace("+00:00", "Z")
        v = resolve(ref[:-1], args)
        if fn == "exists":
            return v is not MISSING
        return len(v) if isinstance(v, list | dict | str) else MISSING
    if isinstance(raw, list):
        items = [value_of(x, args) for x in raw]
        return MISSING if any(x is MISSING for x in items) else items
    return raw


def as_date(v: Any) -> Any:
    if not isinstance(v, str):
        return WRONG
    try:
        if len(v) == 10:
            d = date.fromisoformat(v)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        if len(v) < 11 or v[10] != "T":
            return WRONG
        return datetime.fromisoformat(v).astimezone(UTC)
    except ValueError:
        return WRONG


def coerce(type_: str, v: Any) -> Any:
    if type_ == "string":
        return v if type(v) is str else WRONG
    if type_ == "number":
        return v if type(v) in (int, float) else WRONG
    if type_ == "bool":
        return v if type(v) is bool else WRONG
    return as_date(v)


def is_ref(raw: Any) -> bool:
    return isinstance(raw, str) and raw.startswith(("args.", "utils."))


def static_check(rule: dict[str, Any]) -> None:
    """Config errors (docs/rules.md): eval not allowed for the type, literal of the wrong type,
    a scalar literal f2 for in/notIn."""
    if rule["rule"] in ("and", "or"):
        for c in rule["clauses"]:
            static_check(c)
        return
    if rule["rule"] != "match":
        return
    t, op = rule["type"], rule["eval"]
    if op not in EVALS[t]:
        raise BadConfig
    if not is_ref(rule["f1"]) and coerce(t, rule["f1"]) is WRONG:
        raise BadConfig
    f2 = rule["f2"]
    if op in ("in", "notIn"):
        if is_ref(f2):
            return
        if not isinstance(f2, list):
            raise BadConfig
        if any(not is_ref(x) and coerce(t, x) is WRONG for x in f2):
            raise BadConfig
    elif not is_ref(f2) and coerce(t, f2) is WRONG:
        raise BadConfig


def reference(rule: dict[str, Any], args: dict[str, Any]) -> str:
    kind = rule["rule"]
    if kind in ("allow", "authenticated"):
        return "pass"
    if kind == "deny":
        return "fail"
    if kind == "and":
        for c in rule["clauses"]:
            out = reference(c, args)
            if out != "pass":
                return out
        return "pass"
    if kind == "or":  # an erroring clause counts as not passing; none passing is a fail
        return "pass" if any(reference(c, args) == "pass" for c in rule["clauses"]) else "fail"
    return match(rule, args)


def match(rule: dict[str, Any], args: dict[str, Any]) -> str:
    t, op = rule["type"], rule["eval"]
    a = value_of(rule["f1"], args)
    if a is MISSING or (a := coerce(t, a)) is WRONG:
        return "error"
    b = value_of(rule["f2"], args)
    if b is MISSING:
        return "error"
    if op in ("in", "notIn"):
        if not isinstance(b, list):
            return "error"
        b = [coerce(t, x) for x in b]
        if any(x is WRONG for x in b):
            return "error"
        return "pass" if (a in b) == (op == "in") else "fail"
    if (b := coerce(t, b)) is WRONG:
        return "error"
    result = {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}
    return "pass" if result[op] else "fail"


# --- the property -----------------------------------------------------------------------------

_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyRule)


def compiled_outcome(rule: dict[str, Any], args: dict[str, Any]) -> str:
    cc = CompileContext(config=None)
    compiled = compile_rule(_ADAPTER.validate_python(rule), cc, "rule")
    if cc.errors:
        raise ConfigError(cc.errors)
    failure = asyncio.run(compiled.evaluate(Context(args)))
    if failure is None:
        return "pass"
    return "error" if failure.error else "fail"


_NO_ARGS: dict[str, Any] = {"auth": {}, "params": {}, "query": {}}


@settings(max_examples=examples(400))
@given(rule=rules, args=request_args)
# f2 `utils.now()` (a literal the strategies draw): once a disagreement (fail vs error)
@example(
    rule={"rule": "match", "type": "date", "eval": ">", "f1": "2024-01-01", "f2": "utils.now()"},
    args=_NO_ARGS,
)
@example(
    rule={"rule": "match", "type": "date", "eval": "<", "f1": "2024-01-01", "f2": "utils.now()"},
    args=_NO_ARGS,
)
@example(
    rule={"rule": "match", "type": "string", "eval": "==", "f1": "x", "f2": "utils.now()"},
    args=_NO_ARGS,
)
def test_compiled_rules_agree_with_the_reference(
    rule: dict[str, Any], args: dict[str, Any]
) -> None:
    try:
        static_check(rule)
    except BadConfig:
        try:
            compiled_outcome(rule, args)
        except ConfigError:
            return
        raise AssertionError(f"config error expected for {rule}") from None
    assert compiled_outcome(rule, args) == reference(rule, args), (rule, args)


@settings(max_examples=examples(150))
@given(args=request_args, key=st.sampled_from(KEYS))
def test_request_values_are_never_resolved_again(args: dict[str, Any], key: str) -> None:
    # A param holding the text of a reference is compared as that text (docs/rules.md).
    args["params"][key] = "args.auth.a"
    args["auth"]["a"] = "secret-value"
    rule = {"rule": "match", "type": "string", "eval": "==", "f1": f"args.params.{key}",
            "f2": "secret-value"}  # fmt: skip
    assert compiled_outcome(rule, args) == "fail"
