"""Multi-stage search: retrievers, fusion, rerank stages, and results with every stage's scores."""

from __future__ import annotations

from fastrag.search.corpus import ChunkHit, Corpus, Document
from fastrag.search.fusion import FUSIONS, dbsf, fuse, minmax, rrf, zscore
from fastrag.search.pipeline import Pipeline, Result, StageScore, default_pipeline, dense_weight
from fastrag.search.retrievers import (
    RETRIEVERS,
    BaseRetriever,
    BM25Retriever,
    DenseRetriever,
    Retriever,
)
from fastrag.search.stages import CrossEncoderRerank, DenseRescore, MaxSimRerank, Reranker

__all__ = [
    "FUSIONS",
    "RETRIEVERS",
    "BM25Retriever",
    "BaseRetriever",
    "ChunkHit",
    "Corpus",
    "CrossEncoderRerank",
    "DenseRescore",
    "DenseRetriever",
    "Document",
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
