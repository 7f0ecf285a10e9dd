"""The BM25 impact cache and its "auto" policy (fastrag._core.SparseIndex, fastrag.BM25).

Without the cache, search computes each impact from the posting's tf and a one- or two-byte
code of the document's length (whole blocks at once in MaxScore's walked lists). The oracle
here is an exact re-implementation of the Lucene formula in numpy with the very float and
double operations of the C++ core, so returned scores are compared bit for bit with it, and
with the cached index; corpora are built to reach every branch: lengths under and over 255
(one- and two-byte codes), at and past the length tables' 2048, tf past the tables' 16,
empty lists, one-posting lists, lists of many blocks, deletions and filters.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastrag
from fastrag import _core
from test_bm25_core import csr

K1, B = 1.2, 0.75


def build(docs, **kw) -> _core.SparseIndex:
    index = _core.SparseIndex(scoring="bm25", method="lucene", k1=K1, b=B, **kw)
    half = len(docs) // 2
    for part in (docs[:half], docs[half:]):  # two batches: a merge too
        index.add(*csr(part))
    return index


def corpus(rng: np.random.Generator, n_docs: int, long_share: float) -> list[np.ndarray]:
    """Zipfian documents; long_share of them 255 to 2100 tokens long; a few special ones."""
    vocab = 600
    lengths = rng.integers(1, 60, n_docs)
    long = rng.random(n_docs) < long_share
    lengths[long] = rng.integers(255, 2100, int(long.sum()))
    perm = rng.permutation(vocab)
    docs = [perm[(rng.zipf(1.15, n) - 1) % vocab].astype(np.uint32) for n in lengths]
    docs[3] = np.array([7] * 40 + [8] * 17 + [9] * 16, dtype=np.uint32)  # tf 40, 17, 16
    docs[4] = np.full(2048, 7, dtype=np.uint32)  # length 2048 (past the tables), tf 2048
    docs[5] = np.array([7] * 2047 + [901], dtype=np.uint32)  # 2048 long; 901: one posting
    docs[6] = np.array([7] * 254 + [8], dtype=np.uint32)  # 255 long (the one-byte escape)
    docs[8] = np.array([7] * 253 + [8], dtype=np.uint32)  # 254 long
    docs[9] = np.array([905], dtype=np.uint32)  # term 905 only here; 902-904 in no document
    docs[10] = np.zeros(0, dtype=np.uint32)  # empty document
    return docs


def oracle(docs, live: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Exact Lucene scores (float32) of every document, as the core computes them: norm
    1 - b + (float) b * dl / avgdl, tfc = tf / (k1 norm + tf) and idf in double, impacts
    rounded once to float, times the term's count in the query (in float), summed in float in
    ascending term order."""
    n_docs = len(docs)
    dl = np.array([len(d) for d in docs], dtype=np.int64)
    n = int(live.sum())
    avgdl = float(dl[live].sum()) / n
    b32, k1 = np.float32(B), float(np.float32(K1))
    norm = (1.0 - float(b32)) + (b32 * dl.astype(np.float32)).astype(np.float64) / avgdl
    acc = np.zeros(n_docs, dtype=np.float32)
    for t, count in zip(*np.unique(query, return_counts=True), strict=True):
        tf = np.array([np.count_nonzero(d == t) for d in docs], dtype=np.float64)
        has = (tf > 0) & live
        df = int(has.sum())
        if df == 0:
            continue
        idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))  # libm, as std::log
        tfc = tf[has] / (k1 * norm[has] + tf[has])
        impact = np.maximum(0.0, idf * tfc).astype(np.float32)
        acc[has] = acc[has] + impact * np.float32(count)
    return acc


def check_exact(ids, scores, ref, allowed, k):
    """Returned ids carry the oracle's very bits, in order, and form its top-k (up to ties
    at the k-th score)."""
    got = ids[ids >= 0]
    eligible = (ref > 0) & allowed
    assert len(got) == min(k, int(eligible.sum()))
    assert eligible[got].all()
    assert scores[: len(got)].tobytes() == ref[got].tobytes()
    assert np.all(np.diff(scores[: len(got)]) <= 0)
    if len(got):
        above = np.flatnonzero(eligible & (ref > scores[len(got) - 1]))
        assert set(above.tolist()) <= set(got.tolist())


@pytest.mark.parametrize("long_share", [0.0, 0.2], ids=["one-byte codes", "two-byte codes"])
def test_lean_scores_are_the_exact_bits(long_share):
    rng = np.random.default_rng(24)
    docs = corpus(rng, 1500, long_share)
    vocab_hi = 910
    queries = [rng.choice(np.concatenate(docs[:200]), int(m)) for m in rng.integers(1, 6, 40)]
    queries += [
        np.array([7], np.uint32),  # long list, many blocks
        np.array([7, 8, 9], np.uint32),
        np.array([901], np.uint32),  # one posting, in a 2048-token document
        np.array([902, 903], np.uint32),  # empty lists
        np.array([905, 7, 904], np.uint32),
        np.array([vocab_hi + 50], np.uint32),  # unknown term
    ]
    lean = build(docs, impact_cache=False)
    cached = build(docs, impact_cache=True)
    assert not lean.impact_cache and cached.impact_cache
    live = np.ones(len(docs), dtype=bool)
    allow_bits = rng.random(len(docs)) < 0.6
    allow = np.packbits(allow_bits, bitorder="little")
    allow = np.concatenate([allow, np.zeros(-len(allow) % 8, np.uint8)]).view(np.uint64)

    def check(allow_mask, **options):
        for q in queries:
            ref = oracle(docs, live, q)
            ip = np.array([0, len(q)], dtype=np.int64)
            for algorithm in ("exhaustive", "maxscore"):
                for k in (1, 10, 40):
                    a = lean.search(ip, q, k=k, algorithm=algorithm, **options)
                    c = cached.search(ip, q, k=k, algorithm=algorithm, **options)
                    np.testing.assert_array_equal(a[0], c[0])
                    assert a[1].tobytes() == c[1].tobytes()
                    check_exact(a[0][0], a[1][0], ref, allow_mask & live, k)

    check(np.ones(len(docs), dtype=bool))
    check(allow_bits, allow=allow)
    gone = np.arange(0, len(docs), 7, dtype=np.uint32)
    for ix in (lean, cached):
        ix.remove(gone)
    live[gone] = False
    check(np.ones(len(docs), dtype=bool))
    check(allow_bits, allow=allow, threads=2)


def test_lean_memory_is_under_two_bytes_per_posting_on_a_large_list_corpus():
    rng = np.random.default_rng(5)
    docs = [rng.integers(0, 3000, int(n)).astype(np.uint32) for n in rng.integers(20, 80, 20000)]
    lean, cached = build(docs, impact_cache=False), build(docs, impact_cache=True)
    st, sc = lean.stats(), cached.stats()
    assert st["memory_bytes"] / st["n_postings"] < 2.0
    assert sc["memory_bytes"] - st["memory_bytes"] > 4 * st["n_postings"]


def test_auto_policy_on_small_indexes_and_switching():
    docs = corpus(np.random.default_rng(3), 300, 0.1)
    auto = build(docs)
    assert auto.impact_cache_policy == "auto" and auto.impact_cache
    assert _core.SparseIndex().impact_cache_policy == "auto"
    ref = auto.search(*csr([[7, 8]]), k=20)
    for policy, held in ((False, False), (True, True), ("auto", True)):
        auto.set_impact_cache(policy)
        assert auto.impact_cache_policy == policy and auto.impact_cache == held
        got = auto.search(*csr([[7, 8]]), k=20)
        np.testing.assert_array_equal(got[0], ref[0])
        assert got[1].tobytes() == ref[1].tobytes()
    for bad in ("on", "off", 1, 0, None, 2.0):
        with pytest.raises(ValueError, match="impact_cache must be True, False or 'auto'"):
            _core.SparseIndex(impact_cache=bad)
        with pytest.raises(ValueError, match="impact_cache must be True, False or 'auto'"):
            auto.set_impact_cache(bad)
    assert auto.impact_cache_policy == "auto"  # a refused value changes nothing
    impact = _core.SparseIndex(scoring="impact")
    impact.add(*csr([[1, 2]]), np.array([0.5, 1.5], np.float32))
    assert impact.impact_cache_policy == "auto"


def test_bm25_wrapper_policy_and_load(tmp_path):
    texts = ["the cat sat on the mat", "dogs bark at the cat", "a bird sings"]
    index = fastrag.BM25(analyzer="english")
    assert index._core.impact_cache_policy == "auto"
    index.add(texts)
    ref = index.search("cat", k=3)
    path = tmp_path / "ix.fridx"
    index.save(path)
    for policy in (False, True, "auto"):
        for mmap in (False, True):
            loaded = fastrag.BM25.load(path, mmap=mmap, impact_cache=policy)
            assert loaded._core.impact_cache_policy == policy
            got = loaded.search("cat", k=3)
            assert got.ids.tolist() == ref.ids.tolist()
            assert got.scores.tobytes() == ref.scores.tobytes()
    with pytest.raises(ValueError, match="impact_cache"):
        fastrag.BM25(impact_cache="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="impact_cache"):
        fastrag.BM25.load(path, impact_cache="sometimes")  # type: ignore[arg-type]


def test_auto_policy_drops_the_cache_past_its_threshold():
    """At _core.SparseIndex's threshold (2**24 postings) the cache is held; one posting more
    and "auto" drops it, with the same results."""
    limit = 1 << 24
    per_doc = 1024
    n_docs = limit // per_doc
    terms = np.tile(np.arange(per_doc, dtype=np.uint32), n_docs)
    indptr = np.arange(0, limit + 1, per_doc, dtype=np.int64)
    index = _core.SparseIndex(method="lucene", k1=K1, b=B)
    index.add(indptr, terms)
    assert index.stats()["n_postings"] == limit and index.impact_cache
    index.add(np.array([0, 1], np.int64), np.array([per_doc], np.uint32))
    assert index.stats()["n_postings"] == limit + 1 and not index.impact_cache
    got = index.search(*csr([[3, 5]]), k=10)
    forced = _core.SparseIndex(method="lucene", k1=K1, b=B, impact_cache=True)
    forced.add(indptr, terms)
    forced.add(np.array([0, 1], np.int64), np.array([per_doc], np.uint32))
    assert forced.impact_cache
    want = forced.search(*csr([[3, 5]]), k=10)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1].tobytes() == want[1].tobytes()


def test_lean_index_after_reordering_gives_the_cached_bits():
    """compact(reorder=True) renumbers documents: the length codes and block first documents
    are derived again, and the lean index answers as the cached one does."""
    rng = np.random.default_rng(9)
    docs = corpus(rng, 800, 0.1)
    lean, cached = build(docs, impact_cache=False), build(docs, impact_cache=True)
    gone = np.arange(0, 800, 11, dtype=np.uint32)
    for ix in (lean, cached):
        ix.remove(gone)
    np.testing.assert_array_equal(lean.compact(reorder=True), cached.compact(reorder=True))
    queries = [np.array(q, np.uint32) for q in ([7], [7, 8, 9], [901, 7], [905])]
    for q in queries:
        ip = np.array([0, len(q)], dtype=np.int64)
        for algorithm in ("exhaustive", "maxscore"):
            a = lean.search(ip, q, k=25, algorithm=algorithm)
            c = cached.search(ip, q, k=25, algorithm=algorithm)
            np.testing.assert_array_equal(a[0], c[0])
            assert a[1].tobytes() == c[1].tobytes()
