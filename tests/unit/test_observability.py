"""authz.observability: metric values as rendered, the decision log's batching, masking,
sampling, and that log() never waits for a slow sink."""

from __future__ import annotations

import base64
import io
import json
import os
import random
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from authz.observability import (
    CONTENT_TYPE,
    UNMATCHED,
    DecisionLog,
    Metrics,
    mask,
)

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
        from authz.observability import Metrics
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
    cwd = Path(__file__).resolve().parents[2]
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
        from authz.observability import Metrics, worker_exited
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
    cwd = Path(__file__).resolve().parents[2]

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


# --- masking -------------------------------------------------------------------------------


def _jwt() -> str:
    b64 = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64({'sub': 'alice'})}.c2lnbmF0dXJlLWJ5dGVz"


JWT = _jwt()
ENVELOPE = "v1.k1." + base64.urlsafe_b64encode(os.urandom(40)).decode().rstrip("=")


def test_mask_keys_and_secret_shaped_values():
    record = {
        "requestId": "r-1",
        "reason": "token expired",
        "headers": {
            "authorization": "Bearer abc",
            "Cookie": "session=s3cr3t-cookie",
            "x-sc-token": "opaque-service-token",
            "x-forwarded-for": "10.0.0.1",
            "x-custom": f"prefix {JWT}",
        },
        "params": {
            "password": "hunter2",
            "client_secret": "cs-1",
            "email": ENVELOPE,
            "items": [{"note": JWT}, "plain"],
            "host": "api.example.com",
            "version": "v1.2.3",
        },
        "token": JWT,
    }
    out = mask(record)
    assert out["requestId"] == "r-1"
    assert out["reason"] == "token expired"
    assert out["headers"] == {
        "authorization": "***",
        "Cookie": "***",
        "x-sc-token": "***",
        "x-forwarded-for": "10.0.0.1",
        "x-custom": "***",
    }
    assert out["params"]["password"] == "***"
    assert out["params"]["client_secret"] == "***"
    assert out["params"]["email"] == "***"
    assert out["params"]["items"] == [{"note": "***"}, "plain"]
    assert out["params"]["host"] == "api.example.com"  # three dotted words are not a JWT
    assert out["params"]["version"] == "v1.2.3"  # nor is a version an envelope
    assert out["token"] == "***"
    assert record["params"]["password"] == "hunter2"  # the input is not changed


def test_mask_bounds_depth():
    deep: dict = {}
    node = deep
    for _ in range(200):
        node["a"] = {}
        node = node["a"]
    json.dumps(mask(deep))  # no RecursionError, still serialisable


# --- decision log ----------------------------------------------------------------------------


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_decision_log_writes_json_lines_to_a_file(tmp_path: Path):
    path = tmp_path / "decisions.log"
    dl = DecisionLog(str(path), batch_size=4)
    for i in range(10):
        dl.log({"requestId": f"r{i}", "outcome": "deny", "status": 403, "latencyMs": 0.4})
    dl.close()
    lines = read_lines(path)
    assert [rec["requestId"] for rec in lines] == [f"r{i}" for i in range(10)]
    assert lines[0]["status"] == 403
    assert lines[0]["time"].endswith("+00:00")
    dl.log({"requestId": "after-close", "outcome": "deny"})  # ignored, no error
    dl.close()  # idempotent
    assert len(read_lines(path)) == 10


def test_decision_log_appends_to_an_existing_file(tmp_path: Path):
    path = tmp_path / "d.log"
    path.write_text('{"old": true}\n')
    dl = DecisionLog(str(path))
    dl.log({"outcome": "deny"})
    dl.close()
    assert read_lines(path) == [
        {"old": True},
        {"time": read_lines(path)[1]["time"], "outcome": "deny"},
    ]


def test_decision_log_masks_secrets_in_the_output(tmp_path: Path):
    path = tmp_path / "d.log"
    dl = DecisionLog(str(path))
    dl.log(
        {
            "outcome": "allow",
            "headers": {"authorization": f"Bearer {JWT}", "cookie": "sid=cookie-value-42"},
            "params": {"password": "hunter2", "ssn": ENVELOPE},
            "trace": [{"rule": "webhook", "detail": JWT}],
        }
    )
    dl.close()
    text = path.read_text()
    for secret in (JWT, JWT.split(".")[0], "hunter2", "cookie-value-42", ENVELOPE):
        assert secret not in text
    assert text.count("***") == 5


def test_decision_log_stdout(capsys):
    dl = DecisionLog("stdout")
    dl.log({"requestId": "s1", "outcome": "deny"})
    dl.close()
    assert json.loads(capsys.readouterr().out)["requestId"] == "s1"


def test_decision_log_off_writes_nothing_and_starts_no_thread(tmp_path: Path):
    before = threading.active_count()
    dl = DecisionLog("off")
    dl.log({"outcome": "deny"})
    assert threading.active_count() == before
    dl.close()


def test_sampling_keeps_every_denial_and_a_fraction_of_allows():
    sink = io.StringIO()
    dl = DecisionLog("x", sample_allows=0.25, sink=sink, rng=random.Random(7).random)
    for i in range(2000):
        dl.log({"id": i, "outcome": "allow"})
        dl.log({"id": i, "allowed": False, "outcome": "deny"})
    dl.close()
    lines = [json.loads(line) for line in sink.getvalue().splitlines()]
    allows = sum(1 for rec in lines if rec["outcome"] == "allow")
    denies = sum(1 for rec in lines if rec["outcome"] == "deny")
    assert denies == 2000
    assert 400 < allows < 600  # ~500 expected; seeded, so stable


@pytest.mark.parametrize(("rate", "expected"), [(0.0, 0), (1.0, 50)])
def test_sampling_extremes(rate: float, expected: int):
    sink = io.StringIO()
    dl = DecisionLog("x", sample_allows=rate, sink=sink)
    for _ in range(50):
        dl.log({"allowed": True})
    dl.close()
    assert len(sink.getvalue().splitlines()) == expected


def test_sample_rate_out_of_range_is_rejected():
    with pytest.raises(ValueError):
        DecisionLog("off", sample_allows=1.5)


class BlockedSink(io.StringIO):
    """A sink whose write() waits until released: a full disk, a stuck pipe."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def write(self, s: str) -> int:
        self.entered.set()
        self.release.wait(30)
        return super().write(s)


def test_log_does_not_wait_for_a_slow_sink():
    sink = BlockedSink()
    dl = DecisionLog("x", sink=sink, batch_size=10, flush_interval=0.01)
    dl.log({"n": -1, "outcome": "deny"})
    assert sink.entered.wait(5), "writer never reached the sink"
    # The writer is now stuck inside write(); log() must still return at once.
    done = threading.Event()

    def producer():
        for n in range(5000):
            dl.log({"n": n, "outcome": "deny"})
        done.set()

    t = threading.Thread(target=producer)
    t.start()
    finished = done.wait(10)
    sink.release.set()
    t.join(10)
    dl.close()
    assert finished, "log() blocked behind the sink"
    written = [json.loads(line)["n"] for line in sink.getvalue().splitlines()]
    assert written == list(range(-1, 5000))


def test_full_queue_drops_and_reports():
    sink = BlockedSink()
    drops: list[int] = []
    dl = DecisionLog("x", sink=sink, max_queue=100, flush_interval=0.01, on_drop=drops.append)
    dl.log({"outcome": "deny"})
    assert sink.entered.wait(5)
    for _ in range(150):
        dl.log({"outcome": "deny"})
    sink.release.set()
    dl.close()
    assert dl.dropped == 50
    assert sum(drops) == 50
    assert len(sink.getvalue().splitlines()) == 101


def test_unencodable_record_is_dropped_not_fatal():
    sink = io.StringIO()
    dl = DecisionLog("x", sink=sink)

    class Boom:
        def __str__(self):
            raise RuntimeError("no")

    dl.log({"outcome": "deny", "bad": Boom()})
    dl.log({"outcome": "deny", "ok": 1})
    dl.close()
    assert [json.loads(line)["ok"] for line in sink.getvalue().splitlines()] == [1]
    assert dl.dropped == 1


def test_decision_log_records_stay_one_ascii_line():
    """A client-chosen x-request-id with line separators cannot split a record."""
    sink = io.StringIO()
    dl = DecisionLog(sink=sink)
    rid = 'r-1\u2028{"allowed":true}\u0085\u2029x\re'
    dl.log({"requestId": rid, "reason": "p\u00e9"})
    dl.close()
    text = sink.getvalue()
    assert text.isascii()
    (line,) = text.splitlines()  # what Python's and JavaScript's line readers split on
    assert json.loads(line)["requestId"] == rid
