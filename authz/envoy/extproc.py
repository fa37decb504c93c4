"""Envoy ext_proc `Process`: applies the body plan decided in Check (docs/rules.md, the body plan).

Check cannot change bodies, so for endpoints with body or `res.*` field rules it puts a plan
in the ext_authz dynamic metadata (authz/plan.py); Envoy forwards that namespace to this
processor (`metadata_options.forwarding_namespaces`). One stream is one HTTP request:

- the plan is read from the first message that carries it (Envoy 1.40 forwards the metadata
  with every message): request_headers normally, response_headers where the route skips the
  request side (`request_header_mode: SKIP`). The processor then tells Envoy, through
  `mode_override`, exactly which later messages are needed (the filter needs
  `allow_mode_override: true`). No plan -> nothing else is sent, nothing changes: Check emits
  a plan, possibly empty, for every allowed request to an endpoint whose rules change bodies,
  so a missing plan means "nothing to change" (ext_proc cannot know the endpoint; Check does),
  except on routes that `authz envoy-config` marks (gRPC metadata `x-authz-plan: required`,
  set on the routes of endpoints with body or response field rules): there a request that
  reaches the processor without a plan is refused (500) before the upstream sees it.
- request_headers: with response actions, `accept-encoding`, `range`, `if-range` and
  `if-none-match` are removed, so the upstream answers the whole representation, uncompressed.
- request_body (BUFFERED): the body must be the one Check saw (sha256), else 403; the plan's
  ops are replayed on the parsed JSON and the new body gets a matching content-length.
- response_headers: a response the actions cannot apply to exactly -> 502: not JSON,
  compressed, partial (206, `content-range`). Headers describing the unmasked body go: `etag`
  and digests always, `content-length` where there is no body (HEAD, 204, 304) to measure.
- response_body (BUFFERED): the `res.*` actions, with the current keyring; a body shaped
  differently from the rule's paths (a top-level array under `res.secret`, a string where an
  object is named) or any other failure -> 502, so nothing unmasked leaves.

Every failure is an ImmediateResponse with a JSON error body; no exception escapes a stream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3 import external_processor_pb2, external_processor_pb2_grpc
from envoy.service.ext_proc.v3.external_processor_pb2 import (
    BodyMutation,
    BodyResponse,
    CommonResponse,
    HeaderMutation,
    HeadersResponse,
    HttpBody,
    HttpHeaders,
    ImmediateResponse,
    ProcessingRequest,
    ProcessingResponse,
    TrailersResponse,
)
from envoy.type.v3.http_status_pb2 import HttpStatus

from authz.documents import apply_response, replay
from authz.envoy.encode import error_body
from authz.errors import PlanError, ResponseError
from authz.plan import EMPTY_HASH, METADATA_KEYS, PLAN_REQUIRED_METADATA, Plan, parse
from authz.request import parse_json_body

if TYPE_CHECKING:
    from authz.config.schema import Config
    from authz.runtime import Runtime

SERVICE: str = external_processor_pb2.DESCRIPTOR.services_by_name["ExternalProcessor"].full_name
NAMESPACE = "envoy.filters.http.ext_authz"  # where Envoy keeps the Check's dynamic metadata
BODY_CHANGED = "the request body is not the one authorized"
NOT_JSON = "the upstream response is not JSON"
UNDELIVERABLE = "the upstream response cannot be delivered"
PARTIAL = "the upstream response is partial"
# Removed upstream when response actions run: the upstream must answer the whole, identity-
# encoded representation (a range of it is not JSON the paths can be applied to).
_RESPONSE_REQUEST_HEADERS = ("accept-encoding", "range", "if-range", "if-none-match")
# Response headers that describe the unmasked body (its digest, or a validator that may be
# one): they never reach the client, who gets another body. A 304 to a client's guess of an
# ETag would be an oracle too, hence `if-none-match` above.
_UNMASKED_BODY_HEADERS = ("etag", "content-md5", "digest", "content-digest", "repr-digest")

log = logging.getLogger("authz.extproc")

_SEND, _SKIP = ProcessingMode.SEND, ProcessingMode.SKIP
_BUFFERED, _NONE = ProcessingMode.BUFFERED, ProcessingMode.NONE
# No plan: Envoy sends nothing more for this request (one message per request).
_NOTHING_MORE = ProcessingMode(
    request_body_mode=_NONE, response_header_mode=_SKIP, response_body_mode=_NONE
)


class _Fail(Exception):
    """Stop the stream with an immediate response: status and the client-facing message."""

    def __init__(self, status: int, message: str, details: str):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details  # Envoy's %RESPONSE_CODE_DETAILS%


def plan_text(req: ProcessingRequest) -> str | None:
    """The plan string from the forwarded ext_authz metadata, or None."""
    ns = req.metadata_context.filter_metadata.get(NAMESPACE)
    if ns is None:
        return None
    key = next((k for k in METADATA_KEYS if k in ns.fields), None)
    if key is None:
        return None
    value = ns.fields[key]
    if value.WhichOneof("kind") != "string_value":
        raise PlanError("the plan is not a string")
    text: str = value.string_value
    return text


# --- building responses ------------------------------------------------------------------


def _header(key: str, value: str) -> HeaderValueOption:
    return HeaderValueOption(header=HeaderValue(key=key, raw_value=value.encode()))


def _headers(headers: HttpHeaders) -> dict[str, str]:
    # Envoy 1.40 sends raw_value; older ones `value`. Repeated names: the last wins here.
    return {
        h.key.lower(): (h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value)
        for h in headers.headers.headers
    }


def _new_body(body: bytes) -> CommonResponse:
    return CommonResponse(
        header_mutation=HeaderMutation(set_headers=[_header("content-length", str(len(body)))]),
        body_mutation=BodyMutation(body=body),
    )


def _dump(doc: Any) -> bytes:
    """Compact UTF-8 JSON; ValueError for what JSON cannot carry (1e400 parsed as inf)."""
    try:
        return json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the input): keep it escaped
        return json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()


def immediate(status: int, message: str, request_id: str, details: str) -> ProcessingResponse:
    """A local reply from Envoy: the same JSON error shape as Check's denials."""
    body = error_body(message, request_id).encode()
    return ProcessingResponse(
        immediate_response=ImmediateResponse(
            status=HttpStatus(code=status),
            headers=HeaderMutation(set_headers=[_header("content-type", "application/json")]),
            body=body,
            details=details,
        )
    )


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


# --- one stream = one HTTP request -------------------------------------------------------


class ConfigVersion(Protocol):
    """What a stream reads of the config version serving (an authz.authorizer.Authorizer)."""

    @property
    def config(self) -> Config: ...

    @property
    def runtime(self) -> Runtime: ...


@dataclass
class Stream:
    """The state of one ext_proc stream; `handle` answers one message."""

    authorizer: ConfigVersion | None  # the config version of the stream's first message
    plan_required: bool = False  # the route's endpoint always gets a plan from Check
    plan: Plan | None = None
    plan_read: bool = False  # a plan is read once, from the first message that has one
    request_id: str = ""
    request_seen: bool = False  # request_headers came (else the route skips the request side)
    request_body_expected: bool = False
    request_body_seen: bool = False
    response_body_seen: bool = False

    def _version(self) -> ConfigVersion:
        if self.authorizer is None:  # never: the server serves once a config is loaded
            raise RuntimeError("no config version")
        return self.authorizer

    def handle(self, req: ProcessingRequest) -> ProcessingResponse:
        kind = req.WhichOneof("request")
        try:
            if not self.plan_read:
                self._read_plan(req)
                # A request that passed Check on such a route always carries a plan. (A stream
                # that starts at the response may be Envoy's local reply to a denial, which
                # has no plan and nothing from the upstream: it passes.)
                if self.plan is None and self.plan_required and kind == "request_headers":
                    log.error("ext_proc: no plan on a route whose endpoint always has one")
                    raise _Fail(500, "internal error", "authz_ext_proc_no_plan")
            return self._dispatch(kind, req)
        except _Fail as fail:
            log.warning(
                "ext_proc %s: %s (request id %a)", kind, fail.details, self.request_id or "-"
            )
            return immediate(fail.status, fail.message, self.request_id, fail.details)
        except Exception:
            log.exception("ext_proc internal error on %s (request id %a)", kind, self.request_id)
            status = 502 if kind and kind.startswith("response") else 500
            return immediate(status, "internal error", self.request_id, "authz_ext_proc_error")

    def _dispatch(self, kind: str | None, req: ProcessingRequest) -> ProcessingResponse:
        if kind == "request_headers":
            return self.request_headers(req, req.request_headers)
        if kind == "request_body":
            return ProcessingResponse(request_body=self.request_body(req.request_body))
        if kind == "response_headers":
            return self.response_headers(req.response_headers)
        if kind == "response_body":
            return ProcessingResponse(response_body=self.response_body(req.response_body))
        if kind == "request_trailers":
            return ProcessingResponse(request_trailers=TrailersResponse())
        if kind == "response_trailers":
            return ProcessingResponse(response_trailers=TrailersResponse())
        raise _Fail(500, "internal error", "authz_ext_proc_unknown_message")

    # --- request -------------------------------------------------------------------------

    def _read_plan(self, req: ProcessingRequest) -> None:
        if req.HasField("request_headers"):
            self.request_id = _headers(req.request_headers).get("x-request-id", "")
        try:
            text = plan_text(req)
            keyring = self._version().runtime.keyring
            self.plan = None if text is None else parse(text, keyring)
        except PlanError as exc:
            log.error("ext_proc: %s (request id %a)", exc, self.request_id or "-")
            kind = req.WhichOneof("request") or ""
            status = 502 if kind.startswith("response") else 500
            raise _Fail(status, "internal error", "authz_ext_proc_bad_plan") from None
        self.plan_read = self.plan is not None

    def request_headers(self, req: ProcessingRequest, headers: HttpHeaders) -> ProcessingResponse:
        self.request_seen = True
        if self.plan is None:
            return ProcessingResponse(
                request_headers=HeadersResponse(), mode_override=_NOTHING_MORE
            )
        plan = self.plan
        if headers.end_of_stream and plan.body_hash != EMPTY_HASH:
            raise _Fail(403, BODY_CHANGED, "authz_body_mismatch")
        self.request_body_expected = not headers.end_of_stream
        common = CommonResponse()
        if plan.response:
            common.header_mutation.remove_headers.extend(_RESPONSE_REQUEST_HEADERS)
        # The processor, not the route, decides which messages it needs: a route whose
        # processing_mode is narrower than the plan cannot silently skip a change.
        mode = ProcessingMode(
            request_body_mode=_BUFFERED if self.request_body_expected else _NONE,
            response_header_mode=_SEND if plan.response else _SKIP,
            response_body_mode=_BUFFERED if plan.response else _NONE,
        )
        return ProcessingResponse(
            request_headers=HeadersResponse(response=common), mode_override=mode
        )

    def request_body(self, body: HttpBody) -> BodyResponse:
        plan = self.plan
        if plan is None:
            return BodyResponse()
        if self.request_body_seen:  # STREAMED/BUFFERED_PARTIAL: chunks cannot be verified
            raise _Fail(500, "internal error", "authz_ext_proc_body_not_buffered")
        self.request_body_seen = True
        if not plan.authorizes(body.body):
            raise _Fail(403, BODY_CHANGED, "authz_body_mismatch")
        if not plan.request:
            return BodyResponse()
        try:
            doc = parse_json_body(body.body, self._version().config.limits)
            replay(doc, plan.request)
            new = _dump(doc)
        except Exception as exc:  # parsed in Check: only a plan that does not fit gets here
            log.error("ext_proc: cannot apply the request plan: %r", exc)
            raise _Fail(500, "internal error", "authz_ext_proc_plan_mismatch") from None
        return BodyResponse(response=_new_body(new))

    # --- response ------------------------------------------------------------------------

    def response_headers(self, headers: HttpHeaders) -> ProcessingResponse:
        plan = self.plan
        if plan is None:
            return ProcessingResponse(response_headers=HeadersResponse())
        if plan.request and not self.request_seen:
            # The route skips the request side: the upstream got the body unchanged.
            log.error("ext_proc: the plan changes the request but the route skips it")
            raise _Fail(502, "internal error", "authz_ext_proc_request_skipped")
        if plan.request and self.request_body_expected and not self.request_body_seen:
            # Envoy ignored mode_override (allow_mode_override off): the upstream already got
            # the body unchanged; at least its answer does not reach the client.
            log.error("ext_proc never received the request body: set allow_mode_override: true")
            raise _Fail(500, "internal error", "authz_ext_proc_request_body_skipped")
        if not plan.response:
            return ProcessingResponse(response_headers=HeadersResponse())
        hdrs = _headers(headers)
        if hdrs.get(":status") == "206" or "content-range" in hdrs:
            raise _Fail(502, PARTIAL, "authz_response_partial")
        common = CommonResponse()
        removed = common.header_mutation.remove_headers
        removed.extend(h for h in _UNMASKED_BODY_HEADERS if h in hdrs)
        if headers.end_of_stream:  # HEAD, 204, 304: no body, but its size would tell
            removed.append("content-length")
            return ProcessingResponse(response_headers=HeadersResponse(response=common))
        if not _is_json(hdrs.get("content-type", "")):
            raise _Fail(502, NOT_JSON, "authz_response_not_json")
        if hdrs.get("content-encoding", "identity").strip().lower() != "identity":
            raise _Fail(502, "the upstream response is encoded", "authz_response_encoded")
        # Where the plan first arrived here, the route's mode may not buffer the body.
        return ProcessingResponse(
            response_headers=HeadersResponse(response=common),
            mode_override=ProcessingMode(response_body_mode=_BUFFERED),
        )

    def response_body(self, body: HttpBody) -> BodyResponse:
        plan = self.plan
        if plan is None or not plan.response:
            return BodyResponse()
        if self.response_body_seen:
            raise _Fail(502, "internal error", "authz_ext_proc_body_not_buffered")
        self.response_body_seen = True
        try:
            doc = json.loads(body.body)
        except (ValueError, RecursionError):
            raise _Fail(502, NOT_JSON, "authz_response_not_json") from None
        try:
            apply_response(plan.response, doc)
            new = _dump(doc)
        except (ResponseError, ValueError, RecursionError) as exc:
            log.warning("ext_proc: response action failed: %s", exc)  # never a value
            raise _Fail(502, UNDELIVERABLE, "authz_response_action") from None
        return BodyResponse(response=_new_body(new))


# --- the service -------------------------------------------------------------------------


def _plan_required(context: Any) -> bool:
    """Whether the route marked its streams `x-authz-plan: required` (gRPC metadata)."""
    metadata = context.invocation_metadata() if context is not None else None
    return any(k == PLAN_REQUIRED_METADATA and v == "required" for k, v in metadata or ())


class ExtProcServicer(external_processor_pb2_grpc.ExternalProcessorServicer):
    def __init__(self, get_authorizer: Callable[[], ConfigVersion | None]):
        self.get_authorizer = get_authorizer

    async def Process(
        self, request_iterator: AsyncIterator[ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ProcessingResponse]:
        stream: Stream | None = None
        required = _plan_required(context)
        try:
            async for req in request_iterator:
                if stream is None:  # one config version per request
                    stream = Stream(self.get_authorizer(), plan_required=required)
                resp = stream.handle(req)
                yield resp
                if resp.HasField("immediate_response"):
                    return  # Envoy answers the client and closes the stream
        except grpc.aio.AioRpcError as exc:  # pragma: no cover - depends on grpc internals
            log.debug("ext_proc stream ended: %s", exc.code())
        except Exception:
            log.exception("ext_proc stream failed")

    def add_to_server(self, server: grpc.aio.Server) -> str:
        external_processor_pb2_grpc.add_ExternalProcessorServicer_to_server(self, server)
        return SERVICE
