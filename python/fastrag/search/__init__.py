"""Multi-stage search: retrievers, fusion, rerank stages, and results with every stage's scores."""

from __future__ import annotations

from fastrag.search.corpus import ChunkHit, Corpus, Document
from fastrag.search.fusion import FUSIONS, dbsf, fuse, minmax, rrf, zscore
from fastrag.search.pipeline import (
    Pipeline,
    Result,
    StageScore,
    default_pipeline,
    dense_weight,
    fused_pipeline,
)
from fastrag.search.retrievers import (
    RETRIEVERS,
    BaseRetriever,
    BM25Retriever,
    BM42Retriever,
    DenseRetriever,
    LateChunkRetriever,
    Retriever,
    SpladeRetriever,
)
from fastrag.search.stages import CrossEncoderRerank, DenseRescore, MaxSimRerank, Reranker

__all__ = [
    "FUSIONS",
    "RETRIEVERS",
    "BM25Retriever",
    "BM42Retriever",
    "BaseRetriever",
    "ChunkHit",
    "Corpus",
    "CrossEncoderRerank",
    "DenseRescore",
    "DenseRetriever",
    "Document",
    "LateChunkRetriever",
    "MaxSimRerank",
    "Pipeline",
    "Reranker",
    "Result",
    "Retriever",
    "SpladeRetriever",
    "StageScore",
    "dbsf",
    "default_pipeline",
    "dense_weight",
    "fuse",
    "fused_pipeline",
    "minmax",
    "rrf",
    "zscore",
]
