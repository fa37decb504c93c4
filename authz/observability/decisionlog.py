"""The decision log (JSON lines), cheap on the hot path.

`log()` only appends to an in-memory deque on the event loop; a background thread masks,
serialises and writes the records in batches.
"""

from __future__ import annotations

import collections
import json
import logging
import random
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from authz.observability.masking import mask

log = logging.getLogger("authz.observability")


def _is_allow(record: dict[str, Any]) -> bool:
    return record.get("allowed") is True


class DecisionLog:
    """JSON-lines decision log written off the event loop.

    `target` is "off", "stdout" or a file path (appended to). `sample_allows` is the fraction
    of *allowed* decisions written (denials are always written). `log()` takes ownership of
    the record: the caller must not change it afterwards.
    """

    def __init__(
        self,
        target: str = "off",
        sample_allows: float = 1.0,
        *,
        batch_size: int = 256,
        flush_interval: float = 0.2,
        max_queue: int = 100_000,
        on_drop: Callable[[int], None] | None = None,
        sink: IO[str] | None = None,  # tests: any text stream instead of `target`
        rng: Callable[[], float] = random.random,
    ):
        if not 0.0 <= sample_allows <= 1.0:
            raise ValueError("sample_allows must be between 0 and 1")
        self.target = target
        self.enabled = target != "off" or sink is not None
        self.sample_allows = sample_allows
        self.dropped = 0
        self._batch_size = batch_size
        self._interval = flush_interval
        self._max_queue = max_queue
        self._on_drop = on_drop
        self._rng = rng
        self._queue: collections.deque[tuple[float, dict[str, Any]]] = collections.deque()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._sink, self._own_sink = self._open(target, sink)
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
            self._thread.start()

    @staticmethod
    def _open(target: str, sink: IO[str] | None) -> tuple[IO[str] | None, bool]:
        if sink is not None:
            return sink, False
        if target == "off":
            return None, False
        if target == "stdout":
            return sys.stdout, False
        # A large buffer and one flush per batch: a batch reaches the O_APPEND file in one
        # write(), so several worker processes can share a file without tearing lines.
        return open(target, "a", encoding="utf-8", buffering=1 << 20), True

    # --- hot path ------------------------------------------------------------------------

    def log(self, record: dict[str, Any]) -> None:
        """Queue one decision (O(1), no I/O, no lock on the common path)."""
        if not self.enabled or self._stop:
            return
        if self.sample_allows < 1.0 and _is_allow(record) and self._rng() >= self.sample_allows:
            return
        q = self._queue
        if len(q) >= self._max_queue:
            self._drop(1)
            return
        q.append((time.time(), record))
        if len(q) >= self._batch_size:
            self._wake.set()

    # --- writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self._interval)
            self._wake.clear()
            self._drain()
        self._drain()

    def _drain(self) -> None:
        q = self._queue
        while q:
            batch: list[tuple[float, dict[str, Any]]] = []
            while q and len(batch) < self._batch_size:
                batch.append(q.popleft())
            self._write(batch)

    def _write(self, batch: list[tuple[float, dict[str, Any]]]) -> None:
        lines = []
        for ts, record in batch:
            try:
                lines.append(_encode(ts, record))
            except Exception:  # a record we cannot serialise must not stop the log
                log.exception("decision log: cannot encode a record")
                self._drop(1)
        if not lines or self._sink is None:
            return
        try:
            self._sink.write("".join(lines))
            self._sink.flush()
        except (OSError, ValueError) as exc:
            log.warning("decision log: write failed: %s", exc)
            self._drop(len(lines))

    def _drop(self, n: int) -> None:
        self.dropped += n
        if self._on_drop is not None:
            self._on_drop(n)

    def flush(self, timeout: float = 5.0) -> None:
        """Ask the writer to write what is queued now, and wait (bounded) until it has."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        self._wake.set()
        while self._queue and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self, timeout: float = 5.0) -> None:
        """Write everything queued, stop the writer and close the file. Idempotent."""
        if self._stop:
            return
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._own_sink and self._sink is not None:
            self._sink.close()


def _encode(ts: float, record: dict[str, Any]) -> str:
    out = {"time": datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")}
    out.update(mask(record))  # a record's own "time" wins
    # ensure_ascii: request text (an x-request-id, a path) may hold U+2028, U+0085 or other
    # line separators that would split the record for line readers; escaped, a record is
    # one line of ASCII whatever the client sent
    return json.dumps(out, separators=(",", ":"), default=str, ensure_ascii=True) + "\n"
