"""Runs a retrieval method over a dataset's judged queries and scores it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from fastrag.eval.datasets import Dataset
from fastrag.eval.metrics import DEFAULT_METRICS, evaluate
from fastrag.index import BM25, SearchResults

# A method takes (dataset, depth, options) and returns {query_id: {doc_id: score}}.
MethodFn = Callable[[Dataset, int, dict[str, Any]], dict[str, dict[str, float]]]
METHODS: dict[str, MethodFn] = {}


def register_method(name: str) -> Callable[[MethodFn], MethodFn]:
    def wrap(fn: MethodFn) -> MethodFn:
        METHODS[name] = fn
        return fn

    return wrap


def results_to_run(query_ids: list[str], results: SearchResults) -> dict[str, dict[str, float]]:
    return {q: {str(h.id): h.score for h in results[i]} for i, q in enumerate(query_ids)}


@register_method("bm25")
def run_bm25(dataset: Dataset, depth: int, options: dict[str, Any]) -> dict[str, dict[str, float]]:
    """BM25 with options analyzer (default "auto"), method, k1, b, delta, threads."""
    threads = options.pop("threads", 0)
    doc_ids, texts = dataset.documents()
    index = BM25(**options)
    t0 = time.perf_counter()
    index.add(texts, ids=doc_ids)
    t1 = time.perf_counter()
    query_ids, queries = dataset.judged_queries()
    results = index.search(queries, k=depth, threads=threads)
    t2 = time.perf_counter()
    options["_timings"] = {"index_seconds": t1 - t0, "search_seconds": t2 - t1}
    return results_to_run(query_ids, results)


@dataclass
class EvalResult:
    method: str
    dataset: str
    queries: int
    metrics: dict[str, float]
    options: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("metrics"))
        out.update(out.pop("timings"))
        return out


def evaluate_method(
    dataset: Dataset,
    method: str = "bm25",
    *,
    depth: int = 100,
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    options: dict[str, Any] | None = None,
) -> EvalResult:
    """Runs `method` (a name in METHODS) with `options` and scores it against the qrels."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(sorted(METHODS))}")
    options = dict(options or {})
    opts = dict(options)
    run = METHODS[method](dataset, depth, opts)
    timings = opts.pop("_timings", {})
    scores = evaluate(run, dataset.qrels, metrics)
    return EvalResult(method, dataset.name, len(run), scores, options, timings)
