"""Decision -> the HTTP response Envoy's ext_authz `http_service` reads (prebuilt bytes).

How Envoy 1.40 reads it (`authz envoy-config --transport http` sets the matchers):
- 200: allowed. Headers named in `allowed_upstream_headers` overwrite the upstream request's,
  `x-envoy-auth-headers-to-remove` (comma-separated) removes headers after that (as the gRPC
  `headers_to_remove`), and PLAN_HEADER becomes the ext_authz dynamic metadata ext_proc reads
  (`dynamic_metadata_from_headers`).
- any other status: denied with that status, this body and the headers in
  `allowed_client_headers` (content-type, www-authenticate). A 5xx is an authorization
  *failure* to Envoy: the client gets `status_on_error` (fail closed), without the body.

What gRPC can say and HTTP cannot is never dropped silently: query changes become a 400
denial saying why (`authz envoy-config --transport http` refuses configs whose rules always
change the query), response headers on an allow (no rule adds any) a 500.
"""

from __future__ import annotations

from http import HTTPStatus

from authz import plan
from authz.decision import Decision
from authz.envoy.encode import _Bounded, error_body

REMOVE_HEADER = "x-envoy-auth-headers-to-remove"
# Field rules on args.params change the query of a request without a body: a 4xx (the client
# sent no body where the rules need one), so Envoy passes the JSON body on.
QUERY_CHANGE = (
    "the rules change this request's query (it has no body), which the HTTP transport cannot"
)
RESPONSE_HEADERS = "the decision adds response headers to an allow, which the HTTP transport cannot"
_OK_HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n"
_CRLF = b"\r\n"
_FORBIDDEN = frozenset("\r\n\0")

_HEADER_ONLY_ALLOWS = _Bounded(1024)  # (headers, headers_to_remove) -> response bytes
_DENIAL_HEADS = _Bounded(256)  # (status, response headers) -> status line and headers


def response(decision: Decision) -> bytes:
    """The full response (the server cuts the body off for a HEAD request)."""
    d = decision
    if not d.allowed:
        return _denied(d)
    if d.query_parameters_to_set or d.query_parameters_to_remove:
        return _denied(Decision(False, 400, QUERY_CHANGE, QUERY_CHANGE, request_id=d.request_id))
    if d.response_headers_to_add:
        return _denied(
            Decision(False, 500, RESPONSE_HEADERS, "internal error", request_id=d.request_id)
        )
    if d.plan is None:
        key = (*d.headers, *d.headers_to_remove)
        out: bytes | None = _HEADER_ONLY_ALLOWS.get(key)
        if out is None:
            out = _HEADER_ONLY_ALLOWS.put(key, _allow(d))
        return out
    return _allow(d)


def _allow(d: Decision) -> bytes:
    lines = [_OK_HEAD]
    try:
        lines.extend(_line(k, v) for k, v in d.headers)
        if d.headers_to_remove:
            lines.append(_line(REMOVE_HEADER, ",".join(d.headers_to_remove)))
        if d.plan is not None:
            lines.append(_line(plan.PLAN_HEADER, plan.encode(d.plan)))
    except ValueError as exc:
        return _denied(Decision(False, 500, str(exc), "internal error", request_id=d.request_id))
    lines.append(_CRLF)
    return b"".join(lines)


def _line(name: str, value: str) -> bytes:
    # A CR or LF would end the header (response splitting): never written, whatever a rule set.
    if _FORBIDDEN.intersection(name) or _FORBIDDEN.intersection(value) or not name:
        raise ValueError(f"the header {name[:64]!r} has a value HTTP cannot carry")
    return f"{name}: {value}\r\n".encode()


def _denied(d: Decision) -> bytes:
    status = d.status if 400 <= d.status <= 599 else 403  # any 2xx would be an allow
    key = (status, tuple(d.response_headers_to_add))
    head = _DENIAL_HEADS.get(key)
    if head is None:
        head = _DENIAL_HEADS.put(key, _denial_head(status, d.response_headers_to_add))
    body = error_body(d.message or "access denied", d.request_id).encode()
    return b"%scontent-length: %d\r\n\r\n%s" % (head, len(body), body)


def _denial_head(status: int, response_headers: list[tuple[str, str]]) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Denied"
    lines = [f"HTTP/1.1 {status} {phrase}\r\n".encode(), b"content-type: application/json\r\n"]
    for k, v in response_headers:
        try:
            lines.append(_line(k, v))
        except ValueError:
            continue  # a challenge header HTTP cannot carry is left out, the denial stays
    return b"".join(lines)
