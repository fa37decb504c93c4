"""The benchmark's own parsing and statistics (the benchmark itself never runs in tests)."""

from __future__ import annotations

import contextlib
import math
import sqlite3
import struct
from itertools import pairwise
from pathlib import Path

import pytest

from bench.checkreq import check_request, grpc_frame
from bench.datastores import seed_sqlite
from bench.loadtools import fixed_rate_args, parse_h2load, parse_h2load_log, parse_wrk
from bench.report import ratios, summarize_runs, table
from bench.soak import drift, slope_per_min
from bench.stats import per_request_us, percentile, ratio, summarize

# Captured on the build machine: wrk 4.1.0 and h2load 1.52.0 against Envoy 1.40.
WRK = """\
Running 2s test @ http://127.0.0.1:19000/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   625.39us  201.12us   3.97ms   80.40%
    Req/Sec    49.95k     7.31k   57.08k    80.00%
  Latency Distribution
     50%  592.00us
     75%  692.00us
     90%  839.00us
     99%    1.20ms
  99242 requests in 2.00s, 11.26MB read
Requests/sec:  49592.98
Transfer/sec:      5.63MB
"""

WRK_NON2XX = """\
Running 1s test @ http://127.0.0.1:19000/up
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.35ms    0.86ms   5.46ms   69.78%
    Req/Sec    13.40k     2.14k   16.64k    60.00%
  Latency Distribution
     50%    2.12ms
     75%    2.79ms
     90%    3.73ms
     99%    4.60ms
  13375 requests in 1.00s, 2.96MB read
  Non-2xx or 3xx responses: 13375
Requests/sec:  13332.88
Transfer/sec:      2.95MB
"""

# wrk's format for slow runs with socket errors (units up to seconds).
WRK_SLOW = """\
Running 10s test @ http://127.0.0.1:10000/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.10ms  301.20ms   2.00s    70.00%
    Req/Sec    40.10      9.80    60.00     66.00%
  Latency Distribution
     50%  790.00ms
     75%    1.01s
     90%    1.20s
     99%    1.90s
  400 requests in 10.01s, 45.31KB read
  Socket errors: connect 0, read 2, write 0, timeout 3
Requests/sec:     39.96
Transfer/sec:      4.53KB
"""

H2LOAD = """\
starting benchmark...
spawning thread #0: 4 total client(s). Timing-based test with 0s of warm-up time and 2s of main duration for measurements.
Application protocol: h2c
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 2.00s, 47640.00 req/s, 1.32MB/s
requests: 95280 total, 95312 started, 95280 done, 95280 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 95280 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 2.64MB (2763668) total, 744.70KB (762568) headers (space savings 91.21%), 279.14KB (285840) data
                     min         max         mean         sd        +/- sd
time for request:      155us      5.02ms       634us       192us    74.29%
time for connect:       67us       133us       107us        28us    75.00%
time to 1st byte:     1.44ms      1.53ms      1.49ms        38us    50.00%
req/s           :   11898.11    11913.72    11907.81        7.45    75.00%
"""  # noqa: E501

H2LOAD_DENIED = H2LOAD.replace(
    "95280 succeeded, 0 failed, 0 errored, 0 timeout",
    "95270 succeeded, 10 failed, 4 errored, 0 timeout",
).replace("95280 2xx, 0 3xx, 0 4xx", "95200 2xx, 0 3xx, 70 4xx")

H2LOAD_LOG = """\
1795398854347623\t200\t575
1795398854347727\t200\t501
1795398854347719\t200\t514
1795398854347657\t403\t581
1795398854347650\t-1\t591
"""


# --- statistics -----------------------------------------------------------------------


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100, shuffled order must not matter
    values.reverse()
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([5.0], 99) == 5.0


def test_percentile_small_sample_rounds_up() -> None:
    # 10 values: p99 is the largest, p50 the 5th.
    assert percentile([float(i) for i in range(10)], 99) == 9.0
    assert percentile([float(i) for i in range(10)], 50) == 4.0
    # nearest rank: the smallest value with at least p % at or below it
    assert percentile([1.0, 2.0, 3.0, 4.0], 25) == 1.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 26) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 60) == 3.0


def test_percentile_edge_cases() -> None:
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_median_min_max() -> None:
    s = summarize([30.0, 10.0, 20.0])
    assert (s.median, s.low, s.high) == (20.0, 10.0, 30.0)
    assert summarize([4.0, 1.0, 2.0, 3.0]).median == 2.5
    # runs that produced no figure are left out, not counted as zero
    assert summarize([None, 7.0, math.nan]).as_dict() == {"median": 7.0, "min": 7.0, "max": 7.0}
    assert summarize([None]).as_dict() == {"median": None, "min": None, "max": None}


def test_ratio_and_per_request() -> None:
    assert ratio(1.0, 4.0) == 0.25
    assert ratio(1.0, 0.0) is None
    assert ratio(None, 1.0) is None
    assert per_request_us(1.5, 10_000) == pytest.approx(150.0)
    assert per_request_us(1.0, 0) is None


# --- wrk ------------------------------------------------------------------------------


def test_parse_wrk() -> None:
    r = parse_wrk(WRK)
    assert r.requests == 99242
    assert r.rps == pytest.approx(49592.98)
    assert r.p50_ms == pytest.approx(0.592)
    assert r.p99_ms == pytest.approx(1.20)
    assert r.errors == 0


def test_parse_wrk_counts_non_2xx() -> None:
    r = parse_wrk(WRK_NON2XX)
    assert r.errors == 13375
    assert r.p50_ms == pytest.approx(2.12)


def test_parse_wrk_seconds_and_socket_errors() -> None:
    r = parse_wrk(WRK_SLOW)
    assert r.p50_ms == pytest.approx(790.0)
    assert r.p99_ms == pytest.approx(1900.0)
    assert r.errors == 5
    assert r.rps == pytest.approx(39.96)


def test_parse_wrk_rejects_other_output() -> None:
    with pytest.raises(ValueError):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


# --- h2load ---------------------------------------------------------------------------


def test_parse_h2load_summary() -> None:
    r = parse_h2load(H2LOAD)
    assert r.requests == 95280
    assert r.rps == pytest.approx(47640.0)
    assert r.errors == 0
    assert r.p50_ms is None  # h2load prints no percentiles


def test_parse_h2load_counts_failures_and_denials() -> None:
    r = parse_h2load(H2LOAD_DENIED)
    assert r.requests == 95200
    assert r.errors == 10 + 70


def test_parse_h2load_log() -> None:
    latencies, bad = parse_h2load_log(H2LOAD_LOG.splitlines())
    assert latencies == [0.575, 0.501, 0.514]
    assert bad == 2


def test_parse_h2load_percentiles_from_log() -> None:
    lines = [f"1795398854347623\t200\t{us}" for us in range(1000, 101_000, 1000)]  # 1..100 ms
    r = parse_h2load(H2LOAD, lines)
    assert r.p50_ms == pytest.approx(50.0)
    assert r.p99_ms == pytest.approx(99.0)


def test_parse_h2load_rejects_other_output() -> None:
    with pytest.raises(ValueError):
        parse_h2load("starting benchmark...\nNo protocol negotiated. Aborted\n")


# --- the CheckRequest body ------------------------------------------------------------


def test_grpc_frame_is_length_prefixed() -> None:
    msg = check_request("/", "tok", {"service": "s", "endpoint": "e"}).SerializeToString()
    frame = grpc_frame(msg)
    flag, length = struct.unpack(">BI", frame[:5])
    assert (flag, length, frame[5:]) == (0, len(msg), msg)


def test_check_request_carries_token_and_context() -> None:
    req = check_request("/p?x=1", "tok", {"service": "s", "endpoint": "e"})
    assert req.attributes.request.http.headers["authorization"] == "Bearer tok"
    assert dict(req.attributes.context_extensions) == {"service": "s", "endpoint": "e"}
    assert "authorization" not in check_request("/", None, {}).attributes.request.http.headers


# --- report ---------------------------------------------------------------------------


def _run(rps: float, p50: float, server: float | None) -> dict:
    cpu = {"envoy": 20.0, "load": 5.0} | ({} if server is None else {"server": server})
    return {"rps": rps, "p50_ms": p50, "p99_ms": p50 * 2, "errors": 0, "cpu_us_per_req": cpu}


def _scenario(mode: str, *runs: dict) -> dict:
    return {"modes": {mode: {"runs": list(runs), "summary": summarize_runs(list(runs))}}}


def test_summarize_runs() -> None:
    s = summarize_runs([_run(100, 1.0, 150), _run(300, 3.0, 130), _run(200, 2.0, 140)])
    assert s["rps"] == {"median": 200, "min": 100, "max": 300}
    assert s["p99_ms"]["median"] == 4.0
    assert s["cpu_us_per_req"]["server"]["median"] == 140
    assert s["errors"] == 0


def test_ratios_and_table() -> None:
    results = {
        "envoy": _scenario("wrk", _run(80_000, 0.4, None)),
        "native": _scenario("wrk", _run(28_000, 1.0, None)),
        "floor": _scenario("wrk", _run(8_000, 4.0, 150)),
        "authz": _scenario("wrk", _run(6_000, 5.0, 200)),
        "direct-floor": _scenario("direct", _run(12_000, 2.5, 110)),
        "direct-authz": _scenario("direct", _run(9_000, 3.0, 165)),
        "authz-query-sqlite": {"skipped": "authz validate rejected it | twice"},
        "authz-query-postgres": _scenario("wrk", _run(1_500, 20.0, 700)),
        "authz-query-sqlite-rollback": _scenario("wrk", _run(3_900, 8.0, 330)),
    }
    results["envoy"]["modes"]["fixed"] = {"summary": summarize_runs([_run(1000, 0.5, None)])}
    results["authz"]["modes"]["fixed"] = {"summary": summarize_runs([_run(1000, 2.0, 300)])}
    r = ratios(results)
    assert r["authz/floor req/s"] == pytest.approx(0.75)
    assert r["authz/envoy req/s"] == pytest.approx(0.075)
    assert r["authz-query-postgres/authz req/s"] == pytest.approx(0.25)
    assert r["authz-query-sqlite/authz req/s"] is None  # skipped: no ratio, not a zero
    assert r["authz-query-sqlite-rollback/authz req/s"] == pytest.approx(0.65)
    assert r["direct CPU µs authz/floor"] == pytest.approx(1.5)
    assert r["added p50 ms @fixed rate (authz - envoy)"] == pytest.approx(1.5)
    text = table(results, 1000)
    assert "| authz | wrk -c32 | 6,000 | 5.00 | 10.00 | 0 | 20 | 200 | 5 |" in text
    assert "skipped: authz validate rejected it ; twice" in text


def test_ratios_pair_the_runs_of_one_round() -> None:
    # run i of every scenario ran in round i: the ratio is the median of the rounds' ratios
    # (0.9, 0.9, 0.5 -> 0.9), not the ratio of the medians (6,000 / 10,000 = 0.6)
    results = {
        "floor": _scenario("wrk", _run(10_000, 4, 150), _run(5_000, 4, 150), _run(12_000, 4, 1)),
        "authz": _scenario("wrk", _run(9_000, 5, 200), _run(4_500, 5, 200), _run(6_000, 5, 2)),
        "native": _scenario("wrk", _run(20_000, 1, None), _run(30_000, 1, None)),  # 2 runs
    }
    r = ratios(results)
    assert r["authz/floor req/s"] == pytest.approx(0.9)
    assert r["authz/native req/s"] == pytest.approx(6_000 / 25_000)  # unpaired: the medians


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_sqlite_seed_in_each_journal_mode(tmp_path, journal) -> None:
    # seeding again in the other mode starts a fresh file (no stale -wal/-shm next to it)
    path = tmp_path / "app.db"
    seed_sqlite(path, "delete" if journal == "wal" else "wal")
    seed_sqlite(path, journal)
    with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == journal
        assert (
            db.execute("SELECT count(*) FROM bench_followers WHERE userId = 'p2'").fetchone()[0]
            == 6
        )
        public = db.execute('SELECT "isPublic" FROM bench_profiles WHERE "userId" = ?', ("p1",))
        assert public.fetchone()[0] == 1


def test_ratios_missing_scenarios() -> None:
    assert all(v is None for v in ratios({}).values())


# --- soak -----------------------------------------------------------------------------


def test_slope_and_drift() -> None:
    assert slope_per_min([(0, 100), (60, 160), (120, 220)]) == pytest.approx(60.0)
    assert slope_per_min([(0, 1)]) is None
    samples = [
        {"t": t, "rss_kib": 1000 + t, "fds": 20, "threads": 12 + (t >= 90)}
        for t in (0, 30, 60, 90, 120)
    ]
    d = drift(samples, warmup_s=60)
    assert d["rss_kib"]["after_warmup"] == 1060
    assert d["rss_kib"]["delta"] == 60
    assert d["rss_kib"]["per_min"] == pytest.approx(60.0)
    assert d["fds"]["delta"] == 0
    assert d["threads"]["delta"] == 1


# --- fixed rate -----------------------------------------------------------------------


def _flag(args: list[str], prefix: str) -> str:
    return next(a[len(prefix) :] for a in args if a.startswith(prefix))


def test_fixed_rate_requests_arrive_evenly_spaced() -> None:
    """Connections started together send in bursts (every --rps timer fires in step): the
    flags must stagger them so that the sends of all connections interleave evenly."""
    args = fixed_rate_args(1000, 10)
    clients = int(_flag(args, "-c"))
    per_client = float(_flag(args, "--rps="))
    period_ms = float(_flag(args, "--rate-period=").removesuffix("ms"))
    assert "-D" not in args and args[args.index("-n") + 1] == "10000"
    assert args[args.index("-r1")] == "-r1"  # one connection per period
    assert clients * per_client == 1000
    sends = sorted(
        i * period_ms + k * 1000 / per_client for i in range(clients) for k in range(100)
    )
    gaps = {round(b - a, 6) for a, b in pairwise(sends)}
    assert gaps == {1.0}  # one request every millisecond, never a burst


def test_http_transport_ratios_and_chart(tmp_path: Path) -> None:
    from bench.chart import write

    results = {
        "envoy": _scenario("wrk", _run(80_000, 0.4, None)),
        "native": _scenario("wrk", _run(25_000, 1.2, None)),
        "authz": _scenario("wrk", _run(6_000, 5.0, 200)),
        "http-floor": _scenario("wrk", _run(26_000, 1.2, 10)),
        "authz-http": _scenario("wrk", _run(23_400, 1.3, 20)),
        "authz-query-sqlite-http": _scenario("wrk", _run(11_700, 2.0, 60)),
    }
    results["envoy"]["modes"]["fixed"] = {"summary": summarize_runs([_run(1000, 0.5, None)])}
    results["authz-http"]["modes"]["fixed"] = {"summary": summarize_runs([_run(1000, 0.7, 20)])}
    r = ratios(results)
    assert r["authz-http/native req/s"] == pytest.approx(0.936)
    assert r["authz-http/authz req/s"] == pytest.approx(3.9)
    assert r["authz-http/http-floor req/s"] == pytest.approx(0.9)
    assert r["authz-query-sqlite-http/authz-http req/s"] == pytest.approx(0.5)
    assert r["added p50 ms @fixed rate (authz-http - envoy)"] == pytest.approx(0.2)
    svg = write(results, "t", tmp_path / "c.svg")
    assert svg is not None
    text = svg.read_text()
    assert text.startswith("<svg") and "authz-http" in text and "23,400" in text
    assert ">0.20<" in text  # the added p50 of authz-http
    assert write({"direct-authz": _scenario("direct", _run(9_000, 3.0, 165))}, "t", svg) is None
