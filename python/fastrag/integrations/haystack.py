"""A fastrag collection as a Haystack 2 document store, and a retriever component for it.

>>> from haystack import Document, Pipeline
>>> from fastrag.integrations.haystack import FastragDocumentStore, FastragRetriever
>>> store = FastragDocumentStore("docs.fr")        # MiniLM (offline) + BM25, hybrid search
>>> store.write_documents([Document(content="BM25 in C++", meta={"lang": "en"})])
>>> pipe = Pipeline()
>>> pipe.add_component("retriever", FastragRetriever(store, top_k=5))
>>> pipe.run({"retriever": {"query": "inverted index",
...                         "filters": {"field": "meta.lang", "operator": "==", "value": "en"}}})

`FastragDocumentStore` follows Haystack's `DocumentStore` protocol (count, filter, write with
a `DuplicatePolicy`, delete; the ``*_async`` twins; ``to_dict`` / ``from_dict``) and passes
Haystack's own `DocumentStoreBaseTests`. Filters are Haystack's and are translated to
fastrag's (`fastrag.integrations.haystack_filters`), so they run inside the collection as
allow-lists. A document's content is what fastrag indexes (documents without text are
refused); its meta is the collection's metadata; its embedding, sparse embedding and blob
are kept and given back unchanged but not searched: the collection's own encoder embeds
the text. `FastragRetriever` runs the collection's hybrid search (or a `method`) and returns
Documents with their fastrag score.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from fastrag.collection import Collection, compile_filter
from fastrag.encoders.base import Encoder
from fastrag.integrations._common import check_k, missing_extra, open_or_create, search
from fastrag.integrations.haystack_filters import HIDDEN, to_fastrag_filter

try:
    from haystack import Document, component, default_from_dict, default_to_dict
    from haystack.dataclasses import ByteStream, SparseEmbedding
    from haystack.document_stores.errors import DuplicateDocumentError
    from haystack.document_stores.types import DuplicatePolicy, FilterPolicy, apply_filter_policy
    from haystack.errors import FilterError
except ImportError as e:  # without the extra (tests/test_integration_extras.py)
    raise ImportError(missing_extra("Haystack", "haystack-ai", "haystack")) from e

__all__ = ["FastragDocumentStore", "FastragRetriever"]


def _stored(doc: Document) -> tuple[str, dict[str, Any]]:
    """A Haystack Document as fastrag (text, metadata): meta without its None values (None
    and missing are one to Haystack's filters), the rest under the hidden key."""
    if not isinstance(doc.content, str) or not doc.content.strip():
        raise ValueError(f"document {doc.id!r} has no text: fastrag indexes the content "
                         "(documents with only a blob are not supported)")
    if HIDDEN in doc.meta:
        raise ValueError(f"document {doc.id!r}: the meta key {HIDDEN!r} is reserved")
    meta = {k: v for k, v in doc.meta.items() if v is not None}
    hidden: dict[str, Any] = {}
    if len(meta) < len(doc.meta):
        hidden["none"] = [k for k, v in doc.meta.items() if v is None]
    if doc.embedding is not None:
        hidden["embedding"] = list(doc.embedding)
    if doc.sparse_embedding is not None:
        hidden["sparse_embedding"] = doc.sparse_embedding.to_dict()
    if doc.blob is not None:
        blob = doc.blob.to_dict()
        hidden["blob"] = blob
    if hidden:
        meta[HIDDEN] = hidden
    return doc.content, meta


def _document(doc_id: str, text: str, metadata: dict[str, Any],
              score: float | None = None) -> Document:
    meta = dict(metadata)
    hidden = meta.pop(HIDDEN, {})
    meta.update(dict.fromkeys(hidden.get("none", [])))
    sparse = hidden.get("sparse_embedding")
    blob = hidden.get("blob")
    return Document(id=doc_id, content=text, meta=meta, score=score,
                    embedding=hidden.get("embedding"),
                    sparse_embedding=None if sparse is None else SparseEmbedding.from_dict(sparse),
                    blob=None if blob is None else ByteStream.from_dict(blob))


class FastragDocumentStore:
    """A Haystack document store on a fastrag collection (a folder).

    Args:
        path: the collection's folder: opened when it holds one, else created.
        encoder: the dense encoder of a new collection: a model name ("default":
            all-MiniLM-L6-v2, offline), a `fastrag.Encoder` object, or None (BM25 only). An
            existing collection opens with the model it was built with unless one is given.
        analyzer: BM25 analyzer of a new collection ("auto", "english", "japanese", "bigram").
        autocommit: commit after every write and delete; with False, call `commit`.
    """

    def __init__(self, path: str | os.PathLike[str], *, encoder: Encoder | str | None = "default",
                 analyzer: str = "auto", autocommit: bool = True) -> None:
        self.path = Path(path)
        self.encoder = encoder
        self.analyzer = analyzer
        self.autocommit = autocommit
        self.collection = open_or_create(self.path, encoder=encoder, analyzer=analyzer)

    @classmethod
    def from_collection(cls, collection: Collection, *,
                        autocommit: bool = True) -> FastragDocumentStore:
        """A store on an open collection."""
        if not isinstance(collection, Collection):
            raise TypeError(f"collection must be a fastrag.Collection, got "
                            f"{type(collection).__name__}")
        store = cls.__new__(cls)
        store.path, store.encoder, store.analyzer = collection.path, None, "auto"
        store.autocommit, store.collection = autocommit, collection
        return store

    def to_dict(self) -> dict[str, Any]:
        """Serializes the store (the folder and options; the encoder by name)."""
        if self.encoder is not None and not isinstance(self.encoder, str):
            raise ValueError("this store's encoder is an object: serialize a store created with "
                             "encoder=<model name> (or None)")
        return default_to_dict(self, path=str(self.path), encoder=self.encoder,
                               analyzer=self.analyzer, autocommit=self.autocommit)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FastragDocumentStore:
        return default_from_dict(cls, data)

    # ------------------------------------------------------------------ the protocol
    def count_documents(self) -> int:
        return len(self.collection)

    def filter_documents(self, filters: dict[str, Any] | None = None) -> list[Document]:
        """The documents whose meta matches Haystack `filters`, in the order written."""
        allowed = self._allowed(filters)
        return [_document(d.id, d.text, d.metadata) for d in self.collection.documents()
                if allowed is None or d.id in allowed]

    def write_documents(self, documents: list[Document],
                        policy: DuplicatePolicy = DuplicatePolicy.NONE) -> int:
        """Writes documents; NONE means FAIL. All or nothing: on a duplicate under FAIL, or
        a document without text, nothing is written. Returns how many were written."""
        if not isinstance(documents, list) or not all(isinstance(d, Document) for d in documents):
            raise ValueError("write_documents takes a list of haystack Documents")
        if policy == DuplicatePolicy.NONE:
            policy = DuplicatePolicy.FAIL
        batch: dict[str, Document] = {}
        for doc in documents:
            if doc.id in batch or doc.id in self.collection:
                if policy == DuplicatePolicy.FAIL:
                    raise DuplicateDocumentError(f"ID {doc.id!r} already exists")
                if policy == DuplicatePolicy.SKIP:
                    continue
            batch[doc.id] = doc  # OVERWRITE: the last one wins
        if not batch:
            return 0
        rows = [_stored(d) for d in batch.values()]
        self.collection.add([t for t, _ in rows], ids=list(batch),
                            metadata=[m for _, m in rows])
        self._written()
        return len(batch)

    def delete_documents(self, document_ids: list[str]) -> None:
        """Deletes the documents with these ids (unknown ids are ignored)."""
        if self.collection.delete(list(document_ids), missing="ignore"):
            self._written()

    async def count_documents_async(self) -> int:
        return await asyncio.to_thread(self.count_documents)

    async def filter_documents_async(self, filters: dict[str, Any] | None = None
                                     ) -> list[Document]:
        return await asyncio.to_thread(self.filter_documents, filters)

    async def write_documents_async(self, documents: list[Document],
                                    policy: DuplicatePolicy = DuplicatePolicy.NONE) -> int:
        return await asyncio.to_thread(self.write_documents, documents, policy)

    async def delete_documents_async(self, document_ids: list[str]) -> None:
        await asyncio.to_thread(self.delete_documents, document_ids)

    # ------------------------------------------------------------------ fastrag
    def commit(self) -> None:
        """Writes the changes to disk (see `Collection.commit`)."""
        self.collection.commit()

    def _written(self) -> None:
        if self.autocommit:
            self.collection.commit()

    def fastrag_filter(self, filters: dict[str, Any] | None) -> dict[str, Any] | None:
        """Haystack `filters` as the fastrag filter they become (None: no filter); a value
        that fastrag refuses (NaN, an int beyond 64 bits, ...) is a FilterError."""
        if not filters:
            return None
        spec = to_fastrag_filter(filters, self._known)
        try:
            compile_filter(spec)
        except ValueError as e:
            raise FilterError(str(e)) from e
        return spec

    def _known(self, name: str) -> bool:
        return bool(self.collection.allowed_chunks({name: {"$exists": True}}))

    def _allowed(self, filters: dict[str, Any] | None) -> set[str] | None:
        spec = self.fastrag_filter(filters)
        if spec is None or len(self.collection) == 0:
            return None
        chunks = self.collection.allowed_chunks(spec)
        return {hit.doc for hit in self.collection.chunks_of(chunks).values()}

    def search(self, query: str, top_k: int = 10, filters: dict[str, Any] | None = None, *,
               method: Any = "hybrid") -> list[Document]:
        """The `top_k` best documents for `query`, with their fastrag score."""
        results = search(self.collection, query, top_k, method=method,
                         filter=self.fastrag_filter(filters), name="top_k")
        return [_document(r.id, r.text, r.metadata, r.score) for r in results]


@component
class FastragRetriever:
    """Retrieves documents from a `FastragDocumentStore` with fastrag's hybrid search.

    Args:
        document_store: the store.
        filters: Haystack filters applied to every query (see `filter_policy`).
        top_k: documents per query.
        method: "hybrid" (BM25 + dense with RRF, or the collection's tuned pipeline), "bm25",
            "dense", ... (see `fastrag.Collection.search`).
        filter_policy: REPLACE (run-time filters replace `filters`) or MERGE (both apply).
    """

    def __init__(self, document_store: FastragDocumentStore, filters: dict[str, Any] | None = None,
                 top_k: int = 10, method: str = "hybrid",
                 filter_policy: FilterPolicy = FilterPolicy.REPLACE) -> None:
        if not isinstance(document_store, FastragDocumentStore):
            raise TypeError("document_store must be a FastragDocumentStore")
        if not isinstance(method, str):
            raise TypeError("method must be a method name such as 'hybrid' or 'bm25'; store a "
                            "tuned pipeline in the collection (set_default_pipeline) instead")
        self.document_store = document_store
        self.filters = filters
        self.top_k = check_k(top_k, "top_k")
        self.method = method
        self.filter_policy = FilterPolicy.from_str(filter_policy) if isinstance(
            filter_policy, str) else filter_policy

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(self, document_store=self.document_store.to_dict(),
                               filters=self.filters, top_k=self.top_k, method=self.method,
                               filter_policy=self.filter_policy.value)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FastragRetriever:
        params = data.get("init_parameters", {})
        params["document_store"] = FastragDocumentStore.from_dict(params["document_store"])
        if "filter_policy" in params:
            params["filter_policy"] = FilterPolicy.from_str(params["filter_policy"])
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(self, query: str, filters: dict[str, Any] | None = None,
            top_k: int | None = None) -> dict[str, list[Document]]:
        """The best documents for `query` (scores in ``Document.score``)."""
        filters = apply_filter_policy(self.filter_policy, self.filters, filters)
        k = self.top_k if top_k is None else top_k
        return {"documents": self.document_store.search(query, k, filters, method=self.method)}

    @component.output_types(documents=list[Document])
    async def run_async(self, query: str, filters: dict[str, Any] | None = None,
                        top_k: int | None = None) -> dict[str, list[Document]]:
        """`run` in a worker thread (the search releases the GIL in the native core)."""
        return await asyncio.to_thread(self.run, query, filters, top_k)

