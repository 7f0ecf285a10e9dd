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
from pathlib import Path
from typing import Any

import numpy as np

from fastrag import _core
from fastrag._core import IndexFormatError
from fastrag.index.base import batch_ids, check_int, check_threads, filter_ids
from fastrag.index.csr import MAX_TERMS, check_count, to_csr
from fastrag.index.idmap import IdMap
from fastrag.index.results import DocId, SearchResults

_SETTINGS = ("list_size", "cluster_size", "summary_energy", "quantize", "seed")


class ApproxImpactIndex:
    """Sparse vectors (term id -> weight >= 0) ranked by dot product, approximately and fast.

    >>> index = ApproxImpactIndex([(np.array([3, 17]), np.array([0.5, 1.2]))], ids=["a"])
    >>> index.search((np.array([17]), np.array([2.0])), k=10)[0]
    [Hit(id='a', score=2.4...)]

    Built once from all its vectors (the same inputs as `ImpactIndex.add`: (term_ids,
    weights) pairs, {term_id: weight} dicts or a scipy.sparse matrix); documents can be
    deleted afterwards, not added (build a new index for that). Build:

    1. every posting list keeps its `list_size` heaviest entries (static pruning);
    2. documents are grouped with similar ones (each joins the random seed document it
       shares the most weight with over their heaviest terms, about `cluster_size` documents
       per group), and each group gets a summary: its per-term maximum weights, kept up to
       `summary_energy` of their sum and rounded up to 8 bits;
    3. each list is ordered by group: a block is the run of one group's documents in it.

    A query then visits the lists of its `query_cut` heaviest terms, reads their blocks in
    order of the summary's dot product with the (whole) query, and stops at the first block
    whose dot product times `heap_factor` is under the current k-th score. Every document it
    reads is scored with its full vector (8-bit weights per document when `quantize`).

    With ``summary_energy=1`` a summary bounds its documents' scores, so ``heap_factor=1``
    loses nothing in the lists read; with `list_size` and `query_cut` None as well the search
    is exact up to the 8-bit weights (``quantize=False`` stores float32 weights and gives
    `ImpactIndex`'s top-k). `heap_factor` below 1 skips more, ``float("inf")`` nothing.

    Args:
        vectors: the documents.
        ids: their ids (default 0, 1, ...).
        vocab_size: term ids must lie in [0, vocab_size) (None: below 2**30).
        list_size: entries kept per posting list (None: all).
        cluster_size: documents per group, on average.
        summary_energy: share of a group summary's weight kept, in (0, 1].
        quantize: document weights as 8 bits (one scale per document) instead of float32.
        seed: the random choice of group seeds.
        threads: build threads (0 = all cores).
    """

    _FORMAT = "fastrag.approx_impact"
    _FORMAT_VERSION = 1

    def __init__(
        self,
        vectors: Any,
        ids: Iterable[DocId] | None = None,
        *,
        vocab_size: int | None = None,
        list_size: int | None = None,
        cluster_size: int = 32,
        summary_energy: float = 1.0,
        quantize: bool = True,
        seed: int = 0,
        threads: int = 0,
    ) -> None:
        if vocab_size is not None and (
            isinstance(vocab_size, bool)
            or not isinstance(vocab_size, (int, np.integer))
            or not 0 < vocab_size <= MAX_TERMS
        ):
            raise ValueError(f"vocab_size must be an int in 1..{MAX_TERMS} or None")
        if not isinstance(summary_energy, (int, float)) or not 0 < summary_energy <= 1:
            raise ValueError(f"summary_energy must be a number in (0, 1], got {summary_energy!r}")
        self.vocab_size = None if vocab_size is None else int(vocab_size)
        (indptr, terms, weights), single = to_csr(vectors, self._vocab_limit, "documents")
        if single and isinstance(ids, (str, int)):
            ids = [ids]
        self._ids = IdMap()
        self._ids.append(self._ids.new_ids(batch_ids(ids), len(indptr) - 1))
        self._core = _core.ApproxSparseIndex.build(
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
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        n = self._ids.n_internal
        self._deleted = np.zeros((n + 63) // 64, dtype=np.uint64)
        for i, d in enumerate(self._ids.to_json()):
            if d is None:
                self._deleted[i >> 6] |= np.uint64(1 << (i & 63))
        self._live: np.ndarray | None = None

    @property
    def _vocab_limit(self) -> int:
        return MAX_TERMS if self.vocab_size is None else self.vocab_size

    @property
    def settings(self) -> dict[str, Any]:
        """The build settings (list_size 0: every entry kept)."""
        p = self._core.params()
        return {k: p[k] for k in _SETTINGS}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._ids

    @property
    def ids(self) -> list[DocId]:
        """The live document ids, in the order they were given."""
        return self._ids.live_ids()

    def stats(self) -> dict[str, Any]:
        """Counts (documents, terms, forward entries, postings kept, groups, summary entries)
        and the bytes the structures hold (`memory_bytes`)."""
        return {**dict(self._core.stats()), "n_live": len(self)}

    def __repr__(self) -> str:
        return f"ApproxImpactIndex({self.settings}, docs={len(self)})"

    # ------------------------------------------------------------------ deleting
    def delete(self, ids: Iterable[DocId] | DocId, *, missing: str = "raise") -> int:
        """Deletes documents by id (they are never returned again; their space stays until a
        rebuild); unknown ids raise KeyError and nothing is deleted (missing="ignore" skips
        them). Returns the number deleted."""
        if missing not in ("raise", "ignore"):
            raise ValueError("missing must be 'raise' or 'ignore'")
        if isinstance(ids, (str, int)):
            ids = [ids]
        with self._lock:
            internal = self._ids.lookup(ids, missing=missing)
            internal = np.unique(internal.astype(np.int64))
            bits = np.zeros(len(self._deleted) * 64, dtype=bool)
            bits[internal] = True
            self._deleted |= np.packbits(bits, bitorder="little").view("<u8").astype(np.uint64)
            self._ids.remove(internal.astype(np.uint32))
            self._live = None
        return int(len(internal))

    def _allow(self, filter: Iterable[DocId] | DocId | None) -> np.ndarray | None:
        ids = filter_ids(filter)
        if ids is not None:
            return self._ids.allow_bitset(ids)  # live ids only
        if not self._deleted.any():
            return None
        live = self._live
        if live is None:
            live = self._live = ~self._deleted
        return live

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
                reaches the k-th score so far (1: what the summaries cannot rule out; lower:
                faster, less recall; ``float("inf")``: every block of the visited lists).
            threads: worker threads for a batch (0 = all cores).
            filter: only these document ids may be returned (applied inside top-k).
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if not isinstance(heap_factor, (int, float)) or math.isnan(heap_factor) or heap_factor <= 0:
            raise ValueError(f"heap_factor must be a number > 0, got {heap_factor!r}")
        cut = check_count(query_cut, "query_cut") or 0
        (indptr, terms, weights), _ = to_csr(queries, self._vocab_limit, "queries")
        allow = self._allow(filter)
        ids, scores = self._core.search(
            indptr,
            np.ascontiguousarray(terms, dtype=np.uint32),
            np.ascontiguousarray(weights, dtype=np.float32),
            k=int(k), query_cut=cut, heap_factor=float(heap_factor),
            threads=check_threads(threads), allow=allow,
        )
        return SearchResults(ids=self._ids.to_user(ids), scores=scores)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Saves to one file (written to a temporary file, then renamed into place)."""
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a directory; give a file path")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"folder {path.parent} does not exist")
        with self._lock:
            meta = {"format": self._FORMAT, "version": self._FORMAT_VERSION,
                    "vocab_size": self.vocab_size, "ids": self._ids.to_json()}
            self._core.save(str(path), json.dumps(meta, ensure_ascii=False).encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ApproxImpactIndex:
        """Loads a saved index (into memory); a damaged, truncated or foreign file raises
        `fastrag.IndexFormatError`."""
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a directory; give the index file")
        if not path.exists():
            raise FileNotFoundError(f"no such index file: {path}")
        core, blob = _core.ApproxSparseIndex.load(str(path))
        try:
            meta = json.loads(blob.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise IndexFormatError(f"{path} has corrupted metadata ({e})") from e
        if not isinstance(meta, dict) or meta.get("format") != cls._FORMAT:
            raise IndexFormatError(f"{path} is not an ApproxImpactIndex")
        if not isinstance(meta.get("version"), int) or meta["version"] > cls._FORMAT_VERSION:
            raise IndexFormatError(f"{path} needs a newer fastrag (format {meta.get('version')})")
        ids, vocab = meta.get("ids"), meta.get("vocab_size")
        if (
            not isinstance(ids, list)
            or len(ids) != len(core)
            or any(d is not None and not isinstance(d, (str, int)) for d in ids)
            or len({d for d in ids if d is not None}) != sum(d is not None for d in ids)
            or not (vocab is None or (isinstance(vocab, int) and 0 < vocab <= MAX_TERMS))
            or (vocab is not None and core.stats()["n_terms"] > vocab)
        ):
            raise IndexFormatError(f"{path} has metadata that does not match its index")
        index = cls.__new__(cls)
        index.vocab_size = vocab
        index._core = core
        index._ids = IdMap(ids)
        index._init_state()
        return index

