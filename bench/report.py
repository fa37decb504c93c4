"""The table, the ratios and the JSON file."""

from __future__ import annotations

import json
import math
import operator
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.stats import ratio, summarize

ROLES = ("envoy", "server", "load", "machine")


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median (min-max) of each figure over the runs."""
    out: dict[str, Any] = {
        key: summarize([r[key] for r in runs]).as_dict() for key in ("rps", "p50_ms", "p99_ms")
    }
    out["errors"] = sum(r["errors"] for r in runs)
    out["cpu_us_per_req"] = {
        role: summarize([r["cpu_us_per_req"].get(role) for r in runs]).as_dict()
        for role in ROLES
        if any(r["cpu_us_per_req"].get(role) is not None for r in runs)
    }
    return out


def median(results: dict[str, Any], scenario: str, mode: str, key: str) -> float | None:
    """results[scenario][mode] summary's median of `key` ("rps", "cpu.server", ...)."""
    try:
        summary = results[scenario]["modes"][mode]["summary"]
        if key.startswith("cpu."):
            return summary["cpu_us_per_req"][key[4:]]["median"]
        return summary[key]["median"]
    except (KeyError, TypeError):
        return None


def _runs(results: dict[str, Any], scenario: str, mode: str, key: str) -> list[Any]:
    try:
        runs = results[scenario]["modes"][mode]["runs"]
    except (KeyError, TypeError):
        return []
    if key.startswith("cpu."):
        return [r["cpu_us_per_req"].get(key[4:]) for r in runs]
    return [r.get(key) for r in runs]


def paired(
    results: dict[str, Any],
    a: tuple[str, str, str],
    b: tuple[str, str, str],
    op: Callable[[float, float], float | None],
) -> float | None:
    """`op(a, b)` of two figures (scenario, mode, key): the median over the rounds of `op`
    of run i of each, as run i of every scenario ran in the same round (bench/__main__), on
    the same machine state; the figures' medians when the runs do not pair up."""
    xs, ys = _runs(results, *a), _runs(results, *b)
    if xs and len(xs) == len(ys) and None not in xs and None not in ys:
        values = [v for v in map(op, xs, ys) if v is not None]
        return statistics.median(values) if values else None
    x, y = median(results, *a), median(results, *b)
    return None if x is None or y is None else op(x, y)


def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    def rps(a: str, b: str) -> float | None:
        return paired(results, (a, "wrk", "rps"), (b, "wrk", "rps"), ratio)

    def added(key: str, scenario: str = "authz") -> float | None:
        return paired(results, (scenario, "fixed", key), ("envoy", "fixed", key), operator.sub)

    return {
        "authz/floor req/s": rps("authz", "floor"),
        "authz/native req/s": rps("authz", "native"),
        "authz/envoy req/s": rps("authz", "envoy"),
        "authz-query-sqlite/authz req/s": rps("authz-query-sqlite", "authz"),
        "authz-query-sqlite-rollback/authz req/s": rps("authz-query-sqlite-rollback", "authz"),
        "authz-query-postgres/authz req/s": rps("authz-query-postgres", "authz"),
        "authz-http/native req/s": rps("authz-http", "native"),
        "authz-http/authz req/s": rps("authz-http", "authz"),
        "authz-http/http-floor req/s": rps("authz-http", "http-floor"),
        "authz-query-sqlite-http/authz-http req/s": rps("authz-query-sqlite-http", "authz-http"),
        "authz-query-postgres-http/authz-http req/s": rps(
            "authz-query-postgres-http", "authz-http"
        ),
        "direct CPU µs authz/floor": paired(
            results,
            ("direct-authz", "direct", "cpu.server"),
            ("direct-floor", "direct", "cpu.server"),
            ratio,
        ),
        "added p50 ms @fixed rate (authz - envoy)": added("p50_ms"),
        "added p99 ms @fixed rate (authz - envoy)": added("p99_ms"),
        "added p50 ms @fixed rate (authz-http - envoy)": added("p50_ms", "authz-http"),
        "added p99 ms @fixed rate (authz-http - envoy)": added("p99_ms", "authz-http"),
    }


def _range(s: dict[str, float | None], fmt: str) -> str:
    if s["median"] is None:
        return "-"
    if s["min"] == s["max"]:
        return format(s["median"], fmt)
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"


def _cell(text: str, width: int = 110) -> str:
    """One table cell: no pipes, bounded length (the full text is printed above and in JSON)."""
    text = text.replace("|", ";")
    return text if len(text) <= width else text[: width - 3] + "..."


def _med(s: dict[str, Any] | None, fmt: str) -> str:
    return "-" if not s or s["median"] is None else format(s["median"], fmt)


def table(results: dict[str, Any], rate: int) -> str:
    head = ["scenario", "load", "req/s median (min-max)", "p50 ms", "p99 ms", "errors"]
    head += [f"CPU µs/req {r}" for r in ROLES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, res in results.items():
        if res.get("skipped") or res.get("error"):
            why = f"skipped: {res['skipped']}" if res.get("skipped") else f"ERROR: {res['error']}"
            lines.append(f"| {name} | {_cell(why)} |")
            continue
        for mode, m in res["modes"].items():
            s = m["summary"]
            label = {"wrk": "wrk -c32", "fixed": f"{rate}/s fixed", "direct": "h2load gRPC"}[mode]
            cells = [name, label, _range(s["rps"], ",.0f"), _med(s["p50_ms"], ".2f")]
            cells += [_med(s["p99_ms"], ".2f"), str(s["errors"])]
            cells += [_med(s["cpu_us_per_req"].get(r), ".0f") for r in ROLES]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_ratios(r: dict[str, float | None]) -> str:
    out = []
    for name, value in r.items():
        shown = "-" if value is None or math.isnan(value) else f"{value:.3f}"
        out.append(f"  {name:<42} {shown}")
    return "\n".join(out)


def write_json(directory: Path, stamp: str, document: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stamp}.json"
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return path
