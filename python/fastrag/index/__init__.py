"""Indexes: BM25 and learned sparse vectors (SPLADE, BM42) over the C++ inverted index,
dense vectors over the C++ HNSW graph."""

from fastrag.index.dense import DenseIndex
from fastrag.index.learned import BM42Index, ImpactIndex, SpladeIndex
from fastrag.index.results import DocId, Hit, SearchResults
from fastrag.index.sparse import BM25

__all__ = [
    "BM25",
    "BM42Index",
    "DenseIndex",
    "DocId",
    "Hit",
    "ImpactIndex",
    "SearchResults",
    "SpladeIndex",
]
