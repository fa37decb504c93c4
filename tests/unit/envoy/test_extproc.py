"""ext_proc `Process`: the plan decided by a real Check applied to hand-built message streams.

Plans come from `Authorizer.check` + `encode` (the dynamic metadata Envoy forwards), so these
tests also pin the contract between Check and ext_proc."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
import jwt
import pytest
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue, Metadata
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc
from envoy.service.ext_proc.v3.external_processor_pb2 import (
    HttpBody,
    HttpHeaders,
    HttpTrailers,
    ProcessingRequest,
    ProcessingResponse,
)
from google.protobuf.struct_pb2 import Struct

from authz.authorizer import Authorizer
from authz.config.load import load_config_text
from authz.crypto import hash_value
from authz.envoy.encode import encode
from authz.envoy.extproc import NAMESPACE, NOT_JSON, SERVICE, ExtProcServicer, _is_json
from authz.request import Request
from tests.helpers import free_port

SECRET = "0123456789abcdef0123456789abcdef-extp"
AES_KEY = base64.b64encode(b"unit-tests-ext-proc-aes-key-32by").decode()
CONFIG = """
project: demo
auth:
  secrets: [{alg: HS256, secret: "${T_SECRET}", primary: true}]
crypto:
  keys: [{id: k1, key: "${T_AES}"}]
services:
  s:
    endpoints:
      body:
        method: POST
        path: /body
        rule:
          rule: and
          clauses:
            - {rule: force, field: args.params.userId, value: args.auth.id}
            - rule: remove
              fields: [args.params.amount]
              clause: {rule: match, type: string, eval: notIn, f1: args.auth.role, f2: [admin]}
            - {rule: encrypt, fields: [args.params.email]}
            - {rule: hash, fields: [args.params.password]}
      resize:
        method: POST
        path: /resize
        rule:
          rule: and
          clauses:
            - {rule: remove, fields: [args.params.blob]}
            - {rule: force, field: args.params.note, value: "a note that the upstream always gets"}
      resp:
        method: GET
        path: /resp
        rule:
          rule: and
          clauses:
            - {rule: decrypt, fields: [res.email]}
            - {rule: remove, fields: [res.secret]}
      plain: {method: GET, path: /plain, rule: {rule: authenticated}}
"""
USER = {"id": "u1", "role": "user"}


@pytest.fixture(scope="module")
def authorizer() -> Authorizer:
    return Authorizer(load_config_text(CONFIG, {"T_SECRET": SECRET, "T_AES": AES_KEY}))


@pytest.fixture
def servicer(authorizer: Authorizer) -> ExtProcServicer:
    return ExtProcServicer(lambda: authorizer)


def bearer(claims: dict[str, Any]) -> str:
    return "Bearer " + jwt.encode({**claims, "exp": int(time.time()) + 600}, SECRET, "HS256")


def metadata_for(authorizer: Authorizer, method: str, path: str, body: bytes = b"") -> Metadata:
    """Run Check and return the metadata Envoy would forward to ext_proc."""
    req = Request.from_target(
        method,
        path,
        headers={"authorization": bearer(USER), "content-type": "application/json"},
        body=body,
        request_id="rid-1",
    )
    decision = asyncio.run(authorizer.check(req))
    assert decision.allowed, decision.reason
    md = Metadata()
    check = encode(decision)
    if check.HasField("dynamic_metadata"):  # Envoy stores it under the ext_authz namespace
        md.filter_metadata[NAMESPACE].CopyFrom(check.dynamic_metadata)
    return md


def headers_msg(
    md: Metadata, headers: dict[str, str], eos: bool = False, response: bool = False
) -> ProcessingRequest:
    hmap = HeaderMap(headers=[HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()])
    http = HttpHeaders(headers=hmap, end_of_stream=eos)
    if response:
        return ProcessingRequest(response_headers=http, metadata_context=md)
    return ProcessingRequest(request_headers=http, metadata_context=md)


def body_msg(md: Metadata, body: bytes, response: bool = False) -> ProcessingRequest:
    http = HttpBody(body=body, end_of_stream=True)
    if response:
        return ProcessingRequest(response_body=http, metadata_context=md)
    return ProcessingRequest(request_body=http, metadata_context=md)


REQ_HEADERS = {":method": "POST", "content-type": "application/json", "x-request-id": "rid-1"}
JSON_RESPONSE = {":status": "200", "content-type": "application/json; charset=utf-8"}


async def _iterate(msgs: Iterable[ProcessingRequest]) -> AsyncIterator[ProcessingRequest]:
    for m in msgs:
        yield m


def process(servicer: ExtProcServicer, msgs: list[ProcessingRequest]) -> list[ProcessingResponse]:
    async def go() -> list[ProcessingResponse]:
        return [r async for r in servicer.Process(_iterate(msgs), None)]  # type: ignore[arg-type]

    return asyncio.run(go())


def body_of(resp: ProcessingResponse, which: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The new JSON body of a body response and the headers it sets."""
    common = getattr(resp, which).response
    new = common.body_mutation.body
    headers = {
        h.header.key: h.header.raw_value.decode() for h in common.header_mutation.set_headers
    }
    return json.loads(new), headers | {"_len": str(len(new))}


def immediate(resp: ProcessingResponse) -> tuple[int, dict[str, Any]]:
    assert resp.WhichOneof("response") == "immediate_response", resp
    im = resp.immediate_response
    ct = {h.header.key: h.header.raw_value for h in im.headers.set_headers}["content-type"]
    assert ct == b"application/json"
    return im.status.code, json.loads(im.body)


# --- request bodies ----------------------------------------------------------------------


def test_request_body_is_rewritten_per_plan_with_its_content_length(authorizer, servicer):
    sent = {"item": "book", "userId": "evil", "amount": 5, "email": "a@b.c", "password": "password"}
    body = json.dumps(sent).encode()
    md = metadata_for(authorizer, "POST", "/body", body)
    out = process(servicer, [headers_msg(md, REQ_HEADERS), body_msg(md, body)])
    assert [r.WhichOneof("response") for r in out] == ["request_headers", "request_body"]
    # only the request body is needed: Envoy is told to skip the response
    mode = out[0].mode_override
    assert mode.request_body_mode == ProcessingMode.BUFFERED
    assert mode.response_header_mode == ProcessingMode.SKIP
    assert mode.response_body_mode == ProcessingMode.NONE
    new, headers = body_of(out[1], "request_body")
    assert headers["content-length"] == headers["_len"]
    assert new["userId"] == "u1" and "amount" not in new and new["item"] == "book"
    assert new["password"] == hash_value("password")
    assert new["email"].startswith("v1.k1.")
    assert authorizer.runtime.keyring.decrypt(new["email"], "email") == "a@b.c"


def test_body_that_grows_and_shrinks_keeps_a_correct_content_length(authorizer, servicer):
    for sent in ({"blob": "x" * 500}, {"a": 1}):
        body = json.dumps(sent).encode()
        md = metadata_for(authorizer, "POST", "/resize", body)
        out = process(servicer, [headers_msg(md, REQ_HEADERS), body_msg(md, body)])
        new, headers = body_of(out[1], "request_body")
        assert "blob" not in new and new["note"] == "a note that the upstream always gets"
        assert int(headers["content-length"]) == int(headers["_len"])
        grew = int(headers["_len"]) > len(body)
        assert grew == ("blob" not in sent)


def test_a_body_check_did_not_see_is_refused(authorizer, servicer):
    body = b'{"item": "book", "amount": 5}'
    md = metadata_for(authorizer, "POST", "/body", body)
    other = body.replace(b"5", b"6")
    out = process(servicer, [headers_msg(md, REQ_HEADERS), body_msg(md, other), body_msg(md, b"")])
    assert len(out) == 2  # the stream ends with the immediate response
    assert immediate(out[1]) == (
        403,
        {"error": "the request body is not the one authorized", "requestId": "rid-1"},
    )


def test_no_body_where_check_saw_one_is_refused(authorizer, servicer):
    md = metadata_for(authorizer, "POST", "/body", b'{"item": "book"}')
    (out,) = process(servicer, [headers_msg(md, REQ_HEADERS, eos=True)])
    assert immediate(out)[0] == 403


def test_a_plan_that_does_not_fit_the_body_is_a_500(servicer):
    body = b'{"a": 1}'
    op = {"op": "remove", "target": "params", "path": ["missing", "x"]}
    plan = {"v": 1, "bodyHash": hashlib.sha256(body).hexdigest(), "request": [op], "response": []}
    md = raw_plan_metadata(json.dumps(plan))
    out = process(servicer, [headers_msg(md, REQ_HEADERS), body_msg(md, body)])
    assert immediate(out[1])[0] == 500


def test_a_chunked_body_is_refused(authorizer, servicer):
    # BUFFERED sends one body message; a second one (STREAMED mode) cannot be verified
    body = b'{"blob": "x"}'
    md = metadata_for(authorizer, "POST", "/resize", body)
    msgs = [headers_msg(md, REQ_HEADERS), body_msg(md, body), body_msg(md, body)]
    out = process(servicer, msgs)
    assert out[1].WhichOneof("response") == "request_body"
    assert immediate(out[2])[0] == 500


def test_response_headers_without_the_request_body_fail_closed(authorizer, servicer):
    # Envoy ignored mode_override: the body changes were never applied
    body = b'{"blob": "x"}'
    md = metadata_for(authorizer, "POST", "/resize", body)
    msgs = [headers_msg(md, REQ_HEADERS), headers_msg(md, JSON_RESPONSE, response=True)]
    out = process(servicer, msgs)
    assert immediate(out[1])[0] == 500


# --- response bodies ---------------------------------------------------------------------


def response_stream(md: Metadata, body: bytes, headers: dict[str, str] | None = None):
    return [
        headers_msg(md, {":method": "GET", "x-request-id": "rid-1"}, eos=True),
        headers_msg(md, headers or JSON_RESPONSE, response=True),
        body_msg(md, body, response=True),
    ]


def test_response_fields_are_decrypted_and_removed(authorizer, servicer):
    md = metadata_for(authorizer, "GET", "/resp")
    envelope = authorizer.runtime.keyring.encrypt("alice@example.com", "email")
    sent = {"email": envelope, "secret": "s3cr3t", "name": "Alice"}
    out = process(servicer, response_stream(md, json.dumps(sent).encode()))
    kinds = [r.WhichOneof("response") for r in out]
    assert kinds == ["request_headers", "response_headers", "response_body"]
    # the response is needed, no request body; the upstream is asked for an identity encoding
    mode = out[0].mode_override
    assert mode.request_body_mode == ProcessingMode.NONE
    assert mode.response_header_mode == ProcessingMode.SEND
    assert mode.response_body_mode == ProcessingMode.BUFFERED
    removed = out[0].request_headers.response.header_mutation.remove_headers
    assert list(removed) == ["accept-encoding", "range", "if-range", "if-none-match"]
    new, headers = body_of(out[2], "response_body")
    assert new == {"email": "alice@example.com", "name": "Alice"}
    assert headers["content-length"] == headers["_len"]


def tamper(envelope: str) -> str:
    """The envelope with one ciphertext bit flipped (still well-formed)."""
    head, _, blob = envelope.rpartition(".")
    raw = bytearray(base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4)))
    raw[14] ^= 1  # after the 12-byte nonce
    return f"{head}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"


@pytest.mark.parametrize("email", ["tampered", "not an envelope", 42])
def test_a_failing_response_action_replaces_the_response_with_a_502(authorizer, servicer, email):
    md = metadata_for(authorizer, "GET", "/resp")
    if email == "tampered":
        email = tamper(authorizer.runtime.keyring.encrypt("alice@example.com", "email"))
    sent = json.dumps({"email": email, "secret": "s3cr3t"}).encode()
    out = process(servicer, response_stream(md, sent))
    status, body = immediate(out[2])
    assert status == 502 and body["requestId"] == "rid-1"
    assert "s3cr3t" not in out[2].immediate_response.body.decode()


def test_a_response_encrypted_for_another_field_is_a_502(authorizer, servicer):
    md = metadata_for(authorizer, "GET", "/resp")
    moved = authorizer.runtime.keyring.encrypt("alice@example.com", "other")
    out = process(servicer, response_stream(md, json.dumps({"email": moved}).encode()))
    assert immediate(out[2])[0] == 502


@pytest.mark.parametrize(
    "headers",
    [
        {":status": "200", "content-type": "text/plain"},
        {":status": "200"},
        {":status": "200", "content-type": "application/json", "content-encoding": "gzip"},
    ],
)
def test_a_response_the_plan_cannot_apply_to_is_a_502_at_its_headers(authorizer, servicer, headers):
    md = metadata_for(authorizer, "GET", "/resp")
    out = process(servicer, response_stream(md, b'{"secret": "s"}', headers))
    assert len(out) == 2
    assert immediate(out[1])[0] == 502


def test_invalid_json_in_a_json_response_is_a_502(authorizer, servicer):
    md = metadata_for(authorizer, "GET", "/resp")
    out = process(servicer, response_stream(md, b'{"secret": "s3cr3t"'))
    status, body = immediate(out[2])
    assert status == 502 and "s3cr3t" not in json.dumps(body)


@pytest.mark.parametrize("status", ["204", "200"])  # 200 without a body: a HEAD answer
def test_a_response_without_a_body_passes_without_its_content_length(authorizer, servicer, status):
    md = metadata_for(authorizer, "GET", "/resp")
    msgs = [
        headers_msg(md, {":method": "HEAD"}, eos=True),
        headers_msg(
            md,
            {**JSON_RESPONSE, ":status": status, "content-length": "52"},
            eos=True,
            response=True,
        ),
    ]
    out = process(servicer, msgs)
    assert out[1].WhichOneof("response") == "response_headers"
    # the unmasked body's size does not leave
    removed = out[1].response_headers.response.header_mutation.remove_headers
    assert list(removed) == ["content-length"]


def test_headers_describing_the_unmasked_body_are_removed(authorizer, servicer):
    md = metadata_for(authorizer, "GET", "/resp")
    digests = {"etag": '"sha256-abc"', "content-digest": "sha-256=:abc=:", "digest": "x"}
    sent = json.dumps({"secret": "s3cr3t", "name": "Alice"}).encode()
    out = process(servicer, response_stream(md, sent, {**JSON_RESPONSE, **digests}))
    removed = out[1].response_headers.response.header_mutation.remove_headers
    assert sorted(removed) == ["content-digest", "digest", "etag"]
    assert body_of(out[2], "response_body")[0] == {"name": "Alice"}


@pytest.mark.parametrize(
    "headers",
    [
        {**JSON_RESPONSE, ":status": "206", "content-range": "bytes 33-43/52"},
        {**JSON_RESPONSE, "content-range": "bytes 0-51/52"},
        {**JSON_RESPONSE, ":status": "206"},
    ],
)
def test_a_partial_response_is_a_502(authorizer, servicer, headers):
    md = metadata_for(authorizer, "GET", "/resp")
    out = process(servicer, response_stream(md, b'"TOPSECRET"', headers))
    assert len(out) == 2
    status, body = immediate(out[1])
    assert status == 502 and body["error"] == "the upstream response is partial"


@pytest.mark.parametrize(
    "sent",
    [
        [{"secret": "s3cr3t"}],  # a top-level array: `res.secret` names an object's key
        "s3cr3t",  # a string: what a byte range of the object can be
        {"email": ["s3cr3t"]},  # `decrypt res.email` on an array
    ],
)
def test_a_response_shaped_unlike_the_rule_paths_is_a_502(authorizer, servicer, sent):
    md = metadata_for(authorizer, "GET", "/resp")
    out = process(servicer, response_stream(md, json.dumps(sent).encode()))
    status, _ = immediate(out[2])
    assert status == 502 and "s3cr3t" not in out[2].immediate_response.body.decode()


@pytest.mark.parametrize("sent", [{"name": "Alice"}, None, {"secret": None}])
def test_a_response_without_the_fields_passes(authorizer, servicer, sent):
    md = metadata_for(authorizer, "GET", "/resp")
    out = process(servicer, response_stream(md, json.dumps(sent).encode()))
    new, _ = body_of(out[2], "response_body")
    assert new == (None if sent is None else {k: v for k, v in sent.items() if k != "secret"})


def test_the_plan_is_read_from_the_response_when_the_request_side_is_skipped(authorizer, servicer):
    # request_header_mode: SKIP on the route: the first message is the response's headers
    md = metadata_for(authorizer, "GET", "/resp")
    msgs = response_stream(md, json.dumps({"secret": "s3cr3t", "name": "Alice"}).encode())[1:]
    out = process(servicer, msgs)
    assert [r.WhichOneof("response") for r in out] == ["response_headers", "response_body"]
    assert out[0].mode_override.response_body_mode == ProcessingMode.BUFFERED
    new, _ = body_of(out[1], "response_body")
    assert new == {"name": "Alice"}


def test_a_request_plan_on_a_route_that_skips_the_request_side_fails_closed(authorizer, servicer):
    body = b'{"blob": "x"}'
    md = metadata_for(authorizer, "POST", "/resize", body)
    out = process(servicer, [headers_msg(md, JSON_RESPONSE, response=True)])
    assert immediate(out[0])[0] == 502


# --- no plan, bad plans, internal errors -------------------------------------------------


def raw_plan_metadata(text: str) -> Metadata:
    md = Metadata()
    s = Struct()
    s["plan"] = text
    md.filter_metadata[NAMESPACE].CopyFrom(s)
    return md


def test_no_plan_passes_everything_unchanged(authorizer, servicer):
    md = metadata_for(authorizer, "GET", "/plain")
    assert NAMESPACE not in md.filter_metadata  # Check emits no plan for this endpoint
    # if Envoy ignored the mode override it would still send bodies: all unchanged
    msgs = [
        headers_msg(md, REQ_HEADERS),
        body_msg(md, b"not json at all"),
        headers_msg(md, {":status": "200", "content-type": "text/plain"}, response=True),
        body_msg(md, b"anything", response=True),
    ]
    out = process(servicer, msgs)
    kinds = [r.WhichOneof("response") for r in out]
    assert kinds == ["request_headers", "request_body", "response_headers", "response_body"]
    assert out[0].mode_override == ProcessingMode(
        request_body_mode=ProcessingMode.NONE,
        response_header_mode=ProcessingMode.SKIP,
        response_body_mode=ProcessingMode.NONE,
    )
    for r in out:
        assert not getattr(r, r.WhichOneof("response")).HasField("response")


BAD_ACTION = '{"v": 1, "bodyHash": "x", "request": [], "response": [{"op": "x", "path": ["a"]}]}'


@pytest.mark.parametrize("text", ["not json", '{"v": 2}', '{"v": 1, "bodyHash": "x"}', BAD_ACTION])
def test_a_malformed_plan_fails_closed_before_the_upstream(servicer, text):
    (out,) = process(servicer, [headers_msg(raw_plan_metadata(text), REQ_HEADERS)])
    assert immediate(out) == (500, {"error": "internal error", "requestId": "rid-1"})


def test_no_exception_escapes_the_stream(authorizer):
    def broken() -> Any:
        raise RuntimeError("no authorizer")

    assert process(ExtProcServicer(broken), [headers_msg(Metadata(), REQ_HEADERS)]) == []

    class NoRuntime:
        pass  # an authorizer without runtime/config: every path must still answer

    md = raw_plan_metadata(json.dumps({"v": 1, "bodyHash": "x", "request": [], "response": []}))
    (out,) = process(ExtProcServicer(lambda: NoRuntime()), [headers_msg(md, REQ_HEADERS)])
    assert immediate(out)[0] == 500


def test_the_keyring_is_the_current_authorizers(authorizer):
    # a reload between Check and the response: the new config's keys decrypt, or a 502
    other_key = base64.b64encode(b"another-unit-test-aes-key-32byte").decode()
    reloaded = Authorizer(load_config_text(CONFIG, {"T_SECRET": SECRET, "T_AES": other_key}))
    md = metadata_for(authorizer, "GET", "/resp")
    envelope = authorizer.runtime.keyring.encrypt("alice@example.com", "email")
    stream = response_stream(md, json.dumps({"email": envelope}).encode())
    out = process(ExtProcServicer(lambda: reloaded), stream)
    assert immediate(out[2])[0] == 502


# --- over gRPC ---------------------------------------------------------------------------


async def test_process_over_a_real_grpc_stream(authorizer):
    server = grpc.aio.server()
    assert ExtProcServicer(lambda: authorizer).add_to_server(server) == SERVICE
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    await server.start()
    try:
        body = b'{"userId": "evil", "amount": 9}'
        md = await asyncio.to_thread(metadata_for, authorizer, "POST", "/body", body)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = external_processor_pb2_grpc.ExternalProcessorStub(channel)
            call = stub.Process(timeout=5)
            await call.write(headers_msg(md, REQ_HEADERS))
            first = await call.read()
            await call.write(body_msg(md, body))
            second = await call.read()
            await call.done_writing()
            assert await call.code() == grpc.StatusCode.OK
    finally:
        await server.stop(0)
    assert first.WhichOneof("response") == "request_headers"
    new, headers = body_of(second, "request_body")
    assert new == {"userId": "u1"} and headers["content-length"] == headers["_len"]


class _Context:
    def __init__(self, metadata: tuple[tuple[str, str], ...]):
        self.metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata


def process_marked(servicer, msgs, metadata=(("x-authz-plan", "required"),)):
    async def go() -> list[ProcessingResponse]:
        return [r async for r in servicer.Process(_iterate(msgs), _Context(metadata))]

    return asyncio.run(go())


def test_no_plan_on_a_route_marked_plan_required_fails_closed(authorizer, servicer):
    msgs = response_stream(Metadata(), json.dumps({"secret": "s3cr3t"}).encode())
    out = process_marked(servicer, msgs)
    assert len(out) == 1
    assert immediate(out[0])[0] == 500


def test_a_local_reply_on_a_marked_route_passes(authorizer, servicer):
    # Envoy's answer to a denial starts the stream at the response, with no plan
    denial = {":status": "403", "content-type": "application/json"}
    msgs = [headers_msg(Metadata(), denial, response=True), body_msg(Metadata(), b"{}", True)]
    out = process_marked(servicer, msgs)
    assert [r.WhichOneof("response") for r in out] == ["response_headers", "response_body"]


def test_a_plan_on_a_marked_route_is_applied_and_unmarked_routes_need_none(authorizer, servicer):
    md = metadata_for(authorizer, "GET", "/resp")
    sent = json.dumps({"secret": "s3cr3t", "name": "Alice"}).encode()
    out = process_marked(servicer, response_stream(md, sent))
    assert body_of(out[2], "response_body")[0] == {"name": "Alice"}
    out = process_marked(servicer, response_stream(Metadata(), sent), metadata=())
    assert out[0].mode_override.response_header_mode == ProcessingMode.SKIP


# --- JSON edge cases ---------------------------------------------------------------------


def test_a_lone_surrogate_survives_the_rewrite_escaped(authorizer, servicer):
    md = metadata_for(authorizer, "GET", "/resp")
    sent = b'{"name": "\\ud800 \xc3\xa9", "secret": "s"}'  # a lone surrogate escape, and UTF-8
    out = process(servicer, response_stream(md, sent))
    new, headers = body_of(out[2], "response_body")
    assert new == {"name": "\ud800 \u00e9"} and headers["content-length"] == headers["_len"]


def test_a_number_json_cannot_carry_is_a_502_not_infinity(authorizer, servicer):
    md = metadata_for(authorizer, "GET", "/resp")
    out = process(servicer, response_stream(md, b'{"n": 1e400, "secret": "s"}'))
    status, body = immediate(out[2])
    assert status == 502 and body["error"] == "the upstream response cannot be delivered"


def test_non_ascii_request_bodies_stay_utf8(authorizer, servicer):
    body = '{"blob": "x", "name": "Zoë 東京"}'.encode()
    md = metadata_for(authorizer, "POST", "/resize", body)
    out = process(servicer, [headers_msg(md, REQ_HEADERS), body_msg(md, body)])
    raw = out[1].request_body.response.body_mutation.body
    assert "Zoë 東京".encode() in raw and json.loads(raw)["name"] == "Zoë 東京"


# --- every message kind and failure, with its status and details ---------------------------


def details(resp: ProcessingResponse) -> str:
    return resp.immediate_response.details


def test_a_plan_that_is_not_a_string_fails_closed():
    md = Metadata()
    s = Struct()
    s["plan"] = 5
    md.filter_metadata[NAMESPACE].CopyFrom(s)
    (out,) = process(ExtProcServicer(lambda: None), [headers_msg(md, REQ_HEADERS)])
    assert immediate(out)[0] == 500 and details(out) == "authz_ext_proc_bad_plan"


def test_a_bad_plan_first_seen_at_the_response_is_a_502(servicer, caplog):
    md = raw_plan_metadata("not json")
    with caplog.at_level("ERROR", logger="authz.envoy.extproc"):
        (out,) = process(servicer, [headers_msg(md, JSON_RESPONSE, response=True)])
    assert immediate(out)[0] == 502 and details(out) == "authz_ext_proc_bad_plan"
    assert "(request id '-')" in caplog.text


def test_an_unexpected_error_is_a_500_on_the_request_side_and_a_502_on_the_response_side():
    class NoRuntime:
        pass

    md = raw_plan_metadata(json.dumps({"v": 1, "bodyHash": "x", "request": [], "response": []}))
    servicer = ExtProcServicer(lambda: NoRuntime())
    (out,) = process(servicer, [headers_msg(md, JSON_RESPONSE, response=True)])
    assert immediate(out)[0] == 502 and details(out) == "authz_ext_proc_error"
    (out,) = process(servicer, [headers_msg(md, REQ_HEADERS)])
    assert immediate(out)[0] == 500 and details(out) == "authz_ext_proc_error"


def test_trailers_pass_and_an_unknown_message_fails_closed(authorizer, servicer, caplog):
    md = metadata_for(authorizer, "GET", "/plain")
    msgs = [
        ProcessingRequest(request_trailers=HttpTrailers(), metadata_context=md),
        ProcessingRequest(response_trailers=HttpTrailers(), metadata_context=md),
    ]
    kinds = [r.WhichOneof("response") for r in process(servicer, msgs)]
    assert kinds == ["request_trailers", "response_trailers"]
    with caplog.at_level("WARNING", logger="authz.envoy.extproc"):
        (out,) = process(servicer, [ProcessingRequest(metadata_context=md)])
    assert immediate(out)[0] == 500 and details(out) == "authz_ext_proc_unknown_message"
    assert "(request id '-')" in caplog.text


def test_a_plan_without_request_changes_passes_the_request_body_unchanged(authorizer, servicer):
    md = metadata_for(authorizer, "GET", "/resp")
    out = process(servicer, [headers_msg(md, REQ_HEADERS), body_msg(md, b"")])
    assert out[1].WhichOneof("response") == "request_body"
    assert not out[1].request_body.HasField("response")


def test_a_plan_without_response_actions_passes_the_response(authorizer, servicer):
    body = b'{"blob": "x"}'
    md = metadata_for(authorizer, "POST", "/resize", body)
    msgs = [
        headers_msg(md, REQ_HEADERS),
        body_msg(md, body),
        headers_msg(md, JSON_RESPONSE, response=True),
        body_msg(md, b"[]", response=True),
    ]
    out = process(servicer, msgs)
    assert [r.WhichOneof("response") for r in out[2:]] == ["response_headers", "response_body"]
    assert not out[2].response_headers.HasField("response")


def test_a_plan_that_does_not_fit_the_body_says_so(servicer):
    body = b'{"a": 1}'
    op = {"op": "remove", "target": "params", "path": ["missing", "x"]}
    plan = {"v": 1, "bodyHash": hashlib.sha256(body).hexdigest(), "request": [op], "response": []}
    md = raw_plan_metadata(json.dumps(plan))
    out = process(servicer, [headers_msg(md, REQ_HEADERS), body_msg(md, body)])
    assert details(out[1]) == "authz_ext_proc_plan_mismatch"


def test_a_response_body_in_two_chunks_is_a_502(authorizer, servicer):
    md = metadata_for(authorizer, "GET", "/resp")
    msgs = [*response_stream(md, b'{"name": "A"}'), body_msg(md, b"{}", response=True)]
    out = process(servicer, msgs)
    assert immediate(out[3])[0] == 502 and details(out[3]) == "authz_ext_proc_body_not_buffered"


def test_invalid_json_in_a_response_says_so(authorizer, servicer):
    md = metadata_for(authorizer, "GET", "/resp")
    out = process(servicer, response_stream(md, b'{"secret": "s3cr3t"'))
    assert immediate(out[2]) == (502, {"error": NOT_JSON, "requestId": "rid-1"})
    assert details(out[2]) == "authz_response_not_json"


@pytest.mark.parametrize(
    ("content_type", "json_"),
    [("application/json", True), ("Application/JSON; charset=utf-8", True),
     ("application/problem+json", True), ("text/plain+json", False),
     ("application/xml", False), ("text/json", False)],
)  # fmt: skip
def test_which_responses_are_json(content_type, json_):
    assert _is_json(content_type) is json_


@pytest.mark.parametrize("metadata", [(("x-authz-plan", "optional"),), (("other", "required"),)])
def test_only_the_required_mark_makes_a_plan_required(authorizer, servicer, metadata):
    msgs = [headers_msg(Metadata(), REQ_HEADERS, eos=True)]
    (out,) = process_marked(servicer, msgs, metadata=metadata)
    assert out.WhichOneof("response") == "request_headers"


def test_metadata_without_a_plan_key_is_no_plan(authorizer, servicer):
    md = Metadata()
    s = Struct()
    s["other"] = "x"
    md.filter_metadata[NAMESPACE].CopyFrom(s)
    out = process(servicer, [headers_msg(md, REQ_HEADERS, eos=True)])
    assert [r.WhichOneof("response") for r in out] == ["request_headers"]
