"""The neutral request every stage after decode works on, and the request variables (`args`).

No Envoy types past decode: the CLI, the debug API and the tests build `Request`s directly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from authz.config.schema import Limits
from authz.errors import RequestError


def split_target(target: str) -> tuple[str, str]:
    """`/path?query#fragment` -> (path, query); the fragment is dropped."""
    if "#" in target:
        target = target.partition("#")[0]
    path, _, query = target.partition("?")
    return path, query


@dataclass(slots=True)
class Request:
    method: str
    path: str  # without the query string
    query_string: str = ""
    # Lower-case names. Read-only: decode passes Envoy's protobuf map as it is (converting
    # every header costs more than the rest of decode); args.headers is a dict copy.
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    body_partial: bool = False  # Envoy sent only the first max_request_bytes
    context: Mapping[str, str] = field(default_factory=dict)  # the route's context_extensions
    request_id: str = ""

    @classmethod
    def from_target(
        cls,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        body_partial: bool = False,
        context: Mapping[str, str] | None = None,
        request_id: str = "",
    ) -> Request:
        """Split `/path?query#fragment` as it arrives from the CLI or a test."""
        path, query = split_target(target)
        return cls(
            method,
            path,
            query,
            {} if headers is None else headers,
            body,
            body_partial,
            {} if context is None else context,
            request_id,
        )


def copy_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """`args.headers`: a dict the rules may read and field rules may change."""
    # Key by key: for a protobuf map, dict(headers) goes through the Mapping mixin's keys()
    # view in Python and costs twice as much.
    return {k: headers[k] for k in headers}


def parse_query(query_string: str) -> dict[str, Any]:
    """Query parameters; a repeated key gives a list (DESIGN §3)."""
    out: dict[str, Any] = {}
    for key, value in _pairs(query_string):
        if key in out:
            prev = out[key]
            if isinstance(prev, list):
                prev.append(value)
            else:
                out[key] = [prev, value]
        else:
            out[key] = value
    return out


def _pairs(query_string: str) -> Iterable[tuple[str, str]]:
    """parse_qsl(keep_blank_values=True); without escapes ('%', '+') a plain split gives the
    same pairs in a fraction of the time (the common case: ids and names)."""
    if "%" in query_string or "+" in query_string:
        return parse_qsl(query_string, keep_blank_values=True)
    return [(k, v) for k, _, v in (p.partition("=") for p in query_string.split("&") if p)]


class _KeyCounter:
    """object_pairs_hook: rejects duplicate members and counts members in the whole body."""

    __slots__ = ("left",)

    def __init__(self, limit: int):
        self.left = limit

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        self.left -= len(pairs)
        if self.left < 0:
            raise RequestError("the JSON body has too many object members")
        obj = dict(pairs)
        if len(obj) != len(pairs):
            raise RequestError("the JSON body has duplicate object members")
        return obj


def _reject_constant(name: str) -> Any:
    raise RequestError(f"the JSON body contains {name}, which is not JSON")


def _finite_float(text: str) -> float:
    # json parses 1e999 as inf: the same non-JSON value as Infinity, by another spelling
    value = float(text)
    if not math.isfinite(value):
        raise RequestError("the JSON body has a number out of range")
    return value


def parse_json_body(data: bytes, limits: Limits) -> Any:
    """Strict JSON: no NaN/Infinity, no duplicate members, bounded size, depth and members.

    Every failure is a RequestError (-> 400), never another exception."""
    if len(data) > limits.maxBodyBytes:
        raise RequestError("the request body is too large")
    try:
        text = data.decode("utf-8")
        value = json.loads(
            text,
            object_pairs_hook=_KeyCounter(limits.maxJsonKeys),
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except RequestError:
        raise
    except RecursionError:
        raise RequestError("the JSON body is nested too deeply") from None
    except UnicodeDecodeError:
        raise RequestError("the request body is not UTF-8") from None
    except ValueError as exc:  # JSONDecodeError, and int() digit limits
        raise RequestError(f"the request body is not valid JSON: {str(exc)[:80]}") from None
    if _depth_exceeds(value, limits.maxJsonDepth):
        raise RequestError("the JSON body is nested too deeply")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            if d > limit:
                return True
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return False
