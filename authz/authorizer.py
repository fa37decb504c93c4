"""One compiled config version: resolve -> identify -> evaluate, giving a Decision.

Built once per config load (every rule compiled, every template parsed, every constant
response part prepared); `check` only walks what was built. Every path out of `check`
returns a Decision: an unexpected exception is a 500-class deny, never an error to Envoy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from authz.config.schema import Config, Endpoint
from authz.datastores.schema import query_uses
from authz.decision import Decision
from authz.errors import ConfigError, DependencyError, RequestError, TokenError
from authz.identity.sources import Accepted
from authz.mutations import apply_changes
from authz.observability.metrics import EndpointMetrics, Metrics
from authz.request import Reading, Request, interpret
from authz.resolve import Route, Router, compile_path_template
from authz.rules.base import Context, Failure, Rule, run
from authz.rules.compiler import compile_rule
from authz.rules.compiling import CompileContext
from authz.runtime import Runtime

log = logging.getLogger("authz")

NO_RULE = "no rule for this endpoint"
DRY_RUN_HEADER = "x-authz-dry-run"
# A denied request has no defined set of field changes (an `and` stops at its first failing
# clause): allowing it would send what the field rules mask.
DRY_RUN_FIELD_RULES = (
    "dry-run is not allowed on an endpoint with field rules (force, remove, encrypt, decrypt, "
    "hash): a request the rules deny would be allowed without them; use mode: enforce"
)


@dataclass(slots=True)
class CompiledEndpoint:
    service: str
    name: str
    rule: Rule | None
    needs_token: (
        bool  # every top-level rule but `allow` needs a verified token (docs/rules.md, tokens)
    )
    reads_headers: bool
    reads_query: bool
    reads_params: bool
    dry_run: bool  # denials are allowed and marked (never on an endpoint with field rules)
    body_plan: bool  # body or response field rules: ext_proc applies a plan decided here
    reading: Reading  # how a request to this endpoint is interpreted (authz/request.py)
    # what field rules change (params, query, headers, res): `envoy-config --transport http`
    # refuses what that transport cannot carry
    field_targets: frozenset[str] = frozenset()
    # the endpoint's `identity:` sources; None for the default [jwt] (today's Check path)
    accepted: Accepted | None = None

    @property
    def field_rules(self) -> bool:
        """Envoy must send this endpoint's bodies through ext_proc."""
        return self.body_plan


class Authorizer:
    def __init__(
        self,
        config: Config,
        runtime: Runtime | None = None,
        *,
        dry_run: bool = False,
        metrics: Metrics | None = None,
    ):
        self.config = config
        self.runtime = runtime if runtime is not None else Runtime(config)
        self.dry_run = dry_run
        self.metrics = metrics
        self.endpoints: list[CompiledEndpoint] = []
        self.router = Router(self._compile_all())
        # The tables the query rules name, which the runtime checks for /readyz.
        self.runtime.queries = query_uses(e.rule for e in self.endpoints)
        # Per-endpoint metric children bound once here, looked up per Check by a tuple key.
        self.endpoint_metrics: dict[tuple[str | None, str | None], EndpointMetrics] = (
            metrics.endpoints((e.service, e.name) for e in self.endpoints) if metrics else {}
        )
        auth = config.auth
        self._token_header = auth.serviceToken.header.lower()
        self._sign = auth.serviceToken.enabled
        # Client-sent copies of the headers this service sets upstream never get through: a
        # header we set overwrites the client's (Envoy 1.40), one we do not set is removed, and
        # the `_` spelling (which some frameworks read as `-`) is always removed. Envoy applies
        # headers_to_remove after the headers it sets, so a header we set is never listed.
        ours = (self._token_header, DRY_RUN_HEADER)
        underscored = [h.replace("-", "_") for h in ours]
        self._remove = [*underscored, *([] if self._sign else [self._token_header])]
        self._remove_unless_dry_run = [*self._remove, DRY_RUN_HEADER]
        # decode reads the client certificate only for a config that can use it (auth.mtls)
        self.reads_peer = auth.mtls is not None
        self._www = f'Bearer realm="{config.project}"'
        self._www_invalid = self._www + ', error="invalid_token"'

    @property
    def version(self) -> str:
        return self.config.version

    # --- load time ---------------------------------------------------------------------

    def _compile_all(self) -> list[Route]:
        errors: list[str] = []
        if self.config.auth.serviceToken.enabled and not self.runtime.identity.can_sign:
            errors.append(
                "auth.secrets: no key can sign the upstream service token: add a secret (HS*) "
                "or a privateKey, or set auth.serviceToken.enabled: false"
            )
        routes: list[Route] = []
        seen: dict[tuple[str, str], str] = {}
        for sname, service in self.config.services.items():
            for ename, ep in service.endpoints.items():
                path = f"services.{sname}.endpoints.{ename}"
                compiled, route = self._compile_endpoint(sname, ename, ep, path, errors)
                self.endpoints.append(compiled)
                routes.append(route)
                for method in route.methods or ("*",):
                    key = (method, ep.path or "")
                    if ep.path and key in seen:
                        errors.append(f"{path}.path: same method and path as {seen[key]}")
                    seen.setdefault(key, path)
        if errors:
            raise ConfigError(errors)
        return routes

    def _compile_endpoint(
        self, sname: str, ename: str, ep: Endpoint, path: str, errors: list[str]
    ) -> tuple[CompiledEndpoint, Route]:
        cc = CompileContext(config=self.config)
        rule = compile_rule(ep.rule, cc, f"{path}.rule") if ep.rule is not None else None
        template = None
        if ep.path is not None:
            try:
                template = compile_path_template(ep.path)
            except ValueError as exc:
                cc.error(f"{path}.path", str(exc))
        if ep.mode == "dry-run" and cc.field_targets:
            cc.error(f"{path}.mode", DRY_RUN_FIELD_RULES)
        elif self.dry_run and cc.field_targets:
            log.warning("%s: has field rules, so it keeps enforcing under --dry-run", path)
        errors.extend(cc.errors)
        reading = Reading.of(cc.reads, cc.names)
        accepted = self._accepted(ep, path, errors)
        compiled = CompiledEndpoint(
            service=sname,
            name=ename,
            rule=rule,
            needs_token=rule is not None and rule.kind != "allow",
            reads_headers=reading.headers,
            reads_query=reading.query,
            reads_params=reading.params,
            dry_run=(ep.mode == "dry-run" or self.dry_run) and not cc.field_targets,
            body_plan=bool(cc.field_targets & {"params", "res"}),
            reading=reading,
            field_targets=frozenset(cc.field_targets),
            accepted=None if accepted.jwt_only else accepted,
        )
        methods = (
            None
            if ep.method == "*" or "*" in ep.method
            else frozenset([ep.method] if isinstance(ep.method, str) else ep.method)
        )
        return compiled, Route(sname, ename, methods, template, compiled)

    def _accepted(self, ep: Endpoint, path: str, errors: list[str]) -> Accepted:
        """The endpoint's identity sources; each must be configured under `auth`."""
        auth = self.config.auth
        configured = {
            "jwt": True, "apiKey": auth.apiKeys is not None, "mtls": auth.mtls is not None,
            "introspection": bool(auth.introspection),
        }  # fmt: skip
        for name in ep.identity:
            if not configured[name]:
                section = {"apiKey": "apiKeys"}.get(name, name)
                errors.append(f"{path}.identity: {name} needs auth.{section} in the config")
        return Accepted.of(ep.identity)

    # --- per request -------------------------------------------------------------------

    async def check(self, req: Request, trace: bool = False) -> Decision:
        # One coroutine per Check: a token verified before and a rule that never awaits
        # (Rule.sync) cost plain calls, not a coroutine each (creating and awaiting one costs
        # more than the call itself).
        try:
            found = self.router.resolve(req.method, req.path, req.context)
            if found is None:
                return self._deny(req, None, 403, "no endpoint matches", NO_RULE)
            ep, path_params = found
            rule = ep.rule
            if rule is None:
                return self._deny(req, ep, 403, "the endpoint has no rule", NO_RULE)
            ctx: Context | None = None
            try:
                claims: dict[str, Any] = {}
                token = source = None
                if ep.needs_token and ep.accepted is not None:  # an `identity:` list
                    caller = await self.runtime.identity.authenticate(
                        ep.accepted, req.headers, req.peer
                    )
                    if caller is None:
                        return self._unauthorized(req, ep, "no token", self._www)
                    source, token, claims = caller
                elif ep.needs_token:
                    token, known = self.runtime.identity.identify(req.headers)
                    if token is None:
                        return self._unauthorized(req, ep, "no token", self._www)
                    if known is None:
                        known = await self.runtime.identity.verify(token)
                    claims, source = known, "jwt"
                args = self._args(ep, req, claims, token, path_params)
                if source is not None:
                    args["identity"] = source  # jwt | apiKey | mtls | introspection
                ctx = Context(args, self.runtime, trace)
                if rule.sync and not trace:
                    failure = rule.evaluate_now(ctx)
                else:
                    failure = await run(rule, ctx)
            except TokenError as exc:
                if self.metrics is not None:
                    self.metrics.token_failure(exc.kind)
                return self._unauthorized(req, ep, f"token: {exc.reason}", self._www_invalid)
            except (RequestError, DependencyError) as exc:
                denied = self._deny(req, ep, exc.status, str(exc), _public_message(exc))
                if ctx is not None:  # --explain: what ran before the failure, and where
                    denied.trace = ctx.trace
                return denied
            decision = self._decide(req, ep, ctx, failure, claims)
            if trace:  # `authz check`, explain: who the caller was
                decision.identity, decision.auth = source, claims
            return decision
        except Exception:
            log.exception("internal error in Check (request id %a)", req.request_id or "-")
            return self._deny(req, None, 500, "internal error", "internal error")

    def _decide(
        self,
        req: Request,
        ep: CompiledEndpoint,
        ctx: Context,
        failure: Failure | None,
        claims: dict[str, Any],
    ) -> Decision:
        """The decision once the rule ran: its failure, or an allow with its changes."""
        if failure is not None:
            reason = f"{failure.path}: {failure.reason}"
            decision = self._deny(req, ep, 403, reason, failure.message or "access denied")
            decision.trace = ctx.trace
            return decision
        args = ctx.args
        decision = self._allow(req, ep, claims.get("id"))
        decision.params = args.get("params")
        decision.trace = ctx.trace
        if ctx.changes or ep.body_plan:
            decision.headers_to_remove = list(decision.headers_to_remove)
            apply_changes(decision, args, ctx.changes, req.body, ep.body_plan)
        return decision

    def _args(
        self,
        ep: CompiledEndpoint,
        req: Request,
        claims: dict[str, Any],
        token: str | None,
        path_params: dict[str, str],
    ) -> dict[str, Any]:
        # args.headers, args.query and args.params are only there for rules that read them.
        # (Whole literals: building the dict key by key costs more.)
        headers, query, params = interpret(req, ep.reading, self.config.limits)
        args: dict[str, Any] = {
            "auth": claims, "pathParams": path_params, "method": req.method,
            "path": req.path, "service": ep.service, "endpoint": ep.name,
        }  # fmt: skip
        if headers is not None:
            args["headers"] = headers
        if token is not None:
            args["token"] = token
        if query is not None:
            args["query"] = query
            if ep.reading.params:
                args["params"] = params
        return args

    # --- decisions ---------------------------------------------------------------------

    def _allow(self, req: Request, ep: CompiledEndpoint, caller_id: Any) -> Decision:
        headers: list[tuple[str, str]] = []
        if self._sign:
            caller = None if caller_id is None else str(caller_id)
            headers.append((self._token_header, self.runtime.identity.service_token(caller)))
        return Decision(
            True, 200, "allowed", None, ep.service, ep.name, req.request_id, headers,
            self._remove_unless_dry_run,
        )  # fmt: skip

    def _deny(
        self, req: Request, ep: CompiledEndpoint | None, status: int, reason: str, message: str
    ) -> Decision:
        if ep is not None and ep.dry_run:
            decision = self._allow(req, ep, None)
            decision.reason = f"dry-run, would deny {status}: {reason}"
            decision.dry_run = True
            decision.headers.append((DRY_RUN_HEADER, f"deny {status}"))
            decision.headers_to_remove = self._remove
            return decision
        return Decision(
            False,
            status,
            reason,
            message,
            ep.service if ep else req.context.get("service"),
            ep.name if ep else req.context.get("endpoint"),
            req.request_id,
        )

    def _unauthorized(self, req: Request, ep: CompiledEndpoint, reason: str, www: str) -> Decision:
        message = "missing token" if reason == "no token" else "invalid token"
        decision = self._deny(req, ep, 401, reason, message)
        if not decision.allowed:
            decision.response_headers_to_add.append(("www-authenticate", www))
        return decision


def _public_message(exc: Exception) -> str:
    # 400s explain what is wrong with the client's own input; a 503 says nothing internal.
    if isinstance(exc, RequestError):
        return str(exc)
    return "a service needed for authorization is unavailable"
