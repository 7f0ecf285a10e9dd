"""Rerankers: score (query, passage) pairs."""

from fastrag.rerank.remote import RemoteReranker, RerankError

__all__ = ["RemoteReranker", "RerankError"]
