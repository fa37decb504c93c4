"""One Space Cloud project as an authz config (a dict) plus the environment it needs.

Secret values (HS secrets, private keys, the AES keys, connection strings) never go into the
config: it names them as `${VAR}` and their values are returned separately, for the
`--env-out` file.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from authz.identity.keys import _HMAC_MIN_BYTES
from authz.importers.spacecloud.report import ImportStopped, Report
from authz.importers.spacecloud.rules import RuleContext, convert_rule, secret_references
from authz.importers.spacecloud.source import Project

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
TEMPLATE_FIELDS = ("requestTemplate", "responseTemplate", "graphTemplate")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_HEADER = re.compile(r"^[A-Za-z0-9_-]+$")  # a header name that is also a path segment


@dataclass
class Result:
    config: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    report: Report = field(default_factory=Report)
    rotate: list[str] = field(default_factory=list)  # env vars to rotate before it validates


def convert_project(project: Project) -> Result:
    result = Result(config={"project": project.id})
    report = result.report
    for where, what in project.skipped:
        report.add("not-carried", where, what,
                   "authz authorizes remote services only: left out")  # fmt: skip
    _secrets(project.config.get("secrets") or [], result)
    _aes_key(project.config.get("aesKey"), result)
    databases = _databases(project.databases, result)
    if databases:
        result.config["databases"] = databases
    services = {}
    for sid, svc in sorted(project.services.items()):
        where = project.origin.get(f"service:{sid}", f"remoteServices.{sid}")
        services[_name(sid, where)] = _service(svc, where, set(databases), result)
    result.config["services"] = services
    report.add(
        "note", f"project {project.id}", "a token whose `id` was Space Cloud's internal user "
        "id passed every rule; a token with `exp: 0` never expired",
        "no such bypass; `exp: 0` is expired; a missing or bad token is a 401 (was 403)",
    )  # fmt: skip
    return result


# --- secrets -----------------------------------------------------------------------------


def _secrets(secrets: Any, result: Result) -> None:
    if not isinstance(secrets, list):
        raise ImportStopped("projectConfig.secrets: expected a list")
    out = []
    for i, s in enumerate(secrets):
        where = f"projectConfig.secrets[{i}]"
        if not isinstance(s, dict):
            raise ImportStopped(f"{where}: expected a mapping")
        converted = _secret(s, i, where, result)
        if converted is not None:
            out.append(converted)
    signers = [s for s in out if "jwksUrl" not in s]
    if signers and not any(s.get("primary") for s in signers):
        signers[0]["primary"] = True  # Space Cloud signed with the first key then
    if out:
        result.config["auth"] = {"secrets": out}


def _secret(s: dict[str, Any], i: int, where: str, result: Result) -> dict[str, Any] | None:
    alg = s.get("alg") or "HS256"
    kid = s.get("kid") or None
    out: dict[str, Any] = {}
    var = _unique(f"AUTHZ_SC_SECRET_{_env_part(kid or str(i))}", result.env)
    if alg == "JWK_URL":
        if not s.get("jwkUrl"):
            raise ImportStopped(f"{where}.jwkUrl: missing")
        out["jwksUrl"] = s["jwkUrl"]
        if s.get("isPrimary"):
            result.report.add("note", f"{where}.isPrimary", "a JWKS secret marked primary",
                              "a JWKS URL cannot sign: another key signs")  # fmt: skip
    elif alg in ("HS256", "HS384", "HS512"):
        value = s.get("secret")
        if not isinstance(value, str) or not value:
            raise ImportStopped(f"{where}.secret: missing")
        out.update(alg=alg, secret=f"${{{var}}}")
        result.env[var] = value
        need = _HMAC_MIN_BYTES[alg]
        if len(value.encode()) < need:
            result.rotate.append(var)
            result.report.add(
                "rotate", f"{where}.secret", f"an {alg} secret of {len(value.encode())} bytes: "
                f"authz needs at least {need}; the config does not validate until it is rotated",
                f"put a new random secret in {var} (e.g. `openssl rand -base64 48`), reissue "
                "tokens, and sign them with the new secret in Space Cloud too during the switch",
            )  # fmt: skip
    elif alg in ("RS256", "RS256_PUBLIC"):
        if not s.get("publicKey"):
            raise ImportStopped(f"{where}.publicKey: missing")
        out.update(alg="RS256", publicKey=s["publicKey"])
        if alg == "RS256" and s.get("privateKey"):
            out["privateKey"] = f"${{{var}_PRIVATE_KEY}}"
            result.env[f"{var}_PRIVATE_KEY"] = s["privateKey"]
    else:
        raise ImportStopped(f"{where}.alg: unknown algorithm {alg!r}")
    if kid and "jwksUrl" not in out:
        out["kid"] = kid
    if s.get("isPrimary") and "jwksUrl" not in out:
        out["primary"] = True
    _claims_lists(s, out, where, result)
    return out


def _claims_lists(s: dict[str, Any], out: dict[str, Any], where: str, result: Result) -> None:
    aud = [a for a in s.get("aud") or [] if a]
    if aud:
        out["audience"] = aud if len(aud) > 1 else aud[0]
    iss = [a for a in s.get("iss") or [] if a]
    if iss:
        out["issuer"] = iss[0]
    if len(iss) > 1:
        result.report.add(
            "not-carried", f"{where}.iss", f"{len(iss)} accepted issuers",
            f"only {iss[0]!r} is accepted: add one secret entry per other issuer",
        )  # fmt: skip


def _aes_key(text: Any, result: Result) -> None:
    if not text:
        return
    try:
        raw = base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    where = "projectConfig.aesKey"
    if len(raw) not in (16, 24, 32):
        result.report.add(
            "not-carried", where, "an AES key that is not base64 of 16, 24 or 32 bytes",
            "left out: values Space Cloud encrypted cannot be read",
        )  # fmt: skip
        return
    result.env["AUTHZ_SC_AES_KEY"] = str(text)
    result.env["AUTHZ_AES_KEY"] = base64.b64encode(os.urandom(32)).decode()
    result.config["crypto"] = {
        "keys": [
            {"id": "gcm1", "key": "${AUTHZ_AES_KEY}"},
            {"id": "sc", "key": "${AUTHZ_SC_AES_KEY}", "legacy": "spacecloud-cfb"},
        ]
    }
    result.report.add(
        "note", where, "Space Cloud's AES-CFB key (deterministic, no integrity check)",
        "kept to decrypt old values; new values are encrypted with a new AES-GCM key",
    )  # fmt: skip


# --- databases ---------------------------------------------------------------------------


def _databases(dbs: dict[str, dict[str, Any]], result: Result) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for alias, db in sorted(dbs.items()):
        where = f"dbConfigs.{alias}"
        kind, conn = db.get("type"), db.get("conn")
        if db.get("enabled") is False:
            result.report.add("note", where, "a disabled database", "left out")
            continue
        if kind not in ("postgres", "mongo"):
            result.report.add(
                "not-carried", where, f"a database of type {kind}",
                "authz queries PostgreSQL, MongoDB and SQLite: a `query` rule on it is written "
                "as `deny`",
            )  # fmt: skip
            continue
        if not isinstance(conn, str) or not conn:
            raise ImportStopped(f"{where}.conn: missing")
        if conn.startswith("secrets."):
            result.report.add(
                "not-carried", f"{where}.conn", f"the connection string is Space Cloud's {conn}",
                "put the connection string in the environment file",
            )  # fmt: skip
            conn = ""
        name = _name(alias, where)
        var = _unique(_db_var(alias), result.env)
        result.env[var] = _with_schema(conn, db.get("name")) if kind == "postgres" else conn
        if kind == "postgres":
            out[name] = {"type": "postgres", "dsn": f"${{{var}}}"}
        else:
            out[name] = {"type": "mongo", "uri": f"${{{var}}}", "database": db.get("name") or alias}
    return out


def _db_var(alias: str) -> str:
    return f"AUTHZ_DB_{_env_part(alias)}"


def _with_schema(dsn: str, schema: Any) -> str:
    """Space Cloud's postgres `name` is the schema: authz reads tables on the search_path."""
    if not dsn or not schema or schema == "public" or not urlsplit(dsn).scheme:
        return dsn
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}options={quote(f'-csearch_path={schema}', safe='')}"


# --- services ----------------------------------------------------------------------------


def _service(
    svc: dict[str, Any], where: str, databases: set[str], result: Result
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if svc.get("url"):
        out["url"] = svc["url"]
    endpoints: dict[str, Any] = {}
    raw = svc.get("endpoints") or {}
    if not isinstance(raw, dict):
        raise ImportStopped(f"{where}.endpoints: expected a mapping")
    for eid, ep in sorted(raw.items()):
        at = f"{where}.endpoints.{eid}"
        if not isinstance(ep, dict):
            raise ImportStopped(f"{at}: expected a mapping")
        converted = _endpoint(ep, at, databases, result)
        if converted is not None:
            endpoints[_name(eid, at)] = converted
    out["endpoints"] = endpoints
    return out


def _endpoint(
    ep: dict[str, Any], where: str, dbs: set[str], result: Result
) -> dict[str, Any] | None:
    report = result.report
    kind = ep.get("kind") or "internal"
    if kind != "internal":
        report.add(
            "not-carried", f"{where}.kind", f"a `{kind}` endpoint "
            + ("(a GraphQL query Space Cloud ran)" if kind == "prepared" else
               "(Space Cloud called a URL outside the service)"),
            "left out: route it in Envoy yourself and give it an endpoint with a path",
        )  # fmt: skip
        return None
    method = str(ep.get("method") or "POST").upper()  # Space Cloud's default
    if method not in METHODS:
        raise ImportStopped(f"{where}.method: unknown HTTP method {method!r}")
    path, ctx_params, guards = _path(ep.get("path"), where, result)
    ctx = RuleContext(report, dbs, ctx_params)
    out: dict[str, Any] = {"method": method, "path": path}
    if ep.get("rule"):
        rule = convert_rule(ep["rule"], f"{where}.rule", ctx)
        if guards:
            rule = {"rule": "and", "clauses": [*guards, rule]}
        out["rule"] = rule
    for key in TEMPLATE_FIELDS:
        if ep.get(key):
            report.add("not-carried", f"{where}.{key}", "a Go template Space Cloud applied to "
                       "the request or response", "left out: the upstream gets the client's "
                       "request and the client the upstream's response, unchanged")  # fmt: skip
    if ep.get("outputFormat") and any(ep.get(k) for k in TEMPLATE_FIELDS):
        report.add("not-carried", f"{where}.outputFormat", f"templates rendered as "
                   f"{ep['outputFormat']}", "left out: bodies pass unchanged")  # fmt: skip
    if ep.get("claims") or ep.get("token"):
        report.add("not-carried", f"{where}.{'claims' if ep.get('claims') else 'token'}",
                   "a token Space Cloud made or set for the upstream call", "left out: the "
                   "upstream gets the caller's token and authz's service token")  # fmt: skip
    header_rules = _headers(ep.get("headers") or [], where, ctx, report)
    if header_rules and "rule" in out:
        if out["rule"]["rule"] == "allow":  # anonymous: wrapping it would demand a token
            report.add("not-carried", f"{where}.headers", "header operations on an `allow` "
                       "endpoint", "left out: add them to the Envoy route")  # fmt: skip
        else:
            out["rule"] = {"rule": "and", "clauses": [out["rule"], *header_rules]}
    rest = {k: v for k, v in ep.items() if k != "headers"}
    for place in secret_references(rest, where, []):
        report.add("not-carried", place, "a reference to a Space Cloud secret (secrets.*)",
                   "authz cannot read Space Cloud's secrets: use an ${ENV} value")  # fmt: skip
    return out


def _headers(headers: Any, where: str, ctx: RuleContext, report: Report) -> list[dict[str, Any]]:
    """Space Cloud's header operations on the upstream call as `force` / `remove` rules on
    args.headers: values are literals or references to the body (`args.x`) or the token
    (`auth.x`); Go templates and Space Cloud secrets cannot be computed here."""
    if not isinstance(headers, list):
        raise ImportStopped(f"{where}.headers: expected a list")
    rules: list[dict[str, Any]] = []
    for i, h in enumerate(headers):
        at = f"{where}.headers[{i}]"
        if not isinstance(h, dict) or not _HEADER.match(str(h.get("key") or "")):
            raise ImportStopped(f"{at}: expected {{key, value, op}} with a header name")
        field = f"args.headers.{h['key'].lower()}"
        op, value = h.get("op") or "set", h.get("value")
        if op == "del":
            rules.append({"rule": "remove", "fields": [field]})
            continue
        if op not in ("set", "add"):
            raise ImportStopped(f"{at}.op: unknown header operation {op!r}")
        text = value if isinstance(value, str) else ""
        if "{{" in text or text.startswith("secrets.") or text.split(".")[0] == "token":
            what = "a Space Cloud secret" if text.startswith("secrets.") else "a Go template"
            report.add("not-carried", f"{at}.value", f"header {h['key']!r} set from {what}",
                       "left out: authz cannot compute it; use an ${ENV} value on the Envoy "
                       "route")  # fmt: skip
            continue
        if op == "add":
            report.add("note", f"{at}.op", f"`add` of header {h['key']!r}",
                       "sets the header (replacing a value the client sent)")  # fmt: skip
        rules.append({"rule": "force", "field": field, "value": _header_value(text, ctx)})
    return rules


def _header_value(text: str, ctx: RuleContext) -> str:
    if text.startswith("auth."):
        return "args." + text
    if text.startswith("args."):
        return ctx.reference("args.params." + text.removeprefix("args."))
    return text.replace("$", "$$")


def _path(
    path: Any, where: str, result: Result
) -> tuple[str, dict[str, str], list[dict[str, Any]]]:
    """Space Cloud fills `{args.x}` from the body and `{auth.x}` from the token; authz routes
    `/…/{x}` and checks a token value with a guard clause."""
    if not isinstance(path, str) or not path:
        raise ImportStopped(f"{where}.path: missing")
    params: dict[str, str] = {}
    guards: list[dict[str, Any]] = []

    def sub(m: re.Match[str]) -> str:
        ref = m.group(1).strip()
        source, _, rest = ref.partition(".")
        if source not in ("args", "auth") or not rest:
            raise ImportStopped(f"{where}.path: cannot read the placeholder {{{ref}}}")
        name = re.sub(r"[^A-Za-z0-9_]", "_", rest)
        if source == "args":
            params[f"args.params.{rest}"] = name
        else:
            guards.append({"rule": "match", "type": "string", "eval": "==",
                           "f1": f"args.pathParams.{name}", "f2": f"args.auth.{rest}",
                           "error": f"the path must carry your {rest}"})  # fmt: skip
            result.report.add(
                "note", f"{where}.path", f"{{{ref}}}: Space Cloud took it from the token",
                f"the client now sends it in the path; a guard checks it equals args.auth.{rest}",
            )  # fmt: skip
        return "{" + name + "}"

    new = _PLACEHOLDER.sub(sub, path if path.startswith("/") else "/" + path)
    if params:
        result.report.add(
            "note", f"{where}.path", f"{path}: Space Cloud filled it from the request body",
            f"clients now call {new}; rules read these values from args.pathParams",
        )  # fmt: skip
    return new, params, guards


def _name(name: str, where: str) -> str:
    if not NAME.match(name):
        raise ImportStopped(f"{where}: {name!r} is not a valid name for authz")
    return name


def _unique(var: str, env: dict[str, str]) -> str:
    """`a-b` and `a_b` map to one variable name: the second gets a suffix."""
    n, name = 1, var
    while name in env or f"{name}_PRIVATE_KEY" in env:
        n += 1
        name = f"{var}_{n}"
    return name


def _env_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", text).upper()
