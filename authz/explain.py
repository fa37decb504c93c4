"""Explain a decision: the rule evaluation tree as indented text (`authz check --explain`).

Built from the Decision's trace. Trace entries are appended post-order (a clause before the
rule that contains it) and their config paths encode the nesting, so the tree is rebuilt from
paths alone. When the compiled rule is at hand, rules that were never evaluated (an `and`
stopped early, an `or` decided by its first clause) are shown too, marked `skipped`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from authz.decision import Decision
from authz.rules.base import Rule, TraceEntry
from authz.rules.fields import Force, Remove, Transform
from authz.rules.match import Match
from authz.rules.query import Query
from authz.rules.webhook import Webhook

if TYPE_CHECKING:
    from authz.authorizer import Authorizer

INDENT = "  "


@dataclass(slots=True)
class Node:
    path: str
    kind: str
    result: str  # pass | fail | error | skipped
    detail: str = ""
    rule: str = ""  # what the rule compares or touches, from the compiled rule
    children: list[Node] = field(default_factory=list)


def is_child_path(child: str, parent: str) -> bool:
    """`a.clauses[0]` and `a.clause` are nested in `a`; `a2` is not."""
    return len(child) > len(parent) and child.startswith(parent) and child[len(parent)] in ".["


def tree_from_trace(trace: Iterable[TraceEntry]) -> list[Node]:
    """Rebuild the evaluation tree from post-order entries; returns the roots in order."""
    pending: list[Node] = []
    for entry in trace:
        node = Node(entry.path, entry.kind, entry.result, entry.detail)
        # Everything pending under this path was evaluated inside it, in order.
        split = len(pending)
        while split > 0 and is_child_path(pending[split - 1].path, node.path):
            split -= 1
        node.children, pending[split:] = pending[split:], [node]
    return pending


def tree_from_rule(rule: Rule, trace: Iterable[TraceEntry]) -> Node:
    """The whole compiled rule, each node with its traced outcome or `skipped`."""
    by_path: dict[str, TraceEntry] = {}
    for entry in trace:
        by_path.setdefault(entry.path, entry)  # a rule is evaluated at most once per Check
    return _from_rule(rule, by_path)


def _from_rule(rule: Rule, by_path: dict[str, TraceEntry]) -> Node:
    entry = by_path.get(rule.path)
    node = Node(
        rule.path,
        rule.kind,
        entry.result if entry else "skipped",
        entry.detail if entry else "",
        describe(rule),
    )
    node.children = [_from_rule(c, by_path) for c in rule.children()]
    return node


def describe(rule: Rule) -> str:
    """What a compiled rule looks at, in the config's own words (never a value)."""
    if isinstance(rule, Match):
        return f"{rule.f1_text} {rule.op_text} {rule.f2_text} ({rule.type})"
    if isinstance(rule, Query):
        return f"{rule.alias}.{rule.col}"
    if isinstance(rule, Webhook):
        return f"POST {rule.label}"
    if isinstance(rule, Force):
        return f"{rule.fp.text} = {rule.value_text}"
    if isinstance(rule, Remove | Transform) and rule.fps:
        return ", ".join(fp.text for fp in rule.fps)
    return ""


# --- text --------------------------------------------------------------------------------

_MARK = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "skipped": "skip"}


def render_tree(roots: Iterable[Node], indent: str = "") -> list[str]:
    lines: list[str] = []
    for root in roots:
        _render(root, indent, "", lines)
    return lines


def _render(node: Node, indent: str, parent: str, lines: list[str]) -> None:
    name = _relative(node.path, parent)
    head = f"{indent}{_MARK[node.result]:<5} {name}: {node.kind}"
    if node.rule:
        head += f"  [{node.rule}]"
    if node.detail:
        head += f"  -> {node.detail}"
    elif node.result == "skipped":
        head += "  (not evaluated)"
    lines.append(head)
    for child in node.children:
        _render(child, indent + INDENT, node.path, lines)


def _relative(path: str, parent: str) -> str:
    if parent and is_child_path(path, parent):
        return path[len(parent) :].lstrip(".")
    return path


def explain_lines(decision: Decision, rule: Rule | None = None) -> list[str]:
    """The decision and its evaluation tree; `rule` (the endpoint's) adds skipped rules."""
    verdict = "ALLOW" if decision.allowed else f"DENY {decision.status}"
    endpoint = f"{decision.service or '?'}.{decision.endpoint or '?'}"
    lines = [f"decision: {verdict}  endpoint {endpoint}", f"reason:   {decision.reason}"]
    if not decision.allowed and decision.message:
        lines.append(f"error:    {decision.message}  (sent to the client)")
    if decision.dry_run:
        lines.append("dry-run:  the rules denied; the endpoint is in dry-run mode")
    if decision.identity is not None:  # who the caller was, and what the rules saw of them
        auth = json.dumps(decision.auth, sort_keys=True, default=str)
        lines.append(f"identity: {decision.identity}  args.auth = {auth}")
    trace = decision.trace or []
    if not trace:
        lines.append("rules:    none evaluated (decided before the rule ran)")
    else:
        lines.append("rules:")
    if rule is not None:
        lines.extend(render_tree([tree_from_rule(rule, trace)], INDENT))
    else:
        lines.extend(render_tree(tree_from_trace(trace), INDENT))
    return lines


def explain(decision: Decision, rule: Rule | None = None) -> str:
    return "\n".join(explain_lines(decision, rule))


def endpoint_rule(authorizer: Authorizer, decision: Decision) -> Rule | None:
    """The compiled rule of the decision's endpoint, when it has one."""
    for ep in authorizer.endpoints:
        if ep.service == decision.service and ep.name == decision.endpoint:
            return ep.rule
    return None


async def explain_requests(authorizer: Authorizer, items: list[dict[str, Any]]) -> str:
    """`authz check --explain`: every request of the file, evaluated with a trace."""
    from authz.checkfile import to_request

    await authorizer.runtime.start()
    blocks = []
    try:
        for n, item in enumerate(items):
            req = to_request(item, n)
            decision = await authorizer.check(req, trace=True)
            target = req.path + (f"?{req.query_string}" if req.query_string else "")
            head = f"request [{n}]: {req.method} {target}"
            lines = explain_lines(decision, endpoint_rule(authorizer, decision))
            blocks.append("\n".join([head, *(INDENT + line for line in lines)]))
    finally:
        await authorizer.runtime.close()
    return "\n\n".join(blocks)
