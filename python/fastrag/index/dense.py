"""Dense vector search: an HNSW graph in C++ (or exact search), with the user's ids."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Literal, Protocol, TypeGuard, get_args, runtime_checkable

import numpy as np

from fastrag import _core
from fastrag.index.base import IdIndex, check_int, check_threads, filter_ids
from fastrag.index.results import DocId, SearchResults

Metric = Literal["cosine", "ip", "l2"]
Storage = Literal["float32", "int8", "float16", "int4"]
METRICS: tuple[Metric, ...] = get_args(Metric)
STORAGES: tuple[Storage, ...] = get_args(Storage)


def _is_metric(value: object) -> TypeGuard[Metric]:
    return value in METRICS


def _is_storage(value: object) -> TypeGuard[Storage]:
    return value in STORAGES
F16_MAX = 65504.0  # the largest finite float16


@runtime_checkable
class Encoder(Protocol):
    """What a dense index needs of a text encoder (`fastrag.TextEncoder`,
    `fastrag.RemoteEncoder`, any `fastrag.Encoder`): unit-free vectors of `dim` dimensions
    and a fingerprint that names the vector space."""

    name: str
    dim: int

    @property
    def fingerprint(self) -> str: ...

    def encode_documents(self, documents: Any, **options: Any) -> np.ndarray: ...

    def encode_queries(self, queries: Any, **options: Any) -> np.ndarray: ...


def _is_text(items: Any) -> bool:
    if isinstance(items, (str, bytes)):
        return True
    return isinstance(items, (list, tuple)) and bool(items) and isinstance(items[0], (str, bytes))


def as_matrix(vectors: Any, dim: int, name: str = "vectors") -> np.ndarray:
    """A C-contiguous float32 (n, dim) view of `vectors`.

    float32 C-contiguous arrays pass through without a copy. Other float or integer dtypes and
    strided arrays are converted once (a documented copy); a single vector of shape (dim,) is
    treated as one row. Anything else raises ValueError / TypeError with what to change.
    """
    if isinstance(vectors, np.ndarray):
        arr = vectors
    else:
        try:
            arr = np.asarray(vectors)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must be a numeric array, got {type(vectors).__name__}") from e
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional (n, {dim}), got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise ValueError(f"{name}: expected {dim} dimensions, got {arr.shape[1]}")
    return np.ascontiguousarray(arr, dtype=np.float32)


class DenseIndex(IdIndex):
    """Approximate (HNSW) or exact nearest-neighbour search over vectors.

    >>> index = DenseIndex(384, metric="cosine")
    >>> index.add(vectors, ids=doc_ids)
    >>> results = index.search(query_vectors, k=10)

    Args:
        dim: vector dimension.
        metric: "cosine" (vectors normalised on add), "ip" (inner product) or "l2".
            Scores are higher-is-better: the similarity for cosine / ip, the negated squared
            distance for l2.
        M: graph degree: links per node (as in hnswlib).
        ef_construction: the beam width while building (as in hnswlib).
        ef_search: default search beam; raise it for recall, lower it for speed.
        storage: "float32", "int8" (per-dimension ranges trained on the first batch added),
            "float16", or "int4": 4-bit codes next to the graph's links for the walk (ranges
            trained on the first batch) and int8 codes in a separate array to rescore the beam
            (about 0.47x hnswlib's memory at 384 dims, M 16).
        rescore: also keep the float32 vectors and rescore the best candidates with them
            (4x the memory of int8 alone, exact final scores). Default: True for int8 and
            float16, False for int4 (whose int8 codes rescore).
        seed: seeds the level draw, so a single-threaded build is reproducible.
        encoder: a text encoder (`fastrag.TextEncoder`, `fastrag.RemoteEncoder`): `add` and
            `search` then take texts too, and its fingerprint is saved with the index, so
            that `load(path, encoder=...)` refuses an encoder that makes other vectors.
            `dim` may then be left out (the encoder's), or be smaller (Matryoshka).

    >>> index = DenseIndex(encoder=fastrag.TextEncoder())
    >>> index.add(["first document", "second one"], ids=["a", "b"])
    >>> index.search("which document?", k=1)
    """

    _FORMAT = "fastrag.dense"

    def __init__(
        self,
        dim: int | None = None,
        *,
        metric: str = "cosine",
        M: int = 16,
        ef_construction: int = 200,
        ef_search: int = 64,
        storage: str = "float32",
        rescore: bool | None = None,
        seed: int = 100,
        encoder: Encoder | None = None,
    ) -> None:
        if encoder is not None and not isinstance(encoder, Encoder):
            raise TypeError(
                f"encoder must be a fastrag Encoder (dim, fingerprint, encode_documents, "
                f"encode_queries), got {type(encoder).__name__}"
            )
        if dim is None:
            if encoder is None:
                raise ValueError("give dim (the vector dimension) or an encoder")
            dim = encoder.dim
        if not _is_metric(metric):
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        if not _is_storage(storage):
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
        # Ranges (dim <= 65536, M in 2..256, ef_construction < 2**32) are the core's to check.
        self._core = _core.HnswIndex(
            check_int(dim, "dim"),
            metric=metric,
            storage=storage,
            keep_float=(storage != "int4" if rescore is None else bool(rescore))
            and storage != "float32",
            M=check_int(M, "M", 2),
            ef_construction=check_int(ef_construction, "ef_construction"),
            seed=seed,
        )
        self.ef_search = check_int(ef_search, "ef_search")
        self._init_ids()
        self._encoder: Encoder | None = None
        self._fingerprint: str | None = None
        if encoder is not None:
            self._attach(encoder)

    # ------------------------------------------------------------------ encoder
    def _space_of(self, encoder: Encoder) -> str:
        """The fingerprint of the vectors `encoder` gives at this index's dimension."""
        if encoder.dim < self.dim:
            raise ValueError(
                f"the encoder {encoder.name!r} gives {encoder.dim} dimensions; "
                f"this index holds {self.dim}"
            )
        fp = encoder.fingerprint
        return fp if encoder.dim == self.dim else f"{fp}/dim={self.dim}"

    def _attach(self, encoder: Encoder) -> None:
        space = self._space_of(encoder)
        if self._fingerprint is not None and space != self._fingerprint:
            raise ValueError(
                f"this index was built with encoder {self._fingerprint}, not {space}: "
                "vectors of another encoder are not comparable; re-index with this encoder "
                "or load the index with the encoder it was built with"
            )
        self._encoder, self._fingerprint = encoder, space

    @property
    def encoder(self) -> Encoder | None:
        """The attached text encoder, if any."""
        return self._encoder

    @property
    def fingerprint(self) -> str | None:
        """The fingerprint of the encoder whose vectors this index holds (None: unknown)."""
        return self._fingerprint

    def _vectors_of(self, items: Any, kind: str) -> Any:
        if not _is_text(items):
            return items
        if self._encoder is None:
            hint = " (load it with encoder=...)" if self._fingerprint else ""
            raise TypeError(f"this index has no encoder to embed texts{hint}; pass vectors")
        dim = self.dim if self.dim < self._encoder.dim else None
        if kind == "query":
            return self._encoder.encode_queries(items, dim=dim)
        return self._encoder.encode_documents(items, dim=dim)

    @property
    def dim(self) -> int:
        """The vector dimension."""
        return int(self._core.dim)

    @property
    def metric(self) -> str:
        """"cosine", "ip" or "l2"."""
        return str(self._core.metric)

    @property
    def storage(self) -> str:
        """"float32", "int8", "float16" or "int4"."""
        return str(self._core.storage)

    @property
    def M(self) -> int:
        """Graph degree (links per node)."""
        return int(self._core.M)

    @property
    def ef_construction(self) -> int:
        """The beam width while building."""
        return int(self._core.ef_construction)

    @property
    def rescore(self) -> bool:
        """Whether float32 vectors are kept next to int8 / float16 ones for rescoring."""
        return bool(self._core.keep_float)

    def empty_like(self, *, storage: str | None = None) -> DenseIndex:
        """A new, empty index of this one's settings (dimension, metric, M, ef_construction,
        ef_search, encoder and fingerprint), with another `storage` if given (its rescoring
        then the default of that storage)."""
        same = storage is None or storage == self.storage
        out = DenseIndex(self.dim, metric=self.metric, M=self.M,
                         ef_construction=self.ef_construction, ef_search=self.ef_search,
                         storage=self.storage if storage is None else storage,
                         rescore=self.rescore if same else None)
        out._encoder, out._fingerprint = self._encoder, self._fingerprint
        return out

    # ------------------------------------------------------------------ building
    def add(
        self,
        vectors: Any,
        ids: Iterable[DocId] | None = None,
        *,
        threads: int = 0,
    ) -> None:
        """Adds vectors (n, dim), or texts when an encoder is attached; ids default to
        integers above every integer id so far.

        An id already present is replaced (upsert: the vector is overwritten and relinked).
        New ids reuse the slots of deleted vectors first, so deletions do not grow the index.
        NaN / inf values, wrong dimensions, (for cosine) zero vectors and (float16 storage
        with ip / l2) values beyond float16's 65504 raise ValueError and add nothing.
        """
        threads = check_threads(threads)
        rows = as_matrix(self._vectors_of(vectors, "document"), self.dim)
        with self._write_lock:
            new_ids = self._ids.new_ids(ids, len(rows))
            if not new_ids:
                return
            self._core_check(rows)
            existing = [(i, d) for i, d in enumerate(new_ids) if d in self._ids]
            fresh = [(i, d) for i, d in enumerate(new_ids) if d not in self._ids]
            # Replacements and reuses of deleted slots go through core.replace, the rest are
            # appended. A reused slot is given its new id first, so that a concurrent search
            # never maps the new vector to the old id.
            slots = self._ids.lookup([d for _, d in existing]).tolist()
            reuse = self._ids.dead_slots(len(fresh))
            self._ids.assign_slots(reuse, [d for _, d in fresh[: len(reuse)]])
            targets = slots + reuse
            if targets:
                order = [i for i, _ in existing] + [i for i, _ in fresh[: len(reuse)]]
                self._core.replace(np.array(targets, dtype=np.uint32), rows[order], threads=threads)
            appended = fresh[len(reuse) :]
            if appended:
                n_before = self._ids.n_internal
                self._ids.append([d for _, d in appended])
                try:
                    self._core.add(rows[[i for i, _ in appended]], threads=threads)
                except BaseException:
                    self._ids.truncate(n_before, {})
                    raise

    def _core_check(self, rows: np.ndarray) -> None:
        """Rejects bad rows before anything changes (the core checks again)."""
        if not np.isfinite(rows).all():
            bad = int(np.flatnonzero(~np.isfinite(rows).all(axis=1))[0])
            raise ValueError(f"vector {bad} has a NaN or infinite value")
        if self.metric == "cosine":
            if not (np.abs(rows).sum(axis=1) > 0).all():
                raise ValueError("a vector is all zeros: it has no direction for the cosine metric")
        elif self.storage == "float16" and rows.size and float(np.abs(rows).max()) > F16_MAX:
            # Cosine rows are normalised first; ip / l2 rows are stored as given, and a value
            # past float16's range would become inf (a row no search can score).
            bad = int(np.flatnonzero((np.abs(rows) > F16_MAX).any(axis=1))[0])
            raise ValueError(
                f"vector {bad} has a value of magnitude {float(np.abs(rows[bad]).max()):g}: "
                f"float16 storage holds magnitudes up to {F16_MAX:g} (scale the vectors, or use "
                "storage='float32' or 'int8')"
            )

    def compact(self, *, threads: int = 0) -> None:  # type: ignore[override]
        """Rebuilds the graph from the live vectors only (deleted slots are dropped)."""
        super().compact(threads=check_threads(threads))

    def get_vector(self, doc_id: DocId) -> np.ndarray:
        """The stored vector of an id (normalised for cosine; dequantised for int8 storage
        without rescoring, and from the int8 codes for int4 storage without rescoring)."""
        (internal,) = self._ids.lookup([doc_id]).tolist()
        return np.asarray(self._core.get_vector(internal))

    def get_vectors(self, doc_ids: Iterable[DocId]) -> np.ndarray:
        """The stored vectors of ids as one (n, dim) float32 array, in the order given (as
        `get_vector` gives each; KeyError for an unknown id)."""
        internal = self._ids.lookup(list(doc_ids)).tolist()
        get = self._core.get_vector
        if not internal:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([np.asarray(get(i)) for i in internal]).astype(np.float32, copy=False)

    # ------------------------------------------------------------------ searching
    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        ef: int | None = None,
        threads: int = 0,
        filter: Iterable[DocId] | None = None,
        exact: bool = False,
        dims: int | None = None,
        rescore: int | None = None,
    ) -> SearchResults:
        """Top-k neighbours of each query vector (a single vector or an (n, dim) array), or
        of each query text when an encoder is attached.

        Args:
            k: results per query; past the index's size the rows are padded (None / -inf).
            ef: search beam (default `ef_search`; at least k is used, at most the index's
                size: a wider beam is the same search).
            threads: worker threads for a batch (0 = all cores).
            filter: only these ids may be returned; the filter is applied during the graph
                walk, and a filter that leaves few documents is answered by exact search.
            exact: brute-force search over all vectors (the ground truth).
            dims: Matryoshka funnel: walk the graph with the first `dims` dimensions (a
                multiple of 16), then rescore the best candidates with all of them.
            rescore: how many candidates to rescore exactly (default: the beam when `dims`
                is set, 2k when float32 vectors are kept next to int8 / float16 / int4 ones;
                without float32 vectors, int8 and int4 storage score the whole beam with the
                int8 codes).
        """
        k = self._check_k(k)
        ef = self.ef_search if ef is None else check_int(ef, "ef")
        threads = check_threads(threads)
        dims = None if dims is None else check_int(dims, "dims", 0)
        if rescore is not None:
            rescore = check_int(rescore, "rescore", 0)
        filter = filter_ids(filter)
        q = as_matrix(self._vectors_of(queries, "query"), self.dim, "queries")
        if rescore is None:
            # The funnel's prefix scores are rough: rescore the whole beam. Codes next to float
            # rows are close: 2k candidates reach the recall of rescoring the beam (measured on
            # 100k x 384: 0.988 at ef 24 with 15, 20 or 24 rescored).
            rescore = max(ef, k) if dims else min(max(ef, k), 2 * k) if self._core.keep_float else 0
        with self._renumber_lock.read():
            allow = None
            exact_below = 0
            if filter is not None:
                allow = self._ids.allow_bitset(filter)
                exact_below = max(1000, len(self._ids) // 50)
            ids, scores = self._core.search(
                q,
                k=k,
                ef=ef,
                threads=threads,
                exact=exact,
                dims=dims or 0,
                rescore=rescore,
                allow=allow,
                exact_below=exact_below,
            )
            return SearchResults(ids=self._ids.to_user(ids), scores=scores)

    # ------------------------------------------------------------------ inspection
    def stats(self) -> dict[str, Any]:
        """Counts (n_vectors, n_live), the rows allocated (capacity), the bytes of the core's
        arrays (memory_bytes) and with their spare capacity (allocated_bytes), the distance
        kernels in use, and how walks mark visited nodes (visited: "bitset" or "hash")."""
        return dict(self._core.stats())

    def __repr__(self) -> str:
        return (
            f"DenseIndex(dim={self.dim}, metric={self.metric!r}, storage={self.storage!r}, "
            f"vectors={len(self)})"
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Saves to one file (written to a temporary file, then renamed into place; an error
        leaves no temporary file and an existing file unchanged)."""
        self._save(path, {"ef_search": self.ef_search, "encoder": self._fingerprint})

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        mmap: bool = False,
        encoder: Encoder | None = None,
    ) -> DenseIndex:
        """Loads a saved index; with mmap=True the vectors and graph stay in the file
        (a modification first copies them into memory).

        `encoder` attaches a text encoder; it must be the one the index was built with
        (same fingerprint), else ValueError.
        """
        core, meta, ids = cls._load_core(_core.HnswIndex, path, mmap, "n_vectors")
        index = cls.__new__(cls)
        index._core = core
        ef = meta.get("ef_search", 64)
        index.ef_search = ef if isinstance(ef, int) and ef > 0 else 64
        index._init_ids(ids)
        fp = meta.get("encoder")
        index._fingerprint = fp if isinstance(fp, str) else None
        index._encoder = None
        if encoder is not None:
            index._attach(encoder)
        return index
