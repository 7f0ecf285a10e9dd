"""Compacting shards into one collection for single-machine serving.

The documents are copied shard by shard in order with their stored dense vectors (no
encoder run: `Collection.add` takes one vector per chunk), so the merged collection equals
one built from all the documents at once: its BM25 index is rebuilt from the texts (cheap:
analysis only) and its HNSW graph rebuilt from the vectors (merging graphs was not done: a
rebuild from stored vectors gives the same recall as a fresh build; see benchmarks/NOTES.md).
Learned sparse and late legs, when a shard has them, are encoded again.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fastrag.collection import Collection
from fastrag.distributed.build import record_model
from fastrag.distributed.manifest import (
    Manifest,
    ShardError,
    check_same,
    is_sharded,
    read_identity,
)
from fastrag.encoders.base import Encoder


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
    batch_docs: int = 2048,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Merges shard collections (or sharded folders) into a new collection in `out`.

    Every shard must have the same identity (encoder, analyzer, chunking, legs), else
    ShardMismatchError before anything is written; a missing shard is a ShardError. A
    document id found in two shards is a ValueError (nothing is committed). Returns counts
    and seconds.
    """
    t0 = time.perf_counter()
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
    try:
        for f in folders:
            col = Collection.open(f, encoder=target.encoder)
            try:
                table = col.chunk_table()
                by_doc: dict[str, list[int]] = {}
                for c in sorted(table.hits):
                    by_doc.setdefault(table.hits[c].doc, []).append(c)
                batch: list[Any] = []
                for doc in col.documents():
                    if doc.id in seen:
                        raise ValueError(f"document {doc.id!r} is in two shards ({f})")
                    seen.add(doc.id)
                    batch.append(doc)
                    if len(batch) >= batch_docs:
                        chunks += _copy(col, target, batch, by_doc)
                        batch = []
                chunks += _copy(col, target, batch, by_doc)
                docs += len(col)
            finally:
                col.close()
            if progress:
                progress(f"{f} merged")
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
            "seconds": time.perf_counter() - t0}


def _copy(src: Collection, dst: Collection, batch: list[Any],
          by_doc: dict[str, list[int]]) -> int:
    if not batch:
        return 0
    vectors = None
    if src.dense is not None:
        ids = [c for d in batch for c in by_doc.get(d.id, [])]
        vectors = src.vectors_of(ids)
    dst.add([d.text for d in batch], ids=[d.id for d in batch],
            metadata=[d.metadata for d in batch], vectors=vectors)
    return sum(len(by_doc.get(d.id, [])) for d in batch)
