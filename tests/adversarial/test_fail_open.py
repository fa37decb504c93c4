"""Envoy with `failure_mode_allow: true` in front of a server that hits internal errors: still
denied, because every error inside the server is a `denied_response`, never a gRPC error
(SECURITY-CHECKLIST rows 1, 2). Only an unreachable server is decided by Envoy's setting; the
last test shows it, which is why SECURITY.md requires `failure_mode_allow: false`.

Faults are injected by a launcher (test-only) that wraps three documented seams: a rule's
`evaluate`, the CheckRequest decoder and the response encoder used by authz.checks."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import free_port
from tests.integration.harness import (
    AuthzServer,
    Envoy,
    Process,
    authz_env,
    bearer,
    make_envoy_config,
    start_echo,
    start_envoy,
    token,
)

pytestmark = pytest.mark.integration

MARK = "__adversarial_raise__"
LAUNCHER = f"""
import sys
from authz import checks
from authz.rules import match

_evaluate_now, _decode, _serialize = match.Match.evaluate_now, checks.decode, checks.serialize

def evaluate_now(self, ctx):  # Match.evaluate calls it too
    if self.error == {MARK!r}:
        raise RuntimeError("adversarial: rule")
    return _evaluate_now(self, ctx)

def decode(data, *args):
    if b"/t/decode-boom" in data:
        raise RuntimeError("adversarial: decode")
    return _decode(data, *args)

def serialize(decision):
    if decision.request_id == "encode-boom":
        raise RuntimeError("adversarial: encode")
    return _serialize(decision)

match.Match.evaluate_now, checks.decode, checks.serialize = evaluate_now, decode, serialize
from authz.cli import main
sys.argv[0] = "authz"
raise SystemExit(main())
"""
CONFIG = f"""
project: failopen
auth:
  secrets: [{{kid: main, alg: HS256, secret: "${{AUTHZ_SECRET}}", primary: true}}]
services:
  t:
    endpoints:
      boom:
        method: GET
        path: /t/boom
        rule: {{rule: match, type: string, eval: "==", f1: args.auth.id, f2: u1, error: {MARK}}}
      boom-in-or:
        method: GET
        path: /t/boom-or
        rule:
          rule: or
          clauses:
            - {{rule: match, type: string, eval: "==", f1: args.auth.id, f2: u1, error: {MARK}}}
            - {{rule: allow}}
      decode-boom: {{method: GET, path: /t/decode-boom, rule: {{rule: allow}}}}
      ok: {{method: GET, path: /t/ok, rule: {{rule: authenticated}}}}
"""
NO_EXT_PROC = {
    "envoy.filters.http.ext_proc": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
        "disabled": True,
    }
}


def _fail_open(config: dict[str, Any]) -> None:
    for listener in config["static_resources"]["listeners"]:
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        for f in hcm["http_filters"]:
            if f["name"] == "envoy.filters.http.ext_authz":
                f["typed_config"]["failure_mode_allow"] = True
                f["typed_config"]["failure_mode_allow_header_add"] = True


class FailOpenStack:
    def __init__(self, log_dir: Path):
        config = log_dir / "failopen.yaml"
        config.write_text(CONFIG, encoding="utf-8")
        self.echo = start_echo()
        grpc_port, http_port = free_port(), free_port()
        cmd = [sys.executable, "-c", LAUNCHER, "serve", "--config", str(config),
               "--listen", f"127.0.0.1:{grpc_port}", "--http-listen", f"127.0.0.1:{http_port}",
               "--drain", "0s"]  # fmt: skip
        self.authz = AuthzServer(Process("authz", cmd, log_dir, authz_env()), grpc_port, http_port)
        self.envoy: Envoy | None = None
        try:
            self.authz.process.wait_http_ok(f"http://127.0.0.1:{http_port}/readyz")
            route = {"name": "t", "match": {"prefix": "/t/"}, "route": {"cluster": "orders"},
                     "typed_per_filter_config": NO_EXT_PROC}  # fmt: skip
            envoy_config = make_envoy_config(
                authz_ports=grpc_port, upstream_port=self.echo.port, listen_port=free_port(),
                admin_port=free_port(), extra_routes=[route],
            )  # fmt: skip
            _fail_open(envoy_config)
            self.envoy = start_envoy(envoy_config, log_dir)
        except BaseException:
            self.stop()
            raise

    def get(self, path: str, rid: str | None = None) -> tuple[httpx.Response, list[Any]]:
        assert self.envoy is not None
        rid = rid or str(uuid.uuid4())
        headers = {"x-request-id": rid, **bearer(token({"id": "u1"}))}
        resp = httpx.get(self.envoy.url(path), headers=headers, timeout=5)
        return resp, [r for r in self.echo.requests if r["headers"].get("x-request-id") == rid]

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.process.stop()
        self.authz.process.stop()
        self.echo.stop()


@pytest.fixture(scope="module")
def stack(log_dir: Path) -> Iterator[FailOpenStack]:
    s = FailOpenStack(log_dir)
    yield s
    s.stop()


def test_control_allow_passes(stack: FailOpenStack) -> None:
    resp, seen = stack.get("/t/ok")
    assert resp.status_code == 200 and len(seen) == 1
    assert "x-envoy-auth-failure-mode-allowed" not in seen[0]["headers"]


@pytest.mark.parametrize(
    ("path", "rid"),
    [("/t/boom", None), ("/t/boom-or", None), ("/t/decode-boom", None), ("/t/ok", "encode-boom")],
)
def test_internal_errors_stay_denied_with_fail_open_envoy(
    stack: FailOpenStack, path: str, rid: str | None
) -> None:
    assert stack.envoy is not None
    errors_before = stack.envoy.counter("http.ingress.ext_authz.error")
    resp, seen = stack.get(path, rid)
    assert resp.status_code == 500, resp.text
    assert seen == [], "an internal error let the request through"
    assert "adversarial" not in resp.text and "Traceback" not in resp.text
    assert stack.envoy.counter("http.ingress.ext_authz.error") == errors_before == 0
    assert stack.envoy.counter("http.ingress.ext_authz.failure_mode_allowed") == 0


def test_unreachable_server_is_decided_by_envoy_alone(stack: FailOpenStack) -> None:
    """Runs last: with the server gone, fail-open Envoy lets requests through. Nothing the
    server does can prevent this; deployments must keep failure_mode_allow false."""
    assert stack.envoy is not None
    stack.authz.process.stop()
    resp, seen = stack.get("/t/boom")
    assert resp.status_code == 200 and len(seen) == 1
    assert seen[0]["headers"].get("x-envoy-auth-failure-mode-allowed") == "true"
    assert stack.envoy.counter("http.ingress.ext_authz.failure_mode_allowed") >= 1
