import pytest

from authz.rules.compiling import CompileContext
from authz.rules.refs import compile_structure, compile_value, split_path
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
