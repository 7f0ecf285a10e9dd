"""Multi-stage search over a corpus: retrievers -> fusion -> rerank stages -> documents.

Every stage works on chunks; the last step groups chunks into documents (a document's score
is its best chunk's, or the sum) and returns the best chunk's span with it. Each result keeps
every stage's score and rank, so a caller can see why it is where it is (``explain``).
A pipeline reads its corpus only through the `Corpus` protocol.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np

from fastrag._core import IndexFormatError
from fastrag.encoders.base import Encoder, check_text, check_texts
from fastrag.encoders.onnx import caller_level
from fastrag.search import native
from fastrag.search.corpus import ChunkHit, Corpus, Document
from fastrag.search.fusion import FUSIONS, check_options, fuse
from fastrag.search.retrievers import RETRIEVERS, BaseRetriever, Retriever
from fastrag.search.stages import Candidate, Reranker, rescored
from fastrag.text.language import detect_language

__all__ = ["LazyResult", "Pipeline", "Result", "StageScore", "default_pipeline", "dense_weight",
           "fused_pipeline"]


def _encoder_of(corpus: Corpus) -> Encoder:
    """The corpus's encoder, for stages that embed the query."""
    if corpus.encoder is None:
        raise ValueError("this collection has no encoder: use method='bm25'")
    return corpus.encoder


@dataclass
class StageScore:
    """A document's score and 1-based rank in one stage (a leg, the fusion or a reranker)."""

    score: float
    rank: int  # 1-based


@dataclass(slots=True)
class Result:
    """One document in a result list.

    Attributes:
        id: the document's id.
        text: the document's whole text.
        metadata: the document's metadata.
        score: the final score (of the last stage).
        span: (start, end) characters of the best chunk in `text`.
        stages: {stage name: StageScore} of the best chunk in every stage it reached.
        skipped: with explain, the legs that adaptive weighting left out for this query,
            and why ({"dense": "its model knows en, not the query's language (ja)"}).
        scored_by: with rerank stages, the stage whose score `score` is: the last reranker
            for documents it reached, or, for documents below its depth, the earlier stage
            that last scored them ("fusion", a leg or another reranker). Those keep that
            stage's real score (another scale) and rank after the reranked ones. None
            without rerank stages (the score is then the fusion's, or the only leg's).
    """

    id: str
    score: float
    text: str
    metadata: dict[str, Any]
    span: tuple[int, int]
    stages: dict[str, StageScore] = field(default_factory=dict)
    scored_by: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        passage = " ".join(self.passage.split())
        passage = passage if len(passage) <= 60 else passage[:57] + "..."
        return f"Result(id={self.id!r}, score={self.score:.4f}, passage={passage!r})"

    @property
    def passage(self) -> str:
        """The best chunk's text."""
        return self.text[self.span[0] : self.span[1]]


class LazyResult(Result):
    """A `Result` whose `text` and `metadata` are read from the collection's document file
    when first used (then kept): a search reads no text that its caller does not use. The
    reading may raise IndexFormatError for a damaged record, as a search would. Equal to a
    `Result` of the same values; pickled, copied or compared with its text read."""

    __slots__ = ("_key", "_read")
    _key: str
    _read: Callable[[str], Document]

    @classmethod
    def of(cls, doc_id: str, score: float, read: Callable[[str], Document],
           span: tuple[int, int], stages: dict[str, StageScore] | None = None) -> LazyResult:
        """A result of document `doc_id`, read by ``read(doc_id)`` when first used (one
        function for many results: no object per result but the result)."""
        self = cls.__new__(cls)
        self.id, self.score, self.span, self._key, self._read = doc_id, score, span, doc_id, read
        if stages:  # else an empty dict when first used, as `skipped`; scored_by None
            self.stages = stages
        return self

    @classmethod
    def many(cls, rows: Iterable[tuple[str, float, tuple[int, int]]],
             read: Callable[[str], Document]) -> list[Result]:
        """`of` for (doc_id, score, span) rows sharing one `read`, in one loop (the query
        path's results: a call per result cost more than the result)."""
        out: list[Result] = []
        new = object.__new__
        for doc_id, score, span in rows:
            self = new(cls)
            self.id, self.score, self.span, self._key, self._read = (doc_id, score, span,
                                                                     doc_id, read)
            out.append(self)
        return out

    def __getattr__(self, name: str) -> Any:
        # reached only while the attribute is unset: text and metadata before their first
        # use, stages and skipped when empty
        if name in ("text", "metadata"):
            doc = self._read(self._key)
            self.text, self.metadata = doc.text, doc.metadata
            return getattr(self, name)
        if name in ("stages", "skipped"):
            empty: dict[str, Any] = {}
            setattr(self, name, empty)
            return empty
        if name == "scored_by":
            return None
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) not in (Result, LazyResult):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name)
                   for f in dataclasses.fields(Result))

    __hash__ = None  # type: ignore[assignment]  # as a dataclass's with eq

    def __reduce__(self) -> tuple[type[Result], tuple[Any, ...]]:
        # pickled and copied as the plain Result it stands for
        return Result, tuple(getattr(self, f.name) for f in dataclasses.fields(Result))


@dataclass
class Pipeline:
    """Retrievers -> fusion -> rerank stages -> documents.

    Args:
        retrievers: first-stage retrievers (one or more).
        fusion: "rrf", "minmax", "zscore" or "dbsf" (see `fastrag.search.fusion`).
        fusion_options: {"k": 60} (RRF's rank offset, a number > 0) and / or {"weights":
            [...]} (one number >= 0 per retriever, as `Retriever(weight=...)` gives one each:
            use one or the other; a weight of 0 leaves that leg out). The legs' depths are
            set on the retrievers. Checked here: an unknown option or a bad value is a
            ValueError.
        rerankers: (reranker, depth) pairs: each rescores the best `depth` candidates of the
            stage before; candidates below keep their order, after the reranked ones.
        aggregate: "max" (a document scores as its best chunk) or "sum".
        adaptive: retrievers without a weight get one from language coverage: a dense leg
            whose encoder does not know the query's language (or most of the collection's)
            gets weight 0 and is not run, so that a weak leg can never pull the hybrid below
            its best leg; `DenseRescore` and `MaxSimRerank` stages are then skipped too.
    """

    retrievers: Sequence[BaseRetriever]
    fusion: str = "rrf"
    fusion_options: Mapping[str, Any] = field(default_factory=dict)
    rerankers: Sequence[tuple[Reranker, int]] = ()
    aggregate: str = "max"
    adaptive: bool = True
    _warned: set[str] = field(default_factory=set, init=False, repr=False, compare=False)
    # what a single query needs that does not depend on it (see `_one`), made once
    _fixed: tuple[float, ...] | None = field(default=None, init=False, repr=False,
                                             compare=False)
    _legs: dict[tuple[float, ...], native.OneQuery | None] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.retrievers:
            raise ValueError("a pipeline needs at least one retriever")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(sorted(FUSIONS))}")
        self.fusion_options = check_options(self.fusion, self.fusion_options,
                                            n_legs=len(self.retrievers),
                                            allowed=frozenset({"k", "weights"}))
        if "weights" in self.fusion_options and any(
                r.weight is not None for r in self.retrievers):
            raise ValueError("weights are given both in fusion_options and on retrievers: "
                             "use one or the other")
        if self.aggregate not in ("max", "sum"):
            raise ValueError("aggregate must be 'max' or 'sum'")
        for i, stage in enumerate(self.rerankers):
            if not (isinstance(stage, tuple) and len(stage) == 2):
                raise ValueError(f"rerankers[{i}] must be a (reranker, depth) pair")
            depth = stage[1]
            if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
                raise ValueError(f"rerankers[{i}]: depth must be an int >= 1, got {depth!r}")
        self._fixed = self._fixed_weights()

    def _encoder_weight(self, corpus: Corpus, query: str) -> float:
        """The adaptive weight of encoder-based stages for this query (1 when not adaptive,
        or when models are the only signal: a dense-only pipeline always runs)."""
        if not self.adaptive or all(r.language_bound for r in self.retrievers) or not (
            any(r.uses_encoder for r in self.retrievers)
            or any(getattr(rr, "uses_encoder", False) for rr, _ in self.rerankers)
        ):
            return 1.0
        return dense_weight(corpus, query)

    def weights(self, corpus: Corpus, query: str) -> list[float]:
        """Fusion weights for this query (see `adaptive`): a leg of a model that does not
        know the query's language (or most of the corpus's) gets 0."""
        return self._plan(corpus, query)[0]

    def _fixed_weights(self) -> tuple[float, ...] | None:
        """The weights of every query when no leg's depends on the query's language (all
        given, or not adaptive, or only language-bound legs); None otherwise."""
        given = self.fusion_options.get("weights") or [r.weight for r in self.retrievers]
        every = not self.adaptive or all(r.language_bound for r in self.retrievers)
        if every or all(w is not None or not r.language_bound
                        for r, w in zip(self.retrievers, given, strict=True)):
            return tuple(1.0 if w is None else float(w) for w in given)
        return None

    def _plan(self, corpus: Corpus, query: str) -> tuple[list[float], dict[str, str]]:
        """(weights, {leg left out by adaptive weighting: why}) for this query."""
        every = not self.adaptive or all(r.language_bound for r in self.retrievers)
        given = self.fusion_options.get("weights") or [r.weight for r in self.retrievers]
        weights, skipped = [], {}
        for r, w in zip(self.retrievers, given, strict=True):
            if w is not None or every or not r.language_bound:
                weights.append(1.0 if w is None else float(w))
                continue
            gap = language_gap(corpus, query, corpus.leg_languages(r.method))
            weights.append(0.0 if gap else 1.0)
            if gap:
                skipped[r.name] = gap
        return weights, skipped

    def search(
        self,
        corpus: Corpus,
        query: str,
        *,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        explain: bool = False,
        vector: np.ndarray | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[Result]:
        """The k best documents for `query` (fewer only when fewer match). `vector` is the
        query's embedding when the caller has it (the encoder is then not run)."""
        query = check_text(query, name="query")
        _check_k(k)
        vectors = None if vector is None else _query_rows(
            np.asarray(vector, dtype=np.float32)[None, :], 1)
        t0 = time.perf_counter()
        if filter is None and not explain and not self.rerankers:
            one = self._one(corpus, query, vectors, k, timings, t0)
            if one is not None:
                return one
        return self._batch(corpus, [query], k, filter, explain, vectors, 1, timings, t0)[0]

    def search_batch(
        self,
        corpus: Corpus,
        queries: Sequence[str],
        *,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        explain: bool = False,
        vectors: np.ndarray | None = None,
        threads: int = 0,
        timings: dict[str, float] | None = None,
    ) -> list[list[Result]]:
        """`search` for a batch of queries: the encoder runs once on the batch and, without
        rerank stages, the legs, fusion and aggregation of every query run in one native
        call across `threads` cores (0 = all). `vectors` (n, dim): the queries' embeddings."""
        queries = check_texts(list(queries), name="queries")
        _check_k(k)
        if vectors is not None:
            vectors = _query_rows(vectors, len(queries))
        t0 = time.perf_counter()
        if len(queries) == 1 and filter is None and not explain and not self.rerankers:
            one = self._one(corpus, queries[0], vectors, k, timings, t0)
            if one is not None:
                return [one]
        return self._batch(corpus, queries, k, filter, explain, vectors, threads, timings, t0)

    def _batch(self, corpus: Corpus, queries: list[str], k: int,
               filter: Mapping[str, Any] | None, explain: bool, vectors: np.ndarray | None,
               threads: int, timings: dict[str, float] | None,
               t0: float) -> list[list[Result]]:
        """`search_batch` after its checks and the single-query path (`_one`): queries
        grouped by their legs' weights, each group in one native call, or stage by stage."""
        out: list[list[Result]] = [[] for _ in queries]
        allow = None if filter is None else corpus.allowed_chunks(filter)
        if allow is not None and not allow:
            return out
        # queries whose legs get the same weights are run together (the adaptive weight of
        # the dense leg depends on each query's language)
        groups: dict[tuple[float, ...], list[int]] = {}
        skipped: dict[int, dict[str, str]] = {}
        fixed = self._fixed_weights()
        if fixed is not None:  # no leg's weight depends on the query
            groups[fixed] = list(range(len(queries)))
        else:
            for i, q in enumerate(queries):
                planned, left_out = self._plan(corpus, q)
                groups.setdefault(tuple(planned), []).append(i)
                if left_out:
                    skipped[i] = left_out
        whole = len(groups) == 1  # one group of every query: no need to pick its members
        encode = search = 0.0
        for weights, members in groups.items():
            # a leg with weight 0 cannot change the fused order: it is not run at all (and
            # the query is not embedded when no other stage needs the vector)
            legs = [(r, w) for r, w in zip(self.retrievers, weights, strict=True) if w > 0]
            if not legs:
                raise ValueError("every retriever has weight 0")
            # stages that read the corpus's encoder are skipped, like a dense leg, when
            # adaptive weighting finds that the encoder does not know the language
            skip_encoder = bool(self.rerankers) and self._encoder_weight(
                corpus, queries[members[0]]) == 0.0
            rerankers = [(rr, depth) for rr, depth in self.rerankers
                         if not (skip_encoder and getattr(rr, "uses_encoder", False))]
            texts = queries if whole else [queries[i] for i in members]
            qvecs = None
            if any(r.uses_encoder for r, _ in legs) or any(
                getattr(rr, "needs_vector", False) for rr, _ in rerankers
            ):
                encoder = _encoder_of(corpus)
                t1 = time.perf_counter()
                qvecs = ((vectors if whole else vectors[members]) if vectors is not None
                         else encoder.encode_queries(texts))
                encode += time.perf_counter() - t1
            t1 = time.perf_counter()
            # a corpus may say it has no native form (a sharded corpus: its legs fan out)
            native_ok = getattr(corpus, "native", True) and native.supported(
                self.fusion, self.fusion_options, legs)
            if native_ok and not rerankers:
                found = self._native(corpus, legs, texts, qvecs, allow, k, explain, threads)
            elif native_ok and not explain:
                found = self._native_rerank(corpus, legs, rerankers, texts, qvecs, allow, k,
                                            threads)
            else:
                found = [
                    self._python(corpus, legs, rerankers, q,
                                 None if qvecs is None else qvecs[j], allow, k, explain)
                    for j, q in enumerate(texts)
                ]
            search += time.perf_counter() - t1
            for i, results in zip(members, found, strict=True):
                out[i] = results
        if skipped:
            self._after_skips(corpus, queries, vectors, filter, k, explain, skipped, out)
        if timings is not None:
            timings.update(encode=encode, search=search, total=time.perf_counter() - t0)
        return out

    def _one(self, corpus: Corpus, query: str, vectors: np.ndarray | None, k: int,
             timings: dict[str, float] | None, t0: float) -> list[Result] | None:
        """The common case, one query without a filter, explain or rerank stages, without
        the batch's grouping: the weights and the legs to run are worked out once per
        pipeline (per query only for adaptive weighting). None when the query needs the
        general path: a leg left out by adaptive weighting (warned about and explained
        there), or legs or a fusion that the executor does not run."""
        weights = self._fixed
        if weights is None:
            planned, skipped = self._plan(corpus, query)
            if skipped:
                return None
            weights = tuple(planned)
        if weights not in self._legs:
            run = [(r, w) for r, w in zip(self.retrievers, weights, strict=True) if w > 0]
            self._legs[weights] = (native.OneQuery(
                run, fusion=self.fusion, fusion_options=self.fusion_options,
                aggregate=self.aggregate)
                if run and native.supported(self.fusion, self.fusion_options, run) else None)
        plan = self._legs[weights]
        if plan is None or not getattr(corpus, "native", True):
            return None
        encode = 0.0
        if vectors is None and plan.uses_encoder:
            encoder = _encoder_of(corpus)
            t1 = time.perf_counter()
            vectors = encoder.encode_queries([query])
            encode = time.perf_counter() - t1
        t1 = time.perf_counter()
        # a corpus that reads its documents later (no changes pending): the executor hands
        # back (id, score, span) rows, made into results here in one expression
        reader = getattr(corpus, "reader", None)
        read = None if reader is None else reader()
        if read is None:
            (found,) = self._native(corpus, plan.legs, [query], vectors, None, k, False, 1)
        else:
            found = LazyResult.many(plan.run(corpus, query, vectors, k), read)
        if timings is not None:
            t2 = time.perf_counter()
            timings.update(encode=encode, search=t2 - t1, total=t2 - t0)
        return found

    def _after_skips(self, corpus: Corpus, queries: list[str], vectors: np.ndarray | None,
                     filter: Mapping[str, Any] | None, k: int, explain: bool,
                     skipped: dict[int, dict[str, str]], out: list[list[Result]]) -> None:
        """Legs that adaptive weighting left out: said once (a warning per pipeline and
        leg), in explain (`Result.skipped`), and run after all for a query that the other
        legs could not answer at all."""
        for i, left_out in skipped.items():
            for leg, why in left_out.items():
                if leg not in self._warned:
                    self._warned.add(leg)
                    warnings.warn(
                        f"the {leg} leg was left out of this hybrid search: {why} (said once "
                        "per pipeline; Result.skipped with explain=True; give the retriever a "
                        "weight to always run it)", UserWarning, stacklevel=caller_level())
            if not out[i]:  # nothing found without those legs: run every leg
                full = dataclasses.replace(self, adaptive=False)
                out[i] = full.search_batch(
                    corpus, [queries[i]], k=k, filter=filter, explain=explain,
                    vectors=None if vectors is None else vectors[i : i + 1], threads=1)[0]
            elif explain:
                for result in out[i]:
                    result.skipped = dict(left_out)

    def _native(self, corpus: Corpus, legs: list[tuple[BaseRetriever, float]],
                queries: list[str], vectors: np.ndarray | None, allow: list[int] | None,
                k: int, explain: bool, threads: int) -> list[list[Result]]:
        """Every leg, the fusion and the aggregation in one native call; then the texts of
        the hits."""
        got = native.run(corpus, legs, queries, vectors, allow, k=k, fusion=self.fusion,
                         fusion_options=self.fusion_options, aggregate=self.aggregate,
                         explain=explain, threads=threads)
        table = got["table"]
        doc_ids = table.doc_ids
        names: list[str] = []
        if explain:
            names = [r.name for r, _ in legs]
            names.append("fusion" if len(legs) > 1 else names[0])
            explain_ranks, explain_scores = got["explain_ranks"], got["explain_scores"]
        # the executor returns documents of chunks it found in the table (the spans are read
        # from its arrays); -1 pads rows with fewer than k documents, so a row's hits are a
        # prefix of it. Plain lists from here: a few Python objects per hit, no numpy calls
        # per hit.
        ordinal_rows, score_rows = got["ids"].tolist(), got["scores"].tolist()
        # every best chunk's span in one gather (padding -1 reads the last chunk, unused; an
        # empty table has no hits to read spans for)
        chunks = got["chunks"]
        start_rows, end_rows = ((table.chunk_start[chunks].tolist(),
                                 table.chunk_end[chunks].tolist())
                                if len(table.chunk_start) else (chunks.tolist(),) * 2)
        # a corpus that can read its documents later gives results that read their text when
        # it is first used (a caller that needs only ids, or the first few texts, pays for no
        # more); the query path makes each of them in one expression
        reader = getattr(corpus, "reader", None)
        read = None if reader is None or explain else reader()
        if read is not None:
            of = LazyResult.of
            return [[of(doc_ids[d], s, read, (a, b)) for d, s, a, b in
                     zip(ordinals, scores, starts, ends, strict=True) if d >= 0]
                    for ordinals, scores, starts, ends in
                    zip(ordinal_rows, score_rows, start_rows, end_rows, strict=True)]
        id_rows = [[doc_ids[d] for d in row if d >= 0] for row in ordinal_rows]
        wanted = [d for row in id_rows for d in row]
        readers_of = getattr(corpus, "readers_of", None)
        # documents, or functions that read them (results that read when first used)
        docs: Mapping[str, Any] = (corpus.texts_of(wanted) if readers_of is None
                                   else readers_of(wanted))
        out: list[list[Result]] = []
        for q, ids in enumerate(id_rows):
            results = []
            for j, doc_id in enumerate(ids):
                doc = docs.get(doc_id)
                if doc is None:
                    self._missing_doc(doc_id, int(chunks[q, j]))
                stages: dict[str, StageScore] = {}
                if explain:
                    stages = {name: StageScore(value, rank) for name, value, rank in
                              zip(names, explain_scores[q, j].tolist(),
                                  explain_ranks[q, j].tolist(), strict=True) if rank > 0}
                span = (start_rows[q][j], end_rows[q][j])
                results.append(
                    Result(doc_id, score_rows[q][j], doc.text, doc.metadata, span, stages)
                    if readers_of is None else LazyResult.of(doc_id, score_rows[q][j], doc,
                                                             span, stages))
            out.append(results)
        return out

    @staticmethod
    def _missing_doc(doc: str, chunk: int) -> NoReturn:
        raise IndexFormatError(f"chunk {chunk} belongs to document {doc!r}, which is missing: "
                               "the collection is damaged; rebuild it")

    def _python(self, corpus: Corpus, legs: list[tuple[BaseRetriever, float]],
                rerankers: list[tuple[Reranker, int]], query: str, qvec: np.ndarray | None,
                allow: list[int] | None, k: int, explain: bool) -> list[Result]:
        """One query stage by stage in Python (rerank stages, fusion options the executor
        does not have)."""
        stages: dict[int, dict[str, StageScore]] = {}
        fused, chunks = self._retrieve(corpus, legs, query, qvec, allow, k, stages, explain)
        first = "fusion" if len(legs) > 1 else legs[0][0].name
        return self._rerank(corpus, rerankers, query, qvec, fused, chunks, first, stages, k,
                            explain)

    def _native_rerank(self, corpus: Corpus, legs: list[tuple[BaseRetriever, float]],
                       rerankers: list[tuple[Reranker, int]], queries: list[str],
                       vectors: np.ndarray | None, allow: list[int] | None, k: int,
                       threads: int) -> list[list[Result]]:
        """Rerank stages over the executor's fused chunks: the legs and the fusion in one
        native call (the fused list as `_retrieve` makes it: the same order, chunks of unknown
        documents left out), then each query's stages in Python. A query whose legs the
        executor deepened past the fused chunks it wrote runs in Python."""
        width = sum(max(r.depth, k) for r, _ in legs)
        got = native.run(corpus, legs, queries, vectors, allow, k=k, fusion=self.fusion,
                         fusion_options=self.fusion_options, aggregate=self.aggregate,
                         explain=False, threads=threads, fused=width)
        first = "fusion" if len(legs) > 1 else legs[0][0].name
        chunk_rows, score_rows = got["fused_chunks"].tolist(), got["fused_scores"].tolist()
        out = []
        for q, query in enumerate(queries):
            qvec = None if vectors is None else vectors[q]
            fused = [(c, s) for c, s in zip(chunk_rows[q], score_rows[q], strict=True) if c >= 0]
            if len(fused) == width and int(got["depths"][q].sum()) > width:
                out.append(self._python(corpus, legs, rerankers, query, qvec, allow, k, False))
                continue
            chunks = corpus.chunks_of(c for c, _ in fused)
            out.append(self._rerank(corpus, rerankers, query, qvec, fused, chunks, first, {},
                                    k, False))
        return out

    def _rerank(self, corpus: Corpus, rerankers: list[tuple[Reranker, int]], query: str,
                qvec: np.ndarray | None, fused: list[tuple[int, float]],
                chunks: Mapping[int, ChunkHit], first: str,
                stages: dict[int, dict[str, StageScore]], k: int,
                explain: bool) -> list[Result]:
        """The rerank stages over fused chunks (`first` names the stage that scored them),
        then the documents."""
        order = [Candidate(c, float(s), first, 0) for c, s in fused if c in chunks]
        # texts are read only for what a stage or the answer needs, not for every candidate
        docs: dict[str, Document] = {}
        for tier, (reranker, depth) in enumerate(rerankers, 1):
            ids = [c.chunk for c in order[:depth]]
            if not ids:
                break
            docs.update(corpus.texts_of(chunks[c].doc for c in ids if chunks[c].doc not in docs))
            passages = [self._doc(docs, chunks[c]).text[chunks[c].start : chunks[c].end]
                        for c in ids]
            scores = reranker.rescore(corpus, query, qvec, ids, passages)
            # candidates below the depth follow with their own (real) scores
            order = rescored(order, depth, reranker.name, tier, scores)
            if explain:
                for rank, c in enumerate(order[: len(ids)], 1):
                    stages.setdefault(c.chunk, {})[reranker.name] = StageScore(c.score, rank)
        return self._documents(corpus, order, chunks, docs, stages, k, explain,
                               marked=bool(rerankers))

    def _retrieve(
        self, corpus: Corpus, legs: list[tuple[BaseRetriever, float]], query: str,
        qvec: np.ndarray | None, allow: list[int] | None, k: int,
        stages: dict[int, dict[str, StageScore]], explain: bool,
    ) -> tuple[list[tuple[int, float]], dict[int, ChunkHit]]:
        """Every leg at its depth (at least k), fused; the depths double while the fused
        chunks hold fewer than k distinct documents and some leg may have more."""
        depths = [max(r.depth, k) for r, _ in legs]
        while True:
            rankings = [r.retrieve(corpus, query, qvec, allow, d)
                        for (r, _), d in zip(legs, depths, strict=True)]
            if len(rankings) == 1:
                fused = rankings[0]
            else:
                fused = fuse(self.fusion, rankings, weights=[w for _, w in legs],
                             **{o: v for o, v in self.fusion_options.items() if o != "weights"})
            chunks = corpus.chunks_of(c for c, _ in fused)
            found = {hit.doc for hit in chunks.values()}
            more = [len(ranking) == d for ranking, d in zip(rankings, depths, strict=True)]
            if len(found) >= k or not any(more):
                break
            depths = [d * 2 if m else d for d, m in zip(depths, more, strict=True)]
        if explain:
            for (r, _), ranking in zip(legs, rankings, strict=True):
                for rank, (c, s) in enumerate(ranking, 1):
                    stages.setdefault(c, {})[r.name] = StageScore(s, rank)
            if len(rankings) > 1:
                for rank, (c, s) in enumerate(fused, 1):
                    stages[c]["fusion"] = StageScore(float(s), rank)
        return fused, chunks

    @staticmethod
    def _doc(docs: Mapping[str, Document], hit: ChunkHit) -> Document:
        doc = docs.get(hit.doc)
        if doc is None:
            raise IndexFormatError(
                f"chunk {hit.chunk} belongs to document {hit.doc!r}, which is missing: the "
                "collection is damaged; rebuild it"
            )
        return doc

    def _documents(self, corpus: Corpus, order: list[Candidate],
                   chunks: Mapping[int, ChunkHit], docs: dict[str, Document],
                   stages: dict[int, dict[str, StageScore]], k: int,
                   explain: bool, marked: bool = False) -> list[Result]:
        """Chunks -> documents: a document is its best chunk (the first in `order`), scored
        by it or, with aggregate="sum", by the sum of its chunks scored by the same stage;
        a higher tier (a later stage) ranks first."""
        best: dict[str, Candidate] = {}
        total: dict[str, float] = {}
        for cand in order:
            d = chunks[cand.chunk].doc
            if d not in best:
                best[d] = cand
            if best[d].tier == cand.tier:
                total[d] = total.get(d, 0.0) + cand.score
        scored = [(d, total[d] if self.aggregate == "sum" else cand.score, cand)
                  for d, cand in best.items()]
        scored.sort(key=lambda x: (-x[2].tier, -x[1]))  # stable: ties keep the stage order
        docs.update(corpus.texts_of(d for d, _, _ in scored[:k] if d not in docs))
        out = []
        for d, s, cand in scored[:k]:
            c = cand.chunk
            doc = self._doc(docs, chunks[c])
            out.append(Result(
                id=d, score=s, text=doc.text, metadata=doc.metadata,
                span=(chunks[c].start, chunks[c].end),
                stages=dict(stages.get(c, {})) if explain else {},
                scored_by=cand.stage if marked else None,
            ))
        return out


def _check_k(k: object) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")


def _query_rows(vectors: Any, n: int) -> np.ndarray:
    """The queries' vectors as a C-contiguous float32 (n, dim) array (ValueError else)."""
    rows: np.ndarray = np.ascontiguousarray(vectors, dtype=np.float32)
    if rows.ndim != 2 or len(rows) != n:
        raise ValueError(f"vectors must be (n_queries, dim) for {n} queries, "
                         f"got shape {rows.shape}")
    return rows


def dense_weight(corpus: Corpus, query: str) -> float:
    """1 when the encoder covers the query's language and most of the collection's, else 0.

    An encoder's languages come from the model registry ("multi" covers all). Measured on
    jsquad-valid: an English encoder on Japanese scores 0.27 nDCG@10 against BM25's 0.94, and
    equal-weight fusion drops to 0.52; giving that leg no weight keeps BM25's 0.94.
    """
    return language_weight(corpus, query, corpus.encoder_languages)


def language_weight(corpus: Corpus, query: str, langs: frozenset[str]) -> float:
    """1 when `langs` (a model's languages) cover the query's and most of the corpus's."""
    return 0.0 if language_gap(corpus, query, langs) else 1.0


def language_gap(corpus: Corpus, query: str, langs: frozenset[str]) -> str | None:
    """Why a model of languages `langs` should sit this query out (None: it should not)."""
    if "multi" in langs:
        return None
    known = ", ".join(sorted(langs))
    lang = detect_language(query)
    if lang not in langs:
        return f"its model knows {known}, not the query's language ({lang})"
    shares = corpus.languages()
    covered = sum(v for lang, v in shares.items() if lang in langs) if shares else 1.0
    if covered < 0.5:
        return f"its model knows {known}, the language of {covered:.0%} of the collection"
    return None


def default_pipeline(corpus: Corpus, method: str) -> Pipeline:
    """The pipelines behind the method names: "hybrid" (BM25 + dense with RRF, k = 20; BM25
    alone without an encoder), or one leg by name ("bm25", "dense", "splade", "bm42",
    "late")."""
    if method == "hybrid":
        if "dense" not in corpus.legs():
            return Pipeline([Retriever("bm25")])
        # RRF k 20, not the usual 60: on cranfield (window-sized chunks) k 60 scores 0.417
        # nDCG@10, k 20 0.421, the naive RRF of bm25s and sentence-transformers over whole
        # documents 0.421 (benchmarks/quality_hybrid.py); depth, aggregation and weights
        # changed less or lost
        return Pipeline([Retriever("bm25"), Retriever("dense")], fusion="rrf",
                        fusion_options={"k": 20})
    if method in RETRIEVERS:
        # one leg: no fusion to feed, so only a few chunks beyond k (deepened when documents
        # repeat)
        return Pipeline([Retriever(method, depth=20)])
    raise ValueError(
        f"unknown method {method!r}; use hybrid, {', '.join(RETRIEVERS)} or a Pipeline"
    )


def fused_pipeline(retrievers: Sequence[str], *, depth: int = 100, rrf_k: float = 60.0,
                   weights: Sequence[float] | None = None) -> Pipeline:
    """Any legs by name fused with RRF: ``fused_pipeline(["bm25", "splade", "dense"])``."""
    names = [r.strip() for r in retrievers if r.strip()]
    if not names:
        raise ValueError("give at least one retriever")
    if weights is not None and len(weights) != len(names):
        raise ValueError(f"{len(names)} retrievers but {len(weights)} weights")
    legs = [Retriever(n, depth=depth, weight=None if weights is None else float(weights[i]))
            for i, n in enumerate(names)]
    return Pipeline(legs, fusion="rrf", fusion_options={"k": rrf_k})
