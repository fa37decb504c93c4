"""SOAK=1: authz through Envoy at a fixed rate for SOAK_SECONDS (default 300), sampling the
server's RSS, open FDs and threads every SOAK_INTERVAL (10) s; drift is reported over the
samples after the warm-up (the first 60 s, or the first fifth of a shorter soak)."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from bench.loadtools import h2load
from bench.procs import descendants, resources
from bench.scenarios import Bench, Target


def sample_tree(pid: int) -> dict[str, int]:
    """RSS, FDs and threads summed over the server and its worker processes."""
    total = {"rss_kib": 0, "fds": 0, "threads": 0}
    for p in descendants(pid):
        with contextlib.suppress(OSError, KeyError):
            for k, v in resources(p).items():
                total[k] += v
    return total


def slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value), per minute."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if var == 0:
        return None
    return 60 * sum((t - mx) * (v - my) for t, v in points) / var


def drift(samples: list[dict[str, float]], warmup_s: float) -> dict[str, Any]:
    """First post-warm-up sample vs the last one, and the trend, for each resource."""
    after = [s for s in samples if s["t"] >= warmup_s] or samples[-1:]
    out: dict[str, Any] = {}
    for key in ("rss_kib", "fds", "threads"):
        first, last = after[0][key], after[-1][key]
        out[key] = {
            "after_warmup": first,
            "last": last,
            "delta": last - first,
            "per_min": slope_per_min([(s["t"], s[key]) for s in after]),
        }
    return out


def soak(b: Bench, t: Target, seconds: float, interval: float) -> dict[str, Any]:
    server = t.meter["server"]
    samples: list[dict[str, float]] = []
    stop = threading.Event()
    start = time.monotonic()

    def sampler() -> None:
        while True:
            with contextlib.suppress(OSError):
                samples.append({"t": round(time.monotonic() - start, 1), **sample_tree(server.pid)})
                s = samples[-1]
                print(f"    soak t={s['t']:.0f}s rss={s['rss_kib']} KiB fds={s['fds']} "
                      f"threads={s['threads']}", flush=True)  # fmt: skip
            if stop.wait(interval):
                return

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    try:
        result = h2load(t.url, seconds, b.workdir, t.headers, rate=b.rate)
    finally:
        stop.set()
        thread.join(5)
    samples.append({"t": round(time.monotonic() - start, 1), **sample_tree(server.pid)})
    warmup = min(60.0, seconds / 5)
    return {
        "seconds": seconds,
        "rate": b.rate,
        "requests": result.requests,
        "achieved_rps": result.rps,
        "errors": result.errors,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "warmup_s": warmup,
        "samples": samples,
        "drift": drift(samples, warmup),
    }


def format_soak(s: dict[str, Any]) -> str:
    if "skipped" in s:
        return f"soak skipped: {s['skipped']}"
    lat = ", ".join(f"{k[:3]} {s[k]:.2f} ms" for k in ("p50_ms", "p99_ms") if s.get(k) is not None)
    lines = [
        f"soak: {s['seconds']:.0f}s at {s['rate']}/s: {s['requests']:,} requests "
        f"({s['achieved_rps']:,.0f}/s), {s['errors']} errors, {lat}; "
        f"drift after the {s['warmup_s']:.0f}s warm-up:"
    ]
    for key, d in s["drift"].items():
        per_min = "-" if d["per_min"] is None else f"{d['per_min']:+.1f}/min"
        lines.append(
            f"  {key:<8} {d['after_warmup']} -> {d['last']} ({d['delta']:+}), trend {per_min}"
        )
    return "\n".join(lines)
