"""The scenarios: what each one starts, how it is checked, how it is measured."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2 as pb

from bench import envoy
from bench.checkreq import CHECK_PATH, GRPC_HEADERS, check_request, grpc_frame
from bench.datastores import drop_postgres, seed_postgres, seed_sqlite
from bench.keys import BenchKey
from bench.loadtools import LoadResult, h2load, wrk
from bench.procs import (
    Proc,
    Procs,
    cpu_seconds,
    free_port,
    http_get,
    http_status,
    machine_cpu_seconds,
    port_open,
)
from bench.stats import per_request_us

ROOT = Path(__file__).resolve().parent.parent
AUTHZ = ROOT / ".venv" / "bin" / "authz"
PYTHON = ROOT / ".venv" / "bin" / "python"
CONFIGS = Path(__file__).resolve().parent / "configs"
PG_DSN = os.environ.get("BENCH_PG_DSN", "postgresql://127.0.0.1:5432/test")
ADMIN = {"service": "bench", "endpoint": "admin"}
PROFILE = {"service": "bench", "endpoint": "profile"}


class Skip(Exception):
    """The scenario cannot run here (yet); the message says why."""


@dataclass
class Bench:
    """What every scenario shares."""

    workdir: Path
    key: BenchKey
    seconds: float
    runs: int
    rate: int = 1000
    tokens: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tokens = {
            "admin": self.key.token({"id": "u1", "role": "admin"}),
            "user": self.key.token({"id": "u1", "role": "user"}),
            "stranger": self.key.token({"id": "u99", "role": "admin"}),
        }

    def auth(self, who: str = "admin") -> dict[str, str]:
        return {"authorization": f"Bearer {self.tokens[who]}"}

    def server_env(self) -> dict[str, str]:
        return {
            "BENCH_PUBLIC_KEY": self.key.public_pem,
            "BENCH_PRIVATE_KEY": self.key.private_pem,
            "BENCH_DIR": str(self.workdir),
            "BENCH_PG_DSN": PG_DSN,
        }


@dataclass
class Target:
    """A started scenario: where to send load and which processes to meter."""

    url: str
    headers: dict[str, str]
    meter: dict[str, Proc]  # role ("envoy", "server") -> process
    body: Path | None = None  # direct gRPC: the framed CheckRequest


# --- servers --------------------------------------------------------------------------


def start_floor(procs: Procs) -> tuple[Proc, int]:
    port = free_port()
    argv = [str(PYTHON), "-m", "bench.floor", "--listen", f"127.0.0.1:{port}"]
    proc = procs.start("floor", argv, {"PYTHONPATH": str(ROOT)})  # from any directory
    proc.wait_until(lambda: port_open(port), 30, "listening")
    return proc, port


def validate(b: Bench, config: Path) -> None:
    """`authz validate --config`; a rejection (or no CLI yet) skips the scenario."""
    if not AUTHZ.exists():
        raise Skip(f"{AUTHZ} not installed")
    env = {**os.environ, **b.server_env()}
    argv = [str(AUTHZ), "validate", "--config", str(config)]
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise Skip("authz validate did not finish in 60 s") from None
    if done.returncode != 0:
        why = [line.strip() for line in (done.stderr or done.stdout).strip().splitlines()]
        raise Skip(f"authz validate rejected {config.name}: " + "; ".join(why[-6:]))


def start_authz(b: Bench, procs: Procs, config: Path, http: bool = False) -> tuple[Proc, int]:
    """`authz serve`; the port Envoy's ext_authz talks to: gRPC, or with `http` the HTTP
    Check listener (--check-http-listen)."""
    validate(b, config)
    port, http_port, check_http = free_port(), free_port(), free_port()
    argv = [str(AUTHZ), "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}",
            "--http-listen", f"127.0.0.1:{http_port}"]  # fmt: skip
    if http:
        argv += ["--check-http-listen", f"127.0.0.1:{check_http}"]
    proc = procs.start("authz", argv, b.server_env())
    ready = f"http://127.0.0.1:{http_port}/readyz"
    proc.wait_until(lambda: http_status(ready) == 200 and port_open(port), 60, "ready (/readyz)")
    return proc, check_http if http else port


def start_http_floor(procs: Procs) -> tuple[Proc, int]:
    port = free_port()
    argv = [str(PYTHON), "-m", "bench.http_floor", "--listen", f"127.0.0.1:{port}"]
    proc = procs.start("http-floor", argv, {"PYTHONPATH": str(ROOT)})
    proc.wait_until(lambda: port_open(port), 30, "listening")
    return proc, port


def start_envoy(procs: Procs, filters: Any = (), per_route: Any = None, clusters: Any = None):
    admin, port = free_port(), free_port()
    config = envoy.bootstrap(admin, port, list(filters), per_route, clusters)
    return envoy.start(procs, config, admin, port), port


# --- sanity: a scenario is measured only when it enforces its policy --------------------


def expect(url: str, headers: dict[str, str], allowed: bool, want: int | None = None) -> None:
    status, body = http_get(url, headers)
    if allowed and status != 200:
        raise RuntimeError(f"GET {url} should pass, got {status} {body.strip()}")
    if not allowed and status == 200:
        raise RuntimeError(f"GET {url} should be denied, got 200: the policy is not enforced")
    if want is not None and status != want:
        print(f"    note: GET {url} denied with {status}, expected {want}")


def expect_check(port: int, req: pb.CheckRequest, allowed: bool) -> None:
    """One real Check call: does the server answer OK (code 0) or deny?"""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(CHECK_PATH, response_deserializer=pb.CheckResponse.FromString)
        resp = call(req.SerializeToString(), timeout=5)
    if (resp.status.code == 0) != allowed:
        raise RuntimeError(f"Check should {'allow' if allowed else 'deny'}: got {resp.status}")


# --- scenarios ------------------------------------------------------------------------


def s_envoy(b: Bench, procs: Procs) -> Target:
    proxy, port = start_envoy(procs)
    url = f"http://127.0.0.1:{port}/"
    expect(url, b.auth(), True)
    return Target(url, b.auth(), {"envoy": proxy})


def s_native(b: Bench, procs: Procs) -> Target:
    filters = envoy.jwt_rbac_filters(b.key.jwks, "bench", "bench")
    proxy, port = start_envoy(procs, filters)
    url = f"http://127.0.0.1:{port}/"
    expect(url, b.auth(), True)
    expect(url, b.auth("user"), False, 403)
    expect(url, {}, False, 401)
    return Target(url, b.auth(), {"envoy": proxy})


def s_floor(b: Bench, procs: Procs) -> Target:
    server, authz_port = start_floor(procs)
    proxy, port = start_envoy(procs, *envoy.ext_authz(authz_port, ADMIN))
    url = f"http://127.0.0.1:{port}/"
    expect(url, b.auth(), True)
    return Target(url, b.auth(), {"envoy": proxy, "server": server})


def s_http_floor(b: Bench, procs: Procs) -> Target:
    server, authz_port = start_http_floor(procs)
    proxy, port = start_envoy(procs, *envoy.ext_authz_http(authz_port))
    url = f"http://127.0.0.1:{port}/"
    expect(url, b.auth(), True)
    return Target(url, b.auth(), {"envoy": proxy, "server": server})


def s_authz(b: Bench, procs: Procs, http: bool = False) -> Target:
    server, authz_port = start_authz(b, procs, CONFIGS / "authz.yaml", http)
    filters = envoy.ext_authz_http(authz_port) if http else envoy.ext_authz(authz_port, ADMIN)
    proxy, port = start_envoy(procs, *filters)
    url = f"http://127.0.0.1:{port}/"
    expect(url, b.auth(), True)
    expect(url, b.auth("user"), False, 403)
    expect(url, {}, False, 401)
    return Target(url, b.auth(), {"envoy": proxy, "server": server})


def s_authz_http(b: Bench, procs: Procs) -> Target:
    """`authz`'s policy, over Envoy's ext_authz HTTP transport (endpoints by method + path)."""
    return s_authz(b, procs, http=True)


def s_query(db: str, journal: str = "wal", http: bool = False) -> Callable[[Bench, Procs], Target]:
    """The Instagram rule on `db`; SQLite in `journal` mode (WAL, or "delete": rollback);
    `http`: over the ext_authz HTTP transport."""

    def setup(b: Bench, procs: Procs) -> Target:
        try:
            if db == "sqlite":
                seed_sqlite(b.workdir / "app.db", journal)
            else:
                seed_postgres(PG_DSN)
                procs.cleanups.append(lambda: drop_postgres(PG_DSN))  # leave the db as found
        except Exception as exc:  # psycopg raises its own OperationalError
            raise Skip(f"cannot prepare the {db} tables: {exc}") from None
        server, authz_port = start_authz(b, procs, CONFIGS / f"authz-query-{db}.yaml", http)
        filters = envoy.ext_authz_http(authz_port) if http else envoy.ext_authz(authz_port, PROFILE)
        proxy, port = start_envoy(procs, *filters)
        base = f"http://127.0.0.1:{port}/profile?userId="
        expect(base + "p2", b.auth(), True)  # private, u1 follows it: both queries run
        expect(base + "p4", b.auth(), False, 403)  # private, not followed
        expect(base + "p1", b.auth("stranger"), True)  # public
        return Target(base + "p2", b.auth(), {"envoy": proxy, "server": server})

    return setup


def _direct(b: Bench, server: Proc, port: int, name: str) -> Target:
    req = check_request("/", b.tokens["admin"], ADMIN)
    body = b.workdir / f"check-{name}.bin"
    body.write_bytes(grpc_frame(req.SerializeToString()))
    expect_check(port, req, True)
    return Target(f"http://127.0.0.1:{port}{CHECK_PATH}", GRPC_HEADERS, {"server": server}, body)


def s_direct_floor(b: Bench, procs: Procs) -> Target:
    server, port = start_floor(procs)
    return _direct(b, server, port, "floor")


def s_direct_authz(b: Bench, procs: Procs) -> Target:
    server, port = start_authz(b, procs, CONFIGS / "authz.yaml")
    expect_check(port, check_request("/", b.tokens["user"], ADMIN), False)
    return _direct(b, server, port, "authz")


# name -> (setup, through Envoy?)
SCENARIOS: dict[str, tuple[Callable[[Bench, Procs], Target], bool]] = {
    "envoy": (s_envoy, True),
    "native": (s_native, True),
    "floor": (s_floor, True),
    "authz": (s_authz, True),
    "http-floor": (s_http_floor, True),
    "authz-http": (s_authz_http, True),
    "authz-query-sqlite": (s_query("sqlite"), True),
    "authz-query-sqlite-rollback": (s_query("sqlite", "delete"), True),
    "authz-query-postgres": (s_query("postgres"), True),
    "authz-query-sqlite-http": (s_query("sqlite", http=True), True),
    "authz-query-postgres-http": (s_query("postgres", http=True), True),
    "direct-floor": (s_direct_floor, False),
    "direct-authz": (s_direct_authz, False),
}


# --- measuring ------------------------------------------------------------------------


def load(b: Bench, t: Target, mode: str, seconds: float) -> LoadResult:
    if mode == "direct":
        return h2load(t.url, seconds, b.workdir, t.headers, body=t.body)
    if mode == "fixed":
        return h2load(t.url, seconds, b.workdir, t.headers, rate=b.rate)
    return wrk(t.url, seconds, b.workdir, t.headers)


def measure(b: Bench, t: Target, mode: str, i: int) -> dict[str, Any]:
    """Run number `i` (of `b.runs`), bounded; CPU of each metered process from /proc deltas."""
    before = {role: cpu_seconds(p.pid) for role, p in t.meter.items()}
    before["machine"] = machine_cpu_seconds()
    started = time.monotonic()
    result = load(b, t, mode, b.seconds)
    elapsed = time.monotonic() - started
    for p in t.meter.values():
        p.check_alive()
    cpu = {role: cpu_seconds(p.pid) - before[role] for role, p in t.meter.items()}
    cpu["load"] = result.tool_cpu_s
    cpu["machine"] = machine_cpu_seconds() - before["machine"]
    run = {
        "rps": result.rps,
        "requests": result.requests,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors,
        "wall_s": round(elapsed, 2),
        "cpu_us_per_req": {r: _round(per_request_us(s, result.requests)) for r, s in cpu.items()},
    }
    if mode == "fixed" and result.rps < 0.95 * b.rate:
        print(f"    note: fixed rate fell short: {result.rps:,.0f} of {b.rate:,} req/s")
    print(f"    {mode} run {i + 1}/{b.runs}: {_brief(run)}", flush=True)
    return run


def warm_up(b: Bench, t: Target, through_envoy: bool) -> None:
    """Connections, caches and allocators warm before the measured runs (not recorded)."""
    load(b, t, "wrk" if through_envoy else "direct", min(2.0, b.seconds))


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _brief(run: dict[str, Any]) -> str:
    cpu = " ".join(f"{r}={v:.0f}" for r, v in run["cpu_us_per_req"].items() if v is not None)
    p50, p99 = run["p50_ms"], run["p99_ms"]
    lat = f"p50 {p50:.2f} p99 {p99:.2f} ms" if p50 is not None and p99 is not None else ""
    err = f" ERRORS {run['errors']}" if run["errors"] else ""
    return f"{run['rps']:,.0f} req/s {lat} cpu µs/req {cpu}{err}"
