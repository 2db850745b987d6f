"""Prometheus metrics of one application instance (its own registry, so tests can run many apps)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from streambot.heap import HeapFigures, TrimResult

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.active_streams = Gauge(
            "streambot_active_streams",
            "Responses currently streaming bytes.",
            registry=self.registry,
        )
        self.bytes_sent = Counter(
            "streambot_bytes_sent", "Body bytes written to HTTP clients.", registry=self.registry
        )
        self.telegram_requests = Counter(
            "streambot_telegram_requests",
            "Requests sent to Telegram, by method and fleet client.",
            ["method", "client"],
            registry=self.registry,
        )
        self.errors = Counter(
            "streambot_errors", "Errors by kind.", ["kind"], registry=self.registry
        )
        self.request_latency = Histogram(
            "streambot_request_latency_seconds",
            "Time to response headers of download requests, by route and status.",
            ["route", "status"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        # Leak checks (bench/) compare this before and after many aborted downloads; it is only
        # computed when /metrics is scraped.
        self.asyncio_tasks = Gauge(
            "streambot_asyncio_tasks",
            "Unfinished asyncio tasks of the event loop that renders the metrics.",
            registry=self.registry,
        )
        self.asyncio_tasks.set_function(_unfinished_tasks)
        self.heap_trims = Counter(
            "streambot_heap_trims",
            "malloc_trim calls made after the streams drained (HEAP_TRIM_QUIET_SECONDS).",
            registry=self.registry,
        )
        self.heap_trim_freed = Counter(
            "streambot_heap_trim_freed_bytes",
            "Resident memory those trims gave back to the system.",
            registry=self.registry,
        )
        self.heap_trim_seconds = Counter(
            "streambot_heap_trim_seconds",
            "Time those trims took, in their worker thread (the event loop runs on meanwhile).",
            registry=self.registry,
        )
        # The C allocator's own account (glibc mallinfo2), read when /metrics is scraped; absent
        # elsewhere. "free" is memory freed by the program that the allocator still holds.
        self.heap_bytes = Gauge(
            "streambot_heap_bytes",
            "C heap bytes by state: in_use, free (held by the allocator), mmapped.",
            ["state"],
            registry=self.registry,
        )

    def track_active_streams(self, count: Callable[[], int]) -> None:
        self.active_streams.set_function(lambda: float(count()))

    def track_heap(self, figures: Callable[[], HeapFigures | None]) -> None:
        """Export the allocator's figures (nothing where the C library has no mallinfo2)."""
        if figures() is None:
            return
        for state in ("in_use", "free", "mmapped"):
            self.heap_bytes.labels(state=state).set_function(
                functools.partial(_heap, figures, state)
            )

    def count_heap_trim(self, result: TrimResult) -> None:
        self.heap_trims.inc()
        self.heap_trim_freed.inc(result.freed)
        self.heap_trim_seconds.inc(result.duration)

    def count_request(self, method: str, client: str) -> None:
        self.telegram_requests.labels(method=method, client=client).inc()

    def count_error(self, kind: str) -> None:
        self.errors.labels(kind=kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _unfinished_tasks() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # rendered outside a running loop: there is no loop to count
        return 0.0


def _heap(figures: Callable[[], HeapFigures | None], state: str) -> float:
    return float(getattr(figures(), state, 0))
