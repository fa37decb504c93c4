"""The ext_authz Check handler: raw bytes in, serialized CheckResponse out, always.

The handler receives raw bytes and decodes them itself, so that even a CheckRequest that
protobuf cannot parse gets a deny rather than a gRPC error (a gRPC error would hand the
decision to Envoy's failure_mode_allow). Each Check is counted in the metrics and, when on,
written to the decision log.
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import Any

from envoy.service.auth.v3 import external_auth_pb2

from authz.authorizer import Authorizer
from authz.decision import Decision
from authz.envoy.decode import decode
from authz.envoy.encode import encode, serialize
from authz.errors import RequestError
from authz.observability.decisionlog import DecisionLog
from authz.observability.metrics import Metrics

log = logging.getLogger("authz.server")

AUTH_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
# The last resort when even encoding a decision fails: a fixed 500 deny.
_INTERNAL_ERROR: bytes = encode(
    Decision(False, 500, "internal error", "internal error")
).SerializeToString()


class CheckHandler:
    """Answers Check with the config version installed in `authorizer` (the server swaps it
    on reload; a Check keeps the version it started with)."""

    authorizer: Authorizer | None
    metrics: Metrics
    decisions: DecisionLog

    async def check(self, data: bytes, context: Any) -> bytes:
        authorizer = self.authorizer  # one config version for the whole Check
        if authorizer is None:  # never: the server accepts Checks once a config is loaded
            return _INTERNAL_ERROR
        start = perf_counter()
        try:
            try:
                req = decode(data)
            except RequestError as exc:
                decision = Decision(False, 400, str(exc), str(exc))
            else:
                decision = await authorizer.check(req)
            out = serialize(decision)
        except Exception:
            log.exception("internal error serving Check")
            return _INTERNAL_ERROR
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
