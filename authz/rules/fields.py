"""Field rules: force, remove, encrypt, decrypt, hash (docs/rules.md, field rules).

Targets are `args.params.*`, `args.query.*`, `args.headers.*` (the request) or `res.*` (the
upstream's JSON response). A `clause` that fails skips the action and the rule passes; a clause
that errors makes the rule error (deny). Otherwise field rules pass.

Request-side changes are applied to `ctx.args` at once (later rules see them) and recorded in
`ctx.changes` as `FieldChange` objects (`undo` for `or`, `op()` for the encoder / ext_proc).
`res.*` rules cannot run in Check: their resolved actions are recorded in `ctx.changes` as
`ResponseAction` objects (no-op `undo`, so `or` drops them too) and applied to the response
body later with `apply(body)`, which raises `ResponseError` (-> 502) on any failure.

Keys are matched exactly, but a key that differs only in case (`Password` for `password`) is
treated as the same field: `remove` removes it too, `force` removes it besides setting the
exact key, and encrypt/decrypt/hash reject the request — so a case-insensitive upstream
decoder (Go's encoding/json) can never receive a value the rule meant to control.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from authz.config.schema import DecryptRule, EncryptRule, ForceRule, HashRule, RemoveRule
from authz.crypto import Encoding
from authz.documents import (
    RESPONSE,
    FieldChange,
    FieldPath,
    Match,
    PathError,
    ResponseAction,
    remove_matches,
    set_value,
    single,
    transformer,
)
from authz.errors import AuthzError, CryptoError, RequestError
from authz.rules.base import Context, Failure, Rule, run
from authz.rules.compiling import CompileContext, CompileFn
from authz.rules.refs import compile_value, is_reference, split_path
from authz.values import MISSING, Getter, is_constant

REQUEST_TARGETS = ("params", "query", "headers")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]+$")  # an HTTP header name (lower-case)
_BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


# --- field paths -------------------------------------------------------------------------


def compile_field(text: str, cc: CompileContext, path: str) -> FieldPath | None:
    """`args.params.a.b`, `args.query.q`, `args.headers.h` or `res.a.0.b`; None on error."""
    try:
        parts = split_path(text)
    except ValueError as exc:
        cc.error(path, f"invalid field path {text!r}: {exc}")
        return None
    keys: list[str] = []
    for part in parts:
        if isinstance(part, tuple):
            if is_reference(part[0]):
                cc.error(path, f"a field path cannot have computed keys: {text!r}")
                return None
            keys.append(part[0].strip("'\""))
        else:
            keys.append(part)
    fp = _rooted(keys, text, cc, path)
    if fp is not None:
        _note_target(cc, fp.root)
        if fp.root != RESPONSE:
            cc.read(fp.root, fp.keys[0])
    return fp


def _rooted(keys: list[str], text: str, cc: CompileContext, path: str) -> FieldPath | None:
    if keys[:1] == [RESPONSE] and len(keys) >= 2:
        return FieldPath.of(RESPONSE, tuple(keys[1:]), text)
    if keys[:1] != ["args"] or len(keys) < 3 or keys[1] not in REQUEST_TARGETS:
        where = "args.params.*, args.query.*, args.headers.* or res.*"
        cc.error(path, f"a field path is {where}, got {text!r}")
        return None
    root, rest = keys[1], tuple(keys[2:])
    if root in ("query", "headers") and len(rest) != 1:
        cc.error(path, f"args.{root} is flat: name exactly one key, got {text!r}")
        return None
    if root == "headers":
        rest = (rest[0].lower(),)  # args.headers has lower-case names
        if not _TOKEN.match(rest[0]):
            cc.error(path, f"invalid header name {rest[0]!r}")
            return None
    return FieldPath.of(root, rest, text)


def _note_target(cc: CompileContext, root: str) -> None:
    # Which parts of the request/response the endpoint changes, for the encoder and ext_proc.
    cc.field_targets.add(root)


# --- the rules ---------------------------------------------------------------------------


class _FieldRule(Rule):
    __slots__ = ("clause",)

    def __init__(self, path: str, error: str | None, clause: Rule | None):
        super().__init__(path, error)
        self.clause = clause

    def children(self) -> tuple[Rule, ...]:
        return (self.clause,) if self.clause is not None else ()

    async def evaluate(self, ctx: Context) -> Failure | None:
        if self.clause is not None:
            mark = len(ctx.changes)
            failure = await run(self.clause, ctx)
            if failure is not None:
                ctx.rollback(mark)  # a clause's own changes do not outlive it
                if (
                    failure.error
                ):  # cannot tell whether to act: deny, even inside `or` (docs/rules.md, match)
                    return self.own(failure).as_fatal()
                if ctx.trace is not None:
                    ctx.detail = "clause not met: nothing done"
                return None
        failure = self.act(ctx)
        return None if failure is None else failure.as_fatal()

    def act(self, ctx: Context) -> Failure | None:
        raise NotImplementedError


class Force(_FieldRule):
    kind = "force"
    __slots__ = ("fp", "value", "value_text")
    fp: FieldPath
    value: Getter
    value_text: str

    def act(self, ctx: Context) -> Failure | None:
        value = self.value(ctx.args)
        if value is MISSING:
            return self.fail(f"value {self.value_text} does not resolve", error=True)
        fp = self.fp
        if fp.root == RESPONSE:
            ctx.changes.append(ResponseAction("force", fp, value=copy.deepcopy(value)))
            self._traced(ctx, f"{fp.text}: planned for the response")
            return None
        if fp.root != "params":
            value = _flat_value(value, fp.root)
            if value is MISSING:
                return self.fail(f"value {self.value_text} is not a valid {fp.root} value", True)
        doc = ctx.args.get(fp.root)
        if not isinstance(doc, dict):
            return self.fail(f"args.{fp.root} is not an object", error=True)
        try:
            c, k, old, new, path = set_value(doc, fp.keys, copy.deepcopy(value))
        except PathError as exc:
            return self.fail(f"cannot set {fp.text}: {exc}", error=True)
        ctx.changes.append(FieldChange(fp.root, c, k, old, new, path))
        remove_matches(doc, fp, False, fp.root, ctx.changes)
        self._traced(ctx, f"set {fp.text}")
        return None

    def _traced(self, ctx: Context, detail: str) -> None:
        if ctx.trace is not None:
            ctx.detail = detail  # never the value: it may be a secret


class Remove(_FieldRule):
    kind = "remove"
    __slots__ = ("fps",)
    fps: tuple[FieldPath, ...]

    def act(self, ctx: Context) -> Failure | None:
        removed = 0
        for fp in self.fps:
            if fp.root == RESPONSE:
                ctx.changes.append(ResponseAction("remove", fp))
                continue
            doc = ctx.args.get(fp.root)
            if isinstance(doc, dict):
                removed += remove_matches(doc, fp, True, fp.root, ctx.changes)
        if ctx.trace is not None:
            ctx.detail = f"removed {removed} field(s)"
        return None


class Transform(_FieldRule):
    """encrypt, decrypt and hash: a string value replaced by a function of itself."""

    __slots__ = ("encoding", "fps", "keyed")
    encoding: Encoding
    fps: tuple[FieldPath, ...]
    keyed: bool  # crypto.hashKey is configured: never hash without it

    def act(self, ctx: Context) -> Failure | None:
        keyring = ctx.runtime.keyring if ctx.runtime is not None else None
        done = 0
        for fp in self.fps:
            if fp.root == RESPONSE:
                self._plan(ctx, fp, keyring)
                continue
            doc = ctx.args.get(fp.root)
            m = self._match(doc, fp) if isinstance(doc, dict) else None
            if m is None:
                continue  # nothing to protect
            value = m.container[m.key]
            if type(value) is not str:
                raise RequestError(f"{fp.text} must be a string to {self.kind}")
            try:
                new = transformer(self.kind, fp, keyring, self.encoding, self.keyed)(value)
            except CryptoError:
                raise RequestError(f"{fp.text} cannot be {self.kind}ed") from None
            if fp.root == "headers" and _BAD_HEADER_VALUE.search(new):
                raise RequestError(f"{fp.text} does not decrypt to a valid header value")
            m.container[m.key] = new
            ctx.changes.append(FieldChange(fp.root, m.container, m.key, value, new, m.path))
            done += 1
        if ctx.trace is not None:
            ctx.detail = f"{self.kind}ed {done} field(s)"
        return None

    def _plan(self, ctx: Context, fp: FieldPath, keyring: Any) -> None:
        if self.kind == "hash" and self.keyed and keyring is None:
            raise AuthzError("the crypto keyring is not loaded")
        ctx.changes.append(ResponseAction(self.kind, fp, keyring, encoding=self.encoding))

    def _match(self, doc: dict[str, Any], fp: FieldPath) -> Match | None:
        try:
            return single(doc, fp)
        except PathError:
            raise RequestError(f"{fp.text} is ambiguous: keys differ only in case") from None


class Encrypt(Transform):
    kind = "encrypt"


class Decrypt(Transform):
    kind = "decrypt"


class Hash(Transform):
    kind = "hash"


def _flat_value(value: Any, root: str) -> Any:
    """Headers take a string; query parameters a string or a list of them (repeated key).
    Numbers and booleans are written as JSON; anything else is MISSING (an error)."""
    if root == "query" and isinstance(value, list):
        items = [_scalar_text(v) for v in value]
        return MISSING if any(v is MISSING for v in items) else items
    text = _scalar_text(value)
    if root == "headers" and text is not MISSING and _BAD_HEADER_VALUE.search(text):
        return MISSING  # no CR/LF/NUL smuggled into a header
    return text


def _scalar_text(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return MISSING


# --- compilation -------------------------------------------------------------------------


def _clause(model: Any, cc: CompileContext, path: str) -> Rule | None:
    return cc.compile(model.clause, f"{path}.clause") if model.clause else None


def compile_force(model: ForceRule, cc: CompileContext, path: str) -> Rule:
    rule = Force(path, model.error, _clause(model, cc, path))
    fp = compile_field(model.field, cc, f"{path}.field")
    if fp is not None:  # else the config is rejected: the rule never runs
        rule.fp = fp
    rule.value = compile_value(model.value, cc, f"{path}.value")
    rule.value_text = model.value if is_reference(model.value) else repr(model.value)
    flat = fp.root if fp is not None and fp.root in ("query", "headers") else None
    if flat and _literal(model.value, rule.value) and _flat_value(model.value, flat) is MISSING:
        cc.error(f"{path}.value", f"{model.value!r} is not a valid {flat} value")
    return rule


def _literal(raw: Any, getter: Getter) -> bool:
    return is_constant(getter) and not is_reference(raw)


def compile_remove(model: RemoveRule, cc: CompileContext, path: str) -> Rule:
    rule = Remove(path, model.error, _clause(model, cc, path))
    rule.fps = _fields(model.fields, cc, path)
    return rule


def compile_transform(
    model: EncryptRule | DecryptRule | HashRule, cc: CompileContext, path: str
) -> Rule:
    cls = {"encrypt": Encrypt, "decrypt": Decrypt, "hash": Hash}[model.rule]
    rule = cls(path, model.error, _clause(model, cc, path))
    rule.fps = _fields(model.fields, cc, path)
    rule.encoding = getattr(model, "encoding", "base64")
    crypto = getattr(cc.config, "crypto", None)
    rule.keyed = bool(crypto and crypto.hashKey)
    if model.rule != "hash":
        _check_keys(model.rule, cc, path)
    return rule


def _fields(texts: list[str], cc: CompileContext, path: str) -> tuple[FieldPath, ...]:
    fps = (compile_field(t, cc, f"{path}.fields[{i}]") for i, t in enumerate(texts))
    return tuple(fp for fp in fps if fp is not None)


def _check_keys(kind: str, cc: CompileContext, path: str) -> None:
    if cc.config is None:  # compiled without a config (unit tests): checked at runtime
        return
    crypto = cc.config.crypto
    keys = crypto.keys if crypto is not None else []
    if not keys:
        cc.error(path, f"'{kind}' needs crypto.keys")
    elif kind == "encrypt" and all(k.legacy for k in keys):
        cc.error(path, "'encrypt' needs a current key in crypto.keys (legacy keys only decrypt)")


# The kinds this family compiles (the table in rules/compiler.py).
COMPILERS: dict[str, CompileFn] = {
    "force": compile_force,
    "remove": compile_remove,
    "encrypt": compile_transform,
    "decrypt": compile_transform,
    "hash": compile_transform,
}
