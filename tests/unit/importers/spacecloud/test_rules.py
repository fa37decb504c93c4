"""Space Cloud rules as authz rules: copied where both languages agree, rewritten (and
reported) where Space Cloud evaluated them differently, stopped where a rule is incomplete."""

from __future__ import annotations

import json

import pytest

from authz.authorizer import Authorizer
from authz.config.load import load_config_text
from authz.importers.spacecloud.report import ImportStopped, Report
from authz.importers.spacecloud.rules import RuleContext, convert_rule


def convert(rule: dict, path_params: dict | None = None) -> tuple[dict, Report]:
    ctx = RuleContext(Report(), {"db"}, path_params or {})
    return convert_rule(rule, "r", ctx), ctx.report


def kinds(report: Report) -> list[str]:
    return [i.kind for i in report.items]


def compiles(rule: dict) -> None:
    """The converted rule is one authz accepts."""
    config = {
        "project": "p",
        "auth": {"serviceToken": {"enabled": False}},
        "services": {"s": {"endpoints": {"e": {"path": "/e", "rule": rule}}}},
    }
    Authorizer(load_config_text(json.dumps(config), {}))


@pytest.mark.parametrize(
    "rule",
    [
        {"rule": "allow"},
        {"rule": "deny", "error": "no"},
        {"rule": "authenticated"},
        {"rule": "match", "type": "string", "eval": "==", "f1": "args.auth.id", "f2": "x"},
        {"rule": "match", "type": "number", "eval": ">=", "f1": "args.auth.n", "f2": 3},
        {"rule": "match", "type": "bool", "eval": "==", "f1": "utils.exists(args.params.a)",
         "f2": True},
        {"rule": "match", "type": "date", "eval": "<", "f1": "args.auth.d", "f2": "utils.now()"},
        {"rule": "and", "clauses": [{"rule": "allow"}]},
        {"rule": "or", "clauses": [{"rule": "deny"}, {"rule": "allow"}]},
        {"rule": "query", "db": "db", "col": "c", "find": {"a": "args.auth.id"},
         "clause": {"rule": "allow"}},
        {"rule": "force", "field": "args.params.a", "value": "args.auth.id"},
        {"rule": "remove", "fields": ["args.params.a"]},
        {"rule": "encrypt", "fields": ["args.params.a"]},
        {"rule": "decrypt", "fields": ["res.a"]},
        {"rule": "hash", "fields": ["args.params.a"]},
    ],
)  # fmt: skip
def test_rules_both_languages_agree_on_are_copied(rule: dict) -> None:
    out, report = convert(rule)
    assert out == rule
    assert report.items == []


def test_webhook_keeps_url_and_reports_the_token_difference() -> None:
    out, report = convert({"rule": "webhook", "url": "http://h/check", "store": "args.w"})
    assert out == {"rule": "webhook", "url": "http://h/check", "store": "args.w"}
    assert kinds(report) == ["differs"]


@pytest.mark.parametrize("kind", ["and", "or"])
def test_empty_logic_rule_passed_in_space_cloud_and_is_now_a_deny(kind: str) -> None:
    out, report = convert({"rule": kind, "clauses": []})
    assert out["rule"] == "deny"
    assert kinds(report) == ["differs"] and "let every request pass" in report.items[0].what


def test_scalar_not_in_passed_everything_and_is_now_a_list() -> None:
    rule = {"rule": "match", "type": "string", "eval": "notIn", "f1": "args.auth.role",
            "f2": "banned"}  # fmt: skip
    out, report = convert(rule)
    assert out["f2"] == ["banned"] and kinds(report) == ["differs"]


def test_scalar_in_never_passed_and_stays_closed() -> None:
    rule = {"rule": "match", "type": "string", "eval": "in", "f1": "args.auth.role", "f2": "a"}
    out, report = convert(rule)
    assert out["rule"] == "deny" and kinds(report) == ["differs"]


def test_fields_from_a_reference_are_not_carried() -> None:
    out, report = convert({"rule": "remove", "fields": "args.auth.fields"})
    assert out["rule"] == "deny" and kinds(report) == ["differs"]


def test_bool_match_on_a_string_literal_becomes_a_string_match() -> None:
    # The remote-services docs' own `remove` example: Space Cloud never removed the field.
    rule = {"rule": "match", "eval": "!=", "type": "bool", "f1": "args.auth.role", "f2": "admin"}
    out, report = convert(rule)
    assert out["type"] == "string" and kinds(report) == ["differs"]
    compiles(out)


def test_number_match_on_a_string_literal_is_a_deny() -> None:
    rule = {"rule": "match", "eval": ">", "type": "number", "f1": "args.auth.n", "f2": "abc"}
    out, report = convert(rule)
    assert out["rule"] == "deny" and kinds(report) == ["differs"]


def test_unknown_eval_is_a_deny() -> None:
    out, report = convert({"rule": "match", "eval": "=>", "type": "string", "f1": "a", "f2": "b"})
    assert out["rule"] == "deny" and kinds(report) == ["not-carried"]


def test_query_on_a_database_not_carried_is_a_deny() -> None:
    out, report = convert({"rule": "query", "db": "mysql1", "col": "t"})
    assert out["rule"] == "deny" and kinds(report) == ["not-carried"]


def test_query_without_clause_never_passed_in_space_cloud() -> None:
    out, report = convert({"rule": "query", "db": "db", "col": "t"})
    assert out == {"rule": "query", "db": "db", "col": "t", "find": {}}
    assert kinds(report) == ["differs"]


def test_query_cache_ttl_is_seconds_and_clause_is_converted() -> None:
    out, _ = convert({"rule": "query", "db": "db", "col": "t", "cache": {"ttl": 30},
                      "clause": {"rule": "and", "clauses": []}})  # fmt: skip
    assert out["cache"] == {"ttl": "30s"} and out["clause"]["rule"] == "deny"


def test_field_rule_clause_is_noted() -> None:
    clause = {"rule": "match", "eval": "==", "type": "string", "f1": "args.auth.r", "f2": "x"}
    out, report = convert({"rule": "remove", "fields": ["args.params.a"], "clause": clause})
    assert out["clause"] == clause and kinds(report) == ["note"]


def test_response_hash_is_hex_as_space_cloud_wrote_it() -> None:
    out, _ = convert({"rule": "hash", "fields": ["res.a"]})
    assert out == {"rule": "hash", "fields": ["res.a"], "encoding": "hex"}


def test_path_parameters_are_read_from_the_path() -> None:
    rule = {"rule": "match", "type": "bool", "eval": "==", "f2": True,
            "f1": "utils.exists(args.params.id)"}  # fmt: skip
    out, _ = convert(rule, {"args.params.id": "id"})
    assert out["f1"] == "utils.exists(args.pathParams.id)"
    out, _ = convert({**rule, "f1": "utils.exists(args.params.idx)"}, {"args.params.id": "id"})
    assert out["f1"] == "utils.exists(args.params.idx)"  # a longer name is another value


def test_dollar_in_a_literal_is_kept_literal() -> None:
    rule = {"rule": "match", "type": "string", "eval": "==", "f1": "args.auth.p", "f2": "${HOME}"}
    out, _ = convert(rule)
    assert out["f2"] == "$${HOME}"
    compiles(out)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"rule": "match", "type": "string", "f1": "a"}, "needs eval, f2"),
        ({"rule": "and"}, "needs clauses"),
        ({"rule": "query", "db": "db"}, "needs col"),
        ({"rule": "webhook"}, "needs url"),
        ({"rule": "force", "field": "args.params.a"}, "needs value"),
        ({"rule": "hash"}, "needs fields"),
        ({"rule": "sometimes"}, "unknown rule kind"),
        ({"eval": "=="}, "unknown rule kind None"),
        ("allow", "must be a mapping"),
        ({"rule": "and", "clauses": [{"rule": "match"}]}, "r.clauses[0]: a `match` rule needs"),
    ],
)
def test_incomplete_rules_stop_the_import(rule: object, message: str) -> None:
    with pytest.raises(ImportStopped, match=message.replace("[", r"\[").replace("]", r"\]")):
        convert(rule)  # type: ignore[arg-type]
