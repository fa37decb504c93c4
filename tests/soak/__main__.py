"""`python -m tests.soak` (what `make soak` runs; never part of `make test`): faults and
overload through a real Envoy on 127.0.0.1, every phase bounded in time.

Phases: capacity (a short wrk run), PostgreSQL unreachable, webhook slow, JWKS down, an authz
replica killed mid-load, SIGTERM drain, 2x capacity overload (OVERLOAD_SECONDS, default 60)
and a memory soak (SOAK_MINUTES, default 10). The upstream is Envoy's own direct_response, so
authz is what is measured: "ok" bodies are allows we expect, "LEAK" bodies are allows the
rules must refuse. Prints a table; exits 1 when any check failed.

Every answer lands in exactly one column: allowed ("ok"), denied-by-rule (a 4xx),
designed-503 (authz's own 503 "a service needed for authorization is unavailable", counted
as designed only in the phases where a dependency is down on purpose: PostgreSQL unreachable,
webhook slow, JWKS down), wrong-allow ("LEAK") and lost: no response (a socket error or a
timeout), any 5xx outside the designed case (Envoy's own 503 when authz fails or is too slow,
authz's 503 where nothing is down), or any other answer. sent = the sum of the five.

Env: SOAK_MINUTES, OVERLOAD_SECONDS, FAULT_SECONDS (default 10), SOAK_KEEP=1 keeps the logs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.helpers import free_port, port_open, wait_for
from tests.integration.harness import (
    SECRET,
    Process,
    authz_env,
    make_envoy_config,
    start_echo,
    start_envoy,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LUA = HERE / "soak.lua"
FUZZ_SUMMARY = ROOT / "tests" / "fuzz" / "last-summary.json"
EXT_AUTHZ = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
EXT_PROC = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"
JWKS_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


# --- helpers: local servers ----------------------------------------------------------------


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # authz hangs up on the slow webhook at its deadline: expected, not news


class LocalServer:
    """A threaded HTTP server on a free 127.0.0.1 port: the JWKS or the slow webhook."""

    def __init__(self, body: bytes, sleep: float = 0.0, port: int = 0):
        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                time.sleep(sleep)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def jwks_body() -> bytes:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(JWKS_KEY.public_key()))
    return json.dumps({"keys": [{**jwk, "kid": "j1", "alg": "RS256", "use": "sig"}]}).encode()


def tokens() -> dict[str, str]:
    exp = int(time.time()) + 3 * 3600
    pem = JWKS_KEY.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    user = {"id": "u1", "role": "user", "exp": exp}
    return {
        "user": jwt.encode(user, SECRET, "HS256", headers={"kid": "main"}),
        "garbage": "eyJhbGciOiJub25lIn0.eyJpZCI6ImFkbWluIn0.",
        "jwks": jwt.encode(user, pem, "RS256", headers={"kid": "j1"}),
        "unknownkid": jwt.encode(user, pem, "RS256", headers={"kid": "rotated-away"}),
    }


def config_text(jwks_port: int, hook_port: int, pg_port: int) -> str:
    return f"""
project: soak
auth:
  secrets:
    - {{kid: main, alg: HS256, secret: "${{AUTHZ_SECRET}}", primary: true}}
    - {{jwksUrl: "http://127.0.0.1:{jwks_port}/jwks", alg: RS256}}
databases:
  pg: {{type: postgres, dsn: "postgresql://postgres@127.0.0.1:{pg_port}/test", timeout: 150ms}}
services:
  soak:
    endpoints:
      ok: {{rule: {{rule: authenticated}}}}
      admin: {{rule: {{rule: match, type: string, eval: "==", f1: args.auth.role, f2: admin}}}}
      pg: {{rule: {{rule: query, db: pg, col: users, find: {{id: args.auth.id}}}}}}
      hook:
        rule: {{rule: webhook, url: "http://127.0.0.1:{hook_port}/check", timeout: 100ms}}
"""


def route(prefix: str, endpoint: str, body: str) -> dict[str, Any]:
    return {
        "name": f"soak-{endpoint}-{prefix}",
        "match": {"path": prefix},
        "direct_response": {"status": 200, "body": {"inline_string": body}},
        "typed_per_filter_config": {
            "envoy.filters.http.ext_authz": {
                "@type": EXT_AUTHZ,
                "check_settings": {"context_extensions": {"service": "soak", "endpoint": endpoint}},
            },
            "envoy.filters.http.ext_proc": {"@type": EXT_PROC, "disabled": True},
        },
    }


ROUTES = [route("/soak/ok", "ok", "ok"), route("/soak/badtoken", "ok", "LEAK"),
          route("/soak/admin", "admin", "LEAK"), route("/soak/pg", "pg", "LEAK"),
          route("/soak/hook", "hook", "LEAK")]  # fmt: skip


# --- the stack -----------------------------------------------------------------------------


@dataclass
class Replica:
    name: str
    grpc_port: int
    http_port: int
    process: Process | None = None


@dataclass
class Soak:
    work: Path
    config: Path
    replicas: list[Replica] = field(default_factory=list)
    envoy: Any = None
    echo: Any = None
    servers: list[LocalServer] = field(default_factory=list)

    def start_replica(self, r: Replica) -> None:
        cmd = [sys.executable, "-m", "authz", "serve", "--config", str(self.config),
               "--listen", f"127.0.0.1:{r.grpc_port}", "--http-listen", f"127.0.0.1:{r.http_port}",
               "--drain", "2s", "--log-level", "warning"]  # fmt: skip
        r.process = Process(r.name, cmd, self.work, authz_env())
        # not /readyz: the unreachable PostgreSQL keeps it 503 (by design), yet it serves
        r.process.wait_http_ok(f"http://127.0.0.1:{r.http_port}/healthz")
        wait_for(lambda: port_open(r.grpc_port), 20, f"{r.name} gRPC")

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.process.stop()
        for r in self.replicas:
            if r.process is not None:
                r.process.stop()
        for s in self.servers:
            s.stop()
        if self.echo is not None:
            self.echo.stop()

    def healthy(self) -> int:
        return self.envoy.healthy_hosts("authz")

    def rss_mb(self) -> float:
        total = 0.0
        for r in self.replicas:
            assert r.process is not None
            status = Path(f"/proc/{r.process.proc.pid}/status").read_text()
            kb = next(line for line in status.splitlines() if line.startswith("VmRSS"))
            total += int(kb.split()[1]) / 1024
        return total


def start(work: Path) -> tuple[Soak, LocalServer]:
    jwks = LocalServer(jwks_body())
    hook = LocalServer(b'{"ok": true}', sleep=1.0)
    pg_port = free_port()  # nothing listens there: PostgreSQL unreachable
    config = work / "soak.yaml"
    config.write_text(config_text(jwks.port, hook.port, pg_port), encoding="utf-8")
    soak = Soak(work, config, servers=[jwks, hook])
    try:
        soak.echo = start_echo()
        for i in range(2):
            r = Replica(f"authz-{i}", free_port(), free_port())
            soak.replicas.append(r)
            soak.start_replica(r)
        envoy_config = make_envoy_config(
            authz_ports=[r.grpc_port for r in soak.replicas], upstream_port=soak.echo.port,
            listen_port=free_port(), admin_port=free_port(), extra_routes=ROUTES,
        )  # fmt: skip
        soak.envoy = start_envoy(envoy_config, work)
        wait_for(lambda: soak.healthy() == 2, 20, "both replicas healthy in Envoy")
    except BaseException:
        soak.stop()
        raise
    return soak, jwks


# --- load ----------------------------------------------------------------------------------


def wrk(soak: Soak, mix: str, seconds: float, conns: int, delay_ms: float = 0) -> dict[str, Any]:
    """One wrk run (bounded by -d and a hard timeout); the Lua summary as a dict."""
    args = ["wrk", "-t2", f"-c{conns}", f"-d{max(1, int(seconds))}s", "--timeout", "5s",
            "-s", str(LUA), soak.envoy.url("/"), "--", mix, str(delay_ms)]  # fmt: skip
    args += [f"{k}={v}" for k, v in tokens().items()]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30)
    line = next((x for x in out.stdout.splitlines() if x.startswith("SOAK ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary:\n{out.stdout}\n{out.stderr}")
    result = json.loads(line[5:])
    result["rps"] = result["requests"] / max(result["seconds"], 1e-9)
    return result


def wrk_async(
    soak: Soak, mix: str, seconds: float, conns: int, delay_ms: float = 0
) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.update(wrk(soak, mix, seconds, conns, delay_ms)))
    thread.start()
    return thread, box


# --- phases --------------------------------------------------------------------------------


@dataclass
class Tally:
    """One phase's answers, each in exactly one column (see the module docstring)."""

    sent: int = 0
    allowed: int = 0
    denied: int = 0
    designed_503: int = 0
    lost: int = 0
    wrong_allow: int = 0

    COLUMNS = ("sent", "allowed", "denied-by-rule", "designed-503", "lost", "wrong-allow")

    @classmethod
    def of(cls, result: dict[str, Any], designed_503: bool) -> Tally:
        dep503 = result["dep503"]
        t = cls(
            sent=result["requests"] + result["socket_errors"],
            allowed=result["good"],
            denied=result["deny"],
            designed_503=dep503 if designed_503 else 0,
            lost=result["socket_errors"] + result["s503"] + result["other"]
            + (0 if designed_503 else dep503),
            wrong_allow=result["leak"],
        )  # fmt: skip
        assert t.sent == t.allowed + t.denied + t.designed_503 + t.lost + t.wrong_allow, result
        return t

    def values(self) -> tuple[int, ...]:
        return (self.sent, self.allowed, self.denied, self.designed_503, self.lost,
                self.wrong_allow)  # fmt: skip

    def __iadd__(self, other: Tally) -> Tally:
        for name in ("sent", "allowed", "denied", "designed_503", "lost", "wrong_allow"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self


@dataclass
class Report:
    rows: list[tuple[str, str, bool]] = field(default_factory=list)
    tallies: list[tuple[str, Tally]] = field(default_factory=list)
    attacks: list[int] = field(default_factory=lambda: [0, 0])  # tried, denied
    faults: list[int] = field(default_factory=lambda: [0, 0])  # injected, survived

    def add(
        self,
        phase: str,
        result: dict[str, Any],
        ok: bool,
        note: str = "",
        tally: Tally | None = None,
    ) -> Tally:
        tally = tally or Tally.of(result, designed_503=False)
        self.tallies.append((phase, tally))
        detail = (f"{tally.sent} sent, {result['rps']:.0f}/s, allowed {tally.allowed}, "
                  f"denied {tally.denied}, designed-503 {tally.designed_503}, "
                  f"lost {tally.lost}, wrong-allow {tally.wrong_allow}, "
                  f"p99 {result['p99_ms']:.0f} ms{note}")  # fmt: skip
        self.rows.append((phase, detail, ok))
        print(f"[{'PASS' if ok else 'FAIL'}] {phase}: {detail}", flush=True)
        return tally

    def attack_counts(self, result: dict[str, Any], expected_denials: float) -> None:
        tried = round(result["requests"] * expected_denials)
        self.attacks[0] += tried
        self.attacks[1] += tried - result["leak"]


DESIGNED_503 = {"pg", "hook", "jwks"}  # mixes whose phase takes a dependency down on purpose


def phase_fault(report: Report, soak: Soak, name: str, mix: str, seconds: float) -> None:
    report.faults[0] += 1
    r = wrk(soak, mix, seconds, 8)
    tally = Tally.of(r, designed_503=mix in DESIGNED_503)
    ok = tally.wrong_allow == 0 and tally.lost == 0 and r["requests"] > 0 and r["p99_ms"] < 500
    if mix in ("pg", "hook"):  # every request answered by authz's own 503, in time
        ok = ok and tally.designed_503 == tally.sent
    else:  # jwks: the last good keys still verify (allows), an unknown kid is a 401
        ok = ok and tally.allowed > 0 and tally.denied > 0 and tally.designed_503 == 0
    report.faults[1] += ok
    tried = r["requests"] if mix in ("pg", "hook") else r["requests"] // 2
    report.attacks[0] += tried
    report.attacks[1] += tried - r["leak"]
    report.add(name, r, ok, tally=tally)


def phase_kill(report: Report, soak: Soak, seconds: float, sig: int, name: str) -> None:
    report.faults[0] += 1
    victim = soak.replicas[1 if sig == signal.SIGKILL else 0]
    thread, box = wrk_async(soak, "load", seconds, 16)
    time.sleep(seconds / 3)
    assert victim.process is not None
    victim.process.signal(sig)
    thread.join(seconds + 60)
    exited = victim.process.wait(25) is not None
    r = box
    tally = Tally.of(r, designed_503=False)
    # SIGKILL: Checks in flight on the victim fail (Envoy's 503: fail closed) until the health
    # check drops it; SIGTERM: none may fail.
    # (SIGKILL: up to one second of traffic, the health check's interval plus its timeout)
    budget = 0 if sig == signal.SIGTERM else int(r["rps"])
    ok = tally.wrong_allow == 0 and tally.lost <= budget and tally.allowed > 0 and exited
    report.faults[1] += ok
    report.attack_counts(r, 0.5)
    report.add(name, r, ok, f", lost budget {budget}", tally=tally)
    soak.start_replica(victim)  # back to two replicas for the next phase
    wait_for(lambda: soak.healthy() == 2, 20, "the restarted replica healthy")


def phase_capacity(report: Report, soak: Soak) -> float:
    r = wrk(soak, "load", 8, 16)
    tally = Tally.of(r, designed_503=False)
    ok = tally.wrong_allow == 0 and tally.lost == 0
    report.add("capacity (16 conns, 8 s)", r, ok, tally=tally)
    report.attack_counts(r, 0.5)
    return r["rps"]


def phase_overload(report: Report, soak: Soak, capacity: float, seconds: float) -> None:
    conns = 64
    delay = 1000 * conns / (2 * capacity)  # each connection paced: 2x capacity in total
    r = wrk(soak, "load", seconds, conns, delay)
    answered = r["good"] + r["deny"]  # decided by the rules (not shed by Envoy's timeout)
    goodput = answered / max(r["seconds"], 1e-9)
    alive = all(x.process is not None and x.process.alive() for x in soak.replicas)
    ok = r["leak"] == 0 and alive and goodput >= 0.9 * capacity
    report.faults[0] += 1
    report.faults[1] += ok
    report.attack_counts(r, 0.5)
    note = f", goodput {goodput:.0f}/s = {100 * goodput / capacity:.0f}% of capacity"
    report.add(f"overload 2x ({seconds:.0f} s, {conns} conns)", r, ok, note)


def phase_memory(report: Report, soak: Soak, minutes: float, capacity: float) -> None:
    seconds = max(10.0, minutes * 60)
    conns = 16
    delay = 1000 * conns / (0.5 * capacity)  # half of capacity
    thread, box = wrk_async(soak, "load", seconds, conns, delay)
    samples: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append(soak.rss_mb())
        time.sleep(min(10.0, seconds / 10))
    thread.join(seconds + 60)
    warm = samples[len(samples) // 5 :] or samples  # the first fifth warms caches up
    growth = (warm[-1] - warm[0]) / warm[0] if warm else 0.0
    ok = box["leak"] == 0 and growth < 0.05 + 2.0 / max(warm[0], 1)  # 5 % + 2 MiB of noise
    report.attack_counts(box, 0.5)
    note = f", RSS {warm[0]:.1f} -> {warm[-1]:.1f} MiB ({100 * growth:+.1f}%)"
    report.add(f"memory soak ({seconds / 60:.1f} min)", box, ok, note)


def fuzz_row() -> str:
    try:
        summary = json.loads(FUZZ_SUMMARY.read_text())
    except (OSError, ValueError):
        return "no `make fuzz` summary yet"
    runs = sum(t["executions"] for t in summary["targets"])
    crashes = sum(1 for t in summary["targets"] if t["crashed"])
    return f"{runs} executions, {crashes} crashing targets ({summary['when']})"


def print_table(report: Report) -> None:
    total = Tally()
    for _, t in report.tallies:
        total += t
    names = [phase for phase, _ in report.tallies] + ["total"]
    width = max(len(n) for n in names)
    cols = Tally.COLUMNS
    header = f"{'phase':<{width}}  " + "  ".join(f"{c:>14}" for c in cols)
    print("\n" + "-" * len(header))
    print(header)
    for phase, t in [*report.tallies, ("total", total)]:
        print(f"{phase:<{width}}  " + "  ".join(f"{v:>14}" for v in t.values()))
    print("-" * len(header))
    rows = [
        ("attacks tried / denied", f"{report.attacks[0]} / {report.attacks[1]}"),
        ("faults injected / survived", f"{report.faults[0]} / {report.faults[1]}"),
        ("fuzz executions / crashes", fuzz_row()),
    ]
    key = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{key}}  {v}")
    print("-" * len(header))
    for phase, _, ok in report.rows:
        print(f"{'PASS' if ok else 'FAIL'}  {phase}")


def main() -> int:
    if shutil.which("wrk") is None:
        print("make soak needs wrk (apt-get install -y wrk)", file=sys.stderr)
        return 2
    minutes = float(os.environ.get("SOAK_MINUTES", "10"))
    overload = float(os.environ.get("OVERLOAD_SECONDS", "60"))
    fault = float(os.environ.get("FAULT_SECONDS", "10"))
    work = Path(tempfile.mkdtemp(prefix="authz-soak-"))
    report = Report()
    soak, jwks = start(work)
    try:
        capacity = phase_capacity(report, soak)
        phase_fault(report, soak, "PostgreSQL unreachable", "pg", fault)
        phase_fault(report, soak, "webhook slow (1 s, timeout 100 ms)", "hook", fault)
        jwks.stop()
        soak.servers.remove(jwks)
        phase_fault(report, soak, "JWKS down (known kid, unknown kid)", "jwks", fault)
        phase_kill(report, soak, fault, signal.SIGKILL, "replica SIGKILLed mid-load")
        phase_kill(report, soak, fault, signal.SIGTERM, "replica SIGTERM drain mid-load")
        phase_overload(report, soak, capacity, overload)
        phase_memory(report, soak, minutes, capacity)
        tracebacks = [r.name for r in soak.replicas if "Traceback" in r.process.log(100_000)]  # type: ignore[union-attr]
        report.rows.append(("no traceback in authz logs", str(tracebacks), not tracebacks))
    finally:
        soak.stop()
        if not os.environ.get("SOAK_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs kept in {work}")
    print_table(report)
    return 0 if all(ok for _, _, ok in report.rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
