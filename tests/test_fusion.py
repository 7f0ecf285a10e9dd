"""Tests for fastrag.search.fusion: hand-computed examples, invariances, validation, ranx."""

from __future__ import annotations

import math
import random
from collections import defaultdict

import pytest

from fastrag.search import fusion
from fastrag.search.fusion import FUSIONS, dbsf, fuse, minmax, rrf, zscore

SCORE_METHODS = ["minmax", "zscore", "dbsf"]
ALL_METHODS = ["rrf", *SCORE_METHODS]

# Two legs used by the hand-computed examples.
LEG_A = [("a", 10.0), ("b", 6.0), ("c", 2.0)]
LEG_B = [("c", 0.9), ("a", 0.5), ("d", 0.1)]


def ids(result):
    return [doc for doc, _ in result]


def as_dict(result):
    return dict(result)


def random_rankings(seed: int, n_legs: int = 3, pool: int = 60, int_ids: bool = False):
    """Seeded rankings over a shared id pool (so they overlap), distinct scores, best-first."""
    rng = random.Random(seed)
    legs = []
    for _ in range(n_legs):
        size = rng.randint(min(15, pool), min(40, pool))
        docs = rng.sample(range(pool), size)
        scores = sorted((rng.uniform(-5.0, 20.0) for _ in docs), reverse=True)
        legs.append([(d if int_ids else f"d{d}", s) for d, s in zip(docs, scores, strict=True)])
    return legs


# --------------------------------------------------------------------------------------------
# Hand-computed examples
# --------------------------------------------------------------------------------------------


def test_rrf_hand_computed():
    # k = 1: a = 1/2 + 1/3, c = 1/4 + 1/2, b = 1/3, d = 1/4.
    out = rrf([LEG_A, LEG_B], k=1)
    assert ids(out) == ["a", "c", "b", "d"]
    assert as_dict(out) == pytest.approx({"a": 5 / 6, "c": 3 / 4, "b": 1 / 3, "d": 1 / 4})


def test_rrf_default_k_is_60():
    out = as_dict(rrf([LEG_A, LEG_B]))
    assert out["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert out["d"] == pytest.approx(1 / 63)


def test_rrf_weighted_hand_computed():
    # weights (1, 2), k = 1: a = 1/2 + 2/3, c = 1/4 + 2/2, b = 1/3, d = 2/4.
    out = rrf([LEG_A, LEG_B], k=1, weights=[1, 2])
    assert ids(out) == ["c", "a", "d", "b"]
    assert as_dict(out) == pytest.approx({"c": 5 / 4, "a": 7 / 6, "d": 1 / 2, "b": 1 / 3})


def test_rrf_ignores_scores():
    other_scores = [[("a", -1.0), ("b", -2.0), ("c", -3.0)], [("c", 7), ("a", 5), ("d", 1)]]
    assert rrf([LEG_A, LEG_B]) == rrf(other_scores)


def test_minmax_hand_computed():
    # A -> a 1, b .5, c 0; B -> c 1, a .5, d 0; default weights rescaled to (1/2, 1/2).
    out = minmax([LEG_A, LEG_B])
    assert ids(out) == ["a", "c", "b", "d"]
    assert as_dict(out) == pytest.approx({"a": 0.75, "c": 0.5, "b": 0.25, "d": 0.0})


def test_minmax_weighted_is_convex_combination():
    # weights (3, 1) -> (3/4, 1/4): a = .75 + .125, b = .375, c = .25, d = 0.
    out = minmax([LEG_A, LEG_B], weights=[3, 1])
    assert ids(out) == ["a", "b", "c", "d"]
    assert as_dict(out) == pytest.approx({"a": 0.875, "b": 0.375, "c": 0.25, "d": 0.0})
    assert as_dict(minmax([LEG_A, LEG_B], weights=[30, 10])) == as_dict(out)
    assert all(0.0 <= s <= 1.0 for _, s in minmax(random_rankings(1), weights=[5, 1, 2]))


def test_minmax_constant_and_single_legs_give_one():
    out = as_dict(minmax([[("x", 3.0), ("y", 3.0)], [("z", -7.0)]]))
    assert out == pytest.approx({"x": 0.5, "y": 0.5, "z": 0.5})  # each 1.0, times weight 1/2


def test_zscore_hand_computed():
    # Both legs are (high, mid, low) evenly spaced: z = (+r, 0, -r) with r = sqrt(3/2)
    # (population std). Missing docs get the leg's minimum z, -r.
    r = math.sqrt(1.5)
    out = zscore([LEG_A, LEG_B])
    assert ids(out) == ["a", "c", "b", "d"]
    assert as_dict(out) == pytest.approx({"a": r, "c": 0.0, "b": -r, "d": -2 * r}, abs=1e-12)


def test_zscore_weighted_and_missing_gets_leg_minimum():
    # A: x 4, y 0 -> z +1, -1.  B: x 1, z 2, w 3 -> z -r, 0, +r (r = sqrt(3/2)).
    r = math.sqrt(1.5)
    out = as_dict(zscore([[("x", 4), ("y", 0)], [("w", 3), ("z", 2), ("x", 1)]], weights=[2, 1]))
    assert out == pytest.approx({"x": 2 - r, "y": -2 - r, "w": -2 + r, "z": -2 + 0.0}, abs=1e-12)


def test_zscore_constant_leg_gives_zero():
    out = as_dict(zscore([[("x", 5.0), ("y", 5.0)], [("z", 1.0)]]))
    assert out == {"x": 0.0, "y": 0.0, "z": 0.0}


def test_dbsf_hand_computed():
    # Sample std: A = 4 -> range [-6, 18]; B = 0.4 -> range [-0.7, 1.7].
    # a = 16/24 + 1.2/2.4, b = 12/24, c = 8/24 + 1.6/2.4, d = 0.8/2.4.
    out = dbsf([LEG_A, LEG_B])
    assert ids(out) == ["a", "c", "b", "d"]
    assert as_dict(out) == pytest.approx({"a": 7 / 6, "c": 1.0, "b": 0.5, "d": 1 / 3})


def test_dbsf_clips_outliers_and_handles_degenerate_legs():
    # 100 lies beyond mean + 3 sample std (5 + 3 sqrt(500)) -> clipped to 1.0.
    leg = [("top", 100.0)] + [(f"z{i}", 0.0) for i in range(19)]
    out = as_dict(dbsf([leg]))
    assert out["top"] == 1.0
    std = math.sqrt(500.0)
    assert out["z0"] == pytest.approx((0.0 - (5.0 - 3 * std)) / (6 * std))
    # single document, constant leg -> 0.5 each (as Qdrant)
    assert as_dict(dbsf([[("s", 9.0)], [("p", 1.0), ("q", 1.0)]])) == {
        "s": 0.5,
        "p": 0.5,
        "q": 0.5,
    }


def test_dbsf_weighted():
    plain = as_dict(dbsf([LEG_A, LEG_B]))
    out = as_dict(dbsf([LEG_A, LEG_B], weights=[2, 0.5]))
    assert out["b"] == pytest.approx(2 * 0.5)
    assert out["d"] == pytest.approx(0.5 * (1 / 3))
    assert out["a"] == pytest.approx(2 * (2 / 3) + 0.5 * 0.5)
    assert plain.keys() == out.keys()


def test_int_ids_and_output_types():
    out = rrf([[(1, 0.3), (2, 0.2)], [(2, 9.0), (3, 1.0)]])
    assert ids(out) == [2, 1, 3]
    for method in ALL_METHODS:
        for doc, score in fuse(method, random_rankings(3, int_ids=True)):
            assert isinstance(doc, int)
            assert type(score) is float


# --------------------------------------------------------------------------------------------
# Weights, ties, empty legs, depth
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ALL_METHODS)
def test_zero_weight_removes_leg_exactly(method):
    a, b = random_rankings(7, n_legs=2)
    out = fuse(method, [a, b], weights=(1, 0))
    assert out == fuse(method, [a])
    assert ids(out) == ids(a)
    # and from the other side
    assert fuse(method, [a, b], weights=(0, 2.5)) == fuse(method, [b], weights=[2.5])


@pytest.mark.parametrize("method", ALL_METHODS)
def test_empty_legs_contribute_nothing(method):
    a, b = random_rankings(11, n_legs=2)
    assert fuse(method, [[], a, [], b], weights=[3, 1, 5, 2]) == fuse(
        method, [a, b], weights=[1, 2]
    )
    assert fuse(method, [a, []]) == fuse(method, [a])
    assert fuse(method, [[], []]) == []
    assert fuse(method, []) == []


def test_ties_broken_by_first_appearance_leg_major():
    # minmax: every doc of two constant legs gets 0.5 -> order of first appearance, all of
    # leg 0 first (not interleaved by rank).
    legs = [[("a", 1.0), ("b", 1.0)], [("c", 5.0), ("d", 5.0)]]
    assert ids(minmax(legs)) == ["a", "b", "c", "d"]
    assert ids(minmax(legs[::-1])) == ["c", "d", "a", "b"]
    # rrf: a and b swap ranks -> equal scores; a appears first.
    assert ids(rrf([[("a", 2), ("b", 1)], [("b", 2), ("a", 1)]])) == ["a", "b"]
    assert ids(rrf([[("b", 2), ("a", 1)], [("a", 2), ("b", 1)]])) == ["b", "a"]
    # disjoint legs: a ~ c and b ~ d tie.
    assert ids(rrf([[("a", 2), ("b", 1)], [("c", 2), ("d", 1)]])) == ["a", "c", "b", "d"]
    # zscore / dbsf with constant legs
    assert ids(zscore(legs)) == ["a", "b", "c", "d"]
    assert ids(dbsf(legs[::-1])) == ["c", "d", "a", "b"]


@pytest.mark.parametrize("method", ALL_METHODS)
def test_deterministic(method):
    legs = random_rankings(5, n_legs=4)
    first = fuse(method, legs, weights=[1, 0.5, 2, 1])
    for _ in range(3):
        assert fuse(method, [list(leg) for leg in legs], weights=[1, 0.5, 2, 1]) == first
    scores = [s for _, s in first]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_depth_truncates_each_ranking(method):
    legs = random_rankings(13)
    out = fuse(method, legs, depth=5)
    assert out == fuse(method, [leg[:5] for leg in legs])
    assert set(ids(out)) == {d for leg in legs for d, _ in leg[:5]}
    assert fuse(method, legs, depth=10_000) == fuse(method, legs)


def test_depth_changes_normalisation_hand_computed():
    # depth 2 keeps a 10, b 6 -> a 1, b 0 ; c 0.9, a 0.5 -> c 1, a 0.
    out = as_dict(minmax([LEG_A, LEG_B], depth=2))
    assert out == pytest.approx({"a": 0.5, "b": 0.0, "c": 0.5})
    assert ids(rrf([LEG_A, LEG_B], k=1, depth=1)) == ["a", "c"]


def test_depth_skips_validation_of_dropped_entries():
    leg = [("a", 1.0), ("b", math.nan), ("a", 0.0)]
    assert ids(minmax([leg], depth=1)) == ["a"]


# --------------------------------------------------------------------------------------------
# RRF against a reference implementation
# --------------------------------------------------------------------------------------------


def reference_rrf(rankings, k=60.0, weights=None):
    weights = [1.0] * len(rankings) if weights is None else weights
    total: dict = defaultdict(float)
    first_seen: dict = {}
    for leg, (ranking, w) in enumerate(zip(rankings, weights, strict=True)):
        if w == 0:
            continue
        for rank, (doc, _) in enumerate(ranking, start=1):
            first_seen.setdefault(doc, (leg, rank))
            total[doc] += w * (1.0 / (k + rank))
    return sorted(total.items(), key=lambda item: (-item[1], first_seen[item[0]]))


@pytest.mark.parametrize("seed", range(20))
def test_rrf_matches_reference(seed):
    rng = random.Random(1000 + seed)
    legs = random_rankings(seed, n_legs=rng.randint(1, 5), pool=rng.choice([10, 40, 200]))
    k = rng.choice([1.0, 10.0, 60.0, 0.5])
    weights = [rng.choice([0.0, 0.3, 1.0, 2.0]) for _ in legs]
    if not any(weights):
        weights[0] = 1.0
    assert rrf(legs, k=k) == reference_rrf(legs, k=k)
    assert rrf(legs, k=k, weights=weights) == reference_rrf(legs, k=k, weights=weights)


# --------------------------------------------------------------------------------------------
# Affine invariance of the score-based methods
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", SCORE_METHODS)
@pytest.mark.parametrize("seed", range(5))
def test_affine_rescaling_of_a_leg_changes_nothing(method, seed):
    rng = random.Random(seed)
    legs = random_rankings(100 + seed)
    weights = [rng.uniform(0.1, 3.0) for _ in legs]
    base = fuse(method, legs, weights=weights)
    for leg in range(len(legs)):
        a, b = rng.choice([1e-3, 0.5, 7.0, 1e3]), rng.uniform(-50.0, 50.0)
        moved = [list(x) for x in legs]
        moved[leg] = [(d, a * s + b) for d, s in legs[leg]]
        out = fuse(method, moved, weights=weights)
        assert ids(out) == ids(base)
        assert [s for _, s in out] == pytest.approx([s for _, s in base], abs=1e-9)


def test_rrf_is_invariant_to_any_monotone_rescaling():
    legs = random_rankings(21)
    moved = [[(d, math.exp(s)) for d, s in leg] for leg in legs]
    assert rrf(moved) == rrf(legs)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0], "2 rankings"),
        ([1.0, 1.0, 1.0], "3 weights"),
        ([1.0, math.nan], "finite"),
        ([math.inf, 1.0], "finite"),
        ([1.0, -0.5], ">= 0"),
        ([0.0, 0.0], "all weights are zero"),
        ("ab", "numbers"),
        ([1.0, None], "numbers"),
    ],
)
def test_bad_weights(method, weights, message):
    with pytest.raises(ValueError, match=message):
        fuse(method, [LEG_A, LEG_B], weights=weights)


@pytest.mark.parametrize("k", [0, -1.0, math.nan, math.inf, -math.inf])
def test_bad_k(k):
    with pytest.raises(ValueError, match="k must be"):
        rrf([LEG_A], k=k)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_nan_score_names_the_leg(method):
    bad = [("x", 1.0), ("y", math.nan)]
    with pytest.raises(ValueError, match=r"ranking 1 has a NaN score \(doc 'y'"):
        fuse(method, [LEG_A, bad])


@pytest.mark.parametrize("method", SCORE_METHODS)
def test_infinite_score_rejected_by_score_methods(method):
    with pytest.raises(ValueError, match="ranking 0 has an infinite score"):
        fuse(method, [[("x", math.inf), ("y", 1.0)]])


def test_rrf_accepts_infinite_scores():
    assert ids(rrf([[("x", math.inf), ("y", -math.inf)]])) == ["x", "y"]


@pytest.mark.parametrize("method", ALL_METHODS)
def test_duplicate_ids_within_a_leg(method):
    with pytest.raises(ValueError, match="ranking 1 lists doc 'a' more than once"):
        fuse(method, [LEG_A, [("a", 3.0), ("b", 2.0), ("a", 1.0)]])
    # the same id across legs is the normal case
    assert len(fuse(method, [LEG_A, LEG_A])) == 3


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("depth", [0, -3, 1.5, True, "2"])
def test_bad_depth(method, depth):
    with pytest.raises(ValueError, match="depth must be"):
        fuse(method, [LEG_A], depth=depth)


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("leg", [[("a",)], [("a", 1.0, 2.0)], [("a", "high")], ["ab"], [5]])
def test_malformed_pairs(method, leg):
    with pytest.raises(ValueError, match=r"ranking 1, position 0: expected a \(doc_id, score\)"):
        fuse(method, [LEG_A, leg])


def test_rankings_must_not_be_a_string():
    with pytest.raises(ValueError, match="not a string"):
        rrf("ab")  # type: ignore[arg-type]


def test_fuse_dispatch_and_errors():
    assert set(FUSIONS) == {"rrf", "minmax", "zscore", "dbsf"}
    assert fuse("rrf", [LEG_A, LEG_B], k=1) == rrf([LEG_A, LEG_B], k=1)
    assert fuse("dbsf", [LEG_A, LEG_B], depth=2) == dbsf([LEG_A, LEG_B], depth=2)
    with pytest.raises(ValueError, match="unknown fusion method 'combmnz'; expected one of"):
        fuse("combmnz", [LEG_A])
    with pytest.raises(ValueError, match=r"'minmax' does not take option.*k.*takes depth, weights"):
        fuse("minmax", [LEG_A], k=60)
    with pytest.raises(ValueError, match=r"does not take option.*weight"):
        fuse("rrf", [LEG_A], weight=[1.0])
    assert fusion.__all__ == sorted(fusion.__all__)


# --------------------------------------------------------------------------------------------
# Cross-check against ranx (a dev dependency)
# --------------------------------------------------------------------------------------------


# ranx runs on numba typed containers: its first use in a process costs several seconds of
# import and JIT compilation (shared with the ranx-based eval tests in a full run), far more
# than the rest of this file, hence the `slow` marker (`-m "not slow"` skips them).
ranx_check = pytest.mark.slow


def _ranx_fuse(legs, **kwargs):
    ranx = pytest.importorskip("ranx")
    runs = [ranx.Run.from_dict({"q": {d: float(s) for d, s in leg}}) for leg in legs]
    return ranx.fuse(runs=runs, **kwargs).to_dict()["q"]


@ranx_check
@pytest.mark.parametrize("seed", [0, 1])
def test_rrf_matches_ranx(seed):
    # ranx ranks each run by its own descending score (our rankings are already sorted and have
    # distinct scores, so the positions agree) and sums 1 / (k + rank): unweighted RRF. ranx
    # has no tie rule we could match, so compare scores, not list order.
    legs = random_rankings(200 + seed)
    expected = _ranx_fuse(legs, norm=None, method="rrf", params={"k": 60})
    assert as_dict(rrf(legs, k=60)) == pytest.approx(expected, rel=1e-12)


@ranx_check
@pytest.mark.parametrize("seed", [0, 1])
def test_minmax_matches_ranx(seed):
    # ranx "min-max" + "wsum": (s - min) / (max - min) per run, missing docs 0, raw weights.
    # We rescale the weights to sum to 1, so pass ranx the rescaled ones. ranx maps a constant
    # run to 0 (we use 1.0); the random legs here have distinct scores, so that never arises.
    legs = random_rankings(300 + seed)
    weights = [0.5, 2.0, 1.5]
    total = sum(weights)
    expected = _ranx_fuse(
        legs, norm="min-max", method="wsum", params={"weights": [w / total for w in weights]}
    )
    assert as_dict(minmax(legs, weights=weights)) == pytest.approx(expected, rel=1e-9)


@ranx_check
def test_zscore_matches_ranx_when_no_doc_is_missing():
    # ranx "zmuv" + "wsum": population z-scores, but a missing doc gets 0 from that run where
    # we give it the run's minimum z; with every leg over the same documents they agree.
    rng = random.Random(400)
    docs = [f"d{i}" for i in range(30)]
    legs = []
    for _ in range(3):
        shuffled = rng.sample(docs, len(docs))
        scores = sorted((rng.gauss(0.0, 3.0) for _ in docs), reverse=True)
        legs.append(list(zip(shuffled, scores, strict=True)))
    weights = [1.0, 0.25, 2.0]
    expected = _ranx_fuse(legs, norm="zmuv", method="wsum", params={"weights": weights})
    assert as_dict(zscore(legs, weights=weights)) == pytest.approx(expected, rel=1e-9)
