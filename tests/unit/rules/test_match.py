import asyncio
from types import SimpleNamespace

import pytest

from authz.errors import ConfigError
from authz.rules.base import Context, run
from tests.unit.rules.ruletools import compile_dict, evaluate, outcome


def m(eval_, type_, f1, f2, **extra):
    return {"rule": "match", "eval": eval_, "type": type_, "f1": f1, "f2": f2, **extra}


ARGS = {
    "auth": {"id": "u1", "role": "admin", "age": 30, "score": 1.5, "ok": True},
    "params": {
        "userId": "u1",
        "n": 1,
        "f": 1.0,
        "flag": False,
        "numstr": "1",
        "list": ["a", "b"],
        "nums": [1, 2, 3],
        "when": "2026-01-02T03:04:05Z",
        "day": "2026-01-02",
        "nullv": None,
        "mixed": ["a", 1],
    },
}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # string
        (m("==", "string", "args.auth.id", "args.params.userId"), "pass"),
        (m("==", "string", "args.auth.id", "u2"), "fail"),
        (m("!=", "string", "args.auth.id", "u2"), "pass"),
        (m("!=", "string", "args.auth.id", "u1"), "fail"),
        (m("in", "string", "args.auth.role", ["user", "admin"]), "pass"),
        (m("in", "string", "args.auth.role", ["user"]), "fail"),
        (m("in", "string", "args.auth.role", "args.params.list"), "fail"),
        (m("in", "string", "a", "args.params.list"), "pass"),
        (m("notIn", "string", "args.auth.role", ["user"]), "pass"),
        (m("notIn", "string", "args.auth.role", ["admin"]), "fail"),
        (m("in", "string", "args.auth.id", ["x", "args.params.userId"]), "pass"),
        # number: ints and floats compare by value, bools and numeric strings are not numbers
        (m("==", "number", "args.params.n", "args.params.f"), "pass"),
        (m("==", "number", "args.params.n", 1), "pass"),
        (m("<", "number", "args.auth.age", 31), "pass"),
        (m("<=", "number", "args.auth.age", 30), "pass"),
        (m(">", "number", "args.auth.age", 30), "fail"),
        (m(">=", "number", "args.auth.score", 1.5), "pass"),
        (m("!=", "number", "args.auth.age", 30), "fail"),
        (m("in", "number", "args.params.n", "args.params.nums"), "pass"),
        (m("notIn", "number", 4, "args.params.nums"), "pass"),
        (m("==", "number", "args.params.numstr", 1), "error"),
        (m("==", "number", "args.params.flag", 0), "error"),
        # bool
        (m("==", "bool", "args.auth.ok", True), "pass"),
        (m("!=", "bool", "args.auth.ok", True), "fail"),
        (m("==", "bool", "args.params.n", True), "error"),
        # date: RFC 3339 and YYYY-MM-DD
        (m(">", "date", "args.params.when", "args.params.day"), "pass"),
        (m("==", "date", "args.params.day", "2026-01-02T00:00:00Z"), "pass"),
        (m("<", "date", "args.params.when", "2026-01-02T03:04:05+01:00"), "fail"),
        (m("<", "date", "args.params.when", "utils.now()"), "pass"),
        (m("==", "date", "args.params.userId", "2026-01-02"), "error"),
        # errors: missing references, wrong types, scalar f2 for in
        (m("==", "string", "args.auth.missing", "x"), "error"),
        (m("!=", "string", "args.auth.missing", "x"), "error"),
        (m("notIn", "string", "args.auth.missing", ["x"]), "error"),
        (m("notIn", "string", "args.auth.role", "args.auth.id"), "error"),
        (m("==", "string", "args.params.list", "a"), "error"),
        (m("==", "string", "args.params.nullv", "a"), "error"),
        (m("in", "string", "a", "args.params.mixed"), "error"),
        (m("==", "string", "args.params.n", "1"), "error"),
    ],
)
def test_match_outcomes(rule, expected):
    assert outcome(rule, ARGS) == expected


def test_request_values_are_never_resolved_again():
    args = {"auth": {"id": "args.auth.id"}, "params": {"x": "args.auth.id", "u": "utils.now()"}}
    assert outcome(m("==", "string", "args.params.x", "args.auth.id"), args) == "pass"
    # the value "args.auth.id" is compared as text, not looked up again
    args2 = {"auth": {"id": "u1"}, "params": {"x": "args.auth.id"}}
    assert outcome(m("==", "string", "args.params.x", "args.auth.id"), args2) == "fail"
    assert outcome(m("==", "string", "args.params.u", "utils.now()"), args) == "fail"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (m("<", "string", "args.auth.id", "a"), "operator '<' is not allowed for type 'string'"),
        (m("in", "bool", "args.auth.ok", [True]), "not allowed for type 'bool'"),
        (m("==", "number", "args.auth.age", "abc"), "literal 'abc' is not a number"),
        (m("==", "number", "args.auth.age", True), "literal True is not a number"),
        (m("in", "string", "args.auth.id", "abc"), "must be a list"),
        (m("in", "number", "args.auth.age", [1, "x"]), "f2[1]: literal 'x' is not a number"),
        (m("==", "date", "args.auth.id", "yesterday"), "is not a date"),
        (m("==", "string", "args.auth..id", "x"), "invalid reference"),
        (m("==", "number", "utils.length(args.a", 1), "invalid utils call"),
        (m("==", "number", "utils.nope(args.a)", 1), "unknown function utils.nope"),
    ],
)
def test_config_errors(rule, message):
    with pytest.raises(ConfigError) as exc:
        compile_dict(rule)
    assert message in str(exc.value)


def test_error_text_is_the_rule_message():
    failure = evaluate(m("==", "string", "args.auth.id", "x", error="not yours"), ARGS)
    assert failure is not None and failure.message == "not yours" and not failure.error


def test_failure_reason_names_the_values():
    failure = evaluate(m("==", "string", "args.auth.id", "x"), ARGS)
    assert failure is not None and "'u1' == 'x' is false" in failure.reason


@pytest.mark.parametrize(
    ("f1", "f2", "shown"),
    [
        ("args.headers.x-api-key", "k-configured", "args.headers.x-api-key == <literal>"),
        (
            "args.params.password",
            "args.params.username",
            "args.params.password == args.params.username",
        ),
        ("args.token", "t-configured", "args.token == <literal>"),
        ("k-configured", "args.headers.authorization", "<literal> == args.headers.authorization"),
    ],
)
def test_failure_reason_never_shows_values_read_from_secrets(f1, f2, shown):
    args = {
        "headers": {"x-api-key": "k-sent", "authorization": "Bearer k-sent"},
        "params": {"password": "k-sent", "username": "bob"},
        "token": "k-sent",
    }
    failure = evaluate(m("==", "string", f1, f2), args)
    assert failure is not None and not failure.error
    assert failure.reason.startswith(shown) and "k-" not in failure.reason


def traced(rule: dict, args: dict) -> tuple[object, list]:
    """Evaluate as --explain does: the failure (or None) and the trace entries."""
    compiled = compile_dict(rule)[0]
    ctx = Context(args, None, trace=True)
    failure = asyncio.run(run(compiled, ctx))
    return failure, ctx.trace


SECRET_ARGS = {"params": {"password": "k-sent", "secret": ["k-one", "k-two"]}}


@pytest.mark.parametrize(
    ("rule", "passed", "detail"),
    [
        (m("==", "string", "args.params.password", "k-sent"), True,
         "args.params.password == <literal>"),
        (m("!=", "string", "args.params.password", "k-sent"), False,
         "args.params.password != <literal> is false (values not shown)"),
        (m("in", "string", "args.params.password", ["k-sent", "args.auth.id"]), True,
         "args.params.password in [<literal>, args.auth.id]"),
        (m("in", "string", "k-one", "args.params.secret"), True, "<literal> in args.params.secret"),
    ],
)  # fmt: skip
def test_the_trace_of_a_masked_match_never_shows_values(rule, passed, detail):
    failure, trace = traced(rule, {**SECRET_ARGS, "auth": {"id": "u1"}})
    assert (failure is None) is passed
    [entry] = trace
    assert entry.passed is passed and entry.detail == detail and "k-" not in entry.detail


def test_the_trace_of_a_plain_match_shows_the_values_compared():
    failure, [entry] = traced(m("<", "number", "args.auth.age", 31), ARGS)
    assert failure is None and entry.detail == "30 < 31"
    failure, [entry] = traced(m("in", "string", "args.auth.role", ["user"]), ARGS)
    assert entry.detail == "'admin' in ['user'] is false" and not entry.passed


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        (m("==", "string", "args.auth.missing", "x"), "f1 args.auth.missing does not resolve"),
        (m("==", "string", "args.params.n", "x"), "f1 args.params.n is not a string"),
        (m("==", "string", "x", "args.auth.missing"), "f2 args.auth.missing does not resolve"),
        (m("==", "string", "x", "args.params.n"), "f2 args.params.n is not a string"),
        (m("<", "number", 1, "args.params.numstr"), "f2 args.params.numstr is not a number"),
        (m("==", "date", "2026-01-02", "args.params.n"), "f2 args.params.n is not a date"),
        (m("in", "string", "a", "args.params.userId"), "f2 args.params.userId is not a list"),
        (m("in", "string", "a", "args.params.mixed"),
         "f2 args.params.mixed has an item that is not a string"),
        (m("in", "number", 1, "args.params.list"),
         "f2 args.params.list has an item that is not a number"),
        (m("notIn", "string", "a", "args.auth.missing"), "f2 args.auth.missing does not resolve"),
    ],
)  # fmt: skip
def test_a_side_of_the_wrong_type_is_an_error_not_a_fail(rule, reason):
    # an error, not a fail: `or` treats the two differently (docs/rule-semantics.md)
    failure = evaluate(rule, ARGS)
    assert failure is not None and failure.error and failure.reason == reason


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (m("!=", "date", "args.params.when", "2026-01-02T03:04:05Z"), "fail"),
        (m("!=", "date", "args.params.when", "2026-01-02T04:04:05+01:00"), "fail"),
        (m("!=", "date", "args.params.when", "2026-01-02T03:04:06Z"), "pass"),
        (m("!=", "date", "args.params.day", "args.params.day"), "fail"),
        (m("!=", "date", "args.params.day", "2026-01-03"), "pass"),
        (m("==", "date", "args.params.when", "2026-01-02T05:04:05+02:00"), "pass"),
        (m("!=", "date", "args.params.nullv", "2026-01-03"), "error"),
        (m("<", "date", "args.params.day", "2026-01-02"), "fail"),
        (m("<=", "date", "args.params.day", "2026-01-02"), "pass"),
        (m(">", "date", "args.params.day", "2026-01-02"), "fail"),
        (m(">=", "date", "args.params.day", "2026-01-02"), "pass"),
        (m("<", "number", "args.auth.age", 30), "fail"),
        (m("<=", "number", "args.auth.age", 29), "fail"),
        (m(">", "number", "args.auth.age", 29), "pass"),
        (m(">=", "number", "args.auth.age", 31), "fail"),
        (m("==", "bool", "args.auth.ok", True), "pass"),
        (m("!=", "bool", "args.auth.ok", True), "fail"),
        (m("==", "number", "args.params.f", 1), "pass"),
        (m("==", "number", "args.params.flag", "args.params.n"), "error"),
        (m("notIn", "number", "args.params.n", [2, 3]), "pass"),
        (m("notIn", "number", "args.params.n", "args.params.nums"), "fail"),
    ],
)
def test_each_operator_at_its_boundary(rule, expected):
    assert outcome(rule, ARGS) == expected


def test_a_literal_filled_from_the_environment_is_never_shown():
    config = SimpleNamespace(_interpolated=frozenset({"sekrit", "args.params.owner"}))
    args = {"params": {"owner": "a-guess"}}
    secret = compile_dict(m("==", "string", "args.params.owner", "sekrit"), config)[0]
    failure = evaluate(secret, args)
    assert failure.reason == "args.params.owner == <literal> is false (values not shown)"
    # another literal, or a reference that happens to equal a configured string: shown
    plain = compile_dict(m("==", "string", "args.params.owner", "other"), config)[0]
    assert evaluate(plain, args).reason == "'a-guess' == 'other' is false"


def test_a_utils_call_that_folds_to_a_constant_is_not_a_literal():
    assert outcome(m("==", "number", "utils.length('abc')", 3), ARGS) == "pass"
    with pytest.raises(ConfigError, match="must be a list"):
        compile_dict(m("in", "string", "x", "y"))


def test_an_invalid_reference_is_one_error_not_also_a_wrong_literal():
    with pytest.raises(ConfigError) as e:
        compile_dict(m("==", "number", "args.", 1))
    assert e.value.errors == ["rule.f1: invalid reference 'args.': path ends with '.'"]
