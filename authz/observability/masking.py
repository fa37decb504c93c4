"""Masking: what is never written to the decision log (or anywhere): values under secret
key names, and strings shaped like tokens or field-encryption envelopes."""

from __future__ import annotations

import math
import re
from typing import Any

MASK = "***"
# Key names (lower-case, '-' and '_' removed) whose values are never written.
_SENSITIVE_KEY_PARTS = (
    "token", "authorization", "cookie", "secret", "password", "passwd", "apikey", "privatekey",
    "credential",
)  # fmt: skip
# A JWT/JWS/JWE (header segment is base64url JSON: starts with "eyJ" or "ew"), any three long
# base64url segments, or our field-encryption envelope v1.<kid>.<base64url>.
# Linear time on request text (decision-log reasons quote request values): the first two
# shapes are only tried where a base64url run starts (the lookbehind), and the atomic group
# commits to the run's first "eyJ"/"ew" (a later one has less room, so cannot match where the
# first did not). Without this, `search` rescanned the run from every position: quadratic, and
# a 60 KB header held the GIL for seconds in the writer thread. Same matches as the plain
# `(?:eyJ|ew)B{4,}\.B+\.B*|B{16,}\.B{16,}\.B{16,}|\bv1\.[^.\s]+\.B{20,}` (B = base64url).
_SECRET_VALUE = re.compile(
    r"(?<![A-Za-z0-9_-])"
    r"(?:(?>[A-Za-z0-9_-]*?(?:eyJ|ew))[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\."
    r"|[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16})"
    r"|\bv1\.[^.\s]+\.[A-Za-z0-9_-]{20}"
)
_MAX_DEPTH = 64  # records are built by us, but a trace could nest request data


def _sensitive_key(key: str) -> bool:
    k = key.lower().replace("-", "").replace("_", "")
    return any(part in k for part in _SENSITIVE_KEY_PARTS)


_REFERENCE_PARTS = re.compile(r"[^A-Za-z0-9_-]+")


def sensitive_reference(text: str) -> bool:
    """True when a rule reference names a place whose values are never written anywhere:
    `args.token`, `args.headers.authorization`, `args.headers.x-api-key`,
    `args.params.password`, `utils.length(args.params.password)`..."""
    return any(_sensitive_key(part) for part in _REFERENCE_PARTS.split(text) if part)


def mask(value: Any, depth: int = 0) -> Any:
    """A copy of `value` with secrets replaced by "***" (keys by name, strings by shape)."""
    if isinstance(value, str):
        return MASK if _SECRET_VALUE.search(value) else value
    if depth >= _MAX_DEPTH:
        return MASK
    if isinstance(value, dict):
        return {
            k: MASK if isinstance(k, str) and _sensitive_key(k) else mask(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask(v, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray):
        return mask(bytes(value).decode("utf-8", "replace"), depth)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
