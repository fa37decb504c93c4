from authz.rules.base import Context
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
