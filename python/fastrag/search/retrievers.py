"""First-stage retrievers: each searches one leg (index) of a corpus and returns chunks.

All share one protocol: a `name` (its stage name in explain), a `depth` (chunks it returns),
a fusion `weight` (None lets the pipeline decide), `uses_encoder` (the leg needs the query
vector), and `retrieve(corpus, query, qvec, allow, depth)`. `Retriever("bm25", depth=200)`
builds one by name; an unknown name fails with the list of names there are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from fastrag.index.csr import pairs_csr
from fastrag.search.corpus import Corpus

__all__ = ["RETRIEVERS", "BM25Retriever", "BM42Retriever", "BaseRetriever", "DenseRetriever",
           "LateChunkRetriever", "Retriever", "SpladeRetriever"]

Ranking = list[tuple[int, float]]


@dataclass
class BaseRetriever:
    """A retriever over one leg of a corpus.

    Args:
        depth: chunks it returns (a pipeline asks for at least k).
        weight: its weight in fusion (finite, >= 0); None lets the pipeline decide.
    """

    depth: int = 100
    weight: float | None = None

    method: ClassVar[str] = ""  # the leg it searches, and its name in `Retriever(...)`
    uses_encoder: ClassVar[bool] = False  # needs the query vector of the corpus's encoder
    # a model's leg: only as good as the model knows the language (see Pipeline.adaptive)
    language_bound: ClassVar[bool] = False
    native: ClassVar[bool] = False  # the native executor can run it (see `native_leg`)

    def __post_init__(self) -> None:
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(f"depth must be an int >= 1, got {self.depth!r}")
        if self.weight is not None and not (
            isinstance(self.weight, (int, float)) and not isinstance(self.weight, bool)
            and math.isfinite(self.weight) and self.weight >= 0
        ):
            raise ValueError(f"weight must be a finite number >= 0 (or None), got {self.weight!r}")

    @property
    def name(self) -> str:
        """The stage name in results (`Result.stages`): the leg's name."""
        return self.method

    def retrieve(self, corpus: Corpus, query: str, qvec: np.ndarray | None,
                 allow: list[int] | None, depth: int) -> Ranking:
        """The best `depth` chunks (fewer when the leg holds fewer) as (chunk, score)."""
        index = corpus.index(self.method)
        depth = min(depth, len(index))
        if depth == 0:
            return []
        res = self._search(index, query, qvec, allow, depth)
        return [(int(h.id), h.score) for h in res[0]]

    def _search(self, index: Any, query: str, qvec: np.ndarray | None,
                allow: list[int] | None, depth: int) -> Any:
        raise NotImplementedError

    def native_leg(self, index: Any, queries: list[str],
                   vectors: np.ndarray | None) -> dict[str, Any]:
        """The query side of this leg for ``_core.execute`` (a batch of queries)."""
        raise NotImplementedError


@dataclass
class BM25Retriever(BaseRetriever):
    """BM25 over the corpus's analyzer tokens."""

    method: ClassVar[str] = "bm25"
    native: ClassVar[bool] = True

    def _search(self, index: Any, query: str, qvec: np.ndarray | None,
                allow: list[int] | None, depth: int) -> Any:
        return index.search(query, k=depth, filter=allow)

    def native_leg(self, index: Any, queries: list[str],
                   vectors: np.ndarray | None) -> dict[str, Any]:
        """The queries' term ids (BM25 scores them in the core)."""
        indptr, terms = index.encode_queries(queries)
        return {"indptr": indptr, "terms": terms}


@dataclass
class DenseRetriever(BaseRetriever):
    """Nearest chunk vectors of the query vector.

    Args:
        dims: Matryoshka funnel: walk the graph with the first `dims` dimensions, rescore
            with all.
        ef: search beam of the HNSW walk (None: the index's default).
    """

    dims: int | None = None
    ef: int | None = None

    method: ClassVar[str] = "dense"
    uses_encoder: ClassVar[bool] = True
    language_bound: ClassVar[bool] = True
    native: ClassVar[bool] = True

    @property
    def name(self) -> str:
        """The stage name in results: "dense", or "dense@128" with a funnel of 128 dims."""
        return self.method if self.dims is None else f"{self.method}@{self.dims}"

    def _search(self, index: Any, query: str, qvec: np.ndarray | None,
                allow: list[int] | None, depth: int) -> Any:
        if qvec is None:
            raise ValueError("the dense leg needs the query vector")
        return index.search(qvec, k=depth, filter=allow, dims=self.dims, ef=self.ef)

    def native_leg(self, index: Any, queries: list[str],
                   vectors: np.ndarray | None) -> dict[str, Any]:
        """The query vectors with the beam and the funnel's dims."""
        if vectors is None:
            raise ValueError("the dense leg needs the query vectors")
        return {"queries": vectors, "ef": index.ef_search if self.ef is None else self.ef,
                "dims": self.dims or 0}


@dataclass
class LateChunkRetriever(DenseRetriever):
    """Nearest late-chunking vectors (``Collection.create(..., late_chunking=True)``): chunk
    vectors pooled from their whole document's pass, searched with the query vector."""

    method: ClassVar[str] = "late"


@dataclass
class _LearnedSparse(BaseRetriever):
    """Dot product of learned term weights (an impact index that encodes its queries)."""

    native: ClassVar[bool] = True
    language_bound: ClassVar[bool] = True

    def _search(self, index: Any, query: str, qvec: np.ndarray | None,
                allow: list[int] | None, depth: int) -> Any:
        return index.search(query, k=depth, filter=allow)

    def native_leg(self, index: Any, queries: list[str],
                   vectors: np.ndarray | None) -> dict[str, Any]:
        """The queries' term weights (`index.encode_queries`: SPLADE's model, or BM42's words)."""
        indptr, terms, weights = pairs_csr(index.encode_queries(queries))
        return {"indptr": indptr, "terms": terms, "weights": weights}


@dataclass
class SpladeRetriever(_LearnedSparse):
    """SPLADE (``sparse="splade"``): the query encoded by the collection's SPLADE model."""

    method: ClassVar[str] = "splade"


@dataclass
class BM42Retriever(_LearnedSparse):
    """BM42 (``sparse="bm42"``): the query's words weighted by their idf."""

    method: ClassVar[str] = "bm42"


RETRIEVERS: dict[str, type[BaseRetriever]] = {
    cls.method: cls for cls in (BM25Retriever, DenseRetriever, SpladeRetriever, BM42Retriever,
                                LateChunkRetriever)
}


def Retriever(method: str, **options: Any) -> BaseRetriever:
    """A retriever by leg name: ``Retriever("bm25", depth=200)``,
    ``Retriever("dense", depth=100, dims=128)``."""
    cls = RETRIEVERS.get(method) if isinstance(method, str) else None
    if cls is None:
        raise ValueError(
            f"retriever must be one of {', '.join(sorted(RETRIEVERS))}, got {method!r}"
        )
    return cls(**options)
