"""`authz serve` as a real process: Check over gRPC, health, reflection, HTTP probes, SIGTERM."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import jwt
import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from tests.helpers import free_port, port_open, wait_for

SECRET = "0123456789abcdef0123456789abcdef-srv"
CONFIG = f"""
project: demo
auth:
  secrets: [{{alg: HS256, secret: "{SECRET}", primary: true}}]
services:
  s:
    endpoints:
      open: {{method: GET, path: /open, rule: {{rule: allow}}}}
      user: {{method: GET, path: /user, rule: {{rule: authenticated}}}}
"""
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = tmp_path_factory.mktemp("srv") / "config.yaml"
    path.write_text(CONFIG)
    decisions = path.parent / "decisions.jsonl"
    grpc_port, http_port = free_port(), free_port()
    proc = subprocess.Popen(
        [BIN / "authz", "serve", "--config", str(path), "--listen", f"127.0.0.1:{grpc_port}",
         "--http-listen", f"127.0.0.1:{http_port}", "--drain", "1s",
         "--decision-log", str(decisions)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: port_open(http_port) and port_open(grpc_port), 15, "authz serve")
        yield proc, grpc_port, http_port, decisions
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def raw_check(port: int, data: bytes) -> CheckResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary("/envoy.service.auth.v3.Authorization/Check")
        return CheckResponse.FromString(call(data, timeout=5))


def request(method="GET", path="/open", headers=None) -> bytes:
    msg = CheckRequest()
    http = msg.attributes.request.http
    http.method, http.path = method, path
    http.headers.update(headers or {})
    return msg.SerializeToString()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_check_allows_and_denies(server):
    _, port, _, _ = server
    assert raw_check(port, request()).status.code == 0
    tok = jwt.encode({"id": "u"}, SECRET, algorithm="HS256")
    ok = raw_check(port, request(path="/user", headers={"authorization": f"Bearer {tok}"}))
    assert ok.status.code == 0 and ok.ok_response.headers[0].header.key == "x-sc-token"
    denied = raw_check(port, request(path="/user"))
    assert denied.status.code != 0 and denied.denied_response.status.code == 401


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff\xff\xff",  # not protobuf
        request(method=""),  # empty method
        request(path="no-slash"),
        request(path="http://host/open"),  # absolute form
        b"",  # no attributes at all
        # invalid UTF-8 in a string field (header value)
        b"\x0a\x16\x2a\x14\x12\x12\x22\x10\x0a\x01\x78\x12\x0b\xff\xfe" + b"a" * 9,
    ],
)
def test_malformed_check_requests_are_denied_not_errors(server, data):
    _, port, _, _ = server
    resp = raw_check(port, data)  # a gRPC error would raise here
    assert resp.status.code != 0 and resp.denied_response.status.code in (400, 403)


def test_health_reflection_and_probes(server):
    _, port, http_port, _ = server
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        assert stub.Check(health_pb2.HealthCheckRequest(service="")).status == 1
    out = subprocess.run([BIN / "grpcurl", "-plaintext", f"127.0.0.1:{port}", "list"],
                         capture_output=True, text=True, timeout=20)  # fmt: skip
    assert "envoy.service.auth.v3.Authorization" in out.stdout
    assert "grpc.health.v1.Health" in out.stdout
    assert get(f"http://127.0.0.1:{http_port}/healthz")[0] == 200
    status, body = get(f"http://127.0.0.1:{http_port}/readyz")
    assert status == 200 and b'"ready": true' in body
    assert get(f"http://127.0.0.1:{http_port}/nope")[0] == 404


def test_metrics_count_known_traffic(server):
    _, port, http_port, _ = server
    before = metric(http_port, 'authz_checks_total{endpoint="user",outcome="deny",service="s",'
                    'status="401"}')  # fmt: skip
    for _ in range(3):
        raw_check(port, request(path="/user"))
    after = metric(http_port, 'authz_checks_total{endpoint="user",outcome="deny",service="s",'
                   'status="401"}')  # fmt: skip
    assert after - before == 3
    bad = metric(http_port, 'authz_token_verification_failures_total{reason="malformed"}')
    raw_check(port, request(path="/user", headers={"authorization": "Bearer x.y"}))
    assert metric(http_port, "authz_token_verification_failures_total", prefix=True) >= bad + 1
    assert metric(http_port, "authz_config_last_reload_success") == 1


def metric(http_port: int, name: str, prefix: bool = False) -> float:
    """A sample's value from /metrics (the sum over labels when `prefix`)."""
    _, body = get(f"http://127.0.0.1:{http_port}/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == name or (prefix and key.startswith(name)):
            total += float(value)
    return total


TOKEN = jwt.encode({"id": "u"}, SECRET, algorithm="HS256")


def test_sigterm_drains_then_exits_zero(server):
    """Runs last in this module: readiness goes false, Checks keep being answered, exit 0."""
    proc, port, http_port, decisions = server
    results: list[int] = []
    stop = time.monotonic() + 0.8

    def load() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = ch.unary_unary("/envoy.service.auth.v3.Authorization/Check")
            while time.monotonic() < stop:
                results.append(CheckResponse.FromString(call(request(), timeout=5)).status.code)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGTERM)
    wait_for(lambda: get(f"http://127.0.0.1:{http_port}/readyz")[0] == 503, 2, "not ready")
    for t in threads:
        t.join()
    assert results and all(code == 0 for code in results)  # none lost, none failed
    assert proc.wait(timeout=20) == 0
    assert "authz stopped" in proc.stdout.read()
    lines = [json.loads(line) for line in decisions.read_text().splitlines()]
    assert len(lines) >= len(results)  # every decision was logged, flushed at exit
    assert {"requestId", "service", "endpoint", "allowed", "status", "latencyMs"} <= set(lines[0])
    assert TOKEN not in decisions.read_text() and SECRET not in decisions.read_text()


def explain_call(port: int, data: bytes) -> bytes:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        return ch.unary_unary("/authz.v1.Debug/Explain")(data, timeout=5)


@pytest.mark.parametrize("flag", ["", "true"])
def test_debug_api_only_when_asked_for(tmp_path, flag):
    from authz.debug import ExplainResponse

    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    grpc_port, http_port = free_port(), free_port()
    env = {**os.environ, "AUTHZ_DEBUG_API": flag}
    proc = subprocess.Popen(
        [BIN / "authz", "serve", "--config", str(path), "--listen", f"127.0.0.1:{grpc_port}",
         "--http-listen", f"127.0.0.1:{http_port}", "--drain", "0s"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: port_open(http_port) and port_open(grpc_port), 15, "authz serve")
        if not flag:
            with pytest.raises(grpc.RpcError) as err:
                explain_call(grpc_port, request())
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
            return
        out = ExplainResponse.FromString(explain_call(grpc_port, request(path="/user")))
        assert not out.decision.allowed and out.decision.status == 401
        assert out.decision.endpoint == "user" and "authenticated" in out.text
    finally:
        proc.terminate()
        proc.wait(10)


def test_sigint_stops_a_server_started_ignoring_it(tmp_path):
    """`make run &` in a script starts with SIGINT ignored: serve handles it explicitly, and
    exits right after saying "authz stopped" (nothing left running keeps the process)."""
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    grpc_port, http_port = free_port(), free_port()
    proc = subprocess.Popen(
        [BIN / "authz", "serve", "--config", str(path), "--listen", f"127.0.0.1:{grpc_port}",
         "--http-listen", f"127.0.0.1:{http_port}", "--drain", "0s"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    try:
        wait_for(lambda: port_open(http_port) and port_open(grpc_port), 15, "authz serve")
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:  # a connection still open
            call = ch.unary_unary("/envoy.service.auth.v3.Authorization/Check")
            assert CheckResponse.FromString(call(request(), timeout=5)).status.code == 0
            os.kill(proc.pid, signal.SIGINT)
            lines = iter(proc.stdout.readline, "")
            assert any("authz stopped" in line for line in lines)
            # Nothing may keep the process once it is stopped (it once lingered ~7 s).
            assert proc.wait(timeout=3) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
