"""What a search pipeline needs from a store of chunked documents: the `Corpus` protocol.

`fastrag.Collection` implements it; a pipeline touches nothing else of a collection, so any
store that answers these calls (a shard, a remote corpus) can be searched the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from fastrag.encoders.base import Encoder

__all__ = ["NO_DOC", "ChunkHit", "ChunkTable", "Corpus", "Document"]


@dataclass(slots=True)
class Document:
    """A stored document."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


class ChunkHit(NamedTuple):
    """A chunk of a document: its id, the document's id and its character span.

    A named tuple: a collection holds one per chunk for as long as it is open, and tuples of
    ints and strs are left out of the cyclic garbage collector's passes (as dataclass
    objects, 100,000 chunks made each full collection take ~37 ms, a pause in whatever
    search it fell on)."""

    chunk: int
    doc: str
    start: int
    end: int


NO_DOC = 0xFFFFFFFF  # chunk_doc of a chunk that does not exist (deleted, or never made)


class ChunkTable:
    """Chunk id -> (document, span), as a mapping for Python (`hits`) and as arrays for the
    native executor: ``chunk_doc[c]`` is the ordinal of chunk c's document (`NO_DOC` if none)
    and ``doc_ids[ordinal]`` its id; ``chunk_start[c]`` / ``chunk_end[c]`` its span. Kept up
    to date by its owner with `put` and `drop`; ordinals are never reused within one table.
    `hits` reads the arrays: a table holds no Python object per chunk (100,000 of them made
    every full run of the cyclic garbage collector take ~37 ms)."""

    def __init__(self, hits: Iterable[ChunkHit] = ()) -> None:
        self.doc_ids: list[str] = []
        self._ordinal: dict[str, int] = {}
        self.chunk_doc = np.full(0, NO_DOC, dtype=np.uint32)
        self.chunk_start = np.zeros(0, dtype=np.int64)
        self.chunk_end = np.zeros(0, dtype=np.int64)
        self._live = 0  # chunks present
        self.hits: Mapping[int, ChunkHit] = _Hits(self)
        self.put(list(hits))

    def put(self, hits: list[ChunkHit]) -> None:
        if not hits:
            return
        top = max(h.chunk for h in hits)
        if top >= len(self.chunk_doc):
            size = max(top + 1, 2 * len(self.chunk_doc))
            grown = np.full(size, NO_DOC, dtype=np.uint32)
            grown[: len(self.chunk_doc)] = self.chunk_doc
            self.chunk_doc = grown
            for name in ("chunk_start", "chunk_end"):
                old = getattr(self, name)
                new = np.zeros(size, dtype=np.int64)
                new[: len(old)] = old
                setattr(self, name, new)
        chunk_doc, starts, ends = self.chunk_doc, self.chunk_start, self.chunk_end
        for h in hits:
            ordinal = self._ordinal.get(h.doc)
            if ordinal is None:
                ordinal = self._ordinal[h.doc] = len(self.doc_ids)
                self.doc_ids.append(h.doc)
            if chunk_doc[h.chunk] == NO_DOC:
                self._live += 1
            chunk_doc[h.chunk] = ordinal
            starts[h.chunk] = h.start
            ends[h.chunk] = h.end

    def drop(self, chunks: Iterable[int]) -> None:
        for c in chunks:
            if c in self.hits:
                self.chunk_doc[c] = NO_DOC
                self._live -= 1


class _Hits(Mapping[int, ChunkHit]):
    """A table's chunks as {chunk id: ChunkHit}, made from its arrays when asked for."""

    __slots__ = ("_table",)

    def __init__(self, table: ChunkTable) -> None:
        self._table = table

    def __getitem__(self, chunk: int) -> ChunkHit:
        t = self._table
        if not (isinstance(chunk, (int, np.integer)) and 0 <= chunk < len(t.chunk_doc)):
            raise KeyError(chunk)
        ordinal = int(t.chunk_doc[chunk])
        if ordinal == NO_DOC:
            raise KeyError(chunk)
        return ChunkHit(int(chunk), t.doc_ids[ordinal], int(t.chunk_start[chunk]),
                        int(t.chunk_end[chunk]))

    def __contains__(self, chunk: object) -> bool:
        t = self._table
        return bool(isinstance(chunk, (int, np.integer)) and 0 <= chunk < len(t.chunk_doc)
                    and t.chunk_doc[chunk] != NO_DOC)

    def __iter__(self) -> Iterator[int]:
        return iter(np.flatnonzero(self._table.chunk_doc != NO_DOC).tolist())

    def __len__(self) -> int:
        return self._table._live

    def __repr__(self) -> str:
        return f"<{len(self)} chunks>"


@runtime_checkable
class Corpus(Protocol):
    """Documents split into chunks (int ids), with indexes over the chunks.

    Legs are named indexes over chunk ids: ``"bm25"`` (a `fastrag.BM25`), ``"dense"`` (a
    `fastrag.DenseIndex` of the corpus's encoder).

    A corpus whose legs are not indexes in this process (a sharded collection's router:
    each leg's search fans out to the shards) sets ``native = False``: a pipeline then runs
    it stage by stage in Python, calling only ``index(leg).search`` and ``len``.

    Optional: ``reader()`` -> a function that reads a document by id when called, or None
    when it cannot now, and ``readers_of(doc_ids)`` -> {doc id: a function that reads the
    document when called with its id}; a corpus that has them gives results that read their
    text when first used (`LazyResult`: the query path makes them from ``reader()``, explain
    and a None reader from ``readers_of``), one without them is read through ``texts_of``
    when the results are made.
    """

    @property
    def encoder(self) -> Encoder | None:
        """The encoder of the dense leg (None without one)."""
        ...

    @property
    def encoder_languages(self) -> frozenset[str]:
        """Languages the encoder knows ("en", "ja", or "multi" for all)."""
        ...

    def legs(self) -> tuple[str, ...]:
        """Names of the indexes this corpus holds."""
        ...

    def leg_languages(self, leg: str) -> frozenset[str]:
        """Languages the model behind a leg knows ("multi": all, as for BM25)."""
        ...

    def index(self, leg: str) -> Any:
        """The index of a leg (ValueError naming the legs there are for another name)."""
        ...

    def allowed_chunks(self, spec: Mapping[str, Any]) -> list[int]:
        """Chunk ids of the documents whose metadata match a filter."""
        ...

    def chunks_of(self, chunk_ids: Iterable[int]) -> dict[int, ChunkHit]:
        """The chunks that exist among `chunk_ids`."""
        ...

    def chunk_table(self) -> ChunkTable:
        """Every chunk's document and span (for the native executor)."""
        ...

    def texts_of(self, doc_ids: Iterable[str]) -> dict[str, Document]:
        """The documents that exist among `doc_ids`."""
        ...

    def vectors_of(self, chunk_ids: Iterable[int]) -> np.ndarray:
        """Stored dense vectors of chunks, (n, dim) float32."""
        ...

    def token_vectors_of(self, chunk_ids: Iterable[int]) -> list[np.ndarray]:
        """Stored token vectors of chunks (float16 (n_tokens, dim) each)."""
        ...

    def languages(self) -> dict[str, float]:
        """Share of chunks per language ({"en": 0.9, "ja": 0.1})."""
        ...
