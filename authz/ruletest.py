"""`authz test`: rule test files (requests + fixtures + expected decisions), see
docs/rule-tests.md.

Every case runs against a fresh Authorizer (so result caches never leak between cases) whose
runtime is hermetic: datastores are in-memory stores filled from the case's fixtures, and the
HTTP client answers webhooks from canned replies (an httpx transport; nothing leaves the
process). Tokens are minted from `claims` with the config's primary key.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
from pydantic import Field, ValidationError, model_validator

from authz.config.base import StrictModel
from authz.config.load import format_errors, load_config, parse_document
from authz.config.schema import Config
from authz.decision import Decision
from authz.errors import ConfigError
from authz.rules.base import Rule

SUFFIXES = (".tests.yaml", ".tests.yml", ".tests.json")
TOKEN_TTL = 3600.0  # seconds: the tokens minted from `claims`

# --- the file format ---------------------------------------------------------------------


class WebhookReply(StrictModel):
    status: int = Field(200, ge=100, le=599)
    body: Any = None  # JSON reply (an object, list, ...); a string is sent as raw text
    unavailable: bool = False  # the connection fails: the rule raises -> 503


class Fixtures(StrictModel):
    # alias -> collection/table -> documents/rows; or "unavailable" (every find fails -> 503)
    databases: dict[str, dict[str, list[dict[str, Any]]] | Literal["unavailable"]] = {}
    # URL -> canned reply; or "unavailable". A URL not listed fails like a dead host (503).
    webhooks: dict[str, WebhookReply | Literal["unavailable"]] = {}


class TestRequest(StrictModel):
    service: str | None = None  # context_extensions, as Envoy's generated routes send them
    endpoint: str | None = None
    method: str | None = None  # default: the endpoint's method
    path: str | None = None  # may carry a query string; default: the endpoint's fixed path
    headers: dict[str, str] = {}
    claims: dict[str, Any] | None = None  # minted into a token (primary key), put where read
    body: Any = None  # an object/list is sent as JSON, a string as it is
    peer: dict[str, str] | None = None  # the client certificate: {principal, certificate}


class Expect(StrictModel):
    allowed: bool | None = None
    status: int | None = None
    error: str | None = None  # the `error` of the denial's JSON body
    reason: str | None = None  # a substring of the decision's reason (which rule failed)
    params: Any = None  # args.params after the rule's changes (exact)
    headers: dict[str, str | bool | None] | None = None  # upstream headers: subset
    responseHeaders: dict[str, str | bool | None] | None = None  # added to the client's reply

    @model_validator(mode="after")
    def _something(self) -> Expect:
        if not self.model_fields_set:
            raise ValueError("give at least one of " + ", ".join(Expect.model_fields))
        return self


class Case(StrictModel):
    name: str = Field(min_length=1)
    request: TestRequest
    fixtures: Fixtures | None = None  # added to the file's fixtures (same keys: the case wins)
    expect: Expect


class TestFile(StrictModel):
    config: str  # relative to the test file
    env: dict[str, str] = {}  # ${VAR}s of the config, over the process environment
    fixtures: Fixtures = Fixtures()
    cases: list[Case] = Field(min_length=1)


class TestFileError(Exception):
    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


@dataclass
class Suite:
    path: Path
    spec: TestFile
    config_path: Path
    config: Config


def load_suite(path: Path) -> Suite:
    """Read a test file and its config; TestFileError names every problem."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = parse_document(text, str(path))
        spec = TestFile.model_validate(raw)
    except OSError as exc:
        raise TestFileError([f"cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise TestFileError(["not UTF-8 text"]) from None
    except ConfigError as exc:
        raise TestFileError(exc.errors) from None
    except ValidationError as exc:
        raise TestFileError(format_errors(exc)) from None
    names = [c.name for c in spec.cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TestFileError([f"cases: duplicate name(s): {', '.join(dupes)}"])
    config_path = (path.parent / spec.config).resolve()
    try:
        config = load_config(config_path, {**os.environ, **spec.env})
    except ConfigError as exc:
        raise TestFileError([f"config {spec.config}:", *(f"  {e}" for e in exc.errors)]) from None
    return Suite(path, spec, config_path, config)


def find_files(paths: Iterable[str]) -> list[Path]:
    """Files as given; directories give their `*.tests.yaml|yml|json`, recursively."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.name.endswith(SUFFIXES)))
        else:
            out.append(p)
    return out


# --- fixtures: the small interface the datastores package fills --------------------------


class FixtureStores(Protocol):
    """Makes the datastores a case runs against (authz.datastores provides the memory one)."""

    def filled(self, alias: str, collections: dict[str, list[dict[str, Any]]]) -> Any: ...
    def unavailable(self, alias: str) -> Any: ...


class MemoryStores:
    def __init__(self) -> None:
        from authz.datastores.memory import MemoryDatastore  # absent: fixture cases skip

        self._cls = MemoryDatastore

    def filled(self, alias: str, collections: dict[str, list[dict[str, Any]]]) -> Any:
        return self._cls(alias, collections)

    def unavailable(self, alias: str) -> Any:
        store = self._cls(alias, {})

        async def down(*_args: Any) -> Any:
            raise ConnectionError("unavailable (rule test fixture)")

        store._find = down  # Datastore.find turns this into DependencyError -> 503
        store.healthy = False
        return store


def default_stores() -> FixtureStores | None:
    try:
        return MemoryStores()
    except ImportError:
        return None


def _merged(base: Fixtures, case: Fixtures | None) -> Fixtures:
    if case is None:
        return base
    return Fixtures(
        databases={**base.databases, **case.databases},
        webhooks={**base.webhooks, **case.webhooks},
    )


def _datastores(config: Config, fixtures: Fixtures, stores: FixtureStores) -> dict[str, Any]:
    out = {}
    for alias in config.databases:  # every declared alias: no case ever reaches a real one
        data = fixtures.databases.get(alias, {})
        out[alias] = (
            stores.unavailable(alias) if data == "unavailable" else stores.filled(alias, data)
        )
    return out


def webhook_transport(replies: dict[str, WebhookReply | str]) -> httpx.MockTransport:
    """Canned webhook replies by exact URL; any other URL fails to connect."""

    def handle(request: httpx.Request) -> httpx.Response:
        reply = replies.get(str(request.url))
        if reply is None or reply == "unavailable" or reply.unavailable:  # type: ignore[union-attr]
            raise httpx.ConnectError("no canned reply (rule test)", request=request)
        body = reply.body  # type: ignore[union-attr]
        if isinstance(body, str):
            content, kind = body.encode(), "text/plain"
        else:
            content, kind = (b"" if body is None else json.dumps(body).encode()), "application/json"
        # A stream, not `content=`: the webhook rule reads the raw stream, bounded.
        return httpx.Response(
            reply.status,  # type: ignore[union-attr]
            headers={"content-type": kind},
            stream=httpx.ByteStream(content),
        )

    return httpx.MockTransport(handle)


# --- running -----------------------------------------------------------------------------


@dataclass
class CaseResult:
    name: str
    outcome: Literal["pass", "fail", "skip"]
    problems: list[str] = field(default_factory=list)
    decision: Decision | None = None
    rule: Rule | None = None  # the endpoint's compiled rule (for --explain)


def build_request(case: Case, authorizer: Any, n: int) -> Any:
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


def _put_token(headers: dict[str, str], authorizer: Any, claims: dict[str, Any]) -> None:
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

    fixtures = _merged(suite.spec.fixtures, case.fixtures)
    if stores is None and (fixtures.databases or suite.config.databases):
        return CaseResult(case.name, "skip", ["datastore fixtures need authz.datastores"]), []
    authorizer = Authorizer(suite.config)
    runtime = authorizer.runtime
    runtime.datastores = _datastores(suite.config, fixtures, stores) if stores else {}
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


# --- comparing ---------------------------------------------------------------------------


def compare(expect: Expect, d: Decision) -> list[str]:
    """Readable differences between the expectation and the decision (empty: it passed)."""
    out: list[str] = []
    for key, got in (("allowed", d.allowed), ("status", d.status)):
        want = getattr(expect, key)
        if want is not None and want != got:
            out.append(f"{key}: expected {_show(want)}, got {_show(got)}")
    if expect.error is not None:
        got_error = None if d.allowed else d.message
        if got_error != expect.error:
            out.append(f"error: expected {expect.error!r}, got {got_error!r}")
    if expect.reason is not None and expect.reason not in d.reason:
        out.append(f"reason: expected to contain {expect.reason!r}, got {d.reason!r}")
    if "params" in expect.model_fields_set and expect.params != d.params:
        out.append("params (- expected, + got):")
        out.extend(f"    {line}" for line in json_diff(expect.params, d.params))
    out.extend(_headers("headers", expect.headers, d.headers))
    out.extend(_headers("responseHeaders", expect.responseHeaders, d.response_headers_to_add))
    return out


def _headers(
    what: str, want: dict[str, str | bool | None] | None, got: list[tuple[str, str]]
) -> list[str]:
    """A string: that value; true: present (any value); false/null: absent."""
    if want is None:
        return []
    have = {k.lower(): v for k, v in got}
    out = []
    for name, value in want.items():
        actual = have.get(name.lower())
        if value is True and actual is None:
            out.append(f"{what}.{name}: expected present, got absent")
        elif value in (False, None) and actual is not None:
            out.append(f"{what}.{name}: expected absent, got {_clip(actual)!r}")
        elif isinstance(value, str) and actual != value:
            out.append(f"{what}.{name}: expected {value!r}, got {_clip(actual)!r}")
    return out


def json_diff(want: Any, got: Any) -> list[str]:
    a = json.dumps(want, indent=2, sort_keys=True, default=str).splitlines()
    b = json.dumps(got, indent=2, sort_keys=True, default=str).splitlines()
    diff = difflib.unified_diff(a, b, lineterm="", n=2)
    return [line for line in diff if not line.startswith(("---", "+++"))]


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _clip(value: str | None, n: int = 60) -> str | None:
    return value if value is None or len(value) <= n else value[:n] + "..."


# --- coverage ----------------------------------------------------------------------------


def rule_paths(rule: Rule) -> list[str]:
    """Every rule and clause of a compiled rule tree, by config path, parents first."""
    out, stack = [], [rule]
    while stack:
        r = stack.pop()
        out.append(r.path)
        stack.extend(reversed(r.children()))
    return out


def all_rule_paths(config: Config) -> list[str]:
    from authz.authorizer import Authorizer

    return [p for ep in Authorizer(config).endpoints if ep.rule for p in rule_paths(ep.rule)]


# --- the command -------------------------------------------------------------------------


@dataclass
class Totals:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    bad_files: int = 0


def run_tests(
    paths: Iterable[str],
    out: Callable[[str], None] = print,
    *,
    coverage: bool = False,
    explain: bool = False,
) -> int:
    """Run every case of every file; exit code 0 (all passed), 1 (failures), 2 (bad files)."""
    return asyncio.run(_run(find_files(paths), out, coverage, explain))


async def _run(files: list[Path], out: Callable[[str], None], coverage: bool, explain: bool) -> int:
    from authz.explain import explain_lines

    totals = Totals()
    seen: dict[Path, tuple[Config, set[str]]] = {}  # per config file: traced rule paths
    stores = default_stores()
    if not files:
        out("no rule test files found")
        totals.bad_files += 1
    for path in files:
        try:
            suite = load_suite(path)
        except TestFileError as exc:
            totals.bad_files += 1
            out(f"ERROR {path}:")
            out("\n".join(f"  {e}" for e in exc.errors))
            continue
        out(f"{path} (config {suite.spec.config})")
        traced = seen.setdefault(suite.config_path, (suite.config, set()))[1]
        for n, case in enumerate(suite.spec.cases):
            try:
                result, paths = await run_case(suite, case, n, stores)
            except TestFileError as exc:
                totals.bad_files += 1
                out("\n".join(f"  ERROR {e}" for e in exc.errors))
                continue
            traced.update(paths)
            _report(result, totals, out, explain_lines if explain else None)
    summary = f"{totals.passed} passed, {totals.failed} failed"
    if coverage:
        for config_path, (config, traced) in seen.items():
            _coverage(config_path, config, traced, out)
    out(summary + (f", {totals.skipped} skipped" if totals.skipped else ""))
    if totals.bad_files:
        return 2
    return 1 if totals.failed else 0


def _report(result: CaseResult, totals: Totals, out: Callable[[str], None], explain: Any) -> None:
    if result.outcome == "skip":
        totals.skipped += 1
        out(f"  SKIP  {result.name}: {'; '.join(result.problems)}")
        return
    if result.outcome == "pass":
        totals.passed += 1
        out(f"  PASS  {result.name}")
        return
    totals.failed += 1
    out(f"  FAIL  {result.name}")
    for line in result.problems:
        out(f"        {line}")
    d = result.decision
    if d is not None and explain is not None:
        out("\n".join(f"        {line}" for line in explain(d, result.rule)))
    elif d is not None:
        out(f"        decision: {'allowed' if d.allowed else f'denied {d.status}'} ({d.reason})")


def _coverage(path: Path, config: Config, traced: set[str], out: Callable[[str], None]) -> None:
    everything = all_rule_paths(config)
    missed = [p for p in everything if p not in traced]
    hit = len(everything) - len(missed)
    out(f"coverage of {_shown(path)}: {hit}/{len(everything)} rules and clauses evaluated")
    if missed:
        out("  never evaluated:")
        out("\n".join(f"    {p}" for p in missed))


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is under it (output that reads the
    same on every machine), else as it is."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
