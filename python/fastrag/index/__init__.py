"""Indexes: BM25 over the C++ inverted index (dense and learned sparse indexes follow)."""

from fastrag.index.results import DocId, Hit, SearchResults
from fastrag.index.sparse import BM25

__all__ = ["BM25", "DocId", "Hit", "SearchResults"]
