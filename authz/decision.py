"""The outcome of one Check: what Envoy (or the CLI, or the debug API) is told."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from authz.rules.base import TraceEntry


@dataclass(slots=True, init=False)
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
    identity: str | None = None  # traced checks only: the source that authenticated the caller
    auth: Any = None  # traced checks only: args.auth

    def __init__(
        self,
        allowed: bool,
        status: int = 200,
        reason: str = "",
        message: str | None = None,
        service: str | None = None,
        endpoint: str | None = None,
        request_id: str = "",
        headers: list[tuple[str, str]] | None = None,
        headers_to_remove: list[str] | None = None,
        query_parameters_to_set: list[tuple[str, str]] | None = None,
        query_parameters_to_remove: list[str] | None = None,
        response_headers_to_add: list[tuple[str, str]] | None = None,
        params: Any = None,
        trace: list[TraceEntry] | None = None,
        dry_run: bool = False,
        plan: Any = None,
        identity: str | None = None,
        auth: Any = None,
    ):
        # The generated __init__, but `[]` for a missing list: the dataclass's default_factory
        # calls list(), up to five times per Decision, and every Check makes one.
        self.allowed = allowed
        self.status = status
        self.reason = reason
        self.message = message
        self.service = service
        self.endpoint = endpoint
        self.request_id = request_id
        self.headers = [] if headers is None else headers
        self.headers_to_remove = [] if headers_to_remove is None else headers_to_remove
        self.query_parameters_to_set = (
            [] if query_parameters_to_set is None else query_parameters_to_set
        )
        self.query_parameters_to_remove = (
            [] if query_parameters_to_remove is None else query_parameters_to_remove
        )
        self.response_headers_to_add = (
            [] if response_headers_to_add is None else response_headers_to_add
        )
        self.params = params
        self.trace = trace
        self.dry_run = dry_run
        self.plan = plan
        self.identity = identity
        self.auth = auth

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
        if self.identity is not None:
            out["identity"], out["auth"] = self.identity, self.auth
        if self.trace is not None:
            out["trace"] = [
                {
                    "path": t.path,
                    "rule": t.kind,
                    "result": t.result,
                    "detail": t.detail,
                }
                for t in self.trace
            ]
        return out
