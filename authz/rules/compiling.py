"""What rule compilation shares: the `CompileContext` every compile function gets.

Its own module so that the dispatcher (rules/compiler.py) can import the rule families and
the families can use the context without importing the dispatcher back: a family compiles a
nested rule through `cc.compile(model, path)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from authz.rules.base import Rule

if TYPE_CHECKING:
    from authz.config.schema import Config

# A family's compile function: (rule model, context, config path) -> compiled rule.
CompileFn = Callable[[Any, "CompileContext", str], Rule]


@dataclass
class CompileContext:
    """What a compile function may consult, and where it reports problems."""

    config: Config | None = None  # the whole validated Config, for aliases, keys, limits
    errors: list[str] = field(default_factory=list)
    reads: set[str] = field(default_factory=set)  # top-level args keys the rules read
    # args.<key>.<name> names read or changed under each key; None: the whole key is read
    names: dict[str, set[str] | None] = field(default_factory=dict)
    field_targets: set[str] = field(default_factory=set)  # params, query, headers, res
    # The dispatcher over every rule kind, set by rules.compiler.compile_rule.
    dispatch: CompileFn | None = field(default=None, repr=False)

    def compile(self, model: Any, path: str) -> Rule:
        """Compile a nested rule (a clause) with the dispatcher this context came through."""
        if self.dispatch is None:  # pragma: no cover - compile_rule always sets it
            raise RuntimeError("CompileContext.compile outside rules.compiler.compile_rule")
        return self.dispatch(model, self, path)

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
