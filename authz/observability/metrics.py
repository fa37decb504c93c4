"""Metrics (Prometheus), cheap on the hot path.

Metrics live on a dedicated `CollectorRegistry` (never the global one, so tests and several
`Metrics` objects do not collide). Per-request helpers are pre-bound label children created
when a config loads (`Metrics.endpoint(...)`, `.datastore(...)`, `.webhook(...)`, `.cache(...)`),
so a Check never calls `.labels()`; its count and latency go to plain ints that are added to
the prometheus metrics when they are collected.
"""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from authz.errors import TOKEN_FAILURE_KINDS

CONTENT_TYPE = CONTENT_TYPE_LATEST  # for the /metrics response

# A Check costs ~0.1 ms (the gRPC floor) to tens of ms (datastores, webhooks): fine buckets there.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
# Datastore/webhook calls: 1 ms .. the deadlines (100-150 ms by default) and beyond.
DEPENDENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)

UNMATCHED = "-"  # service/endpoint label when no endpoint matched (bounded cardinality)
# Status codes a Check answers; pre-bound so the hot path never calls .labels().
_COMMON_OUTCOMES = (
    (True, 200), (False, 400), (False, 401), (False, 403), (False, 500), (False, 503),
)  # fmt: skip

# The only values of the `kind` label of dependency errors.
DEPENDENCY_ERROR_KINDS = frozenset(("timeout", "error", "connection", "status"))


class BufferedHistogram:
    """A histogram child whose observations wait in plain numbers until `flush` adds them.

    Only `flush` adds to `_done*` (under the owner's lock) and only `observe` to the counts,
    so a flush from another thread neither loses nor doubles an observation."""

    __slots__ = ("_bounds", "_buckets", "_done_buckets", "_done_sum", "_sum", "child")

    def __init__(self, child: Any):
        self.child = child  # the prometheus child; write-through callers observe it directly
        self._bounds = tuple(child._upper_bounds)  # the buckets' `le`, +Inf last
        self._buckets = [0] * len(self._bounds)  # not cumulative, like prometheus_client's
        self._done_buckets = list(self._buckets)
        self._sum = self._done_sum = 0.0

    def observe(self, seconds: float) -> None:
        """Record one duration (seconds >= 0, as perf_counter gives)."""
        # the first bucket whose bound is >= seconds, as Histogram.observe picks it
        self._buckets[bisect_left(self._bounds, seconds)] += 1
        self._sum += seconds

    def flush(self) -> None:
        for i, n in enumerate(list(self._buckets)):
            if n != self._done_buckets[i]:
                self.child._buckets[i].inc(n - self._done_buckets[i])
                self._done_buckets[i] = n
        total = self._sum
        if total != self._done_sum:
            self.child._sum.inc(total - self._done_sum)
            self._done_sum = total


class EndpointMetrics:
    """Pre-bound metric children of one endpoint; `observe` is the per-Check call.

    Counts and latencies are kept in plain ints and floats and added to the prometheus
    children when the registry is collected (`flush`): a Check costs a few list and dict
    updates instead of three locked prometheus calls (docs/performance.md has the figures).
    """

    __slots__ = ("_checks", "_counts", "_done", "_factory", "_latency", "_lock")

    def __init__(self, checks: Counter, latency: Histogram, service: str, endpoint: str):
        self._latency = BufferedHistogram(latency.labels(service, endpoint))

        def factory(allowed: bool, status: int) -> Any:
            outcome = "allow" if allowed else "deny"
            return checks.labels(service, endpoint, outcome, str(status))

        self._factory = factory
        self._checks = {key: factory(*key) for key in _COMMON_OUTCOMES}
        self._counts = dict.fromkeys(self._checks, 0)
        self._done = dict(self._counts)  # what flush() has added to the children so far
        self._lock = threading.Lock()

    def observe(self, allowed: bool, status: int, seconds: float) -> None:
        """Count one Check and record its latency (seconds >= 0, as perf_counter gives)."""
        key = (allowed, status)
        try:
            self._counts[key] += 1
        except KeyError:  # a rare status: bind once, then it is counted like the others
            self._checks[key] = self._factory(allowed, status)
            self._counts[key] = 1
        self._latency.observe(seconds)

    def flush(self) -> None:
        """Add what was observed since the last flush to the prometheus children."""
        with self._lock:
            for key, n in list(self._counts.items()):
                done = self._done.get(key, 0)
                if n != done:
                    self._checks[key].inc(n - done)
                    self._done[key] = n
            self._latency.flush()


class _WriteThroughEndpointMetrics(EndpointMetrics):
    """Multiprocess mode: every worker's values live in files that /metrics reads from
    whichever worker is asked, so nothing may wait in memory for a flush."""

    __slots__ = ()

    def observe(self, allowed: bool, status: int, seconds: float) -> None:
        child = self._checks.get((allowed, status))
        if child is None:
            child = self._checks[(allowed, status)] = self._factory(allowed, status)
        child.inc()
        self._latency.child.observe(seconds)

    def flush(self) -> None:
        pass


class _Flushed:
    """Collects `metrics` after the buffered observations were added to them."""

    def __init__(self, flush: Callable[[], None], *metrics: Any):
        self._flush = flush
        self._metrics = metrics

    def describe(self) -> list[Any]:
        return [d for m in self._metrics for d in m.describe()]

    def collect(self) -> Iterable[Any]:
        self._flush()
        for m in self._metrics:
            yield from m.collect()


class DependencyMetrics:
    """Latency and errors of one datastore alias or one webhook URL. The latency is
    buffered like an endpoint's (written through in multiprocess mode); errors are rare and
    counted at once."""

    __slots__ = ("_errors", "_factory", "_latency", "_lock", "observe")

    def __init__(self, latency: Histogram, errors: Counter, name: str):
        self._latency = BufferedHistogram(latency.labels(name))
        self.observe: Callable[[float], None] = (
            self._latency.child.observe if _multiprocess() else self._latency.observe
        )
        self._factory: Callable[[str], Any] = lambda kind: errors.labels(name, kind)
        self._errors: dict[str, Any] = {}
        self._lock = threading.Lock()

    def error(self, kind: str = "error") -> None:
        """Count a failure; `kind` is one of DEPENDENCY_ERROR_KINDS (any other is "error")."""
        if kind not in DEPENDENCY_ERROR_KINDS:
            kind = "error"
        child = self._errors.get(kind)
        if child is None:
            child = self._errors[kind] = self._factory(kind)
        child.inc()

    def flush(self) -> None:
        with self._lock:
            self._latency.flush()


class CacheMetrics:
    """Hit/miss counters of one named cache (pre-bound)."""

    __slots__ = ("hit", "miss")

    def __init__(self, hits: Counter, misses: Counter, name: str):
        self.hit: Callable[[], None] = hits.labels(name).inc
        self.miss: Callable[[], None] = misses.labels(name).inc


class Metrics:
    """Every metric of the service, on its own registry. One instance per process."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        # Registered through _Flushed: collecting them first adds the buffered observations.
        self.checks = Counter(
            "authz_checks",
            "Authorization decisions by endpoint, outcome and HTTP status.",
            ["service", "endpoint", "outcome", "status"],
            registry=None,
        )
        self.check_latency = Histogram(
            "authz_check_duration_seconds",
            "Time to decide one Check, by endpoint.",
            ["service", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.token_failures = Counter(
            "authz_token_verification_failures",
            "Tokens rejected, by reason.",
            ["reason"],
            registry=r,
        )
        self.datastore_latency = Histogram(
            "authz_datastore_duration_seconds",
            "Datastore query time, by alias.",
            ["alias"],
            buckets=DEPENDENCY_BUCKETS,
            registry=None,
        )
        self.datastore_errors = Counter(
            "authz_datastore_errors",
            "Datastore failures (timeouts, connection errors), by alias.",
            ["alias", "kind"],
            registry=r,
        )
        self.webhook_latency = Histogram(
            "authz_webhook_duration_seconds",
            "Webhook call time, by URL.",
            ["url"],
            buckets=DEPENDENCY_BUCKETS,
            registry=None,
        )
        r.register(
            _Flushed(
                self.flush,
                self.checks,
                self.check_latency,
                self.datastore_latency,
                self.webhook_latency,
            )
        )  # collecting these first adds the buffered observations (flush)
        self.webhook_errors = Counter(
            "authz_webhook_errors",
            "Webhook failures (timeouts, connection errors, bad replies), by URL.",
            ["url", "kind"],
            registry=r,
        )
        self.cache_hits = Counter("authz_cache_hits", "Cache hits.", ["cache"], registry=r)
        self.cache_misses = Counter("authz_cache_misses", "Cache misses.", ["cache"], registry=r)
        self.config_info = Gauge(
            "authz_config_info",
            "The config version serving (value 1).",
            ["version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.reloads = Counter(
            "authz_config_reloads", "Config loads and reloads, by result.", ["result"], registry=r
        )
        self.last_reload_success = Gauge(
            "authz_config_last_reload_success",
            "1 when the last config load/reload succeeded, 0 when it was rejected.",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.last_reload_timestamp = Gauge(
            "authz_config_last_reload_timestamp_seconds",
            "Unix time of the last config load/reload attempt.",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.decision_log_dropped = Counter(
            "authz_decision_log_dropped",
            "Decision log records dropped (queue full or write error).",
            registry=r,
        )
        self._token_failures: dict[str, Any] = {}
        # Bound once per name: rules look these up per Check (config-bounded names).
        self._webhooks: dict[str, DependencyMetrics] = {}
        self._datastores: dict[str, DependencyMetrics] = {}
        self._caches: dict[str, CacheMetrics] = {}
        self._version: str | None = None
        self._endpoints: dict[tuple[str, str], EndpointMetrics] = {}
        self._endpoint_class = _WriteThroughEndpointMetrics if _multiprocess() else EndpointMetrics
        self._unmatched = self.endpoint(UNMATCHED, UNMATCHED)

    # --- binding, at config load ---------------------------------------------------------

    def endpoint(self, service: str, endpoint: str) -> EndpointMetrics:
        """Pre-bound children for one endpoint, shared by every config version that has it."""
        found = self._endpoints.get((service, endpoint))
        if found is None:
            found = self._endpoints[(service, endpoint)] = self._endpoint_class(
                self.checks, self.check_latency, service, endpoint
            )
        return found

    def endpoints(
        self, pairs: Iterable[tuple[str, str]]
    ) -> dict[tuple[str | None, str | None], EndpointMetrics]:
        """`endpoint()` for every (service, endpoint) of a config."""
        return {pair: self.endpoint(*pair) for pair in pairs}

    @property
    def unmatched(self) -> EndpointMetrics:
        """For Checks that matched no endpoint."""
        return self._unmatched

    def datastore(self, alias: str) -> DependencyMetrics:
        """The children of one datastore alias, shared by every config version that has it."""
        dep = self._datastores.get(alias)
        if dep is None:
            dep = self._datastores[alias] = DependencyMetrics(
                self.datastore_latency, self.datastore_errors, alias
            )
        return dep

    def webhook(self, url: str) -> DependencyMetrics:
        """The children of one webhook URL, bound on first use. `url` is the rule's label
        (`rules.webhook.url_label`: no query, where a configured secret would sit)."""
        dep = self._webhooks.get(url)
        if dep is None:
            dep = self._webhooks[url] = DependencyMetrics(
                self.webhook_latency, self.webhook_errors, url
            )
        return dep

    def cache(self, name: str) -> CacheMetrics:
        """The hit/miss children of one cache ("query", "webhook"), bound on first use."""
        cache = self._caches.get(name)
        if cache is None:
            cache = self._caches[name] = CacheMetrics(self.cache_hits, self.cache_misses, name)
        return cache

    # --- events ----------------------------------------------------------------------------

    def token_failure(self, kind: str) -> None:
        """Count a rejected token by its kind (`TokenError.kind`): any other word counts as
        "error", so no label value can come from a request."""
        if kind not in TOKEN_FAILURE_KINDS:
            kind = "error"
        child = self._token_failures.get(kind)
        if child is None:
            child = self._token_failures[kind] = self.token_failures.labels(kind)
        child.inc()

    def config_loaded(self, version: str, when: float | None = None) -> None:
        """A config (first load or reload) is now serving."""
        if self._version is not None and self._version != version:
            if _multiprocess():  # worker files cannot drop a label: the old version goes to 0
                self.config_info.labels(self._version).set(0)
            else:
                self.config_info.remove(self._version)
        self._version = version
        self.config_info.labels(version).set(1)
        self._reload_result(True, when)

    def config_rejected(self, when: float | None = None) -> None:
        """A reload was rejected; the previous version keeps serving."""
        self._reload_result(False, when)

    def _reload_result(self, ok: bool, when: float | None) -> None:
        self.reloads.labels("success" if ok else "failure").inc()
        self.last_reload_success.set(1 if ok else 0)
        self.last_reload_timestamp.set(time.time() if when is None else when)

    # --- exposition --------------------------------------------------------------------------

    def flush(self) -> None:
        """Add the buffered observations (endpoints, datastores, webhooks) to the metrics."""
        for endpoint in list(self._endpoints.values()):
            endpoint.flush()
        for dependency in [*self._datastores.values(), *self._webhooks.values()]:
            dependency.flush()

    def render(self) -> bytes:
        """The /metrics body (text format 0.0.4; content type `CONTENT_TYPE`).

        With PROMETHEUS_MULTIPROC_DIR set (several `--workers` processes), the values of every
        worker are aggregated from that directory instead.
        """
        if _multiprocess():
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)


def _multiprocess() -> bool:
    """Several --workers share their metrics through files (prometheus_client multiprocess)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def worker_exited(pid: int) -> None:
    """A --workers process is gone: drop its live gauges (the config version it served,
    its last reload), which would otherwise stay in /metrics as if it still ran. Its
    counters and histograms stay: they count what it served."""
    if _multiprocess():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
