"""The import graph of authz/: no cycle, and no import from a lower layer up to a higher one.

Every import in the package is read with `ast` (module level and inside functions alike, and
`TYPE_CHECKING` blocks too: a lazy import is still a dependency), resolved to the module it
names, and checked against `LAYERS`, the pipeline order written once here. A module may
import its own layer or any layer below; within a layer the graph must have no cycle. A new
module must be placed in a layer (the test fails on one that is not).
"""

from __future__ import annotations

import ast
from pathlib import Path

import authz

PACKAGE = Path(authz.__file__).parent

# Lowest first. A module belongs to the layer of its longest matching prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "infrastructure",
        (
            "authz",  # the package itself (authz/__init__.py)
            "authz.errors",
            "authz.durations",
            "authz.values",
            "authz.cache",
            "authz.numeric",
            "authz.strictjson",
            "authz.config",
            "authz.fetch",
            "authz.crypto",
            "authz.http",
            "authz.observability",
            "authz.debug_descriptor",
        ),
    ),
    (
        "decode",
        (
            "authz.request",
            "authz.param_names",
            "authz.peer",
            "authz.envoy.decode",
            "authz.envoy.http.decode",
        ),
    ),
    ("resolve", ("authz.resolve",)),
    ("identify", ("authz.identity",)),
    (
        "evaluate",
        (
            "authz.rules",
            "authz.datastores",
            "authz.documents",
            "authz.runtime",
            "authz.decision",
        ),
    ),
    ("encode", ("authz.mutations", "authz.plan", "authz.envoy")),
    ("pipeline", ("authz.authorizer", "authz.reload")),
    (
        "front ends",
        (
            "authz.server",
            "authz.checks",
            "authz.workers",
            "authz.cli",
            "authz.validate",
            "authz.checkfile",
            "authz.explain",
            "authz.__main__",
            "authz.ruletest",
            "authz.debug",
            "authz.importers",
            "authz.envoy.bootstrap",
            "authz.envoy.bootstrap_http",
            "authz.envoy.clusters",
            "authz.envoy.tls",
            "authz.envoy.http.server",
        ),
    ),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The authz modules `name` imports (a `from pkg import mod` names the module mod)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, `level - 1` further up
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(name, path, known) for name, path in mods.items()}


def layer_of(name: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = name == prefix or name.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rank)
    return None if best is None else best[1]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    assert [m for m in modules() if layer_of(m) is None] == []


def test_the_import_graph_has_no_cycle():
    assert cycles(graph()) == []


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{src} ({LAYERS[layer_of(src)][0]}) -> {dst} ({LAYERS[layer_of(dst)][0]})"  # type: ignore[index]
        for src, targets in graph().items()
        for dst in sorted(targets)
        if (layer_of(dst) or 0) > (layer_of(src) or 0)
    ]
    assert upward == []


def test_the_checker_sees_cycles_and_upward_imports():
    # The checker itself must be able to fail.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert layer_of("authz.rules.refs") > layer_of("authz.request")  # type: ignore[operator]
    assert layer_of("authz.envoy.bootstrap") > layer_of("authz.envoy.extproc")  # type: ignore[operator]
    assert layer_of("authz.envoy.decode") < layer_of("authz.envoy.encode")  # type: ignore[operator]
