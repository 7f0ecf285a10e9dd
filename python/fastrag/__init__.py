"""fastrag: local multi-stage retrieval for RAG with a C++ core.

Installed as ``pip install fastrag-engine``: the name ``fastrag`` on the package index is an
unrelated project that also imports as ``fastrag`` (see fastrag._dist).
"""

from __future__ import annotations

from pathlib import Path

from fastrag import _dist
from fastrag._dist import DistributionConflictWarning

try:
    from fastrag._core import IndexFormatError
except ImportError as _error:
    raise _dist.native_module_error(_error, Path(__file__).parent) from _error
from fastrag.collection import Collection, CollectionError
from fastrag.encoders import (
    BM42Index,
    CrossEncoder,
    Encoder,
    RemoteEncoder,
    SpladeEncoder,
    SpladeIndex,
    StaticEncoder,
    TextEncoder,
    TruncationWarning,
)
from fastrag.index import (
    BM25,
    ApproxImpactIndex,
    DenseIndex,
    DocId,
    Hit,
    ImpactIndex,
    SearchResults,
)
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
    "ApproxImpactIndex",
    "AutoAnalyzer",
    "BM42Index",
    "BigramAnalyzer",
    "Collection",
    "CollectionError",
    "CrossEncoder",
    "DenseIndex",
    "DistributionConflictWarning",
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
    "StaticEncoder",
    "TextEncoder",
    "TruncationWarning",
    "get_analyzer",
]
__version__ = "0.1.0"

_dist.warn_on_conflict(Path(__file__).parent)
