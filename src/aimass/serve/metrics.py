"""Prometheus metrics of one server: latency, batch size, queue depth, responses by status."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """The server's collectors, in a registry of their own (several apps can live in one process)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "aimass_request_seconds",
            "Request latency in seconds, by route and model.",
            ["route", "model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "aimass_batch_size",
            "Items per forward pass.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "aimass_batch_seconds",
            "Seconds per forward pass.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "aimass_queue_depth", "Requests queued or running.", ["model"], registry=self.registry
        )
        self.responses = Counter(
            "aimass_responses", "HTTP responses by status code.", ["status"], registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
