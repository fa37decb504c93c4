"""authz/observability/metrics.py: metric values as rendered, buffering, multiprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from authz.observability.metrics import CONTENT_TYPE, UNMATCHED, Metrics

# --- metrics -----------------------------------------------------------------------------


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse render() into {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


def test_checks_counted_by_endpoint_outcome_and_status():
    m = Metrics()
    pay = m.endpoint("payments", "pay")
    pay.observe(True, 200, 0.0004)
    pay.observe(True, 200, 0.0004)
    pay.observe(False, 403, 0.002)
    pay.observe(False, 418, 0.002)  # an unusual status is bound on first use
    pay.observe(False, 418, 0.002)
    m.unmatched.observe(False, 403, 0.0001)

    def checks(outcome: str, status: str, service="payments", endpoint="pay"):
        return value(
            m, "authz_checks_total", service=service, endpoint=endpoint, outcome=outcome,
            status=status,
        )  # fmt: skip

    assert checks("allow", "200") == 2
    assert checks("deny", "403") == 1
    assert checks("deny", "418") == 2
    assert checks("deny", "401") == 0  # pre-bound, so present with 0
    assert checks("deny", "403", UNMATCHED, UNMATCHED) == 1
    assert m.render().startswith(b"# HELP")
    assert CONTENT_TYPE.startswith("text/plain")


def test_latency_histogram_buckets_suit_sub_millisecond_checks():
    m = Metrics()
    ep = m.endpoint("s", "e")
    for seconds in (0.00008, 0.0003, 0.0003, 0.004, 0.04):
        ep.observe(True, 200, seconds)
    le = lambda b: value(m, "authz_check_duration_seconds_bucket", service="s", endpoint="e", le=b)  # noqa: E731
    assert le("0.0001") == 1
    assert le("0.0005") == 3
    assert le("0.005") == 4
    assert le("0.05") == 5
    assert le("+Inf") == 5
    assert value(m, "authz_check_duration_seconds_count", service="s", endpoint="e") == 5
    total = value(m, "authz_check_duration_seconds_sum", service="s", endpoint="e")
    assert total == pytest.approx(0.04468)


def test_endpoints_binds_every_pair_once():
    m = Metrics()
    bound = m.endpoints([("a", "x"), ("b", "y")])
    assert set(bound) == {("a", "x"), ("b", "y")}
    bound[("b", "y")].observe(False, 503, 0.01)
    assert (
        value(m, "authz_checks_total", service="b", endpoint="y", outcome="deny", status="503") == 1
    )
    assert (
        value(m, "authz_checks_total", service="a", endpoint="x", outcome="deny", status="503") == 0
    )


def test_token_datastore_webhook_and_cache_metrics():
    m = Metrics()
    m.token_failure("expired")
    m.token_failure("expired")
    m.token_failure("signature")
    pg = m.datastore("pg")
    pg.observe(0.003)
    pg.error("timeout")
    pg.error("timeout")
    hook = m.webhook("http://logic:8080/check")
    hook.observe(0.02)
    hook.error("status")
    tokens = m.cache("tokens")
    tokens.hit()
    tokens.hit()
    tokens.miss()

    assert value(m, "authz_token_verification_failures_total", reason="expired") == 2
    assert value(m, "authz_token_verification_failures_total", reason="signature") == 1
    assert value(m, "authz_datastore_duration_seconds_count", alias="pg") == 1
    assert value(m, "authz_datastore_errors_total", alias="pg", kind="timeout") == 2
    assert value(m, "authz_webhook_duration_seconds_count", url="http://logic:8080/check") == 1
    assert value(m, "authz_webhook_errors_total", url="http://logic:8080/check", kind="status") == 1
    assert value(m, "authz_cache_hits_total", cache="tokens") == 2
    assert value(m, "authz_cache_misses_total", cache="tokens") == 1


def test_config_version_and_reload_results():
    m = Metrics()
    m.config_loaded("aaaa11112222", when=1000.0)
    assert value(m, "authz_config_info", version="aaaa11112222") == 1
    assert value(m, "authz_config_last_reload_success") == 1
    assert value(m, "authz_config_last_reload_timestamp_seconds") == 1000.0

    m.config_rejected(when=2000.0)
    assert value(m, "authz_config_info", version="aaaa11112222") == 1  # old one still serving
    assert value(m, "authz_config_last_reload_success") == 0
    assert value(m, "authz_config_last_reload_timestamp_seconds") == 2000.0

    m.config_loaded("bbbb33334444", when=3000.0)
    assert value(m, "authz_config_info", version="bbbb33334444") == 1
    assert value(m, "authz_config_info", version="aaaa11112222") is None  # replaced
    assert value(m, "authz_config_reloads_total", result="success") == 2
    assert value(m, "authz_config_reloads_total", result="failure") == 1


def test_two_instances_do_not_share_a_registry():
    a, b = Metrics(), Metrics()
    a.endpoint("s", "e").observe(True, 200, 0.001)
    assert (
        value(b, "authz_checks_total", service="s", endpoint="e", outcome="allow", status="200")
        is None
    )


def test_buffered_observations_are_counted_once_across_renders():
    m = Metrics()
    ep = m.endpoint("s", "e")
    assert m.endpoint("s", "e") is ep  # one accumulator per pair, whatever the config version
    ep.observe(True, 200, 0.0003)
    ep.observe(False, 499, 0.002)  # a new status between two renders
    first = samples(m)
    ep.observe(True, 200, 2.0)  # beyond the last bound: +Inf only
    second, third = samples(m), samples(m)
    assert second == third  # rendering adds nothing by itself

    def get(found, name, **labels):
        return found.get((name, tuple(sorted({"service": "s", "endpoint": "e", **labels}.items()))))

    allow = {"outcome": "allow", "status": "200"}
    assert get(first, "authz_checks_total", **allow) == 1
    assert get(second, "authz_checks_total", **allow) == 2
    assert get(second, "authz_checks_total", outcome="deny", status="499") == 1
    assert get(second, "authz_check_duration_seconds_bucket", le="1.0") == 2
    assert get(second, "authz_check_duration_seconds_bucket", le="+Inf") == 3
    assert get(second, "authz_check_duration_seconds_count") == 3
    assert get(second, "authz_check_duration_seconds_sum") == pytest.approx(2.0023)


def test_observations_from_another_thread_are_neither_lost_nor_doubled():
    m = Metrics()
    ep = m.endpoint("s", "e")
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            m.render()

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        for _ in range(20_000):
            ep.observe(True, 200, 0.0001)
    finally:
        stop.set()
        scraper.join()
    assert value(m, "authz_checks_total", service="s", endpoint="e", outcome="allow",
                 status="200") == 20_000  # fmt: skip
    assert value(m, "authz_check_duration_seconds_count", service="s", endpoint="e") == 20_000


def test_datastore_and_webhook_latencies_are_buffered_and_counted_once():
    m = Metrics()
    store, hook = m.datastore("db"), m.webhook("http://h/x")
    assert m.datastore("db") is store  # shared by every config version with that alias
    store.observe(0.0005)
    store.observe(0.003)
    hook.observe(0.2)
    first, second = samples(m), samples(m)
    assert first == second  # rendering adds nothing by itself
    store.observe(3.0)  # beyond the last bound: +Inf only
    third = samples(m)

    def get(found, name, **labels):
        return found.get((name, tuple(sorted(labels.items()))))

    assert get(first, "authz_datastore_duration_seconds_count", alias="db") == 2
    assert get(first, "authz_datastore_duration_seconds_bucket", alias="db", le="0.001") == 1
    assert get(first, "authz_datastore_duration_seconds_bucket", alias="db", le="0.005") == 2
    assert get(first, "authz_webhook_duration_seconds_count", url="http://h/x") == 1
    assert get(third, "authz_datastore_duration_seconds_count", alias="db") == 3
    assert get(third, "authz_datastore_duration_seconds_bucket", alias="db", le="2.5") == 2
    assert get(third, "authz_datastore_duration_seconds_sum", alias="db") == pytest.approx(3.0035)


def test_multiprocess_render_aggregates_workers(tmp_path: Path):
    # prometheus_client picks its value store at import time: run workers as subprocesses.
    script = textwrap.dedent(
        """
        import sys
        from authz.observability.metrics import Metrics
        m = Metrics()
        ep, db = m.endpoint("s", "e"), m.datastore("db")
        for _ in range(int(sys.argv[1])):
            ep.observe(True, 200, 0.001)
            db.observe(0.002)
        if sys.argv[2] == "render":
            sys.stdout.write(m.render().decode())
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    cwd = Path(__file__).resolve().parents[3]  # the repository
    for n in ("3", "4"):
        subprocess.run([sys.executable, "-c", script, n, "-"], env=env, cwd=cwd, check=True)
    out = subprocess.run(
        [sys.executable, "-c", script, "0", "render"],
        env=env, cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    found = {
        (s.name, s.labels.get("outcome")): s.value
        for f in text_string_to_metric_families(out)
        for s in f.samples
    }
    assert found[("authz_checks_total", "allow")] == 7
    assert found[("authz_datastore_duration_seconds_count", None)] == 7  # written through


def test_a_dead_workers_live_gauges_leave_metrics(tmp_path: Path):
    # a worker that served v1 and died must not keep "v1 serving" in /metrics; what it
    # counted stays
    script = textwrap.dedent(
        """
        import os, sys
        from authz.observability.metrics import Metrics, worker_exited
        m = Metrics()
        if sys.argv[1] == "serve":
            m.config_loaded("v1")
            m.endpoint("s", "e").observe(True, 200, 0.001)
            print(os.getpid())
        else:
            if sys.argv[1] != "-":
                worker_exited(int(sys.argv[1]))
            sys.stdout.write(m.render().decode())
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    cwd = Path(__file__).resolve().parents[3]  # the repository

    def run(arg: str) -> str:
        return subprocess.run(
            [sys.executable, "-c", script, arg],
            env=env, cwd=cwd, check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip

    def samples(text: str) -> dict[tuple[str, str | None], float]:
        return {
            (s.name, s.labels.get("version") or s.labels.get("outcome")): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }

    pid = run("serve").strip()
    assert samples(run("-"))[("authz_config_info", "v1")] == 1  # not yet marked dead
    after = samples(run(pid))
    assert ("authz_config_info", "v1") not in after
    assert after[("authz_checks_total", "allow")] == 1
