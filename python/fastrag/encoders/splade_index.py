"""SPLADE on the impact index: documents encoded by a masked-LM model into term weights.

Queries are encoded by the model, or without it ("idf" / "ones": the query's tokens weighted
by their idf or 1).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from fastrag._core import IndexFormatError
from fastrag.encoders.models import SpladeEncoder
from fastrag.index.base import as_batch, check_int
from fastrag.index.csr import is_sparse_input, pairs_csr, special_ids, text_list, warn_empty
from fastrag.index.impact import ImpactIndex
from fastrag.index.results import DocId, SearchResults

SPLADE_QUERY_MODES = ("model", "idf", "ones")


class SpladeIndex(ImpactIndex):
    """SPLADE: documents encoded by a masked-LM model into term weights, scored by dot product.

    >>> index = SpladeIndex()                         # splade-tiny (the cognition package)
    >>> index.add(["first document", "second one"], ids=["a", "b"])
    >>> index.search("which document?", k=1)

    `add` and `search` take texts, or sparse vectors over the model's vocabulary as
    `ImpactIndex` does (e.g. from ``encoder.encode``). A blank text is an empty vector.

    Args:
        encoder: a `fastrag.SpladeEncoder`, or a model name for one (default "splade-tiny").
            Its fingerprint is saved with the index, and `load(path, encoder=...)` refuses
            another model.
        top_k: the heaviest terms kept per document (None: every term the model gives a
            weight). Static pruning: fewer postings, faster and approximate search.
        query_mode: how query texts become vectors: "model" (encoded by the model), "idf"
            (inference-free: the model's tokenizer, each distinct token weighted by its idf
            over the indexed documents) or "ones" (each distinct token weighted 1).
        quantize: see `ImpactIndex` ("uint8" models an 8-bit index's precision).
        max_weight: see `ImpactIndex`.
        batch_size: encoder batch size.
    """

    _FORMAT = "fastrag.splade"

    def __init__(
        self,
        encoder: SpladeEncoder | str | os.PathLike[str] | None = None,
        *,
        top_k: int | None = None,
        query_mode: str = "model",
        quantize: str | None = None,
        max_weight: float | None = None,
        batch_size: int = 32,
    ) -> None:
        encoder = _splade_encoder(encoder)
        super().__init__(
            encoder.vocab_size, quantize=quantize, max_weight=max_weight, doc_terms=top_k
        )
        self.query_mode = _check_mode(query_mode)
        self.batch_size = check_int(batch_size, "batch_size")
        self._encoder: SpladeEncoder | None = encoder
        self._fingerprint: str | None = encoder.fingerprint

    @property
    def top_k(self) -> int | None:
        """The heaviest terms kept per document (None: all of them)."""
        return self.doc_terms

    @property
    def encoder(self) -> SpladeEncoder | None:
        """The SPLADE model that encodes documents and (query_mode="model") queries."""
        return self._encoder

    @property
    def fingerprint(self) -> str | None:
        """The fingerprint of the model whose vectors this index holds."""
        return self._fingerprint

    def _attach(self, encoder: SpladeEncoder | str | os.PathLike[str]) -> None:
        encoder = _splade_encoder(encoder)
        if self._fingerprint is not None and encoder.fingerprint != self._fingerprint:
            raise ValueError(
                f"this index was built with SPLADE model {self._fingerprint}, not "
                f"{encoder.fingerprint}: term weights of another model are not comparable; "
                "re-index, or load the index with the model it was built with"
            )
        if self.vocab_size is not None and encoder.vocab_size != self.vocab_size:
            raise ValueError(
                f"the model's vocabulary has {encoder.vocab_size} terms, the index "
                f"{self.vocab_size}"
            )
        self._encoder, self._fingerprint = encoder, encoder.fingerprint

    def _need_encoder(self) -> SpladeEncoder:
        if self._encoder is None:
            raise TypeError(
                "this index has no SPLADE encoder to encode texts (load it with encoder=...); "
                "pass sparse vectors"
            )
        return self._encoder

    # ------------------------------------------------------------------ encoding
    def encode_documents(self, texts: Sequence[str] | str) -> list[tuple[np.ndarray, np.ndarray]]:
        """(term ids, weights) of each text as the model gives them, `top_k` terms at most;
        blank texts give empty vectors."""
        texts = text_list(texts, "texts")
        return self._encode(texts, self.top_k)

    def _encode(
        self, texts: list[str], top_k: int | None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        encoder = self._need_encoder()
        empty = (np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32))
        out = [empty] * len(texts)
        kept = [i for i, t in enumerate(texts) if t.strip()]
        if kept:
            vectors = encoder.encode(
                [texts[i] for i in kept], top_k=top_k, batch_size=self.batch_size
            )
            for i, v in zip(kept, vectors, strict=True):
                out[i] = v
        return out

    def encode_queries(
        self, queries: Sequence[str] | str, query_mode: str | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(term ids, weights) of each query text in `query_mode` (default the index's)."""
        queries = text_list(queries, "queries")
        mode = self.query_mode if query_mode is None else _check_mode(query_mode)
        if mode == "model":
            return self._encode(queries, None)
        tokenizer = self._need_encoder().model.tokenizer
        special = special_ids(tokenizer)
        out: list[tuple[np.ndarray, np.ndarray]] = []
        encodings = tokenizer.encode_batch(queries, add_special_tokens=False) if queries else []
        for enc in encodings:
            terms = np.array(sorted(set(enc.ids) - special), dtype=np.int64)
            terms = terms[terms < self._vocab_limit]
            ones = np.ones(len(terms), dtype=np.float32)
            weights = self.idf(terms) if mode == "idf" else ones
            out.append((terms.astype(np.uint32), weights))
        return out

    # ------------------------------------------------------------------ building / searching
    def add(self, docs: Any, ids: Iterable[DocId] | DocId | None = None) -> None:
        """Adds texts (encoded by the model) or sparse vectors; see `ImpactIndex.add`."""
        if is_sparse_input(docs):
            super().add(docs, ids)
            return
        docs, ids = as_batch(docs, ids)
        texts = text_list(docs, "documents")
        self._ids.new_ids(ids, len(texts))  # check the ids before the (slow) encoding
        vectors = self.encode_documents(texts)
        empty = [i for i, t in enumerate(texts) if t.strip() and not len(vectors[i][0])]
        warn_empty(texts, empty, "SPLADE terms")
        self._add_csr(pairs_csr(vectors), ids)

    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        query_mode: str | None = None,
        threads: int = 0,
        filter: Iterable[DocId] | DocId | None = None,
        algorithm: str = "auto",
        query_terms: int | None = None,
    ) -> SearchResults:
        """Top-k documents for query texts (encoded in `query_mode`, default the index's) or
        sparse query vectors; the other options are `ImpactIndex.search`'s."""
        if is_sparse_input(queries):
            return super().search(
                queries, k, threads=threads, filter=filter, algorithm=algorithm,
                query_terms=query_terms,
            )
        return self._search_encoded(
            k,
            lambda: pairs_csr(self.encode_queries(queries, query_mode)),
            threads=threads, filter=filter, algorithm=algorithm, query_terms=query_terms,
        )

    def __repr__(self) -> str:
        return (
            f"SpladeIndex(model={self._fingerprint!r}, top_k={self.top_k}, "
            f"query_mode={self.query_mode!r}, quantize={self.quantize!r}, docs={len(self)})"
        )

    # ------------------------------------------------------------------ persistence
    def _meta(self) -> dict[str, Any]:
        return {
            **super()._meta(),
            "encoder": self._fingerprint,
            "query_mode": self.query_mode,
            "batch_size": self.batch_size,
        }

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        encoder: SpladeEncoder | str | os.PathLike[str] | None = None,
        mmap: bool = False,
    ) -> SpladeIndex:
        """Loads a saved index. `encoder` (needed to search with texts) must be the model the
        index was built with (same fingerprint), else ValueError."""
        index, meta = cls._open(path, mmap)
        fp = meta.get("encoder")
        mode = meta.get("query_mode", "model")
        if not isinstance(fp, str) or mode not in SPLADE_QUERY_MODES:
            raise IndexFormatError(f"{path} has invalid SPLADE settings")
        index.query_mode = mode
        index._restore_encoder(meta, fp, 32)
        if encoder is not None:
            index._attach(encoder)
        return index


def _check_mode(mode: object) -> str:
    if mode not in SPLADE_QUERY_MODES:
        raise ValueError(f"query_mode must be one of {', '.join(SPLADE_QUERY_MODES)}, got {mode!r}")
    return str(mode)


def _splade_encoder(encoder: Any) -> SpladeEncoder:
    if encoder is None:
        return SpladeEncoder()
    if isinstance(encoder, (str, os.PathLike)):
        return SpladeEncoder(encoder)
    if not isinstance(encoder, SpladeEncoder):
        raise TypeError(f"encoder must be a SpladeEncoder or a model name, got {encoder!r}")
    return encoder
