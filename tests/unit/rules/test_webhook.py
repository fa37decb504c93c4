"""The `webhook` rule against a real local HTTP server: statuses, deadline, redirects,
oversized and non-JSON replies, and exactly what the webhook receives (body and token)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import httpx
import pytest

from authz.config.schema import WebhookRule
from authz.errors import DependencyError
from authz.rules.base import Context
from authz.rules.compiler import compile_or_raise, compile_rule
from authz.rules.compiling import CompileContext
from authz.rules.webhook import MAX_REPLY
from tests.helpers import free_port

USER_TOKEN = "user.jwt.token"


class _Handler(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        body = self.rfile.read(length)
        self.seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
        route = getattr(self, "route_" + self.path.strip("/").replace("-", "_"), None)
        if route is None:
            self._send(404, b"")
            return
        route()

    def _send(self, status, body, ctype="application/json", length=True):
        self.send_response(status)
        self.send_header("content-type", ctype)
        if length:
            self.send_header("content-length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client gave up (deadline tests)
            self.wfile.write(body)

    def route_ok(self):
        self._send(200, b'{"allowed": true, "n": 3}')

    def route_empty(self):
        self._send(200, b"")

    def route_deny(self):
        self._send(403, b'{"error": "no"}')

    def route_error(self):
        self._send(500, b"oops")

    def route_slow(self):
        time.sleep(1.0)
        self._send(200, b"{}")

    def route_redirect(self):
        self.send_response(302)
        self.send_header("location", "/ok")
        self.send_header("content-length", "0")
        self.end_headers()

    def route_huge(self):
        self._send(200, b'"' + b"x" * (MAX_REPLY + 10) + b'"')

    def route_huge_unannounced(self):
        self.close_connection = True
        self._send(200, b'"' + b"x" * (MAX_REPLY + 10) + b'"', length=False)

    def route_per_user(self):  # decides on the forwarded token, as a real webhook would
        if self.headers.get("authorization") == "Bearer token-of-u1":
            self._send(200, b'{"who": "u1"}')
        else:
            self._send(403, b"{}")

    def route_text(self):
        self._send(200, b"<html>not json</html>", ctype="text/html")


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class FakeIdentity:
    def __init__(self):
        self.minted: list[tuple[dict, float]] = []

    def mint_service(self, claims, ttl):
        self.minted.append((claims, ttl))
        return "minted." + json.dumps(claims, sort_keys=True)

    def service_token(self, audience):
        return "service.token"


@pytest.fixture
async def runtime():
    http = httpx.AsyncClient(follow_redirects=False, trust_env=False)
    yield SimpleNamespace(http=http, identity=FakeIdentity(), datastores={}, metrics=None)
    await http.aclose()


@pytest.fixture(autouse=True)
def _clear_seen():
    _Handler.seen.clear()


def _rule(raw):
    # A generous default deadline: the local test server may be slow on a loaded CI machine
    # (the default 100 ms once failed there); the timeout test sets its own.
    raw = {"rule": "webhook", "timeout": "5s", **raw}
    rule, _ = compile_or_raise(WebhookRule.model_validate(raw), "rule")
    return rule


def _ctx(runtime, **args):
    base = {"auth": {"id": "u1"}, "token": USER_TOKEN, "params": {"a": 1}, "method": "POST"}
    return Context({**base, **args}, runtime)


# --- load time ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "what"),
    [
        ("ftp://host/x", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("http:///path", "no host"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[fe80::1]/x", "link-local"),
        ("http://2852039166/latest", "link-local"),  # 169.254.169.254 as one number
        ("http://[::ffff:169.254.169.254]/x", "link-local"),
        ("http://user:pw@host/x", "credentials"),
        ("http://host:99999/x", "invalid URL"),
        ("args.params.url", "http or https"),
    ],
)
def test_url_checked_at_load(url, what):
    cc = CompileContext()
    compile_rule(WebhookRule.model_validate({"rule": "webhook", "url": url}), cc, "rule")
    assert any(e.startswith("rule.url:") and what in e for e in cc.errors), cc.errors


def test_store_checked_at_load():
    cc = CompileContext()
    model = WebhookRule.model_validate({"rule": "webhook", "url": "http://h/", "store": "x"})
    compile_rule(model, cc, "rule")
    assert any(e.startswith("rule.store:") for e in cc.errors)


# --- replies -----------------------------------------------------------------------------


async def test_2xx_passes_and_stores_the_reply(server, runtime):
    ctx = _ctx(runtime)
    assert await _rule({"url": server + "/ok", "store": "args.hook"}).evaluate(ctx) is None
    assert ctx.args["hook"] == {"allowed": True, "n": 3}


async def test_empty_reply_stores_null(server, runtime):
    ctx = _ctx(runtime)
    assert await _rule({"url": server + "/empty"}).evaluate(ctx) is None
    assert ctx.args["result"] is None


@pytest.mark.parametrize("path", ["/deny", "/error", "/missing"])
async def test_other_statuses_fail(server, runtime, path):
    ctx = _ctx(runtime)
    failure = await _rule({"url": server + path, "error": "not allowed"}).evaluate(ctx)
    assert failure is not None and not failure.error and failure.message == "not allowed"
    assert "result" not in ctx.args


@pytest.mark.parametrize(
    ("path", "what"),
    [
        ("/redirect", "redirect 302"),
        ("/huge", "too large"),
        ("/huge-unannounced", "too large"),
        ("/text", "not JSON"),
    ],
)
async def test_bad_replies_are_dependency_errors(server, runtime, path, what):
    with pytest.raises(DependencyError, match=what):
        await _rule({"url": server + path}).evaluate(_ctx(runtime))
    if path == "/redirect":  # the redirect was not followed
        assert [s["path"] for s in _Handler.seen] == ["/redirect"]


async def test_deadline(server, runtime):
    start = time.monotonic()
    with pytest.raises(DependencyError, match="timed out"):
        await _rule({"url": server + "/slow", "timeout": "150ms"}).evaluate(_ctx(runtime))
    assert time.monotonic() - start < 0.8


async def test_connection_refused(runtime):
    url = f"http://127.0.0.1:{free_port()}/x"
    with pytest.raises(DependencyError):
        await _rule({"url": url}).evaluate(_ctx(runtime))


# --- what the webhook receives -----------------------------------------------------------


async def test_default_body_is_args_without_the_token(server, runtime):
    assert await _rule({"url": server + "/ok"}).evaluate(_ctx(runtime)) is None
    (seen,) = _Handler.seen
    assert json.loads(seen["body"]) == {"auth": {"id": "u1"}, "params": {"a": 1}, "method": "POST"}
    assert seen["headers"]["authorization"] == "Bearer service.token"
    assert seen["headers"]["content-type"] == "application/json"
    assert USER_TOKEN.encode() not in seen["body"]
    assert all(USER_TOKEN not in v for v in seen["headers"].values())


async def test_template_and_claims_are_built_as_data(server, runtime):
    rule = _rule(
        {
            "url": server + "/ok",
            "requestTemplate": {"user": "args.auth.id", "x": ["args.params.v", 2], "k": "lit"},
            "claims": {"sub": "args.auth.id", "role": "args.params.v"},
        }
    )
    ctx = _ctx(runtime, params={"v": "args.auth.id"})
    assert await rule.evaluate(ctx) is None
    (seen,) = _Handler.seen
    assert json.loads(seen["body"]) == {"user": "u1", "x": ["args.auth.id", 2], "k": "lit"}
    assert runtime.identity.minted == [({"sub": "u1", "role": "args.auth.id"}, 60.0)]
    assert seen["headers"]["authorization"].startswith("Bearer minted.")
    # a request value is only ever a claim's value, never a claim's name
    ctx = _ctx(runtime, params={"v": {"admin": True, "sub": "root"}})
    assert await rule.evaluate(ctx) is None
    claims, _ = runtime.identity.minted[-1]
    assert set(claims) == {"sub", "role"} and claims["sub"] == "u1"


async def test_forward_token(server, runtime):
    assert (
        await _rule({"url": server + "/ok", "forwardToken": True}).evaluate(_ctx(runtime)) is None
    )
    (seen,) = _Handler.seen
    assert seen["headers"]["authorization"] == f"Bearer {USER_TOKEN}"
    assert seen["headers"]["x-sc-token"] == "Bearer service.token"


async def test_unresolved_template_reference_is_an_error(server, runtime):
    rule = _rule({"url": server + "/ok", "requestTemplate": {"x": "args.params.nope"}})
    failure = await rule.evaluate(_ctx(runtime))
    assert failure is not None and failure.error
    assert _Handler.seen == []


async def test_cache(server, runtime):
    rule = _rule({"url": server + "/ok", "cache": {"ttl": "30s"}})
    for _ in range(3):
        assert await rule.evaluate(_ctx(runtime)) is None
    assert len(_Handler.seen) == 1
    assert await rule.evaluate(_ctx(runtime, params={"a": 2})) is None
    assert len(_Handler.seen) == 2


@pytest.mark.parametrize("order", [("token-of-u1", "token-of-u2"), ("token-of-u2", "token-of-u1")])
async def test_cache_key_covers_the_forwarded_token(server, runtime, order):
    """The webhook decides on the forwarded token: one user's verdict is never another's."""
    rule = _rule({"url": server + "/per-user", "forwardToken": True, "cache": {"ttl": "30s"}})
    for user_token in (*order, *order):
        failure = await rule.evaluate(_ctx(runtime, token=user_token))
        assert (failure is None) == (user_token == "token-of-u1"), user_token
    assert len(_Handler.seen) == 2  # each user's answer is cached, for that user


async def test_default_body_carries_no_credentials(server, runtime):
    headers = {
        "authorization": "Bearer " + USER_TOKEN,
        "cookie": "session=abc",
        "proxy-authorization": "Basic eDp5",
        "x-sc-token": "Bearer service.token",
        "accept": "application/json",
    }
    assert await _rule({"url": server + "/ok"}).evaluate(_ctx(runtime, headers=headers)) is None
    (seen,) = _Handler.seen
    assert json.loads(seen["body"])["headers"] == {"accept": "application/json"}


def test_default_body_leaves_out_the_configured_token_header():
    from authz.config.load import load_config_text

    config = load_config_text(
        "project: p\n"
        "auth: {token: {header: x-api-token, scheme: null}, serviceToken: {enabled: false,"
        " header: x-internal}}\n"
        "services: {}\n"
    )
    cc = CompileContext(config=config)
    rule = compile_rule(
        WebhookRule.model_validate({"rule": "webhook", "url": "http://h/"}), cc, "r"
    )
    args = {"headers": {"x-api-token": "t", "x-internal": "s", "x-other": "o"}, "token": "t"}
    assert rule.body(args) == {"headers": {"x-other": "o"}}


async def test_a_secret_in_the_url_stays_out_of_labels_and_reasons(runtime):
    from authz.observability.metrics import Metrics

    runtime.metrics = Metrics()
    url = f"http://127.0.0.1:{free_port()}/hook?api_key=SECRET-IN-URL#frag"
    with pytest.raises(DependencyError) as e:
        await _rule({"url": url}).evaluate(_ctx(runtime))
    assert "SECRET-IN-URL" not in str(e.value) and "/hook" in str(e.value)
    text = runtime.metrics.render().decode()
    assert "SECRET-IN-URL" not in text
    assert 'url="http://127.0.0.1:' in text
