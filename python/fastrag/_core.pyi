"""Type stubs of fastrag's private native module."""

from typing import Literal

import numpy as np
import numpy.typing as npt

class IndexFormatError(ValueError):
    """A file that is not a fastrag index, of another kind or version, truncated or corrupted."""

class SparseIndex:
    def __init__(
        self,
        *,
        scoring: Literal["bm25", "impact"] = "bm25",
        method: str = "lucene",
        k1: float = 1.5,
        b: float = 0.75,
        delta: float = 0.5,
        impact_cache: bool | Literal["auto"] = "auto",
    ) -> None:
        """impact_cache (BM25): True keeps one float impact per posting in memory beside
        the compressed postings, and on an index of at most 2M postings (any scoring) its
        document ids decoded; False computes impacts from term frequencies and document
        lengths when blocks are decoded (4 to 8 bytes per posting less); "auto" keeps the
        cache while the index holds at most 2**24 postings. Results are the same bits
        whichever is used."""
    def add(
        self,
        indptr: npt.NDArray[np.int64],
        terms: npt.NDArray[np.uint32],
        values: npt.NDArray[np.float32] | None = None,
    ) -> int: ...
    def remove(self, ids: npt.NDArray[np.uint32]) -> int: ...
    def compact(
        self, *, reorder: bool = False, iterations: int = 20, min_size: int = 32, threads: int = 0
    ) -> npt.NDArray[np.int64]: ...
    def search(
        self,
        indptr: npt.NDArray[np.int64],
        terms: npt.NDArray[np.uint32],
        weights: npt.NDArray[np.float32] | None = None,
        *,
        k: int = 10,
        threads: int = 1,
        allow: npt.NDArray[np.uint64] | None = None,
        algorithm: Literal["auto", "exhaustive", "maxscore"] = "auto",
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """(n_queries, k) ids (-1 padded) and scores (-inf padded). A negative k raises
        ValueError, and so does a k past the index whose padding would exceed 2**24 cells;
        threads <= 0: all hardware threads (huge counts are clamped)."""
    def document_frequencies(self) -> npt.NDArray[np.uint32]: ...
    def set_global_stats(
        self, n_docs: int, total_len: float, df: npt.NDArray[np.uint32]
    ) -> None:
        """Scores with a whole sharded collection's statistics: its live documents, their
        summed lengths, and the document frequency of each local term (BM25 only)."""
    def clear_global_stats(self) -> None: ...
    @property
    def has_global_stats(self) -> bool: ...
    def is_live(self, id: int) -> bool: ...
    def stats(self) -> dict[str, int | float]: ...
    @property
    def scoring(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def impact_cache(self) -> bool:
        """Whether the cache is held now (the policy applied to the index's size)."""
    @property
    def impact_cache_policy(self) -> bool | Literal["auto"]: ...
    def set_impact_cache(self, policy: bool | Literal["auto"]) -> None: ...
    @property
    def k1(self) -> float: ...
    @property
    def b(self) -> float: ...
    @property
    def delta(self) -> float: ...
    def save(self, path: str, extra: bytes = b"") -> None: ...
    @staticmethod
    def load(
        path: str, *, mmap: bool = False, impact_cache: bool | Literal["auto"] = "auto"
    ) -> tuple[SparseIndex, bytes]: ...

class ApproxSparseIndex:
    def __init__(
        self,
        indptr: npt.NDArray[np.int64],
        terms: npt.NDArray[np.uint32],
        weights: npt.NDArray[np.float32],
        *,
        list_size: int = 0,
        summary_energy: float = 1.0,
        doc_cut: int = 12,
        cluster_size: int = 16,
        quantize: bool = True,
        seed: int = 0,
        threads: int = 0,
    ) -> None: ...
    def search(
        self,
        indptr: npt.NDArray[np.int64],
        terms: npt.NDArray[np.uint32],
        weights: npt.NDArray[np.float32],
        *,
        k: int = 10,
        query_cut: int = 0,
        heap_factor: float = 1.0,
        threads: int = 1,
        allow: npt.NDArray[np.uint64] | None = None,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]: ...
    def save(self, path: str, extra: bytes = b"") -> None: ...
    @staticmethod
    def load(path: str) -> tuple[ApproxSparseIndex, bytes]: ...
    def params(self) -> dict[str, int | float | bool]: ...
    def stats(self) -> dict[str, int]: ...

class HnswIndex:
    def __init__(
        self,
        dim: int,
        *,
        metric: Literal["cosine", "ip", "l2"] = "cosine",
        storage: Literal["float32", "int8", "float16", "int4"] = "float32",
        keep_float: bool = False,
        M: int = 16,
        ef_construction: int = 200,
        seed: int = 100,
    ) -> None: ...
    def add(self, vectors: npt.NDArray[np.float32], *, threads: int = 0) -> int: ...
    def replace(
        self, ids: npt.NDArray[np.uint32], vectors: npt.NDArray[np.float32], *, threads: int = 0
    ) -> None: ...
    def remove(self, ids: npt.NDArray[np.uint32]) -> int: ...
    def compact(self, *, threads: int = 0) -> npt.NDArray[np.int64]: ...
    def search(
        self,
        queries: npt.NDArray[np.float32],
        *,
        k: int = 10,
        ef: int = 64,
        threads: int = 1,
        exact: bool = False,
        dims: int = 0,
        rescore: int = 0,
        allow: npt.NDArray[np.uint64] | None = None,
        exact_below: int = 0,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """(n, k) ids (-1 padded) and scores (-inf padded). Negative sizes and ef 0 raise
        ValueError; ef and rescore past the index's size are clamped to it; a k past the
        index whose padding would exceed 2**24 cells raises ValueError; threads <= 0: all
        hardware threads (huge counts are clamped)."""
    def get_vector(self, id: int, /) -> npt.NDArray[np.float32]: ...
    def links(self, id: int, level: int = 0) -> npt.NDArray[np.uint32]: ...
    def is_live(self, id: int) -> bool: ...
    def stats(self) -> dict[str, int | str]:
        """n_vectors, n_live, memory_bytes (the arrays' contents), allocated_bytes (with spare
        capacity), capacity (rows allocated), kernels, and visited: how walks mark the nodes
        they visited, "bitset" (up to 2^21 vectors) or "hash" (a hash table, past that)."""
    @property
    def dim(self) -> int: ...
    @property
    def metric(self) -> str: ...
    @property
    def storage(self) -> str: ...
    @property
    def keep_float(self) -> bool: ...
    @property
    def M(self) -> int: ...
    @property
    def ef_construction(self) -> int: ...
    def save(self, path: str, extra: bytes = b"") -> None: ...
    @staticmethod
    def load(path: str, *, mmap: bool = False) -> tuple[HnswIndex, bytes]: ...

def maxsim(
    query: npt.NDArray[np.float32],
    tokens: npt.NDArray[np.float32] | npt.NDArray[np.float16],
    offsets: npt.NDArray[np.uint64],
    candidates: npt.NDArray[np.uint32],
    *,
    threads: int = 0,
) -> npt.NDArray[np.float32]:
    """Late-interaction (ColBERT MaxSim) scores of `query` (m, dim) against the candidate
    documents of a packed token store: for each candidate, the sum over query tokens of the
    largest dot product with that document's tokens ``tokens[offsets[c]:offsets[c + 1]]``.
    A document with no tokens scores 0. threads <= 0: all hardware threads."""

def span_mean_pool(
    tokens: npt.NDArray[np.float32] | npt.NDArray[np.float16],
    spans: npt.NDArray[np.int64],
    *,
    threads: int = 0,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Means of one document's token vectors (n_tokens, dim) over [start, end) spans
    (n_spans, 2) -> (pooled (n_spans, dim), valid (n_spans,)). Ends past the document are
    clipped; spans empty after clipping get a zero row and valid False; a negative start or
    end < start raises ValueError. threads <= 0: all hardware threads."""

def span_mean_pool_batch(
    tokens: npt.NDArray[np.float32] | npt.NDArray[np.float16],
    offsets: npt.NDArray[np.uint64],
    spans: npt.NDArray[np.int64],
    span_offsets: npt.NDArray[np.uint64],
    *,
    threads: int = 0,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """span_mean_pool over a packed token store: document k owns the token rows
    ``tokens[offsets[k]:offsets[k + 1]]`` and the spans
    ``spans[span_offsets[k]:span_offsets[k + 1]]`` (token indices relative to the document)."""

def span_mean_pool_list(
    documents: list[npt.NDArray[np.float32]] | list[npt.NDArray[np.float16]],
    spans: npt.NDArray[np.int64],
    span_offsets: npt.NDArray[np.uint64],
    *,
    threads: int = 0,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """span_mean_pool over separate (n_tokens_k, dim) arrays of one dtype, without packing them:
    document k's spans are ``spans[span_offsets[k]:span_offsets[k + 1]]``."""

def pooling_kernels() -> str:
    """Kernels span_mean_pool uses now: "avx2" or "generic" (FASTRAG_KERNELS=generic)."""

def execute(
    legs: list[dict[str, object]],
    chunk_doc: npt.NDArray[np.uint32],
    *,
    k: int = 10,
    fusion: Literal["rrf", "minmax", "convex", "zscore", "dbsf"] = "rrf",
    rrf_k: float = 60.0,
    aggregate: Literal["max", "sum"] = "max",
    explain: bool = False,
    threads: int = 1,
    fused: int = 0,
) -> dict[str, npt.NDArray[np.generic] | None]:
    """A batch of queries end to end with the GIL released: every leg (a SparseIndex or
    HnswIndex with its queries, depth, weight, allow bitset and slot -> chunk map) at its depth,
    fusion over chunk ids, chunk -> document aggregation deepening until k documents, top-k.
    Returns ids (document ordinals of chunk_doc, -1 padded), scores, chunks, depths and, with
    explain, explain_scores / explain_ranks (n, k, n_legs + 1)."""

def execute_one(
    legs: list[dict[str, object]],
    chunk_doc: npt.NDArray[np.uint32],
    doc_ids: list[str],
    chunk_start: npt.NDArray[np.int64],
    chunk_end: npt.NDArray[np.int64],
    k: int = 10,
    fusion: Literal["rrf", "minmax", "convex", "zscore", "dbsf"] = "rrf",
    rrf_k: float = 60.0,
    aggregate: Literal["max", "sum"] = "max",
) -> list[tuple[str, float, tuple[int, int]]]:
    """`execute` for one query on this thread: (doc_ids[ordinal], score, (start, end) of the
    best chunk) per document, best first; k is capped at len(chunk_doc). The arguments may be
    given by position (the query path does: a keyword costs a lookup per call)."""

class AsciiWordCache:
    """ASCII text -> term ids by the English analyzer's rules (runs of [A-Za-z0-9_] of at
    least min_length characters, lowercased, stopwords out), with a cache of each word's term
    id: BM25.add's fast path. Thread-safe; encode runs without the GIL."""
    def __init__(
        self, *, min_length: int, lowercase: bool, stopwords: list[str], max_words: int = 4194304
    ) -> None: ...
    def encode(
        self, texts: list[object], start: int = 0
    ) -> tuple[int, npt.NDArray[np.int64], npt.NDArray[np.uint32], list[str]]:
        """Words of texts[start:stop] as term ids, stop being the first item that is not an
        ASCII str -> (stop, indptr, ids, new_words); a word not cached has the id
        2**31 + its index in new_words until resolve()."""
    def resolve(
        self, ids: npt.NDArray[np.uint32], new_words: list[str], new_ids: npt.NDArray[np.uint32]
    ) -> None:
        """Replaces the pending ids in ids (in place) by new_ids and caches the new words."""
    @property
    def size(self) -> int:
        """Cached words."""
    @property
    def memory_bytes(self) -> int: ...
    @property
    def min_length(self) -> int: ...
    @property
    def lowercase(self) -> bool: ...
