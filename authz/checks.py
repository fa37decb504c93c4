"""The ext_authz Check handler, for both of Envoy's transports: raw bytes in, a serialized
CheckResponse out (gRPC), or a framed request in, prebuilt response bytes out (HTTP), always.

The handler receives raw bytes and decodes them itself, so that even a CheckRequest that
protobuf cannot parse gets a deny rather than a gRPC error (a gRPC error would hand the
decision to Envoy's failure_mode_allow). Only decode and encode differ between the transports;
`decide` is the rest. Each Check is counted in the metrics and, when on, written to the
decision log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import perf_counter
from typing import Any, TypeVar

from envoy.service.auth.v3 import external_auth_pb2

from authz.authorizer import Authorizer
from authz.decision import Decision
from authz.envoy.decode import decode
from authz.envoy.encode import encode, serialize
from authz.envoy.http.decode import decode as decode_http
from authz.envoy.http.encode import response as http_response
from authz.envoy.http.server import Parsed
from authz.errors import RequestError
from authz.observability.decisionlog import DecisionLog
from authz.observability.metrics import Metrics
from authz.request import Request

log = logging.getLogger("authz.server")

AUTH_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
# The last resort when even encoding a decision fails: a fixed 500 deny.
_INTERNAL_ERROR: bytes = encode(
    Decision(False, 500, "internal error", "internal error")
).SerializeToString()
_HTTP_INTERNAL_ERROR = http_response(Decision(False, 500, "internal error", "internal error"))

Message = TypeVar("Message")  # what a transport hands over: CheckRequest bytes, or Parsed


class CheckHandler:
    """Answers Check with the config version installed in `authorizer` (the server swaps it
    on reload; a Check keeps the version it started with)."""

    authorizer: Authorizer | None
    metrics: Metrics
    decisions: DecisionLog
    check_http_prefix: str  # http_service.path_prefix, removed from every HTTP Check's path

    async def check(self, data: bytes, context: Any) -> bytes:
        return await self.decide(self._decode_grpc, data, serialize, _INTERNAL_ERROR)

    def _decode_grpc(self, data: bytes) -> Request:
        # The client certificate is read only for a config with auth.mtls (a Check without it
        # costs what it did); a config swapped in meanwhile sees NO_PEER: a 401, never XFCC.
        authorizer = self.authorizer
        return decode(data, authorizer is not None and authorizer.reads_peer)

    async def check_http(self, parsed: Parsed) -> bytes:
        """A Check over Envoy's ext_authz HTTP transport: only decode and encode differ."""
        return await self.decide(self._decode_http, parsed, http_response, _HTTP_INTERNAL_ERROR)

    def _decode_http(self, parsed: Parsed) -> Request:
        p = parsed
        return decode_http(p.method, p.target, p.headers, p.body, self.check_http_prefix)

    async def decide(
        self,
        decode_fn: Callable[[Message], Request],
        data: Message,
        encode_fn: Callable[[Decision], bytes],
        internal_error: bytes,
    ) -> bytes:
        """decode -> resolve, identify, evaluate (the Authorizer) -> encode, for either
        transport; every path out is an answer (a deny on any error)."""
        authorizer = self.authorizer  # one config version for the whole Check
        if authorizer is None:  # never: the server accepts Checks once a config is loaded
            return internal_error
        start = perf_counter()
        try:
            try:
                req = decode_fn(data)
            except RequestError as exc:
                decision = Decision(False, 400, str(exc), str(exc))
            else:
                decision = await authorizer.check(req)
            out = encode_fn(decision)
        except Exception:
            log.exception("internal error serving Check")
            return internal_error
        # Metrics and the decision log (inline: one call fewer per Check).
        seconds = perf_counter() - start
        key = (decision.service, decision.endpoint)
        metrics = authorizer.endpoint_metrics.get(key) or self.metrics.unmatched
        metrics.observe(decision.allowed, decision.status, seconds)
        if self.decisions.enabled:
            self.decisions.log(decision_record(decision, seconds, authorizer.version))
        return out


def decision_record(d: Decision, seconds: float, version: str) -> dict[str, Any]:
    """One decision log line (masked again by the writer; no token is ever put in it)."""
    record: dict[str, Any] = {
        "requestId": d.request_id,
        "service": d.service,
        "endpoint": d.endpoint,
        "allowed": d.allowed,
        "status": d.status,
        "reason": d.reason,
        "latencyMs": round(seconds * 1000, 3),
        "config": version,
    }
    if d.dry_run:
        record["dryRun"] = True
    return record
