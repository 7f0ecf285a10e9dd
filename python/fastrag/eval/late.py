"""Evaluation method "late": chunk vectors (late or naive chunking), a document scored by its best
chunk."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from fastrag.eval.datasets import Dataset
from fastrag.eval.runner import Run, register_method


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        if value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if value.strip().lower() in ("0", "false", "no", "off", "", "none"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    return bool(value)


def _int_or_none(value: Any) -> int | None:
    return None if value in (None, "", "none", "None") else int(value)


def best_chunk_run(
    index: Any, chunk_docs: list[str], query_vectors: np.ndarray, query_ids: list[str], depth: int
) -> Run:
    """{query: {doc: best chunk score}} for the `depth` best documents, by exact search.

    The first time a document appears in a chunk ranking is its best chunk, so the first
    `depth` distinct documents of the top chunks are the `depth` best documents: the number
    of chunks searched doubles until that many documents show up (or all chunks are ranked).
    """
    n_chunks = len(chunk_docs)
    if not n_chunks:
        return {q: {} for q in query_ids}
    run: Run = {}
    todo = list(range(len(query_ids)))
    k = min(n_chunks, 4 * depth)
    while todo:
        results = index.search(query_vectors[todo], k=k, exact=True)
        short = []
        for j, row in enumerate(todo):
            scores: dict[str, float] = {}
            for h in results[j]:
                doc = chunk_docs[int(h.id)]
                if doc not in scores:
                    scores[doc] = float(h.score)
                    if len(scores) == depth:
                        break
            if len(scores) < depth and k < n_chunks:
                short.append(row)
            else:
                run[query_ids[row]] = scores
        todo, k = short, min(n_chunks, 2 * k)
    return {q: run[q] for q in query_ids}


@register_method("late")
def run_late(dataset: Dataset, depth: int, options: dict[str, Any]) -> Run:
    """Chunk-level dense retrieval, a document scored by its best chunk (max).

    Options: model (default "default": all-MiniLM-L6-v2 offline), chunker ("sentence",
    "paragraph" or "window"), naive (False: late chunking, one forward pass per document with
    macro-windows past the model's window; True: each chunk encoded on its own),
    max_chunk_tokens (merge sentences / paragraphs up to it; the window size), overlap
    (macro-window overlap, default 0.5), long (default True), language, batch_size, threads,
    quantize, cache_dir. Chunk vectors go into a `DenseIndex` searched exactly.
    """
    from fastrag.encoders import TextEncoder
    from fastrag.encoders.late import LateChunker
    from fastrag.index import DenseIndex

    threads = int(options.get("threads", 0))
    encoder = TextEncoder(
        str(options.get("model", "default")),
        quantize=options.get("quantize"),
        threads=threads,
        cache_dir=options.get("cache_dir"),
    )
    overlap = options.get("overlap", 0.5)
    overlap = float(overlap) if "." in str(overlap) else int(overlap)
    late = LateChunker(
        encoder,
        str(options.get("chunker", "sentence")),
        max_chunk_tokens=_int_or_none(options.get("max_chunk_tokens")),
        naive=_flag(options.get("naive", False)),
        long=_flag(options.get("long", True)),
        overlap=overlap,
        language=str(options.get("language", "auto")),
        batch_size=_int_or_none(options.get("batch_size")),
        threads=threads,
    )
    doc_ids, texts = dataset.documents()
    t0 = time.perf_counter()
    chunk_docs: list[str] = []
    vectors: list[np.ndarray] = []
    for doc_id, chunks in zip(doc_ids, late.encode(texts), strict=True):
        for _, v in chunks:
            chunk_docs.append(doc_id)
            vectors.append(v)
    index = DenseIndex(encoder.dim, metric="ip")
    if vectors:
        index.add(np.stack(vectors), ids=list(range(len(vectors))), threads=threads)
    t1 = time.perf_counter()
    query_ids, queries = dataset.judged_queries()
    qv = encoder.encode_queries(queries, batch_size=32)
    run = best_chunk_run(index, chunk_docs, qv, query_ids, depth)
    t2 = time.perf_counter()
    options["_timings"] = {"index_seconds": t1 - t0, "search_seconds": t2 - t1}
    return run
