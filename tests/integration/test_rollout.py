"""A rollout under load through Envoy loses no Check.

Two authz replicas serve as the endpoints of Envoy's `authz` cluster, with the health-check
settings envoy/envoy.yaml ships (the drain budget of docs/deploy.md). While a bounded load
of requests with known decisions runs, the rollout does what a Deployment with
`maxSurge: 1, maxUnavailable: 0` does: a replacement replica starts on the cluster's third
endpoint, Envoy sees it healthy, then one old replica gets SIGTERM and drains for the
budget's AUTHZ_DRAIN before it exits. Not one request may fail or get a wrong decision, and
Envoy must report no ext_authz error.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.helpers import drain_budget, free_port, seconds, wait_for
from tests.integration.harness import (
    EXAMPLE_CONFIG,
    AuthzServer,
    Envoy,
    bearer,
    make_envoy_config,
    start_authz,
    start_echo,
    start_envoy,
    token,
)

pytestmark = pytest.mark.integration

WORKERS = 8  # concurrent clients: enough to keep Checks in flight on 2 shared cores
LOAD_LIMIT = 45.0  # hard bound on the whole rollout, load included
HEALTHY_WITHIN = 15.0  # a new replica is seen healthy by Envoy within this

USER = bearer(token({"id": "u1", "role": "user", "orders": ["o-1"]}, ttl=600))
ADMIN = bearer(token({"id": "a1", "role": "admin"}, ttl=600))
# (method, path, headers, expected status): allowed and denied, with and without a token
MIX = [
    ("GET", "/v1/orders/o-1", USER, 200),
    ("GET", "/v1/orders/o-9", USER, 403),
    ("GET", "/v1/orders", {}, 401),
    ("GET", "/v1/admin/stats", ADMIN, 200),
]


@dataclass
class Rollout:
    results: list[tuple[float, int, int | None]] = field(default_factory=list)  # t, want, got
    phases: dict[str, float] = field(default_factory=dict)  # event -> monotonic time

    def counts(self) -> Counter[str]:
        return Counter("ok" if got == want else f"{want}->{got}" for _, want, got in self.results)

    def between(self, start: str, end: str) -> int:
        return sum(1 for t, _, _ in self.results if self.phases[start] <= t < self.phases[end])


@dataclass
class Cluster:
    old: list[AuthzServer]
    spare_port: int  # the endpoint the replacement replica will listen on
    envoy: Envoy
    log_dir: Path
    drain: str
    started: list[AuthzServer] = field(default_factory=list)


@pytest.fixture
def cluster(log_dir: Path) -> Iterator[Cluster]:
    drain = drain_budget()["AUTHZ_DRAIN"]
    echo = start_echo()
    old: list[AuthzServer] = []
    started: list[AuthzServer] = []
    envoy = None
    try:
        for name in ("authz-old-0", "authz-old-1"):
            old.append(start_authz(EXAMPLE_CONFIG, log_dir, name=name, drain=drain))
        spare = free_port()
        envoy = start_envoy(_envoy_config([s.grpc_port for s in old] + [spare], echo.port), log_dir)
        yield Cluster(old, spare, envoy, log_dir, drain, started)
    finally:
        if envoy is not None:
            envoy.process.stop()
        for server in old + started:
            server.process.stop()
        echo.stop()


def _envoy_config(authz_ports: list[int], upstream: int) -> dict:
    return make_envoy_config(
        authz_ports=authz_ports, upstream_port=upstream, listen_port=free_port(),
        admin_port=free_port(),
    )  # fmt: skip


def test_the_rollout_runs_the_shipped_health_check_settings() -> None:
    # The rollout below proves something about the shipped settings only if Envoy runs them.
    config = _envoy_config([free_port(), free_port()], free_port())
    (authz,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "authz"]
    (hc,) = authz["health_checks"]
    budget = drain_budget()
    for knob in ("interval", "timeout", "unhealthy_threshold", "healthy_threshold",
                 "no_traffic_interval"):  # fmt: skip
        assert seconds(hc[knob]) == seconds(budget[knob]), knob
    assert authz["ignore_health_on_host_removal"] is True


async def _client(c: httpx.AsyncClient, url: str, n: int, stop: asyncio.Event, run: Rollout):
    i = n
    while not stop.is_set():
        method, path, headers, want = MIX[i % len(MIX)]
        i += 1
        started = time.monotonic()
        try:
            resp = await c.request(method, url + path, headers={**headers,
                                   "x-request-id": str(uuid.uuid4())})  # fmt: skip
            got: int | None = resp.status_code
        except httpx.HTTPError:
            got = None
        run.results.append((started, want, got))


async def _wait(predicate, timeout: float, what: str) -> None:
    """wait_for without blocking the load's event loop."""
    await asyncio.to_thread(wait_for, predicate, timeout, what)


async def _rollout(cluster: Cluster) -> Rollout:
    run = Rollout()
    stop = asyncio.Event()
    envoy, old = cluster.envoy, cluster.old[0]
    limits = httpx.Limits(max_connections=WORKERS)
    async with httpx.AsyncClient(timeout=5, limits=limits) as c:
        url = envoy.url("")
        clients = [asyncio.create_task(_client(c, url, n, stop, run)) for n in range(WORKERS)]
        try:
            async with asyncio.timeout(LOAD_LIMIT):
                run.phases["load"] = time.monotonic()
                await asyncio.sleep(1.0)
                run.phases["surge"] = time.monotonic()  # the replacement starts
                new = await asyncio.to_thread(
                    start_authz, EXAMPLE_CONFIG, cluster.log_dir, name="authz-new",
                    drain=cluster.drain, grpc_port=cluster.spare_port,
                )  # fmt: skip
                cluster.started.append(new)
                await _wait(lambda: envoy.healthy_hosts("authz") == 3, HEALTHY_WITHIN,
                            "Envoy sees the replacement healthy")  # fmt: skip
                run.phases["sigterm"] = time.monotonic()
                old.process.signal(signal.SIGTERM)
                await _wait(lambda: not old.process.alive(), LOAD_LIMIT, "the old replica exits")
                run.phases["exited"] = time.monotonic()
                await _wait(lambda: envoy.healthy_hosts("authz") == 2, HEALTHY_WITHIN,
                            "Envoy counts the replica gone")  # fmt: skip
                await asyncio.sleep(1.0)
                run.phases["end"] = time.monotonic()
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*clients), timeout=10)
    return run


def _host_requests(envoy: Envoy, port: int) -> int:
    """Requests Envoy sent to the authz endpoint on `port` (admin /clusters)."""
    text = httpx.get(f"http://127.0.0.1:{envoy.admin_port}/clusters", timeout=2).text
    prefix = f"authz::127.0.0.1:{port}::rq_total::"
    return sum(int(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


def test_rolling_one_replica_under_load_fails_no_check(cluster: Cluster) -> None:
    wait_for(lambda: cluster.envoy.healthy_hosts("authz") == 2, HEALTHY_WITHIN, "both healthy")
    run = asyncio.run(_rollout(cluster))
    old = cluster.old[0]

    counts = run.counts()
    summary = (
        f"rollout: {len(run.results)} requests, {dict(counts)}; "
        f"{run.between('sigterm', 'exited')} during the drain, "
        f"{run.between('exited', 'end')} after the exit; "
        f"to the replacement: {_host_requests(cluster.envoy, cluster.spare_port)}"
    )
    print(summary)
    (cluster.log_dir / "rollout-counts.txt").write_text(summary + "\n")
    assert set(counts) == {"ok"}, summary
    assert cluster.envoy.counter("http.ingress.ext_authz.error") == 0, summary
    assert old.process.wait(1) == 0, old.process.log()
    drained = run.phases["exited"] - run.phases["sigterm"]
    assert drained >= seconds(cluster.drain) - 0.1, "exited before its drain"
    # The test exercised what it claims: traffic before, during and after, and the
    # replacement took its share.
    assert run.between("load", "surge") >= 10, summary
    assert run.between("sigterm", "exited") >= 20, summary
    assert run.between("exited", "end") >= 5, summary
    assert _host_requests(cluster.envoy, cluster.spare_port) > 0, summary
