"""Prometheus metrics of the service: requests, latency, encoder batches, searches.

Each `Metrics` has its own registry (two services in one process never mix their counts);
`render` gives the text exposition format for ``GET /metrics``.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The counters and histograms of one service."""

    def __init__(self) -> None:
        # no *_created series: they double the output for nothing
        disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("fastrag_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "method", "status"], registry=r)
        self.latency = Histogram("fastrag_request_seconds", "HTTP request latency",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("fastrag_requests_in_flight", "requests being served",
                               registry=r)
        self.batch_texts = Histogram("fastrag_encoder_batch_texts",
                                     "texts per encoder run", buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("fastrag_encoder_batch_requests",
                                        "requests sharing one encoder run",
                                        buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("fastrag_encoder_batch_seconds",
                                       "seconds per encoder run", buckets=LATENCY_BUCKETS,
                                       registry=r)
        self.queries = Counter("fastrag_search_queries", "queries searched", ["method"],
                               registry=r)
        self.documents_written = Counter("fastrag_documents_written",
                                         "documents added or deleted", ["op"], registry=r)

    def on_batch(self, requests: int, texts: int, seconds: float) -> None:
        """The `MicroBatcher` hook: one encoder run."""
        self.batch_requests.observe(requests)
        self.batch_texts.observe(texts)
        self.batch_seconds.observe(seconds)

    def on_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
