"""Rerank stages: each rescores the best candidates (chunks) of the stage before it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from fastrag.encoders.base import normalize
from fastrag.index.tokens import TokenStore
from fastrag.search.corpus import Corpus

__all__ = ["Candidate", "CrossEncoderRerank", "DenseRescore", "MaxSimRerank", "Reranker",
           "rescored"]


class Candidate(NamedTuple):
    """A candidate chunk with the score of the last stage that scored it.

    ``tier`` counts the stages that scored it (0: the first stage, a leg or the fusion; i:
    the i-th rerank stage); a higher tier always ranks first, since scores of different
    stages are on different scales.
    """

    chunk: int
    score: float
    stage: str
    tier: int


def rescored(order: Sequence[Candidate], depth: int, stage: str, tier: int,
             scores: Sequence[float] | np.ndarray) -> list[Candidate]:
    """The first `depth` candidates of `order` with the `scores` a rerank stage gave them,
    best first; then the candidates below the depth, unchanged.

    Those keep the real score of the stage that last scored them (and its name in
    ``stage``): no stage scored them on this one's scale, so none is made up, and their
    lower tier ranks them after the rescored ones, in their order. A stage that returns
    another number of scores, or a NaN, raises ValueError naming it.
    """
    head = order[:depth]
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(values) != len(head):
        raise ValueError(f"rerank stage {stage!r} returned {len(values)} scores for "
                         f"{len(head)} candidates")
    bad = [i for i, v in enumerate(values.tolist()) if math.isnan(v)]
    if bad:
        raise ValueError(f"rerank stage {stage!r} returned NaN for {len(bad)} of "
                         f"{len(head)} candidates (the first at position {bad[0]})")
    ranked = sorted((Candidate(c.chunk, float(v), stage, tier)
                     for c, v in zip(head, values.tolist(), strict=True)),
                    key=lambda c: -c.score)
    return ranked + list(order[depth:])


class Reranker(Protocol):
    """Rescores candidate chunks: higher is better.

    Optional class attributes: ``uses_encoder`` (the stage reads the corpus's encoder, so it
    is skipped with the dense leg when the encoder does not know the query's language) and
    ``needs_vector`` (the stage reads the query vector).
    """

    name: str

    def rescore(self, corpus: Corpus, query: str, qvec: np.ndarray | None,
                chunks: list[int], passages: list[str]) -> np.ndarray:
        """Scores of the candidate `chunks` (whose texts are `passages`) for `query`, one
        float per chunk in their order; `qvec` is the query vector (None when the pipeline
        has none)."""
        ...


@dataclass
class DenseRescore:
    """Full-dimension cosine of the query with each candidate's stored vector.

    Brings the dense signal to candidates only BM25 found, and undoes a funnel's rough
    prefix scores.
    """

    name: str = "dense-rescore"
    uses_encoder = True
    needs_vector = True

    def rescore(self, corpus: Corpus, query: str, qvec: np.ndarray | None,
                chunks: list[int], passages: list[str]) -> np.ndarray:
        """Cosines of `qvec` with the chunks' stored vectors."""
        if qvec is None:
            raise ValueError("dense rescoring needs a collection with an encoder")
        cosines: np.ndarray = corpus.vectors_of(chunks) @ qvec
        return cosines


@dataclass
class MaxSimRerank:
    """Late interaction (ColBERT-style MaxSim, as PyLate does) over the token vectors the
    collection stored (``Collection.create(..., token_vectors=True)``), scored in C++.

    The query's token vectors come from the collection's encoder (query prompt included),
    each normalised; a candidate scores the sum over query tokens of its best token match.
    """

    name: str = "maxsim"
    threads: int = 1
    uses_encoder = True
    needs_vector = False

    def rescore(self, corpus: Corpus, query: str, qvec: np.ndarray | None,
                chunks: list[int], passages: list[str]) -> np.ndarray:
        """MaxSim of the query's token vectors with each chunk's stored token vectors."""
        encoder = corpus.encoder
        if encoder is None or not hasattr(encoder, "token_vectors"):
            raise ValueError("MaxSim reranking needs a collection with a local TextEncoder")
        q = encoder.token_vectors([query], kind="query")[0].vectors
        store = TokenStore.from_documents(corpus.token_vectors_of(chunks), dim=q.shape[1])
        return store.scores(normalize(np.array(q, dtype=np.float32)), threads=self.threads)


@dataclass
class CrossEncoderRerank:
    """A cross-encoder (`fastrag.CrossEncoder`) or a remote rerank API
    (`fastrag.rerank.RemoteReranker`): anything with ``score(query, passages)``."""

    model: Any
    name: str = "rerank"
    uses_encoder = False
    needs_vector = False

    def rescore(self, corpus: Corpus, query: str, qvec: np.ndarray | None,
                chunks: list[int], passages: list[str]) -> np.ndarray:
        """The model's scores of (query, passage) pairs."""
        return np.asarray(self.model.score(query, passages), dtype=np.float32)
