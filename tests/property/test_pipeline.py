"""Random requests through the whole pipeline: `Authorizer.check` never raises and never hits
an internal error (500), whatever the body, headers, path or token; random CheckRequest bytes
into the server's Check handler always give a CheckResponse; only rules that can allow do."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.authorizer import Authorizer
from authz.config.load import load_config
from authz.observability.decisionlog import DecisionLog
from authz.request import Request
from authz.server import AuthzServer, ServeOptions
from tests.helpers import examples
from tests.integration.harness import AES_KEY, EXAMPLE_CONFIG, SECRET

ENV = {"AUTHZ_SECRET": SECRET, "AUTHZ_AES_KEY": AES_KEY}
AUTHORIZER = Authorizer(load_config(EXAMPLE_CONFIG, ENV))
NEVER_ALLOWED = {("orders", "export"), ("orders", "refund")}  # deny rule, no rule
PATHS = ["/v1/health", "/v1/orders", "/v1/orders/o-1", "/v1/admin/stats", "/v1/legacy/export",
         "/v1/orders/o-1/refund", "/v1/reports/2024-01-01", "/v1/users",
         "/v1/users/lookup"]  # fmt: skip
SETTINGS = settings(max_examples=examples(300))


def _token(data: dict[str, Any], mangle: int) -> str:
    good = jwt.encode({"exp": int(time.time()) + 600, **data}, SECRET, "HS256",
                      headers={"kid": "main"})  # fmt: skip
    if mangle == 0:
        return good
    i = mangle % len(good)
    return good[:i] + "A" + good[i + 1 :]


json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=10,
)
claims = st.fixed_dictionaries(
    {
        "id": st.one_of(st.text(max_size=5), st.integers()),
        "role": st.sampled_from(["admin", "user", "suspended", 1, None]),
    },
    optional={"orders": st.lists(st.sampled_from(["o-1", "o-2", 3]), max_size=3)},
)
tokens = st.one_of(
    st.builds(_token, claims, st.integers(0, 300)),
    st.text(max_size=40),
    st.just(""),
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: __import__("json").dumps(v).encode()),
    st.builds(lambda item, amount: __import__("json").dumps({"item": item, "amount": amount})
              .encode(), st.text(max_size=70), st.one_of(st.integers(), st.floats(), st.text())),
)  # fmt: skip
headers = st.dictionaries(
    st.sampled_from(
        ["x-a", "cookie", "content-type", "x-sc-token", "x-request-id", "authorization"]
    ),
    st.text(max_size=30),
    max_size=4,
)
paths = st.one_of(st.sampled_from(PATHS), st.text(max_size=30).map(lambda t: "/" + t))
contexts = st.one_of(
    st.just({}),
    st.fixed_dictionaries({"service": st.sampled_from(["orders", "users", "x"]),
                           "endpoint": st.sampled_from(["health", "get", "create", "export",
                                                        "refund", "admin", "update", "y"])}),
)  # fmt: skip


@SETTINGS
@given(
    method=st.sampled_from(["GET", "POST", "PATCH", "DELETE", "get", "X"]),
    path=paths,
    query=st.text(max_size=20),
    hdrs=headers,
    token=st.one_of(st.none(), tokens),
    body=bodies,
    context=contexts,
)
def test_check_never_raises_nor_errors(
    method: str, path: str, query: str, hdrs: dict[str, str], token: str | None, body: bytes,
    context: dict[str, str],
) -> None:  # fmt: skip
    if token is not None:
        hdrs["authorization"] = f"Bearer {token}"
    req = Request(method, path, query, hdrs, body, False, context, "rid")
    decision = asyncio.run(AUTHORIZER.check(req))
    assert decision.status != 500, (decision.reason, req)
    assert decision.allowed == (decision.status == 200)
    if decision.allowed:
        assert (decision.service, decision.endpoint) not in NEVER_ALLOWED
        if decision.endpoint == "admin":  # only a verified admin token
            claims = jwt.decode(token or "", SECRET, algorithms=["HS256"])
            assert claims["role"] == "admin"


def _server() -> AuthzServer:
    server = AuthzServer(ServeOptions(config=str(EXAMPLE_CONFIG)))
    server.authorizer = AUTHORIZER
    server.decisions = DecisionLog("off")
    return server


SERVER = _server()


def _request_bytes(method: str, path: str, hdrs: dict[str, str], context: dict[str, str]) -> bytes:
    msg = CheckRequest()
    http = msg.attributes.request.http
    http.method, http.path = method, path
    http.headers.update(hdrs)
    msg.attributes.context_extensions.update(context)
    return msg.SerializeToString()


structured = st.builds(
    _request_bytes, st.sampled_from(["GET", "POST", ""]), paths, headers, contexts
)


@SETTINGS
@given(
    data=st.one_of(
        st.binary(max_size=300),
        structured,
        st.tuples(structured, st.integers(0, 400), st.binary(max_size=4)).map(
            lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]
        ),
    )
)
def test_check_handler_always_answers_with_a_check_response(data: bytes) -> None:
    out = asyncio.run(SERVER.check(data, None))
    resp = CheckResponse.FromString(out)
    assert resp.WhichOneof("http_response") in ("ok_response", "denied_response")
    if resp.status.code == 0:
        assert resp.WhichOneof("http_response") == "ok_response"
        msg = CheckRequest.FromString(data)  # an allow came from a request that parses
        ctx = dict(msg.attributes.context_extensions)
        assert (ctx.get("service"), ctx.get("endpoint")) not in NEVER_ALLOWED
    else:
        assert resp.denied_response.status.code in (400, 401, 403), resp
