"""JSON documents as field rules change them: field paths, finding a path (exactly and
through keys that differ only in case), setting and removing, the recorded request changes
and their replay, and the response actions applied to an upstream's body.

No rule logic lives here: field rules (rules/fields.py) decide what to change, the plan
(authz/plan.py) carries it to ext_proc, which replays it (envoy/extproc.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from authz.crypto import Encoding, Keyring, hash_value
from authz.errors import AuthzError, CryptoError, ResponseError
from authz.values import MISSING, array_index

RESPONSE = "res"


class PathError(Exception):
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


# --- walking documents -------------------------------------------------------------------


@dataclass(slots=True)
class Match:
    container: Any  # dict or list
    key: Any  # str or int
    exact: bool
    path: tuple[Any, ...]


def find(doc: Any, fp: FieldPath, strict: bool = False) -> list[Match]:
    """Every place the path reaches, exactly or through keys differing only in case.

    `strict` (response bodies): a node that cannot hold the next key (a string, number or
    boolean, or an array under a non-numeric key) raises PathError instead of meaning "not
    there": a partial or differently shaped response must not pass the rule unchanged."""
    out: list[Match] = []
    _walk(doc, fp.keys, fp.folded, 0, True, (), out, strict)
    return out


def _walk(
    node: Any,
    keys: tuple[str, ...],
    folded: tuple[str, ...],
    i: int,
    exact: bool,
    trail: tuple[Any, ...],
    out: list[Match],
    strict: bool = False,
) -> None:
    if strict and not _can_hold(node, keys[i]):
        where = ".".join(str(k) for k in trail) or "the top level"
        raise PathError(f"the response has a {json_type(node)} at {where}")
    last = i == len(keys) - 1
    for k, child, is_exact in _children(node, keys[i], folded[i]):
        if last:
            out.append(Match(node, k, exact and is_exact, (*trail, k)))
        else:
            _walk(child, keys, folded, i + 1, exact and is_exact, (*trail, k), out, strict)


def _can_hold(node: Any, key: str) -> bool:
    """Whether `key` can name a child of node (null: an absent parent, nothing to do)."""
    if isinstance(node, list):
        return array_index(key) is not None
    return node is None or isinstance(node, dict)


def _children(node: Any, key: str, fold: str) -> Iterator[tuple[Any, Any, bool]]:
    if isinstance(node, dict):
        if key in node:
            yield key, node[key], True
        for k, v in node.items():
            if k != key and isinstance(k, str) and k.casefold() == fold:
                yield k, v, False
    elif isinstance(node, list):
        idx = array_index(key)
        if idx is not None and idx < len(node):
            yield idx, node[idx], True


def set_value(
    doc: Any, keys: tuple[str, ...], value: Any
) -> tuple[Any, Any, Any, Any, tuple[Any, ...]]:
    """Set keys to value, creating missing (or null) parents as objects.

    Returns (container, key, old, new, path) of the one slot written: the first created
    parent when parents were created (old is MISSING or None), else the field itself."""
    node: Any = doc
    trail: list[Any] = []
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
    raise PathError("empty path")  # pragma: no cover - paths have at least one key


def _slot(node: Any, key: str) -> Any:
    if isinstance(node, dict):
        return key
    if isinstance(node, list):
        idx = array_index(key)
        if idx is None or idx >= len(node):
            raise PathError(f"no index {key} in an array of {len(node)}")
        return idx
    raise PathError(f"cannot set {key!r} inside a {json_type(node)}")


def _nest(keys: tuple[str, ...], value: Any) -> Any:
    for key in reversed(keys):
        value = {key: value}
    return value


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", str: "string", int: "number", float: "number"}.get(
        type(value), type(value).__name__
    )


# --- request changes ---------------------------------------------------------------------


class FieldChange:
    """One change to a request document (`args.<target>`), reversible and replayable."""

    __slots__ = ("container", "key", "new", "old", "path", "target")

    def __init__(
        self, target: str, container: Any, key: Any, old: Any, new: Any, path: tuple[Any, ...]
    ):
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


def remove_matches(
    doc: Any, fp: FieldPath, exact_too: bool, target: str, out: list[Any], strict: bool = False
) -> int:
    """Delete the matches of fp (all, or only the case variants); record into `out`."""
    removed = 0
    for m in find(doc, fp, strict):
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
        keyring: Keyring | None = None,
        value: Any = None,
        encoding: Encoding = "base64",
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
        except PathError as exc:
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
    def from_json(cls, data: Any, keyring: Keyring | None = None) -> ResponseAction:
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
    set_value(body, action.fp.keys, copy.deepcopy(action.value))
    remove_matches(body, action.fp, False, RESPONSE, [], strict=True)


def _apply_remove(action: ResponseAction, body: Any) -> None:
    remove_matches(body, action.fp, True, RESPONSE, [], strict=True)


def _apply_transform(action: ResponseAction, body: Any) -> None:
    fn = transformer(action.op, action.fp, action.keyring, action.encoding, keyed=False)
    m = single(body, action.fp, strict=True)
    if m is None:
        return
    value = m.container[m.key]
    if type(value) is not str:
        raise PathError(f"is a {json_type(value)}, not a string")
    m.container[m.key] = fn(value)


_APPLY: dict[str, Callable[[ResponseAction, Any], None]] = {
    "force": _apply_force,
    "remove": _apply_remove,
    "encrypt": _apply_transform,
    "decrypt": _apply_transform,
    "hash": _apply_transform,
}


def single(doc: Any, fp: FieldPath, strict: bool = False) -> Match | None:
    """The exact match, or None; a key differing only in case is ambiguous (PathError)."""
    found = None
    for m in find(doc, fp, strict):
        if not m.exact:
            raise PathError("another key differs only in case")
        found = m
    return found


def transformer(
    op: str, fp: FieldPath, keyring: Keyring | None, encoding: Encoding, keyed: bool
) -> Callable[[str], str]:
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
