"""References (`args.a.b.0`, `args.a[args.params.key]`) and `utils.*` calls, compiled once.

A compiled value is a *getter*: a function of `args` returning the value, or `MISSING` when a
path does not resolve (or a utils function cannot produce a value). Values read from the
request are returned as data: they are never parsed again as references.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from authz.rules.compiler import CompileContext


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()
Getter = Callable[[dict[str, Any]], Any]


def is_reference(raw: Any) -> bool:
    return isinstance(raw, str) and (raw.startswith("args.") or raw.startswith("utils."))


def constant(value: Any) -> Getter:
    def get(args: dict[str, Any]) -> Any:
        return value

    get.constant = True  # type: ignore[attr-defined]
    get.value = value  # type: ignore[attr-defined]
    return get


def is_constant(getter: Getter) -> bool:
    return getattr(getter, "constant", False)


def compile_value(raw: Any, cc: CompileContext, path: str) -> Getter:
    """A literal, a reference or a utils call (at the top level of a value only)."""
    if isinstance(raw, str):
        if raw.startswith("args."):
            return compile_path(raw, cc, path)
        if raw.startswith("utils."):
            from authz.rules.utils import compile_call

            return compile_call(raw, cc, path)
    return constant(raw)


def compile_template(raw: Any, cc: CompileContext, path: str) -> Getter:
    """An object or list whose leaves may be references: built fresh per request.

    The getter returns MISSING when any reference in it does not resolve."""
    if isinstance(raw, dict):
        parts = {k: compile_template(v, cc, f"{path}.{k}") for k, v in raw.items()}
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
        getters = [compile_template(v, cc, f"{path}[{i}]") for i, v in enumerate(raw)]
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
                segs.append((key, _index(key), None))
        else:
            segs.append((part, _index(part), None))
    first = segs[0]
    if root == "args":
        if first[2] is not None:
            cc.read("*")
        else:
            cc.read(first[0], segs[1][0] if len(segs) > 1 and segs[1][2] is None else None)
    return _walker(tuple(segs))


def _index(key: str) -> int | None:
    return int(key) if key.isascii() and key.isdigit() else None


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
        return step(obj, key, _index(key))
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
