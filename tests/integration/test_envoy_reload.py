"""Hot reload under load, through a real Envoy.

`authz serve --watch 0.1s --decision-log FILE` runs behind Envoy while several concurrent
clients send requests in a bounded loop and the config file is rewritten 20 times,
alternating two valid versions with invalid files (YAML syntax error, unknown rule, unknown
key, unset variable, empty file):

- version A allows /rl/p (the upstream gets `x-config: A`) and denies /rl/q 403
  "config A denies q"; version B is the mirror image ("config B denies p", `x-config: B`);
- every response is exactly what A or B decides (never a mix, never a 5xx, never a
  connection error, never anything an invalid file would say), and both were observed;
- every invalid file is rejected (authz_config_reloads_total{result="failure"} and /readyz
  `lastReload`), the last good version keeps serving;
- each decision log line names one config version, and its decision is that version's.

Files are replaced atomically (write a temporary file, rename), as a Kubernetes ConfigMap
update or an editor's save does, so each rewrite is exactly one reload attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import free_port
from tests.integration.harness import (
    AuthzServer,
    Envoy,
    Process,
    authz_env,
    bearer,
    context_route,
    make_envoy_config,
    start_echo,
    start_envoy,
    token,
)

pytestmark = pytest.mark.integration

CLIENTS = 6  # concurrent clients
REWRITES = 20  # config file rewrites: valid and invalid alternate
LOAD_LIMIT = 30.0  # hard bound on the whole loop (seconds)
RELOAD_WAIT = 5.0  # bound on one reload attempt showing up in /metrics
DWELL = 0.15  # seconds each rewrite stays in place once applied/rejected

AUTH = bearer(token({"id": "u1", "role": "user"}, ttl=600))

HEAD = """\
project: reload
auth:
  secrets:
    - {kid: main, alg: HS256, secret: "${AUTHZ_SECRET}", primary: true}
  serviceToken: {header: x-sc-token, ttl: 60s}
services:
  rl:
    endpoints:
"""
ALLOW = """\
      {name}:
        method: GET
        path: /rl/{name}
        rule:
          rule: and
          clauses:
            - {{rule: authenticated}}
            - {{rule: force, field: args.headers.x-config, value: {version}}}
"""
DENY = """\
      {name}:
        method: GET
        path: /rl/{name}
        rule: {{rule: deny, error: "config {version} denies {name}"}}
"""
VALID = {
    "A": HEAD + ALLOW.format(name="p", version="A") + DENY.format(name="q", version="A"),
    "B": HEAD + DENY.format(name="p", version="B") + ALLOW.format(name="q", version="B"),
}
INVALID = {
    "yaml syntax error": VALID["A"] + "      broken: [unclosed\n",
    "unknown rule": VALID["B"].replace("rule: deny,", "rule: denny,"),
    "unknown key": VALID["A"].replace("services:", "servicez:"),
    "unset variable": VALID["B"].replace("${AUTHZ_SECRET}", "${AUTHZ_RELOAD_TEST_UNSET}"),
    "empty file": "",
}


def version_of(text: str) -> str:
    """The version authz reports for a config text (authz/config/load.py)."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


VERSIONS = {version_of(text): name for name, text in VALID.items()}


def expected(version: str, path: str) -> tuple[int, str]:
    """(status, marker) version `version` ("A"/"B") gives a GET of `path`: the marker is the
    upstream's x-config header on an allow, the error text on a deny."""
    name = path.rsplit("/", 1)[-1]
    allows = "p" if version == "A" else "q"
    if name == allows:
        return 200, version
    return 403, f"config {version} denies {name}"


@dataclass
class Result:
    request_id: str
    path: str
    status: int | None  # None: no HTTP answer (connection error, timeout)
    marker: str | None  # x-config the upstream got (200), the error text (403), else None
    error: str = ""

    def version(self) -> str | None:
        """ "A" or "B" when the response is exactly what that version decides, else None."""
        for name in ("A", "B"):
            if (self.status, self.marker) == expected(name, self.path):
                return name
        return None


@dataclass
class Stand:
    config: Path
    authz: AuthzServer
    envoy: Envoy
    decision_log: Path

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.authz.http_port}/metrics", timeout=2).text

    def readyz(self) -> dict[str, Any]:
        resp = httpx.get(f"http://127.0.0.1:{self.authz.http_port}/readyz", timeout=2)
        return resp.json()


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def reload_counts(metrics: str) -> tuple[int, int]:
    """(success, failure) of authz_config_reloads_total."""
    found = dict.fromkeys(("success", "failure"), 0)
    for m in re.finditer(r'^authz_config_reloads_total\{result="(\w+)"\} ([0-9.e+]+)$',
                         metrics, re.M):  # fmt: skip
        found[m.group(1)] = int(float(m.group(2)))
    return found["success"], found["failure"]


@pytest.fixture(scope="module")
def stand(log_dir: Path) -> Iterator[Stand]:
    config = log_dir / "reload.yaml"
    config.write_text(VALID["A"], encoding="utf-8")
    decisions = log_dir / "decisions.jsonl"
    grpc_port, http_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "authz", "serve", "--config", str(config),
           "--listen", f"127.0.0.1:{grpc_port}", "--http-listen", f"127.0.0.1:{http_port}",
           "--watch", "0.1s", "--drain", "0s", "--decision-log", str(decisions),
           "--log-level", "info"]  # fmt: skip
    echo = start_echo()
    proc = Process("authz", cmd, log_dir, authz_env())
    envoy = None
    try:
        proc.wait_http_ok(f"http://127.0.0.1:{http_port}/readyz")
        routes = [context_route(f"/rl/{n}", "rl", n) for n in ("p", "q")]
        envoy_config = make_envoy_config(
            authz_ports=grpc_port, upstream_port=echo.port, listen_port=free_port(),
            admin_port=free_port(), extra_routes=routes,
        )  # fmt: skip
        envoy = start_envoy(envoy_config, log_dir)
        yield Stand(config, AuthzServer(proc, grpc_port, http_port), envoy, decisions)
    finally:
        if envoy is not None:
            envoy.process.stop()
        proc.stop()
        echo.stop()


# --- the loop ----------------------------------------------------------------------------


async def _client(
    client: httpx.AsyncClient, url: str, n: int, stop: asyncio.Event, out: list[Result]
) -> None:
    i = n
    while not stop.is_set():
        path = ("/rl/p", "/rl/q")[i % 2]
        i += 1
        rid = str(uuid.uuid4())
        try:
            resp = await client.get(url + path, headers={**AUTH, "x-request-id": rid})
        except httpx.HTTPError as exc:
            out.append(Result(rid, path, None, None, f"{type(exc).__name__}: {exc}"))
            continue
        marker = None
        with contextlib.suppress(ValueError, AttributeError):
            body = resp.json()
            marker = body["headers"].get("x-config") if resp.status_code == 200 else body["error"]
        out.append(Result(rid, path, resp.status_code, marker, resp.text[:200]))


@dataclass
class Attempt:
    kind: str  # "A", "B" or the kind of invalid file
    valid: bool
    outcome: tuple[int, int]  # (success, failure) reload counts after it
    readyz: dict[str, Any]


async def _wait_counts(stand: Stand, c: httpx.AsyncClient, want: int) -> tuple[int, int]:
    url = f"http://127.0.0.1:{stand.authz.http_port}/metrics"
    deadline = time.monotonic() + RELOAD_WAIT
    while True:
        counts = reload_counts((await c.get(url)).text)
        if sum(counts) >= want or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.02)


async def _rewrite(stand: Stand, c: httpx.AsyncClient) -> list[Attempt]:
    """REWRITES rewrites: B, invalid, A, invalid, B, ...; each waits until authz has tried it."""
    attempts: list[Attempt] = []
    start = sum(await _wait_counts(stand, c, 1))  # the first load is counted as a success
    invalid = list(INVALID.items())
    ready_url = f"http://127.0.0.1:{stand.authz.http_port}/readyz"
    for i in range(REWRITES):
        if i % 2 == 0:
            kind = "B" if (i // 2) % 2 == 0 else "A"
            text, valid = VALID[kind], True
        else:
            kind, text = invalid[(i // 2) % len(invalid)]
            valid = False
        await asyncio.to_thread(write_atomically, stand.config, text)
        counts = await _wait_counts(stand, c, start + i + 1)
        ready = (await c.get(ready_url)).json()
        attempts.append(Attempt(kind, valid, counts, ready))
        await asyncio.sleep(DWELL)
    return attempts


async def _under_load(stand: Stand) -> tuple[list[Result], list[Attempt], float]:
    results: list[Result] = []
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=CLIENTS)
    url = stand.envoy.url("")
    t0 = time.monotonic()
    async with (
        httpx.AsyncClient(timeout=5, limits=limits) as client,
        httpx.AsyncClient(timeout=2) as admin,
    ):
        tasks = [
            asyncio.create_task(_client(client, url, n, stop, results)) for n in range(CLIENTS)
        ]
        try:
            await asyncio.sleep(0.3)  # load before the first rewrite
            attempts = await asyncio.wait_for(_rewrite(stand, admin), LOAD_LIMIT)
            await asyncio.sleep(0.3)  # and after the last one
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    return results, attempts, time.monotonic() - t0


def _decision_log(stand: Stand) -> dict[str, dict[str, Any]]:
    """The decision log by request id, once authz has exited (the log is flushed at exit)."""
    assert stand.authz.process.stop() == 0, stand.authz.process.log()
    lines = stand.decision_log.read_text(encoding="utf-8").splitlines()
    return {rec["requestId"]: rec for rec in map(json.loads, lines)}


# --- the test ----------------------------------------------------------------------------


def test_reload_under_load_serves_a_or_b_never_a_mix_nor_an_invalid_file(stand: Stand) -> None:
    results, attempts, duration = asyncio.run(_under_load(stand))

    failed = [r for r in results if r.status is None or r.status >= 500]
    mixed = [r for r in results if r.status is not None and r.version() is None]
    seen = Counter(r.version() for r in results)
    applied = sum(a.valid for a in attempts)
    rejected = len(attempts) - applied
    success, failure = attempts[-1].outcome
    print(
        f"\nreload under load: {len(results)} requests from {CLIENTS} clients in "
        f"{duration:.1f}s, {len(failed)} failed, {len(mixed)} neither A nor B; "
        f"answers by version {dict(seen)}; {len(attempts)} rewrites: {applied} applied, "
        f"{rejected} rejected; authz_config_reloads_total success={success} "
        f"(incl. the first load) failure={failure}"
    )

    # Every rewrite was tried once: the valid ones applied, the invalid ones rejected.
    assert len(attempts) == REWRITES
    for n, a in enumerate(attempts):
        assert sum(a.outcome) == n + 2, f"rewrite {n} ({a.kind}) not tried: {a.outcome}"
    assert (success, failure) == (1 + applied, rejected)
    last_good = "A"
    for a in attempts:
        if a.valid:
            last_good = a.kind
            assert "lastReload" not in a.readyz, a.readyz
        else:
            assert a.readyz["lastReload"]["ok"] is False and a.readyz["lastReload"]["errors"]
        assert a.readyz["ready"] is True, a.readyz
        assert VERSIONS.get(a.readyz["config"]) == last_good, (a.kind, a.readyz)
    assert not attempts[-1].valid  # ... so the last good version is the one serving now:
    assert stand.readyz()["config"] == version_of(VALID[last_good])
    for path in ("/rl/p", "/rl/q"):
        resp = httpx.get(stand.envoy.url(path), headers=AUTH, timeout=5)
        marker = resp.json()["headers"]["x-config"] if resp.status_code == 200 else None
        marker = marker or resp.json().get("error")
        assert (resp.status_code, marker) == expected(last_good, path)

    # Not one request failed, every answer was exactly A's or B's, and both were served.
    assert len(results) >= 200, len(results)
    assert not failed, f"{len(failed)} failed: {[(r.status, r.error) for r in failed[:5]]}"
    assert not mixed, (
        f"{len(mixed)} neither A nor B: {[(r.path, r.status, r.marker) for r in mixed[:5]]}"
    )
    assert seen["A"] >= 20 and seen["B"] >= 20, seen
    assert stand.envoy.counter("http.ingress.ext_authz.error") == 0

    # The decision log: one line per request, naming the version whose decision it is, the
    # same version the client's response shows.
    log = _decision_log(stand)
    mismatched = []
    for r in results:
        rec = log.get(r.request_id)
        assert rec is not None, f"no decision log line for {r.request_id}"
        version = VERSIONS.get(rec["config"])
        status, _ = expected(version or "?", r.path)
        consistent = (
            version is not None and rec["status"] == status
            and rec["allowed"] is (status == 200) and version == r.version()
        )  # fmt: skip
        if not consistent:
            mismatched.append((r.path, r.status, r.marker, rec))
    assert not mismatched, f"{len(mismatched)} inconsistent: {mismatched[:3]}"
    print("decision log, three lines:")
    for r in results[: len(results) : max(1, len(results) // 3)][:3]:
        print("  " + json.dumps(log[r.request_id], separators=(",", ":")))
