"""Both ext_authz transports on the configs of the other through-Envoy suites (the example's
own cases are in test_transport_differential.py): field rules and body plans
(test_envoy_fields.py's fields.yaml), response rules (test_envoy_response.py's config and
range-serving upstream), internal errors and a datastore error (test_envoy_errors.py's
config), and a hot reload (test_envoy_reload.py). One authz and one Envoy (a listener per
transport, tests/integration/differential.py) per config, for the whole module.

Refused by design, and checked to be refused (never a silent difference):
- fields.yaml as it is: `fields.body` forces `args.query.tenant`, and an HTTP Check answer
  cannot change the query: `authz envoy-config --transport http` refuses the config, naming
  the endpoint (the differential runs without that one clause); at run time, a body plan on
  a request without a body (args.params is then the query) is a 400 denial over HTTP where
  gRPC changes the query;
- a 5xx decision (an internal error, a datastore error): over gRPC the client gets authz's
  500/503 with its JSON body; over HTTP Envoy takes any 5xx from the authorization server for
  a failure of the server and answers `status_on_error` (503) with an empty body. Both deny,
  neither reaches the upstream; only the status and body differ, as asserted below.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.differential import Pair, start_pair
from tests.integration.harness import (
    RAISE_MARKER,
    authz_env,
    bearer,
    start_echo,
    token,
)
from tests.integration.test_envoy_errors import CONFIG as ERRORS_CONFIG
from tests.integration.test_envoy_fields import FIELDS_CONFIG, Helper
from tests.integration.test_envoy_response import CONFIG as RESPONSE_CONFIG
from tests.integration.test_envoy_response import Upstream

pytestmark = pytest.mark.integration

USER = bearer(token({"id": "u1", "role": "user"}))
ADMIN = bearer(token({"id": "a1", "role": "admin"}))
JSON = {"content-type": "application/json"}
QUERY_CLAUSE = {"rule": "force", "field": "args.query.tenant", "value": "acme"}


def _echo_seen(echo: Any):
    return lambda rid: [r for r in echo.requests if r["headers"].get("x-request-id") == rid]


def _same(pair: Pair, name: str, method: str, path: str, headers: dict[str, str],
          body: bytes = b"") -> dict[str, Any]:  # fmt: skip
    views = pair.views(name, method, path, headers, body)
    # the webhook numbers its answers (hook-1, hook-2, ...): one call per request each way
    views = {t: json.loads(re.sub(r"hook-\d+", "hook-n", json.dumps(v))) for t, v in views.items()}
    assert views["http"] == views["grpc"]
    return views["grpc"][0]


# --- field rules: fields.yaml --------------------------------------------------------------


def test_fields_yaml_as_it_is_is_refused_over_http() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "authz", "envoy-config", "--config", str(FIELDS_CONFIG),
         "--transport", "http", "--authz-http-address", "127.0.0.1:9"],
        env=authz_env({"FIELDS_HOOK_URL": "http://127.0.0.1:9/hook"}),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0 and done.stdout == ""
    assert "fields.body" in done.stderr and "query" in done.stderr, done.stderr


@pytest.fixture(scope="module")
def fields(log_dir: Path) -> Iterator[Pair]:
    helper = Helper()
    helper.thread.start()
    echo = start_echo()
    raw = yaml.safe_load(FIELDS_CONFIG.read_text())
    svc = raw["services"]["fields"]
    svc["url"] = f"http://127.0.0.1:{echo.port}"
    svc["endpoints"]["body"]["rule"]["clauses"].remove(QUERY_CLAUSE)  # refused above
    del svc["endpoints"]["text"]  # a text upstream: test_envoy_fields.py covers it
    config = log_dir / "fields-differential.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {"FIELDS_HOOK_URL": f"http://127.0.0.1:{helper.port}/hook"}
    try:
        pair = start_pair(config, log_dir, _echo_seen(echo), name="fields", env=env)
        yield pair
        pair.stop()
    finally:
        echo.stop()
        helper.shutdown()
        helper.server_close()


SENT = {"item": "book", "userId": "evil", "amount": 5, "email": "a@b.c", "password": "pw"}


@pytest.mark.parametrize(
    ("name", "method", "path", "who", "body"),
    [
        ("body-user", "POST", "/fields/body", USER, SENT),
        ("body-admin", "POST", "/fields/body", ADMIN, SENT),
        ("body-not-json", "POST", "/fields/body", USER, b"{nope"),
        ("resize-shrinks", "POST", "/fields/resize", USER, {"blob": "x" * 5000, "k": 1}),
        ("resize-grows", "POST", "/fields/resize", USER, {"k": 1}),
        ("resp", "GET", "/fields/resp?email=plain&x=1", USER, b""),
        ("open", "POST", "/fields/open", USER, {"a": [1, 2, {"b": None}]}),
        ("open-no-token", "POST", "/fields/open", {}, {"a": 1}),
        ("hooked", "POST", "/fields/hooked", USER, {"k": 1}),
        ("unrouted", "GET", "/fields/none", USER, b""),
    ],
)
def test_field_rules_alike(fields: Pair, name, method, path, who, body) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    _same(fields, name, method, path, {**who, **JSON}, data)


def test_a_body_plan_on_an_empty_body_is_a_400_over_http(fields: Pair) -> None:
    """Without a body, args.params is the query: gRPC forces it there, HTTP cannot change a
    query and denies 400 saying so (the example's `patch-no-body` case, on a POST)."""
    headers = {**USER, **JSON}
    grpc = fields.send("grpc", "POST", "/fields/body", headers, "empty-grpc")
    assert grpc.status_code == 200
    assert fields.seen("empty-grpc")[0]["query"] == {"userId": "u1"}
    http = fields.send("http", "POST", "/fields/body", headers, "empty-http")
    assert http.status_code == 400 and "query" in http.json()["error"]
    assert fields.seen("empty-http") == []


# --- response rules: test_envoy_response.py's config and upstream --------------------------


@pytest.fixture(scope="module")
def resp(log_dir: Path) -> Iterator[Pair]:
    upstream = Upstream()

    def seen(rid: str) -> list[dict[str, Any]]:
        with upstream.lock:
            headers = upstream.seen.get(rid)
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        got = {"method": "-", "path": "-", "query": {}, "headers": headers, "body": ""}
        return [got] if headers else []

    config = log_dir / "resp-differential.yaml"
    config.write_text(RESPONSE_CONFIG % {"port": upstream.port})
    try:
        pair = start_pair(config, log_dir, seen, name="resp")
        yield pair
        pair.stop()
    finally:
        upstream.shutdown()
        upstream.server_close()


@pytest.mark.parametrize(
    ("name", "method", "path", "who", "extra"),
    [
        ("doc", "GET", "/doc", USER, {}),
        ("doc-range", "GET", "/doc", USER, {"range": "bytes=0-20"}),
        ("doc-head", "HEAD", "/doc", USER, {}),
        ("partial", "GET", "/partial", USER, {}),
        ("list", "GET", "/list", USER, {}),
        ("admins-denied", "GET", "/admins", USER, {}),
        ("admins", "GET", "/admins", ADMIN, {}),
        ("no-token", "GET", "/doc", {}, {}),
    ],
)
def test_response_rules_alike(resp: Pair, name, method, path, who, extra) -> None:
    view = _same(resp, name, method, path, {**who, **extra})
    assert "TOPSECRET" not in view["body"]


# --- errors, a datastore error, a reload ---------------------------------------------------

DATASTORE_ERROR = """
databases:
  main: {type: sqlite, path: "${AUTHZ_DATA_DIR}/app.db"}
"""
BROKEN_QUERY = """
      broken-query:
        method: GET
        path: /broken
        rule: {rule: query, db: main, col: no_such_table, find: {id: args.auth.id}}
"""


@pytest.fixture(scope="module")
def errors(log_dir: Path) -> Iterator[tuple[Pair, Path]]:
    echo = start_echo()
    service = f"  t:\n    url: http://127.0.0.1:{echo.port}\n    endpoints:"
    text = ERRORS_CONFIG.replace("  t:\n    endpoints:", service)
    config = log_dir / "errors-differential.yaml"
    config.write_text(text.replace("services:\n", DATASTORE_ERROR + "services:\n") + BROKEN_QUERY)
    try:
        pair = start_pair(
            config, log_dir, _echo_seen(echo), name="errors", raising=True,
            extra_args=("--watch", "0.1s"),
        )  # fmt: skip
        yield pair, config
        pair.stop()
    finally:
        echo.stop()


@pytest.mark.parametrize(
    ("name", "path", "who"),
    [
        ("ok", "/ok", USER),
        ("ok-no-token", "/ok", {}),
        ("date-overflow", "/dates/0001-01-01T23:00:00+05:00", USER),
        ("date", "/dates/2024-01-01", USER),
        ("unrouted", "/nowhere", USER),
    ],
)
def test_errors_config_alike(errors: tuple[Pair, Path], name, path, who) -> None:
    _same(errors[0], name, "GET", path, who)


@pytest.mark.parametrize("path", ["/boom", "/boom/or", "/broken"])
def test_a_5xx_decision_is_a_denial_on_both_transports(
    errors: tuple[Pair, Path], path: str
) -> None:
    pair = errors[0]
    rid = f"5xx{path.replace('/', '-')}"
    grpc = pair.send("grpc", "GET", path, USER, rid + "-grpc")
    http = pair.send("http", "GET", path, USER, rid + "-http")
    assert grpc.status_code in (500, 503), grpc.text
    assert set(grpc.json()) == {"error", "requestId"}
    assert RAISE_MARKER not in grpc.text and "no_such_table" not in grpc.text
    # Envoy's ext_authz over HTTP: a 5xx from authz is a failed Check -> status_on_error
    assert (http.status_code, http.content) == (503, b"")
    assert pair.seen(rid + "-grpc") == pair.seen(rid + "-http") == []


def test_a_reload_reaches_both_transports(errors: tuple[Pair, Path]) -> None:
    pair, config = errors
    before = config.read_text()
    denied = before.replace("rule: {rule: authenticated}", "rule: {rule: deny}")
    assert denied != before
    tmp = config.with_suffix(".new")
    tmp.write_text(denied)
    tmp.replace(config)  # atomically, as test_envoy_reload.py does
    try:
        deadline = time.monotonic() + 15
        while pair.send("http", "GET", "/ok", USER, "reload-wait").status_code != 403:
            assert time.monotonic() < deadline, "the reload did not reach the HTTP transport"
            time.sleep(0.1)
        view = _same(pair, "after-reload", "GET", "/ok", USER)
        assert view["status"] == 403
    finally:
        tmp.write_text(before)
        tmp.replace(config)
