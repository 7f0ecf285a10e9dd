"""Indexes: BM25 and impact vectors over the C++ inverted index, dense vectors over the C++
HNSW graph, and token stores for late interaction. (SPLADE and BM42, which own an encoder,
live in `fastrag.encoders`.)"""

from fastrag.index.approx import ApproxImpactIndex
from fastrag.index.dense import DenseIndex
from fastrag.index.impact import ImpactIndex
from fastrag.index.results import DocId, Hit, SearchResults
from fastrag.index.sparse import BM25
from fastrag.index.tokens import TokenStore

__all__ = [
    "BM25",
    "ApproxImpactIndex",
    "DenseIndex",
    "DocId",
    "Hit",
    "ImpactIndex",
    "SearchResults",
    "TokenStore",
]
