"""Fits a collection's hybrid pipeline on the user's judged queries, with k-fold cross-validation.

The grid: RRF k, the weight of every leg after the first (the first keeps 1; None = adaptive by
language, 0 = leave the leg out), the legs' depth and the chunk -> document aggregation. Every
pipeline of the grid (or a seeded random sample of `trials` of them) searches every query once;
ranx scores each query's nDCG@10. Cross-validation then needs no more searches: for each fold,
the pipeline with the best mean on the other folds is picked and scored on the fold's queries,
so every query's held-out score comes from a pipeline fitted without it. The pipeline stored at
the end is the one best on all queries.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fastrag.eval.datasets import Dataset
from fastrag.search.pipeline import Pipeline, default_pipeline
from fastrag.search.spec import pipeline_from_spec, spec_of

__all__ = ["GRID", "TuneResult", "cross_validate", "grid_specs", "per_query_ndcg",
           "tune_collection"]

#: The values tried for each knob (every combination, or a random sample of them).
GRID: dict[str, tuple[Any, ...]] = {
    "k": (5.0, 10.0, 20.0, 40.0, 60.0, 100.0),
    "weight": (None, 0.0, 0.25, 0.5, 1.0, 2.0),
    "depth": (50, 100, 200),
    "aggregate": ("max", "sum"),
}
TUNABLE_LEGS = ("bm25", "dense", "splade", "bm42")  # legs the native executor fuses
METRIC = "ndcg@10"


@dataclass
class TuneResult:
    """What `cross_validate` found.

    Attributes:
        spec: the pipeline best on all queries (what `fastrag tune` stores).
        tuned_ndcg: mean held-out nDCG@10: each query scored by the pipeline fitted on the
            folds without it.
        default_ndcg: the default pipeline's nDCG@10 on the same queries (it fits nothing).
        folds: per fold, the spec picked on the other folds, its held-out and the default's
            nDCG@10 on the fold.
        configs: how many pipelines were tried.
        queries: how many judged queries were used.
        saved: whether `tune_collection` stored `spec` in the collection (only when the
            held-out score is at least the default's).
    """

    spec: dict[str, Any]
    tuned_ndcg: float
    default_ndcg: float
    configs: int
    queries: int
    folds: list[dict[str, Any]] = field(default_factory=list)
    saved: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def grid_specs(legs: Sequence[str], grid: Mapping[str, Sequence[Any]] = GRID,
               trials: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Pipeline specs over `legs` (the first leg's weight stays 1): all of the grid, or a
    seeded sample of `trials` of them."""
    legs = list(legs)
    if not legs:
        raise ValueError("no legs to tune")
    weights = list(itertools.product(grid["weight"], repeat=len(legs) - 1))
    combos = list(itertools.product(grid["k"], weights, grid["depth"], grid["aggregate"]))
    if trials is not None:
        if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
            raise ValueError(f"trials must be an int >= 1, got {trials!r}")
        if trials < len(combos):
            combos = random.Random(seed).sample(combos, trials)
    specs = []
    for k, ws, depth, aggregate in combos:
        retrievers = [{"method": legs[0], "depth": depth}]
        for leg, w in zip(legs[1:], ws, strict=True):
            retrievers.append({"method": leg, "depth": depth}
                              | ({} if w is None else {"weight": float(w)}))
        specs.append({"retrievers": retrievers, "fusion": "rrf",
                      "fusion_options": {"k": float(k)}, "aggregate": aggregate})
    return specs


def per_query_ndcg(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
                   qids: Sequence[str]) -> np.ndarray:
    """nDCG@10 of each query in `qids` (ranx's), in that order; a query without results
    scores 0."""
    import ranx

    judged = {q: dict(qrels[q]) for q in qids}
    runs = {q: (dict(run[q]) if run.get(q) else {"__none__": 0.0}) for q in qids}
    ranked = ranx.Run(runs)
    ranx.evaluate(ranx.Qrels(judged), ranked, METRIC)
    scores = ranked.scores[METRIC]
    return np.array([float(scores[q]) for q in qids], dtype=np.float64)


def _search(corpus: Any, pipeline: Pipeline, qids: Sequence[str], queries: Sequence[str],
            vectors: np.ndarray | None, depth: int) -> dict[str, dict[str, float]]:
    """A run whose scores are n - rank, so ranx sees exactly the pipeline's order."""
    found = pipeline.search_batch(corpus, list(queries), k=depth, vectors=vectors, threads=0)
    return {q: {r.id: float(len(rs) - i) for i, r in enumerate(rs)}
            for q, rs in zip(qids, found, strict=True)}


def _folds(n: int, folds: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, folds)]


def cross_validate(
    corpus: Any,
    qids: Sequence[str],
    queries: Sequence[str],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    folds: int = 5,
    seed: int = 0,
    trials: int | None = None,
    legs: Sequence[str] | None = None,
    vectors: np.ndarray | None = None,
    depth: int = 100,
) -> TuneResult:
    """Tunes a fused pipeline for `corpus` (a collection) on judged queries.

    Args:
        qids, queries: the judged queries (same order); qrels: {query id: {doc id: grade}}.
        folds: cross-validation folds (2 <= folds <= number of queries); seed: fold split and
            grid sample.
        trials: pipelines to try (a seeded sample of the grid); None: the whole grid.
        legs: legs to fuse (default: the collection's legs among bm25, dense, splade, bm42).
        vectors: the queries' embeddings when the caller has them (else encoded once here).
        depth: documents per query handed to ranx.
    """
    qids, queries = list(qids), list(queries)
    if len(qids) != len(queries):
        raise ValueError(f"{len(qids)} query ids but {len(queries)} queries")
    missing = [q for q in qids if not qrels.get(q)]
    if missing:
        raise ValueError(f"{len(missing)} queries have no relevance judgements "
                         f"(first: {missing[0]!r}); pass judged queries only")
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= len(qids):
        raise ValueError(f"folds must be an int from 2 to the number of judged queries "
                         f"({len(qids)}), got {folds!r}")
    legs = [leg for leg in corpus.legs() if leg in TUNABLE_LEGS] if legs is None else list(legs)
    if len(legs) < 2:
        raise ValueError(f"tuning fuses two legs or more; this collection has {legs or 'none'} "
                         "(create it with an encoder for a dense leg)")
    if vectors is None and corpus.encoder is not None:
        vectors = corpus.encoder.encode_queries(queries)
    specs = grid_specs(legs, trials=trials, seed=seed)
    scores = np.stack([
        per_query_ndcg(_search(corpus, pipeline_from_spec(s), qids, queries, vectors, depth),
                       qrels, qids)
        for s in specs
    ])  # (configs, queries)
    default = per_query_ndcg(_search(corpus, default_pipeline(corpus, "hybrid"), qids, queries,
                                     vectors, depth), qrels, qids)
    held_out = np.zeros(len(qids))
    report = []
    for test in _folds(len(qids), folds, seed):
        train = np.setdiff1d(np.arange(len(qids)), test)
        best = int(np.argmax(scores[:, train].mean(axis=1)))  # first best on ties
        held_out[test] = scores[best, test]
        report.append({"spec": specs[best], "queries": len(test),
                       "tuned_ndcg": float(scores[best, test].mean()),
                       "default_ndcg": float(default[test].mean())})
    best = int(np.argmax(scores.mean(axis=1)))
    return TuneResult(spec=specs[best], tuned_ndcg=float(held_out.mean()),
                      default_ndcg=float(default.mean()), configs=len(specs),
                      queries=len(qids), folds=report)


def default_spec(corpus: Any) -> dict[str, Any]:
    """The spec of the built-in default hybrid pipeline of `corpus` (for reports)."""
    return spec_of(default_pipeline(corpus, "hybrid"))


def tune_collection(col: Any, dataset: Dataset, *, folds: int = 5, trials: int | None = None,
                    seed: int = 0, save: bool = True) -> TuneResult:
    """Tunes `col` (a `fastrag.Collection` holding the dataset's documents) on the dataset's
    judged queries (`cross_validate`) and, with `save`, stores the fitted pipeline as the
    collection's default when its held-out nDCG@10 is at least the built-in default's."""
    qids, queries = dataset.judged_queries()
    if not qids:
        raise ValueError(f"{dataset.name}: no judged queries (qrels with a grade > 0)")
    judged = {d for q in qids for d in dataset.qrels[q]}
    if not any(d in col for d in judged):
        raise ValueError(f"the collection holds none of the {len(judged)} judged documents of "
                         f"{dataset.name}: index the dataset's corpus into it (same ids)")
    result = cross_validate(col, qids, queries, dataset.qrels, folds=folds, trials=trials,
                            seed=seed)
    if save and result.tuned_ndcg >= result.default_ndcg:
        col.set_default_pipeline(result.spec)
        result.saved = True
    return result
