"""Microbenchmarks of the inverted-index kernels (pytest-benchmark; not part of the tests).

    pytest benchmarks/test_micro_sparse.py --benchmark-columns=min,median,ops

Each case runs one batch of 200 seeded queries on one thread over a seeded Zipfian corpus.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastrag import _core

pytest.importorskip("pytest_benchmark")


def zipf_csr(rng: np.random.Generator, n: int, vocab: int, mean_len: int, s: float):
    lens = rng.poisson(mean_len, n).astype(np.int64)
    cdf = np.cumsum(1.0 / np.arange(1, vocab + 1) ** s)
    cdf /= cdf[-1]
    terms = np.minimum(np.searchsorted(cdf, rng.random(int(lens.sum()))), vocab - 1)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=indptr[1:])
    return indptr, terms.astype(np.uint32)


@pytest.fixture(scope="module", params=[2_000, 200_000], ids=["2k-docs", "200k-docs"])
def corpus(request):
    rng = np.random.default_rng(7)
    indptr, terms = zipf_csr(rng, request.param, 50_000, 40, 1.1)
    index = _core.SparseIndex()
    index.add(indptr, terms)
    q_indptr, q_terms = zipf_csr(rng, 200, 50_000, 5, 0.8)
    index.search(q_indptr, q_terms, k=10)  # commit before timing
    return index, q_indptr, q_terms


@pytest.mark.parametrize("algorithm", ["exhaustive", "maxscore"])
@pytest.mark.parametrize("k", [10, 100])
def test_topk(benchmark, corpus, algorithm, k):
    index, q_indptr, q_terms = corpus
    ids, _ = benchmark(index.search, q_indptr, q_terms, k=k, threads=1, algorithm=algorithm)
    assert ids.shape == (200, k)


def test_build(benchmark):
    rng = np.random.default_rng(3)
    indptr, terms = zipf_csr(rng, 100_000, 50_000, 40, 1.1)

    def build():
        index = _core.SparseIndex()
        index.add(indptr, terms)
        return index.stats()

    assert benchmark(build)["n_docs"] == 100_000
