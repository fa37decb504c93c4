"""References (`args.a.b.0`, `args.a[args.params.key]`) and `utils.*` calls, compiled once.

A compiled value is a *getter*: a function of `args` returning the value, or `MISSING` when a
path does not resolve (or a utils function cannot produce a value). Values read from the
request are returned as data: they are never parsed again as references.
"""

from __future__ import annotations

import re
from typing import Any

from authz.rules.compiling import CompileContext
from authz.rules.functions import FUNCTIONS, check_literals
from authz.values import MISSING, Getter, array_index, constant, is_constant

_NAME = re.compile(r"utils\.([A-Za-z]+)\(")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def is_reference(raw: Any) -> bool:
    return isinstance(raw, str) and (raw.startswith("args.") or raw.startswith("utils."))


def compile_value(raw: Any, cc: CompileContext, path: str) -> Getter:
    """A literal, a reference or a utils call (at the top level of a value only)."""
    if isinstance(raw, str):
        if raw.startswith("args."):
            return compile_path(raw, cc, path)
        if raw.startswith("utils."):
            return compile_call(raw, cc, path)
    return constant(raw)


def compile_structure(raw: Any, cc: CompileContext, path: str) -> Getter:
    """An object or list whose leaves may be references: built fresh per request.

    The getter returns MISSING when any reference in it does not resolve."""
    if isinstance(raw, dict):
        parts = {k: compile_structure(v, cc, f"{path}.{k}") for k, v in raw.items()}
        if all(is_constant(g) for g in parts.values()):
            return constant(raw)
        items = tuple(parts.items())

        def get_obj(args: dict[str, Any]) -> Any:
            out = {}
            for k, g in items:
                v = g(args)
                if v is MISSING:
                    return MISSING
                out[k] = v
            return out

        return get_obj
    if isinstance(raw, list):
        getters = [compile_structure(v, cc, f"{path}[{i}]") for i, v in enumerate(raw)]
        if all(is_constant(g) for g in getters):
            return constant(raw)
        gs = tuple(getters)

        def get_list(args: dict[str, Any]) -> Any:
            out = []
            for g in gs:
                v = g(args)
                if v is MISSING:
                    return MISSING
                out.append(v)
            return out

        return get_list
    return compile_value(raw, cc, path)


# --- paths -------------------------------------------------------------------------------

Segment = tuple[str, int | None, Getter | None]  # key, list index, computed key


def split_path(text: str) -> list[str | tuple[str]]:
    """Split `a.b[args.x.y].0` into ['a', 'b', ('args.x.y',), '0']; raise ValueError."""
    parts: list[str | tuple[str]] = []
    buf = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == ".":
            if buf:
                parts.append(buf)
            elif not parts or not isinstance(parts[-1], tuple):
                raise ValueError("empty path segment")
            buf = ""
        elif ch == "[":
            if buf:
                parts.append(buf)
                buf = ""
            depth, j = 1, i + 1
            while j < len(text) and depth:
                depth += {"[": 1, "]": -1}.get(text[j], 0)
                j += 1
            if depth:
                raise ValueError("unclosed '['")
            inner = text[i + 1 : j - 1].strip()
            if not inner:
                raise ValueError("empty '[]'")
            parts.append((inner,))
            i = j
            continue
        elif ch == "]":
            raise ValueError("unmatched ']'")
        else:
            buf += ch
        i += 1
    if buf:
        parts.append(buf)
    elif text.endswith("."):
        raise ValueError("path ends with '.'")
    return parts


def compile_path(text: str, cc: CompileContext, path: str, root: str = "args") -> Getter:
    """Compile `args.x.y` (or `res.x.y` with root='res') into a getter over args."""
    try:
        parts = split_path(text)
    except ValueError as exc:
        cc.error(path, f"invalid reference {text!r}: {exc}")
        return constant(MISSING)
    if not parts or parts[0] != root or len(parts) < 2:
        cc.error(path, f"invalid reference {text!r}")
        return constant(MISSING)
    segs: list[Segment] = []
    for part in parts[1:]:
        if isinstance(part, tuple):
            inner = part[0]
            if is_reference(inner):
                segs.append(("", None, compile_value(inner, cc, path)))
            else:  # a literal key in brackets: a['x'] or a[0]
                key = inner.strip("'\"")
                segs.append((key, array_index(key), None))
        else:
            segs.append((part, array_index(part), None))
    first = segs[0]
    if root == "args":
        if first[2] is not None:
            cc.read("*")
        else:
            cc.read(first[0], segs[1][0] if len(segs) > 1 and segs[1][2] is None else None)
    return _walker(tuple(segs))


def step(obj: Any, key: Any, idx: int | None) -> Any:
    """One step of a path: a key into an object, an index into an array."""
    if isinstance(obj, dict):
        return obj.get(key, MISSING)
    if isinstance(obj, list) and idx is not None:
        return obj[idx] if idx < len(obj) else MISSING
    return MISSING


def _dynamic_step(obj: Any, key: Any) -> Any:
    # A computed key: a string indexes objects, a non-negative int indexes arrays.
    if isinstance(key, str):
        return step(obj, key, array_index(key))
    if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
        return step(obj, str(key), key)
    return MISSING


def _walker(segs: tuple[Segment, ...]) -> Getter:
    if all(s[2] is None for s in segs):
        if len(segs) == 1:
            ((k1, i1, _),) = segs

            def get1(args: dict[str, Any]) -> Any:
                return step(args, k1, i1)

            return get1
        if len(segs) == 2:
            (k1, i1, _), (k2, i2, _) = segs

            def get2(args: dict[str, Any]) -> Any:
                v = step(args, k1, i1)
                return MISSING if v is MISSING else step(v, k2, i2)

            return get2

    def get(args: dict[str, Any]) -> Any:
        v: Any = args
        for key, idx, dyn in segs:
            if dyn is not None:
                k = dyn(args)
                if k is MISSING:
                    return MISSING
                v = _dynamic_step(v, k)
            else:
                v = step(v, key, idx)
            if v is MISSING:
                return MISSING
        return v

    return get


# --- `utils.*` calls -----------------------------------------------------------------------------


def compile_call(text: str, cc: CompileContext, path: str) -> Getter:
    """Compile `utils.name(arg, ...)`; arguments are references, quoted strings, numbers,
    booleans, null or nested utils calls."""
    try:
        getter, rest = _parse_call(text.strip(), cc, path)
        if rest.strip():
            raise ValueError(f"unexpected text after the call: {rest.strip()!r}")
        return getter
    except ValueError as exc:
        cc.error(path, f"invalid utils call {text!r}: {exc}")
        return constant(MISSING)


def _parse_call(text: str, cc: CompileContext, path: str) -> tuple[Getter, str]:
    m = _NAME.match(text)
    if not m:
        raise ValueError("expected utils.name(...)")
    name = m.group(1)
    if name not in FUNCTIONS:
        raise ValueError(f"unknown function utils.{name} (known: {', '.join(FUNCTIONS)})")
    factory, arity, path_args = FUNCTIONS[name]
    rest = text[m.end() :]
    args: list[Getter] = []
    kinds: list[str] = []
    rest = rest.lstrip()
    while not rest.startswith(")"):
        if args:
            if not rest.startswith(","):
                raise ValueError("expected ',' or ')'")
            rest = rest[1:].lstrip()
        getter, kind, rest = _parse_arg(rest, cc, path)
        args.append(getter)
        kinds.append(kind)
        rest = rest.lstrip()
        if not rest:
            raise ValueError("missing ')'")
    rest = rest[1:]
    if len(args) != arity:
        raise ValueError(f"utils.{name} takes {arity} argument(s), got {len(args)}")
    for i in path_args:
        if kinds[i] != "ref":
            raise ValueError(f"argument {i + 1} of utils.{name} must be an args.* reference")
    check_literals(name, args)
    return factory(*args), rest


def _parse_arg(text: str, cc: CompileContext, path: str) -> tuple[Getter, str, str]:
    if text.startswith("utils."):
        getter, rest = _parse_call(text, cc, path)
        return getter, "call", rest
    if text[:1] in ("'", '"'):
        end = text.find(text[0], 1)
        if end < 0:
            raise ValueError("unterminated string")
        return constant(text[1:end]), "literal", text[end + 1 :]
    if text.startswith("args."):
        depth, i = 0, 0
        while i < len(text):
            ch = text[i]
            if ch == "[":
                depth += 1
            elif ch == "]":
                depth -= 1
            elif depth == 0 and ch in ",)":
                break
            i += 1
        ref = text[:i].strip()
        return compile_path(ref, cc, path), "ref", text[i:]
    for word, value in (("true", True), ("false", False), ("null", None)):
        if text.startswith(word):
            return constant(value), "literal", text[len(word) :]
    m = _NUMBER.match(text)
    if m:
        num = float(m.group(0)) if m.group(1) else int(m.group(0))
        return constant(num), "literal", text[m.end() :]
    raise ValueError(f"cannot read argument at {text[:20]!r}")
