"""The work behind the HTTP endpoints, on the public Collection API only (no web framework here).

One writer `Collection` takes every change, one request at a time (add or delete, then commit,
or a rollback on failure). Searches run on a pool of reader `Collection`s, one per search
thread: a reader sees only committed generations (it catches up with the writer's commits on
its next search), so readers keep reading the last committed state while a write is under
way. All of them share one encoder, whose query runs go through the `MicroBatcher`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastrag._core import IndexFormatError
from fastrag.collection import Collection, CollectionError
from fastrag.encoders import CrossEncoder, Encoder, TextEncoder, matryoshka
from fastrag.encoders.base import Kind, check_texts
from fastrag.search import Pipeline, fused_pipeline
from fastrag.search.pipeline import Result, default_pipeline
from fastrag.serve.batcher import BatchHook, MicroBatcher
from fastrag.serve.config import Limits, ServeConfig

log = logging.getLogger(__name__)

METHODS = ("hybrid", "bm25", "dense", "splade", "bm42", "late")


class RequestError(ValueError):
    """A request the service refuses: HTTP `status`, a message, the offending field."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


@dataclass
class Embedded:
    """Vectors of /v1/embeddings and the number of tokens the model read."""

    vectors: np.ndarray
    tokens: int


def check_finite(value: Any, where: str) -> None:
    """Refuses NaN and infinities anywhere in a JSON value (Python's json reads them)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise RequestError(f"{where} holds {value!r}; use finite numbers", param=where)
    if isinstance(value, Mapping):
        for k, v in value.items():
            check_finite(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_finite(v, f"{where}[{i}]")


def checked_texts(texts: Sequence[str], name: str, max_chars: int) -> list[str]:
    """Non-empty, valid Unicode texts of at most `max_chars` characters (RequestError)."""
    try:
        out = check_texts(list(texts), name=name)
    except (TypeError, ValueError) as e:
        raise RequestError(str(e), param=name) from e
    for i, t in enumerate(out):
        if len(t) > max_chars:
            raise RequestError(f"{name}[{i}] has {len(t)} characters; the limit is {max_chars}",
                               status=413, param=name)
    return out


def check_count(n: int, name: str, limit: int) -> None:
    if n < 1:
        raise RequestError(f"{name} is empty; give at least one", param=name)
    if n > limit:
        raise RequestError(f"{name} has {n} items; the limit is {limit} per request",
                           status=413, param=name)


class Service:
    """A collection folder served to many concurrent requests.

    Args:
        config: `ServeConfig` (collection folder, threads, batching, limits).
        on_batch: called after every encoder run with (requests, texts, seconds).
    """

    def __init__(self, config: ServeConfig, *, on_batch: BatchHook | None = None) -> None:
        self.config = config
        self.limits: Limits = config.limits
        self.writer = Collection.open(config.collection, mmap=True)
        try:
            self.encoder: Encoder | None = self._query_encoder(config.encoder_threads)
        except BaseException:
            self.writer.close()
            raise
        readers: list[Collection] = []
        try:
            for _ in range(config.threads):
                # one SPLADE model for all (onnxruntime sessions run concurrently)
                readers.append(Collection.open(config.collection, encoder=self.encoder,
                                               splade=self.writer.splade, mmap=True))
            self.reranker = (CrossEncoder(config.rerank_model)
                             if config.rerank_model is not None else None)
        except BaseException:
            for r in readers:
                r.close()
            self.writer.close()
            raise
        self._readers: queue.Queue[Collection] = queue.Queue()
        for r in readers:
            self._readers.put(r)
        self._all_readers = readers
        self._search_pool = ThreadPoolExecutor(len(readers), thread_name_prefix="fastrag-search")
        self._write_pool = ThreadPoolExecutor(1, thread_name_prefix="fastrag-write")
        self._write_lock = threading.Lock()
        self._pipelines: dict[tuple[str, ...], Pipeline] = {}
        self.legs = self.writer.legs()
        self.batcher: MicroBatcher | None = None
        if self.encoder is not None:
            self.batcher = MicroBatcher(
                self._encode, max_batch=config.max_batch_texts, max_wait_ms=config.max_wait_ms,
                enabled=config.batching, threads=len(readers), runners=len(readers),
                on_batch=on_batch,
            )

    def _query_encoder(self, threads: int) -> Encoder | None:
        """The encoder for queries: the writer's model again on `threads` onnxruntime threads
        (the writer keeps every core for bulk adds). Spinning pool threads of a multi-threaded
        session would take the CPU from the event loop and the other runs of a busy server."""
        enc = self.writer.encoder
        info = self.writer.settings.get("encoder") or {}
        model = info.get("model")
        if threads == 0 or not isinstance(enc, TextEncoder) or not isinstance(model, str):
            return enc
        mine = TextEncoder(model, threads=threads, quantize=info.get("quantize"),
                           attentions="cls_attention" in enc.model.output_names)
        return mine if mine.fingerprint == enc.fingerprint else enc

    def _encode(self, texts: list[str], kind: Kind) -> np.ndarray:
        assert self.encoder is not None  # the batcher exists only with an encoder
        return self.encoder.encode(texts, kind=kind, batch_size=self.config.max_batch_texts)

    def close(self) -> None:
        """Finishes queued work, then closes every collection."""
        if self.batcher is not None:
            self.batcher.close()
        self._search_pool.shutdown(wait=True)
        self._write_pool.shutdown(wait=True)
        for r in self._all_readers:
            r.close()
        self.writer.close()

    # ------------------------------------------------------------------ search
    def pipeline(self, method: str, retrievers: Sequence[str] | None) -> Pipeline:
        """The pipeline of a method name or of legs fused with RRF (cached)."""
        if retrievers is not None:
            names = tuple(r.strip() for r in retrievers)
            unknown = [n for n in names if n not in self.legs]
            if not names or unknown:
                raise RequestError(
                    f"retrievers must name legs of this collection ({', '.join(self.legs)}); "
                    f"got {list(retrievers)!r}", param="retrievers")
            key = ("fused", *names)
        else:
            if method not in METHODS:
                raise RequestError(f"method must be one of {', '.join(METHODS)}, got {method!r}",
                                   param="method")
            if method != "hybrid" and method not in self.legs:
                raise RequestError(f"this collection has no {method!r} index; it has "
                                   f"{', '.join(self.legs)}", param="method")
            key = (method,)
        found = self._pipelines.get(key)
        if found is None:
            found = (fused_pipeline(list(key[1:])) if key[0] == "fused"
                     else default_pipeline(self.writer, method))
            self._pipelines[key] = found
        return found

    @staticmethod
    def needs_vectors(pipeline: Pipeline) -> bool:
        """Whether a stage of `pipeline` reads the query vector of the collection's encoder."""
        return any(r.uses_encoder for r in pipeline.retrievers) or any(
            getattr(rr, "needs_vector", False) for rr, _ in pipeline.rerankers)

    def check_search(self, queries: Sequence[str], k: int,
                     filter: Mapping[str, Any] | None) -> list[str]:
        lim = self.limits
        check_count(len(queries), "query", lim.max_batch)
        if not 1 <= k <= lim.max_k:
            raise RequestError(f"k must be in 1..{lim.max_k}, got {k}", param="k")
        if filter is not None:
            check_finite(dict(filter), "filter")
        return checked_texts(queries, "query", lim.max_query_chars)

    async def search(
        self, queries: Sequence[str], *, k: int = 10, method: str = "hybrid",
        retrievers: Sequence[str] | None = None, filter: Mapping[str, Any] | None = None,
        explain: bool = False,
    ) -> list[list[Result]]:
        """Results per query: the query vectors from the micro-batcher, then one
        `search_batch` call on a free reader in the search pool."""
        texts = self.check_search(queries, k, filter)
        pipeline = self.pipeline(method, retrievers)
        vectors = None
        if self.batcher is not None and self.needs_vectors(pipeline):
            vectors = await asyncio.wrap_future(self.batcher.submit(texts, "query"))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._search_pool, self._search_sync, texts, k, pipeline, filter, explain, vectors)

    def _search_sync(self, texts: list[str], k: int, pipeline: Pipeline,
                     filter: Mapping[str, Any] | None, explain: bool,
                     vectors: np.ndarray | None) -> list[list[Result]]:
        reader = self._readers.get()
        try:
            return reader.search_batch(texts, k, method=pipeline, filter=filter,
                                       explain=explain, vectors=vectors, threads=1)
        except (IndexFormatError, CollectionError):
            raise  # the collection's fault, not the request's
        except (TypeError, ValueError) as e:  # a filter naming no field, a bad operator...
            raise RequestError(str(e), param="filter" if filter is not None else None) from e
        finally:
            self._readers.put(reader)

    # ------------------------------------------------------------------ writes
    async def add(self, texts: Sequence[str], ids: Sequence[str | None],
                  metadata: Sequence[Mapping[str, Any] | None]) -> tuple[list[str], int, int]:
        """Adds (upserts) documents and commits, all or nothing; returns their ids, then the
        collection's document count and generation after the commit."""
        lim = self.limits
        check_count(len(texts), "documents", lim.max_documents)
        checked = checked_texts(texts, "documents.text", lim.max_document_chars)
        for i, m in enumerate(metadata):
            if m is not None:
                check_finite(dict(m), f"documents[{i}].metadata")
        given = [d for d in ids if d is not None]
        if given and len(given) != len(ids):
            raise RequestError("give an id to every document or to none", param="documents.id")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._write_pool, self._write, "add", checked, list(given) or None, list(metadata))

    async def delete(self, ids: Sequence[str], *,
                     missing: str = "raise") -> tuple[int, int, int]:
        """Deletes documents and commits; an unknown id (missing="raise") deletes nothing.
        Returns how many were deleted, then the document count and generation."""
        check_count(len(ids), "ids", self.limits.max_documents)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._write_pool, self._write, "delete", list(ids),
                                          missing, None)

    def _write(self, what: str, a: Any, b: Any, c: Any) -> Any:
        with self._write_lock:
            try:
                out: list[str] | int
                if what == "add":
                    out = self.writer.add(a, ids=b, metadata=c)
                else:
                    out = self.writer.delete(a, missing=b)
                self.writer.commit()
                state = self.writer.info()
            except KeyError as e:
                self.writer.rollback()
                raise RequestError(str(e.args[0]) if e.args else str(e), status=404,
                                   param="ids") from e
            except (IndexFormatError, CollectionError):
                self.writer.rollback()
                raise  # the collection's fault, not the request's
            except (TypeError, ValueError) as e:
                self.writer.rollback()
                raise RequestError(str(e)) from e
            except BaseException:
                self.writer.rollback()
                raise
            return out, int(state["documents"]), int(state["generation"])

    # ------------------------------------------------------------------ info
    async def info(self) -> dict[str, Any]:
        """The collection's counts and settings (no filesystem path)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._search_pool, self._info_sync)

    def _info_sync(self) -> dict[str, Any]:
        reader = self._readers.get()
        try:
            found = reader.info()
        finally:
            self._readers.put(reader)
        found.pop("path", None)
        found.pop("uncommitted_changes", None)
        found["legs"] = list(self.legs)
        found["methods"] = [m for m in METHODS if m == "hybrid" or m in self.legs]
        found["model"] = None if self.encoder is None else self.encoder.name
        found["dim"] = None if self.encoder is None else self.encoder.dim
        found["batching"] = self.config.batching
        return found

    # ------------------------------------------------------------------ models
    def _need_encoder(self) -> MicroBatcher:
        if self.batcher is None:
            raise RequestError("this collection has no encoder (it was built with --model "
                               "none): embeddings and rerank need one", status=501)
        return self.batcher

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the encoder reads for `texts` (special tokens included, after truncation)."""
        tok = getattr(getattr(self.encoder, "model", None), "tokenizer", None)
        if tok is None:
            return sum(len(t.split()) for t in texts)
        return sum(len(e.ids) for e in tok.encode_batch(list(texts)))

    async def embed(self, texts: Sequence[str], *, dimensions: int | None = None,
                    kind: Kind = "query") -> Embedded:
        """Vectors of `texts` (micro-batched with concurrent requests), Matryoshka-cut."""
        batcher = self._need_encoder()
        assert self.encoder is not None
        check_count(len(texts), "input", self.limits.max_batch)
        checked = checked_texts(texts, "input", self.limits.max_query_chars)
        if dimensions is not None and not 1 <= dimensions <= self.encoder.dim:
            raise RequestError(f"dimensions must be in 1..{self.encoder.dim}, got {dimensions}",
                               param="dimensions")
        vectors = await asyncio.wrap_future(batcher.submit(checked, kind))
        if dimensions is not None and dimensions != self.encoder.dim:
            vectors = matryoshka(vectors, dimensions, renormalize=self.encoder.normalized)
        return Embedded(vectors, self.count_tokens(checked))

    async def rerank(self, query: str, documents: Sequence[str]) -> tuple[np.ndarray, int]:
        """Relevance of each document to `query` in [0, 1] (the cross-encoder's sigmoid, or
        the cosine of the collection's encoder mapped from [-1, 1]), and the tokens read."""
        lim = self.limits
        (q,) = checked_texts([query], "query", lim.max_query_chars)
        check_count(len(documents), "documents", lim.max_k)
        docs = checked_texts(documents, "documents", lim.max_document_chars)
        if self.reranker is not None:
            loop = asyncio.get_running_loop()
            logits = await loop.run_in_executor(self._search_pool, self.reranker.score, q, docs)
            scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
            return scores, self.count_tokens([q]) + self.count_tokens(docs)
        batcher = self._need_encoder()
        qv, dv = await asyncio.gather(asyncio.wrap_future(batcher.submit([q], "query")),
                                      asyncio.wrap_future(batcher.submit(docs, "document")))
        qv, dv = qv.astype(np.float64), dv.astype(np.float64)
        cos = (dv @ qv[0]) / np.maximum(np.linalg.norm(dv, axis=1) * np.linalg.norm(qv[0]),
                                        1e-12)
        return (cos + 1.0) / 2.0, self.count_tokens([q]) + self.count_tokens(docs)
