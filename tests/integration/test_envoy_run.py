"""`make run` (scripts/run.py) end to end on free ports and a temporary run directory: it
starts everything, the curl, `authz check` and grpcurl lines it prints work as printed, the
README's debug API example works as written (`AUTHZ_DEBUG_API=1 make run`), and SIGINT stops
every process with exit 0 even when run.py started with SIGINT ignored (`make run &` in a
script). A busy port is a clear error. All of it for both transports: `make run` and
`AUTHZ_RUN_TRANSPORT=http make run` (ext_authz over HTTP, Envoy config from `authz
envoy-config --transport http`)."""

from __future__ import annotations

import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from scripts.run import ensure_secret
from tests.helpers import free_port, port_open
from tests.integration.harness import ROOT, authz_env

pytestmark = pytest.mark.integration

START_TIMEOUT = 60.0
LAST_LINE = "Ctrl-C stops everything."
PORT_NAMES = ("envoy", "grpc", "http", "admin", "upstream", "check-http")


@dataclass
class Running:
    proc: subprocess.Popen[str]
    ports: dict[str, int]
    lines: list[str]
    run_dir: Path
    transport: str


def _reader(stream, out: queue.Queue[str | None]) -> None:
    for line in stream:
        out.put(line.rstrip("\n"))
    out.put(None)


def _start(run_dir: Path, ports: dict[str, int], transport: str = "grpc") -> subprocess.Popen[str]:
    args = [f"--{name}-port={port}" for name, port in ports.items()]
    env = {**authz_env(), "AUTHZ_DEBUG_API": "1", "AUTHZ_RUN_TRANSPORT": transport}
    return subprocess.Popen(
        [sys.executable, "scripts/run.py", "--run-dir", str(run_dir), *args],
        cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # as `make run &` from a script: a shell without job control ignores SIGINT for it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip


@pytest.fixture(scope="module", params=["grpc", "http"])
def running(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[Running]:
    transport = request.param
    run_dir = log_dir / transport
    ports = {name: free_port() for name in PORT_NAMES}
    proc = _start(run_dir, ports, transport)
    lines: list[str] = []
    q: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, q), daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while LAST_LINE not in lines:
            line = q.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                raise AssertionError("run.py exited while starting:\n" + "\n".join(lines))
            lines.append(line)
    except queue.Empty:
        proc.kill()
        raise AssertionError("run.py not ready in time:\n" + "\n".join(lines)) from None
    except BaseException:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        raise
    yield Running(proc, ports, lines, run_dir, transport)
    if proc.poll() is None:  # the SIGTERM test normally stopped it
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _exports(running: Running) -> str:
    return "\n".join(line.strip() for line in running.lines if line.strip().startswith("export "))


def test_prints_tokens_for_admin_and_user(running: Running) -> None:
    exports = _exports(running)
    assert "export ADMIN_TOKEN=ey" in exports
    assert "export USER_TOKEN=ey" in exports
    secret = (running.run_dir / "secret").read_text().strip()
    assert len(secret.encode()) >= 32
    assert (running.run_dir / "secret").stat().st_mode & 0o077 == 0


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl to run the printed lines")
def test_every_printed_curl_line_gives_its_status(running: Running) -> None:
    curls = [line.strip() for line in running.lines if line.strip().startswith("curl ")]
    assert len(curls) >= 10
    for line in curls:
        command, _, comment = line.partition(" # ")
        expected = comment.split()[0]
        command = command.replace("curl -i", "curl -s -o /dev/null -w '%{http_code}'", 1)
        done = subprocess.run(
            ["bash", "-c", f"{_exports(running)}\n{command}"], cwd=ROOT,
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.stdout == expected, f"{line}\n-> {done.stdout} {done.stderr}"


def test_envoy_asks_authz_over_the_chosen_transport(running: Running) -> None:
    envoy_yaml = (running.run_dir / "envoy.yaml").read_text()
    check_http = f"port_value: {running.ports['check-http']}"
    assert ("http_service:" in envoy_yaml) == (running.transport == "http")
    assert (check_http in envoy_yaml) == (running.transport == "http")
    ready = next(line for line in running.lines if line.startswith("Ready: "))
    assert ("ext_authz over HTTP" in ready) == (running.transport == "http"), ready


def test_tokens_work_through_envoy(running: Running) -> None:
    tokens = dict(re.findall(r"export (\w+)=(\S+)", _exports(running)))
    base = f"http://127.0.0.1:{running.ports['envoy']}"
    headers = {"authorization": f"Bearer {tokens['ADMIN_TOKEN']}"}
    assert httpx.get(f"{base}/v1/admin/stats", headers=headers, timeout=5).status_code == 200
    headers = {"authorization": f"Bearer {tokens['USER_TOKEN']}"}
    assert httpx.get(f"{base}/v1/admin/stats", headers=headers, timeout=5).status_code == 403
    assert httpx.get(f"{base}/v1/orders", timeout=5).status_code == 401


def test_printed_check_and_grpcurl_lines_work(running: Running) -> None:
    check = next(line.strip() for line in running.lines if " check --config " in line)
    done = subprocess.run(
        ["bash", "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert '"allowed": true' in done.stdout
    grpcurl = next(line.strip() for line in running.lines if "grpcurl -plaintext" in line)
    done = subprocess.run(
        ["bash", "-c", grpcurl], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert "envoy.service.auth.v3.Authorization" in done.stdout


def _readme_block(after: str, lang: str) -> str:
    """The first ```lang block of the README after the line containing `after`."""
    text = (ROOT / "README.md").read_text()
    rest = text[text.index(after) :]
    start = rest.index(f"```{lang}\n") + len(lang) + 4
    return rest[start : rest.index("```", start)]


def test_the_readme_debug_api_example_works_as_written(running: Running) -> None:
    commands = _readme_block("AUTHZ_DEBUG_API=1 make run", "sh")
    commands = commands.replace("localhost:9001", f"127.0.0.1:{running.ports['grpc']}")
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        ["bash", "-c", f"export PATH={bin_dir}:$PATH\n{_exports(running)}\n{commands}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "authz.v1.Debug" in done.stdout  # the list line
    shown = _readme_block("AUTHZ_DEBUG_API=1 make run", "json").replace("    ...\n", "")
    got = done.stdout[done.stdout.index("{") :]
    for line in shown.splitlines():
        assert line.rstrip(",") in got, f"README shows {line!r}, the server answered:\n{got}"


def test_sigint_stops_everything(running: Running) -> None:
    running.proc.send_signal(signal.SIGINT)
    assert running.proc.wait(40) == 0
    deadline = time.monotonic() + 10
    while any(port_open(p) for p in running.ports.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    still = [n for n, p in running.ports.items() if port_open(p)]
    assert not still, f"still listening after make run stopped: {still}"


def test_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    ports = {name: free_port() for name in PORT_NAMES}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports["grpc"]))
        busy.listen()
        proc = _start(tmp_path, ports)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"port {ports['grpc']} (grpc)" in out and "busy" in out, out
    assert not port_open(ports["envoy"])


def test_secret_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = ensure_secret(tmp_path)
    assert len(first.encode()) >= 32
    assert ensure_secret(tmp_path) == first
    (tmp_path / "secret").write_text("too-short\n")
    assert ensure_secret(tmp_path) != "too-short"
