"""Percentiles and run summaries (pure functions, unit-tested)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100): the smallest value with at least p % of the
    values at or below it; what wrk and HdrHistogram report. NaN for no values."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} out of 0..100")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Summary:
    """Median of the runs with their min and max."""

    median: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float | None]:
        return {"median": _num(self.median), "min": _num(self.low), "max": _num(self.high)}


def summarize(values: Sequence[float | None]) -> Summary:
    """Median, min and max of the runs that produced a value (NaN when none did)."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    if not present:
        return Summary(math.nan, math.nan, math.nan)
    return Summary(statistics.median(present), min(present), max(present))


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return None
    return a / b


def per_request_us(cpu_seconds: float, requests: int) -> float | None:
    """CPU microseconds per completed request."""
    return cpu_seconds * 1e6 / requests if requests > 0 else None


def _num(v: float) -> float | None:
    return None if math.isnan(v) else v  # JSON has no NaN
