"""`python -m bench` (`make bench`). Environment:

BENCH_SECONDS (10) and BENCH_RUNS (3): each measured load; BENCH_RATE (1000) the fixed rate;
BENCH_ONLY=envoy,authz,...: a subset of the scenarios; BENCH_KEEP=1 keeps the work
directory (configs, logs); BENCH_PG_DSN (postgresql://127.0.0.1:5432/test);
SOAK=1 adds the soak run (SOAK_SECONDS 300, SOAK_INTERVAL 10).
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import chart, report
from bench.keys import make_key
from bench.loadtools import FIXED_CLIENTS, ensure_tools
from bench.procs import Procs
from bench.scenarios import SCENARIOS, Bench, Skip, measure, s_authz, warm_up
from bench.soak import format_soak, soak

RESULTS = Path(__file__).resolve().parent / "results"


def _env_num(name: str, default: float) -> float:
    value = float(os.environ.get(name, default))
    if value <= 0:
        raise SystemExit(f"{name} must be positive")
    return value


def _selected() -> list[str]:
    only = [s.strip() for s in os.environ.get("BENCH_ONLY", "").split(",") if s.strip()]
    unknown = set(only) - set(SCENARIOS) - {"soak"}
    if unknown:
        raise SystemExit(f"BENCH_ONLY: unknown {sorted(unknown)}; known {[*SCENARIOS, 'soak']}")
    return [s for s in SCENARIOS if s in only] if only else list(SCENARIOS)


def _wants_soak() -> bool:
    only = os.environ.get("BENCH_ONLY", "").split(",")
    return os.environ.get("SOAK", "") not in ("", "0") or "soak" in only


def run_scenarios(b: Bench, names: list[str], results: dict[str, Any]) -> bool:
    """Measure in rounds (run 1 of every scenario, then run 2 of each...), each scenario
    started fresh for its run and stopped after it: a machine that drifts (other tenants,
    clocks) moves every scenario of a round alike, the ratios pair the runs of a round
    (report.paired), and no idle process of another scenario runs beside the measured one.
    Fills `results`; False when a scenario failed (the others go on)."""
    ok = True
    live = list(names)
    for i in range(b.runs):
        for name in list(live):
            print(f"==> {name} (round {i + 1}/{b.runs})", flush=True)
            try:
                measure_round(b, name, i, results)
            except Skip as skip:
                print(f"    skipped: {skip}", flush=True)
                results[name] = {"skipped": str(skip)}
                live.remove(name)
            except Exception as exc:  # one broken scenario does not stop the others
                ok = False
                live.remove(name)
                _failed(results, name, exc)
    for out in results.values():
        for mode in out.get("modes", {}).values():
            mode["summary"] = report.summarize_runs(mode["runs"])
    return ok


def measure_round(b: Bench, name: str, i: int, results: dict[str, Any]) -> None:
    """Start the scenario, warm it up, measure run `i` of each of its loads, stop it."""
    setup, through_envoy = SCENARIOS[name]
    with Procs(_subdir(b, f"{name}/round-{i + 1}")) as procs:
        target = setup(b, procs)
        warm_up(b, target, through_envoy)
        out = results.setdefault(name, {"url": target.url, "modes": {}})
        for mode in ["wrk", "fixed"] if through_envoy else ["direct"]:
            out["modes"].setdefault(mode, {"runs": []})["runs"].append(measure(b, target, mode, i))


def _failed(results: dict[str, Any], name: str, exc: Exception) -> None:
    results[name] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    print(f"    ERROR in {name}:\n{traceback.format_exc()}", flush=True)


def run_soak(b: Bench) -> dict[str, Any]:
    seconds, interval = _env_num("SOAK_SECONDS", 300), _env_num("SOAK_INTERVAL", 10)
    print(f"==> soak ({seconds:.0f}s at {b.rate}/s through Envoy to authz)", flush=True)
    with Procs(_subdir(b, "soak")) as procs:
        try:
            target = s_authz(b, procs)
        except Skip as skip:
            print(f"    skipped: {skip}", flush=True)
            return {"skipped": str(skip)}
        return soak(b, target, seconds, interval)


def _subdir(b: Bench, name: str) -> Path:
    path = b.workdir / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def meta(b: Bench, stamp: str) -> dict[str, Any]:
    import grpc

    from bench.envoy import ENVOY

    return {
        "timestamp": stamp,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "python": sys.version.split()[0],
        "grpcio": grpc.__version__,
        "envoy": _version([str(ENVOY), "--version"]),
        "wrk_version": _version(["wrk", "-v"]),
        "h2load_version": _version(["h2load", "--version"]),
        "seconds": b.seconds,
        "runs": b.runs,
        "fixed_rate": b.rate,
        "load_wrk": "wrk -t1 -c32 --latency (HTTP/1.1, closed loop)",
        "load_fixed": f"h2load --h1 -c{FIXED_CLIENTS} -m1 --rps=rate/{FIXED_CLIENTS} "
        "-r1 --rate-period=1000/rate ms -n rate*seconds (fixed rate, evenly spaced; latency "
        "from --log-file, timed from each request's send)",
        "load_direct": "h2load -t1 -c4 -m8, POST of a length-prefixed CheckRequest",
        "envoy_flags": "--concurrency 1 --disable-hot-restart",
        "order": "rounds: run i of every scenario (each started fresh) before run i+1",
    }


def _stop_on_signals() -> None:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through every Procs: all children stopped

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it


def main() -> int:
    _stop_on_signals()
    names, with_soak = _selected(), _wants_soak()
    ensure_tools()
    workdir = Path(tempfile.mkdtemp(prefix="authz-bench-"))
    stamp = time.strftime("%Y%m%dT%H%M%S")
    b = Bench(
        workdir,
        make_key(workdir),
        _env_num("BENCH_SECONDS", 10),
        int(_env_num("BENCH_RUNS", 3)),
        int(_env_num("BENCH_RATE", 1000)),
    )
    print(f"bench: {b.runs} run(s) x {b.seconds:g}s per load; work dir {workdir}", flush=True)
    results: dict[str, Any] = {}
    document: dict[str, Any] = {"meta": meta(b, stamp), "scenarios": results}
    failed = interrupted = False
    try:
        failed = not run_scenarios(b, names, results)
        if with_soak:
            document["soak"] = run_soak(b)
    except KeyboardInterrupt:
        interrupted = document["interrupted"] = True
        print("\ninterrupted: every process stopped; partial results follow", flush=True)
    document["ratios"] = report.ratios(results)
    if results:
        print("\n" + report.table(results, b.rate))
    print("\nratios:\n" + report.format_ratios(document["ratios"]))
    if "soak" in document:
        print("\n" + format_soak(document["soak"]))
    print(f"\nwrote {report.write_json(RESULTS, stamp, document)}")
    if not interrupted and (svg := chart.write(results, f"make bench {stamp}")):
        print(f"wrote {svg}")
    if failed or interrupted or os.environ.get("BENCH_KEEP"):
        print(f"work dir kept (configs, logs): {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 130 if interrupted else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
