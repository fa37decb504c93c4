"""Envoy bootstraps for the scenarios, after reference/envoy/{a-none,b-jwt-rbac,c-extauthz}."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bench.procs import Proc, Procs, http_status, port_open

ENVOY = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "envoy"
_T = "type.googleapis.com/envoy.extensions"
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": f"{_T}.filters.http.router.v3.Router"},
}


def bootstrap(
    admin_port: int,
    port: int,
    filters: list[dict[str, Any]],
    per_route: dict[str, Any] | None = None,
    clusters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One listener; every path answers 200 from Envoy itself (the upstream costs nothing)."""
    route: dict[str, Any] = {
        "match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}},
    }
    if per_route:
        route["typed_per_filter_config"] = per_route
    hcm = {
        "@type": f"{_T}.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "main",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
        "http_filters": [*filters, ROUTER],
    }
    return {
        "admin": {"address": _addr(admin_port)},
        "static_resources": {
            "listeners": [
                {
                    "name": "main",
                    "address": _addr(port),
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": clusters or [],
        },
    }


def jwt_rbac_filters(jwks_json: str, issuer: str, audience: str) -> list[dict[str, Any]]:
    """jwt_authn RS256 with an inline JWKS (no token cache) + RBAC allowing role == admin."""
    jwt = {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": f"{_T}.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {
                "rs256": {
                    "issuer": issuer,
                    "audiences": [audience],
                    "local_jwks": {"inline_string": jwks_json},
                    "payload_in_metadata": "jwt_payload",
                }
            },
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "rs256"}}],
        },
    }
    rbac = {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": f"{_T}.filters.http.rbac.v3.RBAC",
            "rules": {
                "action": "ALLOW",
                "policies": {
                    "admin-only": {
                        "permissions": [{"any": True}],
                        "principals": [
                            {
                                "metadata": {
                                    "filter": "envoy.filters.http.jwt_authn",
                                    "path": [{"key": "jwt_payload"}, {"key": "role"}],
                                    "value": {"string_match": {"exact": "admin"}},
                                }
                            }
                        ],
                    }
                },
            },
        },
    }
    return [jwt, rbac]


def ext_authz(
    authz_port: int, context: dict[str, str]
) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """ext_authz gRPC (fail closed) to 127.0.0.1:authz_port; the route carries `context`
    as context_extensions. Returns (filters, per-route config, clusters)."""
    filt = {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": f"{_T}.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "failure_mode_allow": False,
            "grpc_service": {"envoy_grpc": {"cluster_name": "authz"}, "timeout": "2s"},
        },
    }
    per_route = {
        "envoy.filters.http.ext_authz": {
            "@type": f"{_T}.filters.http.ext_authz.v3.ExtAuthzPerRoute",
            "check_settings": {"context_extensions": context},
        }
    }
    cluster = {
        "name": "authz",
        "connect_timeout": "1s",
        "type": "STATIC",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": f"{_T}.upstreams.http.v3.HttpProtocolOptions",
                # As in the reference: several HTTP/2 connections per Envoy worker under load.
                "explicit_http_config": {"http2_protocol_options": {"max_concurrent_streams": 8}},
            }
        },
        "load_assignment": {
            "cluster_name": "authz",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _addr(authz_port)}}]}],
        },
    }
    return [filt], per_route, [cluster]


def ext_authz_http(
    authz_port: int,
) -> tuple[list[dict[str, Any]], None, list[dict[str, Any]]]:
    """ext_authz over HTTP (`http_service`, fail closed) to 127.0.0.1:authz_port, configured
    as `authz envoy-config --transport http` does (every header to authz, the client's
    content-length beside, the service token upstream). Returns (filters, None, clusters)."""
    exact = lambda *names: {"patterns": [{"exact": n} for n in names]}  # noqa: E731
    filt = {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": f"{_T}.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "failure_mode_allow": False,
            "allowed_headers": {"patterns": [{"safe_regex": {"regex": ".*"}}]},
            "disallowed_headers": exact("x-authz-content-length"),
            "http_service": {
                "server_uri": {"uri": "http://authz-http", "cluster": "authz-http",
                               "timeout": "2s"},
                "authorization_request": {"headers_to_add": [
                    {"key": "x-authz-content-length", "value": "%REQ(content-length)%"}]},
                "authorization_response": {
                    "allowed_upstream_headers": exact("x-sc-token", "x-authz-dry-run"),
                    "allowed_client_headers": exact("content-type", "www-authenticate"),
                    "dynamic_metadata_from_headers": exact("x-authz-body-plan"),
                },
            },
        },
    }  # fmt: skip
    cluster = {
        "name": "authz-http",
        "connect_timeout": "1s",
        "type": "STATIC",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": f"{_T}.upstreams.http.v3.HttpProtocolOptions",
                "common_http_protocol_options": {"idle_timeout": "60s"},
                "explicit_http_config": {"http_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": "authz-http",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _addr(authz_port)}}]}],
        },
    }
    return [filt], None, [cluster]


def start(procs: Procs, config: dict[str, Any], admin_port: int, port: int) -> Proc:
    """Envoy --concurrency 1 as in the reference; ready when admin /ready is 200 and the
    listener accepts connections."""
    path = procs.workdir / "envoy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [str(ENVOY), "-c", str(path), "--concurrency", "1", "--disable-hot-restart"]
    proc = procs.start("envoy", [*argv, "--log-level", "warn"])
    proc.wait_until(
        lambda: http_status(f"http://127.0.0.1:{admin_port}/ready") == 200 and port_open(port),
        30,
        "ready",
    )
    return proc


def _addr(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}
