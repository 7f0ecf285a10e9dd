"""Multi-stage search: retrievers, fusion, rerank stages, and results with every stage's scores."""

from __future__ import annotations

from fastrag.search.fusion import FUSIONS, dbsf, fuse, minmax, rrf, zscore
from fastrag.search.pipeline import (
    CrossEncoderRerank,
    DenseRescore,
    MaxSimRerank,
    Pipeline,
    Reranker,
    Result,
    Retriever,
    StageScore,
    default_pipeline,
    dense_weight,
)

__all__ = [
    "FUSIONS",
    "CrossEncoderRerank",
    "DenseRescore",
    "MaxSimRerank",
    "Pipeline",
    "Reranker",
    "Result",
    "Retriever",
    "StageScore",
    "dbsf",
    "default_pipeline",
    "dense_weight",
    "fuse",
    "minmax",
    "rrf",
    "zscore",
]
