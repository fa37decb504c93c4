"""Running one rule test case: a fresh Authorizer (result caches never leak between cases)
with a hermetic runtime, a request built from the case, tokens minted from its `claims`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from authz.authorizer import Authorizer
from authz.config.schema import Config
from authz.decision import Decision
from authz.request import Request
from authz.rules.base import Rule
from authz.ruletest.compare import compare
from authz.ruletest.fixtures import FixtureStores, fixture_stores, merged, webhook_transport
from authz.ruletest.spec import Case, Suite, TestFileError

TOKEN_TTL = 3600.0  # seconds: the tokens minted from `claims`


@dataclass
class CaseResult:
    name: str
    outcome: Literal["pass", "fail", "skip"]
    problems: list[str] = field(default_factory=list)
    decision: Decision | None = None
    rule: Rule | None = None  # the endpoint's compiled rule (for --explain)


def build_request(case: Case, authorizer: Authorizer, n: int) -> Request:
    from authz.checkfile import to_request

    r = case.request
    item: dict[str, Any] = {"headers": dict(r.headers)}
    declared = _declared(authorizer.config, r.service, r.endpoint)
    method, path = r.method, r.path
    if method is None:
        m = declared.method if declared else "GET"
        method = m if isinstance(m, str) and m != "*" else (m[0] if isinstance(m, list) else "GET")
    if path is None:
        if declared is None or declared.path is None or "{" in declared.path:
            raise TestFileError([f"cases[{n}] ({case.name}): request.path is required here"])
        path = declared.path
    if not path.startswith("/"):
        raise TestFileError([f"cases[{n}] ({case.name}): request.path must start with '/'"])
    item.update(method=method, path=path, service=r.service, endpoint=r.endpoint, body=r.body)
    if r.claims is not None:
        _put_token(item["headers"], authorizer, r.claims)
    if r.peer is not None:
        item["peer"] = r.peer
    return to_request(item, n)


def _declared(config: Config, service: str | None, endpoint: str | None) -> Any:
    svc = config.services.get(service or "")
    return svc.endpoints.get(endpoint or "") if svc else None


def _put_token(headers: dict[str, str], authorizer: Authorizer, claims: dict[str, Any]) -> None:
    token = authorizer.runtime.identity.mint(claims, TOKEN_TTL)
    source = authorizer.config.auth.token
    if source.header:
        headers[source.header] = f"{source.scheme} {token}" if source.scheme else token
    else:
        headers["cookie"] = f"{source.cookie}={token}"


async def run_case(
    suite: Suite, case: Case, n: int, stores: FixtureStores | None
) -> tuple[CaseResult, list[str]]:
    """One case -> (result, config paths of the rules its evaluation traced)."""
    from authz.authorizer import Authorizer
    from authz.explain import endpoint_rule

    fixtures = merged(suite.spec.fixtures, case.fixtures)
    if stores is None and (fixtures.databases or suite.config.databases):
        return CaseResult(case.name, "skip", ["datastore fixtures need authz.datastores"]), []
    authorizer = Authorizer(suite.config)
    runtime = authorizer.runtime
    runtime.datastores = fixture_stores(suite.config, fixtures, stores) if stores else {}
    runtime.http = httpx.AsyncClient(
        transport=webhook_transport(dict(fixtures.webhooks)), follow_redirects=False
    )
    try:
        decision = await authorizer.check(build_request(case, authorizer, n), trace=True)
    finally:
        await runtime.http.aclose()
    problems = compare(case.expect, decision)
    result = CaseResult(case.name, "fail" if problems else "pass", problems, decision)
    result.rule = endpoint_rule(authorizer, decision)
    return result, [t.path for t in decision.trace or ()]
