"""Tests of the native HNSW index (fastrag._core.HnswIndex) against oracles.

Oracles: exact top-k and scores computed in numpy (float64), the index's own exact search
(graph recall), a single-threaded build (threaded builds), an index built on the prefix of
the dimensions (the Matryoshka funnel), the generic kernels (the SIMD kernels) and hard-coded
golden files (the format). Data are seeded Gaussian mixtures: 50 centres, unit noise, scaled
by 1/8 so that scores are of order 1.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastrag
from fastrag import _core
from filecheck import M64, reseal, section_table
from vectors import reference_scores

HnswIndex = _core.HnswIndex
METRICS = ("cosine", "ip", "l2")
# (storage, keep_float) with the test id; "int8+float" keeps the float32 rows for rescoring.
STORAGES = {
    "float32": ("float32", False),
    "int8+float": ("int8", True),
    "int8": ("int8", False),
    "float16": ("float16", False),
    "int4": ("int4", False),  # int4 codes walked, int8 rows rescore
    "int4+float": ("int4", True),
}
DIM, N, N_QUERIES = 64, 6000, 300
RTOL, ATOL = 1e-5, 1e-4


# ---------------------------------------------------------------------------- helpers
def mixture(
    seed: int, n: int, dim: int, n_queries: int, centres: int = 50, scale=None
) -> tuple[np.ndarray, np.ndarray]:
    """Vectors and queries drawn around the same `centres` Gaussian centres (float32)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim))
    labels = rng.integers(0, centres, n + n_queries)
    x = (c[labels] + rng.normal(size=(n + n_queries, dim))) / 8
    if scale is not None:
        x = x * scale
    x = x.astype(np.float32)
    return np.ascontiguousarray(x[:n]), np.ascontiguousarray(x[n:])


def topk(scores: np.ndarray, k: int, eligible: np.ndarray | None = None) -> np.ndarray:
    """Ids of the k best scores of each row (-1 padded), optionally among `eligible` only."""
    s = scores if eligible is None else np.where(eligible, scores, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.where(np.take_along_axis(s, order, 1) > -np.inf, order, -1)


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true ids (ignoring -1) found in each row of `got`."""
    hits = total = 0
    for g, t in zip(got.tolist(), truth.tolist(), strict=True):
        t = {i for i in t if i >= 0}
        hits += len(t & set(g))
        total += len(t)
    return hits / max(total, 1)


def assert_exact_topk(ids, scores, ref, k, eligible=None, rtol=RTOL, atol=ATOL):
    """Every row is the exact top-k of `ref` (up to ties) among the eligible ids, with the
    reference scores, padded with -1 / -inf."""
    ids, scores = np.asarray(ids), np.asarray(scores)
    assert ids.shape == scores.shape == (ref.shape[0], k)
    for qi in range(ref.shape[0]):
        row_ok = np.ones(ref.shape[1], bool) if eligible is None else eligible[qi]
        n = min(k, int(row_ok.sum()))
        got, sc = ids[qi], scores[qi]
        assert np.all(got[n:] == -1) and np.all(np.isneginf(sc[n:])), f"query {qi}: padding"
        assert np.all(got[:n] >= 0), f"query {qi}: fewer than {n} results"
        assert len(set(got[:n].tolist())) == n, f"query {qi}: duplicate ids"
        assert row_ok[got[:n]].all(), f"query {qi}: returned an id that is not eligible"
        assert np.all(np.diff(sc[:n]) <= 0), f"query {qi}: scores not descending"
        np.testing.assert_allclose(sc[:n], ref[qi, got[:n]], rtol=rtol, atol=atol)
        if n:
            kth = np.sort(ref[qi, row_ok])[::-1][n - 1]
            assert sc[n - 1] == pytest.approx(kth, rel=rtol, abs=atol)
            above = np.flatnonzero(row_ok & (ref[qi] > kth + atol + rtol * abs(kth)))
            assert set(above.tolist()) <= set(got[:n].tolist()), f"query {qi}: missed a result"


def bitset(n: int, allowed) -> np.ndarray:
    """A uint64 bitset over ids [0, n) with the `allowed` bits set."""
    words = np.zeros((n + 63) // 64, dtype=np.uint64)
    idx = np.asarray(allowed, dtype=np.int64)
    if idx.size:
        np.bitwise_or.at(words, idx >> 6, np.left_shift(np.uint64(1), (idx & 63).astype(np.uint64)))
    return words


def build(vectors, metric="cosine", storage="float32", keep_float=False, threads=2, **params):
    params.setdefault("ef_construction", 100)
    index = HnswIndex(
        vectors.shape[1], metric=metric, storage=storage, keep_float=keep_float, **params
    )
    assert index.add(vectors, threads=threads) == 0
    return index


def stored_rows(index: HnswIndex, ids=None) -> np.ndarray:
    n = index.stats()["n_vectors"]
    return np.stack([index.get_vector(int(i)) for i in (range(n) if ids is None else ids)])


def graph(index: HnswIndex) -> list[list[np.ndarray]]:
    """The link lists of every node, level 0 first (levels end at the first empty list)."""
    out = []
    for i in range(index.stats()["n_vectors"]):
        levels = [index.links(i, 0)]
        for level in range(1, 40):
            links = index.links(i, level)
            if len(links) == 0:
                break
            levels.append(links)
        out.append(levels)
    return out


def results_equal(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def clustered():
    """6000 x 64 vectors and 300 queries, with the reference scores of every metric."""
    x, q = mixture(5, N, DIM, N_QUERIES)
    return x, q, {m: reference_scores(x, q, m) for m in METRICS}


@pytest.fixture(scope="module")
def built(clustered):
    """get(metric, variant, threads) -> an index over the clustered vectors (built once, never
    modified: tests that change an index build their own)."""
    x = clustered[0]
    cache: dict = {}

    def get(metric: str, variant: str = "float32", threads: int = 2) -> HnswIndex:
        key = (metric, variant, threads)
        if key not in cache:
            storage, keep_float = STORAGES[variant]
            cache[key] = build(x, metric, storage, keep_float, threads=threads)
        return cache[key]

    return get


# ---------------------------------------------------------------------------- search quality
@pytest.mark.parametrize("variant", list(STORAGES))
@pytest.mark.parametrize("metric", METRICS)
def test_graph_recall_against_exact_search(clustered, built, metric, variant):
    _, q, refs = clustered
    index = built(metric, variant)
    rescore = 64 if index.keep_float else 0
    ids, _ = index.search(q, k=10, ef=64, rescore=rescore)
    exact_ids, _ = index.search(q, k=10, exact=True)
    assert recall(ids, exact_ids) >= 0.95
    if variant in ("float32", "int8+float"):  # with float32 rows the truth is numpy's
        assert recall(ids, topk(refs[metric], 10)) >= 0.95


@pytest.mark.parametrize("variant", ["float32", "int8+float", "float16+float"])
@pytest.mark.parametrize("metric", METRICS)
def test_exact_search_equals_numpy(clustered, metric, variant):
    x, q, refs = clustered
    storage = variant.split("+")[0]
    index = build(x[:3000], metric, storage, keep_float="+" in variant)
    ids, scores = index.search(q[:100], k=10, exact=True, threads=2)
    assert_exact_topk(ids, scores, refs[metric][:100, :3000], 10)


@pytest.mark.parametrize("metric", METRICS)
def test_scores_are_the_metric(clustered, built, metric):
    """Graph results carry cosine similarities, dot products or negated squared distances."""
    x, q, refs = clustered
    ids, scores = built(metric).search(q, k=10, ef=64)
    assert (ids >= 0).all()
    xs, qs = x[ids].astype(np.float64), q.astype(np.float64)[:, None, :]
    if metric == "cosine":
        expected = (xs * qs).sum(-1) / np.linalg.norm(xs, axis=-1) / np.linalg.norm(qs, axis=-1)
        assert (scores <= 1 + 1e-5).all()
    elif metric == "ip":
        expected = (xs * qs).sum(-1)
    else:
        expected = -((xs - qs) ** 2).sum(-1)
        assert (scores <= 0).all()
    np.testing.assert_allclose(scores, expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(scores, np.take_along_axis(refs[metric], ids, 1), atol=ATOL)


def test_cosine_stores_normalised_vectors(clustered, built):
    x = clustered[0]
    rows = stored_rows(built("cosine"), range(50))
    np.testing.assert_allclose(
        rows, x[:50] / np.linalg.norm(x[:50], axis=1, keepdims=True), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(stored_rows(built("ip"), range(50)), x[:50])


def test_storage_rows_are_close_to_the_originals(clustered, built):
    x = clustered[0]
    f16 = stored_rows(built("ip", "float16"), range(200))
    nearest = x[:200].astype(np.float16).astype(np.float32)  # round half to even
    # Half-precision rounding: to the nearest value; exact ties are rounded away from zero
    # (numpy rounds them to even), so those may differ by one step.
    differ = f16 != nearest
    assert differ.mean() < 1e-3
    np.testing.assert_allclose(
        np.abs(f16[differ] - x[:200][differ]), np.abs(nearest[differ] - x[:200][differ]), rtol=1e-6
    )
    i8 = stored_rows(built("ip", "int8"), range(200))
    step = (x.max(0) - x.min(0)) / 255
    assert (np.abs(i8 - x[:200]) <= step / 2 + 1e-6).all()
    np.testing.assert_array_equal(stored_rows(built("ip", "int8+float"), range(200)), x[:200])


# ---------------------------------------------------------------------------- threads and graph
@pytest.mark.parametrize("metric", METRICS)
def test_threaded_build_recall_matches_single_threaded(clustered, built, metric):
    _, q, refs = clustered
    truth = topk(refs[metric], 10)
    one = recall(built(metric, threads=1).search(q, k=10, ef=64)[0], truth)
    two = recall(built(metric, threads=2).search(q, k=10, ef=64)[0], truth)
    assert two >= one - 0.01


def check_graph_shape(index: HnswIndex) -> np.ndarray:
    """Asserts the structure of the graph; returns the level-0 in-degree of every node."""
    m = index.M
    n = index.stats()["n_vectors"]
    links = graph(index)
    in_degree = np.zeros(n, dtype=np.int64)
    for node, levels in enumerate(links):
        for level, ls in enumerate(levels):
            assert len(ls) <= (2 * m if level == 0 else m), (node, level, len(ls))
            assert len(set(ls.tolist())) == len(ls), f"node {node}: duplicate links"
            assert node not in ls.tolist(), f"node {node}: links to itself"
            assert (ls < n).all()
            for v in ls.tolist():  # a neighbour at a level exists at that level
                assert len(links[v]) > level, (node, level, v)
        in_degree[levels[0]] += 1
    # Upper levels thin out geometrically (about 1/M of the nodes per level).
    per_level = np.bincount([len(levels) for levels in links])
    assert abs(per_level[1] / n - (1 - 1 / m)) < 0.05 and len(per_level) >= 3
    return in_degree


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_threaded_build_graph_shape(built, metric, variant):
    """A threaded build links every node about as well as a single-threaded one."""
    two = check_graph_shape(built(metric, variant, threads=2))
    one = check_graph_shape(built(metric, variant, threads=1))
    assert (two == 0).sum() <= (one == 0).sum() + 2
    assert (two == 0).sum() <= N // 500


@pytest.mark.parametrize("metric", METRICS)
def test_every_node_has_an_in_link(built, metric):
    """A node that no other node links to at level 0 can never be returned by a graph search
    (unless it is the entry point). Single-threaded builds: deterministic."""
    in_degree = check_graph_shape(built(metric, threads=1))
    assert (in_degree > 0).all(), f"nodes never linked to: {np.flatnonzero(in_degree == 0)}"
    # M = 8: full neighbour lists are chosen again often, which can drop a node's last in-link.
    x, _ = mixture(1005, 3000, 32, 10)
    in_degree = check_graph_shape(build(x, metric, threads=1, M=8))
    assert (in_degree > 0).all(), f"M=8: nodes never linked to: {np.flatnonzero(in_degree == 0)}"


def test_small_degree_graph_shape(clustered):
    index = build(clustered[0][:2000], "l2", M=4, ef_construction=40)
    check_graph_shape(index)
    assert max(len(index.links(i)) for i in range(2000)) == 8


def test_batch_search_threads_give_identical_results(clustered, built):
    q = clustered[1]
    for metric, variant in [("cosine", "float32"), ("l2", "int8"), ("ip", "float16")]:
        index = built(metric, variant)
        one = index.search(q, k=10, ef=64, threads=1)
        for threads in (2, 0):
            results_equal(index.search(q, k=10, ef=64, threads=threads), one)


def test_single_threaded_build_is_reproducible(clustered):
    x, q, _ = clustered
    a, b = build(x[:1500], "l2", threads=1), build(x[:1500], "l2", threads=1)
    assert [[ls.tolist() for ls in n] for n in graph(a)] == [
        [ls.tolist() for ls in n] for n in graph(b)
    ]
    results_equal(a.search(q, k=10), b.search(q, k=10))
    c = build(x[:1500], "l2", threads=1, seed=7)
    assert [len(n) for n in graph(c)] != [len(n) for n in graph(a)]  # the seed draws levels


# ---------------------------------------------------------------------------- deletes
DELETE_CASES = [("cosine", "float32"), ("l2", "int8"), ("ip", "float16"), ("ip", "int4")]


@pytest.mark.parametrize(("metric", "variant"), DELETE_CASES)
def test_deleted_ids_are_never_returned(clustered, metric, variant):
    x, q, refs = clustered
    index = build(x, metric, *STORAGES[variant])
    rng = np.random.default_rng(11)
    gone = rng.choice(N, N * 3 // 10, replace=False).astype(np.uint32)
    assert index.remove(gone) == len(gone)
    assert index.remove(gone[:100]) == 0  # counted once
    live = np.ones(N, bool)
    live[gone] = False
    st = index.stats()
    assert (st["n_vectors"], st["n_live"]) == (N, int(live.sum()))
    assert [index.is_live(int(i)) for i in gone[:20]] == [False] * 20
    assert all(index.is_live(int(i)) for i in np.flatnonzero(live)[:20])
    for exact in (False, True):
        ids, scores = index.search(q, k=50, ef=64, exact=exact)
        assert not np.isin(ids, gone).any()
        assert (ids >= 0).all() and np.isfinite(scores).all()
    eligible = np.broadcast_to(live, refs[metric].shape)
    if variant == "float32":
        ids, scores = index.search(q, k=10, exact=True)
        assert_exact_topk(ids, scores, refs[metric], 10, eligible)
    exact_ids, _ = index.search(q, k=10, exact=True)
    assert recall(index.search(q, k=10, ef=64)[0], exact_ids) >= 0.95


def test_remove_out_of_range_removes_nothing(clustered):
    index = build(clustered[0][:200], "ip")
    with pytest.raises(IndexError, match="not in the index"):
        index.remove(np.array([3, 200], dtype=np.uint32))
    assert index.stats()["n_live"] == 200 and index.is_live(3)
    assert not index.is_live(200)


@pytest.mark.parametrize(("metric", "variant"), DELETE_CASES)
def test_replace_makes_deleted_slots_live(clustered, metric, variant):
    x, q, _ = clustered
    index = build(x[:3000], metric, *STORAGES[variant])
    slots = np.arange(0, 3000, 10, dtype=np.uint32)
    index.remove(slots)
    new = x[3000 : 3000 + len(slots)]
    index.replace(slots, new)
    assert index.stats()["n_live"] == 3000 and index.stats()["n_vectors"] == 3000
    assert all(index.is_live(int(i)) for i in slots)
    exact_top = index.search(new, k=1, exact=True)[0][:, 0]
    assert (index.search(new, k=1, ef=64)[0][:, 0] == exact_top).mean() >= 0.98
    if metric != "ip":  # a vector is its own nearest neighbour (inner product: not always)
        assert (exact_top == slots).mean() >= 0.99
        # The old vectors are gone: exact search for them no longer returns their slot first.
        old_ids, _ = index.search(x[slots], k=1, exact=True)
        assert (old_ids[:, 0] != slots).all()
    # Against the vectors now stored.
    now = x[:3000].copy()
    now[slots] = new
    exact_ids, _ = index.search(q, k=10, exact=True)
    if variant == "float32":
        assert_exact_topk(
            exact_ids, index.search(q, k=10, exact=True)[1], reference_scores(now, q, metric), 10
        )
    assert recall(index.search(q, k=10, ef=64)[0], exact_ids) >= 0.95


def test_replace_a_live_vector(clustered):
    x = clustered[0]
    index = build(x[:1000], "l2")
    new = -x[5:6] * 3
    index.replace(np.array([5], dtype=np.uint32), new)
    assert index.stats()["n_live"] == 1000
    ids, scores = index.search(new, k=1, ef=64)
    assert ids[0, 0] == 5 and scores[0, 0] == pytest.approx(0, abs=1e-6)
    assert 5 not in index.search(x[5:6], k=10, exact=True)[0]


def test_replace_errors_change_nothing(clustered):
    x = clustered[0]
    index = build(x[:100], "ip")
    before = index.search(x[:5], k=5)
    with pytest.raises(IndexError):
        index.replace(np.array([1, 100], dtype=np.uint32), x[:2])
    with pytest.raises(ValueError, match="same length"):
        index.replace(np.array([1, 2], dtype=np.uint32), x[:1])
    bad = x[:2].copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        index.replace(np.array([1, 2], dtype=np.uint32), bad)
    results_equal(index.search(x[:5], k=5), before)


@pytest.mark.parametrize(("metric", "variant"), [*DELETE_CASES, ("cosine", "int8")])
def test_compact(clustered, metric, variant):
    x, q, refs = clustered
    index = build(x[:4000], metric, *STORAGES[variant])
    rng = np.random.default_rng(3)
    gone = np.sort(rng.choice(4000, 1000, replace=False))
    index.remove(gone.astype(np.uint32))
    live = np.setdiff1d(np.arange(4000), gone)
    rows_before = stored_rows(index, live)
    memory_before = index.stats()["memory_bytes"]
    remap = index.compact(threads=2)
    assert remap.dtype == np.int64 and remap.shape == (4000,)
    assert (remap[gone] == -1).all()
    np.testing.assert_array_equal(remap[live], np.arange(len(live)))
    st = index.stats()
    assert st["n_vectors"] == st["n_live"] == len(live)
    assert st["memory_bytes"] < memory_before
    rows_after = stored_rows(index)  # the live vectors only, in order
    atol = 0 if variant == "float32" else 1e-6
    np.testing.assert_allclose(rows_after, rows_before, rtol=1e-6, atol=atol)
    truth = topk(refs[metric][:, live], 10)
    exact_ids, _ = index.search(q, k=10, exact=True)
    if variant == "float32":
        np.testing.assert_array_equal(exact_ids, truth)
    assert recall(index.search(q, k=10, ef=64)[0], exact_ids) >= 0.95
    check_graph_shape(index)
    # Still growing afterwards: new ids follow the compacted ones.
    assert index.add(x[4000:4010]) == len(live)
    assert index.search(x[4000:4010], k=1, ef=64)[0][:, 0].tolist() == list(
        range(len(live), len(live) + 10)
    )


def test_compact_without_deletions_is_identity(clustered):
    x, q, _ = clustered
    index = build(x[:1000], "ip")
    before = index.search(q, k=10)
    np.testing.assert_array_equal(index.compact(), np.arange(1000))
    results_equal(index.search(q, k=10), before)


@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_delete_everything(clustered, variant):
    x, q, _ = clustered
    index = build(x[:500], "l2", *STORAGES[variant])
    assert index.remove(np.arange(500, dtype=np.uint32)) == 500
    assert index.stats()["n_live"] == 0
    for options in ({}, {"exact": True}, {"allow": bitset(500, range(500))}, {"rescore": 20}):
        ids, scores = index.search(q[:20], k=5, **options)
        assert (ids == -1).all() and np.isneginf(scores).all()
    np.testing.assert_array_equal(index.compact(), np.full(500, -1))
    assert index.stats()["n_vectors"] == 0
    ids, _ = index.search(q[:3], k=5)
    assert (ids == -1).all()
    assert index.add(x[:50]) == 0
    ids, _ = index.search(x[:50], k=1, ef=64)
    assert ids[:, 0].tolist() == list(range(50))


# ---------------------------------------------------------------------------- filters
@pytest.mark.parametrize("metric", METRICS)
def test_filter_half_of_the_documents(clustered, built, metric):
    _, q, refs = clustered
    index = built(metric)
    rng = np.random.default_rng(8)
    allowed = rng.random(N) < 0.5
    allow = bitset(N, np.flatnonzero(allowed))
    ids, _ = index.search(q, k=10, ef=64, allow=allow)
    assert allowed[ids[ids >= 0]].all()
    exact_ids, exact_scores = index.search(q, k=10, exact=True, allow=allow)
    assert_exact_topk(
        exact_ids, exact_scores, refs[metric], 10, np.broadcast_to(allowed, refs[metric].shape)
    )
    assert recall(ids, exact_ids) >= 0.95


def test_sparse_filter_walks_outgrow_their_visited_set(clustered, built):
    # With 3% of the documents allowed, a walk expands far more nodes than ef before its
    # results fill up, so its visited set (first sized for ef x 2M ids) grows mid-walk. An id
    # lost in the growth would be scored twice and could come back twice.
    _, q, refs = clustered
    index = built("ip")
    allowed = np.random.default_rng(10).random(N) < 0.03
    ids, scores = index.search(q, k=10, ef=64, allow=bitset(N, np.flatnonzero(allowed)))
    assert (ids >= 0).all() and allowed[ids].all()
    for row_ids, row_scores, row_ref in zip(ids, scores, refs["ip"], strict=True):
        assert len(set(row_ids.tolist())) == 10
        np.testing.assert_allclose(row_scores, row_ref[row_ids], rtol=1e-5, atol=1e-5)
    truth = topk(refs["ip"], 10, np.broadcast_to(allowed, refs["ip"].shape))
    assert recall(ids, truth) >= 0.9


@pytest.mark.parametrize("metric", METRICS)
def test_tiny_filter_is_answered_exactly(clustered, built, metric):
    _, q, refs = clustered
    index = built(metric)
    allowed_ids = np.random.default_rng(9).choice(N, N // 100, replace=False)
    allow = bitset(N, allowed_ids)
    exact = index.search(q, k=10, exact=True, allow=allow)
    results_equal(index.search(q, k=10, ef=64, allow=allow, exact_below=N // 100), exact)
    allowed = np.zeros(N, bool)
    allowed[allowed_ids] = True
    assert_exact_topk(*exact, refs[metric], 10, np.broadcast_to(allowed, refs[metric].shape))
    # Without the switch the graph walk still keeps to the filter.
    ids, _ = index.search(q, k=10, ef=64, allow=allow)
    assert allowed[ids[ids >= 0]].all()


def test_short_and_long_bitsets(clustered, built):
    _, q, refs = clustered
    index = built("l2")
    allow = bitset(1000, range(1000))  # 16 words: ids from 1000 on are past the end
    for exact in (False, True):
        ids, _ = index.search(q, k=10, ef=64, exact=exact, allow=allow)
        assert ((ids >= 0) & (ids < 1000)).all()
    eligible = np.zeros(refs["l2"].shape, bool)
    eligible[:, :1000] = True
    assert_exact_topk(*index.search(q, k=10, exact=True, allow=allow), refs["l2"], 10, eligible)
    # A bitset that ends inside a word: the ids of the last word past n are cut off, too.
    partial = bitset(N, range(N))[:-1]
    ids, _ = index.search(q, k=10, exact=True, allow=partial)
    assert ids.max() < 64 * len(partial)
    for empty in (np.zeros(0, np.uint64), np.zeros(3, np.uint64)):
        ids, scores = index.search(q[:10], k=5, allow=empty)
        assert (ids == -1).all() and np.isneginf(scores).all()
        ids, _ = index.search(q[:10], k=5, allow=empty, exact_below=10)
        assert (ids == -1).all()
    # Bits past the end of the index are ignored.
    longer = np.concatenate([bitset(N, range(N)), np.full(4, ~np.uint64(0))])
    results_equal(index.search(q, k=10, allow=longer), index.search(q, k=10))


def test_filter_and_deletes(clustered):
    x, q, _ = clustered
    index = build(x[:2000], "cosine")
    index.remove(np.arange(0, 2000, 2, dtype=np.uint32))  # even ids deleted
    allow = bitset(2000, range(0, 2000, 3))  # multiples of 3 allowed: 0, 6, 12... are deleted
    for options in ({}, {"exact": True}, {"exact_below": 5000}):
        ids, _ = index.search(q, k=20, allow=allow, **options)
        got = ids[ids >= 0]
        assert got.size and (got % 3 == 0).all() and (got % 2 == 1).all()


def test_allow_must_be_uint64(clustered, built):
    q = clustered[1]
    for bad in (np.zeros(3, np.int64), np.zeros((2, 2), np.uint64), np.zeros(8, np.uint32)):
        with pytest.raises(ValueError, match="allow"):
            built("ip").search(q[:2], allow=bad)


# ---------------------------------------------------------------------------- matryoshka funnel
@pytest.fixture(scope="module")
def matryoshka():
    """64-dim vectors whose first 32 dimensions carry most of the signal."""
    scale = np.where(np.arange(64) < 32, 1.0, 0.4)
    x, q = mixture(3, 5000, 64, 200, scale=scale)
    return x, q, {m: reference_scores(x, q, m) for m in METRICS}


@pytest.mark.parametrize("variant", ["float32", "int8+float", "float16", "int4+float"])
@pytest.mark.parametrize("metric", METRICS)
def test_funnel_rescores_the_prefix_candidates(matryoshka, metric, variant):
    x, q, refs = matryoshka
    index = build(x, metric, *STORAGES[variant])
    # The candidates: the whole beam of a walk on the first 32 dimensions.
    candidates, _ = index.search(q, k=64, ef=64, dims=32)
    ids, scores = index.search(q, k=10, ef=64, dims=32, rescore=64)
    fewer, _ = index.search(q, k=10, ef=64, dims=32, rescore=30)
    # Full-dimension scores of the stored rows (float16 rows are rounded).
    ref = (
        refs[metric]
        if variant != "float16"
        else reference_scores(stored_rows(index), q, "ip" if metric == "cosine" else metric)
    )
    if variant == "float16" and metric == "cosine":
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        ref = qn.astype(np.float64) @ stored_rows(index).T.astype(np.float64)
    for qi in range(len(q)):
        assert set(ids[qi].tolist()) <= set(candidates[qi].tolist())
        assert set(fewer[qi].tolist()) <= set(candidates[qi].tolist())
    np.testing.assert_allclose(scores, np.take_along_axis(ref, ids, 1), rtol=RTOL, atol=ATOL)
    # The best 10 of the candidates by their full score, best first.
    cand_scores = np.take_along_axis(ref, candidates, 1)
    order = np.argsort(-cand_scores, axis=1, kind="stable")[:, :10]
    np.testing.assert_allclose(
        scores, np.take_along_axis(cand_scores, order, 1), rtol=RTOL, atol=ATOL
    )
    # Rescoring recovers what the prefix alone misses.
    truth = topk(refs[metric], 10)
    prefix_only = recall(index.search(q, k=10, ef=64, dims=32)[0], truth)
    funnel = recall(ids, truth)
    assert funnel > prefix_only
    assert funnel >= 0.95


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_prefix_scores_without_rescoring(matryoshka, metric):
    x, q, _ = matryoshka
    index = build(x, metric)
    ids, scores = index.search(q, k=10, exact=True, dims=32)
    assert_exact_topk(ids, scores, reference_scores(x[:, :32], q[:, :32], metric), 10)
    f16 = build(x, metric, "float16")
    ids, scores = f16.search(q, k=10, exact=True, dims=32)
    rows = stored_rows(f16)[:, :32]
    assert_exact_topk(ids, scores, reference_scores(rows, q[:, :32], metric), 10)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_int8_prefix_scores_equal_an_index_of_the_prefix(matryoshka, metric):
    """int8 ranges are per dimension, so the first 32 dimensions of a 64-dim index hold the
    same codes as a 32-dim index of the prefixes: exact prefix search must agree."""
    x, q, _ = matryoshka
    full = build(x[:2000], metric, "int8")
    prefix = build(np.ascontiguousarray(x[:2000, :32]), metric, "int8")
    np.testing.assert_array_equal(
        stored_rows(full, range(100))[:, :32], stored_rows(prefix, range(100))
    )
    a_ids, a_scores = full.search(q, k=10, exact=True, dims=32)
    b_ids, b_scores = prefix.search(np.ascontiguousarray(q[:, :32]), k=10, exact=True)
    np.testing.assert_allclose(a_scores, b_scores, rtol=RTOL, atol=ATOL)
    assert recall(a_ids, b_ids) >= 0.99


def test_dims_validation(matryoshka):
    x, q, _ = matryoshka
    index = build(x[:500], "ip")
    for dims in (8, 24, 33, 80, 128):
        with pytest.raises(ValueError, match=r"multiple of 16 and at most 64.*got " + str(dims)):
            index.search(q[:2], k=5, dims=dims)
    results_equal(index.search(q, k=5, dims=64), index.search(q, k=5))
    results_equal(index.search(q, k=5, exact=True, dims=0), index.search(q, k=5, exact=True))
    index.search(q, k=5, dims=48)


def test_rescore_smaller_than_k_still_returns_k_results(clustered, built):
    """rescore counts the candidates to rescore; it must not shrink the result list."""
    q = clustered[1]
    index = built("ip")
    for exact in (False, True):
        ids, scores = index.search(q[:20], k=10, ef=64, rescore=5, exact=exact)
        assert (ids >= 0).all() and np.isfinite(scores).all()


# ---------------------------------------------------------------------------- files
ROUND_TRIP = ["float32", "int8+float", "int8", "float16", "float16+float", "int4", "int4+float"]


def variant_params(variant: str) -> tuple[str, bool]:
    if variant in STORAGES:
        return STORAGES[variant]
    return variant.split("+")[0], True


@pytest.fixture(scope="module")
def small_data():
    return mixture(21, 2000, 32, 50)


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("variant", ROUND_TRIP)
def test_save_load_round_trip(tmp_path, small_data, variant, mmap):
    x, q = small_data
    storage, keep_float = variant_params(variant)
    metric = {"float32": "cosine", "int8": "l2"}.get(storage, "ip")
    index = HnswIndex(
        32, metric=metric, storage=storage, keep_float=keep_float, M=8, ef_construction=60, seed=5
    )
    index.add(x[:1500], threads=1)
    index.add(x[1500:1900], threads=2)
    index.remove(np.arange(0, 1900, 17, dtype=np.uint32))
    path = tmp_path / "index.frdx"
    extra = b'{"x": 1}\x00\xff'
    index.save(str(path), extra)
    loaded, got_extra = HnswIndex.load(str(path), mmap=mmap)
    assert got_extra == extra
    for attr in ("dim", "metric", "storage", "keep_float", "M", "ef_construction"):
        assert getattr(loaded, attr) == getattr(index, attr), attr
    st, lst = index.stats(), loaded.stats()
    assert (lst["n_vectors"], lst["n_live"], lst["kernels"]) == (1900, 1788, st["kernels"])
    assert st["n_live"] == 1788
    allow = bitset(1900, range(0, 1900, 3))
    for options in (
        {},
        {"exact": True},
        {"allow": allow},
        {"rescore": 30, "dims": 16},
        {"allow": allow, "exact_below": 1000},
    ):
        results_equal(loaded.search(q, k=10, **options), index.search(q, k=10, **options))
    for i in range(0, 1900, 97):
        assert loaded.is_live(i) == index.is_live(i)
        np.testing.assert_array_equal(loaded.get_vector(i), index.get_vector(i))
        for level in range(3):
            np.testing.assert_array_equal(loaded.links(i, level), index.links(i, level))
    # Saving the loaded index writes the same bytes.
    again = tmp_path / "again.frdx"
    loaded.save(str(again), extra)
    assert again.read_bytes() == path.read_bytes()
    # The level generator's state is saved: further single-threaded adds agree.
    assert index.add(x[1900:], threads=1) == loaded.add(x[1900:], threads=1) == 1900
    results_equal(loaded.search(q, k=10), index.search(q, k=10))


def test_memory_of_copy_and_mapped_loads(tmp_path, small_data):
    x, _ = small_data
    index = build(x, "ip", "int8", True)
    path = tmp_path / "i.frdx"
    index.save(str(path))
    a, _ = HnswIndex.load(str(path))
    b, _ = HnswIndex.load(str(path), mmap=True)
    assert a.stats() == b.stats()
    assert a.stats()["memory_bytes"] > x.nbytes  # float32 rows kept beside the codes


def test_mmap_index_copies_on_write_and_leaves_file_untouched(tmp_path, small_data):
    x, q = small_data
    index = build(x[:1500], "l2", "int8", True, threads=1)
    index.remove(np.arange(0, 1500, 10, dtype=np.uint32))
    path = tmp_path / "m.frdx"
    index.save(str(path), b"e")
    digest = file_digest(path)
    mapped, _ = HnswIndex.load(str(path), mmap=True)
    copy, _ = HnswIndex.load(str(path))

    def change(ix):
        ix.add(x[1500:1700], threads=1)
        ix.remove(np.array([3, 1600], dtype=np.uint32))
        ix.replace(np.array([0, 10], dtype=np.uint32), x[1700:1702], threads=1)

    change(mapped)
    change(copy)
    assert mapped.stats() == copy.stats()
    results_equal(mapped.search(q, k=10), copy.search(q, k=10))
    results_equal(mapped.search(q, k=10, exact=True), copy.search(q, k=10, exact=True))
    assert file_digest(path) == digest
    mapped2, _ = HnswIndex.load(str(path), mmap=True)
    mapped2.remove(np.array([5], dtype=np.uint32))
    assert mapped2.stats()["n_live"] == mapped2.stats()["n_vectors"] - 151
    mapped2.compact()
    assert mapped2.stats()["n_vectors"] == 1349
    assert file_digest(path) == digest
    fresh, _ = HnswIndex.load(str(path), mmap=True)
    results_equal(fresh.search(q, k=10), index.search(q, k=10))


def test_save_over_a_mapped_file_keeps_the_mapped_index_valid(tmp_path, small_data):
    x, q = small_data
    path = tmp_path / "s.frdx"
    build(x[:800], "ip").save(str(path))
    mapped, _ = HnswIndex.load(str(path), mmap=True)
    expected = mapped.search(q, k=10)
    build(x[800:], "l2").save(str(path))
    results_equal(mapped.search(q, k=10), expected)
    assert HnswIndex.load(str(path))[0].metric == "l2"


@pytest.mark.parametrize("storage", ["float32", "int8"])
def test_empty_index_round_trip(tmp_path, small_data, storage):
    x, q = small_data
    path = tmp_path / "empty.frdx"
    HnswIndex(32, metric="l2", storage=storage).save(str(path))
    for mmap in (False, True):
        index, extra = HnswIndex.load(str(path), mmap=mmap)
        assert extra == b""
        assert index.stats()["n_vectors"] == 0 and index.storage == storage
        ids, scores = index.search(q[:3], k=4)
        assert (ids == -1).all() and np.isneginf(scores).all()
        assert index.add(x[:100]) == 0  # int8: the ranges are trained now
        assert index.search(x[:5], k=1, ef=64)[0][:, 0].tolist() == [0, 1, 2, 3, 4]


def test_save_errors(tmp_path, small_data):
    index = build(small_data[0][:50], "ip")
    with pytest.raises(OSError):
        index.save(str(tmp_path / "missing" / "x.frdx"))
    with pytest.raises(OSError):
        index.save(str(tmp_path))


# ---------------------------------------------------------------------------- corrupted files
@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    x, q = mixture(99, 120, 16, 10)
    index = build(x, "ip", "int8", True, threads=1, M=4, ef_construction=20)
    index.remove(np.array([3, 77], dtype=np.uint32))
    path = tmp_path_factory.mktemp("corrupt") / "small.frdx"
    index.save(str(path), b'{"some": "extra"}')
    return path.read_bytes(), q, index.search(q, k=5, exact=True)


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_flipped_bytes_are_detected(tmp_path, small_file):
    data, q, expected = small_file
    assert len(data) < 40_000
    rng = np.random.default_rng(4)
    # The header and section table, then a sample of the sections.
    positions = sorted(set(range(400)) | set(rng.choice(len(data), 600, replace=False).tolist()))
    target = tmp_path / "flipped.frdx"
    loaded_anyway = []
    for i in positions:
        bad = bytearray(data)
        bad[i] ^= 1 << (i % 8)
        for mmap in (False, True) if i % 5 == 0 else (False,):
            try:
                index, _ = HnswIndex.load(write(target, bytes(bad)), mmap=mmap)
            except fastrag.IndexFormatError:
                continue
            loaded_anyway.append(i)
            results_equal(index.search(q, k=5, exact=True), expected)
    assert loaded_anyway == []


@pytest.mark.parametrize("length", [0, 1, 8, 63, 64, 65, 200, -4096, -64, -1])
def test_truncated_file(tmp_path, small_file, length):
    data = small_file[0]
    for mmap in (False, True):
        with pytest.raises(fastrag.IndexFormatError):
            HnswIndex.load(write(tmp_path / "t.frdx", data[:length]), mmap=mmap)


@pytest.mark.parametrize("tail", [b"\x00", b"x" * 64, b"\x00" * 4096])
def test_appended_bytes(tmp_path, small_file, tail):
    data = small_file[0]
    for mmap in (False, True):
        with pytest.raises(fastrag.IndexFormatError):
            HnswIndex.load(write(tmp_path / "a.frdx", data + tail), mmap=mmap)


def test_foreign_files(tmp_path, small_file, golden_dir):
    data = small_file[0]
    rng = np.random.default_rng(1)
    foreign = {
        "random": rng.bytes(5000),
        "random_with_magic": data[:8] + rng.bytes(3000),
        "zeros": bytes(4096),
        "bm25": (golden_dir / "sparse_v1.fridx").read_bytes(),
    }
    sparse = _core.SparseIndex()
    sparse.add(np.array([0, 2, 3], dtype=np.int64), np.array([1, 2, 1], dtype=np.uint32))
    sparse.save(str(tmp_path / "sparse.fridx"))
    foreign["sparse"] = (tmp_path / "sparse.fridx").read_bytes()
    for name, blob in foreign.items():
        for mmap in (False, True):
            with pytest.raises(fastrag.IndexFormatError):
                HnswIndex.load(write(tmp_path / f"{name}.bin", blob), mmap=mmap)
    with pytest.raises(fastrag.IndexFormatError, match="another kind"):
        HnswIndex.load(write(tmp_path / "k.bin", foreign["sparse"]))
    # And the other way round.
    with pytest.raises(fastrag.IndexFormatError, match="another kind"):
        _core.SparseIndex.load(write(tmp_path / "d.bin", data))


def test_newer_format_version_is_refused(tmp_path, small_file):
    data = small_file[0]
    for version in (3, 0, 0xFFFFFFFF):
        bad = bytearray(data)
        bad[8:12] = version.to_bytes(4, "little")
        with pytest.raises(fastrag.IndexFormatError, match="version"):
            HnswIndex.load(write(tmp_path / "v.frdx", bytes(bad)))


def test_int4_file_damage_is_refused(tmp_path, golden_dir):
    """An int4 index read as version 1 (which has no int8-row sections), or with a bad int8
    step, is refused with IndexFormatError, copied and mapped."""
    data = (golden_dir / "dense_v2_int4.frdx").read_bytes()
    as_v1 = bytearray(data)
    as_v1[8:12] = (1).to_bytes(4, "little")
    step_off = section_table(data)[12][2]  # kRStep: the int8 steps
    nan_step = bytearray(data)
    nan_step[step_off : step_off + 4] = np.float32(np.nan).tobytes()
    for bad, what in ((as_v1, "int4 storage.s int8"), (nan_step, "int8 steps")):
        for mmap in (False, True):
            with pytest.raises(fastrag.IndexFormatError, match=what):
                HnswIndex.load(write(tmp_path / "bad.frdx", reseal(bad)), mmap=mmap)


def test_missing_file_and_directory(tmp_path):
    for mmap in (False, True):
        with pytest.raises(OSError, match="no such index file"):
            HnswIndex.load(str(tmp_path / "nope.frdx"), mmap=mmap)
        with pytest.raises(OSError):
            HnswIndex.load(str(tmp_path), mmap=mmap)


def test_checksum_reimplementation_matches(small_file):
    data = small_file[0]
    assert reseal(bytearray(data)) == data


# Sections of hnsw.cpp: 1 meta (u64: dim, metric, storage, keep_float, M, ef_construction,
# seed, n, n_live, entry, max_level, rng state, trained, padded dim), 2 level-0 records
# (u32: link count, links, padding, then the stored row), 3 float32 rows, 4 int8 lows,
# 5 int8 steps, 6 int8 norms, 7 levels (u8), 8 upper offsets (u64), 9 upper links, 10 deleted.
# Record words per node for M = 4: 16 link words + 4 words of int8 codes.
STRUCTURAL_DAMAGE = {
    "dim_zero": (1, 0, 0),
    "dim_huge": (1, 0, 1 << 20),
    "metric": (1, 1, 7),
    "storage": (1, 2, 9),
    "M_one": (1, 4, 1),
    "M_huge": (1, 4, 4096),
    "M_plus_one": (1, 4, "+1"),
    "ef_construction_zero": (1, 5, 0),
    "n_plus_one": (1, 7, "+1"),
    "n_huge": (1, 7, 1 << 40),
    "n_live": (1, 8, "-1"),
    "entry_out_of_range": (1, 9, 120),
    "entry_minus_one": (1, 9, M64),
    "max_level": (1, 10, "+1"),
    "untrained": (1, 12, 0),
    "padded_dim": (1, 13, 32),
    "link_count": (2, 0, 9),
    "link_target": (2, 1, 120),
    "step_zero": (5, 0, 0),
    "step_nan": (5, 1, 0x7FC00000),
    "step_huge": (5, 2, 0x7E967699),  # finite, but its codes dequantise to infinity
    "level_huge": (7, 5, 31),
    "upper_offset": (8, 1, "+1"),
    "upper_offset_last": (8, 120, "-1"),
    "deleted_bit": (10, 0, 0),
}


@pytest.mark.parametrize("damage", sorted(STRUCTURAL_DAMAGE))
def test_structural_damage_with_valid_checksum(tmp_path, small_file, damage):
    data = small_file[0]
    sid, index, value = STRUCTURAL_DAMAGE[damage]
    _, size, off, nbytes = section_table(data)[sid]
    assert (index + 1) * size <= nbytes
    pos = off + index * size
    old = int.from_bytes(data[pos : pos + size], "little")
    new = old + int(value) if isinstance(value, str) else value
    bad = bytearray(data)
    bad[pos : pos + size] = (new & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    assert bytes(bad) != data
    for mmap in (False, True):
        with pytest.raises(fastrag.IndexFormatError):
            HnswIndex.load(write(tmp_path / "bad.frdx", reseal(bad)), mmap=mmap)


def test_upper_link_to_a_node_without_that_level(tmp_path, small_file):
    data = small_file[0]
    table = section_table(data)
    levels = np.frombuffer(data, np.uint8, table[7][3], table[7][2])
    upper = np.frombuffer(data, np.uint32, table[9][3] // 4, table[9][2])
    assert upper.size and upper[0] > 0  # the first node with levels has level-1 links
    bad = bytearray(data)
    pos = table[9][2] + 4  # its first level-1 link
    bad[pos : pos + 4] = int(np.flatnonzero(levels == 0)[0]).to_bytes(4, "little")
    with pytest.raises(fastrag.IndexFormatError, match="links"):
        HnswIndex.load(write(tmp_path / "bad.frdx", reseal(bad)))


FUZZ = r"""
import sys
import numpy as np
import fastrag
from fastrag import _core
from filecheck import damage, reseal, section_table

data = open(sys.argv[1], "rb").read()
rng = np.random.default_rng(int(sys.argv[2]))
q = rng.normal(size=(5, 16)).astype(np.float32)
table = section_table(data)
loaded = 0
for case in range(int(sys.argv[3])):
    bad = damage(data, table, rng, case)
    with open(sys.argv[1] + ".bad", "wb") as f:
        f.write(reseal(bad))
    try:
        index, _ = _core.HnswIndex.load(sys.argv[1] + ".bad", mmap=case % 3 == 0)
    except fastrag.IndexFormatError:
        continue
    loaded += 1
    n = index.stats()["n_vectors"]
    for options in ({}, {"exact": True}, {"allow": np.full(2, 0x5555555555555555, np.uint64)}):
        ids, _ = index.search(q, k=20, **options)
        assert ids.max() < n
    try:  # NaN rows in a damaged file are refused when copied into a new graph
        index.add(q)
        index.remove(np.array([1], dtype=np.uint32))
        index.replace(np.array([2], dtype=np.uint32), q[:1])
        index.compact()
    except ValueError:
        pass
    index.search(q, k=10)
print("loaded", loaded)
"""


def test_random_damage_with_valid_checksum_never_crashes(tmp_path, small_file):
    """Damage that the checksum cannot see: the load refuses the file, or the index works
    (search, update, compaction) without crashing. Run in a child process, so that a crash
    fails this test instead of the test run."""
    path = tmp_path / "fuzz.frdx"
    path.write_bytes(small_file[0])
    script = tmp_path / "fuzz.py"
    script.write_text(FUZZ)
    env = {
        **os.environ,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
        ),
    }
    proc = subprocess.run(
        [sys.executable, str(script), str(path), "7", "300"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("loaded")


# ---------------------------------------------------------------------------- golden files
# tests/golden/make_golden_dense.py: 40 vectors x 16 dimensions with values in eighths (a
# linear congruential generator), added in two calls (25 + 15), id 7 deleted, built with
# M=4, ef_construction=16, seed=100, one thread, generic kernels. dense_v1.frdx: ip, float32.
# dense_v1_int8.frdx: l2, int8 with the float32 rows kept. Scores are multiples of 1/64.
# dense_v2*.frdx: the same indexes in format version 2 (same graphs), and dense_v2_int4.frdx:
# ip, int4 codes with int8 rows for rescoring (its scores: those of the dequantised int8 rows).
GOLDEN_QUERIES = (
    np.array(
        [
            [0, 2, 0, 2, 7, 6, 0, -6, 5, 4, -1, 1, 7, 6, -7, 3],
            [-3, 4, 0, 3, -8, -1, 3, 6, 0, -1, 7, 5, -4, -2, 0, -5],
            [6, 7, -2, 7, -1, -6, -3, -4, -2, -8, 4, -1, 5, 6, 5, 8],
            [3, -8, -2, 4, -5, -7, -5, 0, 7, -3, -7, -1, -3, -1, -8, -5],
        ],
        dtype=np.float32,
    )
    / 8
)
GOLDEN = {
    # name -> ((metric, storage, keep_float), ids of the exact top 5, scores x 64,
    #          links of node 1 at levels 0..3, links of nodes 0 and 39 at level 0)
    "dense_v1.frdx": (
        ("ip", "float32", False),
        [[0, 33, 13, 31, 39], [23, 15, 9, 18, 39], [35, 30, 20, 36, 17], [12, 1, 16, 5, 27]],
        [
            [217, 181, 139, 110, 109],
            [173, 122, 87, 83, 55],
            [212, 158, 130, 111, 109],
            [204, 173, 160, 153, 148],
        ],
        [[37, 2, 38, 10, 22, 15, 13], [2, 22, 21, 37], [5], [5]],
        [[13, 11, 20, 17, 8, 31], [3, 23, 19, 24]],
    ),
    "dense_v1_int8.frdx": (
        ("l2", "int8", True),
        [[0, 33, 39, 31, 2], [23, 15, 39, 3, 29], [35, 17, 30, 20, 2], [12, 17, 5, 37, 16]],
        [
            [-226, -389, -404, -429, -430],
            [-261, -443, -461, -496, -513],
            [-423, -500, -514, -554, -556],
            [-437, -500, -526, -535, -545],
        ],
        [[0, 2, 10, 15, 37], [37, 14], [5], [5]],
        [[1, 2, 8, 11, 13, 17, 20, 34], [3, 23, 31, 2]],
    ),
}
GOLDEN["dense_v2.frdx"] = GOLDEN["dense_v1.frdx"]
GOLDEN["dense_v2_int8.frdx"] = GOLDEN["dense_v1_int8.frdx"]
GOLDEN["dense_v2_int4.frdx"] = (
    ("ip", "int4", False),
    [[0, 33, 13, 39, 31], [23, 15, 9, 18, 39], [35, 30, 20, 36, 17], [12, 1, 16, 5, 27]],
    None,  # see golden_int8_rows
    [[37, 2, 38, 10, 22, 15, 13], [2, 22, 21, 37], [5], [5]],
    [[13, 11, 20, 17, 8, 31], [3, 23, 19, 24]],
)
GOLDEN_LEVELS = [int(c) for c in "1310030010000010000111100000011000000100"]  # every file


def golden_vectors() -> np.ndarray:
    """The vectors of make_golden_dense.py, generated again here."""
    values, state = [], 2
    for _ in range(40 * 16):
        state = (state * 1103515245 + 12345) % (1 << 31)
        values.append((state >> 16) % 17 - 8)
    return (np.array(values, dtype=np.float32) / 8).reshape(40, 16)


def golden_int8_rows() -> np.ndarray:
    """The golden vectors as int8 codes give them back: ranges trained on the first 25
    vectors (the first add), later values clamped to them."""
    x = golden_vectors()
    lo, hi = x[:25].min(0), x[:25].max(0)
    step = (hi - lo) / np.float32(255)
    return lo + (np.clip(np.rint((x - lo) / step) - 128, -128, 127) + 128) * step


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_file(golden_dir, name, mmap):
    path = golden_dir / name
    assert path.stat().st_size < 10_000
    index, extra = HnswIndex.load(str(path), mmap=mmap)
    assert extra == b"fastrag golden dense v1 \x00\xff\n"
    params, ids, scores64, node1, nodes_0_39 = GOLDEN[name]
    assert (index.metric, index.storage, index.keep_float) == params
    assert (index.dim, index.M, index.ef_construction) == (16, 4, 16)
    st = index.stats()
    assert (st["n_vectors"], st["n_live"]) == (40, 39)
    assert [index.is_live(i) for i in (6, 7, 8)] == [True, False, True]
    if params[1] == "int4":  # the int8 rows that rescore
        np.testing.assert_allclose(stored_rows(index), golden_int8_rows(), atol=1e-6)
        ref = reference_scores(golden_int8_rows(), GOLDEN_QUERIES, "ip")
        scores64 = np.take_along_axis(ref, np.array(ids), 1) * 64
    else:
        np.testing.assert_array_equal(stored_rows(index), golden_vectors())
    assert [len(levels) - 1 for levels in graph(index)] == GOLDEN_LEVELS
    assert [index.links(1, level).tolist() for level in range(4)] == node1
    assert [index.links(i).tolist() for i in (0, 39)] == nodes_0_39
    scores = (np.array(scores64) / 64).tolist()
    for options in (
        {"exact": True},
        {"ef": 64, "rescore": 40},
        {"ef": 64, "exact_below": 50, "allow": bitset(40, range(40))},
    ):
        got_ids, got_scores = index.search(GOLDEN_QUERIES, k=5, **options)
        assert got_ids.tolist() == ids
        if params[1] == "int4":
            np.testing.assert_allclose(got_scores, np.array(scores), atol=1e-5)
        else:
            assert got_scores.tolist() == scores  # exact in float32
    if params[1] in ("int8", "int4"):
        # Without rescoring the walk compares with the int8 (or int4) codes. The ranges were
        # trained on the first 25 vectors, so later values are clamped to them: the scores are
        # those of the dequantised int8 rows (up to the rounding of the query by some kernels).
        got_ids, got_scores = index.search(GOLDEN_QUERIES, k=5, ef=64)
        ref = reference_scores(golden_int8_rows(), GOLDEN_QUERIES, params[0])
        np.testing.assert_allclose(got_scores, np.take_along_axis(ref, got_ids, 1), atol=0.05)
        assert recall(got_ids, topk(np.where(np.arange(40) == 7, -np.inf, ref), 5)) >= 0.9
    # A loaded index (of either version) can still be updated.
    index.remove(np.array([0], dtype=np.uint32))
    assert index.add(GOLDEN_QUERIES[2:3]) == 40
    assert index.search(GOLDEN_QUERIES[2:3], k=1, ef=64)[0].tolist() == [[40]]
    index.compact()
    assert index.stats()["n_vectors"] == 39


def without_links(data: bytes) -> dict[int, bytes]:
    """The sections of a file with the links blanked out of the level-0 records and the upper
    levels dropped: what stays when only the way the graph is linked changes."""
    table = section_table(data)
    meta = np.frombuffer(data, "<u8", 14, table[1][2])
    n, m = int(meta[7]), int(meta[4])
    out = {sid: data[off : off + nbytes] for sid, (_, _, off, nbytes) in table.items()}
    if n:
        links_words = (1 + 2 * m + 15) // 16 * 16
        records = np.frombuffer(out[2], np.uint32).reshape(n, -1).copy()
        records[:, :links_words] = 0
        out[2] = records.tobytes()
    del out[9]
    return out


def test_golden_generator_reproduces_the_files(tmp_path, golden_dir, monkeypatch):
    """While fastrag writes format version 2, make_golden_dense.py writes the committed files
    (so the script documents them): the same vectors, levels, deletions, metadata and extra
    bytes, and the same bytes altogether unless the way nodes are linked has changed. After a
    version bump the old files stay as they are."""
    spec = importlib.util.spec_from_file_location(
        "make_golden_dense", golden_dir / "make_golden_dense.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    np.testing.assert_array_equal(module.vectors(), golden_vectors())
    monkeypatch.delenv("FASTRAG_KERNELS", raising=False)
    monkeypatch.setattr(module, "HERE", tmp_path)
    keep = tmp_path / "dense_v2.frdx"
    keep.write_bytes(b"keep me")
    assert module.main([]) == 0
    assert keep.read_bytes() == b"keep me"  # never overwritten without --force
    assert module.main(["--force"]) == 0
    assert os.environ.get("FASTRAG_KERNELS") is None  # the script restores the environment
    for name in module.FILES:
        written, committed = (tmp_path / name).read_bytes(), (golden_dir / name).read_bytes()
        if written[8:12] != committed[8:12]:
            pytest.skip("fastrag now writes another format version")
        if written != committed:
            assert without_links(written) == without_links(committed), name
            ids, _ = HnswIndex.load(str(tmp_path / name))[0].search(GOLDEN_QUERIES, k=5)
            assert ids.tolist() == GOLDEN[name][1], name


# ---------------------------------------------------------------------------- bad input
def test_array_dtype_shape_and_layout_errors(clustered):
    x = clustered[0]
    index = HnswIndex(64, metric="l2")
    with pytest.raises(ValueError, match="expected 64 dimensions, got 32"):
        index.add(np.ascontiguousarray(x[:5, :32]))
    with pytest.raises(ValueError, match=r"float32.*float64.*np\.asarray\(x, dtype=np\.float32\)"):
        index.add(x[:5].astype(np.float64))
    with pytest.raises(ValueError, match=r"C-contiguous.*np\.ascontiguousarray"):
        index.add(x[:10:2])
    with pytest.raises(ValueError, match="C-contiguous"):
        index.add(np.asfortranarray(x[:5]))
    with pytest.raises(ValueError, match="2 dimension"):
        index.add(x[0])
    index.add(x[:100])
    with pytest.raises(ValueError, match="expected 64 dimensions, got 65"):
        index.search(np.zeros((2, 65), np.float32))
    with pytest.raises(ValueError, match="float32"):
        index.search(x[:2].astype(np.float16))
    with pytest.raises(ValueError, match="C-contiguous"):
        index.search(x[:10:2])
    with pytest.raises(ValueError, match="uint32"):
        index.remove(np.array([1, 2], dtype=np.int64))
    with pytest.raises(ValueError, match="uint32"):
        index.replace(np.array([1], dtype=np.int32), x[:1])
    assert index.stats()["n_vectors"] == 100


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_non_finite_values_are_refused(clustered, variant, bad):
    x, q, _ = clustered
    index = HnswIndex(64, metric="ip", storage=STORAGES[variant][0])
    rows = x[:10].copy()
    rows[4, 9] = bad
    with pytest.raises(ValueError, match="vector 4 has a NaN or infinite value at dimension 9"):
        index.add(rows)  # int8: nothing trained either
    assert index.stats()["n_vectors"] == 0
    index.add(x[:200])
    with pytest.raises(ValueError, match="NaN or infinite"):
        index.add(rows)
    queries = q[:3].copy()
    queries[2, 0] = bad
    with pytest.raises(ValueError, match="vector 2 has a NaN or infinite value"):
        index.search(queries)
    assert index.stats()["n_vectors"] == 200
    assert index.search(x[:5], k=1, ef=64)[0][:, 0].tolist() == [0, 1, 2, 3, 4]


def test_int8_ranges_come_from_the_first_batch(clustered):
    x = clustered[0]
    index = HnswIndex(64, metric="l2", storage="int8")
    index.add(x[:0])  # an empty batch trains nothing
    index.add(x[:500])
    lo, hi = x[:500].min(0), x[:500].max(0)
    index.add(x[500:1000] * 3)  # out of range: clamped to the trained ranges
    rows = stored_rows(index, range(500, 1000))
    assert (rows >= lo - 1e-6).all() and (rows <= hi + 1e-6).all()


def test_zero_vectors(clustered):
    cosine = HnswIndex(8, metric="cosine")
    rows = np.ones((3, 8), np.float32)
    rows[1] = 0
    with pytest.raises(ValueError, match="vector 1 is all zeros"):
        cosine.add(rows)
    assert cosine.stats()["n_vectors"] == 0
    cosine.add(np.ones((2, 8), np.float32))
    with pytest.raises(ValueError, match="all zeros"):
        cosine.search(np.zeros((1, 8), np.float32))
    for metric in ("ip", "l2"):  # a zero vector is fine there
        index = HnswIndex(8, metric=metric)
        index.add(rows)
        ids, scores = index.search(np.zeros((1, 8), np.float32), k=3)
        assert sorted(ids[0].tolist()) == [0, 1, 2]
        assert scores[0, 0] == 0


def test_k_larger_than_collection_k_zero_and_empty_index(clustered):
    x, q, _ = clustered
    empty = HnswIndex(64)
    ids, scores = empty.search(q[:4], k=3)
    assert ids.shape == (4, 3) and (ids == -1).all() and np.isneginf(scores).all()
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    index = build(x[:30], "l2")
    for exact in (False, True):
        ids, scores = index.search(q[:4], k=50, exact=exact)
        assert (np.sort(ids[:, :30], axis=1) == np.arange(30)).all()
        assert (ids[:, 30:] == -1).all() and np.isneginf(scores[:, 30:]).all()
    ids, scores = index.search(q[:4], k=0)
    assert ids.shape == scores.shape == (4, 0)
    ids, scores = index.search(np.zeros((0, 64), np.float32), k=5)
    assert ids.shape == (0, 5)
    assert index.add(np.zeros((0, 64), np.float32)) == 30


def test_unknown_options():
    for kwargs, match in [
        ({"metric": "dot"}, "metric"),
        ({"storage": "bf16"}, "storage"),
        ({"M": 1}, "M must be"),
        ({"M": 257}, "M must be"),
        ({"ef_construction": 0}, "ef_construction"),
    ]:
        with pytest.raises(ValueError, match=match):
            HnswIndex(16, **kwargs)
    for dim in (0, 65537):
        with pytest.raises(ValueError, match="dim"):
            HnswIndex(dim)
    index = HnswIndex(16)
    index.add(np.ones((3, 16), np.float32))
    with pytest.raises(ValueError, match="ef must be >= 1"):
        index.search(np.ones((1, 16), np.float32), ef=0)
    assert not HnswIndex(16, storage="float32", keep_float=True).keep_float


def test_lookups_out_of_range(clustered):
    index = build(clustered[0][:10], "ip")
    with pytest.raises(IndexError):
        index.get_vector(10)
    with pytest.raises(IndexError):
        index.links(10)
    assert index.links(0, 99).size == 0
    assert not index.is_live(10**6)
    with pytest.raises(IndexError):
        HnswIndex(16, storage="int8").get_vector(0)


# ---------------------------------------------------------------------------- kernels
KERNELS = ("generic", "avx2", "avx512", "avx512vnni")


def with_kernels(name: str | None, make):
    """Calls make() with FASTRAG_KERNELS set to `name` (read when an index is created)."""
    old = os.environ.pop("FASTRAG_KERNELS", None)
    if name is not None:
        os.environ["FASTRAG_KERNELS"] = name
    try:
        return make()
    finally:
        os.environ.pop("FASTRAG_KERNELS", None)
        if old is not None:
            os.environ["FASTRAG_KERNELS"] = old


@pytest.fixture(scope="module")
def kernel_indexes():
    """get(kernels, metric, storage) -> index over 2000 vectors of 40 dimensions (padded to
    48: the kernels' tails and the padding are exercised); skips kernels the CPU lacks."""
    x, q = mixture(13, 2000, 40, 100)
    cache: dict = {}

    def get(kernels: str, metric: str, storage: str) -> HnswIndex:
        key = (kernels, metric, storage)
        if key not in cache:
            cache[key] = with_kernels(kernels, lambda: build(x, metric, storage))
        if cache[key].stats()["kernels"] != kernels:
            pytest.skip(f"this CPU has no {kernels} kernels")
        return cache[key]

    return x, q, get


@pytest.mark.parametrize("storage", ["float32", "float16", "int8"])
@pytest.mark.parametrize("kernels", KERNELS)
def test_kernel_parity(kernel_indexes, kernels, storage):
    """Every kernel set gives the scores of the generic one on the same data (float16 and
    int8 rows included), and its graph reaches the recall of exact search."""
    x, q, get = kernel_indexes
    for metric in METRICS:
        index = get(kernels, metric, storage)
        ref_ids, ref_scores = get("generic", metric, storage).search(q, k=10, exact=True)
        ids, scores = index.search(q, k=10, exact=True)
        np.testing.assert_allclose(scores, ref_scores, rtol=RTOL, atol=ATOL, err_msg=metric)
        assert recall(ids, ref_ids) >= 0.99, metric  # equal up to near ties
        assert recall(index.search(q, k=10, ef=64)[0], ids) >= 0.95, metric
        if storage == "float32":
            assert_exact_topk(ids, scores, reference_scores(x, q, metric), 10)
        else:  # the stored rows, scored in numpy
            rows = stored_rows(index)
            ref = reference_scores(rows, q, "ip" if metric == "cosine" else metric)
            if metric == "cosine":
                qn = q / np.linalg.norm(q, axis=1, keepdims=True)
                ref = reference_scores(rows, qn, "ip")
            np.testing.assert_allclose(
                scores, np.take_along_axis(ref, ids, 1), rtol=RTOL, atol=ATOL, err_msg=metric
            )


def assert_int4_walks_alike(tmp_path, x, q, metric: str, dims: tuple[int, ...]) -> None:
    """One int4 index over x built with the generic kernels, loaded with each kernel set the
    CPU has: the beams of walks on each prefix in `dims` (0: all dimensions) are the generic
    set's, and the generic walk at ef 64 finds the exact top 10."""
    path = str(tmp_path / "int4.frdx")
    with_kernels("generic", lambda: build(x, metric, "int4")).save(path, b"")
    ref = None
    for kernels in KERNELS:
        index = with_kernels(kernels, lambda: HnswIndex.load(path)[0])
        if index.stats()["kernels"] != kernels:
            continue
        got = [index.search(q, k=16, ef=16, dims=d) for d in dims]
        if ref is None:
            ref = got
            exact = index.search(q, k=10, exact=True)[0]
            assert recall(index.search(q, k=10, ef=64)[0], exact) >= 0.95
            continue
        for (ids, scores), (ref_ids, ref_scores) in zip(got, ref, strict=True):
            assert recall(ids, ref_ids) >= 0.99, kernels  # equal up to near ties of the rescoring
            np.testing.assert_allclose(scores, ref_scores, rtol=RTOL, atol=ATOL, err_msg=kernels)


@pytest.mark.parametrize("metric", METRICS)
def test_int4_walk_is_the_same_with_every_kernel_set(tmp_path, kernel_indexes, metric):
    """The int4 walk's dot products are integers, so every kernel set walks one graph the same
    way: one index built with the generic kernels, loaded with each set, gives the same beams
    (40 dimensions: 20 bytes of codes, the vector kernels' tails). A prefix walk too."""
    x, q, _ = kernel_indexes
    assert_int4_walks_alike(tmp_path, x, q, metric, (0, 16))


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_int4_batched_walk_on_wide_rows(tmp_path, metric):
    """The int4 walk scores a node's unvisited neighbours four rows a kernel call: at 200
    dimensions (100 bytes of codes: one whole 64-byte chunk and a masked tail) and at prefixes
    of 96 and 144 dimensions (a tail only; a chunk and a tail), every kernel set walks like the
    generic one (whose batch is rows one at a time), and the walk finds the exact top 10."""
    x, q = mixture(21, 1500, 200, 60)
    assert_int4_walks_alike(tmp_path, x, q, metric, (0, 96, 144))


@pytest.mark.parametrize("storage", ["float32", "int8", "int4"])
def test_visited_bitset_and_hash_table_walk_alike(storage):
    """Walks mark visited ids in a bitset (indexes of up to 2^21 ids) or a hash table (larger
    ones; FASTRAG_VISITED_BITS_MAX=0 forces it here): one thread builds the same graph with
    either, and searches (filtered ones and prefix walks too) return the same ids and scores."""
    x, q = mixture(22, 1200, 48, 50)

    def make():
        return build(x, "ip", storage, threads=1)

    old = os.environ.pop("FASTRAG_VISITED_BITS_MAX", None)
    try:
        os.environ["FASTRAG_VISITED_BITS_MAX"] = "0"
        hashed = make()
    finally:
        os.environ.pop("FASTRAG_VISITED_BITS_MAX", None)
        if old is not None:
            os.environ["FASTRAG_VISITED_BITS_MAX"] = old
    bits = make()
    assert (bits.stats()["visited"], hashed.stats()["visited"]) == ("bitset", "hash")
    for i in range(0, 1200, 7):
        assert bits.links(i).tolist() == hashed.links(i).tolist()
    allow = bitset(1200, range(0, 1200, 3))
    filtered = {"ef": 40, "allow": allow, "exact_below": 0}
    for options in ({"ef": 10}, {"ef": 48}, {"ef": 32, "dims": 16}, filtered):
        got, want = bits.search(q, k=10, **options), hashed.search(q, k=10, **options)
        np.testing.assert_array_equal(got[0], want[0], err_msg=str(options))
        np.testing.assert_array_equal(got[1], want[1], err_msg=str(options))
    # A second search on each reuses its thread's set (cleared word by word): still alike.
    np.testing.assert_array_equal(bits.search(q, k=10, ef=20)[0], hashed.search(q, k=10, ef=20)[0])


def test_kernel_selection(kernel_indexes):
    x = kernel_indexes[0]
    best = with_kernels(None, lambda: HnswIndex(8).stats()["kernels"])
    assert best in KERNELS
    assert with_kernels("generic", lambda: HnswIndex(8).stats()["kernels"]) == "generic"
    # The selection is made when an index is created or loaded, and kept.
    index = with_kernels("generic", lambda: build(x[:100], "ip"))
    assert index.stats()["kernels"] == "generic"
    assert with_kernels(None, lambda: HnswIndex(8).stats()["kernels"]) == best


def test_unknown_kernel_name_falls_back_to_the_default():
    best = with_kernels(None, lambda: HnswIndex(8).stats()["kernels"])
    for name in ("no-such-kernels", "AVX512", ""):
        assert with_kernels(name, lambda: HnswIndex(8).stats()["kernels"]) == best, name


def test_arrays_with_an_equal_but_distinct_dtype_object_are_accepted():
    """An unpickled float32 array carries its own dtype object; the check compares dtypes by
    value, and still refuses a non-native byte order."""
    import pickle

    x = pickle.loads(pickle.dumps(np.ones((3, 16), dtype=np.float32)))
    ix = HnswIndex(16, metric="ip")
    assert ix.add(x) == 0
    with pytest.raises(ValueError, match="float32"):
        ix.add(np.ones((3, 16), dtype=">f4"))
