"""What every index shares: the user's ids, the locks, deletion and the file conventions."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from fastrag._core import IndexFormatError
from fastrag._sync import ReadWriteLock
from fastrag.index.idmap import IdMap
from fastrag.index.results import DocId, SearchResults


def as_batch(
    docs: Any, ids: Iterable[DocId] | DocId | None
) -> tuple[Any, Iterable[DocId] | None]:
    """(docs, ids) with a single string document made a batch of one (and its single id a list
    of one); a single id (string or int) for a batch is a TypeError."""
    if isinstance(docs, str):
        docs = [docs]
        if isinstance(ids, (str, int)):
            ids = [ids]
    return docs, batch_ids(ids)


def batch_ids(ids: Iterable[DocId] | DocId | None) -> Iterable[DocId] | None:
    """The ids of a batch of documents; a single id is a TypeError (iterating a string would
    give one id per character, an int none)."""
    if isinstance(ids, str):
        raise TypeError("ids must be a list of ids, one per document, not a single string")
    if isinstance(ids, int):
        raise TypeError(f"ids must be a list of ids, one per document, not a single id ({ids!r})")
    return ids


def check_int(value: object, name: str, minimum: int = 1) -> int:
    """An int argument (numpy integers too; not bool or float) that is >= minimum, else
    ValueError. Sizes past what an index can use are clamped or refused by the core."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def check_threads(threads: object) -> int:
    """Worker threads: 0 for all cores, else a positive int (more than the machine can run are
    clamped by the core)."""
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
        raise ValueError(f"threads must be an integer >= 0 (0 = all cores), got {threads!r}")
    return int(threads)


def filter_ids(filter: object) -> Iterable[DocId] | None:
    """The ids of an index-level filter: None, one id or an iterable of ids. A mapping is
    refused: iterating it would filter by its keys, which is never what a metadata filter
    means."""
    if filter is None:
        return None
    if isinstance(filter, Mapping):
        raise TypeError(
            "filter takes a list of ids; for metadata filters use Collection.search(filter={...})"
        )
    if isinstance(filter, (str, int)):
        return [filter]
    if not isinstance(filter, Iterable):
        raise TypeError(f"filter takes a list of ids, got {type(filter).__name__}")
    return filter


class IdIndex:
    """Base of the indexes: a native core (``_core``) plus the map of user ids.

    Writers (add, delete, compact, save) run one at a time. Searches run concurrently with
    adds and deletes (the core locks itself; the id map grows before the core and keeps
    deleted slots), but not with a compaction, which renumbers documents.
    """

    _FORMAT = ""  # the "format" tag in the file's metadata
    _FORMAT_VERSION = 1
    _core: Any

    def _init_ids(self, ids: IdMap | None = None) -> None:
        self._ids = ids if ids is not None else IdMap()
        self._write_lock = threading.Lock()
        self._renumber_lock = ReadWriteLock()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._ids

    @property
    def ids(self) -> list[DocId]:
        """The live document ids in slot order: insertion order, except that an id added to a
        DenseIndex may take the slot (and place) of a deleted one."""
        return self._ids.live_ids()

    def delete(self, ids: Iterable[DocId] | DocId, *, missing: str = "raise") -> int:
        """Deletes documents by id; unknown ids raise KeyError and nothing is deleted
        (missing="ignore" skips them). Returns the number deleted; `compact()` reclaims space."""
        if missing not in ("raise", "ignore"):
            raise ValueError("missing must be 'raise' or 'ignore'")
        if isinstance(ids, (str, int)):
            ids = [ids]
        with self._write_lock:
            internal = self._ids.lookup(ids, missing=missing)
            n = self._core.remove(internal)
            self._ids.remove(internal)
        return int(n)

    def rename(self, mapping: Mapping[DocId, DocId]) -> None:
        """Gives every live document a new id: ``mapping[old id]`` (every live id must be a
        key; the new ids must all differ). The vectors, postings and graph stay as they are
        (deleted slots stay deleted): merging shards renames a shard's chunk ids to those of
        the merged collection. Nothing changes on a bad mapping (KeyError / ValueError)."""
        with self._write_lock, self._renumber_lock.write():
            slots = self._ids.to_json()
            missing = [d for d in slots if d is not None and d not in mapping]
            if missing:
                raise KeyError(f"rename: no new id for {len(missing)} ids ({missing[:3]})")
            renamed = [None if d is None else mapping[d] for d in slots]
            live = IdMap().new_ids([d for d in renamed if d is not None], len(self._ids))
            it = iter(live)  # checked: str or int, all different
            self._ids = IdMap([None if d is None else next(it) for d in renamed])

    def compact(self, **options: Any) -> None:
        """Drops deleted documents and renumbers the internal ids."""
        with self._write_lock, self._renumber_lock.write():
            self._ids.renumber(self._core.compact(**options))

    def _upsert(self, new_ids: list[DocId], *documents: Any) -> None:
        """Removes the ids already present, then appends new_ids and their documents
        (``_core.add(*documents)``); on a failure the id map is rolled back. Call it with the
        write lock held."""
        replaced = self._ids.existing(new_ids)
        if replaced.size:
            self._core.remove(replaced)
            self._ids.remove(replaced)
        # The id map first: a concurrent search may return the new documents at once.
        n_before = self._ids.n_internal
        self._ids.append(new_ids)
        try:
            self._core.add(*documents)
        except BaseException:
            self._ids.truncate(n_before, {})
            raise

    def _search_core(
        self, filter: Iterable[DocId] | DocId | None, *queries: Any, **options: Any
    ) -> SearchResults:
        """``_core.search(*queries, allow=..., **options)`` with the filter's ids as the allow
        bitset, under the renumber lock; results with the user's ids."""
        filter = filter_ids(filter)
        if "threads" in options:
            options["threads"] = check_threads(options["threads"])
        with self._renumber_lock.read():
            allow = None if filter is None else self._ids.allow_bitset(filter)
            ids, scores = self._core.search(*queries, allow=allow, **options)
            return SearchResults(ids=self._ids.to_user(ids), scores=scores)

    @contextmanager
    def native(self, allow: Iterable[DocId] | None = None) -> Iterator[dict[str, Any]]:
        """For the native query executor (``_core.execute``): the core index, the map of
        internal ids to int user ids (`IdMap.int_slots`) and the allow bitset of `allow`,
        held steady (no compaction renumbers them) until the block ends."""
        spec = self.native_open(allow)
        try:
            yield spec
        finally:
            self.native_close()

    def native_open(self, allow: Iterable[DocId] | None = None) -> dict[str, Any]:
        """`native` without the block, for the query path: every call must be followed by
        one `native_close` (in a finally), which lets compaction renumber again."""
        self._renumber_lock.acquire_read()
        try:
            return {
                "index": self._core,
                "slot_chunk": self._ids.int_slots(),
                "allow": None if allow is None else self._ids.allow_bitset(allow),
            }
        except BaseException:
            self._renumber_lock.release_read()
            raise

    def native_close(self) -> None:
        self._renumber_lock.release_read()

    def _check_k(self, k: object) -> int:
        """k >= 1. A k past the index's size gives padded rows (id None, score -inf); one whose
        padding alone would be huge is refused by the core with the size to pass instead."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        return int(k)

    # ------------------------------------------------------------------ files
    def _save(self, path: str | os.PathLike[str], meta: dict[str, Any]) -> None:
        """Writes the index to ``<path>.tmp-<pid>-<n>`` and renames it over `path`. An error
        while writing removes the temporary file and leaves an existing `path` as it was; a
        process killed mid-save (SIGKILL, power loss) leaves the temporary file behind, which
        nothing here removes (a Collection clears them from its folder)."""
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a directory; give a file path")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"folder {path.parent} does not exist")
        with self._write_lock:
            extra = {"format": self._FORMAT, "version": self._FORMAT_VERSION, **meta}
            extra["ids"] = self._ids.to_json()
            blob = json.dumps(extra, ensure_ascii=False).encode("utf-8")
            self._core.save(str(path), blob)

    @classmethod
    def _load_core(
        cls, core_class: Any, path: str | os.PathLike[str], mmap: bool, n_items: str,
        **options: Any,
    ) -> tuple[Any, dict[str, Any], IdMap]:
        """Opens a file: (core, metadata, id map), with every check of the metadata;
        `options` go to the core's load."""
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a directory; give the index file")
        if not path.exists():
            raise FileNotFoundError(f"no such index file: {path}")
        core, blob = core_class.load(str(path), mmap=mmap, **options)
        try:
            meta = json.loads(blob.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise IndexFormatError(f"{path} has corrupted metadata ({e})") from e
        if not isinstance(meta, dict) or meta.get("format") != cls._FORMAT:
            raise IndexFormatError(f"{path} is not a {cls.__name__} index")
        if not isinstance(meta.get("version"), int) or meta["version"] > cls._FORMAT_VERSION:
            raise IndexFormatError(f"{path} needs a newer fastrag (format {meta.get('version')})")
        ids = meta.get("ids")
        stats = core.stats()
        if (
            not isinstance(ids, list)
            or len(ids) != stats[n_items]
            or any(d is not None and not isinstance(d, (str, int)) for d in ids)
            or len({d for d in ids if d is not None}) != stats["n_live"]
        ):
            raise IndexFormatError(f"{path} has metadata that does not match its index")
        return core, meta, IdMap(ids)


class InvertedIndex(IdIndex):
    """An IdIndex over the native inverted index (BM25, ImpactIndex: SPLADE, BM42), whose
    compaction can also reorder documents."""

    def compact(self, *, reorder: bool = False,  # type: ignore[override]
                iterations: int = 20, min_size: int = 32, threads: int = 0) -> None:
        """Drops deleted documents and renumbers the internal ids.

        With `reorder=True` the documents are renumbered in the order recursive graph
        bisection gives (Dhulipala et al., KDD 2016): documents that share terms get nearby
        internal ids, so posting lists have smaller gaps and take fewer bytes (on collections
        whose documents cluster by topic; documents drawn at random gain nothing). Search
        results and scores do not change, except the order of exactly tied scores (ties go
        to the lower internal id). It costs a few seconds per 100,000 documents: a build-time
        step (run it once after adding a collection, before saving).

        Args:
            iterations: swap rounds per split at most (20, as in the paper's reproduction by
                Mackenzie et al., ECIR 2019).
            min_size: parts of at most this many documents are not split further.
            threads: worker threads (0 = all cores).
        """
        super().compact(reorder=reorder, iterations=iterations, min_size=min_size,
                        threads=threads)
