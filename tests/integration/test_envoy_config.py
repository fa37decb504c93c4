"""The shipped configs: envoy/envoy.yaml passes Envoy's own validation, routes every endpoint
of config/example.yaml with the right context_extensions, is configured fail-closed; the
example config passes `authz validate`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.run import load_envoy_template, render_envoy_config
from tests.integration.harness import (
    ENVOY_TEMPLATE,
    EXAMPLE_CONFIG,
    authz_env,
    routes,
    run_authz_cli,
    validate_envoy_config,
)

pytestmark = pytest.mark.integration


def _example_endpoints() -> dict[tuple[str, str], dict[str, Any]]:
    raw = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    return {
        (svc, name): ep
        for svc, service in raw["services"].items()
        for name, ep in service["endpoints"].items()
    }


def _ext_authz(config: dict[str, Any]) -> dict[str, Any]:
    listener = config["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_authz")


def test_envoy_yaml_passes_envoy_validation() -> None:
    done = validate_envoy_config(ENVOY_TEMPLATE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stdout


def test_rendered_config_has_the_new_ports_and_validates(tmp_path: Path) -> None:
    config = render_envoy_config(
        load_envoy_template(), listen=18000, authz=[19001, 19011], upstream=18001, admin=19901
    )
    text = yaml.safe_dump(config)
    for old in (8000, 9001, 8001, 9901):
        assert f"port_value: {old}\n" not in text
    for new in (18000, 19001, 19011, 18001, 19901):
        assert f"port_value: {new}\n" in text
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    done = validate_envoy_config(path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ext_authz_is_fail_closed_and_reads_the_body() -> None:
    ext = _ext_authz(load_envoy_template())["typed_config"]
    assert ext["failure_mode_allow"] is False
    assert ext["status_on_error"] == {"code": "ServiceUnavailable"}
    assert ext["grpc_service"]["envoy_grpc"]["cluster_name"] == "authz"
    assert ext["grpc_service"]["timeout"] == "0.5s"
    body = ext["with_request_body"]
    assert body["pack_as_bytes"] is True
    assert body["allow_partial_message"] is False


def test_path_safety_options() -> None:
    listener = load_envoy_template()["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["normalize_path"] is True
    assert hcm["merge_slashes"] is True
    assert hcm["path_with_escaped_slashes_action"] in ("REJECT_REQUEST", "UNESCAPE_AND_REDIRECT")


def test_every_example_endpoint_has_one_route_with_its_context_extensions() -> None:
    endpoints = _example_endpoints()
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for route in routes(load_envoy_template()):
        per = route.get("typed_per_filter_config", {}).get("envoy.filters.http.ext_authz")
        if per is None:
            continue
        ext = per["check_settings"]["context_extensions"]
        key = (ext["service"], ext["endpoint"])
        assert key in endpoints, f"route {route['name']} names an unknown endpoint {key}"
        assert key not in seen, f"two routes for {key}"
        seen[key] = route
    assert set(seen) == set(endpoints)
    for key, route in seen.items():
        ep, match = endpoints[key], route["match"]
        methods = [h["string_match"]["exact"] for h in match["headers"] if h["name"] == ":method"]
        assert methods == [ep["method"]], key
        template = match.get("path") or match["path_match_policy"]["typed_config"]["path_template"]
        assert template == ep["path"], key


def test_last_route_has_no_context_extensions() -> None:
    last = routes(load_envoy_template())[-1]
    assert last["match"] == {"prefix": "/"}
    assert "typed_per_filter_config" not in last


def test_example_config_passes_authz_validate() -> None:
    done = run_authz_cli("validate", "--config", str(EXAMPLE_CONFIG))
    assert done.returncode == 0, done.stderr
    assert "valid" in done.stdout


def test_example_config_needs_the_secret() -> None:
    import subprocess
    import sys

    env = {k: v for k, v in authz_env().items() if k != "AUTHZ_SECRET"}
    done = subprocess.run(
        [sys.executable, "-m", "authz", "validate", "--config", str(EXAMPLE_CONFIG)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "AUTHZ_SECRET" in done.stderr
