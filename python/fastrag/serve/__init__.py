"""`fastrag serve`: an HTTP service over a collection (``pip install "fastrag-engine[server]"``).

Search, documents, OpenAI-compatible embeddings, a Cohere / Jina shaped rerank API, Prometheus
metrics and a web search page, with micro-batched encoder calls, a bearer API key and limits
on every request. See `fastrag.serve.run.serve` and `ServeConfig`.
"""

from __future__ import annotations

from fastrag.serve.config import API_KEY_ENV, Limits, ServeConfig, key_from_env

__all__ = ["API_KEY_ENV", "Limits", "ServeConfig", "key_from_env"]
