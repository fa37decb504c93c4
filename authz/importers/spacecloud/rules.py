"""Space Cloud security rules (gateway `config.Rule`) as authz rules.

Rule names and fields are the same in both languages, so most rules are copied. What changes:
- a rule Space Cloud evaluated differently (an empty `and`/`or`, a scalar `in`/`notIn` list,
  `fields` given as a reference, a literal of the wrong type) is rewritten to what it was
  evidently meant to say, or to a `deny`, and reported;
- Go templates (webhook `claims`, `requestTemplate`, `template`, `outputFormat`) have no
  equivalent: left out and reported;
- references to request values that became path parameters are rewritten to `args.pathParams`.
A rule missing the fields its kind needs stops the import (ImportStopped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from authz.importers.spacecloud.report import ImportStopped, Report

EVALS = {
    "string": {"==", "!=", "in", "notIn"},
    "number": {"==", "!=", "<", "<=", ">", ">=", "in", "notIn"},
    "bool": {"==", "!="},
    "date": {"==", "!=", "<", "<=", ">", ">="},
}
FIELD_RULES = {"remove", "encrypt", "decrypt", "hash"}
REQUIRED = {
    "match": ("eval", "type", "f1", "f2"),
    "and": ("clauses",),
    "or": ("clauses",),
    "query": ("db", "col"),
    "webhook": ("url",),
    "force": ("field", "value"),
    **{kind: ("fields",) for kind in FIELD_RULES},
}
KINDS = {"allow", "deny", "authenticated", *REQUIRED}


@dataclass
class RuleContext:
    report: Report
    databases: set[str]  # aliases carried over (a query on another one cannot run)
    path_params: dict[str, str] = field(default_factory=dict)  # args.params.X -> pathParams name

    def reference(self, text: str) -> str:
        """`args.params.orderId` -> `args.pathParams.orderId` when orderId is now in the path."""
        for old, name in self.path_params.items():
            text = re.sub(re.escape(old) + r"(?![A-Za-z0-9_])", f"args.pathParams.{name}", text)
        return text


def is_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("args.", "utils.", "res."))


def convert_rule(rule: Any, where: str, ctx: RuleContext) -> dict[str, Any]:
    if not isinstance(rule, dict):
        raise ImportStopped(f"{where}: a rule must be a mapping, got {type(rule).__name__}")
    kind = rule.get("rule")
    if kind not in KINDS:
        raise ImportStopped(f"{where}.rule: unknown rule kind {kind!r}")
    missing = [f for f in REQUIRED.get(kind, ()) if f not in rule]
    if missing:
        raise ImportStopped(f"{where}: a `{kind}` rule needs {', '.join(missing)}")
    out: dict[str, Any] = {"rule": kind}
    converted = _CONVERT.get(kind, _plain)(rule, out, where, ctx)
    if rule.get("error") and "error" not in converted:
        converted["error"] = _literal(rule["error"])
    return converted


def _plain(
    rule: dict[str, Any], out: dict[str, Any], where: str, ctx: RuleContext
) -> dict[str, Any]:
    return out


def _logic(
    rule: dict[str, Any], out: dict[str, Any], where: str, ctx: RuleContext
) -> dict[str, Any]:
    clauses = rule["clauses"]
    if not isinstance(clauses, list):
        raise ImportStopped(f"{where}.clauses: expected a list")
    if not clauses:
        ctx.report.add(
            "differs", where, f"an empty `{rule['rule']}`: Space Cloud let every request pass",
            "written as `deny`: write the condition you meant",
        )  # fmt: skip
        return _deny(f"empty `{rule['rule']}` in Space Cloud")
    out["clauses"] = [convert_rule(c, f"{where}.clauses[{i}]", ctx) for i, c in enumerate(clauses)]
    return out


def _match(
    rule: dict[str, Any], out: dict[str, Any], where: str, ctx: RuleContext
) -> dict[str, Any]:
    kind, op = rule["type"], rule["eval"]
    if kind not in EVALS or op not in EVALS[kind]:
        ctx.report.add(
            "not-carried", where, f"match of type {kind!r} with eval {op!r}: Space Cloud "
            "failed every request on it", "written as `deny`: fix the type or eval",
        )  # fmt: skip
        return _deny(f"match {kind!r} {op!r} from Space Cloud")
    f1, f2 = _value(rule["f1"], ctx), _value(rule["f2"], ctx)
    if op in ("in", "notIn") and not isinstance(f2, list) and not is_reference(f2):
        if op == "in":  # Space Cloud read a scalar as an empty list: nothing was ever in it
            ctx.report.add(
                "differs", f"{where}.f2", f"`in` with the scalar {f2!r}: Space Cloud never "
                "passed it", "written as `deny` (as before): write f2 as a list",
            )  # fmt: skip
            return _deny("`in` with a scalar f2")
        ctx.report.add(
            "differs", f"{where}.f2", f"`notIn` with the scalar {f2!r}: Space Cloud let every "
            "request pass", f"written as the list [{f2!r}]: `notIn` now tests membership",
        )  # fmt: skip
        f2 = [f2]
    if kind == "string" and any(isinstance(v, (int, float)) for v in (f1, f2)):
        ctx.report.add(
            "differs", where, "type string compared with a number or bool: Space Cloud never "
            "passed it", "written as `deny` (as before): fix the type",
        )  # fmt: skip
        return _deny("a string match with a non-string literal")
    literal = next((v for v in (f1, f2) if isinstance(v, str) and not is_reference(v)), None)
    if kind == "number" and literal is not None:
        ctx.report.add(
            "differs", where, f"type number compared with the string {literal!r}: Space Cloud "
            "compared with 0 instead", "written as `deny`: write the number you meant",
        )  # fmt: skip
        return _deny("a number match with a string literal")
    if kind == "bool" and literal is not None:
        ctx.report.add(
            "differs", f"{where}.type", f"type bool compared with the string {literal!r}: in "
            "Space Cloud it always errored (a rule never passed, a field rule's clause never "
            "applied its action)", "written as type string: the comparison now works",
        )  # fmt: skip
        kind = "string"
    out.update(type=kind, eval=op, f1=f1, f2=f2)
    return out


def _query(
    rule: dict[str, Any], out: dict[str, Any], where: str, ctx: RuleContext
) -> dict[str, Any]:
    if rule["db"] not in ctx.databases:
        ctx.report.add(
            "not-carried", f"{where}.db", f"a query on database {rule['db']!r}, which was "
            "not carried over", "written as `deny`: declare the database under `databases`",
        )  # fmt: skip
        return _deny(f"query on database {rule['db']!r}")
    find = rule.get("find") or {}
    if not isinstance(find, dict):
        raise ImportStopped(f"{where}.find: expected a mapping")
    out.update(db=rule["db"], col=_literal(rule["col"]), find=_value(find, ctx))
    _store_and_cache(rule, out, where, ctx)
    if rule.get("clause"):
        out["clause"] = convert_rule(rule["clause"], f"{where}.clause", ctx)
    else:  # Space Cloud evaluated the missing clause and crashed the request
        ctx.report.add(
            "differs", where, "a query without a clause: Space Cloud never passed it",
            "passes when at least one document matches",
        )  # fmt: skip
    return out


def _webhook(
    rule: dict[str, Any], out: dict[str, Any], where: str, ctx: RuleContext
) -> dict[str, Any]:
    out["url"] = _literal(rule["url"])
    _store_and_cache(rule, out, where, ctx)
    for key, what in (
        ("claims", "the claims of the token the webhook received"),
        ("requestTemplate", "the body the webhook received"),
        ("outputFormat", "the format of the templated body"),
    ):
        if rule.get(key):
            ctx.report.add(
                "not-carried", f"{where}.{key}", f"a Go template for {what}",
                f"left out: rewrite it as a `{key}` object of references"
                if key != "outputFormat" else "left out: authz sends JSON",
            )  # fmt: skip
    ctx.report.add(
        "differs", where, "Space Cloud sent the webhook the caller's token and its own token",
        "the webhook gets a short-lived service token (`forwardToken: true` adds the caller's); "
        "authz waits `timeout` for it, 100ms unless set",
    )  # fmt: skip
    return out


def _force(
    rule: dict[str, Any], out: dict[str, Any], where: str, ctx: RuleContext
) -> dict[str, Any]:
    out.update(field=rule["field"], value=_value(rule["value"], ctx))
    return _with_clause(rule, out, where, ctx)


def _fields(
    rule: dict[str, Any], out: dict[str, Any], where: str, ctx: RuleContext
) -> dict[str, Any]:
    fields = rule["fields"]
    if isinstance(fields, str):
        ctx.report.add(
            "differs", f"{where}.fields", f"`fields` given as the reference {fields!r}: the "
            "request decided which fields Space Cloud changed",
            "written as `deny`: list the fields in the rule",
        )  # fmt: skip
        return _deny(f"`{rule['rule']}` with fields from a reference")
    if not isinstance(fields, list) or not fields or not all(isinstance(f, str) for f in fields):
        raise ImportStopped(f"{where}.fields: expected a list of field paths")
    if rule["rule"] == "hash":
        return _hash(rule, fields, where, ctx)
    out["fields"] = list(fields)
    return _with_clause(rule, out, where, ctx)


def _hash(rule: dict[str, Any], fields: list[str], where: str, ctx: RuleContext) -> dict[str, Any]:
    # Space Cloud hashes request fields to base64 and response fields to hex.
    groups = [
        ([f for f in fields if not f.startswith("res.")], "base64"),
        ([f for f in fields if f.startswith("res.")], "hex"),
    ]
    rules = []
    for group, encoding in groups:
        if group:
            out = {"rule": "hash", "fields": group}
            if encoding == "hex":
                out["encoding"] = "hex"
            rules.append(_with_clause(rule, out, where, ctx))
    return rules[0] if len(rules) == 1 else {"rule": "and", "clauses": rules}


def _with_clause(
    rule: dict[str, Any], out: dict[str, Any], where: str, ctx: RuleContext
) -> dict[str, Any]:
    if rule.get("clause"):
        out["clause"] = convert_rule(rule["clause"], f"{where}.clause", ctx)
        ctx.report.add(
            "note", f"{where}.clause", "Space Cloud skipped the action when this clause errored",
            "a clause that errors (a missing value, a wrong type) now denies the request",
        )  # fmt: skip
    return out


def _store_and_cache(
    rule: dict[str, Any], out: dict[str, Any], where: str, ctx: RuleContext
) -> None:
    if rule.get("store"):
        out["store"] = rule["store"]
    cache = rule.get("cache")
    if isinstance(cache, dict) and cache.get("ttl"):
        out["cache"] = {"ttl": f"{int(cache['ttl'])}s"}  # Space Cloud: seconds
        if cache.get("instantInvalidate"):
            ctx.report.add(
                "not-carried", f"{where}.cache.instantInvalidate",
                "Space Cloud dropped cached results when the data changed",
                "cached results now live for the whole ttl: keep it short",
            )  # fmt: skip


def _deny(why: str) -> dict[str, Any]:
    return {"rule": "deny", "error": f"not carried over: {why}"}


def _value(value: Any, ctx: RuleContext) -> Any:
    """A rule value: references rewritten for path parameters, literal `$` escaped."""
    if isinstance(value, str):
        return ctx.reference(value) if is_reference(value) else _literal(value)
    if isinstance(value, dict):
        return {k: _value(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [_value(v, ctx) for v in value]
    return value


def _literal(text: Any) -> Any:
    # authz reads `${VAR}` in every string value; `$$` keeps a `$` literal.
    return text.replace("$", "$$") if isinstance(text, str) else text


_CONVERT = {
    "and": _logic, "or": _logic, "match": _match, "query": _query, "webhook": _webhook,
    "force": _force, **{kind: _fields for kind in FIELD_RULES},
}  # fmt: skip


def secret_references(node: Any, where: str, found: list[str]) -> list[str]:
    """Places where Space Cloud would have read one of its own `secrets.*`."""
    if isinstance(node, str) and node.startswith("secrets."):
        found.append(where)
    elif isinstance(node, dict):
        for k, v in node.items():
            secret_references(v, f"{where}.{k}", found)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            secret_references(v, f"{where}[{i}]", found)
    return found
