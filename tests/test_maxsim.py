"""Late-interaction (ColBERT MaxSim) scoring: fastrag._core.maxsim and fastrag.index.tokens.

Oracle: a float64 numpy reference (matmul, max over document tokens, sum over query tokens).
float32 stores agree within 1e-5 and float16 stores within 1e-2 of the float32 data (and
within 1e-5 of the float16-rounded data), relative to the size of the terms,
sum_i |q_i| * max_j |t_j|, which bounds any score by Cauchy-Schwarz.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from fastrag import _core
from fastrag.index.tokens import TokenStore, maxsim_scores

KERNELS = ("generic", "avx2", "avx512")


# ---------------------------------------------------------------------------- helpers
def make_docs(seed: int, lengths: list[int], dim: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, dim)).astype(np.float32) for n in lengths]


def pack(docs: list[np.ndarray], dim: int, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(docs) + 1, dtype=np.uint64)
    offsets[1:] = np.cumsum([len(d) for d in docs])
    tokens = np.concatenate([d.reshape(-1, dim) for d in docs] + [np.empty((0, dim))])
    return np.ascontiguousarray(tokens, dtype=dtype), offsets


def reference(q: np.ndarray, docs: list[np.ndarray], candidates) -> tuple[np.ndarray, np.ndarray]:
    """(scores, scales): float64 MaxSim (0 for an empty document) and each score's bound."""
    q64 = q.astype(np.float64)
    qnorm = np.linalg.norm(q64, axis=1).sum()
    scores, scales = [], []
    for c in candidates:
        t = docs[int(c)].astype(np.float64)
        if len(t) == 0:
            scores.append(0.0)
            scales.append(1.0)
            continue
        scores.append(np.einsum("id,jd->ij", q64, t).max(axis=1).sum())
        scales.append(qnorm * np.linalg.norm(t, axis=1).max())
    return np.array(scores), np.array(scales)


def assert_close(got: np.ndarray, want: np.ndarray, scale: np.ndarray, rel: float) -> None:
    assert got.dtype == np.float32 and got.shape == want.shape
    err = np.abs(got.astype(np.float64) - want)
    assert (err <= rel * scale).all(), f"max relative error {(err / scale).max():.3g} > {rel}"


def with_kernels(name: str | None, fn):
    """Calls fn() with FASTRAG_KERNELS set to `name` (maxsim reads it on every call)."""
    old = os.environ.pop("FASTRAG_KERNELS", None)
    if name is not None:
        os.environ["FASTRAG_KERNELS"] = name
    try:
        return fn()
    finally:
        os.environ.pop("FASTRAG_KERNELS", None)
        if old is not None:
            os.environ["FASTRAG_KERNELS"] = old


def cpu_has(kernels: str) -> bool:
    # The HNSW index picks its kernels by the same rule and reports the choice.
    return with_kernels(kernels, lambda: _core.HnswIndex(4).stats()["kernels"]) == kernels


# ---------------------------------------------------------------------------- reference
SHAPES = [  # (m, dim, document lengths)
    (1, 7, [1, 3, 0, 20]),
    (1, 128, [5, 1, 40]),
    (3, 33, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 25, 26]),
    (32, 128, [180, 1, 0, 13, 12, 24, 25, 7]),
    (17, 384, [31, 1, 64, 0]),
    (32, 384, [180, 90, 1]),
    (40, 16, [3, 50, 17]),
    (64, 96, [12, 13, 100]),
]


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize(("m", "dim", "lengths"), SHAPES)
def test_matches_numpy_reference(kernels: str, m: int, dim: int, lengths: list[int]) -> None:
    if not cpu_has(kernels):
        pytest.skip(f"this CPU has no {kernels} kernels")
    seed = 1000 * m + dim
    docs = make_docs(seed, lengths, dim)
    q = np.random.default_rng(seed + 1).standard_normal((m, dim)).astype(np.float32)
    cand = np.random.default_rng(seed + 2).permutation(len(docs)).astype(np.uint32)
    want, scale = reference(q, docs, cand)

    tokens, offsets = pack(docs, dim, np.float32)
    got = with_kernels(kernels, lambda: _core.maxsim(q, tokens, offsets, cand, threads=1))
    assert_close(got, want, scale, 1e-5)

    tokens16, _ = pack(docs, dim, np.float16)
    got16 = with_kernels(kernels, lambda: _core.maxsim(q, tokens16, offsets, cand, threads=1))
    assert_close(got16, want, scale, 1e-2)  # fp16 rounding of the stored tokens
    rounded = [d.astype(np.float16).astype(np.float32) for d in docs]
    want16, scale16 = reference(q, rounded, cand)
    assert_close(got16, want16, scale16, 1e-5)  # the arithmetic itself: float32


def test_empty_document_scores_zero() -> None:
    docs = make_docs(3, [0, 4, 0], 8)
    tokens, offsets = pack(docs, 8)
    q = np.full((2, 8), -1.0, dtype=np.float32)  # every real document scores below zero
    got = _core.maxsim(q, tokens, offsets, np.array([0, 1, 2], dtype=np.uint32))
    assert got[0] == 0.0 and got[2] == 0.0 and got[1] != 0.0
    # A store of empty documents only (no token rows at all).
    none = np.empty((0, 8), dtype=np.float16)
    zeros = _core.maxsim(q, none, np.zeros(4, np.uint64), np.arange(3, dtype=np.uint32))
    assert zeros.tolist() == [0.0, 0.0, 0.0]


def test_candidates_in_any_order_with_repeats_and_none() -> None:
    docs = make_docs(5, [4, 9, 2, 30], 20)
    tokens, offsets = pack(docs, 20)
    q = np.random.default_rng(6).standard_normal((5, 20)).astype(np.float32)
    all_scores = _core.maxsim(q, tokens, offsets, np.arange(4, dtype=np.uint32))
    cand = np.array([3, 0, 3, 2, 1, 1], dtype=np.uint32)
    assert np.array_equal(_core.maxsim(q, tokens, offsets, cand), all_scores[cand])
    empty = _core.maxsim(q, tokens, offsets, np.empty(0, dtype=np.uint32))
    assert empty.dtype == np.float32 and empty.shape == (0,)


def test_query_token_order() -> None:
    # MaxSim sums over query tokens: permuting them permutes only the summation order.
    docs = make_docs(7, [10, 11], 24)
    tokens, offsets = pack(docs, 24)
    q = np.random.default_rng(8).standard_normal((9, 24)).astype(np.float32)
    cand = np.arange(2, dtype=np.uint32)
    a = _core.maxsim(q, tokens, offsets, cand)
    b = _core.maxsim(np.ascontiguousarray(q[::-1]), tokens, offsets, cand)
    np.testing.assert_allclose(a, b, rtol=1e-5)


# ---------------------------------------------------------------------------- threads
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_threads_bit_for_bit(dtype) -> None:
    rng = np.random.default_rng(11)
    lengths = rng.integers(0, 120, 300).tolist()
    docs = make_docs(12, lengths, 64)
    tokens, offsets = pack(docs, 64, dtype)
    q = rng.standard_normal((32, 64)).astype(np.float32)
    cand = rng.permutation(300).astype(np.uint32)
    one = _core.maxsim(q, tokens, offsets, cand, threads=1)
    for threads in (2, 3, 0, -1):
        assert np.array_equal(_core.maxsim(q, tokens, offsets, cand, threads=threads), one)


def test_concurrent_python_threads() -> None:
    # The GIL is released while scoring: calls from several Python threads run side by side
    # and each gets its own, correct result.
    docs = make_docs(13, [50] * 40, 32)
    tokens, offsets = pack(docs, 32, np.float16)
    rng = np.random.default_rng(14)
    queries = [rng.standard_normal((8, 32)).astype(np.float32) for _ in range(4)]
    cand = np.arange(40, dtype=np.uint32)
    expected = [_core.maxsim(q, tokens, offsets, cand, threads=1) for q in queries]
    results: list[np.ndarray | None] = [None] * 4

    def run(i: int) -> None:
        results[i] = _core.maxsim(queries[i], tokens, offsets, cand, threads=1)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for got, want in zip(results, expected, strict=True):
        assert got is not None and np.array_equal(got, want)


# ---------------------------------------------------------------------------- large
def test_large_case_matches_numpy() -> None:
    rng = np.random.default_rng(21)
    n_docs, n_tok, dim, m = 200, 300, 128, 32
    tok32 = rng.standard_normal((n_docs * n_tok, dim)).astype(np.float32)
    offsets = (np.arange(n_docs + 1) * n_tok).astype(np.uint64)
    q = rng.standard_normal((m, dim)).astype(np.float32)
    cand = rng.permutation(n_docs).astype(np.uint32)
    padded = tok32.reshape(n_docs, n_tok, dim).astype(np.float64)
    want = np.einsum("qd,btd->bqt", q.astype(np.float64), padded).max(axis=2).sum(axis=1)[cand]
    scale = np.linalg.norm(q, axis=1).sum() * np.linalg.norm(padded, axis=2).max(axis=1)[cand]
    assert_close(_core.maxsim(q, tok32, offsets, cand), want, scale, 1e-5)
    tok16 = tok32.astype(np.float16)
    p16 = tok16.reshape(n_docs, n_tok, dim).astype(np.float64)
    want16 = np.einsum("qd,btd->bqt", q.astype(np.float64), p16).max(axis=2).sum(axis=1)[cand]
    assert_close(_core.maxsim(q, tok16, offsets, cand), want16, scale, 1e-5)
    assert_close(_core.maxsim(q, tok16, offsets, cand), want, scale, 1e-2)


# ---------------------------------------------------------------------------- validation
@pytest.fixture
def valid():
    docs = make_docs(31, [3, 0, 5], 8)
    tokens, offsets = pack(docs, 8, np.float16)
    q = np.random.default_rng(32).standard_normal((4, 8)).astype(np.float32)
    return q, tokens, offsets, np.array([0, 2], dtype=np.uint32)


def call(valid, **change):
    args = dict(zip(("query", "tokens", "offsets", "candidates"), valid, strict=True))
    args.update(change)
    return _core.maxsim(args["query"], args["tokens"], args["offsets"], args["candidates"])


def test_valid_fixture_scores(valid) -> None:
    assert call(valid).shape == (2,)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda q: q.astype(np.float64), ValueError, "query must be a float32 array"),
        (lambda q: q.astype(">f4"), ValueError, "query must be a float32 array"),
        (lambda q: q[0], ValueError, "query must have 2 dimension"),
        (lambda q: np.tile(q, 2)[:, ::2], ValueError, "query must be C-contiguous"),
        (lambda q: q[:, :5].copy(), ValueError, "expected 8 dimensions.*got 5"),
        (lambda q: q[:0], ValueError, "query has no token vectors"),
        (lambda q: np.where(np.eye(4, 8) > 0, np.nan, q).astype(np.float32), ValueError, "NaN"),
    ],
)
def test_query_errors(valid, make, error, match) -> None:
    with pytest.raises(error, match=match):
        call(valid, query=make(valid[0]))


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda t: t.astype(np.float64), ValueError, "tokens must be a float32 or float16"),
        (lambda t: t.astype(np.int8), ValueError, "tokens must be a float32 or float16"),
        (lambda t: t.astype(">f2"), ValueError, "tokens must be a float32 or float16"),
        (lambda t: t.reshape(-1), ValueError, "tokens must have 2 dimensions"),
        (lambda t: t[None], ValueError, "tokens must have 2 dimensions"),
        (lambda t: np.asfortranarray(t), ValueError, "tokens must be C-contiguous"),
    ],
)
def test_token_errors(valid, make, error, match) -> None:
    with pytest.raises(error, match=match):
        call(valid, tokens=make(valid[1]))


def test_zero_dimensions(valid) -> None:
    with pytest.raises(ValueError, match="0 dimensions"):
        call(
            valid,
            query=np.empty((2, 0), np.float32),
            tokens=np.empty((8, 0), np.float32),
        )


@pytest.mark.parametrize(
    ("offsets", "error", "match"),
    [
        (np.array([0, 3, 3, 8], np.int64), ValueError, "offsets must be a uint64 array"),
        (np.array([[0, 3, 3, 8]], np.uint64), ValueError, "offsets must have 1 dimension"),
        (np.array([0, 3, 3, 8, 9], np.uint64)[::2], ValueError, "C-contiguous"),
        (np.array([], np.uint64), ValueError, "n_docs \\+ 1 entries"),
        (np.array([1, 3, 3, 8], np.uint64), ValueError, "offsets\\[0\\] must be 0, got 1"),
        (np.array([0, 5, 3, 8], np.uint64), ValueError, "non-decreasing.*offsets\\[2\\] = 3"),
        (np.array([0, 3, 3, 7], np.uint64), ValueError, "must equal the number of token rows"),
        (np.array([0, 3, 3, 9], np.uint64), ValueError, "must equal the number of token rows"),
    ],
)
def test_offset_errors(valid, offsets, error, match) -> None:
    with pytest.raises(error, match=match):
        call(valid, offsets=offsets)


@pytest.mark.parametrize(
    ("candidates", "error", "match"),
    [
        (np.array([0, 2], np.int64), ValueError, "candidates must be a uint32 array"),
        (np.array([[0, 2]], np.uint32), ValueError, "candidates must have 1 dimension"),
        (np.array([0, 3], np.uint32), IndexError, "candidates\\[1\\] = 3 is not a document"),
        (np.array([2**32 - 1], np.uint32), IndexError, "not a document of the store"),
    ],
)
def test_candidate_errors(valid, candidates, error, match) -> None:
    with pytest.raises(error, match=match):
        call(valid, candidates=candidates)


# ---------------------------------------------------------------------------- wrapper
def test_token_store_packing() -> None:
    docs = make_docs(41, [3, 0, 5, 1], 6)
    store = TokenStore(6)
    assert store.add(docs[0]) == 0
    assert store.extend(docs[1:]) == range(1, 4)
    assert len(store) == 4 and store.n_tokens == 9 and store.dim == 6
    assert store.dtype == np.float16 and store.tokens.dtype == np.float16
    assert store.tokens.flags.c_contiguous and store.tokens.shape == (9, 6)
    assert store.offsets.dtype == np.uint64 and store.offsets.tolist() == [0, 3, 3, 8, 9]
    for i, d in enumerate(docs):
        assert np.array_equal(store.document(i), d.astype(np.float16))
    assert np.array_equal(store.document(-1), docs[3].astype(np.float16))
    assert store.nbytes == 9 * 6 * 2 + 5 * 8
    with pytest.raises(IndexError):
        store.document(4)


def test_token_store_grows_one_document_at_a_time() -> None:
    docs = make_docs(42, [7] * 300, 16)
    store = TokenStore(16, dtype="float32")
    for d in docs:
        store.add(d)
    tokens, offsets = pack(docs, 16)
    assert np.array_equal(store.tokens, tokens) and np.array_equal(store.offsets, offsets)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_token_store_scores(dtype: str) -> None:
    docs = make_docs(43, [5, 0, 40, 1, 12], 33)
    store = TokenStore.from_documents(docs, dtype=dtype)
    q = np.random.default_rng(44).standard_normal((7, 33)).astype(np.float32)
    rel = 1e-2 if dtype == "float16" else 1e-5
    want, scale = reference(q, docs, range(5))
    assert_close(store.scores(q), want, scale, rel)
    want, scale = reference(q, docs, [4, 0])
    assert_close(store.scores(q, [4, 0]), want, scale, rel)
    assert_close(store.scores(q.astype(np.float64), np.array([4, 0])), want, scale, rel)
    assert store.scores(q, []).shape == (0,)


def test_maxsim_scores_with_list_and_store() -> None:
    docs = make_docs(45, [9, 4, 0, 30], 12)
    q = np.random.default_rng(46).standard_normal((3, 12)).astype(np.float32)
    want, scale = reference(q, docs, range(4))
    assert_close(maxsim_scores(q, docs), want, scale, 1e-5)  # a list: packed as float32
    store = TokenStore.from_documents(docs)
    assert np.array_equal(maxsim_scores(q, store, [1, 3]), store.scores(q, [1, 3]))
    assert np.array_equal(maxsim_scores(q, store, threads=2), maxsim_scores(q, store, threads=1))


def test_token_store_errors() -> None:
    store = TokenStore(4)
    with pytest.raises(ValueError, match="expected a 2-D \\(n_tokens, 4\\) array"):
        store.add(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="expected a 2-D"):
        store.add(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="floating point"):
        store.add(np.zeros((2, 4), np.int32))
    with pytest.raises(ValueError, match="NaN or infinity"):
        store.add(np.full((2, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"float16 range.*dtype='float32'"):
        store.add(np.full((2, 4), 1e6, np.float32))
    assert len(store) == 0  # nothing was appended by the failed calls
    with pytest.raises(ValueError, match="dtype must be float16 or float32"):
        TokenStore(4, dtype=np.float64)
    with pytest.raises(ValueError, match="dim must be at least 1"):
        TokenStore(0)
    with pytest.raises(ValueError, match="dim is required"):
        TokenStore.from_documents([])
    store.add(np.ones((2, 4), np.float32))
    q = np.ones((1, 4), np.float32)
    with pytest.raises(ValueError, match="query: expected a 2-D \\(n_query_tokens, 4\\)"):
        store.scores(np.ones((1, 5), np.float32))
    with pytest.raises(IndexError, match="candidate -1 is out of range"):
        store.scores(q, [-1])
    with pytest.raises(IndexError, match="candidate 1 is out of range"):
        store.scores(q, [0, 1])
    with pytest.raises(ValueError, match="candidates must be a 1-D sequence"):
        store.scores(q, [0.5])
    with pytest.raises(ValueError, match="NaN"):
        store.scores(np.full((1, 4), np.nan))
