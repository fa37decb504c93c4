"""The logic rules: allow, deny, authenticated, and, or (docs/rules.md)."""

from __future__ import annotations

from authz.config.schema import AllowRule, AndRule, AuthenticatedRule, DenyRule, OrRule
from authz.rules.base import Context, Failure, Rule, run
from authz.rules.compiling import CompileContext, CompileFn


class _Constant(Rule):
    """A rule whose outcome depends on nothing it reads."""

    sync = True

    async def evaluate(self, ctx: Context) -> Failure | None:
        return self.evaluate_now(ctx)


class Allow(_Constant):
    kind = "allow"
    always_passes = True

    def evaluate_now(self, ctx: Context) -> Failure | None:
        return None


class Deny(_Constant):
    kind = "deny"

    def evaluate_now(self, ctx: Context) -> Failure | None:
        return self.fail("denied by a deny rule")


class Authenticated(_Constant):
    """Passes for a verified token; the pipeline verifies it before any non-allow rule runs."""

    kind = "authenticated"
    always_passes = True

    def evaluate_now(self, ctx: Context) -> Failure | None:
        return None


class _Composite(Rule):
    """A rule made of clauses; `sync` when every clause is."""

    __slots__ = ("clauses", "sync")

    def __init__(self, path: str, error: str | None, clauses: tuple[Rule, ...]):
        super().__init__(path, error)
        self.clauses = clauses
        self.sync = all(c.sync for c in clauses)

    def children(self) -> tuple[Rule, ...]:
        return self.clauses


class And(_Composite):
    kind = "and"
    __slots__ = ("_deciding",)

    def __init__(self, path: str, error: str | None, clauses: tuple[Rule, ...]):
        super().__init__(path, error, clauses)
        # evaluate_now skips the clauses that cannot fail (`authenticated` once verified)
        self._deciding = tuple(c for c in clauses if not c.always_passes)

    async def evaluate(self, ctx: Context) -> Failure | None:
        serving = ctx.trace is None
        for clause in self.clauses:
            if clause.sync and serving:
                failure = clause.evaluate_now(ctx)
            else:
                failure = await run(clause, ctx)
            if failure is not None:
                return self.own(failure)
        return None

    def evaluate_now(self, ctx: Context) -> Failure | None:
        for clause in self._deciding:
            failure = clause.evaluate_now(ctx)
            if failure is not None:
                return self.own(failure)
        return None


class Or(_Composite):
    """The first clause that passes decides; an erroring clause counts as not passing."""

    kind = "or"

    async def evaluate(self, ctx: Context) -> Failure | None:
        serving = ctx.trace is None
        last: Failure | None = None
        for clause in self.clauses:
            mark = len(ctx.changes)
            if clause.sync and serving:
                failure = clause.evaluate_now(ctx)
            else:
                failure = await run(clause, ctx)
            if failure is None:
                return None
            ctx.rollback(mark)
            if failure.fatal:  # e.g. masking that could not be decided: never try the next
                return self.own(failure)
            last = failure
        return self._none_passed(last)

    def evaluate_now(self, ctx: Context) -> Failure | None:
        last: Failure | None = None
        for clause in self.clauses:
            mark = len(ctx.changes)
            failure = clause.evaluate_now(ctx)
            if failure is None:
                return None
            ctx.rollback(mark)
            if failure.fatal:
                return self.own(failure)
            last = failure
        return self._none_passed(last)

    def _none_passed(self, last: Failure | None) -> Failure:
        message = self.error if self.error is not None else last.message if last else None
        return Failure(self.path, f"none of the {len(self.clauses)} clauses passed", False, message)


def _compile_simple(
    model: AllowRule | DenyRule | AuthenticatedRule, cc: CompileContext, path: str
) -> Rule:
    cls = {"allow": Allow, "deny": Deny, "authenticated": Authenticated}[model.rule]
    return cls(path, model.error)


def _compile_logic(model: AndRule | OrRule, cc: CompileContext, path: str) -> Rule:
    clauses = tuple(cc.compile(c, f"{path}.clauses[{i}]") for i, c in enumerate(model.clauses))
    return (And if model.rule == "and" else Or)(path, model.error, clauses)


# The kinds this family compiles (the table in rules/compiler.py).
COMPILERS: dict[str, CompileFn] = {
    "allow": _compile_simple,
    "deny": _compile_simple,
    "authenticated": _compile_simple,
    "and": _compile_logic,
    "or": _compile_logic,
}
