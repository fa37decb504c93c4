"""Errors inside the service never become gRPC errors: Envoy gets a denial (its
`ext_authz.error` counter stays 0), so the fail-open setting can never turn a bug into an allow.

How the internal error is forced: the server runs through harness.RAISING_LAUNCHER, which
wraps `Match.evaluate_now` so that a `match` rule whose `error` text is RAISE_MARKER raises
RuntimeError (test-only; the server code is unchanged). A second endpoint feeds a date that
overflows in `utils.roundUpDate` (year 1 with a positive UTC offset): whatever the server
makes of it, it must deny without a gRPC error. Every route here has no context_extensions,
so endpoints are resolved by path template.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import (
    RAISE_MARKER,
    Stack,
    bearer,
    json_body,
    start_stack,
    token,
)

pytestmark = pytest.mark.integration

CONFIG = f"""
project: errors-test
auth:
  secrets: [{{kid: main, alg: HS256, secret: "${{AUTHZ_SECRET}}", primary: true}}]
services:
  t:
    endpoints:
      boom:
        method: GET
        path: /boom
        rule: {{rule: match, type: string, eval: "==", f1: args.auth.id, f2: u1,
               error: {RAISE_MARKER}}}
      boom-in-or:  # the raising clause comes first; the allow after it must not rescue it
        method: GET
        path: /boom/or
        rule:
          rule: or
          clauses:
            - {{rule: match, type: string, eval: "==", f1: args.auth.id, f2: u1,
               error: {RAISE_MARKER}}}
            - {{rule: allow}}
      dates:
        method: GET
        path: /dates/{{day}}
        rule: {{rule: match, type: date, eval: ">=", f1: "utils.roundUpDate(args.pathParams.day,
               'day')", f2: "2000-01-01"}}
      ok:
        method: GET
        path: /ok
        rule: {{rule: authenticated}}
"""
SECRET_WORDS = ("RuntimeError", "Traceback", "integration test", RAISE_MARKER, "match.py")


@pytest.fixture(scope="module")
def stack(log_dir: Path) -> Iterator[Stack]:
    config = log_dir / "errors.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    s = start_stack(config, log_dir, raising=True)
    yield s
    s.stop()


def get(stack: Stack, path: str) -> tuple[httpx.Response, str]:
    rid = str(uuid.uuid4())
    headers = {"x-request-id": rid, **bearer(token({"id": "u1"}))}
    return httpx.get(stack.envoy.url(path), headers=headers, timeout=5), rid


def assert_clean_denial(stack: Stack, resp: httpx.Response, rid: str) -> dict[str, str]:
    assert resp.status_code != 200
    body = json_body(resp)
    assert set(body) == {"error", "requestId"}, body
    for word in SECRET_WORDS:
        assert word not in resp.text, f"internal detail {word!r} leaked: {resp.text}"
    assert stack.seen(rid) == [], "the upstream must not see a request that errored"
    return body


def test_the_stack_works(stack: Stack) -> None:
    resp, rid = get(stack, "/ok")
    assert resp.status_code == 200
    assert len(stack.seen(rid)) == 1


@pytest.mark.parametrize("path", ["/boom", "/boom/or"])
def test_rule_that_raises_is_a_500_denial_not_a_grpc_error(stack: Stack, path: str) -> None:
    before = stack.envoy.stats("ext_authz")
    resp, rid = get(stack, path)
    assert 500 <= resp.status_code <= 599 and resp.status_code != 503, resp.text
    assert_clean_denial(stack, resp, rid)
    after = stack.envoy.stats("ext_authz")
    assert after["http.ingress.ext_authz.error"] == 0, after
    assert after["http.ingress.ext_authz.denied"] == before["http.ingress.ext_authz.denied"] + 1


def test_date_overflow_denies_without_a_grpc_error(stack: Stack) -> None:
    resp, rid = get(stack, "/dates/0001-01-01T00:00:00+01:00")
    assert_clean_denial(stack, resp, rid)
    assert stack.envoy.counter("http.ingress.ext_authz.error") == 0
    # The same endpoint still works for an ordinary date afterwards.
    resp, rid = get(stack, "/dates/2024-05-01")
    assert resp.status_code == 200, resp.text


def test_server_keeps_serving_after_internal_errors(stack: Stack) -> None:
    for _ in range(3):
        get(stack, "/boom")
    resp, _ = get(stack, "/ok")
    assert resp.status_code == 200
    assert stack.authz.process.alive()
    assert stack.authz.ready().status_code == 200
