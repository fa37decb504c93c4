"""The Envoy of `authz envoy-config` is the edge (`use_remote_address: true`), on both
transports: on a plain-HTTP listener a client's `x-forwarded-proto: https` neither passes a
rule on `:scheme` or `x-forwarded-proto` nor reaches the upstream. Behind a trusted proxy,
`--xff-num-trusted-hops 1` keeps that proxy's headers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import free_port
from tests.integration.harness import (
    AuthzServer,
    Envoy,
    bearer,
    run_authz_cli,
    start_authz,
    start_echo,
    start_envoy,
    token,
)

pytestmark = pytest.mark.integration

CONFIG = """
project: edge
auth: {secrets: [{kid: main, alg: HS256, secret: "${AUTHZ_SECRET}", primary: true}]}
services:
  api:
    url: http://127.0.0.1:%(port)d
    endpoints:
      open: {method: GET, path: /v1/open, rule: {rule: allow}}
      scheme:
        method: GET
        path: /v1/scheme
        rule: {rule: match, type: string, eval: "==", f1: "args.headers.:scheme", f2: https}
      proto:
        method: GET
        path: /v1/proto
        rule: {rule: match, type: string, eval: "==", f1: args.headers.x-forwarded-proto,
               f2: https}
"""


def _envoy(config: Path, authz: AuthzServer, check_http: int, transport: str, log_dir: Path,
           *extra: str) -> Envoy:  # fmt: skip
    port, admin = free_port(), free_port()
    done = run_authz_cli(
        "envoy-config", "--config", str(config), "--transport", transport,
        "--authz-address", f"127.0.0.1:{authz.grpc_port}",
        "--authz-http-address", f"127.0.0.1:{check_http}",
        "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}", *extra,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    name = f"envoy-{transport}{'-trusting' if extra else ''}"
    return start_envoy(yaml.safe_load(done.stdout), log_dir, name=name)


@pytest.fixture(scope="module", params=["grpc", "http"])
def stack(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[tuple[Envoy, Envoy, object]]:
    echo = start_echo()
    started: list[object] = []
    try:
        config = log_dir / "edge.yaml"
        config.write_text(CONFIG % {"port": echo.port})
        check_http = free_port()
        listen = ["--check-http-listen", f"127.0.0.1:{check_http}"]
        authz = start_authz(config, log_dir, name=f"authz-{request.param}", extra_args=listen)
        started.append(authz.process)
        edge = _envoy(config, authz, check_http, request.param, log_dir)
        started.append(edge.process)
        trusting = _envoy(config, authz, check_http, request.param, log_dir,
                          "--xff-num-trusted-hops", "1")  # fmt: skip
        started.append(trusting.process)
        yield edge, trusting, echo
    finally:
        for proc in reversed(started):
            proc.stop()  # type: ignore[attr-defined]
        echo.stop()


def _get(envoy: Envoy, path: str, rid: str, **headers: str) -> httpx.Response:
    auth = bearer(token({"id": "u1"}))
    return httpx.get(envoy.url(path), headers={"x-request-id": rid, **auth, **headers}, timeout=10)


@pytest.mark.parametrize("path", ["/v1/scheme", "/v1/proto"])
def test_a_clients_forwarded_proto_does_not_make_plain_http_https(stack, path):
    edge, _, echo = stack
    rid = f"edge-{path}"
    resp = _get(edge, path, rid, **{"x-forwarded-proto": "https"})
    assert resp.status_code == 403, resp.text
    assert resp.json()["requestId"] == rid  # the client's request id is kept (correlation)
    assert [r for r in echo.requests if r["headers"].get("x-request-id") == rid] == []


def test_the_upstream_sees_the_scheme_of_the_connection(stack):
    edge, _, echo = stack
    rid = "edge-open"
    resp = _get(edge, "/v1/open", rid, **{"x-forwarded-proto": "https"})
    assert resp.status_code == 200, resp.text
    (seen,) = [r for r in echo.requests if r["headers"].get("x-request-id") == rid]
    assert seen["headers"]["x-forwarded-proto"] == "http"


def test_behind_a_trusted_proxy_its_forwarded_proto_counts(stack):
    _, trusting, echo = stack
    rid = "trusting-proto"
    resp = _get(trusting, "/v1/proto", rid, **{"x-forwarded-proto": "https"})
    assert resp.status_code == 200, resp.text
    (seen,) = [r for r in echo.requests if r["headers"].get("x-request-id") == rid]
    assert seen["headers"]["x-forwarded-proto"] == "https"
