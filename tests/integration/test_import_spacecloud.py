"""`authz import spacecloud` against real parts:

- round trip: the seeds' Space Cloud examples (tests/integration/spacecloud_seeds.yaml) are
  imported and decided by authz, on PostgreSQL, the way Space Cloud's rule engine
  (gateway/modules/auth) decides them — except where the import reported a difference;
- Envoy: the Envoy bootstrap written for the example project (config/examples/spacecloud)
  passes `envoy --mode validate`, and an imported endpoint is decided through a real Envoy.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import yaml

from authz.authorizer import Authorizer
from authz.checkfile import run_checks
from authz.cli import main
from authz.config.load import load_config
from tests.helpers import PG, free_port, pg_schema, port_open, wait_for
from tests.integration.harness import (
    READY_TIMEOUT,
    ROOT,
    Process,
    envoy_binary,
    start_authz,
    start_echo,
    validate_envoy_config,
)

pytestmark = pytest.mark.integration
SEEDS = Path(__file__).parent / "spacecloud_seeds.yaml"
EXAMPLE = ROOT / "config" / "examples" / "spacecloud"
INSTAGRAM_SQL = ROOT / "authz" / "datastores" / "examples" / "instagram.sql"
# SHA-256 of "password", standard base64: what Space Cloud's hash rule wrote on requests.
PASSWORD_HASH = "XohImNooBHFR0OVvjcYpJ3NgPQ1qq73WKhHvch0VQtg="


def import_project(tmp: Path, *inputs: str) -> tuple[int, Path, dict[str, str], list[dict]]:
    out, env_out, report = tmp / "authz.yaml", tmp / "authz.env", tmp / "report.json"
    code = main(["import", "spacecloud", *inputs, "--out", str(out), "--env-out", str(env_out),
                 "--report", str(report), "--envoy", str(tmp / "envoy.yaml")])  # fmt: skip
    return code, out, read_env(env_out), json.loads(report.read_text())["items"]


def read_env(path: Path) -> dict[str, str]:
    """What `set -a; . FILE` puts in a clean shell's environment."""
    dump = subprocess.run(["env", "-i", "sh", "-c", 'set -a; . "$1"; env -0', "sh", str(path)],
                          capture_output=True, check=True, timeout=10).stdout  # fmt: skip
    pairs = (item.decode().partition("=") for item in dump.split(b"\0") if item)
    return {k: v for k, _, v in pairs if k.startswith("AUTHZ_")}


def hs_token(secret: str, claims: dict[str, Any]) -> str:
    now = int(time.time())
    return jwt.encode({"iat": now, "exp": now + 600, **claims}, secret, "HS256",
                      headers={"kid": "main"})  # fmt: skip


# --- round trip ----------------------------------------------------------------------------

USER = {"id": "u1", "role": "user"}
ADMIN = {"id": "a1", "role": "admin"}
SUPER = {"id": "s1", "role": "super-user"}
ALICE = {"id": "alice", "role": "user"}

# (method, path, claims or None, body, Space Cloud's decision, params the upstream gets or None)
# Space Cloud's decisions, from its rule engine: allow ignores the token; deny always fails;
# match compares loaded values; remove/force/hash change args.params before the call; query
# runs `find` and evaluates its clause on args.result.
CASES = [
    ("POST", "/allow", None, {}, True, None),
    ("POST", "/deny", USER, {}, False, None),
    ("POST", "/authenticated", USER, {}, True, None),
    ("POST", "/authenticated", None, {}, False, None),
    ("POST", "/own", USER, {"userId": "u1"}, True, None),
    ("POST", "/own", USER, {"userId": "u2"}, False, None),
    ("POST", "/admin", ADMIN, {}, True, None),
    ("POST", "/admin", USER, {}, False, None),
    ("POST", "/post", USER, {"postId": "p1"}, True, None),
    ("POST", "/post", USER, {}, False, None),
    ("POST", "/amount", ADMIN, {"amount": 5}, True, {"amount": 5}),
    ("POST", "/force", USER, {"userId": "someone"}, True, {"userId": "u1"}),
    ("POST", "/author", USER, {"bookId": "b1"}, True, None),
    ("POST", "/author", USER, {"bookId": "b9"}, False, None),
    ("POST", "/hash", USER, {"password": "password"}, True, {"password": PASSWORD_HASH}),
    ("POST", "/staff", SUPER, {}, True, None),
    ("POST", "/staff", ADMIN, {}, True, None),
    ("POST", "/staff", USER, {}, False, None),
    ("GET", "/v1/profiles/alice", USER, None, True, None),  # public
    ("GET", "/v1/profiles/bob", ALICE, None, True, None),  # alice follows bob
    ("GET", "/v1/profiles/bob", USER, None, False, None),  # private
]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Authorizer, dict, list]]:
    with pg_schema("authz_sc") as (admin, schema):
        admin.execute(INSTAGRAM_SQL.read_text())
        admin.execute(
            "CREATE TABLE books (authorId TEXT NOT NULL); INSERT INTO books VALUES ('b1')"
        )
        tmp = tmp_path_factory.mktemp("seeds")
        source = tmp / "gateway.yaml"
        conn = PG + "?sslmode=disable"
        source.write_text(SEEDS.read_text().replace("DB_CONN", conn).replace("DB_SCHEMA", schema))
        code, out, env, items = import_project(tmp, str(source))
        assert code == 3, items  # the mistyped `remove` clause is reported
        yield Authorizer(load_config(out, env)), env, items


def decide(authorizer: Authorizer, env: dict, requests: list[dict]) -> list[dict]:
    secret = env["AUTHZ_SC_SECRET_MAIN"]
    items = []
    for method, path, claims, body, *_ in requests:
        headers = {"authorization": f"Bearer {hs_token(secret, claims)}"} if claims else {}
        if body is not None:
            headers["content-type"] = "application/json"
        items.append({"method": method, "path": path, "headers": headers, "body": body})
    return asyncio.run(run_checks(authorizer, items, trace=False))


def test_seed_examples_decide_as_space_cloud_does(seeds: tuple) -> None:
    authorizer, env, _ = seeds
    for case, got in zip(CASES, decide(authorizer, env, CASES), strict=True):
        *_, body, allowed, params = case
        assert got["allowed"] is allowed, (case, got)
        if params is not None:
            assert got["params"] == {**(body or {}), **params}, (case, got)


def test_encrypted_fields_are_sealed_with_the_new_gcm_key(seeds: tuple) -> None:
    authorizer, env, _ = seeds
    body = {"email": "a@example.com", "name": "Ann"}
    (got,) = decide(authorizer, env, [("POST", "/encrypt", USER, body)])
    assert got["allowed"] is True
    for name in body:
        assert got["params"][name] != body[name]
        assert got["params"][name].startswith("v1.gcm1.")


def test_where_space_cloud_failed_open_the_report_says_so(seeds: tuple) -> None:
    """The docs' `remove` example compares a role as `bool`: Space Cloud's clause always
    errored, so it never removed `amount`. The import reports it; authz now removes it."""
    authorizer, env, items = seeds
    reported = [i for i in items if i["kind"] == "differs"]
    assert [i["where"].split("endpoints.")[-1] for i in reported] == [
        "protectAmount.rule.clause.type"
    ]
    (got,) = decide(authorizer, env, [("POST", "/amount", USER, {"amount": 5})])
    assert got["allowed"] is True and got["params"] == {}


def test_missing_token_is_401_where_space_cloud_said_403(seeds: tuple) -> None:
    authorizer, env, _ = seeds
    (got,) = decide(authorizer, env, [("POST", "/authenticated", None, {})])
    assert got["status"] == 401


# --- through Envoy -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imported_example(tmp_path_factory: pytest.TempPathFactory, log_dir: Path) -> Iterator[dict]:
    echo = start_echo()
    procs: list[Process] = []
    try:
        tmp = tmp_path_factory.mktemp("example")
        source = tmp / "spacecloud"
        shutil.copytree(EXAMPLE, source)
        services = source / "13-remote-services.yaml"
        services.write_text(
            services.read_text().replace("127.0.0.1:8001", f"127.0.0.1:{echo.port}")
        )
        code, out, env, _ = import_project(tmp, str(source))
        authz = start_authz(out, log_dir, env=env)
        procs.append(authz.process)
        # Again, for an Envoy bootstrap on free ports pointing at that authz.
        port, admin = free_port(), free_port()
        again = tmp / "again"
        again.mkdir()
        envoy_yaml = again / "envoy.yaml"
        assert main(["import", "spacecloud", str(source), "--out", str(again / "authz.yaml"),
                     "--env-out", str(again / "authz.env"), "--envoy", str(envoy_yaml),
                     "--authz-address", f"127.0.0.1:{authz.grpc_port}",
                     "--listen", f"127.0.0.1:{port}"]) == code  # fmt: skip
        raw = yaml.safe_load(envoy_yaml.read_text())
        raw["admin"]["address"]["socket_address"]["port_value"] = admin
        envoy_yaml.write_text(yaml.safe_dump(raw))
        cmd = [envoy_binary(), "-c", str(envoy_yaml), "--disable-hot-restart",
               "--concurrency", "1", "--log-level", "warn"]  # fmt: skip
        envoy = Process("envoy", cmd, log_dir)
        procs.append(envoy)
        envoy.wait_http_ok(f"http://127.0.0.1:{admin}/ready")
        wait_for(lambda: port_open(port), READY_TIMEOUT, "envoy listener")
        yield {"code": code, "envoy": envoy_yaml, "port": port, "env": env, "echo": echo}
    finally:
        for proc in reversed(procs):
            proc.stop()
        echo.stop()


def test_example_imports_with_notes_only(imported_example: dict) -> None:
    assert imported_example["code"] == 0


def test_generated_envoy_config_passes_envoy_validate(imported_example: dict) -> None:
    result = validate_envoy_config(imported_example["envoy"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_imported_endpoint_decides_through_envoy(imported_example: dict) -> None:
    port, env = imported_example["port"], imported_example["env"]
    secret = env["AUTHZ_SC_SECRET_MAIN"]

    def get(path: str, claims: dict | None, rid: str) -> httpx.Response:
        headers = {"x-request-id": rid}
        if claims:
            headers["authorization"] = f"Bearer {hs_token(secret, claims)}"
        return httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=10)

    owner = {"id": "u1", "role": "user", "orders": ["o-1"]}
    ok = get("/v1/orders/o-1", owner, "sc-own")
    assert ok.status_code == 200, ok.text
    seen = [
        r for r in imported_example["echo"].requests if r["headers"].get("x-request-id") == "sc-own"
    ]
    assert len(seen) == 1 and seen[0]["path"] == "/v1/orders/o-1"
    other = get("/v1/orders/o-2", owner, "sc-other")
    assert other.status_code == 403
    assert get("/v1/orders/o-2", {"id": "a1", "role": "admin"}, "sc-admin").status_code == 200
    assert get("/v1/orders/o-1", None, "sc-anon").status_code == 401
