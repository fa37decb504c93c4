from authz.config.env import interpolate


def test_variables_defaults_and_escapes():
    errors: list[str] = []
    env = {"A": "1", "SECRET": "x: [not yaml]"}
    doc = {"a": "${A}", "b": ["${B:-dflt}", "$${A}"], "c": {"d": "pre-${SECRET}-post"}, "n": 3}
    out = interpolate(doc, env, errors)
    assert out == {"a": "1", "b": ["dflt", "${A}"], "c": {"d": "pre-x: [not yaml]-post"}, "n": 3}
    assert errors == []


def test_unset_variable_is_reported_with_its_path():
    errors: list[str] = []
    interpolate({"auth": {"secrets": [{"secret": "${NOPE}"}]}}, {}, errors)
    assert errors == ["auth.secrets[0].secret: environment variable NOPE is not set"]


def test_empty_default_is_allowed():
    errors: list[str] = []
    assert interpolate("${X:-}", {}, errors) == "" and errors == []
