"""Hot reload of a running `authz serve`: file changes and SIGHUP, invalid files kept out."""

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from tests.helpers import free_port, port_open, wait_for

BIN = Path(sys.executable).parent
TEMPLATE = """
project: demo
auth: {{serviceToken: {{enabled: false}}}}
services:
  s:
    endpoints:
      e: {{method: GET, path: /e, rule: {{rule: {kind}}}}}
"""


def allowed(port: int) -> bool:
    msg = CheckRequest()
    msg.attributes.request.http.method = "GET"
    msg.attributes.request.http.path = "/e"
    msg.attributes.request.http.headers["authorization"] = "Bearer x"
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        raw = ch.unary_unary("/envoy.service.auth.v3.Authorization/Check")(
            msg.SerializeToString(), timeout=5
        )
    return CheckResponse.FromString(raw).status.code == 0


def readyz(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


@pytest.fixture
def served(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(TEMPLATE.format(kind="allow"))
    g, h = free_port(), free_port()
    proc = subprocess.Popen(
        [BIN / "authz", "serve", "--config", path, "--listen", f"127.0.0.1:{g}",
         "--http-listen", f"127.0.0.1:{h}", "--watch", "100ms", "--drain", "0s"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(lambda: port_open(g) and port_open(h), 15, "server")
    yield path, g, h, proc
    proc.terminate()
    proc.wait(timeout=20)


def test_file_change_is_picked_up_and_an_invalid_file_keeps_the_last_good(served):
    path, g, h, _ = served
    assert allowed(g)
    v1 = readyz(h)["config"]
    path.write_text(TEMPLATE.format(kind="deny"))
    wait_for(lambda: not allowed(g), 10, "the deny version")
    assert readyz(h)["config"] != v1
    path.write_text(TEMPLATE.format(kind="denny"))  # invalid: unknown rule
    wait_for(lambda: "lastReload" in readyz(h), 10, "the rejection to show")
    r = readyz(h)
    assert r["ready"] is True and "unknown rule 'denny'" in r["lastReload"]["errors"][0]
    assert not allowed(g)  # still the last good (deny) version


def test_sighup_reloads(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(TEMPLATE.format(kind="allow"))
    g, h = free_port(), free_port()
    proc = subprocess.Popen(
        [BIN / "authz", "serve", "--config", path, "--listen", f"127.0.0.1:{g}",
         "--http-listen", f"127.0.0.1:{h}", "--watch", "0", "--drain", "0s"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: port_open(g) and port_open(h), 15, "server")
        path.write_text(TEMPLATE.format(kind="deny"))
        assert allowed(g)  # not watching: nothing changes by itself
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: not allowed(g), 10, "SIGHUP reload")
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0


def test_invalid_config_at_start_never_serves(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(TEMPLATE.format(kind="nope"))
    out = subprocess.run(
        [BIN / "authz", "serve", "--config", path, "--listen", f"127.0.0.1:{free_port()}",
         "--http-listen", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 2 and "unknown rule 'nope'" in out.stderr


def test_a_file_caught_half_written_is_not_reported_as_rejected(tmp_path, monkeypatch):
    """Written in place (truncated, then written): the poller waits for the content to settle
    instead of rejecting the empty file it may read in between."""
    import asyncio
    import time
    from types import SimpleNamespace

    from authz import reload as reload_module
    from authz.reload import Reloader

    monkeypatch.setattr(reload_module, "SETTLE", 0.5)  # far above the test's 0.05 s gap
    path = tmp_path / "c.yaml"
    path.write_text(TEMPLATE.format(kind="allow"))
    swapped, rejected = [], []
    options = SimpleNamespace(config=str(path), dry_run=False, watch=0.01)

    async def scenario() -> Reloader:
        reloader = Reloader(options, lambda new: swapped.append(new.version))
        reloader._rejected = lambda why, errors: rejected.append(errors)  # type: ignore[method-assign]
        first = await reloader.load_first()
        reloader.start_watching()
        try:
            path.write_text("")  # the truncation an in-place write starts with
            await asyncio.sleep(0.05)
            path.write_text(TEMPLATE.format(kind="deny"))
            deadline = time.monotonic() + 10
            while not swapped and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            reloader.stop_watching()
            await first.runtime.close()
        return reloader

    reloader = asyncio.run(scenario())
    assert rejected == [] and len(swapped) == 1 and reloader.reloads == 1


def test_shutdown_closes_the_versions_still_retiring(tmp_path, monkeypatch):
    """An old version stays open RETIRE_AFTER for the Checks still using it; stopping the
    server before that closes it too (its pools and clients), not only the serving one."""
    import asyncio
    from types import SimpleNamespace

    from authz import reload as reload_module
    from authz.reload import Reloader

    monkeypatch.setattr(reload_module, "RETIRE_AFTER", 3600.0)
    path = tmp_path / "c.yaml"
    path.write_text(TEMPLATE.format(kind="allow"))
    options = SimpleNamespace(config=str(path), dry_run=False, watch=0)
    closed: list[str] = []

    serving: list = []

    def swap(new):  # as AuthzServer._swap: install the new version, hand back the old one
        serving.append(new)
        return serving[-2] if len(serving) > 1 else None

    async def scenario() -> None:
        reloader = Reloader(options, swap)
        first = await reloader.load_first()
        serving.append(first)
        close = first.runtime.close

        async def recording_close() -> None:
            closed.append(first.version)
            await close()

        first.runtime.close = recording_close
        path.write_text(TEMPLATE.format(kind="deny"))
        assert await reloader.reload("test")
        await asyncio.sleep(0.01)
        assert closed == []  # retiring: Checks may still run on it
        await reloader.close_retired()
        assert closed == [first.version]

    asyncio.run(scenario())
