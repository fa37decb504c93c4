"""Field-rule changes -> what Envoy is told: header and query mutations on the Check
response, and the body plan that ext_proc applies (docs/rules.md, the body plan).

The plan travels in the ext_authz dynamic metadata (one JSON string, so numbers keep their
type), so ext_proc applies what Check decided without evaluating any rule again.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from authz.decision import Decision
from authz.rules.fields import request_changes, response_plan

PLAN_KEY = "plan"  # key in the ext_authz dynamic metadata (namespace envoy.filters.http.ext_authz)
# Over Envoy's HTTP transport the plan travels as this Check response header, which Envoy
# turns into dynamic metadata under the same namespace (`dynamic_metadata_from_headers`).
PLAN_HEADER = "x-authz-body-plan"
# gRPC metadata (`x-authz-plan: required`) that the generated Envoy config sets on the ext_proc
# streams of routes whose endpoint has body or response field rules: there, no plan is an error.
PLAN_REQUIRED_METADATA = "x-authz-plan"


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def apply_changes(
    decision: Decision, args: dict[str, Any], changes: list[Any], body: bytes, body_plan: bool
) -> None:
    """Fill the decision's mutations from the changes recorded during evaluation.

    `body_plan` is set for endpoints with body or response field rules: they always get a plan
    (possibly empty), so ext_proc can tell "nothing to change" from "Check never saw this"."""
    body_ops: list[dict[str, Any]] = []
    changed_query: dict[str, None] = {}
    changed_headers: dict[str, None] = {}
    params_are_query = args.get("params") is args.get("query")
    for change in request_changes(changes):
        target = "query" if change.target == "params" and params_are_query else change.target
        if target == "query":
            changed_query[str(change.path[0])] = None
        elif target == "headers":
            changed_headers[str(change.path[0])] = None
        else:
            body_ops.append(change.op())
    _query(decision, args.get("query") or {}, changed_query)
    _headers(decision, args.get("headers") or {}, changed_headers)
    response = [a.to_json() for a in response_plan(changes)]
    if body_plan or body_ops or response:
        decision.plan = {
            "v": 1,
            "bodyHash": body_hash(body),
            "request": body_ops,
            "response": response,
        }


def _query(decision: Decision, query: dict[str, Any], keys: dict[str, None]) -> None:
    for key in keys:
        if key not in query:
            decision.query_parameters_to_remove.append(key)
            continue
        value = query[key]
        for v in value if isinstance(value, list) else [value]:
            decision.query_parameters_to_set.append((key, _text(v)))


def _headers(decision: Decision, headers: dict[str, Any], keys: dict[str, None]) -> None:
    for key in keys:
        if key in headers:
            decision.headers.append((key, _text(headers[key])))
        else:
            decision.headers_to_remove.append(key)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def encode_plan(plan: dict[str, Any]) -> str:
    return json.dumps(plan, separators=(",", ":"))
