"""Span mean pooling (late chunking): fastrag._core.span_mean_pool* and fastrag.encoders.pooling.

Oracle: a float64 numpy mean over the clipped span rows (of the float16 values themselves for
float16 input: float16 -> float64 is exact). A float32 sum of n terms in any order errs by at
most (n - 1) * u * sum|x| (u = 2^-24) and the division adds one rounding, so every element
must be within 2 * n * u * mean|x| + 2 * u * |mean| of the oracle.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from fastrag import _core
from fastrag.encoders.pooling import PooledSpans, mean_pool_batch, mean_pool_spans
from fastrag.index.tokens import TokenStore

U = 2.0**-24
HAS_AVX2 = _core.pooling_kernels() == "avx2"


# ---------------------------------------------------------------------------- helpers
def make_tokens(seed: int, n: int, dim: int, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, dim)) * 3.0).astype(dtype)


def random_spans(seed: int, n_tokens: int, n_spans: int) -> np.ndarray:
    """Spans of every kind: most inside, some past the end, some zero-length."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, n_tokens + 3, n_spans)
    length = rng.integers(0, max(2, n_tokens // 3), n_spans)
    return np.stack([start, start + length], axis=1).astype(np.int64)


def reference(tokens: np.ndarray, spans) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pooled, valid, bound): float64 means of the clipped spans, zeros where skipped."""
    x = tokens.astype(np.float64)
    n, dim = x.shape
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    pooled = np.zeros((len(spans), dim))
    bound = np.zeros((len(spans), dim))
    valid = np.zeros(len(spans), dtype=bool)
    for i, (s, e) in enumerate(spans):
        e = min(int(e), n)
        if s >= e:
            continue
        rows = x[s:e]
        valid[i] = True
        pooled[i] = rows.mean(axis=0)
        bound[i] = 2 * (e - s) * U * np.abs(rows).mean(axis=0) + 2 * U * np.abs(pooled[i])
    return pooled, valid, bound


def assert_pooled(got, tokens: np.ndarray, spans) -> None:
    pooled, valid = got
    want, want_valid, bound = reference(tokens, spans)
    assert pooled.dtype == np.float32 and pooled.shape == want.shape
    assert valid.dtype == np.bool_ and valid.shape == want_valid.shape
    np.testing.assert_array_equal(valid, want_valid)
    assert not pooled[~valid].any(), "skipped spans must give zero rows"
    err = np.abs(pooled.astype(np.float64) - want)
    assert (err <= bound + 1e-30).all(), f"max error over bound {(err / (bound + 1e-30)).max():.3g}"


def with_kernels(name: str | None, fn):
    """Calls fn() with FASTRAG_KERNELS set to `name` (pooling reads it on every call)."""
    old = os.environ.pop("FASTRAG_KERNELS", None)
    try:
        if name is not None:
            os.environ["FASTRAG_KERNELS"] = name
        return fn()
    finally:
        os.environ.pop("FASTRAG_KERNELS", None)
        if old is not None:
            os.environ["FASTRAG_KERNELS"] = old


def pack(docs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(docs) + 1, dtype=np.uint64)
    offsets[1:] = np.cumsum([len(d) for d in docs])
    return np.ascontiguousarray(np.concatenate(docs)), offsets


# ---------------------------------------------------------------------------- oracle
@pytest.mark.parametrize("kernels", ["generic", "avx2"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("dim", [7, 32, 384, 1024])
def test_matches_numpy_reference(dim, dtype, kernels):
    if kernels == "avx2" and not HAS_AVX2:
        pytest.skip("CPU without AVX2 + F16C")
    n = 301
    tokens = make_tokens(dim, n, dim, dtype)
    spans = random_spans(dim + 1, n, 40)
    got = with_kernels(kernels, lambda: _core.span_mean_pool(tokens, spans, threads=1))
    assert with_kernels(None, _core.pooling_kernels) == ("avx2" if HAS_AVX2 else "generic")
    assert_pooled(got, tokens, spans)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_edge_spans(dtype):
    n, dim = 50, 33
    tokens = make_tokens(1, n, dim, dtype)
    spans = [
        (0, 1),  # length 1, first token
        (n - 1, n),  # length 1, last token
        (0, n),  # the whole document
        (n - 4, n),  # at the very end
        (2, 10),  # overlapping ...
        (5, 15),  # ... each other
        (5, 15),  # a duplicate
        (7, 7),  # zero-length: skipped
        (0, 0),  # zero-length at the start: skipped
        (n - 3, n + 100),  # beyond the end: clipped to (n - 3, n)
        (n, n + 5),  # starts at the end: skipped
        (n + 5, n + 9),  # fully beyond: skipped
        (3, 2**62),  # a huge end: clipped
    ]
    pooled, valid = mean_pool_spans(tokens, spans)
    assert_pooled((pooled, valid), tokens, spans)
    np.testing.assert_array_equal(valid, [1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(pooled[0], tokens[0].astype(np.float32))  # mean of one row
    np.testing.assert_array_equal(pooled[1], tokens[-1].astype(np.float32))
    np.testing.assert_array_equal(pooled[5], pooled[6])
    np.testing.assert_array_equal(pooled[9], mean_pool_spans(tokens, [(n - 3, n)]).pooled[0])


def test_long_span_and_large_values():
    # One span over 8192 tokens of large values: the error bound holds over a long sum.
    tokens = make_tokens(2, 8192, 16) * 1e3
    spans = [(0, 8192), (1, 8191), (4096, 8192)]
    assert_pooled(mean_pool_spans(tokens, spans), tokens, spans)


def test_constant_rows_give_exact_means():
    tokens = np.full((1000, 8), 0.25, dtype=np.float32)  # every partial sum is exact
    pooled, valid = mean_pool_spans(tokens, [(0, 1000), (3, 4), (10, 17)])
    assert valid.all()
    np.testing.assert_array_equal(pooled, 0.25)


def test_empty_inputs():
    tokens = make_tokens(3, 10, 5)
    pooled, valid = mean_pool_spans(tokens, [])
    assert pooled.shape == (0, 5) and pooled.dtype == np.float32 and valid.shape == (0,)
    empty_doc = np.empty((0, 5), dtype=np.float32)
    pooled, valid = mean_pool_spans(empty_doc, [(0, 3), (0, 0)])
    assert not valid.any() and not pooled.any() and pooled.shape == (2, 5)
    result = mean_pool_batch([], [])
    assert result.pooled.shape == (0, 0) and result.valid.shape == (0,)


def test_result_is_a_named_tuple():
    tokens = make_tokens(4, 12, 4)
    result = mean_pool_spans(tokens, np.array([[0, 3]], dtype=np.uint64))
    assert isinstance(result, PooledSpans)
    pooled, valid = result
    assert pooled is result.pooled and valid is result.valid


# ---------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_threads_bit_identical(dtype):
    tokens = make_tokens(5, 2000, 96, dtype)
    spans = random_spans(6, 2000, 300)
    one = mean_pool_spans(tokens, spans, threads=1)
    for threads in (2, 3, 0):
        other = mean_pool_spans(tokens, spans, threads=threads)
        np.testing.assert_array_equal(other.pooled, one.pooled)
        np.testing.assert_array_equal(other.valid, one.valid)


@pytest.mark.skipif(not HAS_AVX2, reason="CPU without AVX2 + F16C")
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_kernels_bit_identical(dtype):
    # Same summation order and exact float16 conversion in both kernels.
    tokens = make_tokens(7, 900, 77, dtype)
    spans = random_spans(8, 900, 100)
    a = with_kernels("generic", lambda: _core.span_mean_pool(tokens, spans))
    b = with_kernels("avx2", lambda: _core.span_mean_pool(tokens, spans))
    np.testing.assert_array_equal(a[0], b[0])


def test_float16_special_values_convert_exactly():
    # Every float16 bit pattern except NaNs, one per row: each one-row mean is the value itself.
    bits = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    values = bits.view(np.float16)
    values = values[~np.isnan(values)]
    tokens = np.ascontiguousarray(values.reshape(-1, 10))  # 10 a row: 8 by F16C, 2 one by one
    spans = np.stack([np.arange(len(tokens)), np.arange(len(tokens)) + 1], axis=1)
    for kernels in ("generic", "avx2") if HAS_AVX2 else ("generic",):
        pooled, _ = with_kernels(kernels, lambda: _core.span_mean_pool(tokens, spans))
        np.testing.assert_array_equal(pooled, tokens.astype(np.float32))


# ---------------------------------------------------------------------------- batches
def batch_inputs(dtype=np.float32):
    lengths = [120, 0, 7, 300, 64]
    dim = 24
    docs = [make_tokens(10 + k, n, dim, dtype) for k, n in enumerate(lengths)]
    spans = [random_spans(20 + k, max(n, 1), 6 + k) for k, n in enumerate(lengths)]
    spans[2] = np.empty((0, 2), dtype=np.int64)  # a document without spans
    return docs, spans


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_batch_equals_per_document(dtype):
    docs, spans = batch_inputs(dtype)
    per_doc = [mean_pool_spans(d, s, threads=1) for d, s in zip(docs, spans, strict=True)]
    want = np.concatenate([p.pooled for p in per_doc])
    want_valid = np.concatenate([p.valid for p in per_doc])
    store = TokenStore.from_documents(docs, dtype=dtype)
    for documents in (docs, store):
        for threads in (1, 2):
            got = mean_pool_batch(documents, spans, threads=threads)
            np.testing.assert_array_equal(got.pooled, want)
            np.testing.assert_array_equal(got.valid, want_valid)
    for d, s, p in zip(docs, spans, per_doc, strict=True):
        assert_pooled(p, d, s)


def test_batch_core_store_call():
    docs, spans = batch_inputs()
    tokens, offsets = pack(docs)
    span_offsets = np.zeros(len(docs) + 1, dtype=np.uint64)
    span_offsets[1:] = np.cumsum([len(s) for s in spans])
    flat = np.concatenate(spans)
    pooled, valid = _core.span_mean_pool_batch(tokens, offsets, flat, span_offsets, threads=2)
    want = mean_pool_batch(docs, spans, threads=1)
    np.testing.assert_array_equal(pooled, want.pooled)
    np.testing.assert_array_equal(valid, want.valid)


def test_padded_encoder_output_by_views():
    # (batch, seq, dim) with attention-mask lengths: views, never the padding.
    rng = np.random.default_rng(30)
    out = rng.standard_normal((3, 40, 16)).astype(np.float32)
    lengths = [40, 25, 3]
    spans = [[(0, 10), (30, 60)], [(20, 30), (26, 30)], [(0, 40)]]
    got = mean_pool_batch([out[k, :n] for k, n in enumerate(lengths)], spans)
    np.testing.assert_array_equal(got.valid, [True, True, True, False, True])
    np.testing.assert_allclose(got.pooled[1], out[0, 30:40].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.pooled[2], out[1, 20:25].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.pooled[4], out[2, :3].mean(0), rtol=1e-5, atol=1e-6)
    # The whole 3-D array is also a sequence of documents (seq tokens each).
    whole = mean_pool_batch(out, spans)
    np.testing.assert_allclose(whole.pooled[3], out[1, 26:30].mean(0), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- bad input
X = make_tokens(40, 20, 6)
S = np.array([[0, 5], [5, 9]], dtype=np.int64)


@pytest.mark.parametrize(
    ("tokens", "match"),
    [
        (X.astype(np.float64), "float32 or float16 array, got float64"),
        (X.astype(np.int32), "float32 or float16 array, got int32"),
        (np.asfortranarray(X), "C-contiguous"),
        (X[:, ::2], "C-contiguous"),
        (X[::2], "C-contiguous"),
        (X.reshape(-1), "2 dimensions"),
        (X.reshape(2, 10, 6), "2 dimensions"),
        (np.empty((4, 0), dtype=np.float32), "0 dimensions"),
    ],
)
def test_core_rejects_bad_tokens(tokens, match):
    with pytest.raises(ValueError, match=match):
        _core.span_mean_pool(tokens, S)


@pytest.mark.parametrize(
    ("spans", "match"),
    [
        (S.astype(np.int32), "spans must be a int64 array, got int32"),
        (S.astype(np.float64), "spans must be a int64 array"),
        (np.array([[0, 5, 6]], dtype=np.int64), r"shape \(n_spans, 2\).*got \(1, 3\)"),
        (np.array([0, 5], dtype=np.int64), "2 dimension"),
        (np.asfortranarray(np.array([[0, 5], [1, 2], [3, 4]], dtype=np.int64)), "C-contiguous"),
        (np.array([[0, 5], [1, 2], [-1, 4]], dtype=np.int64), r"spans\[2\] = \(-1, 4\).*>= 0"),
        (np.array([[0, 5], [-3, -7]], dtype=np.int64), r"spans\[1\] = \(-3, -7\)"),
        (np.array([[4, 2]], dtype=np.int64), r"spans\[0\] = \(4, 2\).*end < start"),
        (np.array([[30, 25]], dtype=np.int64), "end < start"),  # beyond the end, still an error
    ],
)
def test_core_rejects_bad_spans(spans, match):
    with pytest.raises(ValueError, match=match):
        _core.span_mean_pool(X, spans)


def store_call(offsets, span_offsets, spans=S, tokens=X):
    return _core.span_mean_pool_batch(
        tokens,
        np.asarray(offsets, dtype=np.uint64),
        spans,
        np.asarray(span_offsets, dtype=np.uint64),
    )


@pytest.mark.parametrize(
    ("offsets", "span_offsets", "match"),
    [
        ([1, 20], [0, 2], r"offsets\[0\] must be 0"),
        ([0, 15, 10, 20], [0, 1, 2, 2], "offsets must be non-decreasing"),
        ([0, 10, 19], [0, 1, 2], r"offsets\[-1\] must equal the number of token rows \(20\)"),
        ([0, 10, 21], [0, 1, 2], r"offsets\[-1\] must equal"),
        ([], [0], "offsets must have n_docs \\+ 1 entries"),
        ([0, 10, 20], [0, 2], "span_offsets must have n_docs \\+ 1 = 3 entries"),
        ([0, 10, 20], [1, 1, 2], r"span_offsets\[0\] must be 0"),
        ([0, 10, 20], [0, 2, 1], "span_offsets must be non-decreasing"),
        ([0, 10, 20], [0, 1, 3], r"span_offsets\[-1\] must equal the number of spans \(2\)"),
    ],
)
def test_core_rejects_inconsistent_offsets(offsets, span_offsets, match):
    with pytest.raises(ValueError, match=match):
        store_call(offsets, span_offsets)


def test_core_store_checks_dtypes_and_names_the_document():
    with pytest.raises(ValueError, match="offsets must be a uint64 array, got int64"):
        _core.span_mean_pool_batch(X, np.array([0, 20]), S, np.array([0, 2], dtype=np.uint64))
    with pytest.raises(ValueError, match="span_offsets must be a uint64 array"):
        _core.span_mean_pool_batch(X, np.array([0, 20], dtype=np.uint64), S, np.array([0, 2]))
    spans = np.array([[0, 5], [5, 9], [3, 1]], dtype=np.int64)
    with pytest.raises(ValueError, match=r"spans\[2\] = \(3, 1\) \(span 0 of document 1\)"):
        store_call([0, 10, 20], [0, 2, 3], spans)


def test_core_list_rejects_bad_documents():
    so = np.array([0, 1, 2], dtype=np.uint64)
    with pytest.raises(ValueError, match=r"documents\[1\] must be a numpy array, got list"):
        _core.span_mean_pool_list([X, [[1.0] * 6]], S, so)
    with pytest.raises(ValueError, match=r"documents\[1\] is float16 but documents\[0\]"):
        _core.span_mean_pool_list([X, X.astype(np.float16)], S, so)
    with pytest.raises(ValueError, match=r"documents\[1\]: expected 6 dimensions"):
        _core.span_mean_pool_list([X, X[:, :4].copy()], S, so)
    with pytest.raises(ValueError, match=r"documents\[1\] must be C-contiguous"):
        _core.span_mean_pool_list([X, X[:, ::2]], S, so)
    with pytest.raises(ValueError, match=r"documents\[0\] must be a float32 or float16"):
        _core.span_mean_pool_list([X.astype(np.float64), X], S, so)
    with pytest.raises(ValueError, match="documents is empty"):
        _core.span_mean_pool_list([], np.empty((0, 2), dtype=np.int64), np.zeros(1, np.uint64))
    with pytest.raises(ValueError, match="one more than len\\(documents\\)"):
        _core.span_mean_pool_list([X, X], S, np.array([0, 2], dtype=np.uint64))


def test_python_layer_errors():
    with pytest.raises(ValueError, match=r"spans must be an \(n_spans, 2\) array"):
        mean_pool_spans(X, [1, 2, 3])
    with pytest.raises(ValueError, match="integer token indices, got float64"):
        mean_pool_spans(X, [(0.0, 2.5)])
    with pytest.raises(ValueError, match="integer token indices, got bool"):
        mean_pool_spans(X, [(True, False)])
    with pytest.raises(ValueError, match="tokens must be a 2-D"):
        mean_pool_spans(X.reshape(-1), [(0, 1)])
    with pytest.raises(ValueError, match="float32 or float16 array, got float64"):
        mean_pool_spans(X.astype(np.float64), [(0, 1)])  # never converted silently
    with pytest.raises(ValueError, match=r"spans\[0\] = \(-1, 3\)"):
        mean_pool_spans(X, [(-1, 3)])
    with pytest.raises(ValueError, match="one entry per document: 2 documents, 1 entries"):
        mean_pool_batch([X, X], [S])
    with pytest.raises(ValueError, match=r"spans\[1\] must be an \(n_spans, 2\) array"):
        mean_pool_batch([X, X], [S, [1, 2, 3]])
    with pytest.raises(ValueError, match=r"documents\[1\] must be a 2-D"):
        mean_pool_batch([X, X[0]], [S, S])
    with pytest.raises(ValueError, match=r"\(span 1 of document 1\): end < start"):
        mean_pool_batch([X, X], [S, [(0, 1), (9, 8)]])
    store = TokenStore.from_documents([X, X], dtype=np.float32)
    with pytest.raises(ValueError, match=r"\(span 0 of document 1\).*>= 0"):
        mean_pool_batch(store, [S, [(-2, 1)]])
