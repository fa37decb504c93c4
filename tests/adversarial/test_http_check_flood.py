"""A flood on the HTTP Check port does not shut Envoy out: clients that pipeline thousands of
tiny requests per send and never read their answers (hold.py of the finding) get at most
MAX_PIPELINED parsed at a time, a turn like every other connection, and nothing more done
once their answers pile up; meanwhile a request through Envoy gets its normal answer, and
authz's memory stays bounded (SECURITY.md, "The HTTP Check port's limits")."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import free_port
from tests.integration.harness import (
    AuthzServer,
    Envoy,
    bearer,
    run_authz_cli,
    start_authz,
    start_echo,
    start_envoy,
    token,
)

pytestmark = pytest.mark.integration

CONFIG = """
project: flood
auth: {secrets: [{kid: main, alg: HS256, secret: "${AUTHZ_SECRET}", primary: true}]}
services:
  api:
    url: http://127.0.0.1:%(port)d
    endpoints:
      open: {method: GET, path: /v1/open, rule: {rule: authenticated}}
      closed: {method: GET, path: /v1/closed, rule: {rule: deny}}
"""
FLOOD = b"GET /nothing HTTP/1.1\r\nhost: x\r\n\r\n" * 200
CONNECTIONS = 32
FLOOD_SECONDS = 4.0


@pytest.fixture(scope="module")
def stack(log_dir: Path) -> Iterator[tuple[Envoy, AuthzServer, int]]:
    echo = start_echo()
    started: list[AuthzServer | Envoy] = []
    try:
        config = log_dir / "flood.yaml"
        config.write_text(CONFIG % {"port": echo.port})
        check_http = free_port()
        authz = start_authz(
            config, log_dir, extra_args=["--check-http-listen", f"127.0.0.1:{check_http}"]
        )
        started.append(authz)
        port, admin = free_port(), free_port()
        done = run_authz_cli(
            "envoy-config", "--config", str(config), "--transport", "http",
            "--authz-address", f"127.0.0.1:{authz.grpc_port}",
            "--authz-http-address", f"127.0.0.1:{check_http}", "--timeout", "2s",
            "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        started.append(start_envoy(yaml.safe_load(done.stdout), log_dir))
        yield started[1], authz, check_http  # type: ignore[misc]
    finally:
        for item in reversed(started):
            item.process.stop()
        echo.stop()


def _rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) // 1024


def _flood(port: int, stop: threading.Event, sent: list[int]) -> None:
    """hold.py, bounded: send until every socket's send blocks, then hold, never reading."""
    socks = []
    try:
        for _ in range(CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            socks.append(sock)
        while not stop.is_set():
            for sock in socks:
                with contextlib.suppress(BlockingIOError, ConnectionError):
                    sent.append(sock.send(FLOOD))
            time.sleep(0.001)
    finally:
        for sock in socks:
            sock.close()


def test_a_pipelining_flood_does_not_shut_envoy_out(
    stack: tuple[Envoy, AuthzServer, int],
) -> None:
    envoy, authz, check_http = stack
    auth = bearer(token({"id": "u1"}))
    assert httpx.get(envoy.url("/v1/open"), headers=auth, timeout=10).status_code == 200
    before = _rss_mib(authz.process.proc.pid)
    stop, sent = threading.Event(), list[int]()
    flooder = threading.Thread(target=_flood, args=(check_http, stop, sent), daemon=True)
    flooder.start()
    statuses = []
    try:
        deadline = time.monotonic() + FLOOD_SECONDS
        while time.monotonic() < deadline:
            statuses.append(httpx.get(envoy.url("/v1/open"), headers=auth, timeout=10).status_code)
            time.sleep(0.1)
        denied = httpx.get(envoy.url("/v1/closed"), headers=auth, timeout=10).status_code
        grown = _rss_mib(authz.process.proc.pid) - before
    finally:
        stop.set()
        flooder.join(10)
    assert sum(sent) > 10 * 2**20  # the flood went in: millions of requests' worth
    assert statuses and set(statuses) == {200}, statuses
    assert denied == 403
    assert grown < 64, f"authz grew by {grown} MiB under the flood"
