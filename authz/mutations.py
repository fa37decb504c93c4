"""Field-rule changes -> what Envoy is told: header and query mutations on the Check
response, and the body plan that ext_proc applies (authz/plan.py)."""

from __future__ import annotations

import json
from typing import Any

from authz import plan
from authz.decision import Decision
from authz.documents import request_changes, response_plan


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
    response = response_plan(changes)
    if body_plan or body_ops or response:
        decision.plan = plan.build(body, body_ops, response)


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
