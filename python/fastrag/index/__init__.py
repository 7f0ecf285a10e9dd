"""Indexes: BM25 over the C++ inverted index, dense vectors over the C++ HNSW graph."""

from fastrag.index.dense import DenseIndex
from fastrag.index.results import DocId, Hit, SearchResults
from fastrag.index.sparse import BM25

__all__ = ["BM25", "DenseIndex", "DocId", "Hit", "SearchResults"]
