"""``Collection.search(q, augment="mk")``: Meta Knowledge Summary query augmentation.

The query is matched to the closest cluster written by `fastrag.collection.prepare`; the
LLM rewrites it into at most five simple questions guided by that cluster's summary; the
original query and each sub-question are retrieved from the collection and from its
synthetic questions (a question hit stands for its document), and the rankings are fused
with RRF (`fastrag.search.augment.fuse_legs`). When the LLM is unreachable, slow or answers
without questions, the search is the plain one, with one warning: it never fails because of
the LLM.
"""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fastrag.collection.mk_store import MKStore
from fastrag.collection.prepare import open_questions
from fastrag.collection.store import CollectionError
from fastrag.encoders.onnx import caller_level
from fastrag.index import BM25
from fastrag.search.augment import Leg, fuse_legs, rewrite
from fastrag.search.llm import ChatClient
from fastrag.search.pipeline import Pipeline, Result

if TYPE_CHECKING:
    from fastrag.collection.collection import Collection

__all__ = ["AUGMENTS", "augmented_search", "rewrite_client"]

#: the augmentations `Collection.search` knows
AUGMENTS = ("mk",)
#: seconds a query rewrite may take before the search goes on without it
REWRITE_TIMEOUT_S = 20.0


@dataclass
class _Loaded:
    """What a collection's augmented searches read, kept until prepare runs again."""

    stamp: float  # mtime of mk/state.sqlite
    language: str
    summaries: list[str]
    clusters: BM25 | None
    largest: int  # the cluster used when no cluster matches the query
    questions: Collection | None
    client: ChatClient | None


_LOADED: weakref.WeakKeyDictionary[Collection, _Loaded] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def rewrite_client(col: Collection, *, model: str | None = None,
                   base_url: str | None = None, timeout: float = REWRITE_TIMEOUT_S) -> ChatClient:
    """A `ChatClient` for the rewrites of `col`: the model (and, unless ``OPENAI_BASE_URL``
    is set, the server) that prepared it, answers cached in ``<collection>/mk/cache``, no
    retries (a slow or failing LLM makes the search fall back, not wait)."""
    state = MKStore.open(col.path)
    try:
        settings = state.get("settings") or {}
    finally:
        state.close()
    return ChatClient(model or settings.get("model") or "default",
                      base_url=base_url or os.environ.get("OPENAI_BASE_URL")
                      or settings.get("base_url"),
                      timeout=timeout, max_retries=0, cache_dir=col.path / "mk" / "cache")


def _load(col: Collection, llm: ChatClient | None) -> _Loaded:
    path = col.path / "mk" / "state.sqlite"
    try:
        stamp = path.stat().st_mtime
    except OSError:
        stamp = -1.0
    with _LOCK:
        found = _LOADED.get(col)
        if found is not None and found.stamp == stamp:
            return found
    state = MKStore.open(col.path)
    try:
        settings = state.get("settings")
        clusters = state.clusters()
    finally:
        state.close()
    if settings is None:
        raise CollectionError(f"{col.path}: `fastrag prepare` did not finish; run it again")
    index = None
    if clusters:
        index = BM25(analyzer=col.settings.get("analyzer", "auto"))
        index.add([c.text for c in clusters], ids=list(range(len(clusters))))
    client = None
    if llm is None:
        try:
            client = rewrite_client(col)
        except ValueError:
            client = None
    loaded = _Loaded(stamp, settings.get("language", "en"), [c.summary for c in clusters],
                     index, max(range(len(clusters)), key=lambda i: len(clusters[i].docs),
                                default=-1),
                     open_questions(col), client)
    with _LOCK:
        _LOADED[col] = loaded
    return loaded


def _summary(loaded: _Loaded, query: str) -> str:
    """The summary of the cluster closest to `query` (the largest when none matches)."""
    if loaded.clusters is None:
        return ""
    hits = loaded.clusters.search(query, k=1)[0]
    best = int(hits[0].id) if hits else loaded.largest
    return loaded.summaries[best] if best >= 0 else ""


def augmented_search(
    col: Collection,
    query: str,
    k: int,
    *,
    augment: str,
    method: str | Pipeline = "hybrid",
    filter: Mapping[str, Any] | None = None,
    explain: bool = False,
    llm: ChatClient | None = None,
) -> list[Result]:
    """`Collection.search` with ``augment="mk"`` (see the module docstring): a list of
    `fastrag.search.augment.AugmentedResult`, or of plain results after a fallback."""
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be None or one of {', '.join(AUGMENTS)}, "
                         f"got {augment!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    loaded = _load(col, llm)
    client = llm or loaded.client
    error: str | None
    if client is None:
        error = "no LLM server (set OPENAI_BASE_URL or pass llm=)"
        questions: list[str] = []
    else:
        done = rewrite(client, query, _summary(loaded, query), loaded.language)
        error, questions = done.error, done.questions
    if error is not None:
        warnings.warn(f'augment="mk" fell back to the plain query: {error}', UserWarning,
                      stacklevel=caller_level())
        return col.search(query, k, method=method, filter=filter, explain=explain)
    queries = [query, *questions]
    depth = max(2 * k, 20)
    # the queries are embedded once, for the documents and the synthetic questions alike
    # (both collections have the same encoder)
    vectors = col.encoder.encode_queries(queries) if col.encoder is not None and (
        _uses_encoder(method)) else None
    per_query = col.search_batch(queries, depth, method=method, filter=filter,
                                 vectors=vectors, threads=1)
    legs = [Leg.of_results(f"q{i}", q, found)
            for i, (q, found) in enumerate(zip(queries, per_query, strict=True))]
    legs += _question_legs(col, loaded.questions, queries, depth, method, filter, vectors)
    return list(fuse_legs(legs, k, col.texts_of, subquestions=questions, explain=explain))


def _uses_encoder(method: str | Pipeline) -> bool:
    """Whether the search runs the encoder (a dense leg) for its queries."""
    if isinstance(method, Pipeline):
        return any(r.uses_encoder for r in method.retrievers)
    return method in ("hybrid", "tuned", "dense")


def _question_legs(col: Collection, qcol: Collection | None, queries: list[str], depth: int,
                   method: str | Pipeline, filter: Mapping[str, Any] | None,
                   vectors: np.ndarray | None) -> list[Leg]:
    """The legs of the synthetic questions: each query's question hits, as documents."""
    if qcol is None or len(qcol) == 0:
        return []
    allowed = None
    if filter is not None:
        table = col.chunk_table().hits
        allowed = {table[c].doc for c in col.allowed_chunks(filter) if c in table}
    name = method if isinstance(method, str) and method in qcol.legs() else "hybrid"
    if vectors is None and qcol.encoder is not None and _uses_encoder(name):
        vectors = qcol.encoder.encode_queries(queries)
    found = qcol.search_batch(queries, depth, method=name, threads=1,
                              vectors=vectors if qcol.encoder is not None else None)
    legs = []
    for i, (q, results) in enumerate(zip(queries, found, strict=True)):
        hits = [(str(r.metadata.get("doc")), r.text, r.score) for r in results
                if allowed is None or r.metadata.get("doc") in allowed]
        legs.append(Leg.of_questions(f"q{i}:synthetic", q, hits))
    return legs
