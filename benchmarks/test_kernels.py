"""Kernel microbenchmarks (pytest-benchmark; not collected by the default `python -m pytest`).

    pytest benchmarks/ --benchmark-only                       # all microbenchmarks
    pytest benchmarks/test_kernels.py --benchmark-only -k maxsim
    pytest benchmarks/ --benchmark-only --benchmark-autosave  # then, on a later commit:
    pytest benchmarks/ --benchmark-only --benchmark-compare --benchmark-compare-fail=median:10%

Per instruction set (``FASTRAG_KERNELS=generic|avx2|avx512``, set before the index or the call
that picks the kernels): the distance kernels (exact scans of float32, int8 and float16 rows;
an HNSW graph walk), span mean pooling and MaxSim. A set the CPU lacks is skipped. Also: dense
exact top-k for k 10 and 100, and impact (learned sparse) posting-list scoring;
test_micro_sparse.py holds BM25 top-k and index building. Everything runs on one thread on
seeded data.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastrag import _core

pytest.importorskip("pytest_benchmark")

ISAS = ("generic", "avx2", "avx512")
DIM = 384


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


FLAGS = _cpu_flags()
HAS = {
    "generic": True,
    "avx2": {"avx2", "fma", "f16c"} <= FLAGS,
    "avx512": {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= FLAGS,
}


def _force(monkeypatch: pytest.MonkeyPatch, isa: str) -> None:
    if not HAS[isa]:
        pytest.skip(f"this CPU has no {isa}")
    monkeypatch.setenv("FASTRAG_KERNELS", isa)


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def vectors() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    return _unit(rng, 5_000, DIM), _unit(rng, 64, DIM)


def _index(data: np.ndarray, isa: str, storage: str) -> _core.HnswIndex:
    ix = _core.HnswIndex(DIM, metric="ip", storage=storage, M=8, ef_construction=32)
    got = str(ix.stats()["kernels"])
    if not got.startswith(isa):
        pytest.skip(f"asked for {isa}, the index picked {got}")
    ix.add(data, threads=0)
    return ix


# ----------------------------------------------------------------------------- distances
@pytest.mark.parametrize("storage", ["float32", "int8", "float16"])
@pytest.mark.parametrize("isa", ISAS)
def test_distance_exact_scan(benchmark, monkeypatch, vectors, isa, storage):
    """64 queries scanned over 5,000 rows of 384 dims: the distance kernel dominates."""
    _force(monkeypatch, isa)
    data, queries = vectors
    ix = _index(data, isa, storage)
    benchmark.group = f"distance exact scan {storage}"
    ids, _ = benchmark(ix.search, queries, k=10, exact=True, threads=1)
    assert ids.shape == (64, 10)


@pytest.mark.parametrize("isa", ISAS)
def test_distance_graph_walk(benchmark, monkeypatch, vectors, isa):
    """64 queries walking an HNSW graph (M 8) at ef 64, float32 rows."""
    _force(monkeypatch, isa)
    data, queries = vectors
    ix = _index(data, isa, "float32")
    benchmark.group = "hnsw walk float32 ef64"
    ids, _ = benchmark(ix.search, queries, k=10, ef=64, threads=1)
    assert ids.shape == (64, 10)


# ----------------------------------------------------------------------------- top-k
@pytest.mark.parametrize("k", [10, 100])
def test_dense_topk(benchmark, vectors, k):
    """Exact dense top-k with the CPU's own kernels: the cost of keeping k results."""
    data, queries = vectors
    ix = _core.HnswIndex(DIM, metric="ip", M=8, ef_construction=32)
    ix.add(data, threads=0)
    benchmark.group = "dense exact top-k"
    ids, _ = benchmark(ix.search, queries, k=k, exact=True, threads=1)
    assert ids.shape == (64, k)


# ----------------------------------------------------------------------------- postings
@pytest.fixture(scope="module")
def impacts():
    """50,000 documents of ~60 distinct terms (Zipf-like over 30,000) with lognormal weights."""
    rng = np.random.default_rng(5)
    n, vocab = 50_000, 30_000
    p = 1.0 / (np.arange(vocab) + 10.0)
    cdf = np.cumsum(p / p.sum())
    rows = [np.unique(np.searchsorted(cdf, rng.random(64))) for _ in range(n)]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    terms = np.minimum(np.concatenate(rows), vocab - 1).astype(np.uint32)
    weights = rng.lognormal(-0.5, 0.8, len(terms)).astype(np.float32)
    index = _core.SparseIndex(scoring="impact")
    index.add(indptr, terms, weights)
    q_rows = [np.unique(np.searchsorted(cdf, rng.random(24)))[:20] for _ in range(100)]
    q_indptr = np.zeros(101, dtype=np.int64)
    np.cumsum([len(r) for r in q_rows], out=q_indptr[1:])
    q_terms = np.minimum(np.concatenate(q_rows), vocab - 1).astype(np.uint32)
    q_weights = rng.lognormal(-0.5, 0.8, len(q_terms)).astype(np.float32)
    index.search(q_indptr, q_terms, q_weights, k=10)  # commit before timing
    return index, q_indptr, q_terms, q_weights


def test_impact_scoring(benchmark, impacts):
    """100 learned-sparse queries of ~20 terms, exact top-10 by accumulation."""
    index, q_indptr, q_terms, q_weights = impacts
    benchmark.group = "posting-list scoring"
    ids, _ = benchmark(index.search, q_indptr, q_terms, q_weights, k=10, threads=1)
    assert ids.shape == (100, 10)


# ----------------------------------------------------------------------------- pooling
@pytest.fixture(scope="module")
def token_store():
    rng = np.random.default_rng(3)
    n_docs, n_tok, d = 8, 1024, 768
    store = rng.standard_normal((n_docs * n_tok, d), dtype=np.float32)
    offsets = np.arange(n_docs + 1, dtype=np.uint64) * n_tok
    spans, span_offsets = [], [0]
    for _ in range(n_docs):
        b = np.unique(np.concatenate([[1, n_tok - 1], rng.integers(2, n_tok - 1, 9)]))
        spans.append(np.stack([b[:-1], b[1:]], axis=1))
        span_offsets.append(span_offsets[-1] + len(b) - 1)
    return store, offsets, np.concatenate(spans).astype(np.int64), np.array(
        span_offsets, dtype=np.uint64
    )


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_span_pooling(benchmark, monkeypatch, token_store, isa, dtype):
    """Mean pooling of ~80 spans over 8 documents x 1,024 tokens x 768 dims."""
    _force(monkeypatch, isa)
    if _core.pooling_kernels() != isa:
        pytest.skip(f"asked for {isa}, pooling picked {_core.pooling_kernels()}")
    store, offsets, spans, span_offsets = token_store
    tokens = store if dtype == "float32" else store.astype(np.float16)
    benchmark.group = f"span mean pooling {dtype}"
    pooled, _ = benchmark(_core.span_mean_pool_batch, tokens, offsets, spans, span_offsets,
                          threads=1)
    assert pooled.shape == (len(spans), store.shape[1])


# ----------------------------------------------------------------------------- MaxSim
@pytest.fixture(scope="module")
def colbert():
    rng = np.random.default_rng(9)
    n, t, d = 100, 180, 128
    tokens = _unit(rng, n * t, d).astype(np.float16)
    offsets = np.arange(n + 1, dtype=np.uint64) * t
    query = _unit(rng, 32, d)
    return query, tokens, offsets, rng.permutation(n).astype(np.uint32)


@pytest.mark.parametrize("isa", ISAS)
def test_maxsim(benchmark, monkeypatch, colbert, isa):
    """A 32-token query against 100 candidates of 180 float16 tokens x 128 dims."""
    _force(monkeypatch, isa)
    query, tokens, offsets, candidates = colbert
    benchmark.group = "maxsim float16"
    scores = benchmark(_core.maxsim, query, tokens, offsets, candidates, threads=1)
    assert scores.shape == (100,)
