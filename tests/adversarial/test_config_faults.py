"""Bad configs: at start the process never reports ready and exits non-zero; at reload the
last good version keeps serving through Envoy and the failure is exposed in /readyz and
/metrics."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, wait_for
from tests.integration.harness import ROOT, Stack, authz_env, bearer, start_stack, token

pytestmark = pytest.mark.integration

GOOD = """
project: reload
auth:
  secrets: [{kid: main, alg: HS256, secret: "${AUTHZ_SECRET}", primary: true}]
databases:
  local: {type: sqlite, path: DBPATH}
services:
  r:
    endpoints:
      open: {method: GET, path: /r/open, rule: {rule: allow}}
      admin:
        method: GET
        path: /r/admin
        rule: {rule: match, type: string, eval: "==", f1: args.auth.role, f2: admin}
"""
# Each breaks the config in one way; the server must refuse it at start and at reload.
BROKEN = {
    "yaml": "project: [unclosed\n",
    "not-a-mapping": "- a\n- b\n",
    "duplicate-key": GOOD + "project: again\n",
    "unknown-key": GOOD.replace("project: reload", "project: reload\nprojekt: x"),
    "unknown-rule-kind": GOOD.replace("{rule: allow}", "{rule: hashh, fields: [args.params.a]}"),
    "unknown-operator": GOOD.replace('eval: "=="', 'eval: "=>"'),
    "empty-or": GOOD.replace("{rule: allow}", "{rule: or, clauses: []}"),
    "wrong-literal-type": GOOD.replace("type: string", "type: number"),
    "bad-reference": GOOD.replace("args.auth.role", "args..role"),
    "unknown-query-operator": GOOD.replace(
        "{rule: allow}", "{rule: query, db: local, col: t, find: {a: {$foo: 1}}}"
    ),
    "unknown-datastore": GOOD.replace(
        "{rule: allow}", "{rule: query, db: nowhere, col: t, find: {a: 1}}"
    ),
    "missing-env": GOOD.replace("${AUTHZ_SECRET}", "${AUTHZ_NOT_SET_ANYWHERE}"),
    "bad-public-key": GOOD.replace(
        'alg: HS256, secret: "${AUTHZ_SECRET}"', "alg: RS256, publicKey: not-a-pem"
    ),
    "unknown-method": GOOD.replace("method: GET, path: /r/open", "method: FETCH, path: /r/open"),
    "path-without-slash": GOOD.replace("path: /r/open", "path: r/open"),
}


def good(db: Path) -> str:
    if not db.exists():  # the datastore must be healthy for the server to be ready
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE t (a TEXT)")
        conn.close()
    return GOOD.replace("DBPATH", str(db))


def test_broken_configs_never_become_ready(tmp_path: Path) -> None:
    procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for name, text in BROKEN.items():
            path = tmp_path / f"{name}.yaml"
            path.write_text(text.replace("DBPATH", str(tmp_path / "db.sqlite")), encoding="utf-8")
            grpc_port, http_port = free_port(), free_port()
            cmd = [sys.executable, "-m", "authz", "serve", "--config", str(path),
                   "--listen", f"127.0.0.1:{grpc_port}",
                   "--http-listen", f"127.0.0.1:{http_port}"]  # fmt: skip
            proc = subprocess.Popen(cmd, cwd=ROOT, env=authz_env(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)  # fmt: skip
            procs[name] = (proc, http_port)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(p.poll() is None for p, _ in procs.values()):
            for name, (_, port) in procs.items():
                try:
                    ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=0.3)
                except httpx.HTTPError:
                    continue
                assert ready.status_code != 200, f"{name}: reported ready"
            time.sleep(0.1)
        for name, (proc, _) in procs.items():
            assert proc.poll() not in (None, 0), f"{name}: did not exit with an error"
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def stack(log_dir: Path) -> Iterator[Stack]:
    config = log_dir / "reload.yaml"
    config.write_text(good(log_dir / "db.sqlite"), encoding="utf-8")
    s = start_stack(config, log_dir)
    yield s
    s.stop()


def decisions(stack: Stack) -> tuple[int, int, int]:
    """(anonymous /r/open, user /r/admin, admin /r/admin) statuses."""

    def get(path: str, who: dict[str, str] | None) -> int:
        headers = {"x-request-id": str(uuid.uuid4()), **(bearer(token(who)) if who else {})}
        return httpx.get(stack.envoy.url(path), headers=headers, timeout=5).status_code

    return (get("/r/open", None), get("/r/admin", {"id": "u", "role": "user"}),
            get("/r/admin", {"id": "a", "role": "admin"}))  # fmt: skip


def metric(stack: Stack, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{stack.authz.http_port}/metrics", timeout=2).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name}")


def reload(stack: Stack, config: Path, text: str) -> None:
    config.write_text(text, encoding="utf-8")
    stack.authz.process.signal(signal.SIGHUP)


@pytest.mark.parametrize("name", [n for n in BROKEN if n != "missing-env"] + ["missing-env"])
def test_invalid_reload_keeps_the_last_good_version(stack: Stack, log_dir: Path, name: str) -> None:
    config = log_dir / "reload.yaml"
    reload(stack, config, good(log_dir / "db.sqlite"))
    wait_for(lambda: "lastReload" not in stack.authz.ready().json(), 10, "a clean reload")
    assert decisions(stack) == (200, 403, 200)
    reload(stack, config, BROKEN[name].replace("DBPATH", str(log_dir / "db.sqlite")))
    wait_for(lambda: "lastReload" in stack.authz.ready().json(), 10, "the reload to fail")
    ready = stack.authz.ready()
    assert ready.status_code == 200 and ready.json()["lastReload"]["ok"] is False
    assert ready.json()["lastReload"]["errors"], ready.json()
    assert metric(stack, "authz_config_last_reload_success") == 0
    for _ in range(3):
        assert decisions(stack) == (200, 403, 200)


def test_a_valid_reload_does_take_effect(stack: Stack, log_dir: Path) -> None:
    # Control: the reload path works, so the test above could have seen a change.
    config = log_dir / "reload.yaml"
    reload(stack, config, good(log_dir / "db.sqlite").replace("{rule: allow}", "{rule: deny}"))
    wait_for(lambda: decisions(stack)[0] == 401, 10, "the new version")
    assert metric(stack, "authz_config_last_reload_success") == 1
    reload(stack, config, good(log_dir / "db.sqlite"))
    wait_for(lambda: decisions(stack)[0] == 200, 10, "the good version again")
