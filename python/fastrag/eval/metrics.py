"""Retrieval metrics through ranx (a maintained metrics library), not hand-written formulas."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10")
Run = Mapping[str, Mapping[str, float]]


def evaluate(
    run: Run, qrels: Mapping[str, Mapping[str, int]], metrics: Sequence[str] = DEFAULT_METRICS
) -> dict[str, float]:
    """Mean metrics over the judged queries; a judged query missing from `run` scores 0."""
    try:
        import ranx
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("evaluation needs ranx: pip install 'fastrag-engine[eval]'") from e
    judged = {q: dict(r) for q, r in qrels.items() if r}
    if not judged:
        raise ValueError("no judged queries in qrels")
    # ranx rejects empty result lists: give such queries a dummy document that is not judged.
    runs = {q: (dict(run[q]) if run.get(q) else {"__none__": 0.0}) for q in judged}
    with warnings.catch_warnings():
        # ranx's numba kernels warn about an internal uint64 -> int64 cast; not ours to fix.
        warnings.filterwarnings("ignore", message=".*unsafe cast.*")
        scores = ranx.evaluate(ranx.Qrels(judged), ranx.Run(runs), list(metrics))
    if isinstance(scores, float):
        scores = {metrics[0]: scores}
    return {m: float(v) for m, v in scores.items()}
