"""Explain: the evaluation tree rebuilt from the post-order trace, and `check --explain`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from authz.authorizer import Authorizer
from authz.cli import main
from authz.config.load import load_config_text
from authz.explain import explain, explain_lines, tree_from_trace
from authz.request import Request
from authz.rules.base import TraceEntry

SECRET = "explain-test-secret-0123456789abcdef01"
CONFIG = """
project: t
auth: {secrets: [{kid: main, alg: HS256, secret: SECRET, primary: true}]}
services:
  s:
    endpoints:
      e:
        method: POST
        path: /e
        rule:
          rule: and
          clauses:
            - rule: or
              clauses:
                - {rule: match, type: string, eval: "==", f1: args.auth.role, f2: admin}
                - {rule: match, type: number, eval: "<", f1: args.params.n, f2: 10}
            - {rule: match, type: string, eval: "==", f1: args.params.s, f2: ok, error: bad s}
            - {rule: allow}
""".replace("SECRET", SECRET)


def test_tree_from_post_order_trace() -> None:
    r = "x.rule"
    trace = [
        TraceEntry(f"{r}.clauses[0].clauses[0]", "match", False, False, "a"),
        TraceEntry(f"{r}.clauses[0].clauses[1]", "match", True, False, "b"),
        TraceEntry(f"{r}.clauses[0]", "or", True, False, ""),
        TraceEntry(f"{r}.clauses[1]", "match", False, True, "c"),
        TraceEntry(r, "and", False, True, "c"),
    ]
    (root,) = tree_from_trace(trace)
    assert (root.kind, root.result) == ("and", "error")
    assert [c.kind for c in root.children] == ["or", "match"]
    assert [c.result for c in root.children[0].children] == ["fail", "pass"]
    assert root.children[1].children == []


def test_a_sibling_with_a_longer_name_is_not_a_child() -> None:
    trace = [
        TraceEntry("a.rule1", "allow", True, False, ""),
        TraceEntry("a.rule", "and", True, False, ""),
    ]
    roots = tree_from_trace(trace)
    assert [r.path for r in roots] == ["a.rule1", "a.rule"]


async def _decide(body: dict, role: str) -> tuple[Authorizer, object]:
    authorizer = Authorizer(load_config_text(CONFIG))
    token = authorizer.runtime.identity.mint({"id": "u", "role": role}, 60)
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    req = Request("POST", "/e", headers=headers,
                  body=json.dumps(body).encode())  # fmt: skip
    return authorizer, await authorizer.check(req, trace=True)


async def test_explain_shows_inputs_failures_and_skipped_rules() -> None:
    authorizer, decision = await _decide({"n": 5, "s": "no"}, "user")
    text = explain(decision, authorizer.endpoints[0].rule)
    lines = text.splitlines()
    assert lines[0] == "decision: DENY 403  endpoint s.e"
    assert "error:    bad s  (sent to the client)" in lines
    body = "\n".join(lines)
    # a failed composite names the clause that failed it
    assert "\n  FAIL  services.s.endpoints.e.rule: and  -> clauses[1]: " in body
    assert "\n    PASS  clauses[0]: or" in body
    assert (
        "\n      FAIL  clauses[0]: match  [args.auth.role == 'admin' (string)]"
        "  -> 'user' == 'admin' is false" in body
    )
    assert "\n      PASS  clauses[1]: match  [args.params.n < 10 (number)]  -> 5 < 10" in body
    assert "\n    FAIL  clauses[1]: match" in body
    assert "\n    skip  clauses[2]: allow  (not evaluated)" in body


async def test_explain_without_the_rule_uses_the_trace_only() -> None:
    _, decision = await _decide({"n": 50, "s": "ok"}, "admin")
    lines = explain_lines(decision)
    assert lines[0].startswith("decision: ALLOW")
    assert not any("skip" in line for line in lines)
    assert sum("PASS" in line for line in lines) == 5  # and, or, its first clause, match, allow


def test_check_explain_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    reqs = tmp_path / "r.json"
    reqs.write_text(json.dumps([{"method": "POST", "path": "/e"}, {"method": "GET", "path": "/x"}]))
    assert main(["check", "--explain", "--config", str(config), str(reqs)]) == 0
    out = capsys.readouterr().out
    assert "request [0]: POST /e" in out and "decision: DENY 401  endpoint s.e" in out
    assert "rules:    none evaluated (decided before the rule ran)" in out
    assert "request [1]: GET /x" in out and "reason:   no endpoint matches" in out
