"""The README's chart of the latest results (docs/bench.svg): per scenario, req/s under wrk
and the latency it adds over Envoy alone at the fixed rate (p50). Plain SVG text: no
plotting library, and the file diffs like the results do."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from bench.report import median

CHART = Path(__file__).resolve().parent.parent / "docs" / "bench.svg"
_ROW, _LABEL, _BAR, _GAP = 22, 190, 300, 110
_HTTP = "#2b7bb9"  # the HTTP transport's scenarios
_OTHER = "#8a8f98"


def _rows(results: dict[str, Any]) -> list[tuple[str, float, float | None]]:
    base = median(results, "envoy", "fixed", "p50_ms")
    rows = []
    for name in results:
        rps = median(results, name, "wrk", "rps")
        if rps is None:
            continue
        p50 = median(results, name, "fixed", "p50_ms")
        added = None if p50 is None or base is None or name == "envoy" else max(0.0, p50 - base)
        rows.append((name, rps, added))
    return rows


def _bar(x: float, y: float, width: float, color: str, text: str) -> str:
    rect = f'<rect x="{x:.0f}" y="{y:.0f}" width="{max(width, 1):.1f}" height="{_ROW - 6}"'
    label = f'<text x="{x + width + 4:.0f}" y="{y + _ROW - 10:.0f}">{text}</text>'
    return f'{rect} fill="{color}"/>{label}'


def render(results: dict[str, Any], title: str) -> str:
    rows = _rows(results)
    top_rps = max((r for _, r, _ in rows), default=1.0) or 1.0
    top_ms = max((a for _, _, a in rows if a is not None), default=0.0) or 1.0
    width = _LABEL + 2 * (_BAR + _GAP)
    height = 60 + _ROW * len(rows)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="8" y="18" font-weight="bold">{escape(title)}</text>',
        f'<text x="{_LABEL}" y="42">req/s (wrk -c32, median)</text>',
        f'<text x="{_LABEL + _BAR + _GAP}" y="42">added p50 ms over Envoy alone, fixed rate'
        '</text>',
    ]  # fmt: skip
    for i, (name, rps, added) in enumerate(rows):
        y = 50 + i * _ROW
        color = _HTTP if name.endswith("http") or name == "http-floor" else _OTHER
        out.append(f'<text x="8" y="{y + _ROW - 10}">{escape(name)}</text>')
        out.append(_bar(_LABEL, y, _BAR * rps / top_rps, color, f"{rps:,.0f}"))
        if added is not None:
            x = _LABEL + _BAR + _GAP
            out.append(_bar(x, y, _BAR * added / top_ms, color, f"{added:.2f}"))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write(results: dict[str, Any], title: str, path: Path = CHART) -> Path | None:
    """Rewrite the chart from these results; None (and the chart kept) when they hold no
    throughput figure (a run of direct scenarios only, or an interrupted one)."""
    if not _rows(results):
        return None
    path.write_text(render(results, title))
    return path
