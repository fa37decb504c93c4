"""CheckRequests that Envoy would never send, straight to the gRPC port (anything that can
reach it can send them): each gets a CheckResponse denial, never a gRPC error, quickly.
tests/unit/test_server.py has the basic shapes; these are
the ones beyond it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from tests.adversarial.support import claims, good_header, hs256
from tests.integration.harness import EXAMPLE_CONFIG, AuthzServer, start_authz

pytestmark = pytest.mark.integration

CHECK = "/envoy.service.auth.v3.Authorization/Check"


@pytest.fixture(scope="module")
def server(log_dir: Path) -> Iterator[AuthzServer]:
    s = start_authz(EXAMPLE_CONFIG, log_dir)
    yield s
    s.process.stop()


@pytest.fixture(scope="module")
def channel(server: AuthzServer) -> Iterator[grpc.Channel]:
    options = [("grpc.max_send_message_length", 8 << 20)]
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=options) as ch:
        yield ch


def check(channel: grpc.Channel, data: bytes) -> CheckResponse:
    """A gRPC error raises grpc.RpcError here and fails the test."""
    return CheckResponse.FromString(channel.unary_unary(CHECK)(data, timeout=10))


def message(
    method: str = "GET",
    path: str = "/v1/orders",
    headers: dict[str, str] | None = None,
    context: dict[str, str] | None = None,
    raw_body: bytes = b"",
) -> CheckRequest:
    msg = CheckRequest()
    http = msg.attributes.request.http
    http.method, http.path = method, path
    http.headers.update(headers or {})
    http.raw_body = raw_body
    msg.attributes.context_extensions.update(context or {})
    return msg


def _field(number: int, wire: int, payload: bytes = b"") -> bytes:
    return _varint(number << 3 | wire) + payload


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def _len(number: int, data: bytes) -> bytes:
    return _field(number, 2, _varint(len(data)) + data)


def _with_header(key: bytes, value: bytes) -> bytes:
    """CheckRequest{attributes{request{http{method GET, path /v1/orders, headers{key: value}}}}}
    built by hand so that the strings can hold bytes protobuf would refuse to encode."""
    entry = _len(1, key) + _len(2, value)
    http = _len(5, b"GET") + _len(8, b"/v1/orders") + _len(3, entry)
    return _len(1, _len(2, _len(2, http)))


TOKEN = hs256(good_header(), claims())
BEARER = {"authorization": f"Bearer {TOKEN}"}
JSON_BODY = {**BEARER, "content-type": "application/json"}
CREATE = {"service": "orders", "endpoint": "create"}

CASES: dict[str, bytes] = {
    "attributes-without-request": _len(1, b""),
    "request-without-http": _len(1, _len(2, b"")),
    "attributes-wrong-wire-type": _field(1, 0, _varint(5)),
    "truncated": message(headers=BEARER).SerializeToString()[:-7],
    "nested-unknown-groups": b"{" * 5000 + b"|" * 5000,
    "unknown-fields-only": _len(15, b"x" * 100) + _field(16, 0, _varint(1)),
    "header-name-invalid-utf8": _with_header(b"x-\xff\xfe", b"v"),
    "header-value-invalid-utf8": _with_header(b"authorization", b"Bearer \xff" + TOKEN.encode()),
    "header-value-cesu-surrogate": _with_header(b"x-a", b"\xed\xa0\x80"),
    "body-string-invalid-utf8": _len(
        1, _len(2, _len(2, _len(5, b"POST") + _len(8, b"/v1/orders") + _len(9, b"{\xff}")))
    ),
    "20k-headers": message(headers={f"x-h{i}": "v" for i in range(20_000)}).SerializeToString(),
    "3mib-header": message(headers={"x-big": "a" * (3 << 20)}).SerializeToString(),
    "3mib-token": message(
        headers={"authorization": "Bearer " + "a" * (3 << 20)}
    ).SerializeToString(),
    "10k-context-extensions": message(
        context={f"k{i}": "v" for i in range(10_000)}
    ).SerializeToString(),
    "unknown-service": message(context={"service": "nope", "endpoint": "x"}).SerializeToString(),
    "raw-body-not-utf8": message(
        "POST", headers=JSON_BODY, context=CREATE, raw_body=b"\xff\xfe{"
    ).SerializeToString(),
    "raw-body-deep": message(
        "POST", headers=JSON_BODY, context=CREATE, raw_body=b"[" * 200_000
    ).SerializeToString(),
    "method-with-crlf": message("GET\r\nx-sc-token: a", "/v1/health").SerializeToString(),
    "path-asterisk": message("OPTIONS", "*").SerializeToString(),
    "path-query-only": message(path="?a=b").SerializeToString(),
    "path-nul": message(path="/v1/orders\x00", headers=BEARER).SerializeToString(),
}
EXPECT = {  # the exact status where there is one right answer
    "header-name-invalid-utf8": 400,
    "header-value-invalid-utf8": 400,
    "header-value-cesu-surrogate": 400,
    "body-string-invalid-utf8": 400,
    "raw-body-not-utf8": 400,
    "raw-body-deep": 400,
    "3mib-token": 401,
    "unknown-service": 403,
}


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_check_request_is_a_quick_denial(channel: grpc.Channel, name: str) -> None:
    start = time.monotonic()
    resp = check(channel, CASES[name])
    elapsed = time.monotonic() - start
    assert resp.status.code != 0, f"{name} was allowed"
    assert resp.WhichOneof("http_response") == "denied_response", resp
    status = resp.denied_response.status.code
    assert status == EXPECT.get(name, status) and status in (400, 401, 403), (name, status)
    assert elapsed < 3.0, f"{name}: {elapsed:.2f}s"


def test_server_still_answers_correctly_afterwards(
    server: AuthzServer, channel: grpc.Channel
) -> None:
    ok = check(channel, message(headers=BEARER).SerializeToString())
    assert ok.status.code == 0 and ok.WhichOneof("http_response") == "ok_response"
    denied = check(channel, message().SerializeToString())
    assert denied.denied_response.status.code == 401
    assert server.process.alive()
    assert "Traceback" not in server.process.log(tail=100_000)
