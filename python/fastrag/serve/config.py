"""Settings of `fastrag serve`: where to listen, the API key, micro-batching and request limits."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

API_KEY_ENV = "FASTRAG_API_KEY"


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; anything above gets a 4xx error and does nothing.

    Attributes:
        max_body_bytes: the largest request body (413 above it).
        max_query_chars: the longest query, rerank query or embedding input.
        max_batch: most queries in one search, inputs in one embedding call, documents in
            one rerank call.
        max_k: the largest k (and rerank top_n).
        max_documents: most documents in one add or delete.
        max_document_chars: the longest document text (in an add or a rerank call).
    """

    max_body_bytes: int = 8 * 2**20
    max_query_chars: int = 4096
    max_batch: int = 256
    max_k: int = 1000
    max_documents: int = 10_000
    max_document_chars: int = 1_000_000

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class ServeConfig:
    """How `fastrag serve` runs.

    Attributes:
        collection: the collection folder (the only path the service ever opens).
        host, port: where to listen; loopback by default.
        api_key: bearer key every API request must carry (None: no key; /health, the web
            page and the API docs are always open).
        batching: micro-batch encoder calls of concurrent requests.
        max_batch_texts: texts in one encoder run at most.
        max_wait_ms: how long the first text of a batch waits for company.
        workers: search threads (each with its own reader of the collection); 0: one per core.
        encoder_threads: onnxruntime threads of each query encoder run (0: one per core);
            concurrency comes from serving several runs and batches at once.
        cors_origins: origins allowed by CORS (empty: CORS off).
        drain_seconds: on SIGTERM / SIGINT, how long requests in flight may take to finish
            (new ones get 503 meanwhile).
        rerank_model: a cross-encoder for /rerank; None: cosine of the collection's encoder.
        limits: per-request limits.
    """

    collection: Path
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    batching: bool = True
    max_batch_texts: int = 64
    max_wait_ms: float = 2.0
    workers: int = 0
    encoder_threads: int = 1
    cors_origins: tuple[str, ...] = ()
    drain_seconds: float = 30.0
    rerank_model: str | None = None
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.api_key is not None and len(self.api_key) < 8:
            raise ValueError("the API key must have at least 8 characters")
        if self.max_batch_texts < 1:
            raise ValueError(f"max_batch_texts must be >= 1, got {self.max_batch_texts}")
        if not 0 <= self.max_wait_ms <= 1000:
            raise ValueError(f"max_wait_ms must be in 0..1000, got {self.max_wait_ms}")
        if self.encoder_threads < 0:
            raise ValueError(f"encoder_threads must be >= 0, got {self.encoder_threads}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.drain_seconds < 0:
            raise ValueError(f"drain_seconds must be >= 0, got {self.drain_seconds}")

    @property
    def threads(self) -> int:
        """Search threads: `workers`, or one per usable core."""
        if self.workers:
            return self.workers
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)

    @property
    def loopback(self) -> bool:
        """Whether `host` is only reachable from this machine."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def key_from_env(given: str | None) -> str | None:
    """The API key given, else $FASTRAG_API_KEY, else None (an empty value counts as unset)."""
    key = given if given is not None else os.environ.get(API_KEY_ENV)
    return key or None
