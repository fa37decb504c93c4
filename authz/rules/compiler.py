"""Compiles validated rule models into `Rule` objects, once, at config load.

Each rule family registers a compile function for its kinds with `@compiles("kind")`.
Semantic errors (an operator not allowed for a type, a literal of the wrong type, an
undeclared `db` alias) are collected in `CompileContext.errors` with the exact config path,
so `authz validate` can print all of them at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from authz.errors import ConfigError
from authz.rules.base import Rule

CompileFn = Callable[[Any, "CompileContext", str], Rule]
_COMPILERS: dict[str, CompileFn] = {}


def compiles(*kinds: str) -> Callable[[CompileFn], CompileFn]:
    """Register a compile function for one or more rule kinds."""

    def register(fn: CompileFn) -> CompileFn:
        for kind in kinds:
            _COMPILERS[kind] = fn
        return fn

    return register


@dataclass
class CompileContext:
    """What a compile function may consult, and where it reports problems."""

    config: Any = None  # the whole validated Config, for aliases, keys, limits
    errors: list[str] = field(default_factory=list)
    reads: set[str] = field(default_factory=set)  # top-level args keys the rules read
    # args.<key>.<name> names read or changed under each key; None: the whole key is read
    names: dict[str, set[str] | None] = field(default_factory=dict)
    field_targets: set[str] = field(default_factory=set)  # params, query, headers, res

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def read(self, key: str, name: str | None = None) -> None:
        """Note that a rule reads args.<key> ("*" for the whole args object), and which name
        under it (None: all of it)."""
        self.reads.add(key)
        names = self.names.setdefault(key, set())
        if name is None:
            self.names[key] = None
        elif names is not None:
            names.add(name)


class _Invalid(Rule):
    """Stands in for a rule that failed to compile; never served (the config is rejected)."""

    kind = "invalid"

    async def evaluate(self, ctx):  # pragma: no cover - an invalid config never serves
        return self.fail("invalid rule", error=True)


def compile_rule(model: Any, cc: CompileContext, path: str) -> Rule:
    """Compile one rule model (and, through the family compilers, its nested rules)."""
    _load_families()
    fn = _COMPILERS.get(model.rule)
    if fn is None:
        cc.error(path, f"rule '{model.rule}' is not supported by this build")
        return _Invalid(path)
    return fn(model, cc, path)


def compile_or_raise(model: Any, path: str, config: Any = None) -> tuple[Rule, CompileContext]:
    cc = CompileContext(config=config)
    rule = compile_rule(model, cc, path)
    if cc.errors:
        raise ConfigError(cc.errors)
    return rule, cc


def _load_families() -> None:
    # Importing a family module registers its compile functions.
    from authz.rules import fields, logic, match, query, webhook  # noqa: F401
