"""Race detection: concurrent Checks while the config is reloaded
and swapped, and while a JWKS key set is swapped, with assertions on shared state.

- asyncio: many Check tasks go through `AuthzServer.check` (bytes in, bytes out: decode,
  authorizer, encode, metrics, decision log) while `Reloader.reload` rebuilds the config off
  the loop (a worker thread) and swaps it in, and while a second task flips between two
  prebuilt versions as fast as the loop allows. The two versions decide mirror images, and
  each decision carries its version three ways (an upstream header set by two separate field
  rules, the deny message, the decision log's `config`): every decision must be exactly one
  version's, whole. Each Check also awaits a SQLite query (a worker thread) in the middle of
  its rule, so swaps land while Checks are suspended.
- the compiled config is not mutated by evaluation: a deep snapshot of every version's
  compiled rules (closures included: literal lists, forced values) and of its validated
  config is equal before and after the run.
- JWKS: Check tasks verify tokens of two rotating keys while the key set is swapped (with
  the verified-token cache purging removed keys); a token is allowed only if its key was in
  the set at some moment of its Check, and always allowed if its key was there throughout.
- threads: configs compiled in several threads at once (what a reload does off the loop)
  give identical results while the loop serves; the decision-log writer thread drains while
  the loop appends, and writes every record once, in order, as whole lines.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import sqlite3
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

import authz.datastores.sqlite as sqlite_module
import authz.reload as reload_module
from authz.authorizer import Authorizer
from authz.config.load import load_config_text
from authz.datastores.factory import open_datastores
from authz.identity.jwks import keys_from_jwks
from authz.observability.decisionlog import DecisionLog
from authz.reload import Reloader
from authz.request import Request
from authz.runtime import Runtime
from authz.server import AuthzServer, ServeOptions

SECRET = "race-tests-secret-0123456789abcdef01234"


# --- two mirror-image versions ----------------------------------------------------------


def _query() -> dict[str, Any]:
    return {
        "rule": "query", "db": "sq", "col": "users", "store": "args.found",
        "find": {"name": {"$in": ["alice", "args.auth.id"]}, "age": {"$gte": 0}},
        "clause": {"rule": "match", "type": "number", "eval": ">=",
                   "f1": "utils.length(args.found)", "f2": 1},
    }  # fmt: skip


def _allow(v: str) -> dict[str, Any]:
    return {
        "rule": "and",
        "clauses": [
            _query(),
            {"rule": "match", "type": "string", "eval": "in", "f1": "args.auth.id",
             "f2": ["alice", "bob"]},
            {"rule": "force", "field": "args.headers.x-config", "value": v},
            {"rule": "force", "field": "args.params.meta", "value": {"v": v, "list": [1, 2, 3]}},
            {"rule": "remove", "fields": ["args.params.meta.list.0"]},
            {"rule": "force", "field": "args.headers.x-config-check", "value": v},
        ],
    }  # fmt: skip


def _deny(v: str) -> dict[str, Any]:
    return {
        "rule": "and",
        "error": f"config {v} denies",
        "clauses": [_query(), {"rule": "deny", "error": f"config {v} denies"}],
    }


def config_text(v: str) -> str:
    p, q = (_allow(v), _deny(v)) if v == "A" else (_deny(v), _allow(v))
    doc = {
        "project": "race",
        "auth": {
            "secrets": [{"kid": "main", "alg": "HS256", "secret": SECRET, "primary": True}],
            "serviceToken": {"enabled": False},
        },
        "databases": {"sq": {"type": "sqlite", "path": "app.db", "timeout": "5s"}},
        "services": {
            "s": {
                "endpoints": {
                    "p": {"method": "GET", "path": "/p", "rule": p},
                    "q": {"method": "GET", "path": "/q", "rule": q},
                }
            }
        },
    }
    return yaml.safe_dump(doc, sort_keys=False)


TEXT = {v: config_text(v) for v in "AB"}
VERSION = {v: load_config_text(TEXT[v]).version for v in "AB"}
ALLOWS = {"A": "/p", "B": "/q"}


def _db(dir: Path) -> None:
    conn = sqlite3.connect(dir / "app.db")
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, age INTEGER)")
    conn.executemany("INSERT INTO users VALUES (?, ?, ?)", [(1, "alice", 30), (2, "bob", 40)])
    conn.commit()
    conn.close()


def _token(sub: str = "alice") -> str:
    return jwt.encode(
        {"id": sub, "exp": int(time.time()) + 600}, SECRET, "HS256", headers={"kid": "main"}
    )


def check_request(path: str, rid: str, token: str) -> bytes:
    msg = CheckRequest()
    http = msg.attributes.request.http
    http.method, http.path, http.id = "GET", path, rid
    http.headers["authorization"] = f"Bearer {token}"
    http.headers["x-request-id"] = rid
    return msg.SerializeToString()


def version_of(path: str, resp: CheckResponse) -> str:
    """The one version this response is whole under; AssertionError for a torn one."""
    if resp.HasField("ok_response"):
        assert resp.status.code == 0
        headers = {h.header.key: h.header.value for h in resp.ok_response.headers}
        v = headers.get("x-config")
        assert v in ("A", "B") and headers.get("x-config-check") == v, headers
        assert ALLOWS[v] == path, (path, headers)
        return v
    denied = resp.denied_response
    assert denied.status.code == 403, denied
    message = json.loads(denied.body)["error"]
    m = re.fullmatch(r"config ([AB]) denies", message)
    assert m, message
    assert ALLOWS[m.group(1)] != path, (path, message)
    return m.group(1)


# --- deep snapshots of compiled state ------------------------------------------------------

# runtime state that is meant to change while serving (caches, connections, metrics)
_RUNTIME = ("ResultCache", "Runtime", "Identity", "Metrics", "EndpointMetrics", "Datastore")


def snapshot(obj: Any, memo: dict[int, Any] | None = None, stack: frozenset = frozenset()) -> Any:
    """A plain, comparable picture of an object graph, closures included."""
    memo = {} if memo is None else memo
    if obj is None or isinstance(obj, bool | int | float | str | bytes):
        return obj
    if id(obj) in stack:
        return ("<cycle>", type(obj).__name__)
    if id(obj) in memo:
        return memo[id(obj)]
    stack = stack | {id(obj)}
    t = type(obj)
    if any(c.__name__ in _RUNTIME for c in t.__mro__):
        out: Any = ("<runtime>", t.__name__)
    elif isinstance(obj, dict):
        out = (
            "dict",
            [(snapshot(k, memo, stack), snapshot(v, memo, stack)) for k, v in obj.items()],
        )
    elif isinstance(obj, list | tuple):
        out = (t.__name__, [snapshot(v, memo, stack) for v in obj])
    elif isinstance(obj, set | frozenset):
        out = (t.__name__, sorted(repr(snapshot(v, memo, stack)) for v in obj))
    elif isinstance(obj, types.FunctionType):
        cells = []
        for cell in obj.__closure__ or ():
            try:
                cells.append(snapshot(cell.cell_contents, memo, stack))
            except ValueError:  # an empty cell
                cells.append("<empty>")
        attrs = snapshot(dict(vars(obj)), memo, stack)
        out = ("fn", obj.__qualname__, cells, attrs, snapshot(obj.__defaults__, memo, stack))
    elif isinstance(obj, types.MethodType):
        out = ("method", obj.__func__.__qualname__, snapshot(obj.__self__, memo, stack))
    elif isinstance(obj, re.Pattern):
        out = ("re", obj.pattern)
    elif isinstance(obj, types.BuiltinFunctionType | type | types.ModuleType):
        out = ("<builtin>", repr(obj))
    else:
        names: list[str] = []
        for c in t.__mro__:
            for s in getattr(c, "__slots__", ()):
                if s not in names and s not in ("__weakref__", "__dict__"):
                    names.append(s)
        names += [n for n in getattr(obj, "__dict__", {}) if n not in names]
        out = (t.__name__, [(n, snapshot(getattr(obj, n, "<unset>"), memo, stack)) for n in names])
    memo[id(obj)] = out
    return out


def compiled_state(a: Authorizer) -> Any:
    return (
        a.version,
        a.config.model_dump(),
        snapshot([a.endpoints, a.router.routes]),
    )


# --- asyncio: Checks while reloading and swapping ----------------------------------------


async def test_checks_during_reloads_and_swaps(tmp_path, monkeypatch):
    _db(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(TEXT["A"])
    monkeypatch.setattr(reload_module, "RETIRE_AFTER", 3600.0)  # closed below, not by a timer
    # Every query suspends its Check (as a slow or pooled one does), so swaps land mid-Check.
    monkeypatch.setattr(sqlite_module, "_YIELD_AFTER", -1.0)
    server = AuthzServer(ServeOptions(config=str(path), watch=0))
    sink = io.StringIO()
    server.decisions = DecisionLog("off", sink=sink, flush_interval=0.01)
    versions: dict[int, Authorizer] = {}

    def swap(new: Authorizer) -> Authorizer | None:
        versions[id(new)] = new
        return server._swap(new)

    reloader = Reloader(server.options, swap, server.metrics)
    server.authorizer = await reloader.load_first()
    versions[id(server.authorizer)] = server.authorizer
    prebuilt = {}
    for v in "AB":
        config = load_config_text(TEXT[v], base_dir=tmp_path)
        prebuilt[v] = Authorizer(config, Runtime(config))
        await prebuilt[v].runtime.start()
        versions[id(prebuilt[v])] = prebuilt[v]
    before = {v: compiled_state(prebuilt[v]) for v in "AB"}
    token = _token()
    results: list[tuple[str, str, bytes]] = []
    done = asyncio.Event()
    reloads = 0
    moved = [0]  # Checks during which another version was swapped in

    async def client(i: int) -> None:
        for j in range(400):  # bounded; stops early once the swappers are done
            if done.is_set() and j >= 30:
                return
            rid = f"r{i}-{j}"
            target = "/p" if (i + j) % 2 else "/q"
            started_on = server.authorizer
            raw = await server.check(check_request(target, rid, token), None)
            moved[0] += server.authorizer is not started_on
            results.append((rid, target, raw))

    async def reloading() -> None:
        nonlocal reloads
        for k in range(12):
            v = "B" if k % 2 == 0 else "A"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(TEXT[v])
            os.replace(tmp, path)  # atomic, as a ConfigMap update
            assert await reloader.reload(f"test {k}")
            reloads += 1
            await asyncio.sleep(0.005)

    async def flipping() -> None:
        for k in range(3000):
            server._swap(prebuilt["AB"[k % 2]])
            await asyncio.sleep(0)
            if k > 200 and reloads >= 12:
                return

    try:
        async with asyncio.timeout(60):
            swappers = asyncio.gather(reloading(), flipping())
            clients = asyncio.gather(*(client(i) for i in range(24)))
            await swappers
            done.set()
            await clients
        server.decisions.close()
        seen: dict[str, int] = {"A": 0, "B": 0}
        by_rid: dict[str, str] = {}
        for rid, target, raw in results:
            v = version_of(target, CheckResponse.FromString(raw))
            seen[v] += 1
            by_rid[rid] = v
        assert seen["A"] > 50 and seen["B"] > 50, seen  # both versions really served
        assert moved[0] > 50, moved  # the races really happened: swaps while Checks ran
        logged = [json.loads(line) for line in sink.getvalue().splitlines()]
        assert len(logged) == len(results)
        for record in logged:
            v = by_rid[record["requestId"]]
            assert record["config"] == VERSION[v], record  # the decision and its version agree
            assert record["allowed"] is (record["endpoint"] == ALLOWS[v][1:]), record
        assert reloader.reloads == 12 and reloader.last_error == []
        # evaluation never changed a compiled version
        for v in "AB":
            assert compiled_state(prebuilt[v]) == before[v]
        fresh = {v: Authorizer(load_config_text(TEXT[v], base_dir=tmp_path)) for v in "AB"}
        for a in versions.values():
            v = "A" if a.version == VERSION["A"] else "B"
            assert a.version == VERSION[v]
            assert compiled_state(a)[:2] == compiled_state(fresh[v])[:2]
            assert compiled_state(a) == compiled_state(fresh[v])
    finally:
        server.decisions.close()
        reloader.stop_watching()
        await reloader.close_retired()
        for a in versions.values():
            await a.runtime.close()


def test_snapshot_sees_a_mutated_literal(tmp_path):
    """The snapshot is deep enough: it notices a change inside a compiled closure."""
    a = Authorizer(load_config_text(TEXT["A"], base_dir=tmp_path))
    before = compiled_state(a)
    rule = a.endpoints[0].rule
    rule.clauses[1].f2({}).append("mallory")  # the match's literal list, held by a closure
    assert compiled_state(a) != before


# --- asyncio: Checks while the JWKS key set is swapped -----------------------------------


def _rsa_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


async def test_checks_during_jwks_swaps(tmp_path):
    _db(tmp_path)
    doc = yaml.safe_load(TEXT["A"])
    doc["auth"]["secrets"].append({"jwksUrl": "http://127.0.0.1:9/jwks", "alg": "RS256"})
    doc["services"]["s"]["endpoints"]["p"]["rule"] = {
        "rule": "and", "clauses": [{"rule": "authenticated"}, _query()],
    }  # fmt: skip
    config = load_config_text(yaml.safe_dump(doc), base_dir=tmp_path)
    authorizer = Authorizer(config, Runtime(config))
    # no runtime.start(): the JWKS source never fetches; the test installs key sets itself
    authorizer.runtime.datastores = await open_datastores(config)
    source = authorizer.runtime.identity.sources[0]
    private = {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048)
               for kid in ("k1", "k2")}  # fmt: skip
    jwks = {kid: _rsa_jwk(k, kid) for kid, k in private.items()}
    exp = int(time.time()) + 600
    tokens = {
        kid: jwt.encode({"id": "alice", "exp": exp}, private[kid], "RS256", headers={"kid": kid})
        for kid in ("k1", "k2")
    }
    tokens["k3"] = jwt.encode(
        {"id": "alice", "exp": exp}, private["k1"], "RS256", headers={"kid": "k3"}
    )
    sets = [("k1",), ("k1", "k2"), ("k2",), ("k1", "k2"), ("k1",)]
    history: list[frozenset[str]] = []

    def install(kids: tuple[str, ...]) -> None:
        keys = keys_from_jwks({"keys": [jwks[k] for k in kids]}, source.settings, source.path)
        source._install(keys)
        history.append(frozenset(kids))

    install(("k1", "k2"))
    outcomes: list[tuple[str, int, int, int]] = []
    stop = asyncio.Event()

    async def client(i: int) -> None:
        for j in range(300):
            if stop.is_set() and j >= 20:
                return
            kid = ("k1", "k2", "k2", "k3")[(i + j) % 4]
            req = Request.from_target(
                "GET", "/p", headers={"authorization": f"Bearer {tokens[kid]}"}, request_id="r"
            )
            e0 = len(history) - 1
            d = await authorizer.check(req)
            e1 = len(history) - 1
            outcomes.append((kid, e0, e1, d.status))

    async def swapping() -> None:
        for k in range(400):
            install(sets[k % len(sets)])
            await asyncio.sleep(0.0005 if k % 7 else 0.005)

    try:
        async with asyncio.timeout(60):
            clients = asyncio.gather(*(client(i) for i in range(16)))
            await swapping()
            stop.set()
            await clients
    finally:
        await authorizer.runtime.close()
    counts = {"allowed": 0, "denied": 0}
    for kid, e0, e1, status in outcomes:
        assert status in (200, 401), (kid, status)  # never a 5xx, never an exception
        present = [kid in history[e] for e in range(e0, e1 + 1)]
        if status == 200:
            assert any(present), (kid, e0, e1)  # its key was there at some moment
        if all(present):
            assert status == 200, (kid, e0, e1)  # and a key there throughout always verifies
        counts["allowed" if status == 200 else "denied"] += 1
    assert counts["allowed"] > 100 and counts["denied"] > 100, counts
    assert sum(e1 > e0 for _, e0, e1, _ in outcomes) > 50  # key sets swapped mid-Check
    # no cached token outlives its key: what is cached now verifies under the final set
    final = history[-1]
    for _claims, _exp, _nbf, key in authorizer.runtime.identity.cache._entries.values():
        assert not key.removed and (key.kid in final or key.kid == "main")


# --- threads -------------------------------------------------------------------------------


async def test_compiles_in_threads_while_the_loop_serves(tmp_path):
    _db(tmp_path)
    config = load_config_text(TEXT["A"], base_dir=tmp_path)
    serving = Authorizer(config, Runtime(config))
    serving.runtime.datastores = await open_datastores(config)
    reference = compiled_state(Authorizer(load_config_text(TEXT["B"], base_dir=tmp_path)))
    built: list[Any] = []
    lock = threading.Lock()

    def build(n: int) -> None:
        for _ in range(n):
            state = compiled_state(Authorizer(load_config_text(TEXT["B"], base_dir=tmp_path)))
            with lock:
                built.append(state)

    token = _token("bob")
    loop = asyncio.get_running_loop()
    try:
        with ThreadPoolExecutor(6) as pool:
            futures = [loop.run_in_executor(pool, build, 4) for _ in range(6)]
            decisions = []
            async with asyncio.timeout(60):
                while not all(f.done() for f in futures) or len(decisions) < 50:
                    req = Request.from_target(
                        "GET", "/p" if len(decisions) % 2 else "/q",
                        headers={"authorization": f"Bearer {token}"}, request_id="r",
                    )  # fmt: skip
                    decisions.append((req.path, await serving.check(req)))
                await asyncio.gather(*futures)
    finally:
        await serving.runtime.close()
    assert len(built) == 24 and all(state == reference for state in built)
    for target, d in decisions:
        assert d.allowed is (target == "/p"), d.reason
        if d.allowed:
            assert ("x-config", "A") in d.headers


async def test_decision_log_writer_thread_against_the_loop():
    sink = io.StringIO()
    log = DecisionLog("off", sink=sink, batch_size=7, flush_interval=0.001, max_queue=1_000_000)
    n = 20_000
    try:
        for i in range(n):
            log.log({"requestId": f"r{i}", "seq": i, "reason": "x" * (i % 50)})
            if i % 97 == 0:
                await asyncio.sleep(0)  # let the writer interleave with the producer
    finally:
        log.close()
    lines = sink.getvalue().splitlines()
    assert len(lines) == n and log.dropped == 0
    records = [json.loads(line) for line in lines]  # every line whole
    assert [r["seq"] for r in records] == list(range(n))  # each once, in order


@pytest.mark.parametrize("threads", [4])
def test_decision_log_from_several_threads(threads):
    """log() is only called on the loop today; if it ever is from threads, nothing is lost."""
    sink = io.StringIO()
    log = DecisionLog("off", sink=sink, batch_size=5, flush_interval=0.001, max_queue=1_000_000)
    per = 5_000

    def produce(t: int) -> None:
        for i in range(per):
            log.log({"requestId": f"{t}-{i}", "t": t, "i": i})

    try:
        workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(30)
    finally:
        log.close()
    records = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert len(records) == threads * per
    for t in range(threads):  # each producer's records complete and in its order
        assert [r["i"] for r in records if r["t"] == t] == list(range(per))
