"""Late-interaction scoring (ColBERT MaxSim) over per-document token vectors.

A late-interaction model (ColBERT, PyLate) encodes a query into m token vectors and every
document into n_i token vectors. The score of a document is the sum, over query tokens, of the
largest dot product between that query token and any of the document's tokens. The scoring runs
in fastrag's C++ core (``fastrag._core.maxsim``), over a :class:`TokenStore`: all documents'
token vectors packed into one contiguous float16 (default) or float32 array plus offsets.

A document with no token vectors scores 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from fastrag import _core

__all__ = ["TokenStore", "maxsim_scores"]

_FLOAT16_MAX = float(np.finfo(np.float16).max)


def _storage_dtype(dtype: npt.DTypeLike) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float16), np.dtype(np.float32)):
        raise ValueError(f"dtype must be float16 or float32, got {dt}")
    return dt


class TokenStore:
    """Token vectors of many documents packed into one contiguous (total_tokens, dim) array.

    Document ``i`` owns rows ``offsets[i]:offsets[i + 1]`` of :attr:`tokens`. Documents are
    appended with :meth:`add` or :meth:`extend` (copied into the store, converted to its dtype);
    the buffer grows geometrically, so appending one document at a time stays linear.

    Args:
        dim: Dimensions of every token vector.
        dtype: ``"float16"`` (default; half the memory, scores within fp16 rounding of the
            float32 ones) or ``"float32"``.
    """

    def __init__(self, dim: int, *, dtype: npt.DTypeLike = np.float16) -> None:
        if int(dim) < 1:
            raise ValueError(f"dim must be at least 1, got {dim}")
        self._dim = int(dim)
        self._dtype = _storage_dtype(dtype)
        self._buf = np.empty((0, self._dim), dtype=self._dtype)
        self._n_tokens = 0
        self._offsets: list[int] = [0]
        self._offsets_array: np.ndarray | None = None

    @classmethod
    def from_documents(
        cls,
        documents: Iterable[npt.ArrayLike],
        *,
        dim: int | None = None,
        dtype: npt.DTypeLike = np.float16,
    ) -> TokenStore:
        """A store holding ``documents`` (each an (n_i, dim) array), in order.

        ``dim`` defaults to the second dimension of the first document; an empty list needs it.
        """
        docs = [np.asarray(d) for d in documents]
        if dim is None:
            if not docs:
                raise ValueError("dim is required when there are no documents")
            if docs[0].ndim != 2:
                raise ValueError(
                    f"document 0 must be a 2-D (n_tokens, dim) array, got shape {docs[0].shape}"
                )
            dim = int(docs[0].shape[1])
        store = cls(dim, dtype=dtype)
        store._reserve(sum(int(d.shape[0]) for d in docs if d.ndim == 2))
        store.extend(docs)
        return store

    # ------------------------------------------------------------------------ packing
    def add(self, tokens: npt.ArrayLike) -> int:
        """Appends one document's (n_tokens, dim) token vectors; returns its index.

        Raises ValueError for a wrong shape, a NaN or infinity, or (float16 stores) a value
        beyond the float16 range.
        """
        x = np.asarray(tokens)
        index = len(self._offsets) - 1
        if x.ndim != 2 or x.shape[1] != self._dim:
            raise ValueError(
                f"document {index}: expected a 2-D (n_tokens, {self._dim}) array, "
                f"got shape {x.shape}"
            )
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(
                f"document {index}: token vectors must be floating point, got {x.dtype}"
            )
        n = int(x.shape[0])
        if n:
            if not np.isfinite(x).all():
                raise ValueError(f"document {index}: token vectors contain NaN or infinity")
            if self._dtype == np.float16 and float(np.abs(x).max()) > _FLOAT16_MAX:
                raise ValueError(
                    f"document {index}: a value exceeds the float16 range (±{_FLOAT16_MAX:g}); "
                    "normalise the vectors or use TokenStore(dim, dtype='float32')"
                )
            self._reserve(self._n_tokens + n)
            self._buf[self._n_tokens : self._n_tokens + n] = x
            self._n_tokens += n
        self._offsets.append(self._n_tokens)
        self._offsets_array = None
        return index

    def extend(self, documents: Iterable[npt.ArrayLike]) -> range:
        """Appends documents in order; returns the range of their indices."""
        first = len(self)
        for d in documents:
            self.add(d)
        return range(first, len(self))

    def _reserve(self, n_tokens: int) -> None:
        if n_tokens <= self._buf.shape[0]:
            return
        capacity = max(n_tokens, self._buf.shape[0] * 3 // 2, 256)
        buf = np.empty((capacity, self._dim), dtype=self._dtype)
        buf[: self._n_tokens] = self._buf[: self._n_tokens]
        self._buf = buf

    # ------------------------------------------------------------------------ views
    def __len__(self) -> int:
        return len(self._offsets) - 1

    @property
    def dim(self) -> int:
        """Dimensions of a token vector."""
        return self._dim

    @property
    def dtype(self) -> np.dtype:
        """Storage dtype (float16 or float32)."""
        return self._dtype

    @property
    def n_tokens(self) -> int:
        """Token vectors held, over all documents."""
        return self._n_tokens

    @property
    def tokens(self) -> np.ndarray:
        """The packed (n_tokens, dim) array (a view: valid until the next append)."""
        return self._buf[: self._n_tokens]

    @property
    def offsets(self) -> np.ndarray:
        """(len(self) + 1,) uint64 offsets: document i is ``tokens[offsets[i]:offsets[i + 1]]``."""
        if self._offsets_array is None:
            self._offsets_array = np.asarray(self._offsets, dtype=np.uint64)
        return self._offsets_array

    def document(self, index: int) -> np.ndarray:
        """The (n_tokens, dim) token vectors of document ``index`` (a view)."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"document {index} is out of range for a store of {n} documents")
        index %= n
        return self._buf[self._offsets[index] : self._offsets[index + 1]]

    @property
    def nbytes(self) -> int:
        """Bytes used by the token vectors and offsets (excluding spare capacity)."""
        return self._n_tokens * self._dim * self._dtype.itemsize + 8 * len(self._offsets)

    # ------------------------------------------------------------------------ scoring
    def scores(
        self,
        query: npt.ArrayLike,
        candidates: Sequence[int] | npt.ArrayLike | None = None,
        *,
        threads: int = 0,
    ) -> npt.NDArray[np.float32]:
        """MaxSim scores of ``query`` (m, dim) against ``candidates`` (default: all documents).

        Returns a float32 array aligned with ``candidates``. ``threads`` <= 0 uses every
        hardware thread; the scores do not depend on it.
        """
        q = np.ascontiguousarray(query, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self._dim:
            raise ValueError(
                f"query: expected a 2-D (n_query_tokens, {self._dim}) array, got shape {q.shape}"
            )
        cand = self._candidates(candidates)
        return _core.maxsim(q, self.tokens, self.offsets, cand, threads=int(threads))

    def _candidates(self, candidates: Sequence[int] | npt.ArrayLike | None) -> np.ndarray:
        n = len(self)
        if candidates is None:
            return np.arange(n, dtype=np.uint32)
        c = np.asarray(candidates)
        if c.size == 0:
            return np.empty(0, dtype=np.uint32)
        if c.ndim != 1 or not np.issubdtype(c.dtype, np.integer):
            raise ValueError(
                f"candidates must be a 1-D sequence of document indices, got {c.dtype} "
                f"with shape {c.shape}"
            )
        lo, hi = int(c.min()), int(c.max())
        if lo < 0 or hi >= n:
            bad = lo if lo < 0 else hi
            raise IndexError(f"candidate {bad} is out of range for a store of {n} documents")
        return np.ascontiguousarray(c, dtype=np.uint32)


def maxsim_scores(
    query_tokens: npt.ArrayLike,
    documents: TokenStore | Sequence[npt.ArrayLike],
    candidates: Sequence[int] | npt.ArrayLike | None = None,
    *,
    threads: int = 0,
) -> npt.NDArray[np.float32]:
    """Late-interaction (ColBERT MaxSim) scores of one query against documents.

    Args:
        query_tokens: (m, dim) query token vectors.
        documents: A :class:`TokenStore`, or a sequence of (n_i, dim) arrays. A sequence is
            packed into a temporary float32 store on every call (a copy); build a
            :class:`TokenStore` once to score many queries against the same documents.
        candidates: Indices of the documents to score (default: all of them).
        threads: Worker threads; <= 0 uses every hardware thread. Scores do not depend on it.

    Returns:
        float32 scores aligned with ``candidates``: for each document, the sum over query
        tokens of the largest dot product with the document's tokens (0 for a document with no
        tokens).
    """
    if isinstance(documents, TokenStore):
        store = documents
    else:
        q = np.asarray(query_tokens)
        dim = int(q.shape[1]) if q.ndim == 2 else None
        store = TokenStore.from_documents(documents, dim=dim, dtype=np.float32)
    return store.scores(query_tokens, candidates, threads=threads)
