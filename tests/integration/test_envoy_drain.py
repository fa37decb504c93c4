"""SIGTERM under load loses no request.

A bounded concurrent loop of requests with known decisions runs through Envoy while a server
gets SIGTERM. During its drain (`--drain`) the server reports not-ready (/readyz and gRPC
health) but keeps answering; then it stops accepting, finishes what is in flight and exits 0.

- One server: every request started before the drain ends gets its correct decision; once
  the server is gone Envoy fails closed (503), never open.
- Two replicas (Envoy's active gRPC health checks from envoy/envoy.yaml): Envoy moves Checks
  to the other replica during the drain, so not one request fails, before, during or after.

Either way nothing that should be denied ever reaches the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers import drain_budget, seconds, wait_for
from tests.integration.harness import EXAMPLE_CONFIG, Stack, bearer, start_stack, token

pytestmark = pytest.mark.integration

DRAIN = 1.5  # seconds the server keeps serving, not ready, after SIGTERM
# ... with two replicas: the shipped AUTHZ_DRAIN, so Envoy's shipped health checks see it
PAIR_DRAIN = seconds(drain_budget()["AUTHZ_DRAIN"])
MARGIN = 0.5  # requests started this close to the drain's end may meet the stopped server
WORKERS = 12
LOAD_LIMIT = 15.0  # hard bound on one loop

USER = bearer(token({"id": "u1", "role": "user", "orders": ["o-1"]}, ttl=600))
ADMIN = bearer(token({"id": "a1", "role": "admin"}, ttl=600))
JSON = {"content-type": "application/json"}
# (method, path, headers, body, expected status)
MIX = [
    ("GET", "/v1/orders/o-1", USER, None, 200),
    ("GET", "/v1/orders/o-9", USER, None, 403),
    ("GET", "/v1/orders", {}, None, 401),
    ("GET", "/v1/admin/stats", ADMIN, None, 200),
    ("POST", "/v1/orders", {**USER, **JSON}, b'{"item": "a", "amount": 2}', 200),
    ("POST", "/v1/orders", {**USER, **JSON}, b'{"item": ', 400),
]


@dataclass
class Result:
    started: float
    expected: int
    status: int | None  # None: no HTTP response at all
    request_id: str


@dataclass
class Run:
    results: list[Result]
    t_sig: float
    t_exit: float
    ready_seen: list[int]  # /readyz statuses of the terminated server during its drain

    def between(self, start: float, end: float) -> list[Result]:
        return [r for r in self.results if start <= r.started < end]

    def summary(self, results: list[Result]) -> Counter[tuple[int, int | None]]:
        return Counter((r.expected, r.status) for r in results)


@pytest.fixture
def single(log_dir: Path) -> Iterator[Stack]:
    (d := log_dir / "single").mkdir()
    s = start_stack(EXAMPLE_CONFIG, d, drain=f"{DRAIN}s")
    yield s
    s.stop()


@pytest.fixture
def pair(log_dir: Path) -> Iterator[Stack]:
    (d := log_dir / "pair").mkdir()
    s = start_stack(EXAMPLE_CONFIG, d, drain=f"{PAIR_DRAIN}s", replicas=2)
    yield s
    s.stop()


async def _worker(
    client: httpx.AsyncClient, url: str, n: int, stop: asyncio.Event, out: list[Result]
) -> None:
    i = n
    while not stop.is_set():
        method, path, headers, body, expected = MIX[i % len(MIX)]
        i += 1
        rid = str(uuid.uuid4())
        started = time.monotonic()
        try:
            resp = await client.request(
                method, url + path, headers={**headers, "x-request-id": rid}, content=body
            )
            status: int | None = resp.status_code
        except httpx.HTTPError:
            status = None
        out.append(Result(started, expected, status, rid))


async def _load_through_sigterm(stack: Stack) -> Run:
    """Run the loop; SIGTERM the first server after 0.5 s; keep going until it has exited,
    then 0.5 s more."""
    results: list[Result] = []
    stop = asyncio.Event()
    proc = stack.authz.process
    ready_url = f"http://127.0.0.1:{stack.authz.http_port}/readyz"
    async with httpx.AsyncClient(timeout=5, limits=httpx.Limits(max_connections=WORKERS)) as c:
        url = stack.envoy.url("")
        tasks = [asyncio.create_task(_worker(c, url, n, stop, results)) for n in range(WORKERS)]
        deadline = time.monotonic() + LOAD_LIMIT
        try:
            await asyncio.sleep(0.5)
            t_sig = time.monotonic()
            proc.signal(signal.SIGTERM)
            ready_seen: list[int] = []
            while proc.alive() and time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):  # refused once it has exited
                    ready_seen.append((await c.get(ready_url)).status_code)
                await asyncio.sleep(0.1)
            t_exit = time.monotonic()
            await asyncio.sleep(0.5)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    return Run(results, t_sig, t_exit, ready_seen)


def _assert_clean_exit(stack: Stack, run: Run, drain: float) -> None:
    proc = stack.authz.process
    assert not proc.alive(), "the server did not exit within the bound"
    assert proc.wait(1) == 0, proc.log()
    assert run.t_exit - run.t_sig >= drain - 0.1, "the server stopped before its drain time"
    assert 503 in run.ready_seen, f"/readyz never said not-ready: {run.ready_seen}"


def _assert_upstream_saw_exactly_the_allowed(stack: Stack, run: Run) -> None:
    seen = {r["headers"].get("x-request-id") for r in stack.echo.requests}
    leaked = [r for r in run.results if r.expected != 200 and r.request_id in seen]
    assert not leaked, f"{len(leaked)} requests that should be denied reached the upstream"
    assert all(r.request_id in seen for r in run.results if r.status == 200)


def test_sigterm_single_server_drains_then_envoy_fails_closed(single: Stack) -> None:
    run = asyncio.run(_load_through_sigterm(single))
    _assert_clean_exit(single, run, DRAIN)

    no_answer = [r for r in run.results if r.status is None]
    assert not no_answer, f"{len(no_answer)} requests got no HTTP answer"
    wrong = [r for r in run.results if r.status not in (r.expected, 503)]
    assert not wrong, f"wrong decisions: {run.summary(wrong)}"

    before = run.between(0, run.t_sig)
    during = run.between(run.t_sig, run.t_sig + DRAIN - MARGIN)
    assert len(before) >= 20 and len(during) >= 20, (len(before), len(during))
    lost = [r for r in before + during if r.status != r.expected]
    assert not lost, f"lost before/during the drain: {run.summary(lost)}"

    after = run.between(run.t_exit, float("inf"))
    assert after, "no request after the exit"
    assert all(r.status == 503 for r in after), f"after exit: {run.summary(after)}"
    _assert_upstream_saw_exactly_the_allowed(single, run)


def test_sigterm_one_of_two_replicas_loses_nothing(pair: Stack) -> None:
    wait_for(lambda: pair.envoy.healthy_hosts("authz") == 2, 10, "both replicas healthy")
    run = asyncio.run(_load_through_sigterm(pair))
    _assert_clean_exit(pair, run, PAIR_DRAIN)

    wrong = [r for r in run.results if r.status != r.expected]
    assert not wrong, f"wrong decisions or lost requests: {run.summary(wrong)}"
    after = run.between(run.t_exit, float("inf"))
    assert len(run.between(run.t_sig, run.t_exit)) >= 20 and len(after) >= 5
    assert pair.envoy.counter("http.ingress.ext_authz.error") == 0
    _assert_upstream_saw_exactly_the_allowed(pair, run)
