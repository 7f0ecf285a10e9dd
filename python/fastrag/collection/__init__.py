"""Collections: documents, chunks, metadata and their indexes in one folder on disk."""

from __future__ import annotations

from fastrag.collection.collection import Collection
from fastrag.collection.filters import compile_filter
from fastrag.collection.store import CollectionError, read_info
from fastrag.search.corpus import ChunkHit, Document

__all__ = ["ChunkHit", "Collection", "CollectionError", "Document", "compile_filter", "read_info"]
