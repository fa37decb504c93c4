"""A real Envoy running the bootstrap `authz envoy-config` generates, in front of the echo
upstream and `authz serve`: every endpoint is routed with its context_extensions, the body
reaches Check where the rules read it, unrouted requests are denied.

The server runs a copy of the config in which the `public` endpoint's path was moved: it can
only resolve `/v1/public` from the route's context_extensions, so a 200 there proves they
reach the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from authz.authorizer import Authorizer
from authz.config.load import load_config
from authz.envoy.bootstrap import BootstrapOptions, render_bootstrap
from tests.helpers import free_port, port_open, wait_for
from tests.integration.harness import (
    READY_TIMEOUT,
    SECRET,
    Process,
    bearer,
    envoy_binary,
    start_authz,
    start_echo,
    token,
)

CONFIG = """
project: gen
auth: {secrets: [{kid: main, alg: HS256, secret: "${AUTHZ_SECRET}", primary: true}]}
services:
  items:
    url: http://127.0.0.1:%(port)d
    endpoints:
      public: {method: GET, path: %(public)s, rule: {rule: allow}}
      read:
        method: GET
        path: /v1/items/{id}
        rule: {rule: match, type: string, eval: in, f1: args.pathParams.id, f2: args.auth.items,
               error: not your item}
      create:
        method: POST
        path: /v1/items
        rule: {rule: match, type: number, eval: "<", f1: args.params.amount, f2: 10}
"""


class Stack:
    def __init__(self, log_dir: Path):
        self.echo = start_echo()
        self.procs: list[Process] = []
        try:
            self._start(log_dir)
        except BaseException:
            self.stop()
            raise

    def _start(self, log_dir: Path) -> None:
        generated = log_dir / "generated.yaml"
        generated.write_text(CONFIG % {"port": self.echo.port, "public": "/v1/public"})
        served = log_dir / "served.yaml"
        served.write_text(CONFIG % {"port": self.echo.port, "public": "/moved/public"})
        authz = start_authz(served, log_dir)
        self.procs.append(authz.process)
        self.port, admin = free_port(), free_port()
        authorizer = Authorizer(load_config(generated, {"AUTHZ_SECRET": SECRET}))
        options = BootstrapOptions(
            authz=f"127.0.0.1:{authz.grpc_port}", listen=f"127.0.0.1:{self.port}",
            admin=f"127.0.0.1:{admin}",
        )  # fmt: skip
        path = log_dir / "envoy.yaml"
        path.write_text(render_bootstrap(authorizer, options))
        cmd = [envoy_binary(), "-c", str(path), "--disable-hot-restart", "--concurrency", "1",
               "--log-level", "warn"]  # fmt: skip
        envoy = Process("envoy", cmd, log_dir)
        self.procs.append(envoy)
        envoy.wait_http_ok(f"http://127.0.0.1:{admin}/ready")
        wait_for(lambda: port_open(self.port), READY_TIMEOUT, "envoy listener")

    def request(self, method: str, path: str, **kw: object) -> httpx.Response:
        return httpx.request(method, f"http://127.0.0.1:{self.port}{path}", timeout=10, **kw)

    def seen(self, rid: str) -> list[dict]:
        return [r for r in self.echo.requests if r["headers"].get("x-request-id") == rid]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.echo.stop()


@pytest.fixture(scope="module")
def stack(log_dir: Path) -> Iterator[Stack]:
    s = Stack(log_dir)
    yield s
    s.stop()


def test_context_extensions_reach_the_server(stack: Stack) -> None:
    resp = stack.request("GET", "/v1/public", headers={"x-request-id": "pub-1"})
    assert resp.status_code == 200, resp.text
    (seen,) = stack.seen("pub-1")
    assert seen["path"] == "/v1/public"
    assert seen["headers"].get("x-sc-token")  # set by authz on the allowed request


def test_templated_route_allows_and_denies_by_rule(stack: Stack) -> None:
    auth = bearer(token({"id": "u1", "items": ["a"]}))
    ok = stack.request("GET", "/v1/items/a", headers={**auth, "x-request-id": "read-a"})
    assert ok.status_code == 200 and len(stack.seen("read-a")) == 1
    denied = stack.request("GET", "/v1/items/b", headers={**auth, "x-request-id": "read-b"})
    assert denied.status_code == 403
    assert denied.json()["error"] == "not your item"
    assert stack.seen("read-b") == []
    anonymous = stack.request("GET", "/v1/items/a")
    assert anonymous.status_code == 401


def test_the_body_reaches_check_where_rules_read_it(stack: Stack) -> None:
    auth = bearer(token({"id": "u1"}))
    ok = stack.request("POST", "/v1/items", json={"amount": 5},
                       headers={**auth, "x-request-id": "create-5"})  # fmt: skip
    assert ok.status_code == 200, ok.text
    assert stack.seen("create-5")[0]["body"] in ('{"amount":5}', '{"amount": 5}', {"amount": 5})
    too_much = stack.request("POST", "/v1/items", json={"amount": 50}, headers=auth)
    assert too_much.status_code == 403


def test_unrouted_requests_are_denied(stack: Stack) -> None:
    auth = bearer(token({"id": "u1", "items": ["a"]}))
    for method, path in (("DELETE", "/v1/items/a"), ("GET", "/v1/other"), ("GET", "/moved/public")):
        rid = f"unrouted-{method}-{path}"
        resp = stack.request(method, path, headers={**auth, "x-request-id": rid})
        assert resp.status_code == 403, (method, path, resp.text)
        assert resp.json()["error"] == "no rule for this endpoint"
        assert stack.seen(rid) == []


def test_header_names_with_underscores_are_refused(stack: Stack) -> None:
    # headers_with_underscores_action: REJECT_REQUEST (on HTTP/1: a 400 or a closed connection)
    headers = {"x-request-id": "underscore", "x_user_id": "admin"}
    try:
        resp = stack.request("GET", "/v1/public", headers=headers)
        assert resp.status_code == 400, resp.text
    except httpx.RemoteProtocolError:
        pass
    assert stack.seen("underscore") == []
    ok = stack.request("GET", "/v1/public", headers={"x-request-id": "dash", "x-user-id": "a"})
    assert ok.status_code == 200 and len(stack.seen("dash")) == 1
