"""Envoy's HTTP authorization request -> the neutral Request the gRPC decoder builds.

Envoy builds one header map for both transports (duplicates merged with ','); over HTTP it
sends `:authority` as `host`, puts `:method` and `:path` in the request line, replaces
`content-length` with the length of the body it forwards and adds two headers of its own
client. This module undoes exactly that, so the rules read the same `args.headers` either way:
- `host` -> `:authority`; `:method`, `:path` (and `:scheme` from x-forwarded-proto) restored;
- the client's content-length comes from CONTENT_LENGTH_HEADER, which `authz envoy-config
  --transport http` has Envoy add (`%REQ(content-length)%`) and never forward from a client;
- `x-envoy-internal` and `x-envoy-expected-rq-timeout-ms` (Envoy's async client) dropped.
"""

from __future__ import annotations

from authz.envoy.decode import PARTIAL_BODY_HEADER
from authz.errors import RequestError
from authz.request import Request, split_target

CONTENT_LENGTH_HEADER = "x-authz-content-length"
ENVOY_CLIENT_HEADERS = ("content-length", "x-envoy-internal", "x-envoy-expected-rq-timeout-ms")
# A 2xx answer to CONNECT opens a tunnel on an HTTP/1.1 connection: never evaluated here.
REFUSED_METHODS = frozenset(("CONNECT",))


def decode(method: str, target: str, headers: dict[str, str], body: bytes, prefix: str) -> Request:
    """`headers`: lower-case names, as parsed (taken over and changed in place).
    RequestError for a request no Envoy route can have sent."""
    if method in REFUSED_METHODS:
        raise RequestError(f"{method} is not authorized over the HTTP transport")
    if prefix:
        if not target.startswith(prefix):
            raise RequestError("the request path does not start with the Check path prefix")
        target = target[len(prefix) :]
    if not target.startswith("/"):  # absolute-form, authority-form, `*`
        raise RequestError("the request path must start with '/'")
    for name in ENVOY_CLIENT_HEADERS:
        headers.pop(name, None)
    length = headers.pop(CONTENT_LENGTH_HEADER, None)
    if length is not None:
        headers["content-length"] = length
    host = headers.pop("host", None)
    if host is not None:
        headers[":authority"] = host
    headers[":method"] = method
    headers[":path"] = target
    scheme = headers.get("x-forwarded-proto")
    if scheme is not None:
        headers[":scheme"] = scheme
    path, query = split_target(target)
    return Request(
        method,
        path,
        query,
        headers,
        body,
        headers.get(PARTIAL_BODY_HEADER) == "true",
        {},  # no context_extensions over HTTP: endpoints resolve by method and path
        headers.get("x-request-id", ""),
    )
