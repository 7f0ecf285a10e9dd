"""Query augmentation: an LLM rewrites a question into simple sub-questions, each is
retrieved, and the rankings are fused (RRF) into one list of documents.

This module holds the parts that know no collection: the rewrite with its fallback
(`rewrite`), the legs of one augmented query (`Leg`) and their fusion into
`AugmentedResult` documents (`fuse_legs`). `fastrag.collection.mk` runs them over a
collection and its synthetic questions (``Collection.search(q, augment="mk")``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from fastrag._http import HttpClientError
from fastrag.search.corpus import Document
from fastrag.search.fusion import rrf
from fastrag.search.llm import ChatClient
from fastrag.search.pipeline import Result, StageScore
from fastrag.search.prompts import MAX_QUESTIONS, parse_questions, rewrite_messages

__all__ = ["AugmentedResult", "Leg", "Rewrite", "fuse_legs", "rewrite"]

#: RRF's rank offset for the legs of an augmented query
RRF_K = 60.0


@dataclass(repr=False)
class AugmentedResult(Result):
    """A `Result` of an augmented search (``augment="mk"``).

    Attributes:
        subquestions: the questions the LLM wrote for this query (the same list for every
            result of a query; empty when the search fell back to the plain query).
        found_by: the queries whose retrieval found this document: the original query and /
            or sub-questions, best rank first (with explain).
        matched_questions: synthetic questions of this document (written by ``fastrag
            prepare``) that one of the queries matched (with explain).
    """

    subquestions: list[str] = field(default_factory=list)
    found_by: list[str] = field(default_factory=list)
    matched_questions: list[str] = field(default_factory=list)


@dataclass
class Rewrite:
    """The sub-questions of one query, or why there are none.

    Attributes:
        questions: at most five sub-questions (none repeats the query).
        error: why the rewrite failed (unreachable, slow, garbage or no questions), or None.
        seconds: wall time of the LLM call.
    """

    questions: list[str]
    error: str | None = None
    seconds: float = 0.0


def rewrite(client: ChatClient, query: str, summary: str, language: str,
            max_questions: int = MAX_QUESTIONS) -> Rewrite:
    """Asks `client` to split `query` into simple questions, guided by `summary`.

    Never raises for the LLM's sake: an unreachable or slow server, an error status or an
    answer without questions gives a `Rewrite` with no questions and an `error`.
    """
    t0 = time.perf_counter()
    try:
        text = client.chat(rewrite_messages(query, summary, language))
    except HttpClientError as e:
        return Rewrite([], f"the LLM failed: {e}", time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    found = [q for q in parse_questions(text, max_questions) if q.strip() != query.strip()]
    if not found:
        shown = " ".join(text.split())[:80]
        return Rewrite([], f"the LLM's answer held no questions: {shown!r}", seconds)
    return Rewrite(found, None, seconds)


@dataclass
class Leg:
    """One ranking of documents for one query of an augmented search.

    Attributes:
        name: the leg's stage name in explain: ``"q0"`` (the original query), ``"q1"`` ...
            (sub-questions), with ``":synthetic"`` for hits on synthetic questions.
        query: the query it ran.
        ranking: (document id, score) best first, each document once.
        spans: the best chunk's span of each document (document legs).
        matched: the synthetic question that matched, per document (synthetic legs).
    """

    name: str
    query: str
    ranking: list[tuple[str, float]]
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    matched: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_results(cls, name: str, query: str, results: Iterable[Result]) -> Leg:
        """A leg of a plain search's results."""
        found = list(results)
        return cls(name, query, [(r.id, r.score) for r in found],
                   spans={r.id: r.span for r in found})

    @classmethod
    def of_questions(cls, name: str, query: str,
                     hits: Iterable[tuple[str, str, float]]) -> Leg:
        """A leg of synthetic-question hits ``(document id, question, score)``, best first:
        a document's best question stands for it, its other hits are dropped."""
        ranking: list[tuple[str, float]] = []
        matched: dict[str, str] = {}
        for doc, question, score in hits:
            if doc not in matched:
                matched[doc] = question
                ranking.append((doc, score))
        return cls(name, query, ranking, matched=matched)


def fuse_legs(
    legs: Sequence[Leg],
    k: int,
    texts_of: Callable[[list[str]], Mapping[str, Document]],
    *,
    subquestions: Sequence[str] = (),
    explain: bool = False,
    rrf_k: float = RRF_K,
) -> list[AugmentedResult]:
    """The k best documents of the legs fused with RRF (a document found by several queries
    rises); `texts_of` reads the documents (one that is gone is left out, the next one moves
    up). The span is the best chunk of the first leg (in leg order) that holds one; a
    document found only through a synthetic question has its first 300 characters as span.
    With `explain`, each result has every leg's score and rank, the fusion's, and which
    queries found it."""
    nonempty = [leg for leg in legs if leg.ranking]
    if not nonempty:
        return []
    fused = rrf([leg.ranking for leg in nonempty], k=rrf_k)
    docs: dict[str, Document] = {}
    for start in range(0, len(fused), k):  # the next ones stand in for deleted documents
        if sum(d in docs for d, _ in fused[:start]) >= k:
            break
        docs.update(texts_of([d for d, _ in fused[start:start + k]]))
    ranks = [{d: rank for rank, (d, _) in enumerate(leg.ranking, 1)} for leg in nonempty]
    scores = [dict(leg.ranking) for leg in nonempty]
    out: list[AugmentedResult] = []
    for rank, (d, score) in enumerate(fused, 1):
        doc = docs.get(d)
        if doc is None:  # deleted since prepare wrote its questions, or since the legs ran
            continue
        if len(out) == k:
            break
        span = next((leg.spans[d] for leg in nonempty if d in leg.spans),
                    (0, min(len(doc.text), 300)))
        result = AugmentedResult(id=d, score=float(score), text=doc.text,
                                 metadata=doc.metadata, span=span,
                                 subquestions=list(subquestions))
        if explain:
            found_at = sorted((r[d], leg.query) for leg, r in zip(nonempty, ranks, strict=True)
                              if d in r)
            result.found_by = list(dict.fromkeys(q for _, q in found_at))
            result.matched_questions = list(dict.fromkeys(
                leg.matched[d] for leg in nonempty if d in leg.matched))
            result.stages = {leg.name: StageScore(float(s[d]), r[d])
                             for leg, r, s in zip(nonempty, ranks, scores, strict=True)
                             if d in r}
            result.stages["fusion"] = StageScore(float(score), rank)
        out.append(result)
    return out
