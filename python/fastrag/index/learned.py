"""Learned sparse retrieval on the C++ inverted index: impact vectors, SPLADE and BM42.

* `ImpactIndex` stores sparse vectors (term ids with non-negative weights) and ranks documents
  by the dot product with a sparse query vector: exact top-k with block-max MaxScore, threads,
  filters, upserts, deletion and save/load, through the core's ``scoring="impact"`` mode.
* `SpladeIndex` encodes texts with a SPLADE model (`fastrag.SpladeEncoder`); queries are encoded
  by the model, or without it ("idf" / "ones": the query's tokens weighted by their idf or 1).
* `BM42Index` weighs each document word by the [CLS] attention of a `fastrag.TextEncoder`
  exported with attentions (Qdrant's BM42); query words weigh their idf.

Approximate search for large collections is static pruning: keep only the `doc_terms`
heaviest terms of each document when it is indexed (fewer postings, shorter lists) and/or the
`query_terms` heaviest terms of each query (fewer lists to merge). Both trade recall for speed;
without them every search is exact.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fastrag import _core
from fastrag._core import IndexFormatError
from fastrag.index.base import IdIndex, as_batch, check_int
from fastrag.index.results import DocId, SearchResults

if TYPE_CHECKING:
    from fastrag.encoders.models import SpladeEncoder, TextEncoder, TokenVectors

#: The core's vocabulary limit: term ids lie in [0, 2**30).
MAX_TERMS = 1 << 30
QUANTIZATIONS = (None, "uint8")
SPLADE_QUERY_MODES = ("model", "idf", "ones")

# A batch of sparse vectors as CSR: (indptr int64, term ids uint32, weights float32).
Csr = tuple[np.ndarray, np.ndarray, np.ndarray]


# ---------------------------------------------------------------------------- sparse input
def _is_number(x: object) -> bool:
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
        return all(_is_number(t) for t in terms[:1])
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


def _keep(csr: Csr, mask: np.ndarray) -> Csr:
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
    return _keep(csr, mask)


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


# ---------------------------------------------------------------------------- ImpactIndex
class ImpactIndex(IdIndex):
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
        if vocab_size is not None and (
            isinstance(vocab_size, bool)
            or not isinstance(vocab_size, (int, np.integer))
            or not 0 < vocab_size <= MAX_TERMS
        ):
            raise ValueError(f"vocab_size must be an int in 1..{MAX_TERMS} or None")
        if quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize must be None or 'uint8', got {quantize!r}")
        if max_weight is not None and not (math.isfinite(max_weight) and max_weight > 0):
            raise ValueError(f"max_weight must be a finite number > 0, got {max_weight!r}")
        self.vocab_size = None if vocab_size is None else int(vocab_size)
        self.quantize = quantize
        self._scale = None if max_weight is None else float(max_weight)
        self.doc_terms = _check_count(doc_terms, "doc_terms")

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
        elif isinstance(ids, str):
            raise TypeError("ids must be a list of ids, one per document, not a single string")
        self._add_csr(csr, ids)

    def _add_csr(self, csr: Csr, ids: Iterable[DocId] | None) -> None:
        with self._write_lock:
            new_ids = self._ids.new_ids(ids, len(csr[0]) - 1)
            if not new_ids:
                return
            self._upsert(new_ids, *self._prepare(csr))

    def _prepare(self, csr: Csr) -> Csr:
        """Document vectors as stored: pruned, quantized, without zero weights."""
        if self.doc_terms is not None:
            csr = prune_rows(_keep(csr, csr[2] > 0), self.doc_terms)
        if self.quantize == "uint8":
            csr = self._quantized(csr)
        return _keep(csr, csr[2] > 0)

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
        query_terms = _check_count(query_terms, "query_terms")
        if query_terms is not None:
            csr = prune_rows(sum_duplicates(csr), query_terms)
        return self._search_core(
            filter, *csr, k=int(k), threads=threads, algorithm=algorithm
        )

    # ------------------------------------------------------------------ statistics
    def document_frequencies(self) -> np.ndarray:
        """Live documents holding each term id, (n_terms,) uint32 (ids past the end: 0)."""
        return self._core.document_frequencies()

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
        """Saves to one file (written to a temporary file, then renamed into place)."""
        self._save(path, self._meta())

    @classmethod
    def _open(cls, path: str | os.PathLike[str], mmap: bool) -> tuple[Any, dict[str, Any]]:
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


def _check_count(n: object, name: str) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} must be a positive int or None, got {n!r}")
    return int(n)


def _text_list(items: Any, name: str) -> list[str]:
    if isinstance(items, str):
        return [items]
    out = list(items)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] must be str, got {type(t).__name__}")
    return out


def _empty_csr(n: int) -> Csr:
    return np.zeros(n + 1, dtype=np.int64), np.zeros(0, np.uint32), np.zeros(0, np.float32)


def _pairs_csr(pairs: list[tuple[np.ndarray, np.ndarray]]) -> Csr:
    lengths = np.fromiter((len(t) for t, _ in pairs), dtype=np.int64, count=len(pairs))
    indptr = np.zeros(len(pairs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    if not pairs or not indptr[-1]:
        return _empty_csr(len(pairs))
    terms = np.concatenate([np.asarray(t, dtype=np.uint32) for t, _ in pairs])
    weights = np.concatenate([np.asarray(w, dtype=np.float32) for _, w in pairs])
    return indptr, terms, weights


def _warn_empty(texts: list[str], empty: list[int], what: str) -> None:
    if empty:
        from fastrag.text import EmptyDocumentWarning

        warnings.warn(
            f"{len(empty)} of {len(texts)} documents have no {what} (e.g. index {empty[0]}); "
            "they are indexed but can never match",
            EmptyDocumentWarning,
            stacklevel=3,
        )


def _special_ids(tokenizer: Any) -> set[int]:
    return {i for i, tok in tokenizer.get_added_tokens_decoder().items() if tok.special}


# ---------------------------------------------------------------------------- SPLADE
class SpladeIndex(ImpactIndex):
    """SPLADE: documents encoded by a masked-LM model into term weights, scored by dot product.

    >>> index = SpladeIndex()                         # splade-tiny (the cognition package)
    >>> index.add(["first document", "second one"], ids=["a", "b"])
    >>> index.search("which document?", k=1)

    `add` and `search` take texts, or sparse vectors over the model's vocabulary as
    `ImpactIndex` does (e.g. from ``encoder.encode``). A blank text is an empty vector.

    Args:
        encoder: a `fastrag.SpladeEncoder`, or a model name for one (default "splade-tiny").
            Its fingerprint is saved with the index, and `load(path, encoder=...)` refuses
            another model.
        top_k: the heaviest terms kept per document (None: every term the model gives a
            weight). Static pruning: fewer postings, faster and approximate search.
        query_mode: how query texts become vectors: "model" (encoded by the model), "idf"
            (inference-free: the model's tokenizer, each distinct token weighted by its idf
            over the indexed documents) or "ones" (each distinct token weighted 1).
        quantize, max_weight: see `ImpactIndex` ("uint8" models an 8-bit index's precision).
        batch_size: encoder batch size.
    """

    _FORMAT = "fastrag.splade"

    def __init__(
        self,
        encoder: SpladeEncoder | str | os.PathLike[str] | None = None,
        *,
        top_k: int | None = None,
        query_mode: str = "model",
        quantize: str | None = None,
        max_weight: float | None = None,
        batch_size: int = 32,
    ) -> None:
        encoder = _splade_encoder(encoder)
        super().__init__(
            encoder.vocab_size, quantize=quantize, max_weight=max_weight, doc_terms=top_k
        )
        self.query_mode = _check_mode(query_mode)
        self.batch_size = check_int(batch_size, "batch_size")
        self._encoder: SpladeEncoder | None = encoder
        self._fingerprint: str | None = encoder.fingerprint

    @property
    def top_k(self) -> int | None:
        return self.doc_terms

    @property
    def encoder(self) -> SpladeEncoder | None:
        return self._encoder

    @property
    def fingerprint(self) -> str | None:
        """The fingerprint of the model whose vectors this index holds."""
        return self._fingerprint

    def _attach(self, encoder: SpladeEncoder | str | os.PathLike[str]) -> None:
        encoder = _splade_encoder(encoder)
        if self._fingerprint is not None and encoder.fingerprint != self._fingerprint:
            raise ValueError(
                f"this index was built with SPLADE model {self._fingerprint}, not "
                f"{encoder.fingerprint}: term weights of another model are not comparable; "
                "re-index, or load the index with the model it was built with"
            )
        if self.vocab_size is not None and encoder.vocab_size != self.vocab_size:
            raise ValueError(
                f"the model's vocabulary has {encoder.vocab_size} terms, the index "
                f"{self.vocab_size}"
            )
        self._encoder, self._fingerprint = encoder, encoder.fingerprint

    def _need_encoder(self) -> SpladeEncoder:
        if self._encoder is None:
            raise TypeError(
                "this index has no SPLADE encoder to encode texts (load it with encoder=...); "
                "pass sparse vectors"
            )
        return self._encoder

    # ------------------------------------------------------------------ encoding
    def encode_documents(self, texts: Sequence[str] | str) -> list[tuple[np.ndarray, np.ndarray]]:
        """(term ids, weights) of each text as the model gives them, `top_k` terms at most;
        blank texts give empty vectors."""
        texts = _text_list(texts, "texts")
        return self._encode(texts, self.top_k)

    def _encode(
        self, texts: list[str], top_k: int | None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        encoder = self._need_encoder()
        empty = (np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32))
        out = [empty] * len(texts)
        kept = [i for i, t in enumerate(texts) if t.strip()]
        if kept:
            vectors = encoder.encode(
                [texts[i] for i in kept], top_k=top_k, batch_size=self.batch_size
            )
            for i, v in zip(kept, vectors, strict=True):
                out[i] = v
        return out

    def encode_queries(
        self, queries: Sequence[str] | str, query_mode: str | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(term ids, weights) of each query text in `query_mode` (default the index's)."""
        queries = _text_list(queries, "queries")
        mode = self.query_mode if query_mode is None else _check_mode(query_mode)
        if mode == "model":
            return self._encode(queries, None)
        tokenizer = self._need_encoder().model.tokenizer
        special = _special_ids(tokenizer)
        out: list[tuple[np.ndarray, np.ndarray]] = []
        encodings = tokenizer.encode_batch(queries, add_special_tokens=False) if queries else []
        for enc in encodings:
            terms = np.array(sorted(set(enc.ids) - special), dtype=np.int64)
            terms = terms[terms < self._vocab_limit]
            ones = np.ones(len(terms), dtype=np.float32)
            weights = self.idf(terms) if mode == "idf" else ones
            out.append((terms.astype(np.uint32), weights))
        return out

    # ------------------------------------------------------------------ building / searching
    def add(self, docs: Any, ids: Iterable[DocId] | DocId | None = None) -> None:
        """Adds texts (encoded by the model) or sparse vectors; see `ImpactIndex.add`."""
        if is_sparse_input(docs):
            super().add(docs, ids)
            return
        docs, ids = as_batch(docs, ids)
        texts = _text_list(docs, "documents")
        self._ids.new_ids(ids, len(texts))  # check the ids before the (slow) encoding
        vectors = self.encode_documents(texts)
        empty = [i for i, t in enumerate(texts) if t.strip() and not len(vectors[i][0])]
        _warn_empty(texts, empty, "SPLADE terms")
        self._add_csr(_pairs_csr(vectors), ids)

    def search(  # type: ignore[override]
        self,
        queries: Any,
        k: int = 10,
        *,
        query_mode: str | None = None,
        threads: int = 0,
        filter: Iterable[DocId] | DocId | None = None,
        algorithm: str = "auto",
        query_terms: int | None = None,
    ) -> SearchResults:
        """Top-k documents for query texts (encoded in `query_mode`, default the index's) or
        sparse query vectors; the other options are `ImpactIndex.search`'s."""
        if is_sparse_input(queries):
            return super().search(
                queries, k, threads=threads, filter=filter, algorithm=algorithm,
                query_terms=query_terms,
            )
        return self._search_encoded(
            k,
            lambda: _pairs_csr(self.encode_queries(queries, query_mode)),
            threads=threads, filter=filter, algorithm=algorithm, query_terms=query_terms,
        )

    def __repr__(self) -> str:
        return (
            f"SpladeIndex(model={self._fingerprint!r}, top_k={self.top_k}, "
            f"query_mode={self.query_mode!r}, quantize={self.quantize!r}, docs={len(self)})"
        )

    # ------------------------------------------------------------------ persistence
    def _meta(self) -> dict[str, Any]:
        return {
            **super()._meta(),
            "encoder": self._fingerprint,
            "query_mode": self.query_mode,
            "batch_size": self.batch_size,
        }

    @classmethod
    def load(  # type: ignore[override]
        cls,
        path: str | os.PathLike[str],
        *,
        encoder: SpladeEncoder | str | os.PathLike[str] | None = None,
        mmap: bool = False,
    ) -> SpladeIndex:
        """Loads a saved index. `encoder` (needed to search with texts) must be the model the
        index was built with (same fingerprint), else ValueError."""
        index, meta = cls._open(path, mmap)
        fp = meta.get("encoder")
        mode = meta.get("query_mode", "model")
        if not isinstance(fp, str) or mode not in SPLADE_QUERY_MODES:
            raise IndexFormatError(f"{path} has invalid SPLADE settings")
        index.query_mode = mode
        index._restore_encoder(meta, fp, 32)
        if encoder is not None:
            index._attach(encoder)
        return index


def _check_mode(mode: object) -> str:
    if mode not in SPLADE_QUERY_MODES:
        raise ValueError(f"query_mode must be one of {', '.join(SPLADE_QUERY_MODES)}, got {mode!r}")
    return str(mode)


def _splade_encoder(encoder: Any) -> SpladeEncoder:
    from fastrag.encoders.models import SpladeEncoder

    if encoder is None:
        return SpladeEncoder()
    if isinstance(encoder, (str, os.PathLike)):
        return SpladeEncoder(encoder)
    if not isinstance(encoder, SpladeEncoder):
        raise TypeError(f"encoder must be a SpladeEncoder or a model name, got {encoder!r}")
    return encoder


# ---------------------------------------------------------------------------- BM42
class BM42Index(ImpactIndex):
    """BM42 (Qdrant): BM25's term frequency replaced by a transformer's attention.

    A document word weighs the attention that the [CLS] token pays to it in the last layer
    (averaged over heads; `TextEncoder(attentions=True).token_vectors`): WordPiece continuation
    pieces ("##...") are merged into their word with their attention summed; special tokens,
    stopwords and punctuation-only words are dropped; words are lowercased and stemmed; a word
    that occurs twice keeps its largest weight. A query is tokenized the same way (no model
    run); each distinct word weighs its idf over the indexed documents,
    ln((N - df + 0.5) / (df + 0.5) + 1), computed at query time.

    >>> index = BM42Index()                  # all-MiniLM-L6-v2 with attentions
    >>> index.add(["The cat sat.", "Dogs bark."], ids=["a", "b"])
    >>> index.search("cats", k=1)

    Args:
        encoder: a `fastrag.TextEncoder` made with ``attentions=True`` (a WordPiece model), or a
            model name for one (default "default": all-MiniLM-L6-v2).
        stopwords: "english" (the English analyzer's list), a list of words, or None.
        stemmer: a PyStemmer algorithm (default "english", as the English analyzer) or None.
        alpha: None (the summed attention, as above) or fastembed's rescoring: each weight
            becomes log(1 + w) ** alpha (fastembed's default alpha is 0.5).
        quantize, max_weight: see `ImpactIndex`.
        batch_size: encoder batch size.
    """

    _FORMAT = "fastrag.bm42"

    def __init__(
        self,
        encoder: TextEncoder | str | os.PathLike[str] | None = None,
        *,
        stopwords: str | Sequence[str] | None = "english",
        stemmer: str | None = "english",
        alpha: float | None = None,
        quantize: str | None = None,
        max_weight: float | None = None,
        batch_size: int = 16,
    ) -> None:
        super().__init__(None, quantize=quantize, max_weight=max_weight)
        self._set_words(stopwords, stemmer, alpha)
        self.batch_size = check_int(batch_size, "batch_size")
        self._vocab: dict[str, int] = {}
        self._encoder: TextEncoder | None = None
        self._fingerprint: str | None = None
        self._attach(_bm42_encoder(encoder))

    def _set_words(self, stopwords: Any, stemmer: str | None, alpha: float | None) -> None:
        from fastrag.text import EnglishAnalyzer

        # the English analyzer validates both and knows the built-in stopword list
        analyzer = EnglishAnalyzer(stopwords=stopwords, stemmer=stemmer)
        self.stopwords = analyzer.stopwords
        self._stopword_set = analyzer.stopword_set
        self.stemmer = analyzer.stemmer
        if alpha is not None and not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha must be a finite number > 0 or None, got {alpha!r}")
        self.alpha = None if alpha is None else float(alpha)

    def _attach(self, encoder: TextEncoder) -> None:
        if "cls_attention" not in encoder.model.output_names:
            raise ValueError("BM42 needs a TextEncoder made with attentions=True")
        if self._fingerprint is not None and encoder.fingerprint != self._fingerprint:
            raise ValueError(
                f"this index was built with encoder {self._fingerprint}, not "
                f"{encoder.fingerprint}: its attentions give other weights; re-index, or load "
                "the index with the encoder it was built with"
            )
        tokenizer = encoder.model.tokenizer
        vocab = tokenizer.get_vocab()
        tokens = [""] * (max(vocab.values()) + 1)
        for tok, i in vocab.items():
            tokens[i] = tok
        self._tokens, self._special = tokens, _special_ids(tokenizer)
        self._encoder, self._fingerprint = encoder, encoder.fingerprint

    @property
    def encoder(self) -> TextEncoder | None:
        return self._encoder

    @property
    def fingerprint(self) -> str | None:
        return self._fingerprint

    @property
    def vocabulary(self) -> dict[str, int]:
        """Word -> term id (a copy)."""
        return dict(self._vocab)

    # ------------------------------------------------------------------ words
    def _merge(
        self, ids: np.ndarray, offsets: np.ndarray | None, prompt: int
    ) -> list[tuple[str, list[int]]]:
        """Words of a token sequence: (word, positions of its pieces), special tokens and the
        tokens of a prompt (those starting before character `prompt`) left out."""
        words: list[tuple[str, list[int]]] = []
        acc, pos = "", []
        starts = offsets[:, 0].tolist() if offsets is not None and prompt > 0 else None
        for j, tid in enumerate(ids.tolist()):
            if tid in self._special or (starts is not None and starts[j] < prompt):
                continue
            tok = self._tokens[tid] if 0 <= tid < len(self._tokens) else ""
            if tok.startswith("##"):
                acc += tok[2:]
                pos.append(j)
                continue
            if acc:
                words.append((acc, pos))
            acc, pos = tok, [j]
        if acc:
            words.append((acc, pos))
        return words

    def _clean(self, words: list[str]) -> tuple[list[int], list[str]]:
        """Positions and stems of the words kept (not stopwords, not punctuation only)."""
        keep, kept = [], []
        for i, w in enumerate(words):
            w = w.lower()
            if w in self._stopword_set or not any(c.isalnum() for c in w):
                continue
            keep.append(i)
            kept.append(w)
        if self.stemmer is not None and kept:
            import Stemmer

            kept = Stemmer.Stemmer(self.stemmer).stemWords(kept)
        return keep, kept

    def document_words(self, tokens: TokenVectors) -> dict[str, float]:
        """The word weights of one document's token output (before any `alpha` rescoring)."""
        if tokens.attention is None:
            raise ValueError("BM42 needs token attentions: a TextEncoder with attentions=True")
        merged = self._merge(tokens.ids, tokens.offsets, tokens.prompt_chars)
        keep, stems = self._clean([w for w, _ in merged])
        att = tokens.attention.astype(np.float64)
        out: dict[str, float] = {}
        for i, stem in zip(keep, stems, strict=True):
            w = float(att[merged[i][1]].sum())
            if w > out.get(stem, -1.0):
                out[stem] = w
        return out

    def query_words(self, query: str) -> list[str]:
        """The distinct words (stems) of a query, in order of first occurrence."""
        if self._encoder is None:
            raise TypeError("this index has no encoder to tokenize queries (load it with "
                            "encoder=...)")
        enc = self._encoder.model.tokenizer.encode(query)
        merged = self._merge(np.asarray(enc.ids), None, 0)  # type: ignore[arg-type]
        _, stems = self._clean([w for w, _ in merged])
        return list(dict.fromkeys(stems))

    # ------------------------------------------------------------------ building / searching
    def add(self, docs: Sequence[str] | str, ids: Iterable[DocId] | DocId | None = None) -> None:
        """Adds texts; ids as in `BM25.add` (upsert, defaults). Blank texts are indexed as
        empty documents (they never match)."""
        docs, ids = as_batch(docs, ids)
        texts = _text_list(docs, "documents")
        self._ids.new_ids(ids, len(texts))
        if self._encoder is None:
            raise TypeError("this index has no encoder (load it with encoder=...)")
        words: list[dict[str, float]] = [{} for _ in texts]
        kept = [i for i, t in enumerate(texts) if t.strip()]
        if kept:
            outputs = self._encoder.token_vectors(
                [texts[i] for i in kept], kind="document", batch_size=self.batch_size
            )
            for i, tv in zip(kept, outputs, strict=True):
                words[i] = self.document_words(tv)
        _warn_empty(texts, [i for i in kept if not words[i]], "words")
        with self._write_lock:  # the vocabulary grows with the words of new documents
            vocab = self._vocab
            pairs = []
            for doc in words:
                terms = np.fromiter(
                    (vocab.setdefault(w, len(vocab)) for w in doc), dtype=np.uint32, count=len(doc)
                )
                weights = np.fromiter(doc.values(), dtype=np.float64, count=len(doc))
                if self.alpha is not None:
                    weights = np.log1p(weights) ** self.alpha
                pairs.append((terms, weights.astype(np.float32)))
        self._add_csr(_pairs_csr(pairs), ids)

    def encode_queries(self, queries: Sequence[str] | str) -> list[tuple[np.ndarray, np.ndarray]]:
        """(term ids, idf weights) of each query; words no document holds are left out."""
        queries = _text_list(queries, "queries")
        out = []
        for q in queries:
            ids = [self._vocab.get(w) for w in self.query_words(q)] if q.strip() else []
            terms = np.array([i for i in ids if i is not None], dtype=np.uint32)
            out.append((terms, self.idf(terms)))
        return out

    def search(  # type: ignore[override]
        self,
        queries: Sequence[str] | str,
        k: int = 10,
        *,
        threads: int = 0,
        filter: Iterable[DocId] | DocId | None = None,
        algorithm: str = "auto",
        query_terms: int | None = None,
    ) -> SearchResults:
        """Top-k documents for query texts; options as in `ImpactIndex.search`."""
        return self._search_encoded(
            k,
            lambda: _pairs_csr(self.encode_queries(queries)),
            threads=threads, filter=filter, algorithm=algorithm, query_terms=query_terms,
        )

    def __repr__(self) -> str:
        return (
            f"BM42Index(encoder={self._fingerprint!r}, alpha={self.alpha}, docs={len(self)}, "
            f"words={len(self._vocab)})"
        )

    # ------------------------------------------------------------------ persistence
    def _meta(self) -> dict[str, Any]:
        words = [""] * len(self._vocab)
        for w, i in list(self._vocab.items()):
            words[i] = w
        return {
            **super()._meta(),
            "encoder": self._fingerprint,
            "stopwords": self.stopwords,
            "stemmer": self.stemmer,
            "alpha": self.alpha,
            "batch_size": self.batch_size,
            "words": words,
        }

    @classmethod
    def load(  # type: ignore[override]
        cls,
        path: str | os.PathLike[str],
        *,
        encoder: TextEncoder | str | os.PathLike[str] | None = None,
        mmap: bool = False,
    ) -> BM42Index:
        """Loads a saved index. `encoder` (needed to add documents and to search) must be the
        one the index was built with (same fingerprint), else ValueError."""
        index, meta = cls._open(path, mmap)
        words, fp = meta.get("words"), meta.get("encoder")
        if (
            not isinstance(words, list)
            or len(words) < index._core.stats()["n_terms"]
            or not isinstance(fp, str)
        ):
            raise IndexFormatError(f"{path} has a vocabulary that does not match its postings")
        try:
            index._set_words(meta.get("stopwords"), meta.get("stemmer"), meta.get("alpha"))
        except (TypeError, ValueError) as e:
            raise IndexFormatError(f"{path} has invalid BM42 settings ({e})") from e
        index._vocab = {w: i for i, w in enumerate(words)}
        index._restore_encoder(meta, fp, 16)
        if encoder is not None:
            index._attach(_bm42_encoder(encoder))
        return index


def _bm42_encoder(encoder: Any) -> TextEncoder:
    from fastrag.encoders.models import TextEncoder

    if encoder is None:
        return TextEncoder("default", attentions=True)
    if isinstance(encoder, (str, os.PathLike)):
        return TextEncoder(encoder, attentions=True)
    if not isinstance(encoder, TextEncoder):
        raise TypeError(f"encoder must be a TextEncoder or a model name, got {encoder!r}")
    return encoder
