"""The outcome of one Check: what Envoy (or the CLI, or the debug API) is told."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from authz.rules.base import TraceEntry


@dataclass(slots=True)
class Decision:
    allowed: bool
    status: int = 200  # HTTP status of a denial (200 when allowed)
    reason: str = ""  # for the decision log; never sent to the client
    message: str | None = None  # the `error` sent to the client in a denial's JSON body
    service: str | None = None
    endpoint: str | None = None
    request_id: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)  # set on the upstream request
    headers_to_remove: list[str] = field(default_factory=list)
    query_parameters_to_set: list[tuple[str, str]] = field(default_factory=list)
    query_parameters_to_remove: list[str] = field(default_factory=list)
    response_headers_to_add: list[tuple[str, str]] = field(default_factory=list)
    params: Any = None  # args.params after the rule's request-side changes
    trace: list[TraceEntry] | None = None
    dry_run: bool = False  # the rules denied, but the endpoint is in dry-run mode
    plan: Any = None  # body changes for ext_proc (request and response), when any

    def to_json(self) -> dict[str, Any]:
        """The decision object of `authz check` (field names follow OPA-Envoy's)."""
        out: dict[str, Any] = {
            "allowed": self.allowed,
            "status": self.status,
            "reason": self.reason,
            "service": self.service,
            "endpoint": self.endpoint,
            "params": self.params,
            "headers": dict(self.headers),
            "headers_to_remove": self.headers_to_remove,
            "query_parameters_to_set": dict(self.query_parameters_to_set),
            "query_parameters_to_remove": self.query_parameters_to_remove,
            "response_headers_to_add": dict(self.response_headers_to_add),
        }
        if not self.allowed:
            out["error"] = self.message
        if self.dry_run:
            out["dry_run"] = True
        if self.trace is not None:
            out["trace"] = [
                {
                    "path": t.path,
                    "rule": t.kind,
                    "result": "pass" if t.passed else "error" if t.error else "fail",
                    "detail": t.detail,
                }
                for t in self.trace
            ]
        return out
