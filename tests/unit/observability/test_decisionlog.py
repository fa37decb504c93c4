"""authz/observability/decisionlog.py: batching, masking in the output, sampling, and that
log() never waits for a slow sink."""

from __future__ import annotations

import io
import json
import random
import threading
from pathlib import Path

import pytest

from authz.observability.decisionlog import DecisionLog
from tests.unit.observability.test_masking import ENVELOPE, JWT


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
        dl.log({"id": i, "allowed": True, "outcome": "allow"})
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
