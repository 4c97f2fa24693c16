"""Prometheus metrics of one server: latency, batch size, queue depth, responses by status."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from contextlib import contextmanager

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
        self.recent = Recent()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Recent:
    """The last ``keep`` requests of each service, for live figures over a short window: requests
    per second, p50/p95 latency, errors and, for generation, completion tokens per second (what the
    console's service page polls). One deque append per request; figures are computed only when
    asked for. :meth:`running` counts the requests a version is answering now outside its batcher
    (generation decodes in the shared continuous batch), which the queue depth adds.

    >>> recent = Recent()
    >>> for ms in (10, 20, 30, 40):
    ...     recent.observe("reviews", ms / 1000, now=100.0)
    >>> recent.observe("reviews", 0.005, error=True, now=100.0)
    >>> figures = recent.summary("reviews", window_s=60, now=101.0)
    >>> figures["requests"], figures["errors"], figures["p50_ms"], figures["tokens_per_s"]
    (5, 1, 20.0, None)
    """

    def __init__(self, keep: int = 4096):
        self.keep = keep
        self._seen: dict[str, deque] = {}
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()

    def observe(
        self,
        service: str,
        seconds: float,
        error: bool = False,
        now: float | None = None,
        tokens: int | None = None,
    ) -> None:
        """One request of ``service``: its latency, whether it failed, and (generation) the tokens
        it generated."""
        seen = self._seen.get(service)
        if seen is None:
            seen = self._seen[service] = deque(maxlen=self.keep)
        seen.append((time.monotonic() if now is None else now, seconds, error, tokens))

    @contextmanager
    def running(self, ref: str):
        """Count a request to version ``ref`` as in flight while the block runs."""
        with self._lock:
            self._running[ref] = self._running.get(ref, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._running[ref] -= 1

    def in_flight(self, ref: str) -> int:
        return self._running.get(ref, 0)

    def forget(self, service: str) -> None:
        self._seen.pop(service, None)

    def summary(self, service: str, window_s: float = 60.0, now: float | None = None) -> dict:
        """Requests, requests/s, errors, latency percentiles (ms) and generated tokens/s (None
        when no request generated any) of the last ``window_s`` seconds."""
        now = time.monotonic() if now is None else now
        rows = [r for r in list(self._seen.get(service, ())) if now - r[0] <= window_s]
        latencies = sorted(r[1] for r in rows)
        span = min(window_s, max(now - rows[0][0], 1.0)) if rows else window_s
        tokens = [r[3] for r in rows if r[3] is not None]
        return {
            "window_s": window_s,
            "requests": len(rows),
            "requests_per_s": round(len(rows) / span, 3),
            "errors": sum(1 for r in rows if r[2]),
            "p50_ms": _percentile(latencies, 0.50),
            "p95_ms": _percentile(latencies, 0.95),
            "tokens_per_s": round(sum(tokens) / span, 3) if tokens else None,
        }


def _percentile(ordered: list[float], q: float) -> float | None:
    """The nearest-rank percentile of sorted seconds, in ms (None without data)."""
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1000, 3)
