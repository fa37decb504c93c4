"""The response side through a real Envoy built from `authz envoy-config`: a response the plan
cannot apply to exactly (a byte range of it, an array where the rule names an object's key, the
size of a HEAD answer) never leaves as it came, and the plan is found where Envoy first
forwards it (a route that skips the request side).

The upstream is a helper server that behaves like a static file server: it honours `Range`
with a 206 and answers HEAD with the full body's content-length. authz runs with `--dry-run`:
every endpoint here has field rules, so every one keeps enforcing (dry-run would allow a denied
request without its masking).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from authz.authorizer import Authorizer
from authz.config.load import load_config
from authz.envoy.bootstrap import BootstrapOptions, render_bootstrap
from tests.helpers import free_port, port_open, wait_for
from tests.integration.harness import (
    READY_TIMEOUT,
    SECRET,
    Process,
    bearer,
    envoy_binary,
    start_authz,
    token,
)

pytestmark = pytest.mark.integration

DOC = json.dumps({"user": {"name": "ann", "secret": "TOPSECRET"}}).encode()
LIST = json.dumps([{"name": "ann", "secret": "TOPSECRET"}]).encode()
CONFIG = """
project: resp
auth: {secrets: [{kid: main, alg: HS256, secret: "${AUTHZ_SECRET}", primary: true}]}
services:
  files:
    url: http://127.0.0.1:%(port)d
    endpoints:
      doc:
        method: [GET, HEAD]
        path: /doc
        rule: {rule: remove, fields: [res.user.secret]}
      partial:
        method: GET
        path: /partial
        rule: {rule: remove, fields: [res.user.secret]}
      list:
        method: GET
        path: /list
        rule: {rule: remove, fields: [res.secret]}
      skip:
        method: GET
        path: /skip
        rule: {rule: remove, fields: [res.user.secret]}
      unplanned:
        method: GET
        path: /unplanned
        rule: {rule: remove, fields: [res.user.secret]}
      admins:
        method: GET
        path: /admins
        rule:
          rule: and
          clauses:
            - {rule: match, type: string, eval: "==", f1: args.auth.role, f2: admin}
            - {rule: remove, fields: [res.user.secret]}
"""
EXT_PROC_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"
EXT_AUTHZ_PER_ROUTE = (
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
)


class Upstream(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: dict[str, dict[str, str]] = {}  # request id -> headers received
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, name="upstream", daemon=True).start()

    @property
    def port(self) -> int:
        return self.server_address[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Upstream

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        with self.server.lock:
            self.server.seen[self.headers.get("x-request-id", "")] = dict(self.headers.items())
        body = LIST if self.path == "/list" else DOC
        wanted = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("range", ""))
        if self.path == "/partial":  # a range server that answers one even when not asked
            wanted = re.fullmatch(r"(\d+)-(\d+)", f"{DOC.index(b'TOPSECRET') - 1}-{len(DOC) - 4}")
        if wanted:
            start, end = int(wanted[1]), int(wanted[2])
            self.send_response(206)
            self.send_header("content-range", f"bytes {start}-{end}/{len(body)}")
            body = body[start : end + 1]
        else:
            self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("accept-ranges", "bytes")
        self.send_header("etag", f'"{hashlib.sha256(body).hexdigest()}"')  # a content hash
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        self.send_header("content-digest", f"sha-256=:{digest}:")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Stack:
    def __init__(self, log_dir: Path):
        self.upstream = Upstream()
        self.procs: list[Process] = []
        try:
            self._start(log_dir)
        except BaseException:
            self.stop()
            raise

    def _start(self, log_dir: Path) -> None:
        path = log_dir / "resp.yaml"
        path.write_text(CONFIG % {"port": self.upstream.port})
        authz = start_authz(path, log_dir, env={"AUTHZ_DRY_RUN": "1"})  # `serve --dry-run`
        self.procs.append(authz.process)
        self.port, admin = free_port(), free_port()
        authorizer = Authorizer(load_config(path, {"AUTHZ_SECRET": SECRET}))
        options = BootstrapOptions(
            authz=f"127.0.0.1:{authz.grpc_port}", listen=f"127.0.0.1:{self.port}",
            admin=f"127.0.0.1:{admin}",
        )  # fmt: skip
        bootstrap = _skip_request_side(yaml.safe_load(render_bootstrap(authorizer, options)))
        envoy_path = log_dir / "envoy.yaml"
        envoy_path.write_text(yaml.safe_dump(bootstrap))
        cmd = [envoy_binary(), "-c", str(envoy_path), "--disable-hot-restart", "--concurrency",
               "1", "--log-level", "warn"]  # fmt: skip
        envoy = Process("envoy", cmd, log_dir)
        self.procs.append(envoy)
        envoy.wait_http_ok(f"http://127.0.0.1:{admin}/ready")
        wait_for(lambda: port_open(self.port), READY_TIMEOUT, "envoy listener")

    def request(
        self, method: str, path: str, role: str = "user", **headers: str
    ) -> tuple[httpx.Response, dict]:
        rid = str(uuid.uuid4())
        hdrs = {"x-request-id": rid, **bearer(token({"id": "u1", "role": role})), **headers}
        resp = httpx.request(
            method, f"http://127.0.0.1:{self.port}{path}", headers=hdrs, timeout=10
        )
        with self.upstream.lock:
            return resp, self.upstream.seen.get(rid, {})

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.upstream.shutdown()
        self.upstream.server_close()


def _skip_request_side(bootstrap: dict[str, Any]) -> dict[str, Any]:
    """Two routes changed by hand. `skip` processes responses only (request_header_mode:
    SKIP), as an operator may configure a route whose rules are all on the response;
    `unplanned` has ext_authz disabled, so no plan ever reaches ext_proc there."""
    listener = bootstrap["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    by_name = {r.get("name"): r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]}
    per_filter = by_name["files.skip"]["typed_per_filter_config"]
    mode = {"request_header_mode": "SKIP", "response_header_mode": "SEND",
            "response_body_mode": "BUFFERED"}  # fmt: skip
    ext_proc = per_filter.setdefault("envoy.filters.http.ext_proc", {"@type": EXT_PROC_PER_ROUTE})
    ext_proc.setdefault("overrides", {})["processing_mode"] = mode
    per_filter = by_name["files.unplanned"]["typed_per_filter_config"]
    per_filter["envoy.filters.http.ext_authz"] = {"@type": EXT_AUTHZ_PER_ROUTE, "disabled": True}
    return bootstrap


@pytest.fixture(scope="module")
def stack(log_dir: Path) -> Iterator[Stack]:
    s = Stack(log_dir)
    yield s
    s.stop()


def test_a_range_request_gets_the_whole_masked_document(stack: Stack) -> None:
    start = DOC.index(b'"TOPSECRET"')
    rng = f"bytes={start}-{start + len(b'TOPSECRET') + 1}"
    resp, seen = stack.request("GET", "/doc", range=rng, **{"if-range": '"v1"'})
    assert "TOPSECRET" not in resp.text
    assert "range" not in seen and "if-range" not in seen  # the upstream answers the whole
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"user": {"name": "ann"}}


def test_a_partial_answer_is_replaced_by_a_502(stack: Stack) -> None:
    resp, _ = stack.request("GET", "/partial")
    assert "TOPSECRET" not in resp.text
    assert resp.status_code == 502
    assert resp.json()["error"] == "the upstream response is partial"


def test_a_top_level_array_is_not_passed_unmasked(stack: Stack) -> None:
    resp, _ = stack.request("GET", "/list")
    assert "TOPSECRET" not in resp.text
    assert resp.status_code == 502


def test_head_does_not_tell_the_unmasked_size(stack: Stack) -> None:
    resp, _ = stack.request("HEAD", "/doc")
    assert resp.status_code == 200
    assert resp.headers.get("content-length") != str(len(DOC))


def test_the_plan_is_applied_where_the_route_skips_the_request_side(stack: Stack) -> None:
    resp, seen = stack.request("GET", "/skip")
    assert seen  # the upstream was asked
    assert "TOPSECRET" not in resp.text
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"user": {"name": "ann"}}


def test_a_response_without_a_plan_on_a_route_that_needs_one_fails_closed(stack: Stack) -> None:
    resp, seen = stack.request("GET", "/unplanned")
    assert seen == {}  # ext_proc stops it at the request's headers
    assert "TOPSECRET" not in resp.text
    assert resp.status_code == 500, resp.text


def test_dry_run_does_not_switch_field_rules_off(stack: Stack) -> None:
    admin, _ = stack.request("GET", "/admins", role="admin")
    assert admin.status_code == 200 and admin.json() == {"user": {"name": "ann"}}
    user, seen = stack.request("GET", "/admins")  # denied: never the unmasked document
    assert "TOPSECRET" not in user.text
    assert user.status_code == 403 and seen == {}


def test_validators_and_digests_of_the_unmasked_body_do_not_leave(stack: Stack) -> None:
    etag = f'"{hashlib.sha256(DOC).hexdigest()}"'  # a guess at the unmasked document
    resp, seen = stack.request("GET", "/doc", **{"if-none-match": etag})
    assert "if-none-match" not in seen  # no 304 oracle for guesses
    assert resp.status_code == 200 and resp.json() == {"user": {"name": "ann"}}
    assert "etag" not in resp.headers and "content-digest" not in resp.headers
    head, _ = stack.request("HEAD", "/doc")
    assert "etag" not in head.headers and "content-digest" not in head.headers
