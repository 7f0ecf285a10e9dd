"""Rank and score fusion for hybrid search.

A *ranking* is a sequence of ``(doc_id, score)`` pairs sorted best-first, one per retriever
("leg"); doc ids are any hashable value (in practice ``str`` or ``int``). Every function here
fuses several rankings into one list of ``(doc_id, fused_score)`` pairs sorted by fused score,
descending.

Methods:

* :func:`rrf` -- Reciprocal Rank Fusion (Cormack, Clarke & Buettcher, SIGIR 2009), optionally
  weighted. Uses ranks only.
* :func:`minmax` -- CombSUM over min-max normalised scores (Fox & Shaw, TREC-2 1994; Lee,
  SIGIR 1997), as a convex combination.
* :func:`zscore` -- weighted sum of per-leg standardised (z) scores.
* :func:`dbsf` -- Distribution-Based Score Fusion, as in Qdrant (mean +/- 3 std as the range).
* :func:`fuse` -- dispatch by name over :data:`FUSIONS`.

Options of each method (keyword arguments; :data:`OPTIONS` lists them, :func:`check_options`
validates them the way every method does):

| option  | methods   | value                                                               |
|---------|-----------|---------------------------------------------------------------------|
| k       | rrf       | the rank offset, a finite number > 0 (default 60)                   |
| weights | all four  | one finite number >= 0 per ranking, not all 0 (default all 1)       |
| depth   | all four  | an int >= 1: only each ranking's first `depth` entries count        |

minmax rescales the weights to sum to 1; the others use them as given. Without `depth`,
every entry of each ranking counts.

A :class:`fastrag.search.Pipeline` takes ``k`` and ``weights`` in its ``fusion_options`` (one
weight per retriever); the depth of each leg is set on its retriever instead.

Conventions shared by every method:

* ``weights`` (default: all 1) must have one finite, non-negative entry per leg and not all be
  zero. A leg with weight 0 is dropped before anything else, so fusing ``[A, B]`` with weights
  ``(1, 0)`` is exactly fusing ``[A]``: documents only ``B`` retrieved do not appear at all.
* ``depth`` keeps only the first ``depth`` entries of each ranking; every per-leg statistic
  (min, max, mean, std) is then taken over those candidates only.
* Empty legs are allowed and contribute nothing (no documents, no scores).
* Ties in the fused score keep the order in which documents first appear across the legs:
  all of leg 0 in rank order, then the documents new in leg 1 in rank order, and so on. The
  output is therefore fully deterministic.
* Invalid input raises :class:`ValueError`: a NaN score (any method; score-based methods also
  reject +/-inf) naming the leg, a duplicate id within one leg, bad weights, ``k`` or ``depth``.
  Only the part of each ranking kept by ``depth`` is checked.
* The position in the input is the rank: rankings are not re-sorted, and RRF ignores the
  scores entirely.

Pure Python/numpy, meant for up to a few thousand candidates per query.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

__all__ = ["FUSIONS", "OPTIONS", "check_options", "dbsf", "fuse", "minmax", "rrf", "zscore"]

Id = TypeVar("Id", bound=Hashable)
Ranking = Sequence[tuple[Id, float]]

#: One normalised leg: its weight, the normalised score of each document it retrieved, and the
#: value a document missing from it receives.
_Leg = tuple[float, dict[Any, float], float]


# --------------------------------------------------------------------------------------------
# Validation and shared plumbing
# --------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    """A real number: int, float or a numpy scalar of either, never bool or str."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _check_k(k: Any) -> float:
    if not _is_number(k) or not (math.isfinite(float(k)) and float(k) > 0):
        raise ValueError(f"k must be a finite number > 0, got {k!r}")
    return float(k)


def _check_weights(weights: Sequence[float] | None, n_legs: int | None) -> list[float]:
    """Validated weights; `n_legs` None skips the count check (it is made when fusing)."""
    if weights is None:
        return [1.0] * (n_legs or 0)
    if isinstance(weights, (str, bytes, Mapping)) or not isinstance(
        weights, (Sequence, np.ndarray)
    ):
        raise ValueError(f"weights must be a sequence of numbers, got {weights!r}")
    if not all(_is_number(w) for w in weights):
        raise ValueError(f"weights must be a sequence of numbers, got {weights!r}")
    ws = [float(w) for w in weights]
    if n_legs is None:
        n_legs = len(ws)
    if len(ws) != n_legs:
        raise ValueError(f"got {len(ws)} weights for {n_legs} rankings; they must match")
    for i, w in enumerate(ws):
        if not math.isfinite(w):
            raise ValueError(f"weight {i} is {w}; weights must be finite")
        if w < 0:
            raise ValueError(f"weight {i} is {w}; weights must be >= 0")
    if n_legs and not any(ws):
        raise ValueError("all weights are zero; at least one leg must have a positive weight")
    return ws


def _check_depth(depth: int | None) -> int | None:
    if depth is None:
        return None
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)):
        raise ValueError(f"depth must be a positive int or None, got {depth!r}")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return int(depth)


def _prepare(
    rankings: Sequence[Ranking[Any]],
    weights: Sequence[float] | None,
    depth: int | None,
    *,
    finite: bool,
) -> list[tuple[float, list[Any], list[float]]]:
    """Validates the input; returns (weight, ids, scores) for each leg with a positive weight.

    ``finite`` also rejects +/-inf scores (score-based methods cannot normalise them); NaN is
    always rejected.
    """
    if isinstance(rankings, (str, bytes)):
        raise ValueError("rankings must be a sequence of rankings, not a string")
    rankings = list(rankings)
    ws = _check_weights(weights, len(rankings))
    depth = _check_depth(depth)
    legs: list[tuple[float, list[Any], list[float]]] = []
    for leg, (ranking, w) in enumerate(zip(rankings, ws, strict=True)):
        if depth is not None:
            ranking = ranking[:depth]
        ids: list[Any] = []
        scores: list[float] = []
        for pos, pair in enumerate(ranking):
            try:
                doc_id, score = pair
                score = float(score)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"ranking {leg}, position {pos}: expected a (doc_id, score) pair with a "
                    f"numeric score, got {pair!r}"
                ) from exc
            if math.isnan(score):
                raise ValueError(f"ranking {leg} has a NaN score (doc {doc_id!r}, position {pos})")
            if finite and math.isinf(score):
                raise ValueError(
                    f"ranking {leg} has an infinite score (doc {doc_id!r}, position {pos}); "
                    "score-based fusion needs finite scores"
                )
            ids.append(doc_id)
            scores.append(score)
        if len(set(ids)) != len(ids):
            seen: set[Any] = set()
            for doc_id in ids:
                if doc_id in seen:
                    raise ValueError(f"ranking {leg} lists doc {doc_id!r} more than once")
                seen.add(doc_id)
        if w > 0:
            legs.append((w, ids, scores))
    return legs


def _combine(legs: Sequence[_Leg]) -> list[tuple[Any, float]]:
    """Weighted sum over legs, missing documents taking the leg's default, sorted stably.

    Documents are collected in first-appearance order (leg 0 in rank order, then the new
    documents of leg 1, ...); the stable sort keeps that order among equal fused scores.
    """
    fused: dict[Any, float] = {}
    for _, values, _ in legs:
        for doc in values:
            fused.setdefault(doc, 0.0)
    for w, values, default in legs:  # legs in order: the same sums as a per-document loop
        if default == 0.0:
            for doc, value in values.items():
                fused[doc] += w * value
        else:
            for doc in fused:
                fused[doc] += w * values.get(doc, default)
    return sorted(fused.items(), key=lambda item: -item[1])


# --------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------


def _normalised(
    legs: Sequence[tuple[float, list[Any], list[float]]],
    normalise: Callable[[np.ndarray], tuple[np.ndarray, float]],
    weight_scale: float = 1.0,
) -> list[_Leg]:
    """Each non-empty leg's scores through `normalise` (-> normalised scores, the value a
    document missing from the leg gets), as (weight, {id: score}, missing) for `_combine`."""
    out: list[_Leg] = []
    for w, ids, scores in legs:
        if ids:
            norm, missing = normalise(np.asarray(scores, dtype=np.float64))
            out.append((w * weight_scale, dict(zip(ids, norm.tolist(), strict=True)), missing))
    return out


def rrf(
    rankings: Sequence[Sequence[tuple[Id, float]]],
    *,
    k: float = 60.0,
    weights: Sequence[float] | None = None,
    depth: int | None = None,
) -> list[tuple[Id, float]]:
    """Reciprocal Rank Fusion.

    From Cormack, Clarke & Buettcher, "Reciprocal Rank Fusion outperforms Condorcet and
    individual Rank Learning Methods" (SIGIR 2009): ``score(d) = sum_legs w / (k + rank(d))``
    with ranks starting at 1 and ``k = 60`` as in the paper. A document missing from a leg gets
    nothing from it. With ``weights`` this is the usual weighted RRF (each leg's reciprocal
    ranks multiplied by its weight); the paper itself is unweighted. Scores are ignored: the
    position in each ranking is the rank.

    Args:
        rankings: one best-first list of ``(doc_id, score)`` per leg.
        k: the rank offset; must be finite and > 0.
        weights: one per leg, finite, >= 0, not all zero (default: all 1).
        depth: keep only the first ``depth`` entries of each ranking.

    Returns:
        ``(doc_id, fused_score)`` sorted by fused score descending, ties in first-appearance
        order.
    """
    k_f = _check_k(k)
    legs = _prepare(rankings, weights, depth, finite=False)
    return _combine(
        [
            (w, {doc: 1.0 / (k_f + rank) for rank, doc in enumerate(ids, start=1)}, 0.0)
            for w, ids, _ in legs
        ]
    )


def minmax(
    rankings: Sequence[Sequence[tuple[Id, float]]],
    *,
    weights: Sequence[float] | None = None,
    depth: int | None = None,
) -> list[tuple[Id, float]]:
    """CombSUM over min-max normalised scores, as a convex combination.

    Fox & Shaw, "Combination of Multiple Searches" (TREC-2, 1994) define CombSUM; Lee,
    "Analyses of Multiple Evidence Combination" (SIGIR 1997) pairs it with per-run min-max
    normalisation ``(s - min) / (max - min)``. Each leg is normalised by its own min and max
    over its candidates; a document missing from a leg gets 0 from it. The weights are
    rescaled to sum to 1 over the non-empty legs, so the fused score is a convex combination
    of normalised scores and lies in [0, 1] (with default weights: the mean over legs; the
    unweighted CombSUM of the papers is this times the number of legs, same order). An empty
    leg takes no share of the weight, so adding one changes nothing.

    A leg whose scores are all equal (including a single-document leg) cannot be min-max
    scaled; it gives 1.0 to each of its documents, i.e. every candidate counts as that leg's
    top hit (a missing document still gets 0). Qdrant's min-max fusion uses 0.5 there and
    ranx uses 0; 1.0 keeps "retrieved by the leg" strictly above "not retrieved".

    Args and return value as for :func:`rrf` (no ``k``).
    """
    legs = _prepare(rankings, weights, depth, finite=True)
    total = sum(w for w, ids, _ in legs if ids)

    def scale(s: np.ndarray) -> tuple[np.ndarray, float]:
        lo, hi = float(s.min()), float(s.max())
        return (np.ones_like(s) if hi == lo else (s - lo) / (hi - lo)), 0.0

    return _combine(_normalised(legs, scale, weight_scale=1.0 / total if total else 1.0))


def zscore(
    rankings: Sequence[Sequence[tuple[Id, float]]],
    *,
    weights: Sequence[float] | None = None,
    depth: int | None = None,
) -> list[tuple[Id, float]]:
    """Weighted sum of per-leg z-scores.

    Each leg's scores are standardised as ``(s - mean) / std`` with the mean and the
    population standard deviation (``ddof=0``) of that leg's candidates -- the "Z-score" /
    ZMUV normalisation compared by Montague & Aslam, "Relevance Score Normalization for
    Metasearch" (CIKM 2001), and ranx's ``zmuv``. A leg with std 0 gives 0 to all its
    documents. A document missing from a leg gets that leg's *minimum* z-score: not being
    retrieved is treated like being the leg's worst candidate rather than an average one
    (0 would rank a missing document above every below-average retrieved one). Fused score =
    ``sum_legs w * z`` (weights not rescaled).

    Args and return value as for :func:`rrf` (no ``k``).
    """
    legs = _prepare(rankings, weights, depth, finite=True)

    def standardise(s: np.ndarray) -> tuple[np.ndarray, float]:
        std = float(s.std())
        z = np.zeros_like(s) if std == 0.0 else (s - s.mean()) / std
        return z, float(z.min())

    return _combine(_normalised(legs, standardise))


def dbsf(
    rankings: Sequence[Sequence[tuple[Id, float]]],
    *,
    weights: Sequence[float] | None = None,
    depth: int | None = None,
) -> list[tuple[Id, float]]:
    """Distribution-Based Score Fusion.

    As introduced by Michelangiolo Mazzeschi ("Distribution-based Score Fusion (DBSF), a new
    approach to Vector Search Ranking", 2023) and implemented in Qdrant (``Fusion.DBSF``,
    ``score_fusion.rs``): per leg, scores are mapped linearly from ``[mean - 3 std,
    mean + 3 std]`` to [0, 1] with the sample standard deviation (``ddof=1``, as Qdrant), then
    summed over legs (times the weight; a document missing from a leg gets 0 from it). As in
    Qdrant, a leg with a single document or with std 0 gives 0.5 to each of its documents.
    Unlike Qdrant, normalised scores are clipped to [0, 1], so an outlier beyond 3 std counts
    as 1 (or 0) instead of more (or less).

    Args and return value as for :func:`rrf` (no ``k``).
    """
    legs = _prepare(rankings, weights, depth, finite=True)

    def spread(s: np.ndarray) -> tuple[np.ndarray, float]:
        std = float(s.std(ddof=1)) if len(s) > 1 else 0.0
        if std == 0.0:
            return np.full_like(s, 0.5), 0.0
        lo = float(s.mean()) - 3.0 * std
        return np.clip((s - lo) / (6.0 * std), 0.0, 1.0), 0.0

    return _combine(_normalised(legs, spread))


#: The fusion methods by name.
FUSIONS: dict[str, Callable[..., list[tuple[Any, float]]]] = {
    "rrf": rrf,
    "minmax": minmax,
    "zscore": zscore,
    "dbsf": dbsf,
}

#: The options each fusion method takes (see the table in the module docstring).
OPTIONS: dict[str, frozenset[str]] = {
    "rrf": frozenset({"k", "weights", "depth"}),
    "minmax": frozenset({"weights", "depth"}),
    "zscore": frozenset({"weights", "depth"}),
    "dbsf": frozenset({"weights", "depth"}),
}


def check_options(
    method: str, options: Mapping[str, Any], *, n_legs: int | None = None,
    allowed: frozenset[str] | None = None,
) -> dict[str, Any]:
    """Validates the options of fusion method `method`; returns them normalised (k a float,
    weights a tuple of floats, depth an int).

    `n_legs`: the number of rankings, when known (weights must have one entry each);
    `allowed`: restricts the options further (a pipeline sets the legs' depth on its
    retrievers, not through ``depth``). Raises :class:`ValueError` naming the method, the
    option and what it accepts.
    """
    if not isinstance(method, str) or method not in FUSIONS:
        raise ValueError(
            f"unknown fusion method {method!r}; expected one of {', '.join(sorted(FUSIONS))}"
        )
    if not isinstance(options, Mapping):
        raise ValueError(f"fusion options must be a dict such as {{'k': 60}}, got {options!r}")
    takes = OPTIONS[method] if allowed is None else OPTIONS[method] & allowed
    unknown = sorted(str(o) for o in options if o not in takes)
    if unknown:
        raise ValueError(
            f"fusion method {method!r} does not take option(s) {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(takes)) or 'none'}"
        )
    out: dict[str, Any] = {}
    if "k" in options:
        out["k"] = _check_k(options["k"])
    if options.get("weights") is not None:  # None: the default, all 1
        out["weights"] = tuple(_check_weights(options["weights"], n_legs))
    if options.get("depth") is not None:  # None: every entry
        out["depth"] = _check_depth(options["depth"])
    return out


def fuse(
    method: str, rankings: Sequence[Sequence[tuple[Id, float]]], **options: Any
) -> list[tuple[Id, float]]:
    """Fuses ``rankings`` with the method named ``method`` (a key of :data:`FUSIONS`).

    ``options`` are passed on as keyword arguments (see :data:`OPTIONS`); an unknown method,
    an option the method does not take, or a bad value raises :class:`ValueError`.
    """
    check_options(method, options)
    return FUSIONS[method](rankings, **options)
