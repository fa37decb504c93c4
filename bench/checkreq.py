"""The CheckRequest Envoy would send for the bench's request, and its gRPC framing."""

from __future__ import annotations

import struct

from envoy.service.auth.v3 import external_auth_pb2 as pb

CHECK_PATH = "/envoy.service.auth.v3.Authorization/Check"
GRPC_HEADERS = {"content-type": "application/grpc", "te": "trailers"}


def check_request(
    path: str, token: str | None, context: dict[str, str], host: str = "127.0.0.1"
) -> pb.CheckRequest:
    """What Envoy's ext_authz sends for `GET path` (the headers wrk sends, plus Envoy's)."""
    headers = {
        ":authority": host,
        ":method": "GET",
        ":path": path,
        ":scheme": "http",
        "x-forwarded-proto": "http",
        "x-request-id": "5b3c6f1e-0000-4000-8000-000000000001",
    }
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = pb.CheckRequest()
    http = req.attributes.request.http
    http.id = "1"
    http.method = "GET"
    http.path = path
    http.host = host
    http.scheme = "http"
    http.protocol = "HTTP/1.1"
    http.headers.update(headers)
    req.attributes.context_extensions.update(context)
    addr = req.attributes.source.address.socket_address
    addr.address, addr.port_value = "127.0.0.1", 40000
    dest = req.attributes.destination.address.socket_address
    dest.address, dest.port_value = "127.0.0.1", 10000
    return req


def grpc_frame(message: bytes) -> bytes:
    """A length-prefixed gRPC message: flag 0 (not compressed), 4-byte big-endian length."""
    return struct.pack(">BI", 0, len(message)) + message
