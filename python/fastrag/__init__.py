"""fastrag: local multi-stage retrieval for RAG with a C++ core."""

from __future__ import annotations

from fastrag._core import IndexFormatError
from fastrag.collection import Collection, CollectionError
from fastrag.encoders import (
    BM42Index,
    CrossEncoder,
    Encoder,
    RemoteEncoder,
    SpladeEncoder,
    SpladeIndex,
    TextEncoder,
    TruncationWarning,
)
from fastrag.index import BM25, DenseIndex, DocId, Hit, ImpactIndex, SearchResults
from fastrag.text import (
    AutoAnalyzer,
    BigramAnalyzer,
    EmptyDocumentWarning,
    EnglishAnalyzer,
    JapaneseAnalyzer,
    get_analyzer,
)

__all__ = [
    "BM25",
    "AutoAnalyzer",
    "BM42Index",
    "BigramAnalyzer",
    "Collection",
    "CollectionError",
    "CrossEncoder",
    "DenseIndex",
    "DocId",
    "EmptyDocumentWarning",
    "Encoder",
    "EnglishAnalyzer",
    "Hit",
    "ImpactIndex",
    "IndexFormatError",
    "JapaneseAnalyzer",
    "RemoteEncoder",
    "SearchResults",
    "SpladeEncoder",
    "SpladeIndex",
    "TextEncoder",
    "TruncationWarning",
    "get_analyzer",
]
__version__ = "0.1.0"
