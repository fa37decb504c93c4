from datetime import UTC, datetime

import pytest
from bson import ObjectId

from authz.rules.compiling import CompileContext
from authz.rules.functions import parse_date
from authz.rules.refs import compile_value
from authz.values import MISSING

ARGS = {
    "params": {"s": "héllo", "l": [1, 2], "o": {"a": 1}, "n": 5, "nul": None},
    "auth": {"iat": "2026-03-04T05:06:07Z", "oid": "5f1b2c3d4e5f6a7b8c9d0e1f"},
}


def call(text, args=ARGS):
    cc = CompileContext()
    g = compile_value(text, cc, "p")
    assert not cc.errors, cc.errors
    return g(args)


def compile_error(text):
    cc = CompileContext()
    compile_value(text, cc, "p")
    return cc.errors


def test_exists():
    assert call("utils.exists(args.params.s)") is True
    assert call("utils.exists(args.params.nul)") is True
    assert call("utils.exists(args.params.zzz)") is False
    assert compile_error("utils.exists('x')")


def test_length_counts_characters_items_and_members():
    assert call("utils.length(args.params.s)") == 5
    assert call("utils.length(args.params.l)") == 2
    assert call("utils.length(args.params.o)") == 1
    assert call("utils.length(args.params.n)") is MISSING
    assert call("utils.length(args.params.zzz)") is MISSING


def test_now_is_rfc3339_utc():
    now = parse_date(call("utils.now()"))
    assert abs((datetime.now(UTC) - now).total_seconds()) < 5


def test_add_duration_and_round_up_date():
    assert call("utils.addDuration(args.auth.iat, '4h')") == "2026-03-04T09:06:07Z"
    assert call('utils.addDuration(args.auth.iat, "-1h30m")') == "2026-03-04T03:36:07Z"
    assert call("utils.addDuration('2026-01-01', '24h')") == "2026-01-02T00:00:00Z"
    assert call("utils.roundUpDate(args.auth.iat, 'month')") == "2026-03-01T00:00:00Z"
    assert call("utils.roundUpDate(args.auth.iat, 'hour')") == "2026-03-04T05:00:00Z"
    assert call("utils.addDuration(utils.roundUpDate(args.auth.iat, 'day'), '1h')") == (
        "2026-03-04T01:00:00Z"
    )
    assert call("utils.addDuration(args.params.s, '1h')") is MISSING


@pytest.mark.parametrize(
    "bad",
    [
        "utils.addDuration(args.auth.iat, '4 hours')",
        "utils.roundUpDate(args.auth.iat, 'week')",
        "utils.length()",
        "utils.length(args.a, args.b)",
        "utils.now(",
        "utils.now() extra",
        "utils.frobnicate(args.a)",
    ],
)
def test_bad_calls_are_config_errors(bad):
    assert compile_error(bad)


def test_object_ids():
    oid = call("utils.stringToObjectId(args.auth.oid)")
    assert oid == ObjectId("5f1b2c3d4e5f6a7b8c9d0e1f")
    assert call("utils.objectIdToString(utils.stringToObjectId(args.auth.oid))") == (
        "5f1b2c3d4e5f6a7b8c9d0e1f"
    )
    assert call("utils.stringToObjectId(args.params.s)") is MISSING


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("2026-01-02", True),
        ("2026-01-02T03:04:05Z", True),
        ("2026-01-02T03:04:05.123+02:00", True),
        ("2026-01-02x03:04:05", False),
        ("yesterday", False),
        ("2026-13-02", False),
        ("0001-01-01T00:00:00+01:00", False),  # cannot be expressed in UTC
        ("9999-12-31T23:59:59-01:00", False),
        (20260102, False),
        # offsets are those of real places, at most 14 hours from UTC
        ("2026-01-02T03:04:05+14:00", True),
        ("2026-01-02T03:04:05-12:00", True),
        ("2026-12-08T00:00:00+23:59", False),
        ("2026-12-08T00:00:00-14:01", False),
    ],
)
def test_parse_date(text, ok):
    assert (parse_date(text) is not None) is ok


def test_round_up_date_of_an_extreme_date_is_missing_not_an_exception():
    args = {"params": {"d": "0001-01-01T00:00:00+01:00", "e": "9999-12-31T23:00:00Z"}}
    assert call("utils.roundUpDate(args.params.d, 'day')", args) is MISSING
    assert call("utils.roundUpDate(args.params.e, 'year')", args) == "9999-01-01T00:00:00Z"
    assert call("utils.addDuration(args.params.e, '2h')", args) is MISSING


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12", 12), ("-3", -3), ("0", 0), ("0.5", 0.5), (7, 7), (2.5, 2.5), (["1", 2], [1, 2]),
        ("012", MISSING), ("1.0", MISSING), ("1e3", MISSING), ("+1", MISSING), (" 1", MISSING),
        ("-0", MISSING), ("", MISSING), ("abc", MISSING), (True, MISSING), (None, MISSING),
        ("9223372036854775808", MISSING), (["1", "x"], MISSING),
    ],
)  # fmt: skip
def test_number_reads_numbers_and_canonical_decimal_strings_only(value, expected):
    got = call("utils.number(args.params.v)", {"params": {"v": value}})
    assert got == expected and type(got) is type(expected)


def test_number_makes_a_path_parameter_match_a_number():
    from tests.unit.rules.ruletools import outcome

    f1 = "utils.number(args.pathParams.id)"
    rule = {"rule": "match", "type": "number", "eval": "==", "f1": f1, "f2": 1}
    assert outcome(rule, {"pathParams": {"id": "1"}}) == "pass"
    assert outcome(rule, {"pathParams": {"id": "2"}}) == "fail"
    assert outcome(rule, {"pathParams": {"id": "01"}}) == "error"
    assert call("utils.number(args.params.zzz)") is MISSING
