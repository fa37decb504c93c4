"""The one interface every compiled rule implements, and the per-request evaluation context.

A rule is compiled once at config load into a `Rule` object and only walked per request.
`evaluate` returns None when the rule passes and a `Failure` when it does not: a failure is
either a plain *fail* (the condition is false) or an *error* (it could not be evaluated: a
reference that does not resolve, a value of the wrong type). Exceptions are reserved for what
must stop the whole evaluation: `DependencyError` (503), `RequestError` (400).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from authz.runtime import Runtime

from authz.errors import AuthzError, DependencyError, RequestError


@dataclass(slots=True, frozen=True)
class Failure:
    """Why a rule did not pass."""

    path: str  # config path of the rule that failed, e.g. "services.a.endpoints.b.rule.clauses[1]"
    reason: str  # for the decision log and explain; never sent to the client
    error: bool = (
        False  # True: could not be evaluated (docs/rules.md, match: "error"); False: was false
    )
    message: str | None = None  # the `error` text of the rule, sent to the client in the 403
    fatal: bool = False  # denies the request even inside `or` (a field rule that cannot act)

    def as_fatal(self) -> Failure:
        return Failure(self.path, self.reason, self.error, self.message, True)


@dataclass(slots=True)
class TraceEntry:
    """One evaluated rule, recorded only when a trace was asked for (explain, `authz check`)."""

    path: str
    kind: str
    passed: bool
    error: bool
    detail: str

    @property
    def result(self) -> str:
        """pass | fail | error: the one vocabulary of explain, `authz check` and the debug API."""
        return "pass" if self.passed else "error" if self.error else "fail"


class Context:
    """Everything one evaluation reads and writes. Created per request, never shared."""

    __slots__ = ("args", "changes", "detail", "runtime", "trace")

    def __init__(self, args: dict[str, Any], runtime: Runtime | None = None, trace: bool = False):
        self.args = args  # the request variables (docs/rules.md, the args model)
        # resources: datastores, http client, identity, keyring; None: evaluated without
        # any (rules that need one deny)
        self.runtime = runtime
        # field-rule changes, applied in rule order (docs/rules.md, field rules)
        self.changes: list[Any] = []
        self.trace: list[TraceEntry] | None = [] if trace else None
        self.detail = ""  # set by a rule while tracing: its inputs as resolved

    def rollback(self, mark: int) -> None:
        """Undo the changes recorded after `mark` (an `or` clause that did not pass)."""
        while len(self.changes) > mark:
            self.changes.pop().undo(self.args)


class Rule:
    """A compiled rule. Subclasses set `kind` and implement `evaluate`.

    A rule that never awaits (no datastore, no webhook, only such clauses) sets `sync` and
    implements `evaluate_now`: serving then walks it with plain calls, not a coroutine per
    rule. `evaluate` must give the same result (tracing still goes through it)."""

    kind: ClassVar[str] = ""
    sync: bool = False  # a class attribute, or a slot where it depends on the clauses
    always_passes: ClassVar[bool] = False  # evaluate_now returns None whatever it reads
    __slots__ = ("error", "path")

    def __init__(self, path: str, error: str | None = None):
        self.path = path
        self.error = error

    async def evaluate(self, ctx: Context) -> Failure | None:
        raise NotImplementedError

    def evaluate_now(self, ctx: Context) -> Failure | None:
        """`evaluate` without awaiting: only called when `sync` is true."""
        raise NotImplementedError

    def children(self) -> tuple[Rule, ...]:
        """Nested rules (clauses), for coverage and explain."""
        return ()

    def fail(self, reason: str, error: bool = False) -> Failure:
        return Failure(self.path, reason, error, self.error)

    def own(self, failure: Failure) -> Failure:
        """A nested failure made this rule fail: the innermost `error` text wins."""
        if failure.message is None and self.error is not None:
            return Failure(failure.path, failure.reason, failure.error, self.error, failure.fatal)
        return failure


def _stopped(rule: Rule, ctx: Context, trace: list[TraceEntry], exc: AuthzError) -> None:
    """Record a rule that stopped the evaluation (a 503 or 400), so --explain shows what ran
    before it and where the failure came from: the rule that raised, then each rule it was
    inside of, pointing at it."""
    ctx.detail = ""
    origin = getattr(exc, "rule_path", None)
    if origin is None:
        exc.rule_path = rule.path  # type: ignore[attr-defined]
        detail = f"{exc.status}: {exc}"
    else:
        detail = f"stopped by {origin[len(rule.path) :].lstrip('.')} ({exc.status})"
    trace.append(TraceEntry(rule.path, rule.kind, False, True, detail))


def run(rule: Rule, ctx: Context) -> Awaitable[Failure | None]:
    """Evaluate a nested rule, recording it when tracing. Composite rules await this.

    Not tracing (serving), it is the rule's own `evaluate`: no wrapper coroutine per rule."""
    if ctx.trace is None:
        return rule.evaluate(ctx)
    return _traced(rule, ctx, ctx.trace)


async def _traced(rule: Rule, ctx: Context, trace: list[TraceEntry]) -> Failure | None:
    try:
        result = await rule.evaluate(ctx)
    except (DependencyError, RequestError) as exc:
        _stopped(rule, ctx, trace, exc)
        raise
    detail, ctx.detail = ctx.detail, ""
    if result is not None:
        detail = result.reason
        if result.path.startswith(rule.path + "."):  # a composite failed by a clause
            detail = f"{result.path[len(rule.path) + 1 :]}: {detail}"
    trace.append(
        TraceEntry(
            rule.path,
            rule.kind,
            result is None,
            result is not None and result.error,
            detail,
        )
    )
    return result
