"""What a search pipeline needs from a store of chunked documents: the `Corpus` protocol.

`fastrag.Collection` implements it; a pipeline touches nothing else of a collection, so any
store that answers these calls (a shard, a remote corpus) can be searched the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fastrag.encoders.base import Encoder

__all__ = ["ChunkHit", "Corpus", "Document"]


@dataclass
class Document:
    """A stored document."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChunkHit:
    """A chunk of a document: its id, the document's id and its character span."""

    chunk: int
    doc: str
    start: int
    end: int


@runtime_checkable
class Corpus(Protocol):
    """Documents split into chunks (int ids), with indexes over the chunks.

    Legs are named indexes over chunk ids: ``"bm25"`` (a `fastrag.BM25`), ``"dense"`` (a
    `fastrag.DenseIndex` of the corpus's encoder).
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

    def index(self, leg: str) -> Any:
        """The index of a leg (ValueError naming the legs there are for another name)."""
        ...

    def allowed_chunks(self, spec: Mapping[str, Any]) -> list[int]:
        """Chunk ids of the documents whose metadata match a filter."""
        ...

    def chunks_of(self, chunk_ids: Iterable[int]) -> dict[int, ChunkHit]:
        """The chunks that exist among `chunk_ids`."""
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
