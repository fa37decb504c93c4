"""Canonical decimal strings: the one spelling of a number that authz reads as that number.

Path parameters, query values and headers are strings. On SQL backends a `find` value that is
a canonical decimal string compares with a numeric column as the number it spells (as
SQLite's own column affinity would compare it), and `utils.number` converts one explicitly.
Canonical means exactly one spelling per number: an optional `-`, no leading zeros, no `+`,
no trailing zeros after the point, no exponent, no spaces (`"12"`, `"-3"`, `"0.5"`; not
`"012"`, `"+1"`, `"1.0"`, `"1e3"`, `" 1"`, `"-0"`), and an integer within 64 bits:
`/posts/01` is not post 1.
"""

from __future__ import annotations

import re

# `-0`, `-0.0` are excluded below: zero has one spelling, `0`.
_CANONICAL = re.compile(r"-?(?:0|[1-9][0-9]{0,18})(?:\.[0-9]{0,16}[1-9])?")
_INT64 = (-(1 << 63), (1 << 63) - 1)


def parse_canonical(text: str) -> int | float | None:
    """The number `text` spells canonically, or None (not a canonical decimal string)."""
    if not _CANONICAL.fullmatch(text):
        return None
    value = float(text) if "." in text else int(text)
    if text[0] == "-" and value == 0:
        return None
    if type(value) is int and not _INT64[0] <= value <= _INT64[1]:
        return None
    return value


def is_canonical(text: str) -> bool:
    return parse_canonical(text) is not None
