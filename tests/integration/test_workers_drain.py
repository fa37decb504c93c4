"""`authz serve --workers 3` behind a real Envoy: signals reach every worker.

- SIGHUP to the parent reloads the config in every worker (the parent stays up).
- SIGTERM to the parent while slow Checks are in flight (a webhook that answers after
  SLOW seconds): /readyz turns 503 within the drain period while Checks are still
  answered; after the drain no new connection is accepted on either port, yet every Check
  that was in flight completes with its proper decision; every worker exits, and so does
  the parent, with status 0.

The routes here disable ext_proc (like envoy/envoy.yaml's routes without body rules), and
Envoy's ext_authz timeout is raised above SLOW.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import free_port, port_open, wait_for
from tests.integration.harness import (
    EXT_AUTHZ_PER_ROUTE,
    Envoy,
    Process,
    authz_env,
    bearer,
    make_envoy_config,
    routes,
    start_echo,
    start_envoy,
    token,
)

pytestmark = pytest.mark.integration

WORKERS = 3
DRAIN = 1.0  # --drain: not ready, still serving
SLOW = 2.5  # seconds the webhook takes: in-flight Checks outlive the drain
IN_FLIGHT = 9  # slow requests in flight at SIGTERM
BOUND = 20.0  # hard bound on waiting for the exit
AUTH = bearer(token({"id": "u1"}, ttl=600))

CONFIG = """\
project: drain
auth:
  secrets:
    - {{kid: main, alg: HS256, secret: "${{AUTHZ_SECRET}}", primary: true}}
  serviceToken: {{header: x-sc-token, ttl: 60s}}
services:
  slow:
    endpoints:
      ok:
        method: GET
        path: /slow/ok
        rule: {{rule: webhook, url: "{hook}/allow", timeout: 10s, requestTemplate: {{a: 1}}}}
      nope:
        method: GET
        path: /slow/nope
        rule:
          rule: webhook
          url: "{hook}/deny"
          timeout: 10s
          requestTemplate: {{a: 1}}
          error: the webhook said no
      fast:
        method: GET
        path: /slow/fast
        rule: {{rule: {fast}}}
"""


# --- the slow webhook --------------------------------------------------------------------


class SlowHook(ThreadingHTTPServer):
    """/allow answers 200 {}, /deny 403, both after SLOW seconds; counts calls started."""

    daemon_threads = True
    request_queue_size = 64  # 5 by default: a burst of connections would wait for SYN retries

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HookHandler)
        self.lock = threading.Lock()
        self.started = 0
        self.thread = threading.Thread(target=self.serve_forever, name="slow-hook", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def calls(self) -> int:
        with self.lock:
            return self.started


class _HookHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SlowHook

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        with self.server.lock:
            self.server.started += 1
        time.sleep(SLOW)
        status = 200 if self.path == "/allow" else 403
        data = b"{}"
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


# --- the stand ---------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    """Live child processes of `pid` (scans /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(stat.parent.name))
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


@dataclass
class Stand:
    config: Path
    hook: SlowHook
    authz: Process
    grpc_port: int
    http_port: int
    envoy: Envoy
    workers: list[int]

    def http(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.http_port}{path}", timeout=2)


def _route(endpoint: str) -> dict[str, Any]:
    ext = {"service": "slow", "endpoint": endpoint}
    return {
        "name": f"slow.{endpoint}",
        "match": {"path": f"/slow/{endpoint}"},
        "route": {"cluster": "orders"},
        "typed_per_filter_config": {
            "envoy.filters.http.ext_authz": {
                "@type": EXT_AUTHZ_PER_ROUTE, "check_settings": {"context_extensions": ext}},
            "envoy.filters.http.ext_proc": {
                "@type": "type.googleapis.com/"
                         "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
                "disabled": True},
        },
    }  # fmt: skip


def _slow_envoy_config(grpc_port: int, upstream_port: int) -> dict[str, Any]:
    config = make_envoy_config(
        authz_ports=grpc_port, upstream_port=upstream_port, listen_port=free_port(),
        admin_port=free_port(), extra_routes=[_route(e) for e in ("ok", "nope", "fast")],
    )  # fmt: skip
    assert [r["name"] for r in routes(config)][-4:-1] == ["slow.ok", "slow.nope", "slow.fast"]
    listener = config["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    ext_authz = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_authz")
    ext_authz["typed_config"]["grpc_service"]["timeout"] = f"{SLOW + 5}s"
    return config


@pytest.fixture(scope="module")
def stand(log_dir: Path) -> Iterator[Stand]:
    hook = SlowHook()
    hook.thread.start()
    config = log_dir / "workers.yaml"
    config.write_text(CONFIG.format(hook=hook.url, fast="allow"))
    grpc_port, http_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "authz", "serve", "--config", str(config),
           "--listen", f"127.0.0.1:{grpc_port}", "--http-listen", f"127.0.0.1:{http_port}",
           "--workers", str(WORKERS), "--drain", f"{DRAIN}s", "--watch", "0",
           "--log-level", "info"]  # fmt: skip
    echo = start_echo()
    proc = Process("authz", cmd, log_dir, authz_env())
    workers: list[int] = []
    envoy = None
    try:
        proc.wait_http_ok(f"http://127.0.0.1:{http_port}/readyz")
        wait_for(lambda: len(children_of(proc.proc.pid)) == WORKERS, 15, "the workers")
        workers = children_of(proc.proc.pid)
        # every worker ready: each one's first load is counted in the shared metrics
        wait_for(lambda: _reloads(http_port) == WORKERS, 30, "every worker loaded")
        envoy = start_envoy(_slow_envoy_config(grpc_port, echo.port), log_dir)
        yield Stand(config, hook, proc, grpc_port, http_port, envoy, workers)
    finally:
        if envoy is not None:
            envoy.process.stop()
        proc.stop()
        for pid in workers:  # only if the test failed half-way: never leave one behind
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        echo.stop()
        hook.shutdown()
        hook.server_close()


def _reloads(http_port: int) -> int:
    text = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=2).text
    m = re.search(r'^authz_config_reloads_total\{result="success"\} ([0-9.e+]+)$', text, re.M)
    return int(float(m.group(1))) if m else 0


# --- tests -------------------------------------------------------------------------------


def test_sighup_to_the_parent_reloads_every_worker(stand: Stand) -> None:
    assert httpx.get(stand.envoy.url("/slow/fast"), timeout=5).status_code == 200
    before = _reloads(stand.http_port)
    text = CONFIG.format(hook=stand.hook.url, fast="deny")
    stand.config.write_text(text)
    stand.authz.signal(signal.SIGHUP)
    wait_for(lambda: _reloads(stand.http_port) == before + WORKERS, 10, "every worker reloaded")
    assert stand.authz.alive() and children_of(stand.authz.proc.pid) == stand.workers
    new = hashlib.sha256(text.encode()).hexdigest()[:12]
    # Envoy gets the new decision; /readyz on fresh connections (which SO_REUSEPORT spreads
    # over the workers) names the new version only
    assert httpx.get(stand.envoy.url("/slow/fast"), timeout=5).status_code == 401  # deny
    assert {stand.http("/readyz").json()["config"] for _ in range(12)} == {new}
    # /metrics (merged over the workers) names only the new version as serving
    info = dict(re.findall(r'^authz_config_info\{version="(\w+)"\} ([0-9.]+)$',
                           stand.http("/metrics").text, re.M))  # fmt: skip
    assert {v for v, value in info.items() if float(value) == 1} == {new}, info


@dataclass
class Outcome:
    path: str
    status: int | None
    error: str | None
    finished: float


async def _request(client: httpx.AsyncClient, url: str, path: str) -> Outcome:
    try:
        resp = await client.get(url + path, headers={**AUTH, "x-request-id": str(uuid.uuid4())})
    except httpx.HTTPError as exc:
        return Outcome(path, None, f"{type(exc).__name__}: {exc}", time.monotonic())
    error = None
    if resp.status_code != 200:
        with contextlib.suppress(ValueError, KeyError):
            error = json.loads(resp.content)["error"]
    return Outcome(path, resp.status_code, error, time.monotonic())


async def _sigterm_with_checks_in_flight(stand: Stand) -> dict[str, Any]:
    url = stand.envoy.url("")
    ready = f"http://127.0.0.1:{stand.http_port}/readyz"
    calls = stand.hook.calls()
    out: dict[str, Any] = {"ready": []}
    limits = httpx.Limits(max_connections=IN_FLIGHT + 4)
    async with httpx.AsyncClient(timeout=SLOW + 10, limits=limits) as c:
        paths = ["/slow/ok" if i % 2 else "/slow/nope" for i in range(IN_FLIGHT)]
        batch = [asyncio.create_task(_request(c, url, p)) for p in paths]
        deadline = time.monotonic() + 10
        while stand.hook.calls() < calls + IN_FLIGHT and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert stand.hook.calls() == calls + IN_FLIGHT, "the slow Checks did not all start"

        out["t_sig"] = t_sig = time.monotonic()
        stand.authz.signal(signal.SIGTERM)
        # during the drain: not ready, but a new Check is still answered
        while time.monotonic() < t_sig + DRAIN - 0.2:
            with contextlib.suppress(httpx.HTTPError):
                out["ready"].append((time.monotonic() - t_sig, (await c.get(ready)).status_code))
            if "during" not in out and out["ready"] and out["ready"][-1][1] == 503:
                out["during"] = await _request(c, url, "/slow/fast")
            await asyncio.sleep(0.05)
        # after the drain: the ports refuse new connections, the slow Checks still run
        refused_by = t_sig + DRAIN + 0.6
        await asyncio.sleep(max(0.0, refused_by - time.monotonic()))
        out["grpc_open"] = port_open(stand.grpc_port)
        out["http_open"] = port_open(stand.http_port)
        out["pending_at_refusal"] = sum(not t.done() for t in batch)
        out["batch"] = await asyncio.gather(*batch)
    return out


def test_sigterm_to_the_parent_drains_every_worker(stand: Stand) -> None:
    parent = stand.authz
    assert children_of(parent.proc.pid) == stand.workers
    assert stand.http("/readyz").status_code == 200
    out = asyncio.run(_sigterm_with_checks_in_flight(stand))
    t_sig = out["t_sig"]
    try:
        code = parent.wait(BOUND)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the parent did not exit within {BOUND}s:\n{parent.log()}")
    t_exit = time.monotonic()
    print(
        f"\nworkers drain: /readyz {[(round(t, 2), s) for t, s in out['ready'][:3]]}..., "
        f"slow Checks pending when the ports refused {out['pending_at_refusal']}/{IN_FLIGHT}, "
        f"finished {max(o.finished for o in out['batch']) - t_sig:.2f}s after SIGTERM, "
        f"parent exit {code} "
        f"{t_exit - t_sig:.2f}s after SIGTERM"
    )

    # /readyz went not-ready first, within the drain, and stayed so; Checks still answered
    first = next((i for i, (_, status) in enumerate(out["ready"]) if status == 503), None)
    assert first is not None and out["ready"][first][0] < DRAIN, out["ready"]
    assert {status for _, status in out["ready"][first:]} == {503}, out["ready"]
    assert "during" in out and out["during"].status == 403, out  # fast: deny since the SIGHUP
    # after the drain: no new connection, though Checks were still in flight
    assert not out["grpc_open"] and not out["http_open"], out
    assert out["pending_at_refusal"] == IN_FLIGHT, "the slow Checks ended before the drain did"
    # every in-flight Check completed with its decision
    for o in out["batch"]:
        if o.path == "/slow/ok":
            assert (o.status, o.error) == (200, None), o
        else:
            assert (o.status, o.error) == (403, "the webhook said no"), o
    # every worker exited, then the parent, with 0
    assert code == 0, parent.log()
    assert not [pid for pid in stand.workers if alive(pid)]
    assert t_exit - t_sig >= DRAIN
    assert parent.log().count("authz stopped") == WORKERS, parent.log()


def test_workers_stop_when_the_parent_is_killed(log_dir: Path) -> None:
    """SIGKILL leaves the parent no chance to forward anything: the workers still stop (Linux
    parent-death signal), instead of serving on the shared port forever."""
    config = log_dir / "orphans.yaml"
    config.write_text(CONFIG.format(hook="http://127.0.0.1:9", fast="allow"))
    grpc_port, http_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "authz", "serve", "--config", str(config),
           "--listen", f"127.0.0.1:{grpc_port}", "--http-listen", f"127.0.0.1:{http_port}",
           "--workers", "2", "--drain", "0s", "--watch", "0"]  # fmt: skip
    proc = Process("orphans", cmd, log_dir, authz_env())
    workers: list[int] = []
    try:
        proc.wait_http_ok(f"http://127.0.0.1:{http_port}/readyz")
        wait_for(lambda: len(children_of(proc.proc.pid)) == 2, 15, "the workers")
        workers = children_of(proc.proc.pid)
        proc.signal(signal.SIGKILL)
        proc.wait(5)
        wait_for(lambda: not any(alive(pid) for pid in workers), 10, "the workers to stop")
        assert not port_open(grpc_port) and not port_open(http_port)
        assert proc.log().count("authz stopped") == 2, proc.log()
    finally:
        proc.stop()
        for pid in workers:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def test_a_worker_that_dies_is_replaced(log_dir: Path) -> None:
    config = log_dir / "replace.yaml"
    config.write_text(CONFIG.format(hook="http://127.0.0.1:9", fast="allow"))
    grpc_port, http_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "authz", "serve", "--config", str(config),
           "--listen", f"127.0.0.1:{grpc_port}", "--http-listen", f"127.0.0.1:{http_port}",
           "--workers", "2", "--drain", "0s", "--watch", "0"]  # fmt: skip
    proc = Process("replace", cmd, log_dir, authz_env())
    try:
        proc.wait_http_ok(f"http://127.0.0.1:{http_port}/readyz")
        wait_for(lambda: len(children_of(proc.proc.pid)) == 2, 15, "the workers")
        first, second = children_of(proc.proc.pid)
        os.kill(first, signal.SIGKILL)

        def replaced() -> bool:
            now = children_of(proc.proc.pid)
            return len(now) == 2 and first not in now

        wait_for(replaced, 15, "a replacement worker")
        assert second in children_of(proc.proc.pid)
        assert "starting a replacement" in proc.log()
        proc.wait_http_ok(f"http://127.0.0.1:{http_port}/readyz")
        proc.signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        proc.stop()
