"""Mean pooling of token vectors over token spans: the pooling step of late chunking.

Late chunking (Günther et al., 2024) runs a whole document through a long-context encoder once
and then averages the token vectors over each chunk's ``[start, end)`` token span, so that every
chunk vector carries the context of its neighbours. The pooling runs in fastrag's C++ core
(``fastrag._core.span_mean_pool*``): float32 sums in row order, threads across spans (results do
not depend on the thread count), the GIL released, no copy of the token vectors.

Span rules, the same for every function here:

- A span is a pair of token indices ``(start, end)``, end exclusive, relative to its document
  (so a span from a tokenizer with a leading ``[CLS]`` already counts it).
- An ``end`` beyond the document is clipped to the document's length.
- A span that is empty after clipping (``start == end``, or ``start`` at or past the end of the
  document) is skipped: its row of ``pooled`` is all zeros and its ``valid`` flag is False.
- A negative ``start``, or ``end < start``, raises ValueError naming the span.

The reference late-chunking code clips spans to ``max_length - 1`` so that the final ``[SEP]`` of
a truncated input is never pooled; to do the same, pass ``tokens[: max_length - 1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from fastrag import _core
from fastrag.index.tokens import TokenStore

__all__ = ["PooledSpans", "mean_pool_batch", "mean_pool_spans"]

SpansLike = npt.ArrayLike  # (n_spans, 2) integers, or a sequence of (start, end) pairs


class PooledSpans(NamedTuple):
    """Pooled span vectors; unpacks as ``pooled, valid = ...``.

    Attributes:
        pooled: (n_spans, dim) float32: the mean token vector of each span, in the order of the
            spans given; all zeros for a skipped span.
        valid: (n_spans,) bool: False where the span was empty after clipping and was skipped.
    """

    pooled: npt.NDArray[np.float32]
    valid: npt.NDArray[np.bool_]


def _spans(spans: SpansLike, name: str) -> npt.NDArray[np.int64]:
    """An (n, 2) C-contiguous int64 copy of ``spans`` (small: two integers per span)."""
    s = np.asarray(spans)
    if s.shape in ((0,), (0, 2)):  # no spans, e.g. [] or np.empty((0, 2))
        return np.empty((0, 2), dtype=np.int64)
    if s.ndim != 2 or s.shape[1] != 2:
        raise ValueError(
            f"{name} must be an (n_spans, 2) array of [start, end) token indices, "
            f"got shape {s.shape}"
        )
    if not np.issubdtype(s.dtype, np.integer) or s.dtype == np.bool_:
        raise ValueError(f"{name} must hold integer token indices, got {s.dtype}")
    if s.dtype == np.uint64 and int(s.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{name}: a token index exceeds the int64 range")
    return np.ascontiguousarray(s, dtype=np.int64)


def _tokens(tokens: npt.ArrayLike, name: str) -> np.ndarray:
    """``tokens`` as an array (no copy for numpy arrays and CPU tensors); dtype, shape and
    contiguity are checked by the core, whose errors say how to fix them."""
    t = np.asarray(tokens)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n_tokens, dim) array, got shape {t.shape}")
    return t


def mean_pool_spans(
    tokens: npt.ArrayLike,
    spans: SpansLike,
    *,
    threads: int = 0,
) -> PooledSpans:
    """Mean token vector of each ``[start, end)`` span of one document.

    Args:
        tokens: (n_tokens, dim) float32 or float16 token vectors, C-contiguous (never copied
            or converted: convert with ``np.ascontiguousarray(x, dtype=np.float32)`` first).
        spans: (n_spans, 2) integer ``[start, end)`` token indices, or a sequence of pairs.
            Ends past the document are clipped; spans empty after clipping are skipped.
        threads: Worker threads; <= 0 uses every hardware thread. Results do not depend on it.

    Returns:
        :class:`PooledSpans` ``(pooled, valid)``: (n_spans, dim) float32 means (zero rows for
        skipped spans) and the (n_spans,) bool mask of the spans that were pooled.

    Raises:
        ValueError: tokens not 2-D, not float32/float16 or not C-contiguous; spans not of
            shape (n, 2) or not integers; a negative start or an end before its start (the
            message names the span).
    """
    t = _tokens(tokens, "tokens")
    pooled, valid = _core.span_mean_pool(t, _spans(spans, "spans"), threads=int(threads))
    return PooledSpans(pooled, valid)


def mean_pool_batch(
    documents: TokenStore | Sequence[npt.ArrayLike] | np.ndarray,
    spans: Sequence[SpansLike],
    *,
    threads: int = 0,
) -> PooledSpans:
    """Mean token vectors of the spans of many documents, in one call.

    Args:
        documents: A :class:`fastrag.index.tokens.TokenStore`, or a sequence of
            (n_tokens_k, dim) float32 or float16 C-contiguous arrays, all of one dtype and
            dim (pooled where they are, not packed or copied). A padded encoder output
            ``(batch, seq, dim)`` is a sequence of documents; pass ``[out[k, :n_k] for k ...]``
            with ``n_k`` the attention-mask lengths so that padding is never pooled.
        spans: One entry per document: that document's (n_spans_k, 2) ``[start, end)`` token
            indices (relative to the document), or a sequence of pairs; empty for none.
        threads: Worker threads, shared over all documents' spans; <= 0 uses every hardware
            thread. Results do not depend on it.

    Returns:
        :class:`PooledSpans` over all spans, document 0's first: rows
        ``sum(n_spans_0..k-1)`` onwards belong to document k. Split per document with
        ``np.split(pooled, np.cumsum([len(s) for s in spans])[:-1])``. With no documents,
        (0, 0) and (0,) arrays.

    Raises:
        ValueError: as :func:`mean_pool_spans`, naming the document; also a different number
            of span lists and documents, or documents of different dtypes or dims.
    """

    n_docs = len(documents)
    if len(spans) != n_docs:
        raise ValueError(
            f"spans must have one entry per document: {n_docs} documents, {len(spans)} entries"
        )
    per_doc = [_spans(s, f"spans[{k}]") for k, s in enumerate(spans)]
    span_offsets = np.zeros(n_docs + 1, dtype=np.uint64)
    if n_docs:
        span_offsets[1:] = np.cumsum([len(s) for s in per_doc])
    flat = np.concatenate(per_doc) if per_doc else np.empty((0, 2), dtype=np.int64)
    if isinstance(documents, TokenStore):
        pooled, valid = _core.span_mean_pool_batch(
            documents.tokens, documents.offsets, flat, span_offsets, threads=int(threads)
        )
        return PooledSpans(pooled, valid)
    if n_docs == 0:
        return PooledSpans(np.empty((0, 0), dtype=np.float32), np.empty(0, dtype=np.bool_))
    docs = [_tokens(d, f"documents[{k}]") for k, d in enumerate(documents)]
    pooled, valid = _core.span_mean_pool_list(docs, flat, span_offsets, threads=int(threads))
    return PooledSpans(pooled, valid)
