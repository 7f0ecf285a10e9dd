"""Impact scoring on the C++ inverted index: sparse vectors (term ids with non-negative
weights) ranked by the dot product with a sparse query vector.

Exact top-k with block-max MaxScore, threads, filters, upserts, deletion and save/load,
through the core's ``scoring="impact"`` mode. Approximate search for large collections is
static pruning: keep only the `doc_terms` heaviest terms of each document when it is indexed
(fewer postings, shorter lists) and/or the `query_terms` heaviest terms of each query (fewer
lists to merge). Both trade recall for speed; without them every search is exact.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np

from fastrag import _core
from fastrag._core import IndexFormatError
from fastrag.index.base import InvertedIndex, batch_ids
from fastrag.index.csr import (
    MAX_TERMS,
    Csr,
    check_count,
    check_vocab_size,
    idf_of,
    keep_rows_where,
    prune_rows,
    sum_duplicates,
    to_csr,
)
from fastrag.index.results import DocId, SearchResults

QUANTIZATIONS = (None, "uint8")
_Impact = TypeVar("_Impact", bound="ImpactIndex")  # _open builds the subclass it is called on


class ImpactIndex(InvertedIndex):
    """Sparse vectors (term id -> non-negative weight) ranked by dot product, exact top-k.

    >>> index = ImpactIndex(vocab_size=30522)
    >>> index.add([(np.array([3, 17]), np.array([0.5, 1.2]))], ids=["a"])
    >>> index.search((np.array([17]), np.array([2.0])), k=10)[0]
    [Hit(id='a', score=2.4...)]

    Vectors are (term_ids, weights) pairs of 1-D arrays, {term_id: weight} dicts, or a
    scipy.sparse matrix with one row per vector. A term repeated in one document keeps its
    largest weight (the core's rule; a scipy matrix has its duplicates summed first); in a query
    repeated terms add up. Weights of 0 are dropped. An empty document vector is indexed (it
    counts in ``len()``, can be filtered and deleted) but never matches; a query with no terms,
    or none that any document holds, returns no hits.

    Args:
        vocab_size: term ids must lie in [0, vocab_size) (None: any id the core takes, below
            2**30). Ids outside raise ValueError, in documents and in queries.
        quantize: None (float32 weights) or "uint8": each document weight is rounded to one of
            256 levels (0 .. 255) of a scale, `max_weight` or else the largest weight of the
            first batch added; larger weights added later are clipped to the top level (with a
            warning) and weights that round to 0 are dropped. The C++ core still stores the
            rounded weights as float32, so this models the precision of an 8-bit index (for
            comparing quality), not its memory.
        max_weight: the uint8 scale (default: the first batch's largest weight).
        doc_terms: static pruning: keep only the `doc_terms` heaviest terms of each document
            when it is added (None: all). Makes search approximate (fewer, shorter postings).
    """

    _FORMAT = "fastrag.impact"
    # A text subclass's model and its fingerprint (set by those subclasses and
    # `_restore_encoder`); plain vector indexes have neither.
    _encoder: object | None
    _fingerprint: str | None

    def __init__(
        self,
        vocab_size: int | None = None,
        *,
        quantize: str | None = None,
        max_weight: float | None = None,
        doc_terms: int | None = None,
    ) -> None:
        self._configure(vocab_size, quantize, max_weight, doc_terms)
        self._core = _core.SparseIndex(scoring="impact")
        self._init_ids()

    def _configure(
        self,
        vocab_size: int | None,
        quantize: str | None,
        max_weight: float | None,
        doc_terms: int | None,
    ) -> None:
        if quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize must be None or 'uint8', got {quantize!r}")
        if max_weight is not None and not (math.isfinite(max_weight) and max_weight > 0):
            raise ValueError(f"max_weight must be a finite number > 0, got {max_weight!r}")
        self.vocab_size = check_vocab_size(vocab_size)
        self.quantize = quantize
        self._scale = None if max_weight is None else float(max_weight)
        self.doc_terms = check_count(doc_terms, "doc_terms")

    @property
    def _vocab_limit(self) -> int:
        return MAX_TERMS if self.vocab_size is None else self.vocab_size

    @property
    def scale(self) -> float | None:
        """The uint8 scale: the weight of the top level (None until set, or unquantized)."""
        return self._scale if self.quantize else None

    # ------------------------------------------------------------------ building
    def add(self, vectors: Any, ids: Iterable[DocId] | DocId | None = None) -> None:
        """Adds document vectors (one, a sequence, or a scipy.sparse matrix).

        Ids default to integers above every integer id used so far; an id already present is
        replaced (upsert); the same id twice in one call is an error. Bad vectors (unknown or
        negative term ids, negative / NaN / infinite weights) raise ValueError and add nothing.
        """
        csr, single = to_csr(vectors, self._vocab_limit, "documents")
        if single and isinstance(ids, (str, int)):
            ids = [ids]
        self._add_csr(csr, batch_ids(ids))

    def _add_csr(self, csr: Csr, ids: Iterable[DocId] | None) -> None:
        with self._write_lock:
            new_ids = self._ids.new_ids(ids, len(csr[0]) - 1)
            if not new_ids:
                return
            self._upsert(new_ids, *self._prepare(csr))

    def _prepare(self, csr: Csr) -> Csr:
        """Document vectors as stored: pruned, quantized, without zero weights."""
        if self.doc_terms is not None:
            csr = prune_rows(keep_rows_where(csr, csr[2] > 0), self.doc_terms)
        if self.quantize == "uint8":
            csr = self._quantized(csr)
        return keep_rows_where(csr, csr[2] > 0)

    def _quantized(self, csr: Csr) -> Csr:
        indptr, terms, weights = csr
        if self._scale is None:
            top = float(weights.max()) if weights.size else 0.0
            if top <= 0:
                return csr  # nothing but zeros: no scale to learn yet
            self._scale = top
        step = self._scale / 255.0
        levels = np.rint(weights.astype(np.float64) / step)
        over = int(np.count_nonzero(levels > 255))
        if over:
            warnings.warn(
                f"{over} weights exceed the uint8 scale {self._scale:g} (the first batch's "
                "largest weight, or max_weight) and were clipped; pass a larger max_weight",
                UserWarning,
                stacklevel=5,
            )
            np.minimum(levels, 255, out=levels)
        return indptr, terms, (levels * step).astype(np.float32)

    # ------------------------------------------------------------------ searching
    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        threads: int = 0,
        filter: Iterable[DocId] | DocId | None = None,
        algorithm: str = "auto",
        query_terms: int | None = None,
    ) -> SearchResults:
        """Top-k documents by dot product for one query vector or a batch.

        Args:
            k: results per query; fewer when fewer documents share a term with the query.
            threads: worker threads for a batch (0 = all cores).
            filter: only these document ids may be returned (exact, applied inside top-k).
            algorithm: "auto" (the default: the core accumulates for impact scores),
                "exhaustive" (term-at-a-time accumulation) or "maxscore" (block-max MaxScore,
                document-at-a-time with block skipping). All are exact and return the same
                bits. BM25's saturated term frequencies give low list maxima that MaxScore
                prunes with; learned weights (SPLADE-like 20-term queries, and 2 to 12-term
                queries with idf weights, on a generated 1M-document corpus) left it little to
                skip: it was 1.2x to 18x slower than accumulation.
            query_terms: static pruning: use only the `query_terms` heaviest terms of each
                query (after summing repeats). Approximate; None = all terms (exact).
        """
        return self._search_encoded(
            k,
            lambda: to_csr(queries, self._vocab_limit, "queries")[0],
            threads=threads, filter=filter, algorithm=algorithm, query_terms=query_terms,
        )

    def _search_encoded(
        self, k: object, encode: Callable[[], Csr], **options: Any
    ) -> SearchResults:
        """Checks k, then searches the CSR queries that encode() gives (`_search_csr`)."""
        k = self._check_k(k)
        return self._search_csr(encode(), k, **options)

    def _search_csr(
        self,
        csr: Csr,
        k: int,
        *,
        threads: int,
        filter: Iterable[DocId] | DocId | None,
        algorithm: str,
        query_terms: int | None,
    ) -> SearchResults:
        query_terms = check_count(query_terms, "query_terms")
        if query_terms is not None:
            csr = prune_rows(sum_duplicates(csr), query_terms)
        return self._search_core(
            filter, *csr, k=int(k), threads=threads, algorithm=algorithm
        )

    # ------------------------------------------------------------------ statistics
    def document_frequencies(self) -> np.ndarray:
        """Live documents holding each term id, (n_terms,) uint32 (ids past the end: 0)."""
        return np.asarray(self._core.document_frequencies())

    def idf(self, term_ids: np.ndarray) -> np.ndarray:
        """ln((N - df + 0.5) / (df + 0.5) + 1) of term ids over the live documents (float32)."""
        term_ids = np.asarray(term_ids, dtype=np.int64)
        df_all = self.document_frequencies()
        df = np.zeros(len(term_ids), dtype=np.int64)
        inside = term_ids < len(df_all)
        df[inside] = df_all[term_ids[inside]]
        return idf_of(df, len(self)).astype(np.float32)

    def stats(self) -> dict[str, Any]:
        """Counts, the average number of terms per document and the bytes of the core."""
        return dict(self._core.stats())

    def __repr__(self) -> str:
        extra = f", quantize={self.quantize!r}" if self.quantize else ""
        extra += f", doc_terms={self.doc_terms}" if self.doc_terms else ""
        return f"{type(self).__name__}(vocab_size={self.vocab_size}{extra}, docs={len(self)})"

    # ------------------------------------------------------------------ persistence
    def _meta(self) -> dict[str, Any]:
        return {
            "vocab_size": self.vocab_size,
            "quantize": self.quantize,
            "scale": self._scale,
            "doc_terms": self.doc_terms,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Saves to one file (written to a temporary file, then renamed into place; an error
        leaves no temporary file and an existing file unchanged)."""
        self._save(path, self._meta())

    @classmethod
    def _open(
        cls: type[_Impact], path: str | os.PathLike[str], mmap: bool
    ) -> tuple[_Impact, dict[str, Any]]:
        core, meta, ids = cls._load_core(_core.SparseIndex, path, mmap, "n_docs")
        if core.scoring != "impact":
            raise IndexFormatError(f"{path} holds a BM25 index, not impact scores")
        index = cls.__new__(cls)
        try:
            index._configure(
                meta.get("vocab_size"), meta.get("quantize"), meta.get("scale"),
                meta.get("doc_terms"),
            )
        except (TypeError, ValueError) as e:
            raise IndexFormatError(f"{path} has invalid settings ({e})") from e
        if index.vocab_size is not None and core.stats()["n_terms"] > index.vocab_size:
            raise IndexFormatError(f"{path} holds term ids past its vocabulary size")
        index._core = core
        index._init_ids(ids)
        return index, meta

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = False) -> ImpactIndex:
        """Loads a saved index; with mmap=True the postings stay in the file, paged in on
        use (a modification first copies them into memory)."""
        return cls._open(path, mmap)[0]

    def _restore_encoder(self, meta: dict[str, Any], fingerprint: str, batch_size: int) -> None:
        """A loaded text index's saved batch size (batch_size if missing or invalid) and model
        fingerprint, with no encoder attached yet."""
        bs = meta.get("batch_size", batch_size)
        self.batch_size = bs if isinstance(bs, int) and bs > 0 else batch_size
        self._fingerprint, self._encoder = fingerprint, None
