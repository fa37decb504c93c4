"""The table, the ratios and the JSON file."""

from __future__ import annotations

import json
import math
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


def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    names = ("authz", "floor", "native", "envoy", "authz-query-sqlite", "authz-query-postgres")
    rps = {s: median(results, s, "wrk", "rps") for s in names}

    def added(key: str) -> float | None:
        a, e = median(results, "authz", "fixed", key), median(results, "envoy", "fixed", key)
        return None if a is None or e is None else a - e

    return {
        "authz/floor req/s": ratio(rps["authz"], rps["floor"]),
        "authz/native req/s": ratio(rps["authz"], rps["native"]),
        "authz/envoy req/s": ratio(rps["authz"], rps["envoy"]),
        "authz-query-sqlite/authz req/s": ratio(rps["authz-query-sqlite"], rps["authz"]),
        "authz-query-postgres/authz req/s": ratio(rps["authz-query-postgres"], rps["authz"]),
        "direct CPU µs authz/floor": ratio(
            median(results, "direct-authz", "direct", "cpu.server"),
            median(results, "direct-floor", "direct", "cpu.server"),
        ),
        "added p50 ms @fixed rate (authz - envoy)": added("p50_ms"),
        "added p99 ms @fixed rate (authz - envoy)": added("p99_ms"),
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
