"""Approximate top-k over learned sparse vectors (SPLADE-like impacts), after Seismic.

Seismic (Bruch, Nardini, Rulli and Venturini, "Efficient Inverted Indexes for Approximate
Retrieval over Learned Sparse Representations", SIGIR 2024) keeps only the heaviest entries
of each posting list, splits them into blocks of similar documents with a summary vector
each, and at query time reads only the blocks whose summary promises a score near the
current top-k; the documents it reads are scored with their full vectors. `ImpactIndex` stays
the exact oracle.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from fastrag import _core
from fastrag._core import IndexFormatError
from fastrag.index.base import IdIndex, batch_ids, check_int, check_threads
from fastrag.index.csr import MAX_TERMS, check_count, check_vocab_size, is_number, to_csr
from fastrag.index.idmap import IdMap
from fastrag.index.results import DocId, SearchResults

_SETTINGS = ("list_size", "cluster_size", "summary_energy", "quantize", "seed")


class _StaticCore:
    """The native ApproxSparseIndex with what `IdIndex` asks of a core: deletion as
    tombstones (an allow bitset of the live documents, ANDed with a filter's), statistics with
    the live count, save / load. Compaction would need the vectors again: it is refused."""

    def __init__(self, native: Any) -> None:
        self.native = native
        self._dead = np.zeros(len(native), dtype=bool)
        self._lock = threading.Lock()
        self._live: np.ndarray | None = None  # bitset of the live documents, None: all

    def remove(self, internal: np.ndarray) -> int:
        internal = np.unique(np.asarray(internal, dtype=np.int64))
        with self._lock:
            new = int(np.count_nonzero(~self._dead[internal]))
            dead = self._dead.copy()
            dead[internal] = True
            self._dead = dead
            self._live = _bitset(~dead) if dead.any() else None
        return new

    def compact(self) -> np.ndarray:
        raise TypeError(
            "an ApproxImpactIndex is static: build a new one from the live vectors to drop "
            "deleted documents"
        )

    def search(self, *queries: Any, allow: np.ndarray | None, **options: Any) -> Any:
        live = self._live
        if live is not None:
            allow = live if allow is None else allow & live[: len(allow)]
        return self.native.search(*queries, allow=allow, **options)

    def stats(self) -> dict[str, Any]:
        return {**dict(self.native.stats()), "n_live": int(len(self._dead) - self._dead.sum())}

    def save(self, path: str, extra: bytes) -> None:
        self.native.save(path, extra)

    @classmethod
    def load(cls, path: str, mmap: bool = False) -> tuple[_StaticCore, bytes]:
        """The file's core with its deleted documents (the null slots of the metadata's ids;
        metadata that does not parse is left for the caller to refuse)."""
        native, extra = _core.ApproxSparseIndex.load(path)
        core = cls(native)
        try:
            ids = json.loads(extra.decode("utf-8")).get("ids")
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            ids = None
        if isinstance(ids, list) and len(ids) == len(core._dead):
            core.remove(np.array([i for i, d in enumerate(ids) if d is None], dtype=np.int64))
        return core, extra


def _bitset(mask: np.ndarray) -> np.ndarray:
    """A bool mask as the core's uint64 bitset (bit i % 64 of word i // 64)."""
    pad = np.zeros(-len(mask) % 64, dtype=bool)
    packed = np.packbits(np.concatenate([mask, pad]), bitorder="little")
    return packed.view("<u8").astype(np.uint64, copy=False)


class ApproxImpactIndex(IdIndex):
    """Sparse vectors (term id -> weight >= 0) ranked by dot product, approximately and fast.

    >>> index = ApproxImpactIndex([(np.array([3, 17]), np.array([0.5, 1.2]))], ids=["a"])
    >>> index.search((np.array([17]), np.array([2.0])), k=10)[0]
    [Hit(id='a', score=2.4...)]

    Built once from all its vectors (the same inputs as `ImpactIndex.add`: (term_ids,
    weights) pairs, {term_id: weight} dicts or a scipy.sparse matrix). Static: `delete` hides
    documents for good, but nothing can be added and `compact` raises TypeError (build a new
    index for either). Build:

    1. static pruning, as Seismic's global threshold: the lists keep the collection's
       heaviest ``list_size x n_terms`` entries, at most ``1.5 x list_size`` in one list;
    2. each list is cut into blocks of similar documents (about `cluster_size` each): random
       seed documents of the list, every other document joining the seed it shares the most
       weight with over their heaviest terms;
    3. each block gets a summary: its documents' per-term maximum weights, the heaviest up to
       `summary_energy` of their sum, rounded up to 8 bits (below 1, over each document's
       24 heaviest terms only: the lighter ones would not reach the summary).

    A query then visits the lists of its `query_cut` heaviest terms, reads their blocks in
    order of the summary's dot product with the (whole) query, and stops at the first block
    whose dot product times `heap_factor` is under the current k-th score. Every document it
    reads is scored with its full vector (8-bit weights per document when `quantize`).

    With ``summary_energy=1`` a summary bounds its documents' scores, so ``heap_factor=1``
    loses nothing in the lists read; with `list_size` and `query_cut` None as well the search
    is exact up to the 8-bit weights (``quantize=False`` stores float32 weights and gives
    `ImpactIndex`'s top-k). With lighter summaries (the default 0.3) a summary underestimates
    some of its documents: `heap_factor` above 1 reads more blocks, below 1 fewer,
    ``float("inf")`` all of them.

    Args:
        vectors: the documents.
        ids: their ids (default 0, 1, ...).
        vocab_size: term ids must lie in [0, vocab_size) (None: below 2**30).
        list_size: entries kept per posting list, on average (None: all).
        cluster_size: documents per block, on average.
        summary_energy: share of a block summary's weight kept, in (0, 1].
        quantize: document weights as 8 bits (one scale per document) instead of float32.
        seed: the random choice of group seeds.
        threads: build threads (0 = all cores).
    """

    _FORMAT = "fastrag.approx_impact"
    _FORMAT_VERSION = 2

    def __init__(
        self,
        vectors: Any,
        ids: Iterable[DocId] | None = None,
        *,
        vocab_size: int | None = None,
        list_size: int | None = None,
        cluster_size: int = 16,
        summary_energy: float = 0.3,
        quantize: bool = True,
        seed: int = 0,
        threads: int = 0,
    ) -> None:
        self.vocab_size = check_vocab_size(vocab_size)
        if not is_number(summary_energy) or not 0 < summary_energy <= 1:
            raise ValueError(f"summary_energy must be a number in (0, 1], got {summary_energy!r}")
        (indptr, terms, weights), single = to_csr(vectors, self._vocab_limit, "documents")
        if single and isinstance(ids, (str, int)):
            ids = [ids]
        ids_map = IdMap()
        ids_map.append(ids_map.new_ids(batch_ids(ids), len(indptr) - 1))
        native = _core.ApproxSparseIndex(
            indptr,
            np.ascontiguousarray(terms, dtype=np.uint32),
            np.ascontiguousarray(weights, dtype=np.float32),
            list_size=check_count(list_size, "list_size") or 0,
            cluster_size=check_int(cluster_size, "cluster_size"),
            summary_energy=float(summary_energy),
            quantize=bool(quantize),
            seed=check_int(seed, "seed", 0),
            threads=check_threads(threads),
        )
        self._core = _StaticCore(native)
        self._init_ids(ids_map)

    @property
    def _vocab_limit(self) -> int:
        return MAX_TERMS if self.vocab_size is None else self.vocab_size

    @property
    def settings(self) -> dict[str, Any]:
        """The build settings (list_size 0: every entry kept)."""
        p = self._core.native.params()
        return {k: p[k] for k in _SETTINGS}

    def stats(self) -> dict[str, Any]:
        """Counts (documents, terms, forward entries, postings kept, blocks, summary entries)
        and the bytes the structures hold (`memory_bytes`)."""
        return dict(self._core.stats())

    def __repr__(self) -> str:
        return f"ApproxImpactIndex({self.settings}, docs={len(self)})"

    # ------------------------------------------------------------------ searching
    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        query_cut: int | None = None,
        heap_factor: float = 1.0,
        threads: int = 0,
        filter: Iterable[DocId] | DocId | None = None,
    ) -> SearchResults:
        """Approximate top-k by dot product for one query vector or a batch.

        Args:
            k: results per query.
            query_cut: lists visited: the query's `query_cut` heaviest terms (None: all; the
                documents read are still scored with every query term).
            heap_factor: a block is read while its summary's dot product x heap_factor
                reaches the k-th score so far (higher: more recall, slower; lower: faster;
                ``float("inf")``: every block of the visited lists). Seismic's heap_factor
                is the inverse: its 0.8 is 1.25 here.
            threads: worker threads for a batch (0 = all cores).
            filter: only these document ids may be returned (applied inside top-k).
        """
        k = self._check_k(k)
        if not is_number(heap_factor) or math.isnan(heap_factor) or heap_factor <= 0:
            raise ValueError(f"heap_factor must be a number > 0, got {heap_factor!r}")
        cut = check_count(query_cut, "query_cut") or 0
        (indptr, terms, weights), _ = to_csr(queries, self._vocab_limit, "queries")
        return self._search_core(
            filter, indptr, np.ascontiguousarray(terms, dtype=np.uint32),
            np.ascontiguousarray(weights, dtype=np.float32),
            k=k, query_cut=cut, heap_factor=float(heap_factor), threads=threads,
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Saves to one file (written to a temporary file, then renamed into place)."""
        self._save(path, {"vocab_size": self.vocab_size})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ApproxImpactIndex:
        """Loads a saved index (into memory); a damaged, truncated or foreign file raises
        `fastrag.IndexFormatError`."""
        core, meta, ids = cls._load_core(_StaticCore, path, False, "n_docs")
        try:
            vocab = check_vocab_size(meta.get("vocab_size"))
        except ValueError as e:
            raise IndexFormatError(f"{path} has invalid settings ({e})") from e
        if vocab is not None and core.stats()["n_terms"] > vocab:
            raise IndexFormatError(f"{path} holds term ids past its vocabulary size")
        index = cls.__new__(cls)
        index.vocab_size = vocab
        index._core = core
        index._init_ids(ids)
        return index
