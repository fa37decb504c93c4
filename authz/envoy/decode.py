"""Envoy CheckRequest (bytes) -> neutral Request. No Envoy types past this module."""

from __future__ import annotations

from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from authz.errors import RequestError
from authz.peer import NO_PEER, Peer
from authz.request import Request, split_target

PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"


def decode(data: bytes, peer: bool = True) -> Request:
    """Parse and check a serialized CheckRequest; RequestError for anything malformed.
    `peer=False` (a config without auth.mtls: nothing reads it) skips the client certificate:
    the request then has NO_PEER, never None, so a header can never stand in for it."""
    try:
        msg = CheckRequest.FromString(data)
    except Exception:  # protobuf's DecodeError, invalid UTF-8 in string fields
        raise RequestError("malformed CheckRequest") from None
    return from_message(msg, peer)


def from_message(msg: CheckRequest, with_peer: bool = True) -> Request:
    attrs = msg.attributes
    http = attrs.request.http
    method = http.method
    target = http.path
    if not method:
        raise RequestError("the request has no method")
    if not target.startswith("/"):
        raise RequestError("the request path must start with '/'")
    # The protobuf maps as they are (read-only Mappings): most Checks read two or three
    # headers, and building a dict of all of them costs more than the rest of decode.
    headers = http.headers
    body = http.raw_body
    if not body:
        text = http.body
        body = text.encode("utf-8") if text else b""
    # The connection's client certificate, as Envoy verified it: set whenever it can matter
    # (NO_PEER without one), so that x-forwarded-client-cert is never read in its place.
    peer = _peer(attrs.source) if with_peer else NO_PEER
    # Request itself, not from_target: its keyword arguments are a noticeable part of decode.
    path, query = split_target(target)
    return Request(
        method,
        path,
        query,
        headers,
        body,
        headers.get(PARTIAL_BODY_HEADER) == "true",
        attrs.context_extensions,
        headers.get("x-request-id") or http.id,
        peer,
    )


def _peer(source: AttributeContext.Peer) -> Peer:
    principal, certificate = source.principal, source.certificate
    return Peer(principal, certificate) if principal or certificate else NO_PEER
