"""`authz envoy-config --transport http`: the http_service filter, its header matchers and
cluster, Envoy 1.40 accepts it, and configs HTTP cannot serve exactly are refused."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from authz.authorizer import Authorizer
from authz.config.load import load_config_text
from authz.envoy.bootstrap import BootstrapOptions, render_bootstrap

HEAD = """
project: shop
auth:
  secrets: [{kid: main, alg: HS256, secret: bootstrap-test-secret-0123456789abcdef, primary: true}]
services:
  orders:
    url: http://orders.internal:8080
    endpoints:
"""
SERVABLE = (
    HEAD
    + """
      get: {method: GET, path: "/v1/orders/{id}", rule: {rule: authenticated}}
      update:
        method: PATCH
        path: "/v1/orders/{id}"
        rule:
          rule: and
          clauses:
            - {rule: force, field: args.params.userId, value: args.auth.id}
            - {rule: force, field: args.headers.x-user, value: args.auth.id}
"""
)
HTTP = BootstrapOptions(transport="http", authz_http="127.0.0.1:9103", authz="127.0.0.1:9101")


def _render(text: str, options: BootstrapOptions = HTTP) -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(render_bootstrap(Authorizer(load_config_text(text)), options))


def _ext_authz(doc: dict) -> dict:  # type: ignore[type-arg]
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    return hcm["typed_config"]["http_filters"][0]["typed_config"]


def test_http_service_with_the_matchers_authz_relies_on() -> None:
    doc = _render(SERVABLE)
    cfg = _ext_authz(doc)
    assert "grpc_service" not in cfg and cfg["failure_mode_allow"] is False
    service = cfg["http_service"]
    assert service["server_uri"]["cluster"] == "authz-http"
    upstream = {
        p["exact"]
        for p in service["authorization_response"]["allowed_upstream_headers"]["patterns"]
    }
    assert upstream == {"x-sc-token", "x-authz-dry-run", "x-user"}  # token, dry-run, field rule
    assert cfg["disallowed_headers"]["patterns"] == [{"exact": "x-authz-content-length"}]
    clusters = {c["name"]: c for c in doc["static_resources"]["clusters"]}
    assert set(clusters) == {"authz", "authz-http", "orders"}  # authz: ext_proc stays gRPC
    assert clusters["authz-http"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
        "endpoint"]["address"]["socket_address"]["port_value"] == 9103  # fmt: skip
    routes = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]["route_config"]["virtual_hosts"][0]["routes"]  # fmt: skip
    for route in routes:
        ext = route.get("typed_per_filter_config", {}).get("envoy.filters.http.ext_authz", {})
        assert "context_extensions" not in ext.get("check_settings", {})


@pytest.mark.parametrize(
    "endpoint,why",
    [
        ("{method: GET, path: /q, rule: {rule: force, field: args.query.t, value: a}}", "query"),
        ("{method: GET, path: /p, rule: {rule: force, field: args.params.t, value: a}}", "params"),
        ("{method: '*', path: /p, rule: {rule: remove, fields: [args.params.t]}}", "params"),
    ],
)
def test_configs_http_cannot_serve_exactly_are_refused(endpoint: str, why: str) -> None:
    with pytest.raises(ValueError, match=rf"--transport http cannot serve.*\n.*orders.e: .*{why}"):
        _render(HEAD + f"      e: {endpoint}\n")
    _render(HEAD + f"      e: {endpoint}\n", BootstrapOptions())  # gRPC serves it


@pytest.mark.skipif(
    not shutil.which("envoy", path=str(Path(sys.executable).parent)), reason="no envoy"
)
def test_envoy_accepts_it(tmp_path: Path) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(render_bootstrap(Authorizer(load_config_text(SERVABLE)), HTTP))
    envoy = shutil.which("envoy", path=str(Path(sys.executable).parent))
    done = subprocess.run([envoy, "--mode", "validate", "-c", str(path), "--disable-hot-restart"],  # type: ignore[list-item]
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
