import pytest

from authz.rules.compiling import CompileContext
from authz.rules.refs import compile_path, compile_structure, compile_value, split_path
from authz.values import MISSING

ARGS = {
    "auth": {"id": "u1", "k": "b"},
    "params": {"items": [{"sku": "A"}, {"sku": "B"}], "m": {"a": 1, "b": 2, "0": "zero"}},
    "headers": {"x-user": "h"},
}


def get(text, args=ARGS):
    cc = CompileContext()
    g = compile_value(text, cc, "p")
    assert not cc.errors, cc.errors
    return g(args)


@pytest.mark.parametrize(
    ("ref", "value"),
    [
        ("args.auth.id", "u1"),
        ("args.params.items.1.sku", "B"),
        ("args.params.items.2.sku", MISSING),
        ("args.params.items.x", MISSING),
        ("args.params.m.0", "zero"),
        ("args.params.m[args.auth.k]", 2),
        ("args.params.m[args.auth.nope]", MISSING),
        ("args.params.items[0].sku", "A"),
        ("args.headers.x-user", "h"),
        ("args.auth.id.deeper", MISSING),
        ("args.nothing", MISSING),
        ("just text", "just text"),
        ("argsX.y", "argsX.y"),
    ],
)
def test_paths(ref, value):
    assert get(ref) == value if value is not MISSING else get(ref) is MISSING


def test_reads_are_recorded():
    cc = CompileContext()
    compile_value("args.params.a", cc, "p")
    compile_value("utils.length(args.query.q)", cc, "p")
    assert cc.reads == {"params", "query"}


@pytest.mark.parametrize("bad", ["args.", "args..a", "args.a[", "args.a]b", "args.a[]"])
def test_invalid_paths_are_config_errors(bad):
    cc = CompileContext()
    compile_value(bad, cc, "here")
    assert cc.errors and cc.errors[0].startswith("here: invalid reference")


def test_split_path():
    assert split_path("a.b[args.x.y].0") == ["a", "b", ("args.x.y",), "0"]


def test_template_fills_references_and_returns_missing_when_one_does_not_resolve():
    cc = CompileContext()
    g = compile_structure({"user": "args.auth.id", "list": ["x", "args.params.m.a"]}, cc, "p")
    assert g(ARGS) == {"user": "u1", "list": ["x", 1]}
    g2 = compile_structure({"user": "args.auth.nope"}, cc, "p")
    assert g2(ARGS) is MISSING
    const = compile_structure({"a": [1, 2]}, cc, "p")
    assert const(ARGS) == {"a": [1, 2]}


def test_a_list_with_a_reference_that_does_not_resolve_is_missing():
    cc = CompileContext()
    g = compile_structure(["x", "args.auth.nope"], cc, "p")
    assert g(ARGS) is MISSING
    assert compile_structure(["args.auth.nope", "args.auth.id"], cc, "p")(ARGS) is MISSING
    assert compile_structure(["args.auth.id", 1], cc, "p")(ARGS) == ["u1", 1]


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("args.a[args.b[args.c]].d", ["args", "a", ("args.b[args.c]",), "d"]),
        ("args.a[ 'x' ][0]", ["args", "a", ("'x'",), ("0",)]),
        ("args.a[0].b", ["args", "a", ("0",), "b"]),
        ("a", ["a"]),
    ],
)
def test_split_path_brackets(text, parts):
    assert split_path(text) == parts


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("args.a[args.b", "unclosed '['"),
        ("args.a[args.b[args.c]", "unclosed '['"),
        ("args.a.", "path ends with '.'"),
        ("args..a", "empty path segment"),
        ("args.a[ ]", "empty '[]'"),
        ("args.a[]", "empty '[]'"),
        ("args.a]", "unmatched ']'"),
    ],
)
def test_split_path_errors(bad, why):
    with pytest.raises(ValueError) as e:
        split_path(bad)
    assert str(e.value) == why


@pytest.mark.parametrize("bad", ["args", "args.", "argsx.a", "args.a[args.b"])
def test_an_invalid_reference_is_a_config_error_and_never_resolves(bad):
    cc = CompileContext()
    g = compile_path(bad, cc, "here")
    assert g(ARGS) is MISSING
    assert len(cc.errors) == 1 and cc.errors[0].startswith(f"here: invalid reference {bad!r}")


@pytest.mark.parametrize(
    ("ref", "names"),
    [
        ("args.params.a", {"params": {"a"}}),
        ("args.params", {"params": None}),
        ("args.params[args.auth.k]", {"params": None, "auth": {"k"}}),
        ("args.params.a[args.auth.k]", {"params": {"a"}, "auth": {"k"}}),
    ],
)
def test_the_names_a_reference_reads_are_recorded(ref, names):
    cc = CompileContext()
    compile_value(ref, cc, "p")
    assert cc.names == names and cc.reads == set(names)


def test_a_computed_key_reads_the_whole_args():
    cc = CompileContext()
    g = compile_path("args[args.auth.k].id", cc, "p")
    assert cc.reads == {"*", "auth"} and not cc.errors
    assert g({"auth": {"k": "auth", "id": "u1"}}) == "u1"


LISTS = {"auth": {"items": ["a", "b"], "m": {"1": "one", "x": "ex"}}}


@pytest.mark.parametrize(
    ("key", "value"),
    [(0, "a"), (1, "b"), (2, MISSING), (-1, MISSING), (True, MISSING), (1.0, MISSING),
     ("1", "b"), ("x", MISSING), (None, MISSING)],
)  # fmt: skip
def test_a_computed_key_indexes_arrays_only_with_a_non_negative_int(key, value):
    args = {**LISTS, "params": {"k": key}}
    found = get("args.auth.items[args.params.k]", args)
    assert found is MISSING if value is MISSING else found == value
    on_object = get("args.auth.m[args.params.k]", args)
    expected = {"1": "one", "x": "ex"}.get(key) if isinstance(key, str) else None
    expected = "one" if key == 1 and type(key) is int else expected
    assert on_object == expected if expected is not None else on_object is MISSING


@pytest.mark.parametrize(
    ("call", "value"),
    [
        ("utils.length('')", 0),
        ("utils.length('abc')", 3),
        ('utils.length("a,b)")', 4),
        ("utils.length(args.params.items[args.auth.i])", 1),
        ("utils.number(12)", 12),
        ("utils.number(-1.5)", -1.5),
        ("utils.number(true)", MISSING),
        ("utils.length(null)", MISSING),
        ("utils.length( args.auth.id )", 2),
        ("utils.exists(args.auth.id)", True),
        ("utils.addDuration('2026-01-01T00:00:00Z','2h')", "2026-01-01T02:00:00Z"),
        ("utils.addDuration('2026-01-01T00:00:00Z', '1h')", "2026-01-01T01:00:00Z"),
    ],
)
def test_utils_arguments(call, value):
    args = {**ARGS, "auth": {"id": "u1", "i": 1}, "params": {"items": ["xy", "z"]}}
    found = get(call, args)
    assert found is MISSING if value is MISSING else found == value


@pytest.mark.parametrize(
    ("call", "why"),
    [
        ("utils.(args.a)", "expected utils.name(...)"),
        ("utils.length('a' 'b')", "expected ',' or ')'"),
        ("utils.length(args.auth.id", "missing ')'"),
        ("utils.length(args.auth.id)x", "unexpected text after the call: 'x'"),
        ("utils.length('abc)", "unterminated string"),
        ("utils.length(" + "x" * 30 + ")", "cannot read argument at " + repr("x" * 20)),
        ("utils.length(1, 2)", "utils.length takes 1 argument(s), got 2"),
        ("utils.exists('x')", "argument 1 of utils.exists must be an args.* reference"),
    ],
)
def test_utils_call_errors(call, why):
    cc = CompileContext()
    g = compile_value(call, cc, "here")
    assert g(ARGS) is MISSING
    assert cc.errors == [f"here: invalid utils call {call!r}: {why}"]
