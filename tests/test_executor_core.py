"""The native query executor (fastrag._core.execute) against a plain-Python oracle: each leg
through the wrappers' .search, fastrag.search.fusion.fuse, chunk -> document aggregation as the
pipeline does it, deepening, top-k. Ids must match exactly, scores to 1e-6."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest

import fastrag
from fastrag import _core
from fastrag.search.fusion import fuse

NONE = 0xFFFFFFFF
METHODS = ["rrf", "minmax", "convex", "zscore", "dbsf"]
N_DOCS = 300
FUSED = 40  # fused chunks asked for in the oracle comparisons
DIM = 32


def _words(rng: np.random.Generator, n: int) -> list[str]:
    letters = np.array(list("bcdfgklmnprstvz"))
    vowels = np.array(list("aeiou"))
    return [
        "".join(rng.choice(letters) + rng.choice(vowels) for _ in range(3)) for _ in range(n)
    ]


class World:
    """Chunks of documents in a BM25 and a dense index, with deletes and upserts."""

    def __init__(self, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        vocab = _words(rng, 400)
        zipf = 1.0 / np.arange(1, len(vocab) + 1)
        zipf /= zipf.sum()
        per_doc = rng.integers(1, 16, size=N_DOCS)
        chunk_doc = np.repeat(np.arange(N_DOCS, dtype=np.uint32), per_doc)
        n = len(chunk_doc)
        # chunk ids are not the insertion order: the indexes' slots differ from chunk ids
        order = rng.permutation(n)
        texts = [" ".join(rng.choice(vocab, size=rng.integers(4, 30), p=zipf)) for _ in range(n)]
        centres = rng.standard_normal((N_DOCS, DIM)).astype(np.float32)
        vecs = (centres[chunk_doc] + 0.8 * rng.standard_normal((n, DIM))).astype(np.float32)
        self.bm25 = fastrag.BM25(analyzer="english")
        self.bm25.add([texts[c] for c in order], ids=[int(c) for c in order])
        self.dense = fastrag.DenseIndex(DIM, metric="cosine", M=8, ef_construction=64)
        self.dense.add(vecs[order[::-1]], ids=[int(c) for c in order[::-1]], threads=1)
        # deletes: some chunks from one index only, one upsert that reuses a dense slot
        self.bm25.delete([int(c) for c in rng.choice(n, 60, replace=False)])
        gone = [int(c) for c in rng.choice(n, 60, replace=False)]
        self.dense.delete(gone)
        self.dense.add(vecs[gone[:10]] * 0.5 + 0.1, ids=gone[:10], threads=1)
        # some documents deleted from the docstore (their chunks may still be in the indexes)
        self.chunk_doc = chunk_doc.copy()
        for d in rng.choice(N_DOCS, 15, replace=False):
            self.chunk_doc[chunk_doc == d] = NONE
        self.n_chunks = n
        self.vocab = vocab
        self.zipf = zipf
        self.rng = rng

    @staticmethod
    def slot_chunk(index: Any) -> np.ndarray:
        return np.array(
            [NONE if d is None else d for d in index._ids.to_json()], dtype=np.uint32
        )

    def queries(self, n: int) -> tuple[list[str], np.ndarray]:
        texts = [
            " ".join(self.rng.choice(self.vocab, size=self.rng.integers(1, 6), p=self.zipf))
            for _ in range(n)
        ]
        vecs = self.rng.standard_normal((n, DIM)).astype(np.float32)
        return texts, vecs


@pytest.fixture(scope="module")
def world() -> World:
    return World()


@pytest.fixture(scope="module")
def batch(world: World) -> tuple[list[str], np.ndarray]:
    return world.queries(12)


# ------------------------------------------------------------------------------------------
# The oracle and the call
# ------------------------------------------------------------------------------------------


def _size(index: Any) -> int:
    stats = index._core.stats()
    return int(stats.get("n_docs", stats.get("n_vectors")))


def reference(
    world: World,
    text: str,
    vec: np.ndarray,
    *,
    k: int,
    fusion: str,
    aggregate: str,
    depths: tuple[int, int] = (20, 20),
    weights: tuple[float, float] = (1.0, 1.0),
    filters: tuple[Any, Any] = (None, None),
    exact: bool = True,
    rrf_k: float = 60.0,
) -> dict[str, Any]:
    """One query through the wrappers and fusion.py; deepening as the executor does it."""
    indexes = [world.bm25, world.dense]
    sizes = [_size(ix) for ix in indexes]
    active = [i for i in range(2) if weights[i] > 0]
    depth = [0, 0]
    rankings: dict[int, list[tuple[int, float]]] = {}
    exhausted = [True, True]

    def run(i: int) -> None:
        d = depth[i]
        if d == 0:
            rankings[i] = []
            exhausted[i] = True
            return
        if i == 0:
            res = world.bm25.search(text, k=d, filter=filters[0])
        else:
            res = world.dense.search(vec, k=d, filter=filters[1], exact=exact)
        rankings[i] = [(int(h.id), h.score) for h in res[0]]
        exhausted[i] = len(rankings[i]) < d or d >= sizes[i]

    for i in active:
        depth[i] = min(depths[i], sizes[i])
        run(i)
    while True:
        if len(active) == 1:
            fused = rankings[active[0]]
        else:
            method = "minmax" if fusion == "convex" else fusion
            opts = {"k": rrf_k} if method == "rrf" else {}
            fused = fuse(method, [rankings[i] for i in active],
                         weights=[weights[i] for i in active], **opts)
        best: dict[int, tuple[int, float]] = {}
        total: dict[int, float] = {}
        for c, s in fused:
            d = int(world.chunk_doc[c])
            if d == NONE:
                continue
            total[d] = total.get(d, 0.0) + s
            if d not in best:
                best[d] = (c, s)
        if len(best) >= k:
            break
        grow = [i for i in active if not exhausted[i]]
        if not grow:
            break
        for i in grow:
            depth[i] = min(2 * depth[i], sizes[i])
            run(i)
    scored = [(d, total[d] if aggregate == "sum" else cs[1], cs[0]) for d, cs in best.items()]
    scored.sort(key=lambda x: -x[1])
    scored = scored[:k]
    fused_rank = {c: (float(s), r) for r, (c, s) in enumerate(fused, 1)}
    leg_rank = {i: {c: (s, r) for r, (c, s) in enumerate(rankings[i], 1)} for i in active}
    return {
        "ids": [d for d, _, _ in scored],
        "scores": [s for _, s, _ in scored],
        "chunks": [c for _, _, c in scored],
        "depths": depth,
        "fused": [fused_rank[c] for _, _, c in scored],
        "legs": [[leg_rank[i].get(c, (math.nan, 0)) if i in leg_rank else (math.nan, 0)
                  for i in range(2)] for _, _, c in scored],
        "fused_list": [(c, float(s)) for c, s in fused if world.chunk_doc[c] != NONE],
    }


def legs_for(
    world: World,
    texts: list[str],
    vecs: np.ndarray,
    *,
    depths: tuple[int, int] = (20, 20),
    weights: tuple[float, float] = (1.0, 1.0),
    filters: tuple[Any, Any] = (None, None),
    exact: bool = True,
) -> list[dict[str, Any]]:
    indptr, terms = world.bm25.encode_queries(texts)
    allow = [None if f is None else ix._ids.allow_bitset(f)
             for f, ix in zip(filters, (world.bm25, world.dense), strict=True)]
    return [
        {"index": world.bm25._core, "indptr": indptr, "terms": terms, "depth": depths[0],
         "weight": weights[0], "allow": allow[0], "slot_chunk": World.slot_chunk(world.bm25)},
        {"index": world.dense._core, "queries": np.ascontiguousarray(vecs), "depth": depths[1],
         "weight": weights[1], "allow": allow[1], "slot_chunk": World.slot_chunk(world.dense),
         "exact": exact},
    ]


def check(world: World, texts: list[str], vecs: np.ndarray, *, k: int, fusion: str,
          aggregate: str, threads: int = 1, **options: Any) -> dict[str, Any]:
    out = _core.execute(legs_for(world, texts, vecs, **options), world.chunk_doc, k=k,
                        fusion=fusion, aggregate=aggregate, explain=True, threads=threads,
                        fused=FUSED)
    assert out["ids"].shape == (len(texts), k)
    for q, (text, vec) in enumerate(zip(texts, vecs, strict=True)):
        ref = reference(world, text, vec, k=k, fusion=fusion, aggregate=aggregate, **options)
        n = len(ref["ids"])
        assert out["ids"][q, :n].tolist() == ref["ids"], (q, fusion, aggregate)
        assert (out["ids"][q, n:] == -1).all() and (out["chunks"][q, n:] == -1).all()
        assert np.isneginf(out["scores"][q, n:]).all()
        np.testing.assert_allclose(out["scores"][q, :n], ref["scores"], rtol=1e-6, atol=1e-7)
        assert out["chunks"][q, :n].tolist() == ref["chunks"]
        assert out["depths"][q].tolist() == ref["depths"]
        xs, xr = out["explain_scores"][q], out["explain_ranks"][q]
        for j in range(n):
            for leg in range(2):
                s, r = ref["legs"][j][leg]
                assert xr[j, leg] == r
                if r:
                    np.testing.assert_allclose(xs[j, leg], s, rtol=1e-6)
                else:
                    assert math.isnan(xs[j, leg])
            assert xr[j, 2] == ref["fused"][j][1]
            np.testing.assert_allclose(xs[j, 2], ref["fused"][j][0], rtol=1e-6, atol=1e-7)
        assert (xr[n:] == 0).all() and np.isnan(xs[n:]).all()
        head = ref["fused_list"][:FUSED]
        m = len(head)
        assert out["fused_chunks"][q, :m].tolist() == [c for c, _ in head]
        assert (out["fused_chunks"][q, m:] == -1).all()
        np.testing.assert_allclose(out["fused_scores"][q, :m], [s for _, s in head], rtol=1e-6,
                                   atol=1e-7)
        assert np.isneginf(out["fused_scores"][q, m:]).all()
    return out


# ------------------------------------------------------------------------------------------
# Against the oracle
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("aggregate", ["max", "sum"])
@pytest.mark.parametrize("fusion", METHODS)
def test_matches_reference(world: World, batch: Any, fusion: str, aggregate: str) -> None:
    texts, vecs = batch
    check(world, texts, vecs, k=10, fusion=fusion, aggregate=aggregate, depths=(30, 25))


@pytest.mark.parametrize("fusion", METHODS)
def test_weighted_legs(world: World, batch: Any, fusion: str) -> None:
    texts, vecs = batch
    check(world, texts[:6], vecs[:6], k=8, fusion=fusion, aggregate="max",
          weights=(0.3, 1.7), depths=(15, 40))


@pytest.mark.parametrize("fusion", ["rrf", "zscore", "dbsf"])
def test_filters(world: World, batch: Any, fusion: str) -> None:
    texts, vecs = batch
    allowed = [c for c in range(world.n_chunks) if c % 3 != 0]
    only = [c for c in range(world.n_chunks) if c % 5 == 0]
    for aggregate in ("max", "sum"):
        check(world, texts[:6], vecs[:6], k=10, fusion=fusion, aggregate=aggregate,
              filters=(allowed, only))


def test_tiny_filter_deepens_to_exhaustion(world: World, batch: Any) -> None:
    """A filter that leaves fewer documents than k: legs deepen until exhausted."""
    texts, vecs = batch
    allowed = list(range(0, world.n_chunks, 400))
    out = check(world, texts[:4], vecs[:4], k=10, fusion="rrf", aggregate="max",
                filters=(allowed, allowed), depths=(4, 4))
    assert (out["ids"][:, -1] == -1).all()


@pytest.mark.parametrize("fusion", ["rrf", "minmax", "dbsf"])
def test_k_past_the_documents(world: World, batch: Any, fusion: str) -> None:
    """k larger than the number of documents: deepening runs until every leg is exhausted."""
    texts, vecs = batch
    out = check(world, texts[:2], vecs[:2], k=N_DOCS + 20, fusion=fusion, aggregate="sum",
                depths=(50, 50))
    assert (out["depths"][:, 1] == _size(world.dense)).all()


def test_deepening_until_k_documents(world: World, batch: Any) -> None:
    """Depth 1 per leg: it doubles until k distinct documents come out."""
    texts, vecs = batch
    out = check(world, texts, vecs, k=25, fusion="minmax", aggregate="max", depths=(1, 1))
    assert (out["depths"] > 1).any()
    assert (out["ids"][:, -1] >= 0).all()


@pytest.mark.parametrize("weights", [(1.0, 0.0), (0.0, 2.0)])
def test_leg_of_weight_zero(world: World, batch: Any, weights: tuple[float, float]) -> None:
    """A leg of weight 0 is not run; the other leg's own scores are used, without fusion."""
    texts, vecs = batch
    for fusion in ("rrf", "zscore"):
        out = check(world, texts, vecs, k=10, fusion=fusion, aggregate="max", weights=weights)
        dead = weights.index(0.0)
        assert (out["depths"][:, dead] == 0).all()
        assert (out["explain_ranks"][:, :, dead] == 0).all()


def test_rrf_k(world: World, batch: Any) -> None:
    texts, vecs = batch
    out = _core.execute(legs_for(world, texts[:3], vecs[:3]), world.chunk_doc, k=10,
                        rrf_k=5.0)
    for q in range(3):
        ref = reference(world, texts[q], vecs[q], k=10, fusion="rrf", aggregate="max",
                        rrf_k=5.0)
        assert out["ids"][q].tolist()[: len(ref["ids"])] == ref["ids"]


def test_threads_equal_single_thread(world: World) -> None:
    texts, vecs = world.queries(40)
    legs = legs_for(world, texts, vecs, exact=False)
    one = _core.execute(legs, world.chunk_doc, k=10, fusion="dbsf", explain=True, threads=1)
    two = _core.execute(legs, world.chunk_doc, k=10, fusion="dbsf", explain=True, threads=2)
    for key in ("ids", "scores", "chunks", "depths", "explain_ranks"):
        np.testing.assert_array_equal(one[key], two[key])
    np.testing.assert_array_equal(one["explain_scores"], two["explain_scores"])


def test_hnsw_leg_matches_wrapper(world: World, batch: Any) -> None:
    """The approximate dense leg runs the same search as DenseIndex.search (its default ef,
    rescore and exact_below rules), so it matches the oracle too."""
    texts, vecs = batch
    odd = [c for c in range(world.n_chunks) if c % 2]
    check(world, texts, vecs, k=10, fusion="zscore", aggregate="max", exact=False,
          filters=(None, odd))


def test_hnsw_leg_valid(world: World, batch: Any) -> None:
    """The approximate dense leg: valid, distinct, live documents, sorted scores."""
    texts, vecs = batch
    only = [c for c in range(world.n_chunks) if c % 2 == 0]
    legs = legs_for(world, texts, vecs, exact=False, filters=(None, only))
    legs[1].update(ef=32, rescore=None)
    out = _core.execute(legs, world.chunk_doc, k=10, fusion="rrf", explain=True)
    for q in range(len(texts)):
        ids = out["ids"][q]
        assert (ids >= 0).all() and len(set(ids.tolist())) == 10
        assert (np.diff(out["scores"][q]) <= 0).all()
        for d, c in zip(ids.tolist(), out["chunks"][q].tolist(), strict=True):
            assert world.chunk_doc[c] == d
        dense_ranked = out["explain_ranks"][q, :, 1] > 0
        assert all(c % 2 == 0 for c in out["chunks"][q][dense_ranked].tolist())


def test_single_leg_and_unmapped_slots(world: World, batch: Any) -> None:
    """Slots mapped to 0xFFFFFFFF are dropped; one leg alone keeps its own scores and order."""
    texts, vecs = batch
    legs = legs_for(world, texts[:3], vecs[:3], weights=(1.0, 0.0))
    slot_chunk = legs[0]["slot_chunk"].copy()
    slot_chunk[::2] = NONE
    legs[0]["slot_chunk"] = slot_chunk
    out = _core.execute(legs, world.chunk_doc, k=5)
    gone = {int(c) for c in World.slot_chunk(world.bm25)[::2] if c != NONE}
    for q in range(3):
        hits = [(int(h.id), h.score) for h in world.bm25.search(texts[q], k=20)[0]]
        kept = [(c, s) for c, s in hits if c not in gone]
        seen: dict[int, tuple[int, float]] = {}
        for c, s in kept:
            d = int(world.chunk_doc[c])
            if d != NONE and d not in seen:
                seen[d] = (c, s)
        want = list(seen.items())[:5]
        n = len(want)
        assert out["ids"][q, :n].tolist() == [d for d, _ in want]
        np.testing.assert_allclose(out["scores"][q, :n], [s for _, (_, s) in want], rtol=1e-6)


@pytest.mark.parametrize("k", [1, 5, 10, 40])
def test_one_sparse_leg_reads_k_chunks_first(world: World, batch: Any, k: int) -> None:
    """One exact leg ranked by best chunk starts at depth k, not the leg's depth: the same
    documents, scores, chunks and explain values as the whole depth gives (asked here through
    fused=, which needs the whole depth); a dense leg alone keeps its depth."""
    texts, vecs = batch
    legs = legs_for(world, texts, vecs, weights=(1.0, 0.0), depths=(100, 20))
    lean = _core.execute(legs, world.chunk_doc, k=k, explain=True)
    whole = _core.execute(legs, world.chunk_doc, k=k, explain=True, fused=1)
    for key in ("ids", "scores", "chunks", "explain_scores", "explain_ranks"):
        np.testing.assert_array_equal(lean[key], whole[key], err_msg=key)
    assert (whole["depths"][:, 0] == 100).all()
    assert (lean["depths"][:, 0] < 100).all() and (lean["depths"][:, 0] == k).any() == (k < 40)
    assert (lean["ids"] >= 0).sum() == (whole["ids"] >= 0).sum()
    summed = _core.execute(legs, world.chunk_doc, k=k, aggregate="sum")  # needs every chunk
    assert (summed["depths"][:, 0] == 100).all()
    dense = _core.execute(legs_for(world, texts, vecs, weights=(0.0, 1.0), depths=(20, 30)),
                          world.chunk_doc, k=k)
    assert (dense["depths"][:, 1] >= 30).all()


@pytest.mark.parametrize("weights", [(1.0, 0.0), (1.0, 1.0), (0.0, 1.0)])
@pytest.mark.parametrize("fusion", ["rrf", "zscore"])
def test_execute_one_gives_executes_hits_as_rows(world: World, batch: Any,
                                                 weights: tuple[float, float],
                                                 fusion: str) -> None:
    texts, vecs = batch
    rng = np.random.default_rng(3)
    starts = rng.integers(0, 1000, world.n_chunks).astype(np.int64)
    ends = starts + rng.integers(1, 50, world.n_chunks)
    names = [f"doc-{d}" for d in range(N_DOCS)]
    for q in range(len(texts)):
        for k in (1, 10, N_DOCS + 5):
            legs = legs_for(world, texts[q : q + 1], vecs[q : q + 1], weights=weights)
            out = _core.execute(legs, world.chunk_doc, k=k, fusion=fusion)
            rows = _core.execute_one(legs, world.chunk_doc, names, starts, ends, k=k,
                                     fusion=fusion)
            n = int((out["ids"][0] >= 0).sum())
            assert [r[0] for r in rows] == [names[d] for d in out["ids"][0, :n]]
            assert [r[1] for r in rows] == out["scores"][0, :n].tolist()
            chunks = out["chunks"][0, :n]
            assert [r[2] for r in rows] == list(zip(starts[chunks].tolist(),
                                                    ends[chunks].tolist(), strict=True))
        # a k past any padding limit is capped at the table's size (execute refuses it)
        assert _core.execute_one(legs, world.chunk_doc, names, starts, ends, k=10**12,
                                 fusion=fusion) == rows


def test_execute_one_refuses_a_batch_and_short_tables(world: World, batch: Any) -> None:
    texts, vecs = batch
    names = [str(d) for d in range(N_DOCS)]
    spans = np.zeros(world.n_chunks, dtype=np.int64)
    with pytest.raises(ValueError, match="runs one query; the legs hold 2"):
        _core.execute_one(legs_for(world, texts[:2], vecs[:2]), world.chunk_doc, names, spans,
                          spans)
    one = legs_for(world, texts[:1], vecs[:1])
    with pytest.raises(ValueError, match="a span per chunk"):
        _core.execute_one(one, world.chunk_doc, names, spans[:-1], spans)
    with pytest.raises(ValueError, match="doc_ids holds 3"):
        _core.execute_one(one, world.chunk_doc, names[:3], spans, spans, k=N_DOCS)
    with pytest.raises(ValueError, match="chunk_start must"):
        _core.execute_one(one, world.chunk_doc, names, spans.astype(np.int32), spans)
    for k in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="k must be"):
            _core.execute_one(one, world.chunk_doc, names, spans, spans, k=k)


def test_no_queries(world: World) -> None:
    texts: list[str] = []
    out = _core.execute(legs_for(world, texts, np.zeros((0, DIM), np.float32)),
                        world.chunk_doc, k=3)
    assert out["ids"].shape == (0, 3) and out["explain_scores"] is None


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------


def _legs(world: World) -> list[dict[str, Any]]:
    texts, vecs = ["ba be bi"], np.ones((1, DIM), np.float32)
    return legs_for(world, texts, vecs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda legs: legs[0].update(depth=0), "['depth'] must be >= 1"),
        (lambda legs: legs[0].update(weight=-1.0), "weight must be finite and >= 0"),
        (lambda legs: legs[1].update(weight=math.nan), "weight must be finite and >= 0"),
        (lambda legs: legs[1].update(weight=math.inf), "weight must be finite and >= 0"),
        (lambda legs: [leg.update(weight=0.0) for leg in legs], "every leg has weight 0"),
        (lambda legs: legs[1]["queries"].__setitem__((0, 3), math.nan), "NaN or infinite"),
        (lambda legs: legs[1].update(queries=np.ones((1, DIM), np.float64)),
         "legs[1]['queries'] must be a float32 array"),
        (lambda legs: legs[0].update(indptr=legs[0]["indptr"].astype(np.int32)),
         "legs[0]['indptr'] must be a int64 array"),
        (lambda legs: legs[0].update(terms=list(legs[0]["terms"])),
         "legs[0]['terms'] must be a numpy array, got list"),
        (lambda legs: legs[1].update(queries=np.ones((1, DIM + 1), np.float32)),
         "expected 32 dimensions"),
        (lambda legs: legs[1].update(queries=np.ones((DIM, 2), np.float32).T),
         "legs[1]['queries'] must be C-contiguous"),
        (lambda legs: legs[1].update(queries=np.ones((2, DIM), np.float32)), "same batch"),
        (lambda legs: legs[1].update(queries=None), "needs 'queries'"),
        (lambda legs: legs[0].update(terms=None, indptr=None), "needs 'indptr'"),
        (lambda legs: legs[0].update(indptr=np.array([0, 9], np.int64)), "indptr[-1]"),
        (lambda legs: legs[0].update(weights=-np.ones(len(legs[0]["terms"]), np.float32)),
         "weights must be finite and >= 0"),
        (lambda legs: legs[0].update(slot_chunk=legs[0]["slot_chunk"][:-1]), "slot_chunk has"),
        (lambda legs: legs[0].update(slot_chunk=None), "slot_chunk has"),
        (lambda legs: legs[0].update(allow=np.zeros(4, np.int64)),
         "legs[0]['allow'] must be a uint64 array"),
        (lambda legs: legs[1].update(dims=8), "multiple of 16"),
        (lambda legs: legs[1].update(ef=0), "ef"),
        (lambda legs: legs[0].update(deph=3), "unknown key 'deph'"),
        (lambda legs: legs[0].update(queries=np.ones((1, DIM), np.float32)), "unknown key"),
        (lambda legs: legs[0].update(index=legs[1]["index"]), "unknown key"),
        (lambda legs: legs[0].update(index="bm25"), "SparseIndex or HnswIndex"),
        (lambda legs: legs[0].update(depth=2.5), "['depth'] must be an integer"),
        (lambda legs: legs[0].update(depth=True), "['depth'] must be an integer"),
        (lambda legs: legs[0].update(algorithm="fast"), "algorithm must be"),
        (lambda legs: legs.clear(), "at least one leg"),
    ],
)
def test_bad_legs(world: World, change: Any, message: str) -> None:
    legs = _legs(world)
    change(legs)
    with pytest.raises(ValueError, match=re.escape(message)):
        _core.execute(legs, world.chunk_doc, k=5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"k": 0}, "k must be >= 1"),
        ({"k": -3}, "k must be >= 1"),
        ({"k": True}, "k must be an integer"),
        ({"k": 2**70}, "larger than the number of chunks"),
        ({"fused": 2**40}, "larger than the number of chunks"),
        ({"fused": -1}, "fused must be >= 0"),
        ({"fusion": "borda"}, "fusion must be"),
        ({"aggregate": "mean"}, "aggregate must be"),
        ({"rrf_k": 0.0}, "rrf_k must be finite and > 0"),
        ({"rrf_k": math.inf}, "rrf_k must be finite and > 0"),
        ({"threads": -1}, "threads must be >= 0"),
    ],
)
def test_bad_options(world: World, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _core.execute(_legs(world), world.chunk_doc, **options)


def test_bad_chunk_doc(world: World) -> None:
    with pytest.raises(ValueError, match="uint32"):
        _core.execute(_legs(world), world.chunk_doc.astype(np.int64), k=5)
    with pytest.raises(ValueError, match="numpy array"):
        _core.execute(_legs(world), world.chunk_doc.tolist(), k=5)


def test_huge_k_within_chunks_is_padded(world: World) -> None:
    """A k past the documents but within the chunk count is padding, not an error."""
    out = _core.execute(_legs(world), world.chunk_doc, k=world.n_chunks)
    assert out["ids"].shape == (1, world.n_chunks)
    assert (out["ids"][0, N_DOCS:] == -1).all()


def test_weight_zero_leg_needs_no_queries(world: World) -> None:
    legs = _legs(world)
    legs[1].update(weight=0.0, queries=None)
    out = _core.execute(legs, world.chunk_doc, k=5)
    assert out["depths"][0].tolist() == [5, 0]  # one sparse leg starts at depth k


def test_infinite_scores_need_rrf() -> None:
    """Score-based fusion refuses an infinite leg score (as fusion.py does); RRF ranks it."""
    dense = fastrag.DenseIndex(16, metric="ip")
    dense.add(np.full((3, 16), 1e30, np.float32), ids=[0, 1, 2])
    other = fastrag.DenseIndex(16, metric="ip")
    other.add(np.eye(3, 16, dtype=np.float32), ids=[2, 1, 0])
    q = np.full((1, 16), 1e30, np.float32)
    legs = [
        {"index": ix._core, "queries": q, "depth": 3, "slot_chunk": World.slot_chunk(ix),
         "exact": True}
        for ix in (dense, other)
    ]
    chunk_doc = np.arange(3, dtype=np.uint32)
    for fusion in ("minmax", "zscore", "dbsf"):
        with pytest.raises(ValueError, match="infinite score"):
            _core.execute(legs, chunk_doc, k=3, fusion=fusion)
    out = _core.execute(legs, chunk_doc, k=3, fusion="rrf")
    assert sorted(out["ids"][0].tolist()) == [0, 1, 2]
