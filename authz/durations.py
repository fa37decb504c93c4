"""Go-style durations ("300ms", "30s", "1h30m", "-4h"), as Space Cloud rules write them."""

from __future__ import annotations

import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_WHOLE = re.compile(r"[+-]?(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+")


def parse_duration(text: str) -> float:
    """Return the duration in seconds; raise ValueError for anything else."""
    if not isinstance(text, str) or not _WHOLE.fullmatch(text):
        raise ValueError(f"invalid duration {text!r} (expected e.g. '150ms', '30s', '1h30m')")
    sign = -1.0 if text.startswith("-") else 1.0
    return sign * sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
