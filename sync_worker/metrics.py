"""Prometheus metrics of the webhook receiver, on a registry of their own.

Each :class:`ReceiverMetrics` owns a :class:`~prometheus_client.CollectorRegistry`, so several apps
(tests, a benchmark next to a server) never collide on the process-wide default registry. Label
values are bounded: ``source`` is one of the configured sources or ``"unknown"``, ``outcome`` comes
from the fixed tuples below. Exposition format:
https://prometheus.io/docs/instrumenting/exposition_formats/ and naming:
https://prometheus.io/docs/practices/naming/
"""

from __future__ import annotations

from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = [
    "CONTENT_TYPE",
    "EVENT_OUTCOMES",
    "REQUEST_OUTCOMES",
    "EventOutcome",
    "ReceiverMetrics",
    "RequestOutcome",
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

    def count_request(self, source: str, outcome: RequestOutcome) -> None:
        self.requests.labels(source=source, outcome=outcome).inc()

    def count_events(self, source: str, outcome: EventOutcome, amount: int) -> None:
        if amount > 0:
            self.events.labels(source=source, outcome=outcome).inc(amount)

    def observe_latency(self, source: str, seconds: float) -> None:
        self.latency.labels(source=source).observe(seconds)

    def set_inbox_depth(self, depth: float) -> None:
        self.inbox_depth.set(depth)

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """One sample's current value (``name`` as exposed, e.g. ``..._requests_total``); for tests."""
        return self.registry.get_sample_value(name, labels or {})
