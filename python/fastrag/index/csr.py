"""Sparse vectors as CSR batches: input checks and conversion, static pruning, idf.

A batch of sparse vectors is ``(indptr int64, term ids uint32, weights float32)``. `to_csr`
accepts what users hold: (term ids, weights) pairs, {term: weight} dicts, scipy sparse
matrices, or dense rows.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from fastrag.text import EmptyDocumentWarning

#: The core's vocabulary limit: term ids lie in [0, 2**30).
MAX_TERMS = 1 << 30

Csr = tuple[np.ndarray, np.ndarray, np.ndarray]


def is_number(x: object) -> bool:
    """A real number as Python or numpy gives it (not a bool)."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _is_vector(x: object) -> bool:
    """A dict {term: weight}, or a (term_ids, weights) pair of 1-D numeric sequences."""
    if isinstance(x, Mapping):
        return True
    if not isinstance(x, tuple) or len(x) != 2:
        return False
    terms = x[0]
    if isinstance(terms, np.ndarray):
        return terms.ndim == 1
    if isinstance(terms, (list, tuple)):
        return all(is_number(t) for t in terms[:1])
    return False


def _is_sparse_matrix(x: object) -> bool:
    return hasattr(x, "tocsr") and hasattr(x, "shape") and not isinstance(x, np.ndarray)


def is_sparse_input(x: object) -> bool:
    """Whether `x` is sparse vectors (one, a sequence, or a scipy.sparse matrix), not texts."""
    if isinstance(x, str):
        return False
    if _is_sparse_matrix(x) or _is_vector(x):
        return True
    if isinstance(x, (list, tuple)) and x:
        first = x[0]
        return isinstance(first, Mapping) or (isinstance(first, (tuple, list)) and len(first) == 2)
    return False


def _pair(item: object, i: int, name: str) -> tuple[Any, Any]:
    if isinstance(item, Mapping):
        return list(item.keys()), list(item.values())
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1]
    raise TypeError(
        f"{name}[{i}] must be a (term_ids, weights) pair or a {{term_id: weight}} dict, "
        f"got {type(item).__name__}"
    )


def _check_terms(terms: np.ndarray, indptr: np.ndarray, vocab: int, name: str) -> np.ndarray:
    """Term ids as uint32, after checking that they are integers in [0, vocab)."""
    if terms.size == 0:
        return np.zeros(0, dtype=np.uint32)
    if terms.dtype.kind not in "iu":
        raise TypeError(f"{name}: term ids must be integers, got dtype {terms.dtype}")
    lo, hi = int(terms.min()), int(terms.max())
    if lo < 0 or hi >= vocab:
        bad = int(np.flatnonzero((terms < 0) | (terms >= vocab))[0])
        row = int(np.searchsorted(indptr, bad, side="right") - 1)
        what = "negative" if int(terms[bad]) < 0 else f"not below the vocabulary size {vocab}"
        raise ValueError(f"{name}[{row}]: term id {int(terms[bad])} is {what}")
    return terms.astype(np.uint32, copy=False)


def _check_weights(weights: np.ndarray, indptr: np.ndarray, name: str) -> np.ndarray:
    """Weights as float32, after checking that they are finite and >= 0."""
    if weights.size == 0:
        return np.zeros(0, dtype=np.float32)
    if weights.dtype.kind not in "fiu":
        raise TypeError(f"{name}: weights must be numbers, got dtype {weights.dtype}")
    with np.errstate(over="ignore"):
        w = weights.astype(np.float32, copy=False)  # an overflow to inf is caught below
    ok = np.isfinite(w) & (w >= 0)
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        row = int(np.searchsorted(indptr, bad, side="right") - 1)
        raise ValueError(
            f"{name}[{row}]: weights must be finite and >= 0, got {weights[bad]!r}"
        )
    return w


def to_csr(vectors: Any, vocab: int = MAX_TERMS, name: str = "vectors") -> tuple[Csr, bool]:
    """Sparse vectors as checked CSR arrays, and whether a single vector was given.

    Accepts one vector, a sequence of vectors, or a scipy.sparse matrix (one row per vector;
    duplicates summed). A vector is a (term_ids, weights) pair of 1-D arrays or lists, or a
    dict {term_id: weight}. Term ids must be integers in [0, vocab), weights finite and >= 0.
    """
    if _is_sparse_matrix(vectors):
        m = vectors.tocsr()
        if not m.has_canonical_format:
            m = m.copy()
            m.sum_duplicates()
        indptr = np.asarray(m.indptr, dtype=np.int64)
        terms = _check_terms(np.asarray(m.indices), indptr, vocab, name)
        weights = _check_weights(np.asarray(m.data), indptr, name)
        return (indptr, terms, weights), False
    single = _is_vector(vectors)
    if isinstance(vectors, (str, bytes)) or not isinstance(vectors, Iterable):
        raise TypeError(
            f"{name} must be sparse vectors: (term_ids, weights) pairs, {{term_id: weight}} "
            f"dicts or a scipy.sparse matrix, got {type(vectors).__name__}"
        )
    items = [vectors] if single else list(vectors)
    term_parts: list[np.ndarray] = []
    weight_parts: list[np.ndarray] = []
    lengths = np.zeros(len(items), dtype=np.int64)
    for i, item in enumerate(items):
        t, w = _pair(item, i, name)
        t, w = np.asarray(t), np.asarray(w)
        if t.ndim != 1 or w.ndim != 1 or len(t) != len(w):
            raise ValueError(
                f"{name}[{i}]: term ids and weights must be 1-D and of the same length, "
                f"got shapes {t.shape} and {w.shape}"
            )
        if t.size and t.dtype.kind not in "iu":
            raise TypeError(f"{name}[{i}]: term ids must be integers, got dtype {t.dtype}")
        if w.size and w.dtype.kind not in "fiu":
            raise TypeError(f"{name}[{i}]: weights must be numbers, got dtype {w.dtype}")
        lengths[i] = len(t)
        term_parts.append(t.astype(np.int64, copy=False))
        weight_parts.append(w)
    indptr = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    terms = np.concatenate(term_parts) if term_parts else np.zeros(0, dtype=np.int64)
    weights = np.concatenate(weight_parts) if weight_parts else np.zeros(0, dtype=np.float32)
    if not weights.size:
        weights = weights.astype(np.float32)
    terms = _check_terms(terms, indptr, vocab, name)
    weights = _check_weights(weights, indptr, name)
    return (indptr, terms, weights), single


def keep_rows_where(csr: Csr, mask: np.ndarray) -> Csr:
    """The entries where `mask` is true, rows kept."""
    indptr, terms, weights = csr
    if mask.all():
        return csr
    kept = np.zeros(len(mask) + 1, dtype=np.int64)
    np.cumsum(mask, out=kept[1:])
    return kept[indptr], terms[mask], weights[mask]


def _row_ids(indptr: np.ndarray) -> np.ndarray:
    n = len(indptr) - 1
    dtype = np.int32 if n < 2**31 else np.int64
    return np.repeat(np.arange(n, dtype=dtype), np.diff(indptr))


def prune_rows(csr: Csr, keep: int) -> Csr:
    """Keeps the `keep` heaviest entries of each row (ties: the earlier entry), in order."""
    indptr, _, weights = csr
    lengths = np.diff(indptr)
    if not lengths.size or int(lengths.max()) <= keep:
        return csr
    rows = _row_ids(indptr)
    # One sort key: the row, then the weight descending (the bits of a float32 >= 0 order
    # as the value; adding +0.0 turns -0.0 into 0). Stable: ties keep the earlier entry.
    bits = (weights.astype(np.float32, copy=False) + np.float32(0.0)).view(np.uint32)
    key = (rows.astype(np.uint64) << np.uint64(32)) | (np.uint32(0xFFFFFFFF) - bits)
    order = np.argsort(key, kind="stable")
    del key, bits
    rank = np.arange(len(order), dtype=np.int64) - indptr[rows[order]]
    mask = np.zeros(len(order), dtype=bool)
    mask[order[rank < keep]] = True
    return keep_rows_where(csr, mask)


def sum_duplicates(csr: Csr) -> Csr:
    """Each row's repeated terms summed into one entry (terms ascending)."""
    indptr, terms, weights = csr
    if not terms.size:
        return csr
    key = (_row_ids(indptr).astype(np.int64) << 32) | terms.astype(np.int64)
    uniq, inverse = np.unique(key, return_inverse=True)
    summed = np.bincount(inverse, weights=weights, minlength=len(uniq)).astype(np.float32)
    counts = np.bincount((uniq >> 32), minlength=len(indptr) - 1)
    new_indptr = np.zeros(len(indptr), dtype=np.int64)
    np.cumsum(counts, out=new_indptr[1:])
    return new_indptr, (uniq & 0xFFFFFFFF).astype(np.uint32), summed


def idf_of(df: np.ndarray, n_docs: int) -> np.ndarray:
    """BM25 idf as in Qdrant's BM42 (and Lucene): ln((N - df + 0.5) / (df + 0.5) + 1)."""
    df = df.astype(np.float64)
    return np.log((n_docs - df + 0.5) / (df + 0.5) + 1.0)


def check_vocab_size(vocab_size: object) -> int | None:
    """A vocabulary size in 1..MAX_TERMS (numpy integers too, not bool), or None."""
    if vocab_size is None:
        return None
    if (
        isinstance(vocab_size, bool)
        or not isinstance(vocab_size, (int, np.integer))
        or not 0 < vocab_size <= MAX_TERMS
    ):
        raise ValueError(f"vocab_size must be an int in 1..{MAX_TERMS} or None")
    return int(vocab_size)


def check_count(n: object, name: str) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} must be a positive int or None, got {n!r}")
    return int(n)


def text_list(items: Any, name: str) -> list[str]:
    if isinstance(items, str):
        return [items]
    out = list(items)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] must be str, got {type(t).__name__}")
    return out


def empty_csr(n: int) -> Csr:
    return np.zeros(n + 1, dtype=np.int64), np.zeros(0, np.uint32), np.zeros(0, np.float32)


def pairs_csr(pairs: list[tuple[np.ndarray, np.ndarray]]) -> Csr:
    lengths = np.fromiter((len(t) for t, _ in pairs), dtype=np.int64, count=len(pairs))
    indptr = np.zeros(len(pairs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    if not pairs or not indptr[-1]:
        return empty_csr(len(pairs))
    terms = np.concatenate([np.asarray(t, dtype=np.uint32) for t, _ in pairs])
    weights = np.concatenate([np.asarray(w, dtype=np.float32) for _, w in pairs])
    return indptr, terms, weights


def warn_empty(texts: Sequence[Any], empty: list[int], what: str) -> None:
    if empty:
        warnings.warn(
            f"{len(empty)} of {len(texts)} documents have no {what} (e.g. index {empty[0]}); "
            "they are indexed but can never match",
            EmptyDocumentWarning,
            stacklevel=3,
        )


def special_ids(tokenizer: Any) -> set[int]:
    return {i for i, tok in tokenizer.get_added_tokens_decoder().items() if tok.special}
