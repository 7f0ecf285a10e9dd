"""Compacting shards into one collection for single-machine serving.

The documents are copied shard by shard in order with their stored dense vectors (no
encoder run: `Collection.add` takes one vector per chunk), so the merged collection equals
one built from all the documents at once: same documents, chunk ids and BM25 index (rebuilt
from the texts: analysis only). The HNSW graph is made one of two ways (``dense=``):

- "insert" (the default): the largest shard's graph, loaded from its file, its chunk ids
  renamed to the merged collection's, and the other shards' stored vectors inserted into it
  (same M and ef_construction; all cores). Deleted chunks of that shard stay deleted slots,
  which inserted vectors take over first.
- "rebuild": a new graph from every stored vector.

benchmarks/bench_distributed.py measures both at the same ef (recall@10 against exact
search over the merged vectors): inserting is faster at equal recall (figures in
benchmarks/NOTES.md). Learned sparse and late legs, when a shard has them, are encoded
again.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastrag.collection import Collection, legs, store
from fastrag.distributed.build import record_model
from fastrag.distributed.manifest import (
    Manifest,
    ShardError,
    check_same,
    is_sharded,
    read_identity,
)
from fastrag.encoders.base import Encoder
from fastrag.index import DenseIndex
from fastrag.search.corpus import ChunkTable

DENSE_MERGES = ("insert", "rebuild")

log = logging.getLogger(__name__)


def shard_folders(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Shard collection folders, in order: a sharded folder stands for all its shards."""
    out: list[Path] = []
    for p in paths:
        folder = Path(p)
        if is_sharded(folder):
            out.extend(folder / s for s in Manifest.load(folder).shards)
        else:
            out.append(folder)
    if not out:
        raise ValueError("give at least one shard")
    return out


def merge_shards(
    shards: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    encoder: Encoder | str | None = None,
    dense: str = "insert",
    batch_docs: int = 2048,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Merges shard collections (or sharded folders) into a new collection in `out`.

    Every shard must have the same identity (encoder, analyzer, chunking, legs), else
    ShardMismatchError before anything is written; a missing shard is a ShardError. A
    document id found in two shards is a ValueError (nothing is committed). `dense`: how
    the HNSW graph is made, "insert" (into the largest shard's graph) or "rebuild" (see the
    module's notes). Returns counts, seconds and the dense method used ("insert" falls back
    to "rebuild" when the shards' graphs were built with other settings than a new one's).
    """
    t0 = time.perf_counter()
    if dense not in DENSE_MERGES:
        raise ValueError(f"dense must be one of {', '.join(DENSE_MERGES)}, got {dense!r}")
    folders = shard_folders(shards)
    for f in folders:
        if not f.is_dir():
            raise ShardError(f"shard {f} is missing")
    idents = [(str(f), read_identity(f)) for f in folders]
    check_same(idents)
    existed = Path(out).exists()
    first = Collection.open(folders[0], encoder=encoder)  # loads the model once, if named
    enc = first.encoder
    settings = dict(first.settings)
    first.close()
    target = Collection.create(
        out, encoder=enc, analyzer=settings["analyzer"], chunk_chars=settings["chunk_chars"],
        chunk_tokens=settings.get("chunk_tokens"), storage=settings["storage"],
        token_vectors=bool(settings.get("token_vectors")), sparse=settings.get("sparse"),
        late_chunking=bool(settings.get("late_chunking")),
    )
    seen: set[str] = set()
    docs = chunks = 0
    graph = _Graph(target, folders) if dense == "insert" and target.dense is not None else None
    try:
        for i, f in enumerate(folders):
            col = Collection.open(f, encoder=target.encoder)
            try:
                table = col.chunk_table()
                by_doc = _chunks_by_doc(table)
                base = graph is not None and i == graph.base
                batch: list[Any] = []
                for doc in col.documents():
                    if doc.id in seen:
                        raise ValueError(f"document {doc.id!r} is in two shards ({f})")
                    seen.add(doc.id)
                    batch.append(doc)
                    if len(batch) >= batch_docs:
                        chunks += _copy(col, target, table, batch, by_doc, chunks, graph,
                                        base)
                        batch = []
                chunks += _copy(col, target, table, batch, by_doc, chunks, graph, base)
                docs += len(col)
                if graph is not None and base:
                    graph.take(col)
            finally:
                col.close()
            if progress:
                progress(f"{f} merged")
        if graph is not None:
            target.set_index("dense", graph.finish())
        target.commit()
    except BaseException:
        target.rollback()
        target.close()
        if not existed:
            shutil.rmtree(out, ignore_errors=True)  # no half-merged collection left behind
        raise
    target.close()
    info = settings.get("encoder") or {}
    if info.get("model") is not None and not isinstance(encoder, Encoder):
        record_model(Path(out), info["model"], info.get("quantize"))  # opens on its own
    return {"documents": docs, "chunks": chunks, "shards": len(folders),
            "dense": None if settings.get("encoder") is None
            else graph.method if graph is not None else "rebuild",
            "seconds": time.perf_counter() - t0}


def _chunk_count(folder: Path) -> int:
    db, _ = store.open_db(folder)
    try:
        return int(db.execute("SELECT count(*) FROM chunks").fetchone()[0])
    finally:
        db.close()


def _chunks_by_doc(table: ChunkTable) -> dict[str, list[int]]:
    """Each document's chunk ids, in order (a document's chunks get consecutive ids)."""
    by_doc: dict[str, list[int]] = {}
    for c in sorted(table.hits):
        by_doc.setdefault(table.hits[c].doc, []).append(c)
    return by_doc


class _Graph:
    """The merged HNSW graph by insertion. The target's dense leg is left out of its adds
    (``skip_legs``). The vectors of the shards before the largest one (`base`) wait here
    with their new chunk ids (none when the first shard is the largest, as a sharded build
    makes them); once the base shard's documents are copied, its graph gets its chunk ids
    renamed to theirs in the target (`renames`, collected as its batches are added) and the
    waiting and later vectors are inserted into it. A base graph of other settings than a
    new one's (M, ef_construction, storage...) is not used: the target's own empty graph
    takes every vector instead (a rebuild)."""

    def __init__(self, target: Collection, folders: list[Path]) -> None:
        counts = [_chunk_count(f) for f in folders]
        self.base = max(range(len(folders)), key=counts.__getitem__)
        self.target = target
        self.index: DenseIndex | None = None
        self.before: list[tuple[np.ndarray, list[int]]] = []
        self.renames: dict[int | str, int | str] = {}  # base shard chunk id -> target's
        self.method = "insert"

    def add(self, vectors: np.ndarray, new: list[int], old: list[int], base: bool) -> None:
        if base:
            self.renames.update(zip(old, new, strict=True))
        elif self.index is None:
            self.before.append((vectors, new))
        else:
            self.index.add(vectors, ids=new)

    def take(self, shard: Collection) -> None:
        """The base shard's documents are all copied: its graph becomes the merged one."""
        graph, fresh = shard.dense, self.target.dense
        if graph is None or fresh is None:  # pragma: no cover - both have the dense leg
            raise ShardError(f"{shard.path} has no dense index")
        settings = ("dim", "metric", "M", "ef_construction")
        # a graph the target's storage setting allows, rescoring as a new one's (under
        # "auto", float32 or int8 with rescoring, whatever the new one's storage now)
        same_storage = legs.storage_allows(self.target.settings, graph) and (
            self.target.settings["storage"] == "auto" or graph.rescore == fresh.rescore)
        if same_storage and all(getattr(graph, a) == getattr(fresh, a) for a in settings):
            graph.rename(self.renames)
        else:
            log.info("%s: its HNSW graph has other settings than a new one: rebuilding",
                     shard.path)
            old = [int(c) for c in self.renames]
            fresh.add(shard.vectors_of(old), ids=[self.renames[c] for c in old])
            graph, self.method = fresh, "rebuild"
        self.index = graph
        for vectors, new in self.before:
            graph.add(vectors, ids=new)
        self.before = []

    def finish(self) -> DenseIndex:
        if self.index is None:  # pragma: no cover - take() runs for the base shard
            raise ShardError("the merged graph was never made")
        return self.index  # set_index turns it int8 when the storage setting says so


def _copy(src: Collection, dst: Collection, table: ChunkTable, batch: list[Any],
          by_doc: dict[str, list[int]], first: int, graph: _Graph | None, base: bool) -> int:
    """Copies a batch of a shard's documents into the target with their stored vectors;
    their chunks get the ids from `first` on (the target is new: its chunk ids count up from
    0 in the order chunks are added). With `graph`, the dense leg is left to it. Returns
    the chunks copied."""
    if not batch:
        return 0
    ids = [c for d in batch for c in by_doc.get(d.id, [])]
    vectors = None if src.dense is None else src.vectors_of(ids)
    dst.add([d.text for d in batch], ids=[d.id for d in batch],
            metadata=[d.metadata for d in batch], vectors=vectors,
            skip_legs=("dense",) if graph is not None else ())
    if graph is not None and vectors is not None:
        new = list(range(first, first + len(ids)))
        got = dst.chunks_of(new)
        for c, n in zip(ids, new, strict=True):
            a, b = table.hits[c], got.get(n)
            if b is None or (a.doc, a.start, a.end) != (b.doc, b.start, b.end):
                raise ShardError(f"chunk {c} of document {a.doc!r} did not get chunk id {n} "
                                 "in the merged collection: use dense='rebuild'")
        graph.add(vectors, new, ids, base)
    return len(ids)
