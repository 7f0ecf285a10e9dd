"""Evaluation methods for learned sparse retrieval: "splade" and "bm42"."""

from __future__ import annotations

from typing import Any

from fastrag.eval.datasets import Dataset
from fastrag.eval.runner import Run, index_and_search, register_method


def _int_or_none(value: Any) -> int | None:
    return None if value in (None, "", "none", "None") else int(value)


@register_method("splade")
def run_splade(dataset: Dataset, depth: int, options: dict[str, Any]) -> Run:
    """SPLADE with options model (default "splade-tiny"), top_k (terms kept per document,
    default all), query_mode ("model", "idf" or "ones"), quantize (None / "uint8"),
    query_terms (static query pruning), batch_size, threads, cache_dir."""
    from fastrag.encoders import SpladeEncoder, SpladeIndex

    threads = int(options.get("threads", 0))
    encoder = SpladeEncoder(
        str(options.get("model", "splade-tiny")),
        threads=threads,
        cache_dir=options.get("cache_dir"),
    )
    index = SpladeIndex(
        encoder,
        top_k=_int_or_none(options.get("top_k")),
        query_mode=str(options.get("query_mode", "model")),
        quantize=options.get("quantize"),
        batch_size=int(options.get("batch_size", 32)),
    )
    return index_and_search(
        index, dataset, depth, options,
        threads=threads, query_terms=_int_or_none(options.get("query_terms")),
    )


@register_method("bm42")
def run_bm42(dataset: Dataset, depth: int, options: dict[str, Any]) -> Run:
    """BM42 with options model (default "default": all-MiniLM-L6-v2, exported with
    attentions), alpha (default 0.5 as fastembed; None: the summed attention), batch_size, threads,
    cache_dir."""
    from fastrag.encoders import BM42Index, TextEncoder

    threads = int(options.get("threads", 0))
    encoder = TextEncoder(
        str(options.get("model", "default")),
        attentions=True,
        threads=threads,
        cache_dir=options.get("cache_dir"),
    )
    alpha = options.get("alpha", 0.5)
    index = BM42Index(
        encoder,
        alpha=None if alpha in (None, "", "none", "None") else float(alpha),
        batch_size=int(options.get("batch_size", 16)),
    )
    return index_and_search(index, dataset, depth, options, threads=threads)
