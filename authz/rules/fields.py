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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from authz.config.schema import DecryptRule, EncryptRule, ForceRule, HashRule, RemoveRule
from authz.crypto import CryptoError, hash_value
from authz.errors import AuthzError, RequestError
from authz.rules.base import Context, Failure, Rule, run
from authz.rules.compiler import CompileContext, compile_rule, compiles
from authz.rules.refs import MISSING, Getter, compile_value, is_constant, is_reference, split_path

REQUEST_TARGETS = ("params", "query", "headers")
RESPONSE = "res"
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]+$")  # an HTTP header name (lower-case)
_BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class ResponseError(AuthzError):
    """A response action could not be applied: the client gets a 502, never the raw body."""

    status = 502


class _PathError(Exception):
    """A field path cannot be set in this document (walks into a scalar, bad index)."""


# --- field paths -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldPath:
    root: str  # params | query | headers | res
    keys: tuple[str, ...]  # below the root
    text: str  # as written in the config
    folded: tuple[str, ...] = ()

    @property
    def aad(self) -> str:
        # Bound into ciphertexts: relative to the root, so a value encrypted in a request
        # body (`args.params.email`) decrypts from the response (`res.email`).
        return ".".join(self.keys)

    @classmethod
    def of(cls, root: str, keys: tuple[str, ...], text: str) -> FieldPath:
        return cls(root, keys, text, tuple(k.casefold() for k in keys))


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


# --- walking documents -------------------------------------------------------------------


@dataclass(slots=True)
class _Match:
    container: Any  # dict or list
    key: Any  # str or int
    exact: bool
    path: tuple[Any, ...]


def _find(doc: Any, fp: FieldPath, strict: bool = False) -> list[_Match]:
    """Every place the path reaches, exactly or through keys differing only in case.

    `strict` (response bodies): a node that cannot hold the next key (a string, number or
    boolean, or an array under a non-numeric key) raises _PathError instead of meaning "not
    there": a partial or differently shaped response must not pass the rule unchanged."""
    out: list[_Match] = []
    _walk(doc, fp.keys, fp.folded, 0, True, (), out, strict)
    return out


def _walk(
    node: Any,
    keys: tuple,
    folded: tuple,
    i: int,
    exact: bool,
    trail: tuple,
    out: list,
    strict: bool = False,
):
    if strict and not _can_hold(node, keys[i]):
        where = ".".join(str(k) for k in trail) or "the top level"
        raise _PathError(f"the response has a {_json_type(node)} at {where}")
    last = i == len(keys) - 1
    for k, child, is_exact in _children(node, keys[i], folded[i]):
        if last:
            out.append(_Match(node, k, exact and is_exact, (*trail, k)))
        else:
            _walk(child, keys, folded, i + 1, exact and is_exact, (*trail, k), out, strict)


def _can_hold(node: Any, key: str) -> bool:
    """Whether `key` can name a child of node (null: an absent parent, nothing to do)."""
    if isinstance(node, list):
        return _index(key) is not None
    return node is None or isinstance(node, dict)


def _children(node: Any, key: str, fold: str):
    if isinstance(node, dict):
        if key in node:
            yield key, node[key], True
        for k, v in node.items():
            if k != key and isinstance(k, str) and k.casefold() == fold:
                yield k, v, False
    elif isinstance(node, list):
        idx = _index(key)
        if idx is not None and idx < len(node):
            yield idx, node[idx], True


def _index(key: str) -> int | None:
    return int(key) if key.isascii() and key.isdigit() else None


def _set(doc: Any, keys: tuple[str, ...], value: Any) -> tuple[Any, Any, Any, Any, tuple]:
    """Set keys to value, creating missing (or null) parents as objects.

    Returns (container, key, old, new, path) of the one slot written: the first created
    parent when parents were created (old is MISSING or None), else the field itself."""
    node, trail = doc, []
    for i, key in enumerate(keys):
        slot = _slot(node, key)
        if i == len(keys) - 1:
            old = node.get(slot, MISSING) if isinstance(node, dict) else node[slot]
            node[slot] = value
            return node, slot, old, value, (*trail, slot)
        child = node.get(slot, MISSING) if isinstance(node, dict) else node[slot]
        if child is MISSING or child is None:
            new = _nest(keys[i + 1 :], value)
            node[slot] = new
            return node, slot, child, new, (*trail, slot)
        node = child
        trail.append(slot)
    raise _PathError("empty path")  # pragma: no cover - paths have at least one key


def _slot(node: Any, key: str) -> Any:
    if isinstance(node, dict):
        return key
    if isinstance(node, list):
        idx = _index(key)
        if idx is None or idx >= len(node):
            raise _PathError(f"no index {key} in an array of {len(node)}")
        return idx
    raise _PathError(f"cannot set {key!r} inside a {_json_type(node)}")


def _nest(keys: tuple[str, ...], value: Any) -> Any:
    for key in reversed(keys):
        value = {key: value}
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", str: "string", int: "number", float: "number"}.get(
        type(value), type(value).__name__
    )


# --- request changes ---------------------------------------------------------------------


class FieldChange:
    """One change to a request document (`args.<target>`), reversible and replayable."""

    __slots__ = ("container", "key", "new", "old", "path", "target")

    def __init__(self, target: str, container: Any, key: Any, old: Any, new: Any, path: tuple):
        self.target = target  # params | query | headers
        self.container = container  # the dict/list that holds `key`
        self.key = key
        self.old = old  # MISSING: the slot did not exist
        # MISSING: the slot was removed. A snapshot: later changes inside a new object must
        # not leak into this one's op(), or a replay would apply them twice.
        self.new = copy.deepcopy(new) if isinstance(new, dict | list) else new
        self.path = path  # concrete keys/indices below args.<target>

    def undo(self, args: dict[str, Any]) -> None:
        c, k = self.container, self.key
        if self.old is MISSING:
            del c[k]
        elif self.new is MISSING and isinstance(c, list):
            c.insert(k, self.old)
        else:
            c[k] = self.old

    def op(self) -> dict[str, Any]:
        """JSON form: {"op": "set"|"remove", "target", "path", "value"?}; see `replay`."""
        if self.new is MISSING:
            return {"op": "remove", "target": self.target, "path": list(self.path)}
        return {"op": "set", "target": self.target, "path": list(self.path), "value": self.new}

    def __repr__(self) -> str:
        return f"FieldChange({self.op()!r})"


def replay(doc: Any, ops: list[dict[str, Any]]) -> None:
    """Apply `FieldChange.op()`s of one target, in order, to a fresh copy of its document."""
    for op in ops:
        *parents, last = op["path"]
        node = doc
        for key in parents:
            node = node[key]
        if op["op"] == "set":
            node[last] = copy.deepcopy(op["value"])
        else:
            del node[last]


def request_changes(changes: list[Any]) -> list[FieldChange]:
    return [c for c in changes if isinstance(c, FieldChange)]


def response_plan(changes: list[Any]) -> list[ResponseAction]:
    return [c for c in changes if isinstance(c, ResponseAction)]


def _remove(
    doc: Any, fp: FieldPath, exact_too: bool, target: str, out: list[Any], strict: bool = False
) -> int:
    """Delete the matches of fp (all, or only the case variants); record into `out`."""
    removed = 0
    for m in _find(doc, fp, strict):
        if m.exact and not exact_too:
            continue
        old = m.container.pop(m.key)
        out.append(FieldChange(target, m.container, m.key, old, MISSING, m.path))
        removed += 1
    return removed


# --- response actions --------------------------------------------------------------------


class ResponseAction:
    """A `res.*` action decided in Check, applied to the response body by ext_proc."""

    __slots__ = ("encoding", "fp", "keyring", "op", "value")

    def __init__(
        self,
        op: str,
        fp: FieldPath,
        keyring: Any = None,
        value: Any = None,
        encoding: str = "base64",
    ):
        self.op = op  # force | remove | encrypt | decrypt | hash
        self.fp = fp
        self.keyring = keyring  # authz.crypto.Keyring (encrypt, decrypt, keyed hash)
        self.value = value  # force: the resolved value
        self.encoding = encoding  # hash

    def undo(self, args: dict[str, Any]) -> None:
        """Nothing was applied yet: an `or` rollback just drops the action."""

    def apply(self, body: Any) -> None:
        """Apply to the parsed response body in place; ResponseError on any failure."""
        try:
            _APPLY[self.op](self, body)
        except CryptoError as exc:
            raise ResponseError(f"{self.fp.text}: {exc}") from None
        except _PathError as exc:
            raise ResponseError(f"{self.fp.text}: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        """For the dynamic metadata Envoy hands from Check to ext_proc."""
        out: dict[str, Any] = {"op": self.op, "path": list(self.fp.keys)}
        if self.op == "force":
            out["value"] = self.value
        if self.op == "hash":
            out["encoding"] = self.encoding
        return out

    @classmethod
    def from_json(cls, data: Any, keyring: Any = None) -> ResponseAction:
        try:
            op, keys = data["op"], tuple(data["path"])
            if op not in _APPLY or not keys or not all(isinstance(k, str) for k in keys):
                raise ValueError
            encoding = data.get("encoding", "base64")
            if encoding not in ("base64", "hex"):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise ResponseError("malformed response plan") from None
        fp = FieldPath.of(RESPONSE, keys, "res." + ".".join(keys))
        return cls(op, fp, keyring, data.get("value"), encoding)

    def __repr__(self) -> str:
        return f"ResponseAction({self.to_json()!r})"


def apply_response(plan: list[ResponseAction], body: Any) -> None:
    """Apply a whole plan in rule order; the first failure raises ResponseError."""
    for action in plan:
        action.apply(body)


def _apply_force(action: ResponseAction, body: Any) -> None:
    _set(body, action.fp.keys, copy.deepcopy(action.value))
    _remove(body, action.fp, False, RESPONSE, [], strict=True)


def _apply_remove(action: ResponseAction, body: Any) -> None:
    _remove(body, action.fp, True, RESPONSE, [], strict=True)


def _apply_transform(action: ResponseAction, body: Any) -> None:
    fn = _transform(action.op, action.fp, action.keyring, action.encoding, keyed=False)
    m = _single(body, action.fp, strict=True)
    if m is None:
        return
    value = m.container[m.key]
    if type(value) is not str:
        raise _PathError(f"is a {_json_type(value)}, not a string")
    m.container[m.key] = fn(value)


_APPLY: dict[str, Callable[[ResponseAction, Any], None]] = {
    "force": _apply_force,
    "remove": _apply_remove,
    "encrypt": _apply_transform,
    "decrypt": _apply_transform,
    "hash": _apply_transform,
}


def _single(doc: Any, fp: FieldPath, strict: bool = False) -> _Match | None:
    """The exact match, or None; a key differing only in case is ambiguous (_PathError)."""
    found = None
    for m in _find(doc, fp, strict):
        if not m.exact:
            raise _PathError("another key differs only in case")
        found = m
    return found


def _transform(op: str, fp: FieldPath, keyring: Any, encoding: str, keyed: bool):
    """The str -> str function of an encrypt/decrypt/hash action."""
    if op == "hash":
        if keyring is not None:
            return lambda v: keyring.hash(v, encoding)
        if keyed:  # crypto.hashKey is configured but no keyring was built: never hash unkeyed
            raise AuthzError("the crypto keyring is not loaded")
        return lambda v: hash_value(v, encoding)
    if keyring is None:
        raise AuthzError("the crypto keyring is not loaded")
    aad = fp.aad
    if op == "encrypt":
        return lambda v: keyring.encrypt(v, aad)
    return lambda v: keyring.decrypt(v, aad)


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

    def act(self, ctx: Context) -> Failure | None:
        value = self.value(ctx.args)
        if value is MISSING:
            return self.fail(f"value {self.value_text} does not resolve", error=True)
        fp = self.fp
        if fp.root == RESPONSE:
            ctx.changes.append(ResponseAction("force", fp, value=copy.deepcopy(value)))
            return self._traced(ctx, f"{fp.text}: planned for the response")
        if fp.root != "params":
            value = _flat_value(value, fp.root)
            if value is MISSING:
                return self.fail(f"value {self.value_text} is not a valid {fp.root} value", True)
        doc = ctx.args.get(fp.root)
        if not isinstance(doc, dict):
            return self.fail(f"args.{fp.root} is not an object", error=True)
        try:
            c, k, old, new, path = _set(doc, fp.keys, copy.deepcopy(value))
        except _PathError as exc:
            return self.fail(f"cannot set {fp.text}: {exc}", error=True)
        ctx.changes.append(FieldChange(fp.root, c, k, old, new, path))
        _remove(doc, fp, False, fp.root, ctx.changes)
        return self._traced(ctx, f"set {fp.text}")

    def _traced(self, ctx: Context, detail: str) -> None:
        if ctx.trace is not None:
            ctx.detail = detail  # never the value: it may be a secret


class Remove(_FieldRule):
    kind = "remove"
    __slots__ = ("fps",)

    def act(self, ctx: Context) -> Failure | None:
        removed = 0
        for fp in self.fps:
            if fp.root == RESPONSE:
                ctx.changes.append(ResponseAction("remove", fp))
                continue
            doc = ctx.args.get(fp.root)
            if isinstance(doc, dict):
                removed += _remove(doc, fp, True, fp.root, ctx.changes)
        if ctx.trace is not None:
            ctx.detail = f"removed {removed} field(s)"
        return None


class Transform(_FieldRule):
    """encrypt, decrypt and hash: a string value replaced by a function of itself."""

    __slots__ = ("encoding", "fps", "keyed")

    def act(self, ctx: Context) -> Failure | None:
        keyring = getattr(ctx.runtime, "keyring", None)
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
                new = _transform(self.kind, fp, keyring, self.encoding, self.keyed)(value)
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

    def _match(self, doc: dict[str, Any], fp: FieldPath) -> _Match | None:
        try:
            return _single(doc, fp)
        except _PathError:
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
    return compile_rule(model.clause, cc, f"{path}.clause") if model.clause else None


@compiles("force")
def compile_force(model: ForceRule, cc: CompileContext, path: str) -> Rule:
    rule = Force(path, model.error, _clause(model, cc, path))
    rule.fp = compile_field(model.field, cc, f"{path}.field")  # type: ignore[assignment]
    rule.value = compile_value(model.value, cc, f"{path}.value")
    rule.value_text = model.value if is_reference(model.value) else repr(model.value)
    fp = rule.fp
    flat = fp is not None and fp.root in ("query", "headers")
    if flat and _literal(model.value, rule.value) and _flat_value(model.value, fp.root) is MISSING:
        cc.error(f"{path}.value", f"{model.value!r} is not a valid {fp.root} value")
    return rule


def _literal(raw: Any, getter: Getter) -> bool:
    return is_constant(getter) and not is_reference(raw)


@compiles("remove")
def compile_remove(model: RemoveRule, cc: CompileContext, path: str) -> Rule:
    rule = Remove(path, model.error, _clause(model, cc, path))
    rule.fps = _fields(model.fields, cc, path)
    return rule


@compiles("encrypt", "decrypt", "hash")
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
