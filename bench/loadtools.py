"""The load tools: installing them, running them bounded in time, parsing their output."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.stats import percentile

# Fixed rate: each HTTP/1.1 connection has one request in flight, so 20 of them keep the
# rate up to 20 ms of latency; h2load times each request from when it is sent. The
# connections start 1/rate apart (-r1 --rate-period), so the requests arrive evenly spaced:
# started together, every connection's --rps timer fires in the same instant, and 1000 req/s
# arrives as 50 bursts of 20 that queue behind each other (measured: +3 ms at p50 on a
# server that answers in 0.2 ms).
FIXED_CLIENTS = 20
APT_PACKAGES = {"wrk": "wrk", "h2load": "nghttp2-client"}


def ensure_tools() -> None:
    """Install wrk / h2load with apt-get when missing (say what is done)."""
    missing = [tool for tool in APT_PACKAGES if shutil.which(tool) is None]
    if not missing:
        return
    packages = sorted({APT_PACKAGES[t] for t in missing})
    if shutil.which("apt-get") is None:
        raise SystemExit(f"missing {', '.join(missing)} and no apt-get: install {packages}")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    print(f"==> {', '.join(missing)} missing: apt-get install -y {' '.join(packages)}")
    subprocess.run([*sudo, "apt-get", "update", "-q"], check=True)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-q", *packages], check=True)
    still = [t for t in missing if shutil.which(t) is None]
    if still:
        raise SystemExit(f"still missing after apt-get: {', '.join(still)}")


@dataclass
class LoadResult:
    """One bounded load run: what the tool reported plus its own CPU time."""

    requests: int = 0  # completed with a response
    rps: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0  # non-2xx responses, socket errors, timeouts
    tool_cpu_s: float = 0.0
    raw: str = field(default="", repr=False)


# --- wrk ------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_WRK_PCT = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_WRK_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", re.M)
_WRK_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def parse_wrk(text: str) -> LoadResult:
    """Parse `wrk --latency` output (latencies to ms)."""
    total, rps = _WRK_TOTAL.search(text), _WRK_RPS.search(text)
    if not total or not rps:
        raise ValueError(f"not wrk output: {text[:200]!r}")
    pct = {float(p): float(v) * _UNITS[u] for p, v, u in _WRK_PCT.findall(text)}
    errors = sum(int(n) for n in _WRK_NON2XX.findall(text))
    if sock := _WRK_SOCKET.search(text):
        errors += sum(int(n) for n in sock.groups())
    return LoadResult(
        requests=int(total.group(1)),
        rps=float(rps.group(1)),
        p50_ms=pct.get(50.0),
        p99_ms=pct.get(99.0),
        errors=errors,
        raw=text,
    )


# --- h2load ---------------------------------------------------------------------------

_H2_FINISHED = re.compile(r"^finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s", re.M)
_H2_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout",
    re.M,
)
_H2_STATUS = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.M)


def parse_h2load(text: str, log_lines: list[str] | None = None) -> LoadResult:
    """Parse h2load's summary; percentiles come from its --log-file (it prints none)."""
    fin, req, status = (r.search(text) for r in (_H2_FINISHED, _H2_REQUESTS, _H2_STATUS))
    if not fin or not req or not status:
        raise ValueError(f"not h2load output: {text[-300:]!r}")
    ok = int(status.group(1))
    failed = int(req.group(5))  # h2load counts errored and timed-out streams as failed
    non2xx = sum(int(status.group(i)) for i in (2, 3, 4))
    result = LoadResult(requests=ok, rps=float(fin.group(3)), errors=failed + non2xx, raw=text)
    if log_lines is not None:
        latencies, bad = parse_h2load_log(log_lines)
        result.p50_ms = percentile(latencies, 50)
        result.p99_ms = percentile(latencies, 99)
        result.errors = max(result.errors, bad)
    return result


def parse_h2load_log(lines: list[str]) -> tuple[list[float], int]:
    """h2load --log-file rows `start_us<TAB>status<TAB>duration_us`: latencies (ms) of the
    2xx responses, and the number of other rows (status -1 is a failed stream)."""
    latencies: list[float] = []
    bad = 0
    for line in lines:
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        status, duration = int(parts[1]), int(parts[2])
        if 200 <= status < 300:
            latencies.append(duration / 1000)
        else:
            bad += 1
    return latencies, bad


# --- running --------------------------------------------------------------------------


def run_tool(argv: list[str], limit_s: float, workdir: Path) -> tuple[str, float]:
    """Run a load tool to completion, killed if it overruns `limit_s`; return its stdout and
    CPU seconds (from wait4's rusage, since it is gone before /proc could be read)."""
    out_path = workdir / "load.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + limit_s
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                proc.send_signal(signal.SIGKILL)
                raise TimeoutError(f"{argv[0]} overran {limit_s:.0f}s; killed")
            time.sleep(0.05)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
        raise
    text = out_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{text[-800:]}")
    return text, usage.ru_utime + usage.ru_stime


def wrk(url: str, seconds: float, workdir: Path, headers: dict[str, str]) -> LoadResult:
    """Closed-loop throughput: wrk -t1 -c32 --latency."""
    argv = ["wrk", "-t1", "-c32", f"-d{_secs(seconds)}s", "--latency", "--timeout", "5s"]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    text, cpu = run_tool([*argv, url], seconds + 30, workdir)
    result = parse_wrk(text)
    result.tool_cpu_s = cpu
    return result


def h2load(
    url: str,
    seconds: float,
    workdir: Path,
    headers: dict[str, str],
    *,
    body: Path | None = None,
    rate: int | None = None,
) -> LoadResult:
    """Direct gRPC load (`-t1 -c4 -m8`, POSTing `body`), or with `rate` a fixed-rate
    HTTP/1.1 run: FIXED_CLIENTS staggered connections x rate/FIXED_CLIENTS req/s each."""
    log = workdir / "h2load.log"
    log.unlink(missing_ok=True)
    argv = ["h2load", "-t1", "--log-file", str(log)]
    if rate is None:
        argv += ["-D", _secs(seconds), "-c4", "-m8"]
    else:
        argv += fixed_rate_args(rate, seconds)
    if body is not None:
        argv += ["-d", str(body)]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    text, cpu = run_tool([*argv, url], seconds + 30, workdir)
    result = parse_h2load(text, log.read_text().splitlines() if log.exists() else [])
    result.tool_cpu_s = cpu
    return result


def fixed_rate_args(rate: int, seconds: float) -> list[str]:
    """h2load flags for `rate` req/s over `seconds`: FIXED_CLIENTS HTTP/1.1 connections, each
    at rate/FIXED_CLIENTS req/s, started 1000/rate ms apart so that their sends interleave."""
    per_client = rate / FIXED_CLIENTS
    # h2load takes -r (staggered starts) only with a request count, not with -D.
    period_ms = max(1, round(1000 / rate))  # its --rate-period has 1 ms resolution
    return [
        "--h1", f"-c{FIXED_CLIENTS}", "-m1", f"--rps={per_client:g}",
        "-r1", f"--rate-period={period_ms}ms", "-n", str(round(rate * seconds)),
    ]  # fmt: skip


def _secs(seconds: float) -> str:
    return str(max(1, round(seconds)))
