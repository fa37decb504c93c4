"""Comparing a decision with a case's expectation: readable differences, empty when it
passed."""

from __future__ import annotations

import difflib
import json
from typing import Any

from authz.decision import Decision
from authz.ruletest.spec import Expect


def compare(expect: Expect, d: Decision) -> list[str]:
    """Readable differences between the expectation and the decision (empty: it passed)."""
    out: list[str] = []
    for key, got in (("allowed", d.allowed), ("status", d.status)):
        want = getattr(expect, key)
        if want is not None and want != got:
            out.append(f"{key}: expected {_show(want)}, got {_show(got)}")
    if expect.error is not None:
        got_error = None if d.allowed else d.message
        if got_error != expect.error:
            out.append(f"error: expected {expect.error!r}, got {got_error!r}")
    if expect.reason is not None and expect.reason not in d.reason:
        out.append(f"reason: expected to contain {expect.reason!r}, got {d.reason!r}")
    if "params" in expect.model_fields_set and expect.params != d.params:
        out.append("params (- expected, + got):")
        out.extend(f"    {line}" for line in json_diff(expect.params, d.params))
    out.extend(_headers("headers", expect.headers, d.headers))
    out.extend(_headers("responseHeaders", expect.responseHeaders, d.response_headers_to_add))
    return out


def _headers(
    what: str, want: dict[str, str | bool | None] | None, got: list[tuple[str, str]]
) -> list[str]:
    """A string: that value; true: present (any value); false/null: absent."""
    if want is None:
        return []
    have = {k.lower(): v for k, v in got}
    out = []
    for name, value in want.items():
        actual = have.get(name.lower())
        if value is True and actual is None:
            out.append(f"{what}.{name}: expected present, got absent")
        elif value in (False, None) and actual is not None:
            out.append(f"{what}.{name}: expected absent, got {_clip(actual)!r}")
        elif isinstance(value, str) and actual != value:
            out.append(f"{what}.{name}: expected {value!r}, got {_clip(actual)!r}")
    return out


def json_diff(want: Any, got: Any) -> list[str]:
    a = json.dumps(want, indent=2, sort_keys=True, default=str).splitlines()
    b = json.dumps(got, indent=2, sort_keys=True, default=str).splitlines()
    diff = difflib.unified_diff(a, b, lineterm="", n=2)
    return [line for line in diff if not line.startswith(("---", "+++"))]


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _clip(value: str | None, n: int = 60) -> str | None:
    return value if value is None or len(value) <= n else value[:n] + "..."
