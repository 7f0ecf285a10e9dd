"""A fastrag collection as a LangChain vector store and retriever (``langchain-core``).

>>> from fastrag.integrations.langchain import FastragVectorStore
>>> store = FastragVectorStore.create("docs.fr")            # MiniLM (offline) + BM25
>>> store.add_texts(["BM25 in C++", "HNSW graphs"], metadatas=[{"lang": "en"}, {}])
>>> store.similarity_search("inverted index", k=2, filter={"lang": "en"})
>>> store.as_retriever(search_kwargs={"k": 3}).invoke("graph search")

`FastragVectorStore` follows LangChain's `VectorStore` contract (add / upsert by id, delete,
`get_by_ids`, `similarity_search[_with_score]`, `max_marginal_relevance_search`, the async
twins) and passes the standard tests of ``langchain-tests``. Searches run the collection's
hybrid pipeline (BM25 + dense fused with RRF) or any `method` of `Collection.search`; a
LangChain `Embeddings` can serve as the dense encoder (`LangChainEncoder`). Filters are
fastrag's metadata filters, a dict in MongoDB's style
(``{"year": {"$gte": 2000}, "lang": {"$in": ["en", "ja"]}}``; see
`fastrag.collection.filters`). `FastragRetriever` is a `BaseRetriever` over a collection
(``k``, ``filter`` and ``method`` fields, each also a keyword of ``invoke``).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from fastrag.collection import Collection
from fastrag.encoders.base import Encoder, Kind, normalize
from fastrag.integrations._common import Method, check_k, missing_extra, open_or_create, search
from fastrag.search.pipeline import Result

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.vectorstores import VectorStore
    from langchain_core.vectorstores.utils import maximal_marginal_relevance
    from pydantic import ConfigDict
except ImportError as e:  # without the extra (tests/test_integration_extras.py)
    raise ImportError(missing_extra("LangChain", "langchain-core", "langchain")) from e

__all__ = ["FastragRetriever", "FastragVectorStore", "LangChainEncoder"]


def _model_name(embeddings: Embeddings) -> str:
    """The class and, where it says, the model of a LangChain Embeddings ("model" or
    "model_name", as OpenAI's and Hugging Face's classes name it)."""
    model = getattr(embeddings, "model", None) or getattr(embeddings, "model_name", None)
    kind = type(embeddings).__name__
    return f"{kind}:{model}" if isinstance(model, str) and model else kind


class LangChainEncoder(Encoder):
    """A LangChain `Embeddings` as a fastrag dense encoder (vectors scaled to unit length).

    `dim` is asked of the model once (one ``embed_query``) when not given. `name` goes into
    the fingerprint, which a collection checks when it is opened again (by default the class
    and its ``model`` / ``model_name``): give the model's name when the class does not say,
    so that another model's vectors are never mixed in.
    """

    def __init__(self, embeddings: Embeddings, *, name: str | None = None,
                 dim: int | None = None) -> None:
        if not isinstance(embeddings, Embeddings):
            raise TypeError(f"embeddings must be a langchain_core Embeddings, got "
                            f"{type(embeddings).__name__}")
        self.embeddings = embeddings
        self.name = name or _model_name(embeddings)
        if dim is None:
            dim = len(embeddings.embed_query("fastrag"))
        self.dim = check_k(dim, "dim")

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.name.encode()).hexdigest()[:12]
        return f"langchain-{digest}-{self.dim}"

    def _embed(self, texts: list[str], kind: Kind, batch_size: int) -> np.ndarray:
        rows: list[list[float]] = []
        for start in range(0, len(texts), batch_size):
            part = texts[start : start + batch_size]
            if kind == "query":
                rows += [self.embeddings.embed_query(t) for t in part]
            else:
                rows += self.embeddings.embed_documents(part)
        out = np.asarray(rows, dtype=np.float32)
        if out.shape != (len(texts), self.dim):
            raise ValueError(f"{self.name} returned vectors of shape {out.shape}, expected "
                             f"({len(texts)}, {self.dim})")
        if not np.isfinite(out).all():
            raise ValueError(f"{self.name} returned NaN or infinite values")
        return normalize(out)


def _document(result: Result, score_key: str | None = None) -> Document:
    metadata = dict(result.metadata)
    if score_key is not None:
        metadata[score_key] = result.score
    return Document(page_content=result.text, metadata=metadata, id=result.id)


def _filter(value: Any) -> Mapping[str, Any] | None:
    if value is None or isinstance(value, Mapping):
        return value
    raise TypeError("filter must be a dict of fastrag's metadata filter language, e.g. "
                    "{'lang': 'en', 'year': {'$gte': 2000}}; a function of the Document is not "
                    f"supported (got {type(value).__name__})")


class FastragVectorStore(VectorStore):
    """A LangChain vector store on a `fastrag.Collection`.

    Args:
        collection: an open collection (`Collection.create` / `Collection.open`); or use
            `create` / `from_texts` with a folder.
        method: the search of `similarity_search`: "hybrid" (default), "bm25", "dense", ...
            or a `fastrag.search.Pipeline`.
        autocommit: commit after every add and delete (the changes reach the disk); with
            False, call `commit` yourself (faster for many small writes).
        embedding: the LangChain `Embeddings` behind the collection's encoder, if any
            (returned by the `embeddings` property).
    """

    def __init__(self, collection: Collection, *, method: Method = "hybrid",
                 autocommit: bool = True, embedding: Embeddings | None = None) -> None:
        if not isinstance(collection, Collection):
            raise TypeError(f"collection must be a fastrag.Collection, got "
                            f"{type(collection).__name__}; use FastragVectorStore.create(path)")
        self.collection = collection
        self.method = method
        self.autocommit = autocommit
        self._embedding = embedding

    @classmethod
    def create(cls, path: str | os.PathLike[str], *, embedding: Embeddings | None = None,
               method: Method = "hybrid", autocommit: bool = True,
               **options: Any) -> FastragVectorStore:
        """The store of the collection in folder `path`, opened or created.

        `embedding` (a LangChain `Embeddings`) becomes the dense encoder; otherwise the
        options of `Collection.create` apply (``encoder="default"``: all-MiniLM-L6-v2,
        ``encoder=None``: BM25 only).
        """
        if embedding is not None:
            if "encoder" in options:
                raise ValueError("pass embedding= or encoder=, not both")
            options["encoder"] = LangChainEncoder(embedding)
        return cls(open_or_create(path, **options), method=method, autocommit=autocommit,
                   embedding=embedding)

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings | None = None,
                   metadatas: list[dict[str, Any]] | None = None, *,
                   ids: list[str] | None = None, path: str | os.PathLike[str] | None = None,
                   **kwargs: Any) -> FastragVectorStore:
        """A store in folder `path` (required) holding `texts`; see `create`."""
        if path is None:
            raise ValueError("FastragVectorStore.from_texts needs path= (the collection's folder)")
        store = cls.create(path, embedding=embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @property
    def embeddings(self) -> Embeddings | None:
        return self._embedding

    # ------------------------------------------------------------------ writes
    def add_texts(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None,
                  *, ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        """Adds (or replaces, by id) texts; ids default to new UUIDs (also where an id is
        None: LangChain passes the ids of Documents that may have none). All or nothing."""
        texts = list(texts)
        given: list[Any] = [None] * len(texts) if ids is None else list(ids)
        new_ids = [str(uuid.uuid4()) if i is None else i for i in given]
        if metadatas is not None and len(metadatas) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(metadatas)} metadatas")
        if not texts:
            return []
        added = self.collection.add(texts, ids=new_ids, metadata=metadatas, **kwargs)
        self._written()
        return added

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Deletes the documents with these ids (unknown ids are ignored); ids=None deletes
        every document, as LangChain's contract says."""
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")
        if ids is None:
            ids = [d.id for d in self.collection.documents()]
        elif isinstance(ids, str):
            raise TypeError("ids must be a list of ids, not a single string")
        if self.collection.delete(list(ids), missing="ignore"):
            self._written()
        return True

    def commit(self) -> None:
        """Writes the changes to disk (see `Collection.commit`)."""
        self.collection.commit()

    def _written(self) -> None:
        if self.autocommit:
            self.collection.commit()

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        found = self.collection.texts_of(ids)
        return [Document(page_content=found[i].text, metadata=dict(found[i].metadata), id=i)
                for i in dict.fromkeys(ids) if i in found]

    # ------------------------------------------------------------------ search
    def similarity_search_with_score(self, query: str, k: int = 4, *,
                                     filter: Mapping[str, Any] | None = None,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        """(document, score) of the `k` best documents, best first: the score of the
        method's last stage (the RRF score for "hybrid", cosine for "dense")."""
        method = kwargs.pop("method", self.method)
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")
        results = search(self.collection, query, k, method=method, filter=_filter(filter))
        return [(_document(r), r.score) for r in results]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20,
                                      lambda_mult: float = 0.5, *,
                                      filter: Mapping[str, Any] | None = None,
                                      **kwargs: Any) -> list[Document]:
        """`k` documents out of the method's best `fetch_k`, picked by maximal marginal
        relevance (similar to the query, unlike each other) on the collection encoder's
        vectors of the query and of each document's best chunk."""
        encoder = self.collection.encoder
        if encoder is None:
            raise NotImplementedError("maximal marginal relevance needs vectors: this "
                                      "collection has no encoder (BM25 only)")
        if not 0.0 <= lambda_mult <= 1.0:
            raise ValueError(f"lambda_mult must be in [0, 1], got {lambda_mult!r}")
        k, fetch_k = check_k(k), check_k(fetch_k, "fetch_k")
        method = kwargs.pop("method", self.method)
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")
        results = search(self.collection, query, max(k, fetch_k), method=method,
                         filter=_filter(filter))
        if not results:
            return []
        query_vector = encoder.encode([query], kind="query")[0]
        passages = encoder.encode([r.passage for r in results], kind="document")
        picked = maximal_marginal_relevance(query_vector, list(passages),
                                            lambda_mult=lambda_mult, k=k)
        return [_document(results[i]) for i in picked]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        if self.method == "dense":
            return self._cosine_relevance_score_fn_similarity
        raise NotImplementedError(
            "relevance scores in [0, 1] exist for method='dense' (cosine) only; the hybrid "
            "score is a rank fusion: use similarity_search_with_score"
        )

    @staticmethod
    def _cosine_relevance_score_fn_similarity(similarity: float) -> float:
        return max(0.0, min(1.0, (1.0 + similarity) / 2.0))


class FastragRetriever(BaseRetriever):
    """A LangChain retriever over a `fastrag.Collection`.

    >>> retriever = FastragRetriever(collection=col, k=5, filter={"lang": "en"})
    >>> retriever.invoke("hybrid search", k=3)          # k, filter, method per call too

    With `score_key` set, each document's metadata also holds its score under that key.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    collection: Collection
    k: int = 4
    filter: dict[str, Any] | None = None
    method: Any = "hybrid"
    score_key: str | None = None

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **kwargs: Any) -> list[Document]:
        k = kwargs.pop("k", self.k)
        flt = _filter(kwargs.pop("filter", self.filter))
        method = kwargs.pop("method", self.method)
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")
        results = search(self.collection, query, k, method=method, filter=flt)
        return [_document(r, self.score_key) for r in results]
