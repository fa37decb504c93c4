"""The edges docs/rule-semantics.md promises: exact strings, the date forms, JSON numbers."""

import json

import pytest

from tests.unit.rules.ruletools import outcome


def m(eval_, type_, f1, f2):
    return {"rule": "match", "eval": eval_, "type": type_, "f1": f1, "f2": f2}


# Admin, full-width admin, admin with a dotless i, admin with a trailing space
@pytest.mark.parametrize(
    "role", ["Admin", "\uff41\uff44\uff4d\uff49\uff4e", "adm\u0131n", "admin "]
)
def test_strings_compare_exactly(role):
    args = {"auth": {"role": role}}
    assert outcome(m("notIn", "string", "args.auth.role", ["admin"]), args) == "pass"
    assert outcome(m("in", "string", "args.auth.role", ["admin"]), args) == "fail"


@pytest.mark.parametrize(
    "value",
    ["2024-01-05", "2024-01-05T10:30:00Z", "2024-01-05 10:30", "2024-01-05T10", "2024-01-05T1030",
     "2024-01-05T103000Z", "2024-01-05t10:30:00Z", "2024-01-05T10:30:00,5Z",
     "2024-01-05T10:30:00.123456789Z", "2024-W01-5", "2024-W01-5T10:00Z"],
)  # fmt: skip
def test_documented_date_forms_are_dates(value):
    args = {"params": {"when": value}}
    assert outcome(m(">=", "date", "args.params.when", "2024-01-05"), args) == "pass"
    assert outcome(m("<", "date", "args.params.when", "2024-01-06"), args) == "pass"


@pytest.mark.parametrize(
    "value", ["20240105T103000", "2024-005", "2024-01-05T24:00:00Z", "2024-01-05T10:30:00z"]
)
def test_other_forms_are_not_dates(value):
    args = {"params": {"when": value}}
    assert outcome(m(">=", "date", "args.params.when", "2024-01-01"), args) == "error"


def test_a_number_beyond_a_doubles_precision_is_rounded_when_parsed():
    args = {"params": json.loads('{"n": 1000.00000000000001, "big": 9007199254740993}')}
    assert outcome(m("<=", "number", "args.params.n", 1000), args) == "pass"
    # integers stay exact: 2**53 + 1 is not rounded to 2**53
    assert outcome(m(">", "number", "args.params.big", 9007199254740992), args) == "pass"
