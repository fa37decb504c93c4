"""Compiles validated rule models into `Rule` objects, once, at config load.

The table of rule kinds is explicit: each family module exports `COMPILERS` (kind -> compile
function) and is imported here. Semantic errors (an operator not allowed for a type, a
literal of the wrong type, an undeclared `db` alias) are collected in `CompileContext.errors`
with the exact config path, so `authz validate` can print all of them at once.
"""

from __future__ import annotations

from typing import Any

from authz.config.schema import Config
from authz.errors import ConfigError
from authz.rules import fields, logic, match, query, webhook
from authz.rules.base import Context, Failure, Rule
from authz.rules.compiling import CompileContext, CompileFn

KINDS: dict[str, CompileFn] = {
    **logic.COMPILERS,
    **match.COMPILERS,
    **query.COMPILERS,
    **webhook.COMPILERS,
    **fields.COMPILERS,
}


class _Invalid(Rule):
    """Stands in for a rule that failed to compile; never served (the config is rejected)."""

    kind = "invalid"

    async def evaluate(self, ctx: Context) -> Failure | None:  # pragma: no cover
        return self.fail("invalid rule", error=True)  # an invalid config never serves


def compile_rule(model: Any, cc: CompileContext, path: str) -> Rule:
    """Compile one rule model (and, through `cc.compile`, its nested rules)."""
    if cc.dispatch is None:
        cc.dispatch = compile_rule
    fn = KINDS.get(model.rule)
    if fn is None:
        cc.error(path, f"rule '{model.rule}' is not supported by this build")
        return _Invalid(path)
    return fn(model, cc, path)


def compile_or_raise(
    model: Any, path: str, config: Config | None = None
) -> tuple[Rule, CompileContext]:
    cc = CompileContext(config=config)
    rule = compile_rule(model, cc, path)
    if cc.errors:
        raise ConfigError(cc.errors)
    return rule, cc
