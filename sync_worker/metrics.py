"""Prometheus metrics: the webhook receiver's, on a registry of their own, and the workers'.

Each :class:`ReceiverMetrics` owns a :class:`~prometheus_client.CollectorRegistry`, so several apps
(tests, a benchmark next to a server) never collide on the process-wide default registry. Label
values are bounded: ``source`` is one of the configured sources or ``"unknown"``, ``outcome`` comes
from the fixed tuples below; the leak gauges' ``rule`` and ``stage`` come from the four rules and
the canonical stage keys. The leak gauges are read from the store at scrape time
(:func:`sync_worker.leaks.leak_gauges`) and exposed by a custom collector from one snapshot, so a
scrape never sees half an update; when the store cannot be read the last series are exported as
NaN (https://prometheus.io/docs/instrumenting/writing_exporters/#failed-scrapes).

The workers' series (:data:`POLLS`, :data:`RECORDS`, :data:`WRITES`, :data:`FAILURES`,
:data:`RATE_LIMITED`, :data:`DEAD_LETTERS`, :data:`LAST_SUCCESS`, :data:`UNMAPPED_STAGES`) live in
the process-wide default registry and use prometheus_client's multiprocess mode: ``sync-worker
worker`` (and ``run``) give the Dramatiq processes a ``PROMETHEUS_MULTIPROC_DIR`` and serve the sum
of every process on ``--metrics-port`` (:func:`serve_worker_metrics`); under ``run`` the receiver's
``/metrics`` adds them too (:meth:`ReceiverMetrics.add_worker_dir`).
https://prometheus.github.io/client_python/multiprocess/ Exposition format:
https://prometheus.io/docs/instrumenting/exposition_formats/ and naming:
https://prometheus.io/docs/practices/naming/
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from sync_worker.canonical import UnmappedStage

__all__ = [
    "CONTENT_TYPE",
    "DEAD_LETTERS",
    "EVENT_OUTCOMES",
    "FAILURES",
    "LAST_SUCCESS",
    "LEAK_METRICS",
    "POLLS",
    "RATE_LIMITED",
    "RECORDS",
    "REQUEST_OUTCOMES",
    "SKIPPED_EVENTS",
    "UNMAPPED_STAGES",
    "WRITES",
    "EventOutcome",
    "ReceiverMetrics",
    "RequestOutcome",
    "note_skipped",
    "note_unmapped",
    "serve_worker_metrics",
    "worker_registry",
]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

RequestOutcome = Literal[
    "accepted", "unauthorized", "bad_request", "too_large", "unavailable", "unknown_source", "error"
]
REQUEST_OUTCOMES: Final[tuple[RequestOutcome, ...]] = (
    "accepted",
    "unauthorized",
    "bad_request",
    "too_large",
    "unavailable",
    "unknown_source",
    "error",
)

EventOutcome = Literal["stored", "duplicate", "unhandled", "enqueued", "enqueue_failed", "swept"]
EVENT_OUTCOMES: Final[tuple[EventOutcome, ...]] = (
    "stored",
    "duplicate",
    "unhandled",
    "enqueued",
    "enqueue_failed",
    "swept",
)

LeakSample = tuple[str, Mapping[str, str], float]

_log = logging.getLogger(__name__)

SKIPPED_EVENTS: Final = Counter(
    "sync_worker_events_skipped",
    "Events that stood for no record, by source and reason (unhandled types, unrecognised shapes).",
    ("source", "reason"),
)
_skipped_seen: set[tuple[str, str]] = set()
_skipped_lock = threading.Lock()


def note_skipped(source: str, reason: str) -> None:
    """Count one skipped event in this process's registry, and log each (source, reason) once."""
    label = reason[:120]
    SKIPPED_EVENTS.labels(source=source, reason=label).inc()
    with _skipped_lock:
        first = (source, label) not in _skipped_seen
        _skipped_seen.add((source, label))
    if first:
        _log.warning("%s event skipped: %s (logged once, counted in the skipped metric)", source, label)


POLLS: Final = Counter(
    "sync_worker_polls",
    "Polls of a source's stream, by outcome (ok, error).",
    ("source", "stream", "outcome"),
)
RECORDS: Final = Counter(
    "sync_worker_records_pulled", "Records pulled, by source and stream.", ("source", "stream")
)
WRITES: Final = Counter(
    "sync_worker_writes",
    "Outbox items pushed to a target, by outcome (written, created, skipped, retried, dead).",
    ("target", "outcome"),
)
FAILURES: Final = Counter(
    "sync_worker_failures", "Polls and pushes that failed, by system and operation.", ("system", "operation")
)
RATE_LIMITED: Final = Counter(
    "sync_worker_rate_limited", "HTTP 429 answers from a system's API.", ("system",)
)
DEAD_LETTERS: Final = Counter(
    "sync_worker_dead_letters", "Messages that became dead letters, by queue and system.", ("queue", "system")
)
LAST_SUCCESS: Final = Gauge(
    "sync_worker_last_success_timestamp_seconds",
    "Unix time of the last successful poll (system, stream) or push (system = the target, stream empty).",
    ("operation", "system", "stream"),
    multiprocess_mode="max",
)
UNMAPPED_STAGES: Final = Counter(
    "sync_worker_unmapped_stages",
    "Records whose pipeline or stage no mapping covers, by source, pipeline and stage.",
    ("source", "pipeline", "stage"),
)


_unmapped_seen: set[tuple[str, str, str]] = set()


def note_unmapped(unmapped: UnmappedStage) -> None:
    """Count one record whose stage no mapping covers, and warn once per (source, pipeline, stage)
    in this process: its deals are out of the funnel until the mapping names the stage."""
    key = (unmapped.source, unmapped.pipeline or "", unmapped.stage or "")
    UNMAPPED_STAGES.labels(source=key[0], pipeline=key[1][:120], stage=key[2][:120]).inc()
    with _skipped_lock:
        first = key not in _unmapped_seen
        _unmapped_seen.add(key)
    if first:
        _log.warning(
            "%s: pipeline %r stage %r is not mapped: its deals stay out of the funnel"
            " (map it in %s.yaml; see: sync-worker mappings check)",
            key[0],
            key[1] or None,
            key[2] or None,
            key[0],
            extra={"source": key[0], "pipeline": key[1], "stage": key[2]},
        )


def worker_registry(directory: str) -> CollectorRegistry:
    """A registry summing the multiprocess files of the worker processes in ``directory``."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


def serve_worker_metrics(directory: str, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104
    """Serve the workers' summed series on ``host:port`` from a daemon thread (``/metrics``)."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=host, registry=worker_registry(directory))
    _log.info("worker metrics on http://%s:%d/metrics", host, port)


# name -> help of the gauges :func:`sync_worker.leaks.leak_gauges` feeds, labelled rule and stage.
LEAK_METRICS: Final[Mapping[str, str]] = {
    "sync_worker_leak_flags_open": "Deals with an open leak flag, by rule, leaked-from stage and currency.",
    "sync_worker_leak_amount_at_risk": ("Sum of the amounts of deals with an open leak flag, per currency."),
    "sync_worker_leak_weighted_amount_at_risk": (
        "Sum of amount x stage win probability of deals with an open leak flag, per currency."
    ),
}
_LEAK_LABELS: Final = ("rule", "stage", "currency")


class _LeakCollector(Collector):
    """Exposes the last leak snapshot; swapped whole under a lock, read whole per scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: tuple[LeakSample, ...] = ()

    def replace(self, samples: Iterable[LeakSample]) -> None:
        snapshot = tuple((name, dict(labels), float(value)) for name, labels, value in samples)
        with self._lock:
            self._samples = snapshot

    def mark_unknown(self) -> None:
        with self._lock:
            self._samples = tuple((name, labels, math.nan) for name, labels, _ in self._samples)

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(name, text, labels=_LEAK_LABELS) for name, text in LEAK_METRICS.items()]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            samples = self._samples
        families = {
            name: GaugeMetricFamily(name, text, labels=_LEAK_LABELS) for name, text in LEAK_METRICS.items()
        }
        for name, labels, value in samples:
            family = families.get(name)
            if family is not None:
                family.add_metric([labels.get(label, "") for label in _LEAK_LABELS], value)
        yield from families.values()


# Webhook handling is a DB commit plus a Redis push: milliseconds, with a tail when either is slow.
_LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ReceiverMetrics:
    """Counters, the latency histogram and the inbox depth gauge of one receiver."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "sync_worker_webhook_requests",
            "Webhook requests by source and outcome.",
            ("source", "outcome"),
            registry=self.registry,
        )
        self.events = Counter(
            "sync_worker_webhook_events",
            "Webhook events by source and outcome (stored, duplicate, unhandled, enqueued, ...).",
            ("source", "outcome"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "sync_worker_webhook_latency_seconds",
            "Time to answer a webhook request, body read to response, in seconds.",
            ("source",),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inbox_depth = Gauge(
            "sync_worker_inbox_depth",
            "Accepted webhook events not processed yet (NaN when the store cannot be read).",
            registry=self.registry,
        )
        self._leaks = _LeakCollector()
        self.registry.register(self._leaks)

    def add_worker_dir(self, directory: str) -> None:
        """Also expose the series of the worker processes writing to ``directory`` (``run``)."""
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(self.registry, path=directory)  # type: ignore[no-untyped-call]

    def count_request(self, source: str, outcome: RequestOutcome) -> None:
        self.requests.labels(source=source, outcome=outcome).inc()

    def count_events(self, source: str, outcome: EventOutcome, amount: int) -> None:
        if amount > 0:
            self.events.labels(source=source, outcome=outcome).inc(amount)

    def observe_latency(self, source: str, seconds: float) -> None:
        self.latency.labels(source=source).observe(seconds)

    def set_inbox_depth(self, depth: float) -> None:
        self.inbox_depth.set(depth)

    def set_leak_samples(self, samples: Iterable[LeakSample]) -> None:
        """Replace the leak gauges with ``(metric, labels, value)`` samples (from ``leak_gauges``)."""
        self._leaks.replace(samples)

    def mark_leaks_unknown(self) -> None:
        """The store could not be read: keep the last leak series, each valued NaN."""
        self._leaks.mark_unknown()

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """One sample's current value (``name`` as exposed, e.g. ``..._requests_total``); for tests."""
        return self.registry.get_sample_value(name, labels or {})
