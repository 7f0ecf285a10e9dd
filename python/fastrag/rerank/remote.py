"""A reranker that calls a hosted rerank API over HTTP (stdlib only).

Most rerank services share one shape: a query and a list of documents go in, a list of
``{index, score}`` results sorted by score comes out. Three request styles cover them:

``"cohere"``
    ``POST {base_url}/rerank`` with ``{"model", "query", "documents", "top_n",
    "return_documents": false}``, answered by ``{"results": [{"index", "relevance_score"}]}``.
    Cohere v1/v2 (e.g. Rerank 3 Nimble, ``base_url="https://api.cohere.com/v2"``), vLLM and
    Infinity (``/v1/rerank``) and LiteLLM speak it.
``"jina"``
    The same body and answer at Jina's ``https://api.jina.ai/v1`` (``jina-reranker-v2-...``).
``"tei"``
    Hugging Face text-embeddings-inference: ``POST {base_url}/rerank`` with ``{"query",
    "texts", "raw_scores": false}``, answered by a JSON list ``[{"index", "score"}]``.

::

    rr = RemoteReranker("rerank-v3.5", base_url="https://api.cohere.com/v2",
                        api_key_env="COHERE_API_KEY")
    scores = rr.score("what is bm25", passages)  # (len(passages),) float32, input order

Passages go out in requests of at most `batch_size` (each asks for all of its results with
``top_n``) and up to `concurrency` requests are in flight at once; cross-encoder scores do not
depend on the other documents of a request, so scores from separate requests are comparable.
Rate limits (429), server errors (500, 502, 503, 504), dropped connections and timeouts are
retried with exponential backoff and jitter (a ``Retry-After`` header wins); any other error
status fails at once with the server's message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from fastrag._http import HttpClientError, JsonClient, positive_int
from fastrag.encoders.base import check_texts

__all__ = ["STYLES", "RemoteReranker", "RerankError", "Style"]

logger = logging.getLogger(__name__)

Style = Literal["cohere", "jina", "tei"]
#: the request / answer shapes understood (see the module docstring)
STYLES: tuple[str, ...] = ("cohere", "jina", "tei")


class RerankError(HttpClientError):
    """The rerank server could not be reached, refused the request or answered nonsense.

    Attributes:
        status: the HTTP status of the last answer, or None (no answer, or a malformed one).
        attempts: how many requests were sent for the failing batch, or None.
    """


class RemoteReranker(JsonClient):
    """Relevance scores for (query, passage) pairs from a hosted rerank API.

    Anything that answers one of the `STYLES` plugs in: Cohere Rerank (3 Nimble, 3.5, ...),
    Jina Reranker, a Hugging Face text-embeddings-inference (TEI) server running a
    cross-encoder such as ``BAAI/bge-reranker-base``, vLLM or Infinity.

    Args:
        model: the model name sent with every request (``"model"``); None leaves the field
            out (a server that hosts one model). Not sent in the ``"tei"`` style, where the
            server's model is fixed when it starts. Also this reranker's `name`, or
            `base_url` when None.
        base_url: the API root; ``/rerank`` is appended, e.g. ``https://api.cohere.com/v2``,
            ``https://api.jina.ai/v1``, ``http://localhost:8080`` (TEI) or
            ``http://localhost:8000/v1`` (vLLM).
        api_key: sent as ``Authorization: Bearer <key>``; None reads the environment variable
            named by `api_key_env`; no header is sent when neither is set (local servers).
        api_key_env: the environment variable holding the key, read when the reranker is
            made (e.g. ``"COHERE_API_KEY"``, ``"JINA_API_KEY"``).
        style: ``"cohere"``, ``"jina"`` or ``"tei"``: the request body and answer shape.
        batch_size: the most passages in one request; longer lists are split. TEI refuses
            more than its ``--max-client-batch-size`` (32 unless set), so pass 32 there.
        concurrency: how many requests may be in flight at once (as for
            `fastrag.encoders.RemoteEncoder`).
        max_retries: extra attempts for a request that failed transiently (at most
            ``max_retries + 1`` requests per batch).
        timeout: seconds to wait for the server (connect, and each read) per request.
        backoff: base pause in seconds before a retry: attempt k waits about
            ``backoff * 2**(k-1)`` (times a random factor in [0.5, 1.5), at most 30 s) before
            the next, unless the server sent ``Retry-After``, which is honoured as given.

    Raises (from `score`):
        RerankError: the server could not be reached (connection refused before any request
            got an answer fails at once, naming the URL), answered an error status that is
            not retried (the server's message is in the exception), kept failing after all
            retries, or sent a malformed answer (not JSON, the wrong shape, an index missing,
            repeated or out of range, a score that is not a finite number).
        ValueError, TypeError: the query or a passage is empty or not text (checked before
            any request).
    """

    _error = RerankError
    _label = "rerank"
    _user_agent = "fastrag-remote-reranker"
    _logger = logger

    def __init__(
        self,
        model: str | None,
        *,
        base_url: str,
        api_key: str | None = None,
        api_key_env: str = "RERANK_API_KEY",
        style: str = "cohere",
        batch_size: int = 64,
        concurrency: int = 4,
        max_retries: int = 5, timeout: float = 60.0, backoff: float = 0.5,
    ) -> None:
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise ValueError(f"model must be a non-empty str or None, got {model!r}")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}; got {style!r}")
        if api_key is not None and not isinstance(api_key, str):
            raise TypeError(f"api_key must be str or None, got {type(api_key).__name__}")
        self._init_http(
            api_key=api_key if api_key is not None else os.environ.get(api_key_env),
            max_retries=max_retries, timeout=timeout, backoff=backoff,
        )

        self.model = model
        self.base_url = base_url.rstrip("/")
        self.name = model if model is not None else self.base_url
        self.url = f"{self.base_url}/rerank"
        self.style: Style = style  # type: ignore[assignment]
        self.batch_size = positive_int(batch_size, "batch_size")
        self.concurrency = positive_int(concurrency, "concurrency")

    @property
    def fingerprint(self) -> str:
        """``remote-rerank:<16 hex>`` of base URL, model and style (not the key)."""
        settings = json.dumps([self.base_url, self.model, self.style], ensure_ascii=False)
        return "remote-rerank:" + hashlib.sha256(settings.encode("utf-8")).hexdigest()[:16]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.model!r}, base_url={self.base_url!r}, "
            f"style={self.style!r})"
        )

    # -- scoring ---------------------------------------------------------------------------

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """Relevance scores, one float32 per passage, in the order of `passages`.

        Higher means more relevant. The scale is the service's: Cohere and Jina give a
        relevance score in [0, 1]; TEI with ``raw_scores: false`` a sigmoid of the logit.
        An empty `passages` gives an empty array without a request.
        """
        (q,) = check_texts([query], name="query")
        checked = check_texts(passages, name="passages")
        if not checked:
            return np.zeros(0, dtype=np.float32)
        step = self.batch_size
        starts = list(range(0, len(checked), step))
        logger.debug(
            "reranking %d passage(s) at %s in %d request(s)", len(checked), self.url, len(starts)
        )

        def request(start: int, stop: threading.Event) -> np.ndarray:
            return self._request_scores(q, checked[start:start + step], start, stop)

        parts = self._run_batches(starts, request, "fastrag-rerank")
        return np.concatenate([parts[start] for start in starts])

    def _payload(self, query: str, batch: list[str]) -> dict[str, Any]:
        if self.style == "tei":
            return {"query": query, "texts": batch, "raw_scores": False}
        payload: dict[str, Any] = {} if self.model is None else {"model": self.model}
        payload.update(
            {"query": query, "documents": batch, "top_n": len(batch), "return_documents": False}
        )
        return payload

    def _request_scores(
        self, query: str, batch: list[str], offset: int, stop: threading.Event
    ) -> np.ndarray:
        """(len(batch),) float32 in batch order; `offset` numbers passages in messages."""
        answer = self._post(self._payload(query, batch), stop)
        if self.style == "tei":
            items, key = answer, "score"
            if not isinstance(items, list):
                raise RerankError(
                    f"{self.url} answered {_snippet(answer)} instead of a JSON list of "
                    "{\"index\", \"score\"} (is this a TEI server? try style=\"cohere\")"
                )
        else:
            items = answer.get("results") if isinstance(answer, dict) else None
            key = "relevance_score"
            if not isinstance(items, list):
                raise RerankError(
                    f"{self.url} answered without a \"results\" list: {_snippet(answer)}"
                    + (" (a TEI server? try style=\"tei\")" if isinstance(answer, list) else "")
                )

        n = len(batch)
        scores = np.full(n, np.nan, dtype=np.float64)
        seen = np.zeros(n, dtype=bool)
        for item in items:
            if not isinstance(item, dict) or "index" not in item or key not in item:
                raise RerankError(
                    f"{self.url} returned a result without \"index\" and \"{key}\": "
                    f"{_snippet(item)}"
                )
            index = item["index"]
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
                raise RerankError(
                    f"{self.url} returned index {index!r} for a request of {n} passage(s) "
                    f"(passages {offset}..{offset + n - 1})"
                )
            if seen[index]:
                raise RerankError(
                    f"{self.url} returned index {index} twice (passage {offset + index})"
                )
            value = item[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RerankError(
                    f"{self.url} returned a non-numeric score {_snippet(value)} for passage "
                    f"{offset + index}"
                )
            if not math.isfinite(value):
                raise RerankError(
                    f"{self.url} returned the score {value} for passage {offset + index}"
                )
            scores[index] = value
            seen[index] = True
        if not seen.all():
            missing = (np.flatnonzero(~seen) + offset).tolist()
            shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
            raise RerankError(
                f"{self.url} returned scores for {int(seen.sum())} of {n} passage(s); missing "
                f"passage(s) {shown} (does the server cap top_n? lower batch_size)"
            )
        return scores.astype(np.float32)


def _snippet(value: Any, limit: int = 200) -> str:
    """`value` as short JSON for an error message."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
