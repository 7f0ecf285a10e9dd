"""The native query path: after the query is encoded, every leg, the fusion, the chunk ->
document aggregation (deepening until k documents) and the top-k run in one C++ call
(``fastrag._core.execute``) with the GIL released; a batch of queries runs across cores.

Python prepares the legs (query term ids, query vectors, allow bitsets), then turns the
returned document ordinals into results, reading texts only for the hits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np

from fastrag import _core
from fastrag.search.corpus import Corpus
from fastrag.search.retrievers import BaseRetriever

__all__ = ["NATIVE_FUSIONS", "OneQuery", "run"]

#: Fusions the executor runs, with the options it takes: RRF's k as ``rrf_k``, and the
#: weights, which reach it as each leg's weight (``Pipeline.weights`` resolves them).
NativeFusion = Literal["rrf", "minmax", "zscore", "dbsf"]
NATIVE_FUSIONS: tuple[NativeFusion, ...] = get_args(NativeFusion)
_AGGREGATES: tuple[Literal["max", "sum"], ...] = ("max", "sum")
# names -> themselves, typed as the executor's literals (a dict lookup per call)
_FUSION_NAMES: dict[str, NativeFusion] = {f: f for f in NATIVE_FUSIONS}
_AGGREGATE_NAMES: dict[str, Literal["max", "sum"]] = {a: a for a in _AGGREGATES}
_NATIVE_OPTIONS = {"rrf": {"k", "weights"}}


def supported(fusion: str, fusion_options: Mapping[str, Any],
              legs: Sequence[tuple[BaseRetriever, float]]) -> bool:
    """Whether the executor can run these legs and this fusion exactly as Python would."""
    return (
        fusion in NATIVE_FUSIONS
        and set(fusion_options) <= _NATIVE_OPTIONS.get(fusion, {"weights"})
        and all(r.native for r, _ in legs)
    )


def run(
    corpus: Corpus,
    legs: Sequence[tuple[BaseRetriever, float]],
    queries: list[str],
    vectors: np.ndarray | None,
    allow: list[int] | None,
    *,
    k: int,
    fusion: str,
    fusion_options: Mapping[str, Any],
    aggregate: str,
    explain: bool,
    threads: int,
    fused: int = 0,
) -> dict[str, Any]:
    """One executor call for a batch of queries (see ``_core.execute``); the result holds the
    document ordinals of ``corpus.chunk_table()`` (under "table") and the best chunk of
    each, and with `fused` > 0 the first `fused` fused chunks (for rerank stages)."""
    table = corpus.chunk_table()
    k = min(k, max(1, len(table.hits)))  # no more documents than chunks can come back
    fusion_name, aggregate_name = _names(fusion, aggregate)
    opened: list[Any] = []  # indexes held steady (no renumbering) until the call returns
    try:
        specs = _open_legs(corpus, legs, queries, vectors, allow, k, opened)
        out: dict[str, Any] = _core.execute(
            specs, table.chunk_doc, k=k, fusion=fusion_name,
            rrf_k=float(fusion_options.get("k", 60.0)), aggregate=aggregate_name,
            explain=explain, threads=threads, fused=fused,
        )
    finally:
        for index in opened:
            index.native_close()
    out["table"] = table
    return out


class OneQuery:
    """A pipeline's legs prepared for the one-query path (one query without a filter, on this
    thread): the fusion and aggregation names and RRF's k resolved once, then `run` per query
    (``_core.execute_one``)."""

    __slots__ = ("aggregate", "fusion", "legs", "rrf_k", "uses_encoder")

    def __init__(self, legs: Sequence[tuple[BaseRetriever, float]], *, fusion: str,
                 fusion_options: Mapping[str, Any], aggregate: str) -> None:
        self.legs = list(legs)
        self.uses_encoder = any(r.uses_encoder for r, _ in self.legs)
        self.fusion, self.aggregate = _names(fusion, aggregate)
        self.rrf_k = float(fusion_options.get("k", 60.0))

    def run(self, corpus: Corpus, query: str, vectors: np.ndarray | None,
            k: int) -> list[tuple[str, float, tuple[int, int]]]:
        """The query's hits as (document id, score, span of the best chunk) tuples, best
        first (``execute_one`` caps k at the chunk table's size)."""
        table = corpus.chunk_table()
        opened: list[Any] = []
        try:
            specs = _open_legs(corpus, self.legs, [query], vectors, None, k, opened)
            # positional: pybind looks each keyword up by a str made from its name
            return _core.execute_one(
                specs, table.chunk_doc, table.doc_ids, table.chunk_start, table.chunk_end,
                k, self.fusion, self.rrf_k, self.aggregate,
            )
        finally:
            for index in opened:
                index.native_close()


def _names(fusion: str, aggregate: str) -> tuple[NativeFusion, Literal["max", "sum"]]:
    fusion_name, aggregate_name = _FUSION_NAMES.get(fusion), _AGGREGATE_NAMES.get(aggregate)
    if fusion_name is None:
        raise ValueError(f"the executor has no fusion {fusion!r}; expected one of "
                         f"{', '.join(NATIVE_FUSIONS)}")
    if aggregate_name is None:
        raise ValueError(f"the executor has no aggregate {aggregate!r}; expected one of "
                         f"{', '.join(_AGGREGATES)}")
    return fusion_name, aggregate_name


def _open_legs(corpus: Corpus, legs: Sequence[tuple[BaseRetriever, float]], queries: list[str],
               vectors: np.ndarray | None, allow: list[int] | None, k: int,
               opened: list[Any]) -> list[dict[str, Any]]:
    """The executor's leg dicts; each index opened is appended to `opened` (the caller
    closes them, also when this raises)."""
    specs = []
    for r, weight in legs:
        index = corpus.index(r.method)
        spec = index.native_open(allow)
        opened.append(index)
        spec.update(r.native_leg(index, queries, vectors), depth=max(r.depth, k),
                    weight=float(weight))
        specs.append(spec)
    return specs
