"""The debug service authz.v1.Debug/Explain: in-process gRPC server with reflection, called
through a Python channel and through the real grpcurl (reflection only, no proto files)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from grpc_reflection.v1alpha import reflection

from authz.authorizer import Authorizer
from authz.config.load import load_config_text
from authz.debug import SERVICE, DebugServicer, ExplainResponse
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
project: t
auth:
  secrets: [{kid: main, alg: HS256, secret: debug-test-secret-0123456789abcdef012, primary: true}]
services:
  s:
    endpoints:
      open: {method: GET, path: /open, rule: {rule: allow}}
      items:
        method: GET
        path: /items/{id}
        rule:
          rule: or
          clauses:
            - {rule: match, type: string, eval: "==", f1: args.pathParams.id, f2: "1"}
            - {rule: match, type: string, eval: "==", f1: args.headers.x-k, f2: "yes", error: nope}
"""


AUTHORIZER = Authorizer(load_config_text(CONFIG))
TOKEN = AUTHORIZER.runtime.identity.mint({"id": "u1"}, 3600)


@pytest.fixture
async def server() -> AsyncIterator[int]:
    authorizer = AUTHORIZER
    srv = grpc.aio.server()
    name = DebugServicer(lambda: authorizer).add_to_server(srv)
    reflection.enable_server_reflection((name, reflection.SERVICE_NAME), srv)
    port = free_port()
    assert srv.add_insecure_port(f"127.0.0.1:{port}") == port
    await srv.start()
    try:
        yield port
    finally:
        await srv.stop(0)


def check_request(path: str, headers: dict[str, str] | None = None) -> CheckRequest:
    req = CheckRequest()
    http = req.attributes.request.http
    http.method, http.path, http.id = "GET", path, "req-1"
    auth = {"authorization": f"Bearer {TOKEN}"}
    http.headers.update({"x-request-id": "rid-1", **auth, **(headers or {})})
    req.attributes.context_extensions.update({"service": "s", "endpoint": "items"})
    return req


async def call(port: int, req: CheckRequest) -> ExplainResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        explain = channel.unary_unary(
            f"/{SERVICE}/Explain",
            request_serializer=CheckRequest.SerializeToString,
            response_deserializer=ExplainResponse.FromString,
        )
        return await asyncio.wait_for(explain(req), 10)


async def test_explain_denied_with_trace(server: int) -> None:
    out = await call(server, check_request("/items/2", {"x-k": "no"}))
    d = out.decision
    assert (d.allowed, d.status, d.service, d.endpoint) == (False, 403, "s", "items")
    assert d.error_message == "nope" and d.request_id == "rid-1"
    assert [(t.rule, t.result, t.depth) for t in out.trace] == [
        ("match", "fail", 1),
        ("match", "fail", 1),
        ("or", "fail", 0),
    ]
    assert out.trace[0].detail == "'2' == '1' is false"
    assert "FAIL  services.s.endpoints.items.rule: or" in out.text
    assert out.config_version == AUTHORIZER.version


async def test_explain_allowed_and_malformed(server: int) -> None:
    out = await call(server, check_request("/items/1"))
    assert out.decision.allowed and out.decision.status == 200
    assert [t.result for t in out.trace] == ["pass", "pass"]
    bad = check_request("relative")
    out = await call(server, bad)
    assert (out.decision.allowed, out.decision.status) == (False, 400)


async def test_grpcurl_through_reflection(server: int) -> None:
    grpcurl = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which(
        "grpcurl"
    )
    if grpcurl is None:
        pytest.skip("grpcurl is not installed (dev extras)")
    body = {"attributes": {
        "request": {"http": {"method": "GET", "path": "/items/7",
                             "headers": {"x-k": "yes", "authorization": f"Bearer {TOKEN}"}}},
        "contextExtensions": {"service": "s", "endpoint": "items"}}}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        grpcurl, "-plaintext", "-d", "@", f"127.0.0.1:{server}", f"{SERVICE}/Explain",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(json.dumps(body).encode()), 30)
    assert proc.returncode == 0, stderr.decode()
    out = json.loads(stdout)
    assert out["decision"]["allowed"] is True
    assert out["decision"]["endpoint"] == "items"
    assert [t["result"] for t in out["trace"]] == ["fail", "pass", "pass"]
    listed = await asyncio.create_subprocess_exec(
        grpcurl, "-plaintext", f"127.0.0.1:{server}", "describe", SERVICE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    text, _ = await asyncio.wait_for(listed.communicate(), 30)
    assert b".envoy.service.auth.v3.CheckRequest" in text and b".authz.v1.ExplainResponse" in text


def test_generated_descriptor_matches_the_proto() -> None:
    pytest.importorskip("grpc_tools")
    result = subprocess.run(
        [sys.executable, str(ROOT / "protos" / "generate.py"), "--check"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
