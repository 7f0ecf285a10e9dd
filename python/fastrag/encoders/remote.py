"""An encoder that calls an OpenAI-compatible embeddings API over HTTP (stdlib only).

Works with OpenAI itself and with the many servers that copy its ``POST /embeddings`` shape
(vLLM, text-embeddings-inference, Ollama, LiteLLM, llama.cpp, ...)::

    enc = RemoteEncoder("text-embedding-3-small", dim=1536)
    vectors = enc.encode_documents(["first passage", "second passage"])
    by_dim = enc.encode_queries(["a question"], dims=[256, 512, 1536])

Requests hold at most `batch_size` texts and up to `concurrency` of them are in flight at once.
Rate limits (429), server errors (500, 502, 503, 504), dropped connections and timeouts are
retried with exponential backoff and jitter (a ``Retry-After`` header wins); any other error
status fails at once with the server's message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._http import MAX_BACKOFF_S as MAX_BACKOFF_S  # re-exported: the retry policy
from .._http import RETRY_STATUSES as RETRY_STATUSES
from .._http import HttpClientError, JsonClient, positive_int
from .base import Encoder, Kind, normalize

__all__ = ["RemoteEncoder", "RemoteEncoderError"]

logger = logging.getLogger(__name__)

#: the text embedded to learn the model's dimension when it was not given
PROBE_TEXT = "dimension probe"


class RemoteEncoderError(HttpClientError):
    """The embeddings server could not be reached, refused the request or answered nonsense.

    Attributes:
        status: the HTTP status of the last answer, or None (no answer, or a malformed one).
        attempts: how many requests were sent for the failing batch, or None.
    """


class RemoteEncoder(JsonClient, Encoder):
    """Embeddings from an OpenAI-compatible HTTP API (``POST {base_url}/embeddings``).

    Args:
        model: the model name sent with every request; also this encoder's `name`.
        base_url: the API root, e.g. ``http://localhost:8000/v1`` for a local vLLM.
        api_key: sent as ``Authorization: Bearer <key>``; None reads ``OPENAI_API_KEY`` from
            the environment; no header is sent when neither is set (local servers).
        dim: the model's full output dimension. When None it is learned on first need:
            reading `dim` (which `encode` does before anything else) embeds the text
            ``"dimension probe"`` once and caches the length. Give it to save that request.
        dimensions_supported: whether the API takes a ``dimensions`` field (Matryoshka models
            such as text-embedding-3-*). When False, `encode(dim=...)` / `dims=` fetch full
            vectors and truncate (and renormalise) them locally.
        query_prompt: prepended to every query text before it is sent (instruction-tuned
            models, e.g. ``"query: "`` for E5).
        document_prompt: prepended to every document text before it is sent (e.g.
            ``"passage: "`` for E5).
        normalize: scale returned vectors to unit L2 length (cosine == inner product).
        batch_size: the most texts in one request (`encode(batch_size=...)` overrides it).
        concurrency: how many requests may be in flight at once.
        max_retries: extra attempts for a request that failed transiently (so at most
            ``max_retries + 1`` requests per batch).
        timeout: seconds to wait for the server (connect, and each read) per request.
        backoff: base pause in seconds before a retry; attempt k waits about
            ``backoff * 2**(k-1)`` (times a random factor in [0.5, 1.5), at most 30 s),
            unless the server sent ``Retry-After``, which is honoured as given.

    Raises (from `encode`):
        RemoteEncoderError: the server could not be reached (connection refused before any
            request succeeded fails at once, naming the URL), answered an error status that
            is not retried (the server's message is in the exception), kept failing after
            all retries, or sent a malformed answer (not JSON, wrong count, missing fields,
            vectors of the wrong length).
        ValueError: the server sent a NaN or infinite value (the text's index is named), or
            the texts were invalid (checked before any request).
    """

    _error = RemoteEncoderError
    _label = "embeddings"
    _user_agent = "fastrag-remote-encoder"
    _logger = logger

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        dim: int | None = None,
        dimensions_supported: bool = True,
        query_prompt: str = "",
        document_prompt: str = "",
        normalize: bool = True,
        batch_size: int = 64,
        concurrency: int = 4,
        max_retries: int = 5, timeout: float = 60.0, backoff: float = 0.5,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must be a non-empty str, got {model!r}")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        for prompt_name, prompt in (("query_prompt", query_prompt),
                                    ("document_prompt", document_prompt)):
            if not isinstance(prompt, str):
                raise TypeError(f"{prompt_name} must be str, got {type(prompt).__name__}")
        self._init_http(
            api_key=api_key if api_key is not None else os.environ.get("OPENAI_API_KEY"),
            max_retries=max_retries, timeout=timeout, backoff=backoff,
        )

        self.model = model
        self.name = model
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/embeddings"
        self._dim = None if dim is None else positive_int(dim, "dim")
        self.dimensions_supported = bool(dimensions_supported)
        self.query_prompt = query_prompt
        self.document_prompt = document_prompt
        self.normalized = bool(normalize)
        self.batch_size = positive_int(batch_size, "batch_size")
        self.concurrency = positive_int(concurrency, "concurrency")
        self._dim_lock = threading.Lock()

    # -- the Encoder interface -------------------------------------------------------------

    @property
    def dim(self) -> int:  # type: ignore[override]  # read-only: probed from the server once
        """The model's full output dimension; probes the server once when it was not given."""
        if self._dim is None:
            with self._dim_lock:
                if self._dim is None:
                    self._embed([PROBE_TEXT], "document", 1)  # learns self._dim
        assert self._dim is not None
        return self._dim

    @property
    def fingerprint(self) -> str:
        """``remote:<16 hex>`` of base URL, model, prompts and normalisation (not the key)."""
        settings = json.dumps(
            [self.base_url, self.model, self.query_prompt, self.document_prompt,
             self.normalized],
            ensure_ascii=False,
        )
        return "remote:" + hashlib.sha256(settings.encode("utf-8")).hexdigest()[:16]

    def _embed(self, texts: list[str], kind: Kind, batch_size: int) -> np.ndarray:
        return self._fetch(texts, kind, [None], batch_size)[None]

    def _embed_dims(
        self, texts: list[str], kind: Kind, batch_size: int, dims: list[int]
    ) -> dict[int, np.ndarray]:
        """One request set per dimension (``"dimensions": d``), all sharing one worker pool.

        With ``dimensions_supported=False``: full vectors once, truncated here.
        """
        if not self.dimensions_supported:
            return super()._embed_dims(texts, kind, batch_size, dims)
        unique = list(dict.fromkeys(dims))
        got = self._fetch(texts, kind, unique, batch_size)
        return {d: got[d] for d in dims}

    def __repr__(self) -> str:
        # no probe request just to print the encoder
        return f"{type(self).__name__}({self.name!r}, dim={self._dim}, base_url={self.base_url!r})"

    # -- requests --------------------------------------------------------------------------

    def _fetch(
        self, texts: list[str], kind: Kind, dims: Sequence[int | None], batch_size: int
    ) -> dict[int | None, np.ndarray]:
        """{d: (n, d) float32} for each requested `dimensions` value (None: the full vectors)."""
        prompt = self.query_prompt if kind == "query" else self.document_prompt
        inputs = [prompt + text for text in texts]
        step = batch_size
        jobs = [(d, start) for d in dims for start in range(0, len(inputs), step)]

        def request(job: tuple[int | None, int], stop: threading.Event) -> np.ndarray:
            d, start = job
            return self._request_rows(inputs[start:start + step], d, start, stop)

        parts = self._run_batches(jobs, request, "fastrag-remote")

        out: dict[int | None, np.ndarray] = {}
        for d in dims:
            rows = [parts[d, start] for start in range(0, len(inputs), step)]
            widths = {r.shape[1] for r in rows}
            if len(widths) > 1:
                raise RemoteEncoderError(
                    f"{self.url} returned vectors of different lengths {sorted(widths)} "
                    f"for model {self.model!r}"
                )
            width = widths.pop() if widths else (d if d is not None else self.dim)
            if d is not None and width != d:
                raise RemoteEncoderError(
                    f"asked {self.url} for {d}-dimensional vectors (\"dimensions\": {d}) but got "
                    f"{width}; if the model ignores \"dimensions\", pass "
                    "dimensions_supported=False to truncate locally"
                )
            if d is None:
                if self._dim is None:
                    self._dim = width
                    logger.debug("model %r at %s: learned dim=%d", self.model, self.url, width)
                elif width != self._dim:
                    raise RemoteEncoderError(
                        f"{self.url} returned {width}-dimensional vectors for model "
                        f"{self.model!r}, expected dim={self._dim}"
                    )
            array = np.concatenate(rows) if rows else np.zeros((0, width), np.float32)
            out[d] = normalize(array) if self.normalized else array
        return out

    def _request_rows(
        self, batch: list[str], dimensions: int | None, offset: int, stop: threading.Event
    ) -> np.ndarray:
        """(len(batch), width) float32 for one request; `offset` numbers texts in messages."""
        payload: dict[str, Any] = {"model": self.model, "input": batch}
        if dimensions is not None:
            payload["dimensions"] = dimensions
        payload["encoding_format"] = "float"
        answer = self._post(payload, stop)

        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list):
            raise RemoteEncoderError(
                f"{self.url} answered without a \"data\" list: {json.dumps(answer)[:200]}"
            )
        if len(data) != len(batch):
            raise RemoteEncoderError(
                f"{self.url} returned {len(data)} embeddings for {len(batch)} texts "
                f"(texts {offset}..{offset + len(batch) - 1})"
            )
        ordered: list[Any] = [None] * len(batch)
        for item in data:
            if not isinstance(item, dict) or "embedding" not in item or "index" not in item:
                raise RemoteEncoderError(
                    f"{self.url} returned an item without \"index\" and \"embedding\": "
                    f"{json.dumps(item)[:200]}"
                )
            index = item["index"]
            if (isinstance(index, bool) or not isinstance(index, int)
                    or not 0 <= index < len(batch) or ordered[index] is not None):
                raise RemoteEncoderError(
                    f"{self.url} returned a bad or repeated index {index!r} for a batch of "
                    f"{len(batch)} texts"
                )
            embedding = item["embedding"]
            if not isinstance(embedding, list):
                raise RemoteEncoderError(
                    f"{self.url} returned a {type(embedding).__name__} embedding, not a list of "
                    "floats (the server may not honour \"encoding_format\": \"float\")"
                )
            ordered[index] = embedding

        widths = {len(e) for e in ordered}
        if len(widths) != 1 or 0 in widths:
            raise RemoteEncoderError(
                f"{self.url} returned embeddings of lengths {sorted(widths)} in one batch "
                f"(texts {offset}..{offset + len(batch) - 1})"
            )
        try:
            with np.errstate(over="ignore"):
                rows = np.array(ordered, dtype=np.float64).astype(np.float32)
        except (TypeError, ValueError) as e:
            raise RemoteEncoderError(f"{self.url} returned non-numeric embedding values: {e}") \
                from None
        bad = ~np.isfinite(rows).all(axis=1)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"the embedding of text {offset + first} from {self.url} holds NaN or infinite "
                f"values ({int(bad.sum())} such text(s) in this batch)"
            )
        return rows
