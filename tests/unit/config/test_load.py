import pytest

from authz.config.load import load_config, load_config_text
from authz.errors import ConfigError

GOOD = """
project: demo
databases:
  main: {type: sqlite, path: data/app.db}
services:
  orders:
    url: http://orders:8080
    endpoints:
      get:
        method: GET
        path: /v1/orders/{orderId}
        rule: {rule: authenticated}
        mode: dry-run
"""


def errors_of(text: str, env=None) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config_text(text, env or {})
    return exc.value.errors


def test_good_config_loads_with_a_version():
    config = load_config_text(GOOD, {})
    assert config.services["orders"].endpoints["get"].mode == "dry-run"
    assert config.databases["main"].timeout == 0.15
    assert len(config.version) == 12


def test_json_is_accepted():
    config = load_config_text('{"project": "p", "services": {}}', {})
    assert config.project == "p"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("project: p\nbad: 1", "<root>: unknown key 'bad'"),
        ("services: {}", "<root>: missing key 'project'"),
        (
            "project: p\nservices: {s: {endpoints: {e: {rule: {rule: match, eval: '=>', "
            "type: string, f1: a, f2: b}}}}}",
            "services.s.endpoints.e.rule.eval: unknown operator '=>'",
        ),
        (
            "project: p\nservices: {s: {endpoints: {e: {rule: {rule: or, clauses: "
            "[{rule: allow}, {rule: hashh}]}}}}}",
            "services.s.endpoints.e.rule.clauses[1]: unknown rule 'hashh'",
        ),
        (
            "project: p\nservices: {s: {endpoints: {e: {rule: {rule: or, clauses: []}}}}}",
            "services.s.endpoints.e.rule.clauses: must not be empty",
        ),
        (
            "project: p\nservices: {s: {endpoints: {e: {rule: {rule: match, eval: '==', "
            "type: text, f1: a, f2: b}}}}}",
            "services.s.endpoints.e.rule.type: unknown type 'text'",
        ),
        (
            "project: p\nservices: {s: {endpoints: {e: {rule: {rule: allow, extra: 1}}}}}",
            "services.s.endpoints.e.rule: unknown key 'extra'",
        ),
        ("project: p\ndatabases: {m: {type: oracle}}", "databases.m: unknown type 'oracle'"),
        ("project: p\nservices: {s: {endpoints: {e: {method: FETCH}}}}", "unknown HTTP method"),
        ("project: p\nservices: {s: {endpoints: {e: {path: v1}}}}", "must start with '/'"),
        ("project: p\nproject: q", "duplicate key 'project'"),
        ("project: [unclosed", "invalid YAML/JSON at line 1"),
        ("- a\n- b", "the config must be a mapping"),
        ("project: ${MISSING_VAR}", "project: environment variable MISSING_VAR is not set"),
        ("project: p\nauth: {leeway: soon}", "auth.leeway: invalid duration 'soon'"),
    ],
)
def test_errors_name_the_path(text, expected):
    errors = errors_of(text)
    assert any(expected in e for e in errors), errors


def test_every_error_is_reported_at_once():
    text = (
        "project: p\nbad: 1\nservices: {s: {endpoints: {e: {rule: {rule: match, eval: '=>', "
        "type: string, f1: a, f2: b}}, f: {rule: {rule: nope}}}}}"
    )
    assert len(errors_of(text)) == 3


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "nope.yaml")
    assert "cannot read" in str(exc.value)


def test_base_dir_is_the_config_directory(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("project: p\n")
    assert load_config(p).base_dir == tmp_path


def test_yes_no_on_off_are_strings_true_false_are_booleans():
    text = """
project: demo
auth: {serviceToken: {enabled: false}}
services:
  on:
    endpoints:
      yes: {method: GET, path: /yes, rule: {rule: match, type: string, eval: "==", f1: no, f2: off}}
      no: {method: GET, path: /no, rule: {rule: allow}}
"""
    config = load_config_text(text, {})
    assert set(config.services) == {"on"}
    endpoints = config.services["on"].endpoints
    assert set(endpoints) == {"yes", "no"}
    assert (endpoints["yes"].rule.f1, endpoints["yes"].rule.f2) == ("no", "off")
    assert config.auth.serviceToken.enabled is False
