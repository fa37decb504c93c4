"""`authz test`: rule test files, fixtures (memory datastores, canned webhooks), coverage."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from authz.cli import main
from authz.ruletest.report import run_tests

ROOT = Path(__file__).resolve().parents[2]
SECRET = "rule-test-secret-0123456789abcdef0123"

CONFIG = """
project: t
auth:
  secrets: [{kid: main, alg: HS256, secret: "${T_SECRET}", primary: true}]
databases:
  main: {type: sqlite, path: does-not-exist.db}
services:
  docs:
    url: http://127.0.0.1:1
    endpoints:
      read:
        method: GET
        path: /docs/{docId}
        rule:
          rule: query
          db: main
          col: shares
          find: {docId: args.pathParams.docId, userId: args.auth.id}
      write:
        method: POST
        path: /docs
        rule:
          rule: and
          clauses:
            - {rule: match, type: string, eval: "==", f1: args.auth.role, f2: editor,
                error: editors only}
            - {rule: force, field: args.params.owner, value: args.auth.id}
            - {rule: webhook, url: "http://policy.test/check"}
"""


def write(tmp_path: Path, cases: str, config: str = CONFIG) -> Path:
    (tmp_path / "c.yaml").write_text(config)
    path = tmp_path / "c.tests.yaml"
    head = f"config: c.yaml\nenv: {{T_SECRET: {SECRET}}}\n"
    path.write_text(head + textwrap.dedent(cases))
    return path


def run(path: Path, **kw) -> tuple[int, str]:
    lines: list[str] = []
    code = run_tests([str(path)], lines.append, **kw)
    return code, "\n".join(lines)


def test_query_fixtures_allow_deny_and_unavailable(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
    fixtures:
      databases: {main: {shares: [{docId: d1, userId: u1}]}}
    cases:
      - name: shared with the caller
        request: {method: GET, path: /docs/d1, claims: {id: u1}}
        expect: {allowed: true, headers: {x-sc-token: true}}
      - name: not shared
        request: {method: GET, path: /docs/d1, claims: {id: u2}}
        expect: {allowed: false, status: 403, reason: no document matched}
      - name: case fixtures replace the file's
        request: {method: GET, path: /docs/d1, claims: {id: u2}}
        fixtures: {databases: {main: {shares: [{docId: d1, userId: u2}]}}}
        expect: {allowed: true}
      - name: datastore down
        request: {method: GET, path: /docs/d1, claims: {id: u1}}
        fixtures: {databases: {main: unavailable}}
        expect: {allowed: false, status: 503}
    """,
    )
    code, out = run(path)
    assert code == 0, out
    assert out.splitlines()[-1] == "4 passed, 0 failed"


def test_webhook_canned_replies_and_params(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
    cases:
      - name: webhook says yes, owner forced
        request:
          service: docs
          endpoint: write
          claims: {id: u1, role: editor}
          body: {title: t, owner: mallory}
        fixtures: {webhooks: {"http://policy.test/check": {status: 200, body: {ok: true}}}}
        expect: {allowed: true, params: {title: t, owner: u1}}
      - name: webhook says no
        request: {service: docs, endpoint: write, claims: {id: u1, role: editor}, body: {}}
        fixtures: {webhooks: {"http://policy.test/check": {status: 403}}}
        expect: {allowed: false, status: 403}
      - name: no canned reply is a dead webhook
        request: {service: docs, endpoint: write, claims: {id: u1, role: editor}, body: {}}
        expect: {allowed: false, status: 503}
      - name: the match fails before the webhook
        request: {service: docs, endpoint: write, claims: {id: u1, role: viewer}, body: {}}
        expect: {status: 403, error: editors only}
    """,
    )
    code, out = run(path)
    assert code == 0, out
    assert "4 passed, 0 failed" in out


def test_failures_are_reported_with_a_diff(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
    cases:
      - name: wrong params
        request: {service: docs, endpoint: write, claims: {id: u1, role: editor}, body: {a: 1}}
        fixtures: {webhooks: {"http://policy.test/check": {}}}
        expect: {allowed: true, params: {a: 1, owner: u9}}
      - name: wrong status
        request: {service: docs, endpoint: write, claims: {id: u1, role: viewer}, body: {}}
        expect: {status: 401, error: nope}
    """,
    )
    code, out = run(path)
    assert code == 1
    assert out.splitlines()[-1] == "0 passed, 2 failed"
    assert '-  "owner": "u9"' in out and '+  "owner": "u1"' in out
    assert "status: expected 401, got 403" in out
    assert "error: expected 'nope', got 'editors only'" in out


def test_coverage_lists_rules_never_evaluated(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
    cases:
      - name: viewer stops at the first clause
        request: {service: docs, endpoint: write, claims: {id: u1, role: viewer}, body: {}}
        expect: {status: 403}
    """,
    )
    code, out = run(path, coverage=True)
    assert code == 0, out
    assert "2/5 rules and clauses evaluated" in out
    never = out.split("never evaluated:")[1].split()
    assert never[:3] == [
        "services.docs.endpoints.read.rule",
        "services.docs.endpoints.write.rule.clauses[1]",
        "services.docs.endpoints.write.rule.clauses[2]",
    ]


@pytest.mark.parametrize(
    ("cases", "message"),
    [
        ("cases: []\n", "cases: must not be empty"),
        (
            "cases:\n  - {name: a, request: {pth: /}, expect: {allowed: true}}\n",
            "unknown key 'pth'",
        ),
        ("cases:\n  - {name: a, request: {path: /}, expect: {}}\n", "give at least one of"),
        (
            "cases:\n  - {name: a, request: {service: docs, endpoint: read},"
            " expect: {status: 1}}\n",
            "request.path is required",
        ),
        ("cases: [\n", "invalid YAML/JSON"),
    ],
)
def test_bad_test_files_exit_2_without_traceback(
    tmp_path: Path, cases: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, cases)
    assert main(["test", str(path)]) == 2
    out = capsys.readouterr()
    assert message in out.out
    assert "Traceback" not in out.out + out.err


def test_bad_config_is_a_bad_test_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "cases:\n  - {name: a, request: {path: /}, expect: {status: 403}}\n",
        config="project: t\nservices: {s: {endpoints: {e: {rule: {rule: nope}}}}}\n",
    )
    code, out = run(path)
    assert code == 2
    assert "config c.yaml:" in out and "unknown rule 'nope'" in out


def test_directories_are_searched(tmp_path: Path) -> None:
    write(tmp_path, "cases:\n  - {name: a, request: {path: /x}, expect: {status: 403}}\n")
    code, out = run(tmp_path)
    assert code == 0 and "1 passed, 0 failed" in out


@pytest.mark.skipif(not (ROOT / "config" / "example.yaml").exists(), reason="no example config")
def test_example_rule_tests_pass_and_cover_everything(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", "--coverage", str(ROOT / "config" / "example.tests.yaml")]) == 0
    out = capsys.readouterr().out
    assert " 0 failed" in out.splitlines()[-1]
    assert "never evaluated" not in out


def test_coverage_names_the_config_as_the_reader_would(monkeypatch, capsys):
    """The README's sample output reads the same on every machine: no absolute path."""
    from authz.cli import main

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    assert main(["test", "--coverage", "config/example.tests.yaml"]) == 0
    out = capsys.readouterr().out
    assert "coverage of config/example.yaml: " in out and str(root) not in out
