"""The one strict JSON decoder: UTF-8 text, no NaN/Infinity (nor a number that overflows to
one), no duplicate members. Request bodies (authz/request.py) and token parts and key sets
(identity/) both parse with it; each caller words its own errors from `JSONError.kind`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

PairsHook = Callable[[list[tuple[str, Any]]], dict[str, Any]]


class JSONError(ValueError):
    """Not strict JSON. `kind`: utf8 | syntax | depth | constant | range | duplicate;
    `value` is the offending constant (NaN, Infinity, -Infinity) for kind "constant"."""

    def __init__(self, message: str, kind: str, value: str = ""):
        super().__init__(message)
        self.kind = kind
        self.value = value


def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The default object hook: an object whose member names repeat is not accepted."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise JSONError("duplicate member", "duplicate")
    return obj


def _reject_constant(name: str) -> Any:
    raise JSONError(f"{name} is not JSON", "constant", name)


def _finite_float(text: str) -> float:
    # json parses 1e999 as inf: the same non-JSON value as Infinity, by another spelling
    value = float(text)
    if not math.isfinite(value):
        raise JSONError("number out of range", "range")
    return value


_DECODER = json.JSONDecoder(
    object_pairs_hook=no_duplicates,
    parse_constant=_reject_constant,
    parse_float=_finite_float,
)


def loads(data: bytes, object_pairs_hook: PairsHook | None = None) -> Any:
    """Parse UTF-8 JSON strictly; JSONError otherwise. `object_pairs_hook` replaces the
    duplicate check (it may check more, and raise its own exceptions, which pass through)."""
    try:
        text = data.decode("utf-8")
        if object_pairs_hook is None:
            return _DECODER.decode(text)
        return json.loads(
            text,
            object_pairs_hook=object_pairs_hook,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except JSONError:
        raise
    except RecursionError:
        raise JSONError("JSON nested too deeply", "depth") from None
    except UnicodeDecodeError as exc:
        raise JSONError(str(exc), "utf8") from None
    except ValueError as exc:  # JSONDecodeError, and int() digit limits
        raise JSONError(str(exc), "syntax") from None
