"""The HTTP decoder gives the Request the gRPC decoder gives for the same client request."""

from __future__ import annotations

import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from authz.envoy.decode import from_message
from authz.envoy.http.decode import decode
from authz.errors import RequestError


def _grpc(method: str, target: str, headers: dict[str, str], body: bytes = b""):  # type: ignore[no-untyped-def]
    msg = CheckRequest()
    http = msg.attributes.request.http
    http.method, http.path, http.raw_body = method, target, body
    http.headers.update(headers)
    return from_message(msg)


def test_the_same_request_as_grpc() -> None:
    client = {"authorization": "Bearer t", "x-request-id": "r1", "x-forwarded-proto": "http",
              "content-type": "application/json", "x-envoy-auth-partial-body": "false"}  # fmt: skip
    grpc = _grpc("POST", "/v1/a?x=1", {
        **client, ":authority": "api", ":method": "POST", ":path": "/v1/a?x=1",
        ":scheme": "http", "content-length": "2",
    }, b"{}")  # fmt: skip
    # as Envoy sends it over HTTP: host, its own content-length and client headers
    sent = {**client, "host": "api", "content-length": "2", "x-authz-content-length": "2",
            "x-envoy-internal": "true", "x-envoy-expected-rq-timeout-ms": "500"}  # fmt: skip
    http = decode("POST", "/v1/a?x=1", sent, b"{}", "")
    assert (http.method, http.path, http.query_string, http.body) == ("POST", "/v1/a", "x=1", b"{}")
    assert dict(http.headers) == dict(grpc.headers)
    assert http.request_id == grpc.request_id == "r1"
    assert http.body_partial is grpc.body_partial is False
    assert http.context == {}


def test_the_client_content_length_only_from_envoy() -> None:
    req = decode("GET", "/", {"content-length": "0", "host": "h"}, b"", "")
    assert "content-length" not in req.headers  # Envoy's own length is not the client's
    req = decode("POST", "/", {"content-length": "0", "x-authz-content-length": "9"}, b"", "")
    assert req.headers["content-length"] == "9"


def test_partial_body() -> None:
    assert decode("POST", "/", {"x-envoy-auth-partial-body": "true"}, b"x", "").body_partial


@pytest.mark.parametrize(
    "method,target,prefix",
    [
        ("GET", "http://evil/v1/a", ""),  # absolute-form
        ("GET", "*", ""),  # OPTIONS * form
        ("GET", "evil:443", ""),  # authority-form
        ("CONNECT", "/v1/a", ""),
        ("GET", "/v1/a", "/check"),  # prefix missing
        ("GET", "/checkv1/a", "/check"),  # prefix not followed by '/'
    ],
)
def test_requests_no_envoy_route_sends_are_refused(method: str, target: str, prefix: str) -> None:
    with pytest.raises(RequestError):
        decode(method, target, {}, b"", prefix)


def test_path_prefix_is_removed() -> None:
    req = decode("GET", "/check/v1/a?b=1", {}, b"", "/check")
    assert (req.path, req.query_string, req.headers[":path"]) == ("/v1/a", "b=1", "/v1/a?b=1")


@pytest.mark.parametrize(
    ("method", "target", "prefix", "reason"),
    [
        ("CONNECT", "/v1/a", "", "CONNECT is not authorized over the HTTP transport"),
        ("GET", "/v1/a", "/check", "the request path does not start with the Check path prefix"),
        ("GET", "*", "", "the request path must start with '/'"),
        ("GET", "/check", "/check", "the request path must start with '/'"),
    ],
)
def test_each_refusal_says_why(method: str, target: str, prefix: str, reason: str) -> None:
    with pytest.raises(RequestError) as e:
        decode(method, target, {}, b"", prefix)
    assert str(e.value) == reason


def test_only_what_envoy_sent_is_restored() -> None:
    req = decode("OPTIONS", "/v1/a", {"x-request-id": "r2"}, b"", "")
    assert dict(req.headers) == {":method": "OPTIONS", ":path": "/v1/a", "x-request-id": "r2"}
    assert req.body_partial is False and req.request_id == "r2"
    plain = decode("GET", "/", {"x-envoy-auth-partial-body": "yes"}, b"", "")
    assert plain.body_partial is False and plain.request_id == ""
