"""Decision -> Envoy CheckResponse (docs/rules.md, statuses and the body plan).

Every denial is a CheckResponse carrying `denied_response` with the HTTP status and a JSON
body, never a gRPC error and never `error_response`: Envoy's fail-open setting must not be
able to turn an internal error into an allow.

What does not change from one Check to the next is built once and reused: the serialized
allow of a caller (until its service token is re-minted) and each kind of denial (status and
headers), to which only the JSON body is added.
"""

from __future__ import annotations

from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from typing import Any
from urllib.parse import quote

from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption, QueryParameter
from envoy.service.auth.v3.external_auth_pb2 import (
    CheckResponse,
    DeniedHttpResponse,
    OkHttpResponse,
)
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.protobuf.struct_pb2 import Struct
from google.rpc.code_pb2 import OK, PERMISSION_DENIED, UNAUTHENTICATED
from google.rpc.status_pb2 import Status

from authz import plan
from authz.decision import Decision

_OK_STATUS = Status(code=OK)
_DENIED = Status(code=PERMISSION_DENIED)
_UNAUTHENTICATED = Status(code=UNAUTHENTICATED)
_JSON = HeaderValueOption(header=HeaderValue(key="content-type", value="application/json"))


def _header(key: str, value: str) -> HeaderValueOption:
    return HeaderValueOption(header=HeaderValue(key=key, value=value))


def encode(decision: Decision) -> CheckResponse:
    if decision.allowed:
        return _ok(decision)
    return _denied(decision)


def serialize(decision: Decision) -> bytes:
    """`encode(decision).SerializeToString()`: the bytes the Check handler answers with."""
    d = decision
    if d.allowed and not (
        d.query_parameters_to_set
        or d.query_parameters_to_remove
        or d.response_headers_to_add
        or d.plan is not None
    ):
        # An allow that only sets and removes request headers is the same bytes for every
        # Check of one caller as long as its service token is reused (half the token's ttl,
        # identity.mint.ServiceTokens).
        # One flat tuple (headers are pairs, removals strings: the split is unambiguous).
        key = (*d.headers, *d.headers_to_remove)
        out: bytes | None = _HEADER_ONLY_ALLOWS.get(key)
        if out is None:
            out = _HEADER_ONLY_ALLOWS.put(key, _ok(d).SerializeToString())
        return out
    data: bytes = encode(d).SerializeToString()
    return data


class _Bounded:
    """A dict of prebuilt responses, emptied when full (header values set by field rules may
    all differ: the cache must not grow with them)."""

    def __init__(self, size: int):
        self.size = size
        self._entries: dict[Any, Any] = {}
        self.get: Callable[[Any], Any] = self._entries.get  # per Check: no Python frame

    def put(self, key: Any, value: Any) -> Any:
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[key] = value
        return value


_HEADER_ONLY_ALLOWS = _Bounded(1024)  # (headers, headers_to_remove) -> serialized allow
_DENIALS = _Bounded(256)  # (status, response headers) -> CheckResponse without a body


def _ok(d: Decision) -> CheckResponse:
    ok = OkHttpResponse(
        headers=[_header(k, v) for k, v in d.headers],
        headers_to_remove=d.headers_to_remove,
    )
    if d.query_parameters_to_set:
        ok.query_parameters_to_set.extend(
            QueryParameter(key=quote(k, safe="[]"), value=_query_text(v))
            for k, v in d.query_parameters_to_set
        )
    if d.query_parameters_to_remove:
        ok.query_parameters_to_remove.extend(d.query_parameters_to_remove)
    if d.response_headers_to_add:
        ok.response_headers_to_add.extend(_header(k, v) for k, v in d.response_headers_to_add)
    response = CheckResponse(status=_OK_STATUS, ok_response=ok)
    if d.plan is not None:  # for ext_proc, under Envoy's envoy.filters.http.ext_authz namespace
        metadata = Struct()
        metadata[plan.PLAN_KEY] = plan.encode(d.plan)
        response.dynamic_metadata.CopyFrom(metadata)
    return response


def _query_text(text: str) -> str:
    """Percent-encode a query name or value set by a rule: Envoy writes
    `query_parameters_to_set` into `:path` as given, so `a&role=admin`, `#`, a space or `%26`
    would otherwise become query syntax. Every byte outside the unreserved set is escaped (a
    space as %20, not `+`, which some upstreams keep as a plus), so any decoder reads back
    exactly the rule's value."""
    return quote(text, safe="")


def _denied(d: Decision) -> CheckResponse:
    key = (d.status, tuple(d.response_headers_to_add))
    template = _DENIALS.get(key)
    if template is None:
        template = _DENIALS.put(key, _denial(d.status, d.response_headers_to_add))
    response = CheckResponse()
    response.CopyFrom(template)
    response.denied_response.body = error_body(d.message or "access denied", d.request_id)
    return response


def _denial(status: int, response_headers: list[tuple[str, str]]) -> CheckResponse:
    headers = [_JSON]
    headers.extend(_header(k, v) for k, v in response_headers)
    denied = DeniedHttpResponse(status=HttpStatus(code=status), headers=headers)
    rpc_status = _UNAUTHENTICATED if status == 401 else _DENIED
    return CheckResponse(status=rpc_status, denied_response=denied)


def error_body(message: str, request_id: str) -> str:
    """The JSON body of every denial and every ext_proc local reply."""
    # Exactly json.dumps({"error": message, "requestId": request_id}), which costs more than
    # the rest of a denial (it builds an encoder per call).
    error, rid = encode_basestring_ascii(message), encode_basestring_ascii(request_id)
    return f'{{"error": {error}, "requestId": {rid}}}'
