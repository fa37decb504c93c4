import asyncio

import pytest

from authz.rules.base import Context, Failure, Rule
from authz.rules.logic import And, Or
from tests.unit.rules.ruletools import compile_dict, evaluate, outcome

TRUE = {"rule": "match", "eval": "==", "type": "bool", "f1": True, "f2": True}
FALSE = {"rule": "match", "eval": "==", "type": "bool", "f1": True, "f2": False}
ERROR = {"rule": "match", "eval": "==", "type": "bool", "f1": "args.missing", "f2": True}


def test_allow_deny_authenticated():
    assert outcome({"rule": "allow"}, {}) == "pass"
    assert outcome({"rule": "deny"}, {}) == "fail"
    assert outcome({"rule": "authenticated"}, {"auth": {"id": "x"}}) == "pass"


def test_and_stops_at_first_failure():
    assert outcome({"rule": "and", "clauses": [TRUE, TRUE]}, {}) == "pass"
    assert outcome({"rule": "and", "clauses": [TRUE, FALSE]}, {}) == "fail"
    failure = evaluate({"rule": "and", "clauses": [FALSE, ERROR]}, {})
    assert failure is not None and failure.path == "rule.clauses[0]"


def test_and_propagates_an_error():
    assert outcome({"rule": "and", "clauses": [TRUE, ERROR]}, {}) == "error"


def test_or_first_passing_clause_decides_and_errors_count_as_not_passing():
    assert outcome({"rule": "or", "clauses": [FALSE, TRUE]}, {}) == "pass"
    assert outcome({"rule": "or", "clauses": [ERROR, TRUE]}, {}) == "pass"
    assert outcome({"rule": "or", "clauses": [ERROR, FALSE]}, {}) == "fail"
    assert outcome({"rule": "or", "clauses": [ERROR, ERROR]}, {}) == "fail"


def test_error_messages_innermost_wins():
    inner = {**FALSE, "error": "inner"}
    failure = evaluate({"rule": "and", "error": "outer", "clauses": [inner]}, {})
    assert failure.message == "inner"
    failure = evaluate({"rule": "and", "error": "outer", "clauses": [FALSE]}, {})
    assert failure.message == "outer"
    failure = evaluate({"rule": "or", "error": "none passed", "clauses": [inner, FALSE]}, {})
    assert failure.message == "none passed"


def test_trace_records_every_evaluated_rule():
    import asyncio

    rule, _ = compile_dict({"rule": "or", "clauses": [FALSE, {"rule": "and", "clauses": [TRUE]}]})
    ctx = Context({}, trace=True)
    assert asyncio.run(rule.evaluate(ctx)) is None
    paths = [(t.path, t.passed) for t in ctx.trace]
    assert paths == [
        ("rule.clauses[0]", False),
        ("rule.clauses[1].clauses[0]", True),
        ("rule.clauses[1]", True),
    ]


class _Change:
    def __init__(self, key):
        self.key = key

    def undo(self, args):
        args.pop(self.key)


def test_or_rolls_back_changes_of_a_failed_clause():
    ctx = Context({"a": 1})
    ctx.args["x"] = 1
    ctx.changes.append(_Change("x"))
    ctx.args["y"] = 2
    ctx.changes.append(_Change("y"))
    ctx.rollback(1)
    assert ctx.args == {"a": 1, "x": 1}
    assert len(ctx.changes) == 1


# --- evaluate_now: what serving calls for rules that never await ----------------------------

DATE = {"rule": "match", "eval": "<", "type": "date", "f1": "args.d", "f2": "2030-01-01"}
IN = {"rule": "match", "eval": "in", "type": "string", "f1": "args.s", "f2": ["a", "b"]}
IN_REF = {"rule": "match", "eval": "in", "type": "string", "f1": "args.s", "f2": "args.list"}
NUM = {"rule": "match", "eval": ">=", "type": "number", "f1": "args.n", "f2": "args.m"}
SYNC_RULES = [
    {"rule": "allow"},
    {"rule": "deny", "error": "no"},
    {"rule": "authenticated"},
    TRUE,
    FALSE,
    ERROR,
    DATE,
    IN,
    IN_REF,
    NUM,
    {"rule": "and", "clauses": [{"rule": "authenticated"}, TRUE, FALSE]},
    {"rule": "and", "error": "outer", "clauses": [{"rule": "allow"}, {**FALSE, "error": "in"}]},
    {"rule": "or", "clauses": [ERROR, FALSE]},
    {"rule": "or", "error": "none", "clauses": [FALSE, {"rule": "and", "clauses": [IN, NUM]}]},
]
ARGS = [
    {},
    {"d": "2029-12-31", "s": "a", "list": ["a"], "n": 2, "m": 1},
    {"d": "2031-01-01T00:00:00Z", "s": "c", "list": ["a", 1], "n": True, "m": 1.5},
    {"d": 5, "s": 1, "list": "a", "n": 1.0, "m": "x"},
]


@pytest.mark.parametrize("rule", SYNC_RULES)
def test_evaluate_now_gives_what_evaluate_gives(rule):
    compiled, _ = compile_dict(rule)
    assert compiled.sync
    for args in ARGS:
        now = compiled.evaluate_now(Context(dict(args)))
        assert now == evaluate(compiled, dict(args)), (rule, args)


class _Awaits(Rule):
    """A rule that awaits (as query and webhook rules do)."""

    kind = "awaits"

    async def evaluate(self, ctx):
        await asyncio.sleep(0)
        return self.fail("awaited") if ctx.args.get("fail") else None


def test_a_composite_is_sync_only_when_every_clause_is():
    true, _ = compile_dict(TRUE)
    false, _ = compile_dict(FALSE)
    both = And("rule", None, (true, _Awaits("rule.clauses[1]")))
    assert not both.sync and true.sync and And("rule", None, (true, false)).sync
    assert evaluate(both, {}) is None
    assert evaluate(both, {"fail": True}).reason == "awaited"
    assert evaluate(Or("rule", None, (false, _Awaits("rule.clauses[1]"))), {}) is None


class _Fatal(Rule):
    """A clause whose failure denies even inside `or` (a field rule that cannot act)."""

    kind = "fatal"
    sync = True

    def evaluate_now(self, ctx):
        return Failure(self.path, "cannot act", True, "masked", fatal=True)

    async def evaluate(self, ctx):
        return self.evaluate_now(ctx)


def test_a_fatal_clause_ends_or_without_trying_the_next_one():
    allow, _ = compile_dict({"rule": "allow"})
    rule = Or("rule", "or's text", (_Fatal("rule.clauses[0]"), allow))
    expected = Failure("rule.clauses[0]", "cannot act", True, "masked", fatal=True)
    assert evaluate(rule, {}) == expected  # async path
    assert rule.evaluate_now(Context({})) == expected  # sync path
    traced = Context({}, trace=True)
    assert asyncio.run(rule.evaluate(traced)) == expected
    assert [e.path for e in traced.trace] == ["rule.clauses[0]"]  # allow never ran
    outer = And("outer", None, (rule,))  # serving: And calls Or.evaluate_now
    assert evaluate(outer, {}) == expected


def test_composites_list_their_clauses():
    rule, _ = compile_dict({"rule": "or", "clauses": [TRUE, {"rule": "and", "clauses": [FALSE]}]})
    assert [c.kind for c in rule.children()] == ["match", "and"]
    assert [c.path for c in rule.children()[1].children()] == ["rule.clauses[1].clauses[0]"]
    assert compile_dict({"rule": "deny"})[0].children() == ()
