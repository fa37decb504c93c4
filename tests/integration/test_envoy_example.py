"""config/example.yaml through a real Envoy (envoy/envoy.yaml with free ports) to the echo
upstream: decisions, denial bodies, what the upstream receives, endpoint resolution by
context_extensions and by path template, path normalisation.

One stack for the module. The Envoy config adds two things to envoy/envoy.yaml: a route
`/alias/` whose context_extensions name `orders.admin` (only context_extensions can resolve
it), and a listener `plain` with a single route and no context_extensions (authz resolves
every request there by method + path template).
"""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.integration.harness import (
    EXAMPLE_CONFIG,
    SECRET,
    Stack,
    authz_env,
    bearer,
    context_route,
    json_body,
    start_stack,
    token,
)

pytestmark = pytest.mark.integration

ADMIN = {"id": "admin-1", "role": "admin"}
USER = {"id": "u1", "role": "user", "orders": ["o-1", "o-2"]}


@pytest.fixture(scope="module")
def stack(log_dir: Path) -> Iterator[Stack]:
    s = start_stack(
        EXAMPLE_CONFIG, log_dir, extra_routes=[context_route("/alias/", "orders", "admin")],
        plain=True,
    )  # fmt: skip
    yield s
    s.stop()


def call(
    stack: Stack,
    client: httpx.Client,
    method: str,
    path: str,
    *,
    who: dict[str, Any] | None = None,
    plain: bool = False,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """One request through Envoy; returns the response and what the upstream saw of it
    (matched by a fresh x-request-id)."""
    rid = str(uuid.uuid4())
    hdrs = {"x-request-id": rid, **(bearer(token(who)) if who else {}), **(headers or {})}
    resp = client.request(method, stack.envoy.url(path, plain), headers=hdrs, **kwargs)
    return resp, stack.seen(rid)


def assert_denied(resp: httpx.Response, seen: list[Any], status: int, error: str | None = None):
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = json_body(resp)
    assert set(body) == {"error", "requestId"}, body
    assert isinstance(body["requestId"], str) and body["requestId"]
    if error is not None:
        assert body["error"] == error
    assert seen == [], "a denied request reached the upstream"
    return body


def assert_allowed(resp: httpx.Response, seen: list[dict[str, Any]]) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    assert len(seen) == 1, "an allowed request must reach the upstream exactly once"
    return seen[0]


# --- allow / authenticated / 401 ---------------------------------------------------------


def test_allow_needs_no_token(stack: Stack, client: httpx.Client) -> None:
    resp, seen = call(stack, client, "GET", "/v1/health")
    assert assert_allowed(resp, seen)["path"] == "/v1/health"


def test_allow_ignores_a_bad_token(stack: Stack, client: httpx.Client) -> None:
    resp, seen = call(stack, client, "GET", "/v1/health", headers=bearer("not-a-jwt"))
    assert_allowed(resp, seen)


def test_authenticated_with_a_valid_token(stack: Stack, client: httpx.Client) -> None:
    resp, seen = call(stack, client, "GET", "/v1/orders", who=USER)
    assert_allowed(resp, seen)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer not-a-jwt"},
        {"authorization": "Basic dXNlcjpwYXNz"},
        bearer(token(USER, secret="another-secret-that-is-long-enough-0123")),
        bearer(token(USER, ttl=-3600)),  # expired an hour ago
        bearer(jwt.encode(USER, key=None, algorithm="none")),
    ],
    ids=["none", "garbage", "basic", "wrong-key", "expired", "alg-none"],
)
def test_missing_or_bad_token_is_401(
    stack: Stack, client: httpx.Client, headers: dict[str, str]
) -> None:
    resp, seen = call(stack, client, "GET", "/v1/orders", headers=headers)
    assert_denied(resp, seen, 401)
    assert resp.headers["www-authenticate"].startswith("Bearer")


def test_deny_is_401_without_a_token_and_403_with_one(stack: Stack, client: httpx.Client) -> None:
    resp, seen = call(stack, client, "GET", "/v1/legacy/export")
    assert_denied(resp, seen, 401)
    resp, seen = call(stack, client, "GET", "/v1/legacy/export", who=ADMIN)
    assert_denied(resp, seen, 403, "this endpoint is retired")
    assert "www-authenticate" not in resp.headers


# --- 403: match, or, and -----------------------------------------------------------------


@pytest.mark.parametrize("plain", [False, True], ids=["context-extensions", "path-template"])
class TestDecisions:
    """The same decisions whether Envoy names the endpoint or authz matches the path."""

    def test_user_reads_own_order(self, stack: Stack, client: httpx.Client, plain: bool) -> None:
        resp, seen = call(stack, client, "GET", "/v1/orders/o-2", who=USER, plain=plain)
        assert assert_allowed(resp, seen)["path"] == "/v1/orders/o-2"

    def test_user_cannot_read_others(self, stack: Stack, client: httpx.Client, plain: bool) -> None:
        resp, seen = call(stack, client, "GET", "/v1/orders/o-9", who=USER, plain=plain)
        assert_denied(resp, seen, 403, "you can only read your own orders")

    def test_admin_reads_any_order(self, stack: Stack, client: httpx.Client, plain: bool) -> None:
        resp, seen = call(stack, client, "GET", "/v1/orders/o-9", who=ADMIN, plain=plain)
        assert_allowed(resp, seen)

    def test_admin_endpoint(self, stack: Stack, client: httpx.Client, plain: bool) -> None:
        resp, seen = call(stack, client, "GET", "/v1/admin/stats", who=USER, plain=plain)
        assert_denied(resp, seen, 403, "admins only")
        resp, seen = call(stack, client, "GET", "/v1/admin/stats", who=ADMIN, plain=plain)
        assert_allowed(resp, seen)

    def test_endpoint_without_rule(self, stack: Stack, client: httpx.Client, plain: bool) -> None:
        resp, seen = call(stack, client, "POST", "/v1/orders/o-1/refund", who=ADMIN, plain=plain)
        assert_denied(resp, seen, 403, "no rule for this endpoint")

    def test_no_endpoint_matches(self, stack: Stack, client: httpx.Client, plain: bool) -> None:
        for method, path in [("GET", "/v1/nothing"), ("DELETE", "/v1/orders/o-1")]:
            resp, seen = call(stack, client, method, path, who=ADMIN, plain=plain)
            assert_denied(resp, seen, 403)

    def test_create_valid_order_reaches_upstream_intact(
        self, stack: Stack, client: httpx.Client, plain: bool
    ) -> None:
        body = b'{"item": "book", "amount": 12.5, "note": "caf\xc3\xa9"}'
        resp, seen = call(
            stack, client, "POST", "/v1/orders", who=USER, plain=plain, content=body,
            headers={"content-type": "application/json"},
        )  # fmt: skip
        assert assert_allowed(resp, seen)["body"] == body.decode()

    def test_malformed_json_body_is_400(
        self, stack: Stack, client: httpx.Client, plain: bool
    ) -> None:
        resp, seen = call(
            stack, client, "POST", "/v1/orders", who=USER, plain=plain, content=b'{"item": ',
            headers={"content-type": "application/json"},
        )  # fmt: skip
        assert_denied(resp, seen, 400)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"item": "car", "amount": 5000}, "amount must be a number no greater than 1000"),
        ({"item": "car", "amount": "5"}, "amount must be a number no greater than 1000"),
        ({"amount": 5}, "an order needs an item"),
        ({"item": "x" * 65, "amount": 5}, "item names are at most 64 characters"),
    ],
    ids=["too-much", "amount-string", "no-item", "long-item"],
)
def test_create_rejected(
    stack: Stack, client: httpx.Client, body: dict[str, Any], error: str
) -> None:
    resp, seen = call(stack, client, "POST", "/v1/orders", who=USER, json=body)
    assert_denied(resp, seen, 403, error)


def test_create_denied_for_suspended_role(stack: Stack, client: httpx.Client) -> None:
    who = {"id": "u2", "role": "suspended"}
    resp, seen = call(stack, client, "POST", "/v1/orders", who=who, json={"item": "a", "amount": 1})
    assert_denied(resp, seen, 403, "suspended accounts cannot order")


@pytest.mark.parametrize(("days_ago", "allowed"), [(0, True), (10, True), (40, False), (-2, False)])
def test_report_dates(stack: Stack, client: httpx.Client, days_ago: int, allowed: bool) -> None:
    day = (datetime.now(UTC) - timedelta(days=days_ago)).date().isoformat()
    resp, seen = call(stack, client, "GET", f"/v1/reports/{day}", who=USER)
    if allowed:
        assert_allowed(resp, seen)
    else:
        assert_denied(resp, seen, 403, "reports cover the last 30 days, up to today")


def test_body_over_the_buffer_limit_is_413_never_a_partial_check(
    stack: Stack, client: httpx.Client
) -> None:
    big = b'{"item": "a", "amount": 1, "pad": "' + b"x" * (1 << 20) + b'"}'
    resp, seen = call(
        stack, client, "POST", "/v1/orders", who=USER, content=big,
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert resp.status_code == 413
    assert seen == []


# --- what the upstream receives ----------------------------------------------------------


def _service_claims(seen: dict[str, Any]) -> dict[str, Any]:
    value = seen["headers"].get("x-sc-token")
    assert isinstance(value, str), f"upstream got x-sc-token {value!r}"
    return jwt.decode(value, SECRET, algorithms=["HS256"])


def test_upstream_gets_a_signed_service_token(stack: Stack, client: httpx.Client) -> None:
    resp, seen = call(stack, client, "GET", "/v1/orders", who=USER)
    claims = _service_claims(assert_allowed(resp, seen))
    assert claims["iss"] == "demo"
    assert 0 < claims["exp"] - time.time() <= 60 + 5


def test_service_token_on_anonymous_allow(stack: Stack, client: httpx.Client) -> None:
    resp, seen = call(stack, client, "GET", "/v1/health")
    _service_claims(assert_allowed(resp, seen))


def test_spoofed_service_token_headers_are_replaced_or_removed(
    stack: Stack, client: httpx.Client
) -> None:
    forged = token({"id": "admin-1", "role": "admin"})  # even a well-signed one
    resp, seen = call(stack, client, "GET", "/v1/orders", who=USER, headers={"x-sc-token": forged})
    upstream = assert_allowed(resp, seen)
    assert upstream["headers"]["x-sc-token"] != forged
    _service_claims(upstream)
    # the `_` spelling (one header to WSGI/CGI) is refused by Envoy before authz sees it: a
    # 400, or the connection closed
    try:
        resp, seen = call(stack, client, "GET", "/v1/orders", who=USER,
                          headers={"x_sc_token": forged})  # fmt: skip
        assert resp.status_code == 400 and seen == [], resp.text
    except httpx.RemoteProtocolError:
        pass
    assert not any("x_sc_token" in r["headers"] for r in stack.echo.requests)


def test_authz_cli_token_is_accepted_through_envoy(stack: Stack, client: httpx.Client) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "authz", "token", "--config", str(EXAMPLE_CONFIG),
         "--claims", '{"id": "u1", "role": "admin"}', "--ttl", "5m"],
        env=authz_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    resp, seen = call(stack, client, "GET", "/v1/admin/stats", headers=bearer(done.stdout.strip()))
    assert_allowed(resp, seen)


# --- resolution and path safety ----------------------------------------------------------


def test_context_extensions_decide_the_endpoint(stack: Stack, client: httpx.Client) -> None:
    # /alias/ matches no path template; only its route's context_extensions (orders.admin)
    # can resolve it, so the admin rule decides.
    resp, seen = call(stack, client, "GET", "/alias/anything", who=ADMIN)
    assert assert_allowed(resp, seen)["path"] == "/alias/anything"
    resp, seen = call(stack, client, "GET", "/alias/anything", who=USER)
    assert_denied(resp, seen, 403, "admins only")
    # Without context_extensions (the plain listener) nothing matches: 403.
    resp, seen = call(stack, client, "GET", "/alias/anything", who=ADMIN, plain=True)
    assert_denied(resp, seen, 403, "no rule for this endpoint")


def _raw_get(stack: Stack, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """A request with the path sent exactly as given (httpx would normalise it)."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.envoy.port, timeout=5)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "raw_path", ["//v1//admin/stats", "/v1/health/../admin/stats", "/v1/./admin/./stats"]
)
def test_paths_are_normalised_before_the_check(stack: Stack, raw_path: str) -> None:
    rid = str(uuid.uuid4())
    status, body = _raw_get(stack, raw_path, {"x-request-id": rid, **bearer(token(USER))})
    assert status == 403, body
    assert b"admins only" in body
    rid = str(uuid.uuid4())
    status, body = _raw_get(stack, raw_path, {"x-request-id": rid, **bearer(token(ADMIN))})
    assert status == 200, body
    assert [r["path"] for r in stack.seen(rid)] == ["/v1/admin/stats"]


def test_escaped_slashes_are_rejected(stack: Stack) -> None:
    rid = str(uuid.uuid4())
    status, _ = _raw_get(
        stack, "/v1/orders/o-1%2F..%2F..%2Fadmin%2Fstats", {"x-request-id": rid,
                                                            **bearer(token(ADMIN))}
    )  # fmt: skip
    assert status == 400
    assert stack.seen(rid) == []


# --- Envoy's view ------------------------------------------------------------------------


def test_no_check_failed_at_the_grpc_level(stack: Stack, client: httpx.Client) -> None:
    call(stack, client, "GET", "/v1/orders")  # at least one denial, one allow
    call(stack, client, "GET", "/v1/health")
    stats = stack.envoy.stats("ext_authz")
    assert stats.get("http.ingress.ext_authz.denied", 0) > 0, stats
    assert stats.get("http.ingress.ext_authz.ok", 0) > 0, stats
    assert stats.get("http.ingress.ext_authz.error", 0) == 0, stats
    assert stats.get("http.plain.ext_authz.error", 0) == 0, stats
