"""Tests of the native inverted index (fastrag._core.SparseIndex) against oracles.

Oracles: bm25s scores (all five BM25 variants), numpy dot products (impact scoring), a fresh
index built from the surviving documents (incremental updates), the exhaustive algorithm
(MaxScore), single-threaded search (threads) and hard-coded golden files (the format).
Corpora are random Zipfian token-id documents, seeded.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
from pathlib import Path

import numpy as np
import pytest

import fastrag
from fastrag import _core
from filecheck import damage, reseal, section_table

SparseIndex = _core.SparseIndex
ALGORITHMS = ("exhaustive", "maxscore", "auto")


# ---------------------------------------------------------------------------- helpers
def zipf_docs(
    rng: np.random.Generator, n_docs: int, vocab: int, mean_len: int, a: float = 1.2
) -> list[np.ndarray]:
    """Documents of 1..2*mean_len tokens drawn from a Zipf law over a shuffled vocabulary."""
    lengths = rng.integers(1, 2 * mean_len, n_docs)
    ranks = (rng.zipf(a, int(lengths.sum())) - 1) % vocab
    flat = rng.permutation(vocab).astype(np.uint32)[ranks]
    return np.split(flat, np.cumsum(lengths)[:-1])


def csr(rows) -> tuple[np.ndarray, np.ndarray]:
    rows = [np.asarray(r, dtype=np.uint32) for r in rows]
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(r) for r in rows])
    flat = np.concatenate(rows) if rows else np.zeros(0, dtype=np.uint32)
    return indptr, flat.astype(np.uint32)


def make_queries(
    rng: np.random.Generator, docs: list[np.ndarray], n: int, vocab: int, max_len: int = 5
) -> list[np.ndarray]:
    """Queries mixing corpus-frequency terms (often frequent), uniform (often rare or absent)
    terms and repeated terms."""
    flat = np.concatenate(docs)
    out = []
    for _ in range(n):
        m = int(rng.integers(1, max_len + 1))
        q = np.where(rng.random(m) < 0.5, rng.choice(flat, m), rng.integers(0, vocab + 20, m))
        if rng.random() < 0.2:  # repeat a term
            q = np.append(q, q[0])
        out.append(q.astype(np.uint32))
    return out


def build(docs, scoring="bm25", values=None, chunks=1, **params) -> SparseIndex:
    index = SparseIndex(scoring=scoring, **params)
    bounds = np.linspace(0, len(docs), chunks + 1).astype(int)
    for lo, hi in itertools.pairwise(bounds.tolist()):
        indptr, flat = csr(docs[lo:hi])
        vals = None if values is None else np.concatenate(values[lo:hi]).astype(np.float32)
        index.add(indptr, flat, vals)
    return index


def search(index: SparseIndex, queries, weights=None, **options):
    indptr, flat = csr(queries)
    w = None if weights is None else np.concatenate(weights).astype(np.float32)
    return index.search(indptr, flat, w, **options)


class Postings:
    """Which documents hold which terms (numpy), to know the documents a query matches."""

    def __init__(self, docs: list[np.ndarray]):
        indptr, flat = csr(docs)
        doc_of = np.repeat(np.arange(len(docs)), np.diff(indptr))
        order = np.argsort(flat, kind="stable")
        self.n_docs = len(docs)
        self.docs = doc_of[order]
        self.offsets = np.searchsorted(flat[order], np.arange(int(flat.max()) + 2))

    def matching(self, terms) -> np.ndarray:
        mask = np.zeros(self.n_docs, dtype=bool)
        for t in np.asarray(terms).tolist():
            if t + 1 < len(self.offsets):
                mask[self.docs[self.offsets[t] : self.offsets[t + 1]]] = True
        return mask


def as_strings(tokens) -> list[str]:
    return [f"t{t}" for t in np.asarray(tokens).tolist()]


def bm25s_retriever(docs, method, k1, b, delta):
    bm25s = pytest.importorskip("bm25s")
    retriever = bm25s.BM25(method=method, k1=k1, b=b, delta=delta)
    retriever.index([as_strings(d) for d in docs], show_progress=False)
    return retriever


def absent_term_score(retriever, tokens, weights=None) -> float:
    """What bm25s gives every document for the query terms it lacks (BM25L / BM25+ only)."""
    if retriever.nonoccurrence_array is None:
        return 0.0
    ids = retriever.get_tokens_ids(as_strings(tokens))
    w = np.ones(len(tokens)) if weights is None else np.asarray(weights, dtype=np.float64)
    known = [i for i, t in enumerate(as_strings(tokens)) if t in retriever.vocab_dict]
    return float(np.dot(w[known], retriever.nonoccurrence_array[ids].astype(np.float64)))


def check_against_reference(ids, scores, ref, eligible, k, rtol=1e-4, atol=1e-5):
    """One query: returned ids are eligible, complete and carry the reference scores.

    `eligible`: the documents that may be returned, those holding a query term that adds a
    positive amount to their score (documents scored only by absent-term constants, or by
    terms whose idf is 0, are not results).
    """
    got = ids[ids >= 0]
    n = len(got)
    assert n == min(k, int(eligible.sum()))
    assert np.all(ids[n:] == -1) and np.all(np.isneginf(scores[n:]))
    assert len(set(got.tolist())) == n
    assert eligible[got].all(), "returned a document that holds no (scoring) query term"
    assert np.all(np.diff(scores[:n]) <= 0), "scores not in descending order"
    np.testing.assert_allclose(scores[:n], ref[got], rtol=rtol, atol=atol)
    if n:
        ranked = np.sort(ref[eligible])[::-1]
        kth = ranked[n - 1]
        assert scores[n - 1] == pytest.approx(kth, rel=rtol, abs=atol)
        # Completeness: every eligible document clearly above the k-th is returned.
        above = np.flatnonzero(eligible & (ref > kth + atol + rtol * abs(kth)))
        assert set(above.tolist()) <= set(got.tolist())


def results_equal(a, b, rtol=1e-6):
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=rtol, atol=1e-7)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def small_corpus():
    rng = np.random.default_rng(20240601)
    docs = zipf_docs(rng, 3000, vocab=2000, mean_len=15)
    queries = make_queries(rng, docs, 40, vocab=2000)
    return docs, queries, Postings(docs)


@pytest.fixture(scope="module")
def large_corpus():
    """20k documents: a few terms are in more than half of them, lists span many blocks."""
    rng = np.random.default_rng(7)
    docs = zipf_docs(rng, 20_000, vocab=5000, mean_len=12)
    queries = make_queries(rng, docs, 60, vocab=5000, max_len=6)
    # Queries made of the most frequent terms only: the long-list case.
    top = np.argsort(np.bincount(np.concatenate(docs)))[::-1][:8].astype(np.uint32)
    queries += [top[:2], top[:4], top[[0, 3, 5, 7]], np.array([top[0], top[0], top[1]])]
    return docs, queries


# ---------------------------------------------------------------------------- bm25s parity
PARAMS = [
    ("lucene", 1.5, 0.75, 0.5),
    ("lucene", 1.2, 1.0, 0.5),
    ("robertson", 1.5, 0.75, 0.5),
    ("robertson", 0.9, 0.3, 0.5),
    ("atire", 1.5, 0.75, 0.5),
    ("atire", 2.0, 0.0, 0.5),
    ("bm25l", 1.5, 0.75, 0.5),
    ("bm25l", 1.2, 0.6, 1.0),
    ("bm25+", 1.5, 0.75, 0.5),
    ("bm25+", 1.0, 0.9, 1.5),
]


@pytest.mark.parametrize(("method", "k1", "b", "delta"), PARAMS)
def test_scores_match_bm25s(small_corpus, method, k1, b, delta):
    docs, queries, postings = small_corpus
    index = build(docs, chunks=3, method=method, k1=k1, b=b, delta=delta)
    retriever = bm25s_retriever(docs, method, k1, b, delta)
    refs = [retriever.get_scores(as_strings(q)) for q in queries]
    eligible = [
        postings.matching(q) & (ref > absent_term_score(retriever, q))
        for q, ref in zip(queries, refs, strict=True)
    ]
    if method == "robertson":  # idf is 0 for terms in over half of the documents
        assert any(
            (e != postings.matching(q)).any() for e, q in zip(eligible, queries, strict=True)
        )
    for algorithm in ("exhaustive", "maxscore"):
        for k in (1, 10, 100):
            ids, scores = search(index, queries, k=k, algorithm=algorithm)
            for qi in range(len(queries)):
                check_against_reference(ids[qi], scores[qi], refs[qi], eligible[qi], k)


@pytest.mark.parametrize("method", ["lucene", "bm25l"])
def test_weighted_queries_match_weighted_sum_of_bm25s_scores(small_corpus, method):
    docs, queries, postings = small_corpus
    rng = np.random.default_rng(3)
    index = build(docs, method=method)
    retriever = bm25s_retriever(docs, method, 1.5, 0.75, 0.5)
    weights = [rng.uniform(0.1, 3.0, len(q)).astype(np.float32) for q in queries]
    weights[0][:] = 0.0  # all-zero weights: the query matches nothing
    ids, scores = search(index, queries, weights, k=20)
    assert np.all(ids[0] == -1)
    for qi in range(1, len(queries)):
        q, w = queries[qi], weights[qi]
        ref = sum(
            float(wt) * retriever.get_scores(as_strings([t])) for t, wt in zip(q, w, strict=True)
        )
        eligible = postings.matching(q) & (ref > absent_term_score(retriever, q, w) + 1e-6)
        check_against_reference(ids[qi], scores[qi], ref, eligible, 20)
    # Integer weights are the same as repeating the term.
    ids_w, scores_w = search(index, [np.array([5, 9])], [np.array([2.0, 3.0])], k=50)
    ids_r, scores_r = search(index, [np.array([5, 5, 9, 9, 9])], k=50)
    results_equal((ids_w, scores_w), (ids_r, scores_r))


# ---------------------------------------------------------------------------- algorithms
@pytest.mark.parametrize("method", ["lucene", "bm25+"])
def test_algorithms_agree(large_corpus, method):
    docs, queries = large_corpus
    index = build(docs, chunks=2, method=method)
    rng = np.random.default_rng(11)
    weights = [rng.uniform(0.2, 2.0, len(q)).astype(np.float32) for q in queries]
    for k in (1, 10, 100, len(docs) + 5):
        for w in (None, weights):
            base = search(index, queries, w, k=k, algorithm="exhaustive")
            for algorithm in ("maxscore", "auto"):
                results_equal(search(index, queries, w, k=k, algorithm=algorithm), base)


def test_algorithms_agree_where_auto_picks_maxscore():
    """Over 50,000 documents `auto` switches to MaxScore for long lists."""
    rng = np.random.default_rng(5)
    docs = zipf_docs(rng, 60_000, vocab=20_000, mean_len=5)
    queries = make_queries(rng, docs, 40, vocab=20_000, max_len=4)
    index = build(docs)
    for k in (1, 10, 100):
        base = search(index, queries, k=k, algorithm="exhaustive")
        for algorithm in ("maxscore", "auto"):
            results_equal(search(index, queries, k=k, algorithm=algorithm), base)


def test_repeated_query_terms_add_up(small_corpus):
    docs, _, _ = small_corpus
    index = build(docs)
    for algorithm in ("exhaustive", "maxscore"):
        once = search(index, [np.array([3])], k=20, algorithm=algorithm)
        twice = search(index, [np.array([3, 3])], k=20, algorithm=algorithm)
        np.testing.assert_array_equal(once[0], twice[0])
        np.testing.assert_allclose(twice[1], 2 * once[1], rtol=1e-6)


def test_k_larger_than_matches_pads(small_corpus):
    docs, _, postings = small_corpus
    index = build(docs)
    rare = int(np.argmin(np.where(np.diff(postings.offsets) > 0, np.diff(postings.offsets), 10**9)))
    n_match = int(postings.matching([rare]).sum())
    for algorithm in ALGORITHMS:
        ids, scores = search(index, [np.array([rare])], k=n_match + 7, algorithm=algorithm)
        assert (ids[0] >= 0).sum() == n_match
        assert np.all(ids[0, n_match:] == -1) and np.all(np.isneginf(scores[0, n_match:]))


def test_algorithms_sum_scores_identically():
    """Minimal case: the same document must get the same float score from both algorithms.

    Document 0 holds 1 + 2^-24 + 2^-24: summed one float at a time that is 1.0, summed
    exactly it is 1 + 2^-23, the score of document 1.
    """
    e = 2.0**-24
    index = SparseIndex(scoring="impact")
    values = np.array([1.0, e, e, 1.0 + 2 * e], dtype=np.float32)
    index.add(np.array([0, 3, 4], dtype=np.int64), np.arange(4, dtype=np.uint32), values)
    base = search(index, [[0, 1, 2, 3]], k=2, algorithm="exhaustive")
    np.testing.assert_array_equal(
        search(index, [[0, 1, 2, 3]], k=2, algorithm="maxscore")[0], base[0]
    )
    np.testing.assert_array_equal(
        search(index, [[0, 1, 2, 3]], k=2, algorithm="maxscore")[1], base[1]
    )


def test_ties_go_to_the_lower_id_among_thousands():
    """With thousands of equal scores, every k keeps the lowest ids, in order, in both of the
    exhaustive scan's modes (score array and touched list), in MaxScore and through a
    filter."""
    rng = np.random.default_rng(7)
    n = 3000
    # terms 0 and 1 in every document (one list covers the collection: the score-array
    # scan); term 2 in every third (short lists: the touched-documents scan); equal lengths
    docs = [np.array([0, 1, 2 if i % 3 == 0 else 3 + i % 5], dtype=np.uint32) for i in range(n)]
    for d in rng.choice(n, 40, replace=False):  # a few better documents among the ties
        docs[d] = np.array([0, 1, 2, 2] if d % 3 == 0 else [0, 1, 0, 1], dtype=np.uint32)
    index = build(docs)
    allow = np.zeros(n, dtype=bool)
    allow[rng.choice(n, n // 2, replace=False)] = True
    for query in ([0, 1], [2]):
        for k in (1, 10, 100, 700):
            for algorithm in ALGORITHMS:
                for mask in (None, allow):
                    opts = {} if mask is None else {"allow": bitset(n, np.flatnonzero(mask))}
                    ids, scores = search(index, [query], k=k, algorithm=algorithm, **opts)
                    # the oracle: every eligible matching document ranked by (-score, id)
                    got = ids[0][ids[0] >= 0]
                    full_ids, full_scores = search(index, [query], k=n, algorithm="maxscore",
                                                   **opts)
                    keep = full_ids[0] >= 0
                    order = np.lexsort((full_ids[0][keep], -full_scores[0][keep]))
                    expect = full_ids[0][keep][order][:k]
                    np.testing.assert_array_equal(got, expect)
                    assert np.all(np.diff(scores[0][: len(got)]) <= 0)


# ---------------------------------------------------------------------------- threads
def test_threads_give_identical_results(large_corpus):
    docs, queries = large_corpus
    index = build(docs)
    rng = np.random.default_rng(8)
    batch = queries + make_queries(rng, docs, 140, vocab=5000)
    for algorithm in ("exhaustive", "maxscore"):
        one = search(index, batch, k=10, threads=1, algorithm=algorithm)
        for threads in (2, 4, 0):
            other = search(index, batch, k=10, threads=threads, algorithm=algorithm)
            np.testing.assert_array_equal(other[0], one[0])
            np.testing.assert_array_equal(other[1], one[1])


def test_interleaved_searches_on_indexes_of_different_sizes(large_corpus, small_corpus):
    """Per-thread scratch space is shared by all indexes: alternating must not leak scores."""
    big_docs, big_queries = large_corpus
    small_docs, small_queries, _ = small_corpus
    big, small = build(big_docs), build(small_docs[:300])
    expected_big = [search(big, [q], k=10) for q in big_queries[:20]]
    expected_small = [search(small, [q], k=10) for q in small_queries[:20]]
    for i in range(20):
        for algorithm in ("exhaustive", "maxscore"):
            results_equal(
                search(small, [small_queries[i]], k=10, algorithm=algorithm), expected_small[i]
            )
            results_equal(search(big, [big_queries[i]], k=10, algorithm=algorithm), expected_big[i])


def test_core_searches_while_adding(small_corpus):
    """The core is documented as safe for concurrent searches and updates."""
    import threading

    docs, queries, _ = small_corpus
    index = build(docs[:500])
    stop = threading.Event()
    errors: list[BaseException] = []

    def searcher() -> None:
        while not stop.is_set():
            try:
                ids, _ = search(index, queries[:10], k=10, threads=2)
                if ids.max() >= index.stats()["n_docs"]:
                    raise AssertionError("an id beyond the index")
            except BaseException as e:  # collected and reported below
                errors.append(e)
                return

    workers = [threading.Thread(target=searcher) for _ in range(3)]
    for t in workers:
        t.start()
    try:
        for lo in range(500, 3000, 100):
            index.add(*csr(docs[lo : lo + 100]))
            if lo % 500 == 0:
                index.remove(np.array([lo - 1], dtype=np.uint32))
    finally:
        stop.set()
        for t in workers:
            t.join()
    assert not errors, repr(errors[0])
    fresh = build(docs)
    fresh.remove(np.array([lo - 1 for lo in range(500, 3000, 500)], dtype=np.uint32))
    results_equal(search(index, queries, k=10), search(fresh, queries, k=10))


# ---------------------------------------------------------------------------- incremental
def expect_same_as_fresh(index, fresh, survivors, queries, mapped=True):
    s, f = index.stats(), fresh.stats()
    assert s["n_live"] == f["n_live"] == len(survivors)
    assert s["avgdl"] == pytest.approx(f["avgdl"], rel=1e-12)
    df, fdf = index.document_frequencies(), fresh.document_frequencies()
    n = min(len(df), len(fdf))
    np.testing.assert_array_equal(df[:n], fdf[:n])
    assert not df[n:].any() and not fdf[n:].any()
    for algorithm in ("exhaustive", "maxscore"):
        for k in (1, 10, 50):
            ids, scores = search(index, queries, k=k, algorithm=algorithm)
            fids, fscores = search(fresh, queries, k=k, algorithm=algorithm)
            if mapped:  # internal ids of `index` -> positions among the survivors
                assert np.isin(ids[ids >= 0], survivors).all(), "a deleted document came back"
                ids = np.where(ids >= 0, np.searchsorted(survivors, ids), -1)
            np.testing.assert_array_equal(ids, fids)
            np.testing.assert_allclose(scores, fscores, rtol=1e-5)


@pytest.mark.parametrize("method", ["lucene", "bm25l", "atire"])
def test_incremental_updates_equal_fresh_index(small_corpus, method):
    docs, queries, _ = small_corpus
    rng = np.random.default_rng(12)
    n = len(docs)
    index = SparseIndex(method=method)
    live = np.zeros(n, dtype=bool)
    cuts = [0, 700, 1500, 2200, n]
    for i in range(4):
        lo, hi = cuts[i], cuts[i + 1]
        assert index.add(*csr(docs[lo:hi])) == lo
        live[lo:hi] = True
        if i == 1:
            search(index, queries[:3], k=5)  # a search in between commits the pending adds
        victims = rng.choice(np.flatnonzero(live), size=int(0.15 * live.sum()), replace=False)
        assert index.remove(victims.astype(np.uint32)) == len(victims)
        live[victims] = False
    # Removing already deleted documents is a no-op.
    assert index.remove(victims[:5].astype(np.uint32)) == 0
    survivors = np.flatnonzero(live)
    fresh = build([docs[i] for i in survivors], method=method)
    assert index.stats()["n_docs"] == n
    expect_same_as_fresh(index, fresh, survivors, queries)

    remap = index.compact()
    assert remap.dtype == np.int64 and len(remap) == n
    expected = np.full(n, -1, dtype=np.int64)
    expected[survivors] = np.arange(len(survivors))
    np.testing.assert_array_equal(remap, expected)
    st = index.stats()
    assert st["n_docs"] == st["n_live"] == len(survivors)
    assert st["n_postings"] == fresh.stats()["n_postings"]
    expect_same_as_fresh(index, fresh, np.arange(len(survivors)), queries, mapped=False)

    # More additions after compaction still agree.
    extra = zipf_docs(rng, 300, vocab=2000, mean_len=15)
    assert index.add(*csr(extra)) == len(survivors)
    fresh2 = build([docs[i] for i in survivors] + extra, method=method)
    expect_same_as_fresh(index, fresh2, np.arange(len(survivors) + 300), queries, mapped=False)


def test_remove_counts_live_documents_once():
    index = build([[1, 2], [2, 3], [3, 4]])
    assert index.remove(np.array([1, 1, 1], dtype=np.uint32)) == 1
    assert index.remove(np.array([1, 2], dtype=np.uint32)) == 1
    assert index.stats()["n_live"] == 1
    assert not index.is_live(1) and index.is_live(0)


def test_compact_without_deletions_is_identity(small_corpus):
    docs, queries, _ = small_corpus
    index = build(docs[:200])
    before = search(index, queries, k=10)
    np.testing.assert_array_equal(index.compact(), np.arange(200))
    results_equal(search(index, queries, k=10), before)


def test_delete_everything():
    index = build([[1, 2], [2, 3]])
    index.remove(np.array([0, 1], dtype=np.uint32))
    st = index.stats()
    assert st["n_live"] == 0 and st["avgdl"] == 0
    ids, scores = search(index, [[1, 2, 3]], k=3)
    assert np.all(ids == -1) and np.all(np.isneginf(scores))
    assert not index.document_frequencies().any()
    assert len(index.compact()) == 2
    assert index.stats()["n_docs"] == 0
    index.add(*csr([[2]]))
    assert search(index, [[2]], k=2)[0].tolist() == [[0, -1]]


# ---------------------------------------------------------------------------- filters
def bitset(n_docs: int, allowed) -> np.ndarray:
    words = np.zeros((n_docs + 63) // 64, dtype=np.uint64)
    for d in np.asarray(allowed, dtype=np.int64).tolist():
        words[d >> 6] |= np.uint64(1) << np.uint64(d & 63)
    return words


@pytest.mark.parametrize("density", [0.3, 0.002, 0.0, 1.0])
def test_filter_equals_restricted_exhaustive(large_corpus, density):
    docs, queries = large_corpus
    n = len(docs)
    rng = np.random.default_rng(int(density * 1000) + 1)
    index = build(docs)
    deleted = rng.choice(n, 500, replace=False)
    index.remove(deleted.astype(np.uint32))
    allowed_mask = rng.random(n) < density
    allow = bitset(n, np.flatnonzero(allowed_mask))  # deleted documents may be allowed
    full_ids, full_scores = search(index, queries, k=n, algorithm="exhaustive")
    for k in (1, 10, 100):
        for algorithm in ALGORITHMS:
            ids, scores = search(index, queries, k=k, allow=allow, algorithm=algorithm)
            for qi in range(len(queries)):
                row = full_ids[qi][full_ids[qi] >= 0]
                keep = allowed_mask[row]
                exp_ids = row[keep][:k]
                exp_scores = full_scores[qi][: len(row)][keep][:k]
                got = ids[qi][ids[qi] >= 0]
                assert not np.isin(got, deleted).any()
                np.testing.assert_array_equal(got, exp_ids)
                np.testing.assert_allclose(scores[qi][: len(got)], exp_scores, rtol=1e-6)


def test_filter_bitset_validation(small_corpus):
    docs, queries, _ = small_corpus
    index = build(docs)
    words = (len(docs) + 63) // 64
    with pytest.raises(ValueError, match="uint64"):
        search(index, queries, allow=np.zeros(words, dtype=np.uint32))
    with pytest.raises(ValueError, match="uint64"):
        search(index, queries, allow=np.zeros(words, dtype=np.int64))
    with pytest.raises(ValueError, match="dimension"):
        search(index, queries, allow=np.zeros((1, words), dtype=np.uint64))


def test_filter_bitset_of_another_length(small_corpus):
    """Documents past the bitset's end are not allowed (a bitset made before an add stays
    valid); words past the index's end are ignored."""
    docs, queries, _ = small_corpus
    index = build(docs)
    words = (len(docs) + 63) // 64
    full = np.full(words, ~np.uint64(0), dtype=np.uint64)
    short = full[: words // 2].copy()
    padded = np.zeros(words, dtype=np.uint64)
    padded[: words // 2] = short
    ids_short, scores_short = search(index, queries, allow=short)
    ids_padded, scores_padded = search(index, queries, allow=padded)
    assert np.array_equal(ids_short, ids_padded)
    assert np.array_equal(scores_short, scores_padded)
    assert ids_short.max() < 64 * (words // 2)
    long = np.concatenate([full, full])
    assert np.array_equal(search(index, queries, allow=long)[0], search(index, queries)[0])


# ---------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("method", ["lucene", "bm25+"])
@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_round_trip(tmp_path, small_corpus, method, mmap):
    docs, queries, _ = small_corpus
    index = build(docs, chunks=2, method=method, k1=1.3, b=0.6, delta=0.8)
    index.remove(np.arange(0, 3000, 7, dtype=np.uint32))
    index.add(*csr(docs[:50]))  # pending, committed by save()
    extra = bytes(range(256)) * 3
    path = tmp_path / "ix.fridx"
    index.save(str(path), extra)
    loaded, got_extra = SparseIndex.load(str(path), mmap=mmap)
    assert got_extra == extra
    # the same contents; allocations differ (a built index has spare capacity)
    spare = ("allocated_bytes", "capacity")
    assert {k: v for k, v in loaded.stats().items() if k not in spare} == {
        k: v for k, v in index.stats().items() if k not in spare
    }
    np.testing.assert_array_equal(loaded.document_frequencies(), index.document_frequencies())
    assert (loaded.scoring, loaded.method) == ("bm25", method)
    assert (loaded.k1, loaded.b, loaded.delta) == (index.k1, index.b, index.delta)
    for algorithm in ("exhaustive", "maxscore"):
        a = search(index, queries, k=10, algorithm=algorithm)
        b = search(loaded, queries, k=10, algorithm=algorithm)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    # Saved again after loading: identical bytes.
    path2 = tmp_path / "again.fridx"
    loaded.save(str(path2), extra)
    assert path2.read_bytes() == path.read_bytes()


def test_mmap_index_copies_on_write_and_leaves_file_untouched(tmp_path, small_corpus):
    docs, queries, _ = small_corpus
    path = tmp_path / "ix.fridx"
    build(docs[:1500]).save(str(path), b"x")
    digest = file_digest(path)
    mapped, _ = SparseIndex.load(str(path), mmap=True)
    twin = build(docs[:1500])
    for ix in (mapped, twin):
        ix.remove(np.arange(0, 1500, 5, dtype=np.uint32))
        assert ix.add(*csr(docs[1500:2000])) == 1500
    results_equal(search(mapped, queries, k=10), search(twin, queries, k=10))
    assert mapped.stats()["n_live"] == twin.stats()["n_live"]
    assert file_digest(path) == digest
    # Compaction of a mapped index, then saving over the very file it maps.
    np.testing.assert_array_equal(mapped.compact(), twin.compact())
    mapped.save(str(path), b"y")
    results_equal(search(mapped, queries, k=10), search(twin, queries, k=10))
    again, extra = SparseIndex.load(str(path), mmap=True)
    assert extra == b"y"
    results_equal(search(again, queries, k=10), search(twin, queries, k=10))


def test_save_over_a_mapped_file_keeps_the_mapped_index_valid(tmp_path, small_corpus):
    docs, queries, _ = small_corpus
    path = tmp_path / "ix.fridx"
    build(docs[:1000]).save(str(path))
    mapped, _ = SparseIndex.load(str(path), mmap=True)
    before = search(mapped, queries, k=10)
    build(docs[1000:1200]).save(str(path))  # replaced by rename; the mapping keeps the old file
    results_equal(search(mapped, queries, k=10), before)
    assert SparseIndex.load(str(path))[0].stats()["n_docs"] == 200


def test_empty_index_round_trip(tmp_path):
    for scoring in ("bm25", "impact"):
        path = tmp_path / f"{scoring}.fridx"
        SparseIndex(scoring=scoring).save(str(path))
        for mmap in (False, True):
            loaded, extra = SparseIndex.load(str(path), mmap=mmap)
            assert extra == b""
            assert loaded.stats()["n_docs"] == 0 and loaded.scoring == scoring
            ids, _ = search(loaded, [[1]], k=2)
            assert ids.tolist() == [[-1, -1]]
            values = None if scoring == "bm25" else np.ones(2, dtype=np.float32)
            loaded.add(*csr([[1, 2]]), values)
            assert search(loaded, [[1]], k=2)[0].tolist() == [[0, -1]]


def test_save_errors(tmp_path):
    index = build([[1, 2]])
    with pytest.raises(OSError):
        index.save(str(tmp_path))  # a directory
    with pytest.raises(OSError):
        index.save(str(tmp_path / "missing" / "ix.fridx"))
    assert sorted(os.listdir(tmp_path)) == []  # no temporary file left behind


# ---------------------------------------------------------------------------- compressed postings
@pytest.mark.parametrize("method", ["lucene", "robertson", "atire", "bm25l", "bm25+"])
def test_impact_cache_off_gives_the_same_bits(tmp_path, method):
    """BM25 impacts computed at decode time (impact_cache=False) equal the cached ones bit for
    bit: every algorithm, filters, deletions, long documents (past the length tables), large
    term frequencies (past the tf tables), compaction, save / load and toggling."""
    rng = np.random.default_rng(31)
    docs = zipf_docs(rng, 3000, vocab=400, mean_len=12)
    docs[5] = [1] * 40 + [2] * 3  # tf 40
    docs[7] = list(rng.integers(0, 400, 5000))  # longer than the length tables' 2048
    queries = [*make_queries(rng, docs, 60, vocab=400), [1, 2], [1]]
    params = {"method": method, "k1": 1.2, "b": 0.75, "delta": 0.5}
    on = build(docs, chunks=3, **params)
    off = build(docs, chunks=3, impact_cache=False, **params)
    assert on.impact_cache and not off.impact_cache
    assert off.stats()["memory_bytes"] < on.stats()["memory_bytes"]
    allow = np.frombuffer(rng.bytes((3000 + 63) // 64 * 8), dtype=np.uint64).copy()

    def same(a, b):
        for algorithm in ("exhaustive", "maxscore"):
            for options in ({"k": 10}, {"k": 1}, {"k": 50, "allow": allow}):
                ra = search(a, queries, algorithm=algorithm, **options)
                rb = search(b, queries, algorithm=algorithm, **options)
                np.testing.assert_array_equal(ra[0], rb[0])
                assert ra[1].tobytes() == rb[1].tobytes()

    same(on, off)
    for ix in (on, off):
        ix.remove(np.arange(0, 3000, 9, dtype=np.uint32))
    same(on, off)
    path = tmp_path / "ix.fridx"
    off.save(str(path))
    loaded, _ = SparseIndex.load(str(path), mmap=True)
    assert loaded.impact_cache
    same(on, loaded)
    loaded.set_impact_cache(False)
    assert not loaded.impact_cache
    same(on, loaded)
    np.testing.assert_array_equal(on.compact(), loaded.compact())
    same(on, loaded)
    off.set_impact_cache(True)
    off.compact()
    same(off, loaded)


def test_compressed_postings_are_small():
    rng = np.random.default_rng(8)
    docs = zipf_docs(rng, 20000, vocab=2000, mean_len=40)
    index = build(docs, impact_cache=False)
    st = index.stats()
    assert st["memory_bytes"] / st["n_postings"] < 2.5  # 12 uncompressed
    index.set_impact_cache(True)
    # the cache: a float impact per posting, and on an index this small (under
    # SparseIndex.kDocCacheMax postings) the decoded document ids too
    assert 8.0 < index.stats()["memory_bytes"] / st["n_postings"] < 10.5


# ---------------------------------------------------------------------------- corrupted files
@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    rng = np.random.default_rng(99)
    docs = zipf_docs(rng, 40, vocab=30, mean_len=6)
    index = build(docs, method="bm25l")
    index.remove(np.array([3, 17], dtype=np.uint32))
    path = tmp_path_factory.mktemp("corrupt") / "small.fridx"
    index.save(str(path), b'{"some": "extra"}')
    queries = make_queries(rng, docs, 10, vocab=30)
    return path, path.read_bytes(), queries, search(index, queries, k=5)


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_every_flipped_byte_is_detected(tmp_path, small_file):
    _, data, queries, expected = small_file
    assert len(data) < 8192
    target = tmp_path / "flipped.fridx"
    loaded_anyway = []
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0xFF
        for mmap in (False, True) if i % 5 == 0 else (False,):
            try:
                index, _ = SparseIndex.load(write(target, bytes(bad)), mmap=mmap)
            except fastrag.IndexFormatError:
                continue
            loaded_anyway.append(i)
            results_equal(search(index, queries, k=5), expected)
    assert loaded_anyway == []  # the checksum covers every byte, the header's too


@pytest.mark.parametrize("length", [0, 1, 8, 63, 64, 65, 200, -64, -1])
def test_truncated_file(tmp_path, small_file, length):
    _, data, _, _ = small_file
    cut = data[:length]
    for mmap in (False, True):
        with pytest.raises(fastrag.IndexFormatError):
            SparseIndex.load(write(tmp_path / "t.fridx", cut), mmap=mmap)


@pytest.mark.parametrize("tail", [b"\x00", b"x" * 64, b"\x00" * 4096])
def test_appended_bytes(tmp_path, small_file, tail):
    _, data, _, _ = small_file
    for mmap in (False, True):
        with pytest.raises(fastrag.IndexFormatError, match=r"trailing|truncated"):
            SparseIndex.load(write(tmp_path / "a.fridx", data + tail), mmap=mmap)


def test_foreign_files(tmp_path, small_file):
    _, data, _, _ = small_file
    rng = np.random.default_rng(1)
    foreign = {
        "random": rng.bytes(5000),
        "random_with_magic": data[:8] + rng.bytes(3000),
        "json": b'{"format": "fastrag.bm25", "version": 1}' * 10,
        "zeros": bytes(4096),
    }
    npy = tmp_path / "arr.npy"
    np.save(npy, np.arange(1000))
    foreign["npy"] = npy.read_bytes()
    other_kind = bytearray(data)
    other_kind[12:16] = (2).to_bytes(4, "little")  # FileKind::DenseIndex
    foreign["other_kind"] = bytes(other_kind)
    for name, blob in foreign.items():
        for mmap in (False, True):
            with pytest.raises(fastrag.IndexFormatError):
                SparseIndex.load(write(tmp_path / f"{name}.bin", blob), mmap=mmap)
    with pytest.raises(fastrag.IndexFormatError, match="another kind"):
        SparseIndex.load(write(tmp_path / "k.bin", foreign["other_kind"]))


@pytest.fixture(scope="module")
def multi_block_file(tmp_path_factory):
    rng = np.random.default_rng(17)
    docs = zipf_docs(rng, 1500, vocab=300, mean_len=8)
    index = build(docs, method="bm25l")
    index.remove(np.arange(0, 1500, 13, dtype=np.uint32))
    path = tmp_path_factory.mktemp("structure") / "multi.fridx"
    index.save(str(path), b"{}")
    return path.read_bytes(), docs, make_queries(rng, docs, 20, vocab=300)


def test_checksum_reimplementation_matches(multi_block_file, golden_dir):
    data = multi_block_file[0]
    assert reseal(bytearray(data)) == data
    golden = (golden_dir / "sparse_v1.fridx").read_bytes()
    assert reseal(bytearray(golden)) == golden


# Sections of sparse_index.cpp, format version 2: 1 meta (u64: scoring, method, n_docs, n_live,
# n_terms, block size, k1, b, delta, total length), 2 doc lengths, 3 live bits, 4 offsets,
# 6 values (impact scoring only), 8 block offsets, 10 block last, 14 packed postings (u8),
# 15 block data offsets (u64), 16 block bit widths (u16: doc gap bits | tf bits << 8).
# (Version 1 also had 5 docs, 7 impacts, 9 block max, 11 term max, 12 nonocc, 13 df.)
STRUCTURAL_DAMAGE = {
    "scoring": (1, 0, 7),
    "method": (1, 1, 9),
    "n_docs": (1, 2, "+1"),
    "n_live": (1, 3, "-1"),
    "n_terms": (1, 4, "+1"),
    "block_size": (1, 5, 64),
    "k1_nan": (1, 6, 0x7FF8000000000000),
    "b_negative": (1, 7, 0xBFF0000000000000),
    "offset_past_end": (4, 1, 1 << 40),
    "offsets_decreasing": (4, 2, 0),
    "packed_gaps": (14, 0, 0xFF),
    "packed_gaps_later": (14, 40, "+1"),
    "block_last": (10, 0, "+1"),
    "block_last_later": (10, 3, "-1"),
    "block_data": (15, 1, "+1"),
    "doc_bits": (16, 0, 33),
    "doc_bits_smaller": (16, 2, "-1"),
    "tf_bits": (16, 1, "+7680"),
    "block_offsets": (8, 1, "+1"),
}


@pytest.mark.parametrize("damage", sorted(STRUCTURAL_DAMAGE))
def test_structural_damage_with_valid_checksum(tmp_path, multi_block_file, damage):
    data, _, _ = multi_block_file
    sid, index, value = STRUCTURAL_DAMAGE[damage]
    _, size, off, _ = section_table(data)[sid]
    pos = off + index * size
    old = int.from_bytes(data[pos : pos + size], "little")
    new = old + int(value) if isinstance(value, str) else value
    bad = bytearray(data)
    bad[pos : pos + size] = new.to_bytes(size, "little")
    for mmap in (False, True):
        with pytest.raises(fastrag.IndexFormatError):
            SparseIndex.load(write(tmp_path / "bad.fridx", reseal(bad)), mmap=mmap)


@pytest.mark.parametrize("field", ["elem_size", "section_id", "offset", "length"])
def test_damaged_section_table_with_valid_checksum(tmp_path, multi_block_file, field):
    data, _, _ = multi_block_file
    entry = section_table(data)[14][0]  # the packed postings
    where, value = {
        "elem_size": (entry + 4, (8).to_bytes(4, "little")),
        "section_id": (entry, (77).to_bytes(4, "little")),
        "offset": (entry + 8, (len(data) + 64).to_bytes(8, "little")),
        "length": (entry + 16, (len(data)).to_bytes(8, "little")),
    }[field]
    bad = bytearray(data)
    bad[where : where + len(value)] = value
    with pytest.raises(fastrag.IndexFormatError):
        SparseIndex.load(write(tmp_path / "bad.fridx", reseal(bad)))


def test_random_damage_with_valid_checksum_never_crashes(tmp_path, multi_block_file):
    """Damage that the checksum cannot see: the load refuses the file, or the index works
    (search, update, compaction) without crashing; its results are then unspecified."""
    data, docs, queries = multi_block_file
    table = section_table(data)
    rng = np.random.default_rng(2024)
    for case in range(150):
        bad = damage(data, table, rng, case)
        try:
            index, _ = SparseIndex.load(
                write(tmp_path / "bad.fridx", reseal(bad)), mmap=case % 3 == 0
            )
        except fastrag.IndexFormatError:
            continue
        for algorithm in ("exhaustive", "maxscore"):
            ids, _ = search(index, queries, k=50, algorithm=algorithm)
            assert ids.max() < index.stats()["n_docs"]
        index.add(*csr(docs[:20]))
        index.remove(np.array([1], dtype=np.uint32))
        index.compact()
        search(index, queries, k=10)


def test_newer_format_version_is_refused(tmp_path, small_file):
    _, data, _, _ = small_file
    for version in (3, 0, 0xFFFFFFFF):
        bad = bytearray(data)
        bad[8:12] = version.to_bytes(4, "little")
        with pytest.raises(fastrag.IndexFormatError, match="version"):
            SparseIndex.load(write(tmp_path / "v.fridx", bytes(bad)))


def test_missing_file_and_directory(tmp_path):
    assert issubclass(fastrag.IndexFormatError, ValueError)
    for mmap in (False, True):
        with pytest.raises(OSError, match="no such index file"):
            SparseIndex.load(str(tmp_path / "nope.fridx"), mmap=mmap)
        with pytest.raises(OSError, match="not a regular file"):
            SparseIndex.load(str(tmp_path), mmap=mmap)


# ---------------------------------------------------------------------------- golden files
GOLDEN_QUERIES = [[1], [0, 2], [5, 3, 6], [6], [7, 7], [9]]
GOLDEN_IDS = [[0, 1, 4, -1], [2, 0, 4, -1], [5, 1, 2, -1], [-1] * 4, [4, -1, -1, -1], [-1] * 4]
GOLDEN_SCORES = {
    # Lucene, k1=1.2, b=0.75: idf = ln(1 + (N - df + 0.5) / (df + 0.5)), N = 5, avgdl = 3.6.
    "sparse_v1.fridx": (
        ("lucene", 1.2, 0.75, 0.5),
        [
            [0.3266645, 0.2994425, 0.2629251],
            [0.6469811, 0.6149849, 0.2629251],
            [0.9914307, 0.4863715, 0.3433211],
            [],
            [1.3524823],
            [],
        ],
    ),
    # BM25+, k1=1.5, b=0.5, delta=1: every matching document gets idf * delta for absent terms.
    "sparse_v1_bm25plus.fridx": (
        ("bm25+", 1.5, 0.5, 1.0),
        [
            [1.6603293, 1.4929324, 1.4227758],
            [3.6896316, 3.5257202, 2.5213881],
            [5.0581270, 3.4648541, 3.1810565],
            [],
            [7.3556441],
            [],
        ],
    ),
}


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("name", sorted(GOLDEN_SCORES))
@pytest.mark.parametrize("mmap", [False, True])
def test_golden_bm25_file(golden_dir, name, mmap, version):
    path = golden_dir / name.replace("_v1", f"_v{version}")
    assert path.stat().st_size < 10_000
    index, extra = SparseIndex.load(str(path), mmap=mmap)
    assert extra == b"fastrag golden v1 \x00\xff\n"
    (method, k1, b, delta), expected = GOLDEN_SCORES[name]
    assert index.scoring == "bm25" and index.method == method
    assert (index.k1, index.b, index.delta) == pytest.approx((k1, b, delta))
    st = index.stats()
    assert (st["n_docs"], st["n_live"], st["n_terms"], st["n_postings"]) == (6, 5, 8, 16)
    assert st["avgdl"] == pytest.approx(3.6, rel=1e-12)
    assert index.document_frequencies().tolist() == [3, 3, 2, 2, 1, 2, 0, 1]
    assert [index.is_live(i) for i in range(6)] == [True, True, True, False, True, True]
    for algorithm in ("exhaustive", "maxscore"):
        ids, scores = search(index, GOLDEN_QUERIES, k=4, algorithm=algorithm)
        assert ids.tolist() == GOLDEN_IDS
        for qi, exp in enumerate(expected):
            np.testing.assert_allclose(scores[qi][: len(exp)], exp, rtol=1e-6)
            assert np.all(np.isneginf(scores[qi][len(exp) :]))
    # A loaded index (of either version) can still be updated.
    index.remove(np.array([5], dtype=np.uint32))
    assert index.add(*csr([[6, 6]])) == 6
    assert search(index, [[6]], k=2)[0].tolist() == [[6, -1]]


@pytest.mark.parametrize("version", [1, 2])
def test_golden_impact_file(golden_dir, version):
    path = golden_dir / f"sparse_v{version}_impact.fridx"
    assert path.stat().st_size < 10_000
    for mmap in (False, True):
        index, extra = SparseIndex.load(str(path), mmap=mmap)
        assert extra == b"fastrag golden v1 \x00\xff\n"
        assert index.scoring == "impact"
        st = index.stats()
        assert (st["n_docs"], st["n_live"], st["n_terms"], st["n_postings"]) == (4, 3, 5, 8)
        assert st["avgdl"] == 2.0  # distinct terms per live document
        assert index.document_frequencies().tolist() == [2, 1, 1, 1, 1]
        queries = [[0], [2, 3], [1], [4, 0, 0]]
        weights = [[1.0], [0.5, 2.0], [1.0], [2.0, 1.0, 1.0]]
        for algorithm in ("exhaustive", "maxscore"):
            ids, scores = search(index, queries, weights, k=3, algorithm=algorithm)
            assert ids.tolist() == [[0, 2, -1], [2, 0, -1], [2, -1, -1], [3, 0, 2]]
            assert scores[:, :2].tolist() == [[1.5, 0.75], [8.0, 1.5], [1.0, -math.inf], [5.0, 3.0]]
            assert scores[3, 2] == 1.5


def test_golden_generator_reproduces_the_files(tmp_path, golden_dir, monkeypatch):
    """While fastrag writes the format version of the files make_golden.py names (2), it writes
    exactly the committed files (so the script documents them); after a version bump the old
    files stay as they are (the version-1 files are no longer written by the script)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_golden", golden_dir / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "HERE", tmp_path)
    assert module.main([]) == 0
    for name in module.FILES:
        written, committed = (tmp_path / name).read_bytes(), (golden_dir / name).read_bytes()
        if written[8:12] != committed[8:12]:
            pytest.skip("fastrag now writes another format version")
        assert written == committed, name


# ---------------------------------------------------------------------------- bad input
def test_array_dtype_and_layout_errors():
    index = SparseIndex()
    indptr, terms = csr([[1, 2, 3], [4]])
    with pytest.raises(ValueError, match="int64"):
        index.add(indptr.astype(np.int32), terms)
    with pytest.raises(ValueError, match="int64"):
        index.add(indptr.astype(np.float64), terms)
    with pytest.raises(ValueError, match="uint32"):
        index.add(indptr, terms.astype(np.int32))
    with pytest.raises(ValueError, match="uint32"):
        index.add(indptr, terms.astype(np.int64))
    with pytest.raises(ValueError, match="uint32"):
        index.add(indptr, terms.astype(np.float64))
    with pytest.raises(ValueError, match="contiguous"):
        index.add(indptr, np.repeat(terms, 2)[::2])
    with pytest.raises(ValueError, match="contiguous"):
        index.add(np.repeat(indptr, 2)[::2], terms)
    with pytest.raises(ValueError, match="dimension"):
        index.add(indptr, terms.reshape(2, 2))
    index.add(indptr, terms)
    with pytest.raises(ValueError, match="int64"):
        index.search(indptr.astype(np.int32), terms)
    with pytest.raises(ValueError, match="uint32"):
        index.search(indptr, terms.astype(np.int64))
    with pytest.raises(ValueError, match="contiguous"):
        index.search(indptr, np.repeat(terms, 2)[::2])
    with pytest.raises(ValueError, match="float32"):
        index.search(indptr, terms, np.ones(4, dtype=np.float64))
    with pytest.raises(ValueError, match="uint32"):
        index.remove(np.array([0], dtype=np.int64))
    assert index.stats()["n_docs"] == 2


@pytest.mark.parametrize("method", ["add", "search"])
def test_bad_indptr(method):
    index = SparseIndex()
    index.add(*csr([[1, 2]]))
    call = getattr(index, method)
    terms = np.array([1, 2, 3], dtype=np.uint32)
    for indptr in ([1, 3], [0, 2, 1, 3], [0, 2], [0, 4], [0, -1, 3], []):
        with pytest.raises(ValueError, match="indptr"):
            call(np.array(indptr, dtype=np.int64), terms)
    assert index.stats()["n_docs"] == 1


def test_impact_value_errors():
    index = SparseIndex(scoring="impact")
    indptr, terms = csr([[1, 2], [3]])
    for bad in (np.nan, -1.0, np.inf, -np.inf, -0.0001):
        values = np.array([1.0, bad, 2.0], dtype=np.float32)
        with pytest.raises(ValueError, match="finite"):
            index.add(indptr, terms, values)
    with pytest.raises(ValueError, match="weight"):
        index.add(indptr, terms)  # values missing
    with pytest.raises(ValueError, match="one weight per term"):
        index.add(indptr, terms, np.ones(2, dtype=np.float32))
    with pytest.raises(ValueError, match="float32"):
        index.add(indptr, terms, np.ones(3, dtype=np.float64))
    assert index.stats()["n_docs"] == 0
    index.add(indptr, terms, np.array([1.0, -0.0, 0.0], dtype=np.float32))  # zeros are fine
    with pytest.raises(ValueError, match="no values"):
        SparseIndex().add(indptr, terms, np.ones(3, dtype=np.float32))


def test_query_weight_errors():
    index = build([[1, 2], [2, 3]])
    indptr, terms = csr([[1, 2]])
    for bad in (-1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="weights"):
            index.search(indptr, terms, np.array([1.0, bad], dtype=np.float32))
    with pytest.raises(ValueError, match="weights"):
        index.search(indptr, terms, np.ones(3, dtype=np.float32))


def test_term_id_limit():
    index = SparseIndex()
    with pytest.raises(ValueError, match="too large"):
        index.add(np.array([0, 1], dtype=np.int64), np.array([1 << 30], dtype=np.uint32))
    index.add(np.array([0, 1], dtype=np.int64), np.array([5], dtype=np.uint32))
    huge = np.array([0, 2], dtype=np.int64), np.array([5, 0xFFFFFFFF], dtype=np.uint32)
    assert index.search(*huge, k=1)[0].tolist() == [[0]]  # unknown query terms are ignored


def test_remove_unknown_id_is_an_index_error_and_removes_nothing():
    index = build([[1], [2], [3]])
    with pytest.raises(IndexError, match="7"):
        index.remove(np.array([0, 7], dtype=np.uint32))
    assert index.stats()["n_live"] == 3
    with pytest.raises(IndexError):
        SparseIndex().remove(np.array([0], dtype=np.uint32))


def test_unknown_options():
    with pytest.raises(ValueError, match="method"):
        SparseIndex(method="bm99")
    with pytest.raises(ValueError, match="scoring"):
        SparseIndex(scoring="tfidf")
    for params in (
        {"k1": -1.0},
        {"b": 1.5},
        {"b": -0.1},
        {"delta": -1.0},
        {"k1": math.nan},
        {"k1": math.inf},
    ):
        with pytest.raises(ValueError):
            SparseIndex(**params)
    index = build([[1]])
    with pytest.raises(ValueError, match="algorithm"):
        search(index, [[1]], algorithm="wand")


def test_empty_index_and_empty_queries():
    index = SparseIndex()
    ids, scores = search(index, [[1, 2], []], k=3)
    assert ids.shape == (2, 3) and np.all(ids == -1) and np.all(np.isneginf(scores))
    index = build([[1, 2], [2]])
    ids, scores = search(index, [[], [2], []], k=2)
    assert ids.tolist() == [[-1, -1], [1, 0], [-1, -1]]
    ids, scores = search(index, [], k=2)  # no queries at all
    assert ids.shape == (0, 2) and scores.shape == (0, 2)
    assert scores.dtype == np.float32 and ids.dtype == np.int64


def test_k_zero_returns_empty_rows():
    index = build([[1, 2], [2]])
    for algorithm in ALGORITHMS:
        ids, scores = search(index, [[2], [1]], k=0, algorithm=algorithm)
        assert ids.shape == (2, 0) and scores.shape == (2, 0)


def test_empty_documents_count_in_statistics():
    index = build([[], [1, 1], []])
    st = index.stats()
    assert (st["n_docs"], st["n_live"]) == (3, 3)
    assert st["avgdl"] == pytest.approx(2 / 3)
    assert search(index, [[1]], k=3)[0].tolist() == [[1, -1, -1]]
    assert index.add(np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.uint32)) == 3  # no docs


# ---------------------------------------------------------------------------- impact scoring
def test_impact_scores_are_dot_products():
    rng = np.random.default_rng(31)
    n_docs, vocab = 4000, 3000
    docs, values = [], []
    dense = np.zeros((n_docs, vocab), dtype=np.float64)
    for d in range(n_docs):
        m = int(rng.integers(0, 40))
        t = ((rng.zipf(1.3, m) - 1) % vocab).astype(np.uint32)
        v = rng.exponential(1.0, m).astype(np.float32)
        v[rng.random(m) < 0.05] = 0.0
        docs.append(t)
        values.append(v)
        np.maximum.at(dense[d], t, v.astype(np.float64))  # repeated terms keep the max
    index = build(docs, scoring="impact", values=values, chunks=3)
    lengths = np.array([len(np.unique(t)) for t in docs])
    assert index.stats()["avgdl"] == pytest.approx(lengths.mean())
    queries = make_queries(rng, docs, 50, vocab=vocab, max_len=8)
    weights = [rng.uniform(0.0, 2.0, len(q)).astype(np.float32) for q in queries]
    qdense = np.zeros((len(queries), vocab + 20), dtype=np.float64)
    for qi, (q, w) in enumerate(zip(queries, weights, strict=True)):
        np.add.at(qdense[qi], q, w)
    ref_all = qdense[:, :vocab] @ dense.T  # only documents with a positive score are results
    for algorithm in ("exhaustive", "maxscore"):
        ids, scores = search(index, queries, weights, k=25, algorithm=algorithm)
        for qi in range(len(queries)):
            eligible = ref_all[qi] > 0
            check_against_reference(ids[qi], scores[qi], ref_all[qi], eligible, 25, 1e-5, 1e-6)


def test_impact_scoring_decoded_id_cache_gives_the_same_bits():
    """An impact-scored index this small keeps its postings' document ids decoded (the cache,
    on by default): the same results, bit for bit, as decoding every block, after deletions
    and compaction too."""
    rng = np.random.default_rng(12)
    docs, values = [], []
    for _ in range(2500):
        m = int(rng.integers(1, 30))
        docs.append(((rng.zipf(1.3, m) - 1) % 300).astype(np.uint32))
        values.append(rng.exponential(1.0, m).astype(np.float32))
    queries = make_queries(rng, docs, 40, vocab=300, max_len=8)
    weights = [rng.uniform(0.1, 2.0, len(q)).astype(np.float32) for q in queries]
    on = build(docs, scoring="impact", values=values, chunks=2)
    off = build(docs, scoring="impact", values=values, chunks=2)
    off.set_impact_cache(False)
    assert off.stats()["memory_bytes"] < on.stats()["memory_bytes"]

    def same():
        for k in (1, 10, 60):
            ra = search(on, queries, weights, k=k, algorithm="exhaustive")
            rb = search(off, queries, weights, k=k, algorithm="exhaustive")
            np.testing.assert_array_equal(ra[0], rb[0])
            assert ra[1].tobytes() == rb[1].tobytes()

    same()
    for ix in (on, off):
        ix.remove(np.arange(0, 2500, 7, dtype=np.uint32))
    same()
    np.testing.assert_array_equal(on.compact(), off.compact())
    same()


def test_impact_repeated_term_in_document_keeps_max():
    index = SparseIndex(scoring="impact")
    indptr, terms = csr([[4, 4, 4, 1], [4]])
    index.add(indptr, terms, np.array([0.5, 2.5, 1.0, 1.0, 2.0], dtype=np.float32))
    ids, scores = search(index, [[4]], k=2)
    assert ids.tolist() == [[0, 1]] and scores.tolist() == [[2.5, 2.0]]
    assert index.stats()["n_postings"] == 3
    assert index.stats()["avgdl"] == 1.5  # distinct terms: 2 and 1


# ---------------------------------------------------------------------------- reordering
def topic_docs(rng: np.random.Generator, n_docs: int,
               topics: int = 12) -> tuple[list[np.ndarray], np.ndarray]:
    """Documents of one topic each (8 of its own 40 terms, and 3 of 10 common ones), in
    random order; and the topic of each."""
    own = rng.permutation(topics * 40).reshape(topics, 40) + 10
    topic = rng.integers(0, topics, n_docs)
    docs = [np.concatenate([rng.choice(own[int(t)], 8), rng.integers(0, 10, 3)]).astype(np.uint32)
            for t in topic]
    return docs, topic


def log_gap_bits(index: SparseIndex, n_terms: int) -> float:
    """Sum over the posting lists of log2(gap + 1): what BP minimises."""
    total = 0.0
    n = index.stats()["n_docs"]
    for t in range(n_terms):
        ids, _ = search(index, [[t]], k=n, algorithm="exhaustive")
        docs = np.sort(ids[0][ids[0] >= 0])
        total += float(np.log2(np.diff(np.concatenate([[-1], docs])) + 1).sum())
    return total


@pytest.mark.parametrize("scoring", ["bm25", "impact"])
def test_reorder_keeps_every_score_and_maps_every_document(scoring):
    rng = np.random.default_rng(3)
    docs, _ = topic_docs(rng, 700)
    values = None if scoring == "bm25" else [rng.random(len(d)).astype(np.float32) + 0.1
                                             for d in docs]
    plain, bp = build(docs, scoring, values), build(docs, scoring, values)
    dead = np.array([5, 77, 300, 699], dtype=np.uint32)
    plain.remove(dead)
    bp.remove(dead)
    queries = make_queries(rng, docs, 30, 1000)
    k = 700
    before = search(plain, queries, k=k)
    remap = bp.compact(reorder=True, min_size=8)
    # a dense renumbering of the live documents, deleted ones dropped
    assert np.all(remap[dead] == -1)
    live = np.delete(np.arange(700), dead)
    assert sorted(remap[live].tolist()) == list(range(len(live)))
    assert bp.stats()["n_docs"] == len(live)
    after = search(bp, queries, k=k)
    for q in range(len(queries)):
        # the same documents with the same scores (bits), each under its new id
        a = {int(d): s for d, s in zip(before[0][q], before[1][q], strict=True) if d >= 0}
        b = {int(d): s for d, s in zip(after[0][q], after[1][q], strict=True) if d >= 0}
        assert {int(remap[d]): s for d, s in a.items()} == b
    for algorithm in ALGORITHMS:  # the algorithms still agree on the new order
        results_equal(search(bp, queries, k=10, algorithm=algorithm), search(bp, queries, k=10))


def test_reorder_gathers_documents_that_share_terms():
    rng = np.random.default_rng(4)
    docs, topic = topic_docs(rng, 2000)
    index = build(docs)
    n_terms = 12 * 40 + 10
    shuffled = log_gap_bits(index, n_terms)
    remap = index.compact(reorder=True)
    assert log_gap_bits(index, n_terms) < 0.6 * shuffled
    # documents of one topic end up in few runs
    by_new = topic[np.argsort(remap)]
    assert np.count_nonzero(np.diff(by_new)) < 0.1 * len(docs)
    # deterministic, whatever the threads
    again = build(docs)
    np.testing.assert_array_equal(again.compact(reorder=True, threads=1), remap)


def test_reorder_edge_cases_and_bad_parameters():
    empty = SparseIndex()
    assert empty.compact(reorder=True).size == 0
    one = build([[1, 2]])
    np.testing.assert_array_equal(one.compact(reorder=True), [0])
    gone = build([[1], [2], [1, 2]])
    gone.remove(np.array([0, 1, 2], dtype=np.uint32))
    np.testing.assert_array_equal(gone.compact(reorder=True), [-1, -1, -1])
    assert gone.stats()["n_docs"] == 0
    small = build([[1], [2], [1, 3], [4]])
    assert sorted(small.compact(reorder=True, min_size=2).tolist()) == [0, 1, 2, 3]
    for bad in ({"iterations": 0}, {"min_size": 1}):
        with pytest.raises(ValueError):
            build([[1], [2]]).compact(reorder=True, **bad)


def test_bm25_load_refuses_an_impact_core(tmp_path: Path) -> None:
    """A file whose scoring mode says impact (checksum resealed; no postings, so every other
    structural check passes) is refused by BM25.load, as ImpactIndex.load refuses a BM25 core:
    loaded, its first add would fail ("impact scoring needs one weight per term")."""
    import warnings

    index = fastrag.BM25()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the document has no tokens
        index.add(["!!!"], ids=["a"])
    path = tmp_path / "b.fridx"
    index.save(path)
    data = bytearray(path.read_bytes())
    _, _, off, _ = section_table(bytes(data))[1]  # the metadata section: scoring mode first
    assert int.from_bytes(data[off : off + 8], "little") == 0
    data[off : off + 8] = (1).to_bytes(8, "little")
    path.write_bytes(reseal(data))
    assert _core.SparseIndex.load(str(path))[0].scoring == "impact"  # the core accepts it
    for mmap in (False, True):
        with pytest.raises(fastrag.IndexFormatError, match="holds impact scores, not a BM25"):
            fastrag.BM25.load(path, mmap=mmap)
