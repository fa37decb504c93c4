"""Compile a rule from a plain dict and evaluate it, as the authorizer does."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import TypeAdapter

from authz.config.schema import AnyRule
from authz.errors import ConfigError
from authz.rules.base import Context, Failure, Rule
from authz.rules.compiler import compile_rule
from authz.rules.compiling import CompileContext

_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyRule)


def compile_dict(rule: dict[str, Any], config: Any = None) -> tuple[Rule, CompileContext]:
    cc = CompileContext(config=config)
    compiled = compile_rule(_ADAPTER.validate_python(rule), cc, "rule")
    if cc.errors:
        raise ConfigError(cc.errors)
    return compiled, cc


def evaluate(
    rule: dict[str, Any] | Rule, args: dict[str, Any], runtime: Any = None
) -> Failure | None:
    compiled = rule if isinstance(rule, Rule) else compile_dict(rule)[0]
    return asyncio.run(compiled.evaluate(Context(args, runtime)))


def outcome(rule: dict[str, Any], args: dict[str, Any]) -> str:
    """'pass', 'fail' or 'error'."""
    failure = evaluate(rule, args)
    if failure is None:
        return "pass"
    return "error" if failure.error else "fail"
