"""ApproxImpactIndex (Seismic-style approximate learned-sparse search) against the exact
ImpactIndex, and against Seismic itself (pyseismic-lsr) when it is installed.

The corpus has topic structure, as SPLADE vectors do: each document draws most of its terms
from one of a few dozen topics (each a Zipf distribution over its own terms), the rest from a
vocabulary-wide background. Everything is seeded; files go to tmp_path only.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import scipy.sparse as sp

from fastrag import ApproxImpactIndex, ImpactIndex, _core
from fastrag._core import IndexFormatError
from fastrag.index.csr import to_csr

VOCAB = 3000
K = 10


def topic_corpus(seed, n_docs, n_queries, n_topics=60, topic_terms=80, length=60):
    """(documents, queries) as scipy CSR matrices with topic structure."""
    rng = np.random.default_rng(seed)
    topics = np.stack([rng.choice(VOCAB, topic_terms, replace=False) for _ in range(n_topics)])
    p = 1.0 / (np.arange(topic_terms) + 3.0)
    p /= p.sum()

    def rows(n, draws, share):
        out = []
        for _ in range(n):
            topic = topics[rng.integers(n_topics)]
            own = topic[rng.choice(topic_terms, int(draws * share), p=p)]
            background = rng.integers(0, VOCAB, draws - len(own))
            terms, first = np.unique(np.concatenate([own, background]), return_index=True)
            heavy = first < len(own)
            w = np.exp(np.where(heavy, 0.2, -1.0) + 0.6 * rng.standard_normal(len(terms)))
            out.append((terms, w.astype(np.float32)))
        indptr = np.concatenate([[0], np.cumsum([len(t) for t, _ in out])])
        return sp.csr_matrix((np.concatenate([w for _, w in out]),
                              np.concatenate([t for t, _ in out]), indptr), shape=(n, VOCAB))

    return rows(n_docs, length, 0.7), rows(n_queries, 24, 0.75)


@pytest.fixture(scope="module")
def corpus():
    docs, queries = topic_corpus(0, 3000, 40)
    exact = ImpactIndex(VOCAB)
    exact.add(docs)
    return docs, queries, exact.search(queries, k=K, threads=1)


def recall(got, want):
    hits = sum(len({d for d in a if d is not None} & {d for d in b if d is not None})
               for a, b in zip(got.ids, want.ids, strict=True))
    return hits / sum(sum(d is not None for d in b) for b in want.ids)


def test_no_skipping_and_no_pruning_is_exact(corpus):
    docs, queries, exact = corpus
    index = ApproxImpactIndex(docs, vocab_size=VOCAB, quantize=False, summary_energy=1.0)
    for hf in (float("inf"), 1.0):  # exact bounds: heap_factor 1 skips nothing that counts
        got = index.search(queries, k=K, heap_factor=hf, threads=1)
        assert recall(got, exact) == 1.0
        np.testing.assert_allclose(got.scores, exact.scores, rtol=1e-5)


def test_quantized_recall(corpus):
    docs, queries, exact = corpus
    index = ApproxImpactIndex(docs, vocab_size=VOCAB)  # 8-bit document weights
    assert recall(index.search(queries, k=K, heap_factor=float("inf")), exact) >= 0.97


def test_pruned_recall_and_skipping(corpus):
    docs, queries, exact = corpus
    index = ApproxImpactIndex(docs, vocab_size=VOCAB, list_size=30)
    assert index.stats()["n_postings"] < docs.nnz
    default = recall(index.search(queries, k=K, query_cut=8), exact)
    assert default >= 0.9
    assert recall(index.search(queries, k=K, query_cut=8, heap_factor=0.5), exact) < default
    # the default summaries (20% of their mass) underestimate: heap_factor > 1 reads more
    assert recall(index.search(queries, k=K, query_cut=8, heap_factor=1.5), exact) >= default


def test_global_pruning_and_blocks(corpus):
    docs, _, _ = corpus
    n_terms = int(docs.indices.max()) + 1
    # Seismic's global threshold: list_size x n_terms entries at most (the heaviest, then at
    # most 1.5 x list_size in one list)
    kept = []
    for size in (10, 20, 40):
        kept.append(ApproxImpactIndex(docs, vocab_size=VOCAB, list_size=size).stats()["n_postings"])
        assert size * n_terms / 2 <= kept[-1] <= size * n_terms
    assert kept == sorted(kept) and kept[-1] < docs.nnz
    # blocks of about cluster_size documents, each with a summary; lighter summaries, fewer
    # entries; every document of a block is in the lists
    sizes = {}
    for cs, energy in ((8, 1.0), (32, 1.0), (32, 0.2)):
        st = ApproxImpactIndex(docs, vocab_size=VOCAB, list_size=150, cluster_size=cs,
                               summary_energy=energy).stats()
        sizes[cs, energy] = st
        assert st["n_postings"] / st["n_blocks"] < 2 * cs
    assert sizes[8, 1.0]["n_blocks"] > 2 * sizes[32, 1.0]["n_blocks"]
    assert sizes[32, 0.2]["n_summary_entries"] < sizes[32, 1.0]["n_summary_entries"] / 2
    assert sizes[32, 0.2]["memory_bytes"] < sizes[32, 1.0]["memory_bytes"]


def test_kernels_agree(corpus, monkeypatch):
    """The gathers of every instruction set (FASTRAG_KERNELS picks one) give the same top-k."""
    docs, queries, _ = corpus
    index = ApproxImpactIndex(docs, vocab_size=VOCAB, list_size=150)
    runs = {}
    for kernels in ("generic", "avx2", ""):  # "": the best the CPU has
        monkeypatch.setenv("FASTRAG_KERNELS", kernels)
        runs[kernels] = index.search(queries, k=K, query_cut=6, threads=1)
    for kernels in ("avx2", ""):
        np.testing.assert_allclose(runs[kernels].scores, runs["generic"].scores, rtol=1e-5)
        same = np.mean([set(a) == set(b) for a, b in zip(runs[kernels].ids, runs["generic"].ids,
                                                          strict=True)])
        assert same >= 0.95  # ties at the 10th score may differ by summation order


def test_threads_and_filter(corpus):
    docs, queries, _ = corpus
    index = ApproxImpactIndex(docs, vocab_size=VOCAB, quantize=False)
    one = index.search(queries, k=K, threads=1, query_cut=6)
    two = index.search(queries, k=K, threads=2, query_cut=6)
    assert (one.ids == two.ids).all() and (one.scores == two.scores).all()
    allowed = list(range(0, 3000, 7))
    exact = ImpactIndex(VOCAB)
    exact.add(docs)
    want = exact.search(queries, k=K, filter=allowed, threads=1)
    got = index.search(queries, k=K, filter=allowed, heap_factor=float("inf"))
    assert recall(got, want) == 1.0
    assert all(d is None or d % 7 == 0 for d in got.ids.ravel())


def test_ids_and_delete(corpus):
    docs, queries, _ = corpus
    ids = [f"doc{i}" for i in range(docs.shape[0])]
    index = ApproxImpactIndex(docs, ids, vocab_size=VOCAB)
    top = index.search(queries[:1], k=3)[0]
    assert index.delete([top[0].id]) == 1
    assert top[0].id not in index and len(index) == docs.shape[0] - 1
    assert index.search(queries[:1], k=3)[0][0].id == top[1].id
    with pytest.raises(KeyError):
        index.delete(["nope"])
    assert index.delete(["nope"], missing="ignore") == 0
    with pytest.raises(TypeError, match="static"):
        index.compact()
    with pytest.raises(ValueError, match="duplicate"):
        ApproxImpactIndex(docs[:2], ["a", "a"])
    with pytest.raises(ValueError, match="ids"):
        ApproxImpactIndex(docs[:2], ["a"])


def test_save_load_round_trip(corpus, tmp_path):
    docs, queries, _ = corpus
    index = ApproxImpactIndex(docs, [f"d{i}" for i in range(docs.shape[0])], vocab_size=VOCAB,
                              list_size=200)
    index.delete(["d5", "d9"])
    path = tmp_path / "a.frax"
    index.save(path)
    loaded = ApproxImpactIndex.load(path)
    assert loaded.settings == index.settings and loaded.ids == index.ids
    assert loaded.vocab_size == VOCAB and loaded.stats() == index.stats()
    a, b = index.search(queries, k=K, query_cut=5), loaded.search(queries, k=K, query_cut=5)
    assert (a.ids == b.ids).all() and (a.scores == b.scores).all()
    assert "d5" not in set(b.ids.ravel())


def test_bad_files(corpus, tmp_path):
    docs, _, _ = corpus
    path = tmp_path / "a.frax"
    ApproxImpactIndex(docs[:200], vocab_size=VOCAB).save(path)
    data = path.read_bytes()
    (tmp_path / "short.frax").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFormatError):
        ApproxImpactIndex.load(tmp_path / "short.frax")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    (tmp_path / "flip.frax").write_bytes(bytes(flipped))
    with pytest.raises(IndexFormatError):
        ApproxImpactIndex.load(tmp_path / "flip.frax")
    exact = ImpactIndex(VOCAB)
    exact.add(docs[:10])
    exact.save(tmp_path / "exact.idx")
    with pytest.raises(IndexFormatError, match="kind"):
        ApproxImpactIndex.load(tmp_path / "exact.idx")
    with pytest.raises(FileNotFoundError):
        ApproxImpactIndex.load(tmp_path / "missing.frax")
    before = path.read_bytes()
    with pytest.raises(FileNotFoundError):
        ApproxImpactIndex(docs[:10]).save(tmp_path / "no" / "such.frax")
    assert path.read_bytes() == before


def test_golden_v1_is_refused(golden_dir):
    with pytest.raises(IndexFormatError, match=r"version 1.*no longer reads.*build the index"):
        ApproxImpactIndex.load(golden_dir / "approx_v1.frax")


def test_golden_v2(golden_dir):
    index = ApproxImpactIndex.load(golden_dir / "approx_v2.frax")
    assert index.settings == {"list_size": 3, "cluster_size": 2, "summary_energy": 1.0,
                              "quantize": False, "seed": 0}
    assert index.ids == ["d0", "d1", "d3", "d4"] and index.vocab_size == 8
    got = index.search([(np.array([0, 5]), np.array([1.0, 2.0])), ({3: 1.0})], k=3,
                       heap_factor=float("inf"))
    assert got.ids.tolist() == [["d0", "d4", "d3"], ["d1", None, None]]
    assert got.scores[0].tolist() == [7.5, 4.0, 1.0] and got.scores[1, 0] == 0.25


def test_bad_input(corpus):
    docs, queries, _ = corpus
    nan = (np.array([1, 2]), np.array([0.5, math.nan]))
    with pytest.raises(ValueError, match="finite"):
        ApproxImpactIndex([nan])
    with pytest.raises(ValueError, match="finite"):
        ApproxImpactIndex([(np.array([1]), np.array([-1.0]))])
    with pytest.raises(TypeError, match="integers"):
        ApproxImpactIndex([(np.array([1.5]), np.array([1.0]))])
    with pytest.raises(ValueError, match="vocab"):
        ApproxImpactIndex([(np.array([VOCAB]), np.array([1.0]))], vocab_size=VOCAB)
    for bad in ({"summary_energy": 0.0}, {"summary_energy": 1.5}, {"cluster_size": 0},
                {"list_size": -1}, {"vocab_size": 0}):
        with pytest.raises(ValueError):
            ApproxImpactIndex(docs[:10], **bad)
    index = ApproxImpactIndex(docs[:100], vocab_size=VOCAB)
    for bad in ({"heap_factor": 0.0}, {"heap_factor": math.nan}, {"k": 0}, {"query_cut": 0}):
        with pytest.raises(ValueError):
            index.search(queries[:2], **bad)
    with pytest.raises(ValueError, match="finite"):
        index.search([nan])
    with pytest.raises(ValueError, match="vocab"):
        index.search([(np.array([VOCAB + 5]), np.array([1.0]))])
    with pytest.raises(TypeError, match="list of ids"):
        index.search(queries[:1], filter={"a": 1})
    # the core refuses wrong dtypes instead of copying
    ind = docs.indptr.astype(np.int64)
    with pytest.raises(ValueError, match="float32"):
        _core.ApproxSparseIndex(ind, docs.indices.astype(np.uint32),
                                      docs.data.astype(np.float64))
    with pytest.raises(ValueError, match="uint32"):
        _core.ApproxSparseIndex(ind, docs.indices.astype(np.int64),
                                      docs.data.astype(np.float32))
    # numpy numbers are numbers, bools are not
    assert ApproxImpactIndex(docs[:10], summary_energy=np.float32(0.5)).search(
        queries[:1], heap_factor=np.float64(1.25), k=2).ids.shape == (1, 2)
    with pytest.raises(ValueError, match="summary_energy"):
        ApproxImpactIndex(docs[:10], summary_energy=True)
    with pytest.raises(ValueError, match="heap_factor"):
        index.search(queries[:1], heap_factor=True)
    # the core's k=0 returns an empty row per query
    (ip, t, w), _ = to_csr(queries[:2], index._vocab_limit, "queries")
    ids, _ = index._core.native.search(ip, t.astype(np.uint32), w.astype(np.float32), k=0)
    assert ids.shape == (2, 0)
    # empty: no documents, and queries with no known terms
    empty = ApproxImpactIndex([])
    assert len(empty) == 0 and empty.search(queries[:2], k=3).ids.tolist() == [[None] * 3] * 2
    assert index.search([(np.array([], dtype=np.int64), np.array([]))], k=2)[0] == []


@pytest.mark.skipif(importlib.util.find_spec("seismic") is None,
                    reason="pyseismic-lsr is not installed (pip install pyseismic-lsr)")
def test_agrees_with_seismic(corpus):
    import seismic

    docs, queries, exact = corpus
    ds = seismic.SeismicDataset()
    ds.add_documents_by_id([str(i) for i in range(docs.shape[0])],
                           docs.indices.astype(np.int64), docs.data.astype(np.float32),
                           docs.indptr.astype(np.int64))
    sx = seismic.SeismicIndex.build_from_dataset(ds, n_postings=400, num_threads=1)
    string = seismic.get_seismic_string()
    theirs = []
    for i in range(queries.shape[0]):
        row = queries[i]
        hits = sx.search(str(i), np.array([str(t) for t in row.indices], dtype=string),
                         row.data.astype(np.float32), k=K, query_cut=10, heap_factor=0.9)
        theirs.append({int(d) for _, _, d in hits})
    ours = ApproxImpactIndex(docs, vocab_size=VOCAB, list_size=400).search(
        queries, k=K, query_cut=10, heap_factor=1 / 0.9)  # Seismic's heap_factor, inverted
    want = [set(row) for row in exact.ids]
    seismic_recall = np.mean([len(t & w) / K for t, w in zip(theirs, want, strict=True)])
    our_recall = recall(ours, exact)
    overlap = np.mean([len(t & set(o)) / K for t, o in zip(theirs, ours.ids, strict=True)])
    assert seismic_recall >= 0.9 and our_recall >= 0.9
    assert overlap >= 0.85
