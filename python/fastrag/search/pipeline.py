"""Multi-stage search over a collection: retrievers -> fusion -> rerank stages -> documents.

Every stage works on chunks; the last step groups chunks into documents (a document's score
is its best chunk's, or the sum) and returns the best chunk's span with it. Each result keeps
every stage's score and rank, so a caller can see why it is where it is (``explain``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from fastrag._core import IndexFormatError
from fastrag.index.tokens import TokenStore
from fastrag.search.fusion import FUSIONS, fuse
from fastrag.text.language import detect_language

if TYPE_CHECKING:
    from fastrag.collection import Collection

RETRIEVERS = ("bm25", "dense")


@dataclass
class StageScore:
    score: float
    rank: int  # 1-based


@dataclass
class Result:
    """One document in a result list.

    Attributes:
        id, text, metadata: the stored document.
        score: the final score (of the last stage).
        span: (start, end) characters of the best chunk in `text`.
        stages: {stage name: StageScore} of the best chunk in every stage it reached.
    """

    id: str
    score: float
    text: str
    metadata: dict[str, Any]
    span: tuple[int, int]
    stages: dict[str, StageScore] = field(default_factory=dict)

    def __repr__(self) -> str:
        passage = " ".join(self.passage.split())
        passage = passage if len(passage) <= 60 else passage[:57] + "..."
        return f"Result(id={self.id!r}, score={self.score:.4f}, passage={passage!r})"

    @property
    def passage(self) -> str:
        """The best chunk's text."""
        return self.text[self.span[0] : self.span[1]]


@dataclass
class Retriever:
    """A first-stage retriever over chunks.

    Args:
        method: "bm25" or "dense".
        depth: chunks it returns.
        weight: its weight in fusion; None lets the pipeline decide (see `Pipeline`).
        dims: dense only: Matryoshka funnel (walk the graph with the first `dims`
            dimensions, rescore with all).
        ef: dense only: search beam.
    """

    method: str
    depth: int = 100
    weight: float | None = None
    dims: int | None = None
    ef: int | None = None

    def __post_init__(self) -> None:
        if self.method not in RETRIEVERS:
            raise ValueError(
                f"retriever must be one of {', '.join(RETRIEVERS)}, got {self.method!r}"
            )
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(f"depth must be an int >= 1, got {self.depth!r}")
        if self.weight is not None and not (
            isinstance(self.weight, (int, float)) and math.isfinite(self.weight)
            and self.weight >= 0
        ):
            raise ValueError(f"weight must be a finite number >= 0 (or None), got {self.weight!r}")

    @property
    def name(self) -> str:
        return self.method if self.dims is None else f"{self.method}@{self.dims}"


class Reranker(Protocol):
    """Rescores candidate chunks: higher is better."""

    name: str

    def rescore(self, col: Collection, query: str, qvec: np.ndarray | None,
                chunks: list[int], passages: list[str]) -> np.ndarray: ...


@dataclass
class DenseRescore:
    """Full-dimension cosine of the query with each candidate's stored vector.

    Brings the dense signal to candidates only BM25 found, and undoes a funnel's rough
    prefix scores.
    """

    name: str = "dense-rescore"

    def rescore(self, col: Collection, query: str, qvec: np.ndarray | None,
                chunks: list[int], passages: list[str]) -> np.ndarray:
        from fastrag.collection import vectors_of

        if qvec is None:
            raise ValueError("dense rescoring needs a collection with an encoder")
        return vectors_of(col, chunks) @ qvec


@dataclass
class MaxSimRerank:
    """Late interaction (ColBERT-style MaxSim, as PyLate does) over the token vectors the
    collection stored (``Collection.create(..., token_vectors=True)``), scored in C++.

    The query's token vectors come from the collection's encoder (query prompt included),
    each normalised; a candidate scores the sum over query tokens of its best token match.
    """

    name: str = "maxsim"
    threads: int = 1

    def rescore(self, col: Collection, query: str, qvec: np.ndarray | None,
                chunks: list[int], passages: list[str]) -> np.ndarray:
        from fastrag.collection import token_vectors_of
        from fastrag.encoders.base import normalize

        encoder = col.encoder
        if encoder is None or not hasattr(encoder, "token_vectors"):
            raise ValueError("MaxSim reranking needs a collection with a local TextEncoder")
        q = encoder.token_vectors([query], kind="query")[0].vectors
        store = TokenStore.from_documents(token_vectors_of(col, chunks), dim=q.shape[1])
        return store.scores(normalize(np.array(q, dtype=np.float32)), threads=self.threads)


@dataclass
class CrossEncoderRerank:
    """A cross-encoder (`fastrag.CrossEncoder`) or a remote rerank API
    (`fastrag.rerank.RemoteReranker`): anything with ``score(query, passages)``."""

    model: Any
    name: str = "rerank"

    def rescore(self, col: Collection, query: str, qvec: np.ndarray | None,
                chunks: list[int], passages: list[str]) -> np.ndarray:
        return np.asarray(self.model.score(query, passages), dtype=np.float32)


@dataclass
class Pipeline:
    """Retrievers -> fusion -> rerank stages -> documents.

    Args:
        retrievers: first-stage retrievers (one or more).
        fusion: "rrf", "minmax", "zscore" or "dbsf" (see `fastrag.search.fusion`).
        fusion_options: e.g. {"k": 60} for RRF.
        rerankers: (reranker, depth) pairs: each rescores the best `depth` candidates of the
            stage before; candidates below keep their order, after the reranked ones.
        aggregate: "max" (a document scores as its best chunk) or "sum".
        adaptive: retrievers without a weight get one from language coverage: a dense leg
            whose encoder does not know the query's language (or most of the collection's)
            gets weight 0 and is not run, so that a weak leg can never pull the hybrid below
            its best leg; `DenseRescore` and `MaxSimRerank` stages are then skipped too.
    """

    retrievers: Sequence[Retriever]
    fusion: str = "rrf"
    fusion_options: Mapping[str, Any] = field(default_factory=dict)
    rerankers: Sequence[tuple[Reranker, int]] = ()
    aggregate: str = "max"
    adaptive: bool = True

    def __post_init__(self) -> None:
        if not self.retrievers:
            raise ValueError("a pipeline needs at least one retriever")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(sorted(FUSIONS))}")
        if self.aggregate not in ("max", "sum"):
            raise ValueError("aggregate must be 'max' or 'sum'")
        for i, stage in enumerate(self.rerankers):
            if not (isinstance(stage, tuple) and len(stage) == 2):
                raise ValueError(f"rerankers[{i}] must be a (reranker, depth) pair")
            depth = stage[1]
            if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
                raise ValueError(f"rerankers[{i}]: depth must be an int >= 1, got {depth!r}")

    def _encoder_weight(self, col: Collection, query: str) -> float:
        """The adaptive weight of encoder-based stages for this query (1 when not adaptive,
        or when the encoder is the only signal: a dense-only pipeline always runs)."""
        if not self.adaptive or all(r.method == "dense" for r in self.retrievers):
            return 1.0
        return dense_weight(col, query)

    def weights(self, col: Collection, query: str) -> list[float]:
        """Fusion weights for this query (see `adaptive`)."""
        adaptive = self._encoder_weight(col, query)
        return [
            float(r.weight) if r.weight is not None else adaptive if r.method == "dense" else 1.0
            for r in self.retrievers
        ]

    def search(
        self,
        col: Collection,
        query: str,
        *,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        explain: bool = False,
        timings: dict[str, float] | None = None,
    ) -> list[Result]:
        from fastrag.encoders.base import check_texts

        (query,) = check_texts([query], name="query")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        t0 = time.perf_counter()
        allow = None if filter is None else col.allowed_chunks(filter)
        if allow is not None and not allow:
            return []
        # a leg with weight 0 cannot change the fused order: it is not run at all (and the
        # query is not embedded when no other stage needs the vector)
        weights = self.weights(col, query)
        legs = [(r, w) for r, w in zip(self.retrievers, weights, strict=True) if w > 0]
        if not legs:
            raise ValueError("every retriever has weight 0")
        # stages that read the collection's encoder are skipped, like a dense leg, when
        # adaptive weighting finds that the encoder does not know the language
        skip_encoder = self._encoder_weight(col, query) == 0.0
        rerankers = [
            (rr, depth) for rr, depth in self.rerankers
            if not (skip_encoder and isinstance(rr, (DenseRescore, MaxSimRerank)))
        ]
        need_vec = any(r.method == "dense" for r, _ in legs) or any(
            isinstance(rr, DenseRescore) for rr, _ in rerankers
        )
        qvec = None
        if need_vec:
            if col.encoder is None or col.dense is None:
                raise ValueError("this collection has no encoder: use method='bm25'")
            qvec = col.encoder.encode_queries([query])[0]
        t1 = time.perf_counter()
        stages: dict[int, dict[str, StageScore]] = {}
        rankings = []
        for r, _ in legs:
            ranking = self._retrieve(col, r, query, qvec, allow, k)
            for rank, (c, s) in enumerate(ranking, 1):
                if explain:
                    stages.setdefault(c, {})[r.name] = StageScore(s, rank)
            rankings.append(ranking)
        if len(rankings) == 1:
            fused = rankings[0]
        else:
            fused = fuse(self.fusion, rankings, weights=[w for _, w in legs],
                         **dict(self.fusion_options))
            if explain:
                for rank, (c, s) in enumerate(fused, 1):
                    stages[c]["fusion"] = StageScore(float(s), rank)
        chunks = col.chunks_of(c for c, _ in fused)
        order = [(c, float(s)) for c, s in fused if c in chunks]
        # texts are read only for what a stage or the answer needs, not for every candidate
        docs: dict[str, Any] = {}
        for reranker, depth in rerankers:
            head, tail = order[:depth], order[depth:]
            if not head:
                break
            ids = [c for c, _ in head]
            docs.update(col.texts_of(chunks[c].doc for c in ids if chunks[c].doc not in docs))
            passages = [docs[chunks[c].doc].text[chunks[c].start : chunks[c].end] for c in ids]
            scores = reranker.rescore(col, query, qvec, ids, passages)
            head = sorted(zip(ids, (float(s) for s in scores), strict=True),
                          key=lambda cs: -cs[1])
            if explain:
                for rank, (c, s) in enumerate(head, 1):
                    stages[c][reranker.name] = StageScore(s, rank)
            # candidates below the reranked depth follow, keeping their order
            floor = min(s for _, s in head)
            order = head + [(c, floor - 1.0 - i) for i, (c, _) in enumerate(tail)]
        t2 = time.perf_counter()
        results = self._documents(col, order, chunks, docs, stages, k, explain)
        if timings is not None:
            timings.update(encode=t1 - t0, search=t2 - t1)
        return results

    def _retrieve(self, col: Collection, r: Retriever, query: str,
                  qvec: np.ndarray | None, allow: list[int] | None,
                  k: int) -> list[tuple[int, float]]:
        index = col.bm25 if r.method == "bm25" else col.dense
        assert index is not None
        # never fewer chunks than the documents asked for, never more than the index holds
        depth = min(max(r.depth, k), len(index))
        if depth == 0:
            return []
        if r.method == "bm25":
            res = index.search(query, k=depth, filter=allow)
        else:
            assert qvec is not None
            res = index.search(qvec, k=depth, filter=allow, dims=r.dims, ef=r.ef)
        return [(int(h.id), h.score) for h in res[0]]

    def _documents(self, col: Collection, order: list[tuple[int, float]],
                   chunks: Mapping[int, Any], docs: dict[str, Any],
                   stages: dict[int, dict[str, StageScore]], k: int,
                   explain: bool) -> list[Result]:
        best: dict[str, tuple[int, float]] = {}
        total: dict[str, float] = {}
        for c, s in order:
            d = chunks[c].doc
            total[d] = total.get(d, 0.0) + s
            if d not in best:
                best[d] = (c, s)
        scored = [(d, total[d] if self.aggregate == "sum" else cs[1], cs[0])
                  for d, cs in best.items()]
        scored.sort(key=lambda x: -x[1])  # stable: ties keep the stage order
        docs.update(col.texts_of(d for d, _, _ in scored[:k] if d not in docs))
        out = []
        for d, s, c in scored[:k]:
            doc = docs.get(d)
            if doc is None:
                raise IndexFormatError(
                    f"{col.path}: chunk {c} belongs to document {d!r}, which is missing: the "
                    "collection is damaged; rebuild it"
                )
            out.append(Result(
                id=d, score=s, text=doc.text, metadata=doc.metadata,
                span=(chunks[c].start, chunks[c].end),
                stages=dict(stages.get(c, {})) if explain else {},
            ))
        return out


def dense_weight(col: Collection, query: str) -> float:
    """1 when the encoder covers the query's language and most of the collection's, else 0.

    An encoder's languages come from the model registry ("multi" covers all). Measured on
    jsquad-valid: an English encoder on Japanese scores 0.27 nDCG@10 against BM25's 0.94, and
    equal-weight fusion drops to 0.52; giving that leg no weight keeps BM25's 0.94.
    """
    info = col.settings.get("encoder") or {}
    langs = set(info.get("languages") or ["en"])
    if "multi" in langs:
        return 1.0
    if detect_language(query) not in langs:
        return 0.0
    shares = col.languages()
    covered = sum(v for lang, v in shares.items() if lang in langs) if shares else 1.0
    return 1.0 if covered >= 0.5 else 0.0


def default_pipeline(col: Collection, method: str) -> Pipeline:
    """The pipelines behind the method names: "bm25", "dense", "hybrid"."""
    # one leg: no fusion to feed, so only a few chunks beyond k (documents may repeat)
    if method == "bm25":
        return Pipeline([Retriever("bm25", depth=20)])
    if method == "dense":
        return Pipeline([Retriever("dense", depth=20)])
    if method == "hybrid":
        if col.dense is None:
            return Pipeline([Retriever("bm25")])
        return Pipeline([Retriever("bm25"), Retriever("dense")], fusion="rrf",
                        fusion_options={"k": 60})
    raise ValueError(f"unknown method {method!r}; use bm25, dense, hybrid or a Pipeline")
