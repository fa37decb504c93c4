"""`webhook`: ask an HTTP service (docs/rules.md, webhook).

POSTs JSON (the whole `args` less the raw token, or `requestTemplate` filled in as data) to a
fixed `url` with a bearer token: minted from `claims` when set, else a short-lived service
token. The end-user token is sent only with `forwardToken: true` (then it is the
`Authorization` bearer, as Space Cloud sends it, and this service's token goes in
`x-sc-token`). 2xx passes and stores the JSON reply; another status fails (403); a
timeout, connection error, redirect, non-JSON or oversized reply raises DependencyError (503).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from authz.cache import MISS, ResultCache, freeze
from authz.config.schema import WebhookRule
from authz.errors import DependencyError
from authz.fetch import FetchError, fetch, url_problem
from authz.rules.base import Context, Failure, Rule
from authz.rules.compiling import CompileContext, CompileFn
from authz.rules.query import compile_store, count_cache
from authz.rules.refs import compile_structure
from authz.values import MISSING, Getter

MAX_REPLY = 1 << 20  # bytes of a webhook reply body
if TYPE_CHECKING:
    import httpx

TOKEN_TTL = 60.0  # seconds a minted webhook token lives
SERVICE_TOKEN_HEADER = "x-sc-token"


class Webhook(Rule):
    kind = "webhook"
    __slots__ = (
        "body", "cache", "claims", "forward_token", "label", "set_store", "timeout", "url",
    )  # fmt: skip
    body: Getter
    cache: ResultCache | None
    claims: Getter | None
    forward_token: bool
    label: str  # the URL without what may hold a secret (metrics, logs)
    set_store: Callable[[dict[str, Any], Any], None]
    timeout: float
    url: str

    async def evaluate(self, ctx: Context) -> Failure | None:
        body = self.body(ctx.args)
        if body is MISSING:
            return self.fail("requestTemplate: a reference does not resolve", error=True)
        claims = self.claims(ctx.args) if self.claims is not None else None
        if claims is MISSING:
            return self.fail("claims: a reference does not resolve", error=True)
        user_token = ctx.args.get("token") if self.forward_token else None
        if self.forward_token and not isinstance(user_token, str):
            return self.fail("forwardToken: the request has no token", error=True)
        payload = _encode(body)
        # every input that can change the answer: the body, the minted claims, and the
        # forwarded token (the webhook decides on it: without it one user's allow is another's)
        key = freeze([payload, claims, user_token]) if self.cache is not None else None
        outcome = self.cache.get(key) if self.cache is not None else MISS
        if self.cache is not None:
            count_cache(ctx, "webhook", outcome is not MISS)
        if outcome is MISS:
            outcome = await self._measured(ctx, payload, claims, user_token)
            if self.cache is not None:
                self.cache.put(key, outcome)
        status, reply = outcome
        if ctx.trace is not None:
            ctx.detail = f"POST {self.label} -> {status}"
        if not 200 <= status < 300:
            return self.fail(f"webhook answered {status}")
        self.set_store(ctx.args, reply)
        return None

    async def _measured(
        self, ctx: Context, payload: bytes, claims: Any, user_token: str | None
    ) -> tuple[int, Any]:
        metrics = ctx.runtime.metrics if ctx.runtime is not None else None
        if metrics is None:
            return await self._call(ctx, payload, claims, user_token)
        dep = metrics.webhook(self.label)
        start = time.perf_counter()
        try:
            outcome = await self._call(ctx, payload, claims, user_token)
        except DependencyError as exc:
            dep.error("timeout" if "timed out" in str(exc) else "error")
            raise
        dep.observe(time.perf_counter() - start)
        return outcome

    async def _call(
        self, ctx: Context, payload: bytes, claims: Any, user_token: str | None
    ) -> tuple[int, Any]:
        runtime = ctx.runtime
        if runtime is None or runtime.http is None:
            raise DependencyError("webhook: no HTTP client")
        service_token = await _token(runtime.identity, claims)
        headers = {
            "content-type": "application/json",
            "accept": "application/json",
        }
        if user_token is not None:
            headers["authorization"] = f"Bearer {user_token}"
            headers[SERVICE_TOKEN_HEADER] = f"Bearer {service_token}"
        else:
            headers["authorization"] = f"Bearer {service_token}"
        try:
            async with asyncio.timeout(self.timeout):
                return await self._post(runtime.http, payload, headers)
        except TimeoutError:
            raise DependencyError(f"webhook {self.label}: timed out") from None
        except DependencyError:
            raise
        except Exception as exc:  # connection refused, reset, protocol errors
            raise DependencyError(f"webhook {self.label}: {type(exc).__name__}") from exc

    async def _post(
        self, http: httpx.AsyncClient, payload: bytes, headers: dict[str, str]
    ) -> tuple[int, Any]:
        try:
            reply = await fetch(
                http, "POST", self.url, limit=MAX_REPLY, timeout=self.timeout,
                headers=headers, content=payload,
            )  # fmt: skip
        except FetchError as exc:
            raise DependencyError(f"webhook {self.label}: {exc}") from None
        status = reply.status
        if 300 <= status < 400:
            raise DependencyError(f"webhook {self.label}: redirect {status} not followed")
        if not 200 <= status < 300:
            return status, None
        return status, _decode(reply.body, self.label)


async def _token(identity: Any, claims: dict[str, Any] | None) -> str:
    if identity is None:
        raise DependencyError("webhook: no identity to sign a token")
    if claims is None:
        token = identity.service_token(None)
    else:
        token = identity.mint_service(claims, TOKEN_TTL)
    if inspect.isawaitable(token):
        token = await token
    text: str = token
    return text


def _decode(raw: bytes, label: str) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise DependencyError(f"webhook {label}: reply is not JSON") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)  # ObjectId, UUID, Decimal from datastores


def _encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), default=_json_default).encode()


# --- compile -----------------------------------------------------------------------------


def compile_webhook(model: WebhookRule, cc: CompileContext, path: str) -> Rule:
    rule = Webhook(path, model.error)
    rule.url = model.url
    rule.label = url_label(model.url)
    _check_url(model.url, cc, f"{path}.url")
    rule.timeout = model.timeout
    if model.timeout <= 0:
        cc.error(f"{path}.timeout", "must be positive")
    rule.forward_token = model.forwardToken
    rule.body = _body(model.requestTemplate, cc, f"{path}.requestTemplate")
    rule.claims = _claims(model.claims, cc, f"{path}.claims")
    rule.set_store = compile_store(model.store, cc, f"{path}.store")
    rule.cache = (
        ResultCache(model.cache.ttl, model.cache.size, model.cache.maxBytes)
        if model.cache
        else None
    )
    return rule


def url_label(url: str) -> str:
    """The URL as metrics and logs name it: without its query, fragment or user info, where
    a configured secret (`?api_key=...`) would sit."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
    except ValueError:
        return "invalid-url"
    return f"{parts.scheme}://{netloc}{parts.path}"


# Request headers that carry credentials: never in the default body (the token's own
# header and the service-token header are added per config).
CREDENTIAL_HEADERS = frozenset(("authorization", "proxy-authorization", "cookie"))


def _body(template: Any, cc: CompileContext, path: str) -> Getter:
    if template is not None:
        return compile_structure(template, cc, path)
    cc.read("*")
    secret_headers = CREDENTIAL_HEADERS | _configured_token_headers(cc.config)

    def whole_args(args: dict[str, Any]) -> Any:
        body = {k: v for k, v in args.items() if k != "token"}
        headers = body.get("headers")
        if isinstance(headers, dict):
            body["headers"] = {
                k: v
                for k, v in headers.items()
                if not (isinstance(k, str) and k.lower() in secret_headers)
            }
        return body

    return whole_args


def _configured_token_headers(config: Any) -> frozenset[str]:
    auth = getattr(config, "auth", None)
    if auth is None:
        return frozenset((SERVICE_TOKEN_HEADER,))
    names = {auth.serviceToken.header, auth.token.header}
    if auth.apiKeys is not None:  # an API key is a credential too
        names.add(auth.apiKeys.header)
    return frozenset(n.lower() for n in names if n)


def _claims(claims: dict[str, Any] | None, cc: CompileContext, path: str) -> Getter | None:
    if claims is None:
        return None
    # Names are the config's keys; only values are filled, so a request cannot add a claim.
    return compile_structure(dict(claims), cc, path)


def _check_url(url: str, cc: CompileContext, path: str) -> None:
    if problem := url_problem(url):
        cc.error(path, problem)


# The kinds this family compiles (the table in rules/compiler.py).
COMPILERS: dict[str, CompileFn] = {
    "webhook": compile_webhook,
}
