"""The deployment variants for ext_authz's HTTP transport: the compose override
(docker-compose.http.yml + envoy/envoy-compose-http.yaml), the Kubernetes overlay
(deploy/kubernetes-http) and Istio's `envoyExtAuthzHttp` provider. Offline, like
test_deploy.py (which also runs `envoy --mode validate` on envoy/envoy-compose-http.yaml and
checks it fails closed): the pieces agree on ports, names and the drain budget, the overlay's
objects validate against the Kubernetes schemas, and the Envoy config's routes and filters
are still what `authz envoy-config --transport http` generates for config/compose.yaml."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from authz.authorizer import Authorizer
from authz.config.load import load_config_text
from authz.envoy.bootstrap import BootstrapOptions, render_bootstrap
from authz.request import METHOD_OVERRIDE_HEADERS
from tests.helpers import drain_budget, seconds
from tests.unit.test_deploy import (
    CHECK_SERVICE,
    COMPOSE,
    CONFIG_COMPOSE,
    ISTIO,
    K8S,
    K8S_VERSIONS,
    ROOT,
    _compose_config_env,
    _documented_secret_keys,
    by_type,
    compose,
    docs,
    k8s_objects,
    kustomization,
)

COMPOSE_HTTP = ROOT / "docker-compose.http.yml"
ENVOY_COMPOSE_HTTP = ROOT / "envoy" / "envoy-compose-http.yaml"
K8S_HTTP = ROOT / "deploy" / "kubernetes-http"
ISTIO_HTTP = ISTIO / "istio-operator-http.yaml"
CHECK_HTTP_PORT = 9003  # the port the docs suggest for --check-http-listen


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


# --- docker compose ----------------------------------------------------------------------


def _merged_compose() -> dict[str, Any]:
    """docker-compose.yml with docker-compose.http.yml over it, as compose merges the keys
    the override uses: `environment` by name, `volumes` by container path."""
    merged = copy.deepcopy(compose())
    override = docs(COMPOSE_HTTP)[0]
    assert set(override) == {"services"}, set(override)
    for name, svc in override["services"].items():
        base = merged["services"][name]  # an override adds no service of its own
        assert set(svc) <= {"environment", "volumes"}, set(svc)
        base.setdefault("environment", {}).update(svc.get("environment", {}))
        mounts = {v.split(":")[1]: v for v in base.get("volumes", [])}
        mounts.update({v.split(":")[1]: v for v in svc.get("volumes", [])})
        base["volumes"] = list(mounts.values())
    return merged


def _envoy_compose_http() -> dict[str, Any]:
    return docs(ENVOY_COMPOSE_HTTP)[0]


def _clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


def _endpoint(cluster: dict[str, Any]) -> dict[str, Any]:
    return cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]


def test_compose_override_runs_envoy_http_and_authz_check_http():
    services = _merged_compose()["services"]
    (mount,) = [v for v in services["envoy"]["volumes"] if v.endswith(":/etc/envoy/envoy.yaml:ro")]
    assert mount.split(":")[0] == "./envoy/envoy-compose-http.yaml"
    env = services["authz"]["environment"]
    check_http = _port(env["AUTHZ_CHECK_HTTP_LISTEN"])
    assert check_http == CHECK_HTTP_PORT
    published = " ".join(str(p) for p in services["authz"].get("ports", []))
    assert str(check_http) not in published, "the Check port stays on the compose network"
    clusters = _clusters(_envoy_compose_http())
    sockets = {n: _endpoint(c)["address"]["socket_address"] for n, c in clusters.items()}
    assert sockets["authz-http"] == {"address": "authz", "port_value": check_http}
    assert sockets["authz"] == {"address": "authz", "port_value": _port(env["AUTHZ_LISTEN"])}
    listener = _envoy_compose_http()["static_resources"]["listeners"][0]
    port = listener["address"]["socket_address"]["port_value"]
    assert f"{port}:{port}" in services["envoy"]["ports"]


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    (hcm,) = by_type(config, "HttpConnectionManager")
    return hcm


def test_envoy_compose_http_routes_and_filters_are_what_envoy_config_generates():
    env = _compose_config_env()
    authorizer = Authorizer(load_config_text(CONFIG_COMPOSE.read_text(), env=env))
    shipped = _envoy_compose_http()
    sockets = {n: _endpoint(c)["address"]["socket_address"] for n, c in _clusters(shipped).items()}
    options = BootstrapOptions(
        authz=f"authz:{sockets['authz']['port_value']}",
        authz_http=f"authz:{sockets['authz-http']['port_value']}",
        transport="http", listen="0.0.0.0:8080", admin="127.0.0.1:9901",
    )  # fmt: skip
    generated = yaml.safe_load(render_bootstrap(authorizer, options))
    for key in ("route_config", "http_filters"):
        assert _hcm(shipped)[key] == _hcm(generated)[key], (
            f"{key} differs from `authz envoy-config`: regenerate {ENVOY_COMPOSE_HTTP.name} "
            "(its header says how)"
        )
    assert _hcm(shipped)["use_remote_address"] is True, "the edge"
    assert set(_clusters(shipped)) == set(_clusters(generated))


def test_envoy_compose_http_health_checks_follow_the_drain_budget():
    b = drain_budget()
    clusters = _clusters(_envoy_compose_http())
    metrics_port = _port(compose()["services"]["authz"]["environment"]["AUTHZ_HTTP_LISTEN"])
    for name in ("authz", "authz-http"):
        cluster = clusters[name]
        assert cluster["type"] == "STRICT_DNS", name  # every replica (docker compose --scale)
        assert (
            str(cluster["ignore_health_on_host_removal"]).lower()
            == b["ignore_health_on_host_removal"]
        )
        (hc,) = cluster["health_checks"]
        for knob in ("interval", "timeout", "unhealthy_threshold", "healthy_threshold",
                     "no_traffic_interval"):  # fmt: skip
            assert seconds(hc[knob]) == seconds(b[knob]), f"{name}: {knob}"
    assert clusters["authz"]["health_checks"][0]["grpc_health_check"] == {
        "service_name": CHECK_SERVICE
    }
    # the Check port answers every path as a Check: readiness comes from the HTTP port
    assert clusters["authz-http"]["health_checks"][0]["http_health_check"] == {"path": "/readyz"}
    endpoint = _endpoint(clusters["authz-http"])
    assert endpoint["health_check_config"] == {"port_value": metrics_port}


# --- Kubernetes --------------------------------------------------------------------------


def _apply_json_patch(obj: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    """The JSON patch `add` operations the overlay uses (RFC 6902; `-` appends)."""
    for op in ops:
        assert op["op"] == "add", op
        *parents, last = op["path"].lstrip("/").split("/")
        node: Any = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), op["value"])
        else:
            node[last] = op["value"]


def _overlay_objects() -> list[dict[str, Any]]:
    """deploy/kubernetes-http as `kubectl kustomize` builds it, without kustomize: the base's
    objects with the overlay's patches applied (each patch must hit exactly one object)."""
    kust = kustomization(K8S_HTTP)
    assert kust["resources"] == ["../kubernetes"]
    objs = [copy.deepcopy(d) for _, d in k8s_objects(K8S)]
    for patch in kust["patches"]:
        target = patch["target"]
        hits = [
            d
            for d in objs
            if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]
        ]
        assert len(hits) == 1, target
        _apply_json_patch(hits[0], yaml.safe_load(patch["patch"]))
    return objs


def _by_kind(objs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in objs}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_overlay_objects_validate(version: str):
    for obj in _overlay_objects():
        kubernetes_validate.validate(obj, version, strict=True)


def test_kubernetes_overlay_serves_check_http_privately():
    objs = _by_kind(_overlay_objects())
    (c,) = objs[("Deployment", "authz")]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert _port(env["AUTHZ_CHECK_HTTP_LISTEN"]) == ports["check-http"] == CHECK_HTTP_PORT
    for name in ("authz", "authz-headless"):
        (port,) = [p for p in objs[("Service", name)]["spec"]["ports"] if p["port"] == 9003]
        assert port["targetPort"] == "check-http" and port["appProtocol"] == "http"
    rules = objs[("NetworkPolicy", "authz")]["spec"]["ingress"]
    check_rules = [r for r in rules if {"port": CHECK_HTTP_PORT, "protocol": "TCP"} in r["ports"]]
    grpc_rules = [r for r in rules if {"port": 9001, "protocol": "TCP"} in r["ports"]]
    assert check_rules == grpc_rules, "the HTTP Check port is as private as the gRPC one"


def test_kubernetes_overlay_builds_with_kustomize(tmp_path: Path):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (the checks above apply the patches themselves)")
    deploy = tmp_path / "deploy"
    for src in (K8S, K8S_HTTP):
        shutil.copytree(src, deploy / src.name, ignore=shutil.ignore_patterns("secrets.env"))
    (deploy / K8S.name / "secrets.env").write_text(
        "".join(f"{k}={'s' * 64}\n" for k in sorted(_documented_secret_keys(K8S)))
    )
    out = subprocess.run(
        [kubectl, "kustomize", str(deploy / K8S_HTTP.name)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    built = _by_kind([d for d in yaml.safe_load_all(out.stdout) if d])
    ours = _by_kind(_overlay_objects())
    dep = ("Deployment", "authz")
    container = [x["spec"]["template"]["spec"]["containers"][0] for x in (built[dep], ours[dep])]
    assert [c["env"] for c in container] == [container[1]["env"]] * 2
    assert [c["ports"] for c in container] == [container[1]["ports"]] * 2
    for key in (("Service", "authz"), ("Service", "authz-headless")):
        assert built[key]["spec"]["ports"] == ours[key]["spec"]["ports"], key
    policy = ("NetworkPolicy", "authz")
    assert built[policy]["spec"]["ingress"] == ours[policy]["spec"]["ingress"]


# --- Istio -------------------------------------------------------------------------------

HTTP_PROVIDER_FIELDS = {
    "service", "port", "timeout", "pathPrefix", "failOpen", "statusOnError",
    "includeRequestHeadersInCheck", "includeAdditionalHeadersInCheck",
    "includeRequestBodyInCheck", "headersToUpstreamOnAllow", "headersToDownstreamOnDeny",
    "headersToDownstreamOnAllow",
}  # fmt: skip


def test_istio_http_provider_matches_the_grpc_one_and_the_overlay():
    (grpc_op,) = docs(ISTIO / "istio-operator.yaml")
    (op,) = docs(ISTIO_HTTP)
    assert (op["apiVersion"], op["kind"]) == ("install.istio.io/v1alpha1", "IstioOperator")
    mesh, grpc_mesh = op["spec"]["meshConfig"], grpc_op["spec"]["meshConfig"]
    assert mesh["pathNormalization"] == grpc_mesh["pathNormalization"]
    (p,) = mesh["extensionProviders"]
    (grpc_p,) = grpc_mesh["extensionProviders"]
    assert p["name"] == grpc_p["name"], "authorization-policy.yaml names the provider"
    http = p["envoyExtAuthzHttp"]
    assert set(http) <= HTTP_PROVIDER_FIELDS, set(http) - HTTP_PROVIDER_FIELDS
    assert http["service"] == grpc_p["envoyExtAuthzGrpc"]["service"]
    assert http["port"] == CHECK_HTTP_PORT
    assert http["failOpen"] is False and http["statusOnError"] == "503"
    assert http["includeRequestBodyInCheck"]["allowPartialMessage"] is False
    seen = set(http["includeRequestHeadersInCheck"])
    assert {"authorization", "content-type", *METHOD_OVERRIDE_HEADERS} <= seen, seen
    config = docs(K8S / "config.yaml")[0]
    token_header = config["auth"]["serviceToken"]["header"].lower()
    assert token_header in http["headersToUpstreamOnAllow"]
    assert {"content-type", "www-authenticate"} <= set(http["headersToDownstreamOnDeny"])
    assert "kubectl apply -k deploy/kubernetes-http" in ISTIO_HTTP.read_text()


def test_compose_and_kubernetes_http_variants_are_documented():
    text = (ROOT / "docs" / "deploy.md").read_text()
    assert "docker compose -f docker-compose.yml -f docker-compose.http.yml up" in text
    assert "kubectl apply -k deploy/kubernetes-http" in text
    assert re.search(r"istio-operator-http\.yaml", text)
    assert COMPOSE.read_text() and COMPOSE_HTTP.is_file()
