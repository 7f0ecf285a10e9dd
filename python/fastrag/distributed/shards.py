"""One shard of a sharded collection, as the router sees it: the `ShardHandle` protocol, its
in-process implementation `LocalShard` (Ray's actors hold one each), and the merges of what
shards return (BM25 statistics, best-first result lists).
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from fastrag.collection import Collection
from fastrag.distributed.manifest import identity_of
from fastrag.encoders.base import Encoder
from fastrag.encoders.models import SpladeEncoder
from fastrag.search.corpus import Document
from fastrag.search.pipeline import Result

__all__ = ["ChunkRow", "LocalShard", "ShardHandle", "Stats", "merge_stats", "merge_topk"]

Stats = tuple[int, float, dict[str, int]]
#: a leg's hit from a shard: (chunk id, score, document id, start, end)
ChunkRow = tuple[int, float, str, int, int]


class ShardHandle(Protocol):
    """What the router asks of a shard (in this process or in a Ray actor)."""

    def identity(self) -> dict[str, Any]: ...
    def bm25_stats(self) -> Stats: ...
    def fingerprint(self) -> dict[str, Any]: ...
    def set_global_stats(self, n_docs: int, total_len: float, df: dict[str, int]) -> None: ...
    def search(self, queries: list[str], k: int, leg: str, vectors: np.ndarray | None,
               filter: Mapping[str, Any] | None = None) -> list[list[Result]]: ...
    def profile(self) -> dict[str, Any]: ...
    def leg_search(self, leg: str, query: Any, k: int, filter: Mapping[str, Any] | None,
                   options: dict[str, Any]) -> list[ChunkRow]: ...
    def documents(self, doc_ids: list[str]) -> dict[str, Document]: ...


class LocalShard:
    """A shard's collection opened in this process."""

    def __init__(self, path: str | os.PathLike[str], encoder: Encoder | None = None,
                 mmap: bool = False, splade: SpladeEncoder | str | None = None) -> None:
        self.collection = Collection.open(path, encoder=encoder, mmap=mmap, splade=splade)
        # (generation and filter as JSON, the chunk ids it allows): one filter's chunks are
        # read once for the legs and queries of a search
        self._allowed: tuple[str, list[int]] | None = None

    def identity(self) -> dict[str, Any]:
        ident = identity_of(self.collection.settings)
        bm25 = self.collection.bm25
        if bm25 is not None:
            core = bm25._core
            ident["bm25"] = {"method": bm25.method, "k1": round(float(core.k1), 6),
                             "b": round(float(core.b), 6), "delta": round(float(core.delta), 6)}
        return ident

    def bm25_stats(self) -> Stats:
        bm25 = self.collection.bm25
        return (0, 0.0, {}) if bm25 is None else bm25.collection_stats()

    def fingerprint(self) -> dict[str, Any]:
        """The state of the shard's BM25 index: its generation (commit counter) and its
        file's size, modification time and inode (a shard built again from scratch may
        reach the same generation, not the same file)."""
        col = self.collection
        out: dict[str, Any] = {"generation": col.generation}
        if col.generation:
            st = col.index_file("bm25").stat()
            out["bm25"] = [st.st_size, st.st_mtime_ns, st.st_ino]
        return out

    def set_global_stats(self, n_docs: int, total_len: float, df: dict[str, int]) -> None:
        bm25 = self.collection.bm25
        if bm25 is not None:
            bm25.set_global_stats(n_docs, total_len, df)

    def search(self, queries: list[str], k: int, leg: str, vectors: np.ndarray | None,
               filter: Mapping[str, Any] | None = None) -> list[list[Result]]:
        if leg not in self.collection.legs():
            raise ValueError(f"this collection has no {leg!r} leg (it has "
                             f"{', '.join(self.collection.legs())})")
        use = vectors if leg in ("dense", "late") else None
        return self.collection.search_batch(queries, k, method=leg, vectors=use, threads=1,
                                            filter=filter)

    def profile(self) -> dict[str, Any]:
        """Each leg's size and languages, the chunk count and its language shares."""
        col = self.collection
        return {"legs": {leg: len(col.index(leg)) for leg in col.legs()},
                "leg_languages": {leg: sorted(col.leg_languages(leg)) for leg in col.legs()},
                "encoder_languages": sorted(col.encoder_languages),
                "chunks": len(col.index("bm25")), "languages": col.languages()}

    def leg_search(self, leg: str, query: Any, k: int, filter: Mapping[str, Any] | None,
                   options: dict[str, Any]) -> list[ChunkRow]:
        """One leg's best `k` chunks for one query (text, or vector for dense legs), as the
        leg's index answers a pipeline's retriever (`options`: its search options), with
        each chunk's document and span."""
        col = self.collection
        index = col.index(leg)
        allow = None
        if filter is not None:
            key = f"{col.generation} {json.dumps(filter, sort_keys=True, default=str)}"
            if self._allowed is None or self._allowed[0] != key:
                self._allowed = (key, col.allowed_chunks(filter))
            allow = self._allowed[1]
            if not allow:
                return []
        k = min(k, len(index))
        if k == 0:
            return []
        found = index.search(query, k=k, filter=allow, **options)[0]
        table = col.chunk_table().hits
        out = []
        for h in found:
            hit = None if h.id is None else table.get(int(h.id))
            if hit is not None:  # chunks of unknown documents are left out, as in a pipeline
                out.append((hit.chunk, float(h.score), hit.doc, hit.start, hit.end))
        return out

    def documents(self, doc_ids: list[str]) -> dict[str, Document]:
        return self.collection.texts_of(doc_ids)

    def close(self) -> None:
        self.collection.close()


def merge_stats(parts: Sequence[Stats]) -> Stats:
    """The statistics of the union of shards: sums of N, lengths and document frequencies."""
    n, total = 0, 0.0
    df: dict[str, int] = {}
    for pn, ptotal, pdf in parts:
        n += pn
        total += ptotal
        for t, c in pdf.items():
            df[t] = df.get(t, 0) + c
    return n, total, df


def merge_topk(per_shard: Sequence[Sequence[Result]], k: int) -> list[Result]:
    """The k best of the shards' best-first lists: by score, then shard order, then rank
    (the order one index over the shards, in document order, breaks ties in)."""
    keyed = ((-r.score, s, i, r) for s, rs in enumerate(per_shard) for i, r in enumerate(rs))
    return [t[3] for t in heapq.nsmallest(k, keyed, key=lambda t: t[:3])]
