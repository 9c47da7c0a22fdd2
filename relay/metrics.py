"""Prometheus metrics, served at /metrics. Names follow Prometheus conventions; labels
are low-cardinality (never a task id)."""

from __future__ import annotations

import functools
from typing import TypeVar

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

HTTP_REQUESTS = Counter("relay_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_SECONDS = Histogram("relay_http_request_seconds", "HTTP request latency (streams: time to headers)", ["route"])
CALLBACKS = Counter("relay_callbacks_total", "KIE callbacks", ["family", "outcome"])
INGEST_SECONDS = Histogram(
    "relay_ingest_seconds", "Time to apply one update (read, transition, compare-and-set, publish)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
TRANSITIONS = Counter("relay_task_transitions_total", "Stored task changes", ["status"])
OPEN_STREAMS = Gauge("relay_open_streams", "Open SSE streams in this process")
EVENTS_SENT = Counter("relay_events_sent_total", "SSE task events sent")
RECONCILER_POLLS = Counter("relay_reconciler_polls_total", "Provider status queries by the reconciler", ["outcome"])
MIRROR = Counter("relay_mirror_total", "Result mirroring passes", ["outcome"])
REDIS_RECONNECTS = Counter("relay_redis_reconnects_total", "Redis pub/sub reconnects")
HUB_MESSAGES = Counter(
    "relay_hub_messages_total", "Task changes this process received from Redis pub/sub (only what its streams watch)"
)
HUB_CHANNELS = Gauge("relay_hub_channels", "Task and owner channels this process is subscribed to")
KIE_ERRORS = Counter("relay_kie_errors_total", "KIE answers that were errors", ["code"])
WEBHOOK_DELIVERIES = Counter(
    "relay_webhook_deliveries_total",
    "Outbound webhook attempts by endpoint (scheme://host:port) and outcome: delivered, retried, failed",
    ["endpoint", "outcome"],
)
WEBHOOK_PENDING = Gauge("relay_webhook_pending", "Outbound webhook messages waiting to be delivered (all instances)")
WEBHOOK_OLDEST = Gauge(
    "relay_webhook_oldest_undelivered_seconds", "Age of the oldest undelivered webhook message", ["endpoint"]
)
WEBHOOK_DISABLED = Gauge(
    "relay_webhook_endpoint_disabled", "1 while an endpoint is disabled (it answered 410 Gone)", ["endpoint"]
)
GC_PAUSES = Histogram(
    "relay_gc_pause_seconds", "Garbage collection pauses of this process", ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25),
)


@functools.lru_cache(maxsize=2048)
def child(metric: M, *values: str) -> M:
    """`metric.labels(*values)`, looked up once: `.labels()` validates and takes a lock on
    every call, which the hot paths (each request, each callback) paid every time."""
    return metric.labels(*values)
