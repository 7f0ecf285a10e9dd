"""Limits at the index boundary: memory after loading, size arguments, float16 range, filters,
ids that no file can hold, and saves that fail half-way. Run by tests/sanitize.sh too."""

from __future__ import annotations

import os
import resource
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from fastrag import _core
from fastrag.index import BM25, DenseIndex, ImpactIndex

DIM = 64
VARIANTS = [("float32", False), ("float16", False), ("int8", False), ("int8", True)]
HUGE = [2**64 - 1, 2**63, 2**40]


def vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def bounded(fn, timeout: float = 120.0):
    """fn() in a daemon thread: a hang fails the test instead of stalling the run."""
    out: dict[str, object] = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:  # re-raised on the caller's thread
            out["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "the call did not return (hang)"
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["value"]


def tmp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


# ---------------------------------------------------------------------------- 1. memory
@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize(("storage", "rescore"), VARIANTS)
def test_loaded_dense_index_grows_geometrically_once(tmp_path, storage, rescore, mmap):
    x = vectors(130)
    index = DenseIndex(DIM, storage=storage, rescore=rescore)
    index.add(x[:100])
    index.save(tmp_path / "d.frdx")
    index = DenseIndex.load(tmp_path / "d.frdx", mmap=mmap)
    for i in range(100, 130):
        index.add(x[i : i + 1])
        st = index.stats()
        # checked at every add: a column left a view made each add reallocate 1.5x
        assert st["capacity"] <= 2 * st["n_vectors"] + 64, (i, st)
    fresh = DenseIndex(DIM, storage=storage, rescore=rescore)
    fresh.add(x)
    assert index.stats()["allocated_bytes"] <= 2 * fresh.stats()["memory_bytes"]
    np.testing.assert_array_equal(index.search(x[:5], k=3).ids, fresh.search(x[:5], k=3).ids)
    # deletes and upserts of a loaded index do not grow it either
    index.save(tmp_path / "d.frdx")
    index = DenseIndex.load(tmp_path / "d.frdx", mmap=mmap)
    capacity = index.stats()["capacity"]
    for i in range(10):
        index.delete([i])
        index.add(x[50 + i : 51 + i], ids=[50 + i])
    assert index.stats()["capacity"] == capacity


@pytest.mark.parametrize("mmap", [False, True])
def test_loaded_bm25_memory_stays_near_its_size(tmp_path, mmap):
    docs = [f"word{i % 7} term{i % 3} text{i}" for i in range(130)]
    index = BM25(analyzer="bigram")
    index.add(docs[:100])
    index.save(tmp_path / "b.fridx")
    index = BM25.load(tmp_path / "b.fridx", mmap=mmap)
    for d in docs[100:]:
        index.add([d])
        index.search("word1", k=1)  # commits the pending document
    fresh = BM25(analyzer="bigram")
    fresh.add(docs)
    assert index.stats()["allocated_bytes"] <= 2 * fresh.stats()["memory_bytes"]


# ---------------------------------------------------------------------------- 2. sizes
@pytest.fixture(scope="module")
def dense():
    index = DenseIndex(DIM, metric="l2", storage="int8", rescore=True)
    index.add(vectors(300), ids=[f"d{i}" for i in range(300)])
    return index


def test_huge_ef_is_the_whole_index(dense):
    q = vectors(3, seed=1)
    want = dense.search(q, k=5, ef=300)
    for ef in HUGE:
        got = bounded(lambda ef=ef: dense.search(q, k=5, ef=ef))
        np.testing.assert_array_equal(got.ids, want.ids)
    got = bounded(lambda: dense.search(q, k=5, rescore=10**9))
    assert got.ids.shape == (3, 5)
    got = bounded(lambda: dense.search(q, k=5, rescore=2**64 + 5, exact=True))
    np.testing.assert_array_equal(got.ids, dense.search(q, k=5, exact=True).ids)


def test_k_past_the_index(dense):
    q = vectors(2, seed=1)
    res = dense.search(q, k=1000)  # small padding: as before
    assert res.ids.shape == (2, 1000) and all(v is None for v in res.ids[:, 300:].ravel())
    for k in (2**63, 2**64 - 1, 2**40, 10**9):
        with pytest.raises(ValueError, match=r"larger than the index \(300 items\).*k <= 300"):
            dense.search(q, k=k)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("k", 0, "k must be a positive integer"),
        ("k", -1, "k must be a positive integer"),
        ("ef", 0, "ef must be >= 1"),
        ("ef", -(2**70), "ef must be >= 1"),
        ("ef", 2.5, "ef must be an integer"),
        ("rescore", -1, "rescore must be >= 0"),
        ("dims", -16, "dims must be >= 0"),
        ("dims", 2**40, "multiple of 16 and at most 64"),
        ("threads", -1, "threads must be an integer >= 0"),
        ("threads", 1.0, "threads must be an integer >= 0"),
    ],
)
def test_dense_search_refuses_bad_sizes(dense, option, value, message):
    with pytest.raises(ValueError, match=message):
        dense.search(vectors(1, seed=1), **{option: value})


def test_huge_thread_counts_are_clamped(dense):
    q = vectors(4, seed=1)
    want = dense.search(q, k=5, threads=1)
    np.testing.assert_array_equal(dense.search(q, k=5, threads=2**70).ids, want.ids)
    np.testing.assert_array_equal(dense.search(q, k=5, threads=10**6).ids, want.ids)
    index = DenseIndex(DIM)
    index.add(vectors(20), threads=2**40)
    assert len(index) == 20
    for bad in (-1, True):
        with pytest.raises(ValueError, match="threads"):
            index.add(vectors(2), threads=bad)
    assert len(index) == 20


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dim": 0}, "dim must be >= 1"),
        ({"dim": -5}, "dim must be >= 1"),
        ({"dim": 1.5}, "dim must be an integer"),
        ({"dim": 2**40}, r"dim must be in \[1, 65536\]"),
        ({"dim": 2**64 + 16}, r"dim must be in \[1, 65536\]"),
        ({"M": 1}, "M must be >= 2"),
        ({"M": 2**32 + 16}, r"M must be in \[2, 256\]"),
        ({"ef_construction": 0}, "ef_construction must be >= 1"),
        ({"ef_construction": 2**32}, r"ef_construction must be in \[1, 4294967295\]"),
        ({"ef_search": 0}, "ef_search must be >= 1"),
    ],
)
def test_dense_constructor_refuses_bad_sizes(options, message):
    with pytest.raises(ValueError, match=message):
        DenseIndex(**{"dim": DIM, **options})


def test_raw_hnsw_sizes():
    index = _core.HnswIndex(16, metric="l2")
    index.add(vectors(40, dim=16), threads=2**70)
    q = vectors(2, seed=1, dim=16)
    want = index.search(q, k=5, ef=40)
    for ef in HUGE:
        ids, _ = bounded(lambda ef=ef: index.search(q, k=5, ef=ef))
        np.testing.assert_array_equal(ids, want[0])
    ids, _ = index.search(q, k=5, rescore=2**64 - 1, exact_below=2**64 - 1, threads=-3)
    assert ids.shape == (2, 5)
    for kw, message in [
        ({"k": -1}, "k must be >= 0"),
        ({"k": 2**63}, "larger than the index"),
        ({"ef": 0}, "ef must be >= 1"),
        ({"rescore": -1}, "rescore must be >= 0"),
        ({"dims": -1}, "dims must be >= 0"),
        ({"exact_below": -1}, "exact_below must be >= 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            index.search(q, **kw)
    for kw, message in [
        ({"dim": -1}, "dim must be in"),
        ({"M": -3}, "M must be in"),
        ({"ef_construction": -1}, "ef_construction must be in"),
    ]:
        with pytest.raises(ValueError, match=message):
            _core.HnswIndex(**{"dim": 16, **kw})
    huge_beam = _core.HnswIndex(16, ef_construction=2**32 - 1)  # a beam past the index: fine
    huge_beam.add(vectors(50, dim=16))
    assert huge_beam.stats()["n_vectors"] == 50


def bm25_index() -> BM25:
    index = BM25(analyzer="bigram")
    index.add([f"alpha beta {i}" for i in range(30)] + ["gamma"])
    return index


def test_bm25_sizes():
    index = bm25_index()
    assert index.search("alpha", k=100).ids.shape == (1, 100)
    for k in (2**63, 2**64 - 1, 10**9):
        with pytest.raises(ValueError, match=r"larger than the index \(31 items\)"):
            index.search("alpha", k=k)
    for k in (0, -1, 2.0):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            index.search("alpha", k=k)
    with pytest.raises(ValueError, match="threads must be an integer >= 0"):
        index.search("alpha", threads=-1)
    want = index.search(["alpha", "gamma"], k=3, threads=1)
    got = index.search(["alpha", "gamma"], k=3, threads=2**70)
    np.testing.assert_array_equal(got.ids, want.ids)


def test_raw_sparse_sizes():
    index = _core.SparseIndex()
    indptr = np.array([0, 2, 3], dtype=np.int64)
    index.add(indptr, np.array([1, 2, 2], dtype=np.uint32))
    q = (np.array([0, 1], dtype=np.int64), np.array([2], dtype=np.uint32))
    ids, _ = index.search(*q, k=3, threads=2**70)
    assert ids.tolist() == [[1, 0, -1]]
    ids, _ = index.search(*q, k=3, threads=-7)  # <= 0: every core, as documented
    assert ids.tolist() == [[1, 0, -1]]
    for k, message in [(-1, "k must be >= 0"), (2**64 - 1, "larger than the index")]:
        with pytest.raises(ValueError, match=message):
            index.search(*q, k=k)


def test_impact_sizes():
    index = ImpactIndex(vocab_size=100)
    index.add([({1: 1.0, 2: 0.5}), ({2: 2.0})], ids=["a", "b"])
    query = {2: 1.0, 1: 0.1}
    assert index.search(query, k=2, query_terms=2**63)[0][0].id == "b"
    for option, value in [("query_terms", 0), ("query_terms", -1), ("k", 0)]:
        with pytest.raises(ValueError, match=option):
            index.search(query, **{option: value})
    with pytest.raises(ValueError, match="larger than the index"):
        index.search(query, k=2**40)
    with pytest.raises(ValueError, match="doc_terms"):
        ImpactIndex(doc_terms=0)
    assert ImpactIndex(doc_terms=2**63).doc_terms == 2**63


def test_raw_maxsim_and_pooling_threads():
    tokens = vectors(10, dim=16)
    offsets = np.array([0, 4, 10], dtype=np.uint64)
    cand = np.array([0, 1], dtype=np.uint32)
    q = vectors(3, seed=2, dim=16)
    want = _core.maxsim(q, tokens, offsets, cand, threads=1)
    for threads in (2**70, -(2**70), 10**6):
        np.testing.assert_array_equal(_core.maxsim(q, tokens, offsets, cand, threads=threads), want)
    spans = np.array([[0, 3], [2, 9]], dtype=np.int64)
    pooled, _ = _core.span_mean_pool(tokens, spans, threads=2**70)
    np.testing.assert_array_equal(pooled, _core.span_mean_pool(tokens, spans, threads=1)[0])


# ---------------------------------------------------------------------------- 3. float16
@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("rescore", [False, True])
def test_float16_refuses_values_it_cannot_hold(metric, rescore):
    x = vectors(20)
    index = DenseIndex(DIM, metric=metric, storage="float16", rescore=rescore)
    index.add(x, ids=[f"d{i}" for i in range(20)])
    before = index.search(x[:3], k=5)
    bad = vectors(3, seed=5)
    bad[1, 7] = 7e4
    with pytest.raises(ValueError, match=r"vector 1 .*float16 storage holds magnitudes up to 655"):
        index.add(bad, ids=["n0", "n1", "n2"])
    with pytest.raises(ValueError, match=r"vector 1 .*65504"):  # upserts too
        index.add(bad, ids=["d0", "d1", "d2"])
    assert len(index) == 20 and "n0" not in index
    after = index.search(x[:3], k=5)
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_array_equal(after.scores, before.scores)
    edge = vectors(1, seed=6)
    edge[0, 0] = -65504.0  # the largest finite float16 is fine
    index.add(edge, ids=["edge"])
    assert np.isfinite(index.get_vector("edge")).all()
    core = _core.HnswIndex(16, metric=metric, storage="float16")
    with pytest.raises(ValueError, match="65504"):
        core.add(np.full((1, 16), -1e5, dtype=np.float32))
    assert core.stats()["n_vectors"] == 0


def test_float16_cosine_normalises_first():
    x = vectors(10) * 1e6  # far past float16, but cosine stores unit vectors
    index = DenseIndex(DIM, metric="cosine", storage="float16")
    index.add(x, ids=list(range(10)))
    assert [hits[0].id for hits in index.search(x, k=1)] == list(range(10))


# ---------------------------------------------------------------------------- 4. empty sections
@pytest.mark.parametrize(("storage", "rescore"), VARIANTS)
def test_empty_indexes_save_and_load(tmp_path, storage, rescore):
    # empty sections (no rows, no int8 ranges) are written from null pointers
    DenseIndex(DIM, storage=storage, rescore=rescore).save(tmp_path / "e.frdx")
    assert len(DenseIndex.load(tmp_path / "e.frdx")) == 0
    BM25().save(tmp_path / "e.fridx")
    assert len(BM25.load(tmp_path / "e.fridx", mmap=True)) == 0


# ---------------------------------------------------------------------------- 5. filters
def test_a_mapping_is_not_a_filter(dense):
    impact = ImpactIndex()
    impact.add([{1: 1.0}], ids=["d1"])
    calls = [
        lambda f: dense.search(vectors(1), k=3, filter=f),
        lambda f: bm25_index().search("alpha", k=3, filter=f),
        lambda f: impact.search({1: 1.0}, k=3, filter=f),
    ]
    for call in calls:
        for f in ({"d1": 1}, {"lang": "en"}):
            with pytest.raises(TypeError, match=r"filter takes a list of ids.*Collection\.search"):
                call(f)
        call(["d1"])  # a list of ids is fine
    assert dense.search(vectors(1), k=3, filter="d1")[0][0].id == "d1"


# ---------------------------------------------------------------------------- 6. ids
@pytest.mark.parametrize("bad", ["\ud800", "a\udcff", "x\udfffy"])
def test_lone_surrogate_ids_are_refused(tmp_path, bad):
    dense = DenseIndex(DIM)
    dense.add(vectors(2), ids=["a", "b"])
    with pytest.raises(ValueError, match="not valid Unicode"):
        dense.add(vectors(2, seed=1), ids=["c", bad])
    assert len(dense) == 2
    bm25 = bm25_index()
    with pytest.raises(ValueError, match="not valid Unicode"):
        bm25.add(["text"], ids=[bad])
    with pytest.raises(ValueError, match="not valid Unicode"):
        bm25.add([["fine", bad]], ids=["t"])  # a pre-tokenized term would be saved too
    assert "t" not in bm25 and bad not in bm25.vocabulary
    dense.save(tmp_path / "d.frdx")  # still saves
    bm25.save(tmp_path / "b.fridx")
    assert DenseIndex.load(tmp_path / "d.frdx").ids == ["a", "b"]
    with pytest.raises(TypeError):
        dense.add(vectors(1), ids=[None])
    dense.add(vectors(1), ids=["日本\U0001f600"])  # any real Unicode is fine
    assert "日本\U0001f600" in dense


# ---------------------------------------------------------------------------- 7. failed saves
@contextmanager
def file_size_limit(limit: int):
    """Writes past `limit` bytes fail with EFBIG (SIGXFSZ ignored) inside the block."""
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)


@pytest.mark.parametrize("kind", ["dense", "bm25"])
def test_a_failed_save_leaves_no_temp_file_and_the_old_file(tmp_path, kind):
    if kind == "dense":
        index, big, load = DenseIndex(DIM), DenseIndex(DIM), DenseIndex.load
        index.add(vectors(5), ids=list(range(5)))
        big.add(vectors(400), ids=list(range(400)))
    else:
        index, big, load = bm25_index(), BM25(analyzer="bigram"), BM25.load
        big.add([[f"t{i}_{j}" for j in range(40)] for i in range(400)])
    path = tmp_path / "index.bin"
    index.save(path)
    old = path.read_bytes()
    assert len(old) < 1 << 16
    with file_size_limit(1 << 16), pytest.raises(OSError, match="cannot write"):
        big.save(path)  # fails half-way through the temporary file
    assert tmp_files(tmp_path) == []
    assert path.read_bytes() == old
    assert load(path).ids == index.ids


def test_failed_renames_and_missing_folders_leave_no_temp_file(tmp_path):
    core = _core.HnswIndex(16)
    target = tmp_path / "target"
    (target / "inside").mkdir(parents=True)  # rename over a non-empty folder fails
    with pytest.raises(OSError, match="cannot rename"):
        core.save(str(target))
    assert tmp_files(tmp_path) == []
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(FileNotFoundError):
        DenseIndex(16).save(tmp_path / "file" / "index.frdx")
    with pytest.raises(OSError):
        core.save(str(tmp_path / "file" / "index.frdx"))
    assert sorted(os.listdir(tmp_path)) == ["file", "target"]
