"""The logic rules: allow, deny, authenticated, and, or (RULES.md §3)."""

from __future__ import annotations

from authz.config.schema import AndRule, OrRule
from authz.rules.base import Context, Failure, Rule, run
from authz.rules.compiler import CompileContext, compile_rule, compiles


class Allow(Rule):
    kind = "allow"

    async def evaluate(self, ctx: Context) -> Failure | None:
        return None


class Deny(Rule):
    kind = "deny"

    async def evaluate(self, ctx: Context) -> Failure | None:
        return self.fail("denied by a deny rule")


class Authenticated(Rule):
    """Passes for a verified token; the pipeline verifies it before any non-allow rule runs."""

    kind = "authenticated"

    async def evaluate(self, ctx: Context) -> Failure | None:
        return None


class _Composite(Rule):
    """A rule made of clauses."""

    __slots__ = ("clauses",)

    def __init__(self, path: str, error: str | None, clauses: tuple[Rule, ...]):
        super().__init__(path, error)
        self.clauses = clauses

    def children(self) -> tuple[Rule, ...]:
        return self.clauses


class And(_Composite):
    kind = "and"

    async def evaluate(self, ctx: Context) -> Failure | None:
        for clause in self.clauses:
            failure = await run(clause, ctx)
            if failure is not None:
                return self.own(failure)
        return None


class Or(_Composite):
    """The first clause that passes decides; an erroring clause counts as not passing."""

    kind = "or"

    async def evaluate(self, ctx: Context) -> Failure | None:
        last: Failure | None = None
        for clause in self.clauses:
            mark = len(ctx.changes)
            failure = await run(clause, ctx)
            if failure is None:
                return None
            ctx.rollback(mark)
            if failure.fatal:  # e.g. masking that could not be decided: never try the next
                return self.own(failure)
            last = failure
        message = self.error if self.error is not None else last.message if last else None
        return Failure(self.path, f"none of the {len(self.clauses)} clauses passed", False, message)


@compiles("allow", "deny", "authenticated")
def _compile_simple(model, cc: CompileContext, path: str) -> Rule:
    cls = {"allow": Allow, "deny": Deny, "authenticated": Authenticated}[model.rule]
    return cls(path, model.error)


@compiles("and", "or")
def _compile_logic(model: AndRule | OrRule, cc: CompileContext, path: str) -> Rule:
    clauses = tuple(
        compile_rule(c, cc, f"{path}.clauses[{i}]") for i, c in enumerate(model.clauses)
    )
    return (And if model.rule == "and" else Or)(path, model.error, clauses)
