"""CheckRequest bytes -> Request: the fields decode reads, and what it refuses."""

from __future__ import annotations

import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from authz.envoy.decode import PARTIAL_BODY_HEADER, decode
from authz.errors import RequestError
from authz.request import Request


def data(path="/v1/x?q=1#frag", method="GET", headers=None, rid="7", **http_fields) -> bytes:
    msg = CheckRequest()
    http = msg.attributes.request.http
    http.method, http.path, http.id = method, path, rid
    http.headers.update(headers or {})
    for name, value in http_fields.items():
        setattr(http, name, value)
    msg.attributes.context_extensions.update({"service": "s", "endpoint": "e"})
    return msg.SerializeToString()


def test_fields_as_request_from_target_splits_them():
    req = decode(data(headers={"x-request-id": "abc", "a": "b"}))
    want = Request.from_target("GET", "/v1/x?q=1#frag", request_id="abc")
    assert (req.method, req.path, req.query_string, req.request_id) == (
        want.method, want.path, want.query_string, "abc",
    )  # fmt: skip
    assert dict(req.headers) == {"x-request-id": "abc", "a": "b"}
    assert dict(req.context) == {"service": "s", "endpoint": "e"}
    assert (req.body, req.body_partial) == (b"", False)
    for target, path, query in (("/p#f?x", "/p", ""), ("/p?a#b?c", "/p", "a"), ("/p", "/p", "")):
        req = decode(data(target))
        assert (req.path, req.query_string) == (path, query)


@pytest.mark.parametrize(("headers", "rid"), [({}, "7"), ({"x-request-id": ""}, "7")])
def test_request_id_falls_back_to_the_http_id(headers, rid):
    assert decode(data(headers=headers)).request_id == rid


def test_body_raw_or_text_and_partial():
    assert decode(data(raw_body=b"\xff{}")).body == b"\xff{}"
    assert decode(data(body="é")).body == "é".encode()
    partial = {PARTIAL_BODY_HEADER: "true"}
    assert decode(data(headers=partial, raw_body=b"{")).body_partial
    assert not decode(data(headers={PARTIAL_BODY_HEADER: "TRUE"})).body_partial


@pytest.mark.parametrize("raw", [b"\xff\xff", data(method=""), data(path="v1/x"), data(path="")])
def test_malformed_or_incomplete_is_a_request_error(raw):
    with pytest.raises(RequestError):
        decode(raw)


def test_reading_the_protobuf_maps_never_adds_keys():
    # `map[key]` on a protobuf map inserts "" for a missing key: the hot path uses get/in.
    from authz.resolve import Router
    from tests.unit.identity.support import make_identity

    req = decode(data(headers={"x-other": "1"}))
    make_identity({}).extract(req.headers)
    Router([]).resolve(req.method, req.path, req.context)
    assert dict(req.headers) == {"x-other": "1"}
    assert dict(req.context) == {"service": "s", "endpoint": "e"}


def test_peer_is_the_connection_envoy_reports():
    from authz.peer import NO_PEER, Peer

    msg = CheckRequest.FromString(data())
    assert decode(msg.SerializeToString()).peer is NO_PEER  # no client certificate
    msg.attributes.source.principal = "spiffe://td/sa/x"
    msg.attributes.source.certificate = "-----BEGIN%20CERTIFICATE-----"
    assert decode(msg.SerializeToString()).peer == Peer(
        "spiffe://td/sa/x", "-----BEGIN%20CERTIFICATE-----"
    )
    # a client's x-forwarded-client-cert does not become a peer on this transport
    req = decode(data(headers={"x-forwarded-client-cert": "URI=spiffe://td/sa/admin"}))
    assert req.peer is NO_PEER


def test_peer_is_skipped_for_a_config_without_mtls():
    from authz.peer import NO_PEER

    msg = CheckRequest.FromString(data())
    msg.attributes.source.principal = "spiffe://td/sa/x"
    assert decode(msg.SerializeToString(), peer=False).peer is NO_PEER  # never None: no XFCC


def test_the_server_reads_the_peer_only_when_auth_mtls_is_configured():
    from authz.authorizer import Authorizer
    from authz.config.load import load_config_text

    base = "project: p\nauth: {serviceToken: {enabled: false}%s}\n"
    assert Authorizer(load_config_text(base % ", mtls: {}", {})).reads_peer is True
    assert Authorizer(load_config_text(base % "", {})).reads_peer is False
