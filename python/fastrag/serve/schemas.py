"""Request and response bodies of the HTTP API (pydantic models; they make the OpenAPI schema).

Our own endpoints refuse unknown fields and values of the wrong JSON type (strict: "10" is not
an int); the OpenAI / Cohere / Jina shaped ones ignore fields they do not use, as clients of
those APIs send extra ones.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

STRICT = ConfigDict(extra="forbid", strict=True)
LENIENT = ConfigDict(extra="ignore", strict=True)


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error: ``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}``."""

    error: ErrorBody


# ----------------------------------------------------------------------------- search
class SearchRequest(BaseModel):
    model_config = STRICT
    query: str | list[str] = Field(description="one query, or a batch of queries")
    k: int = Field(10, description="documents per query")
    method: str = Field("hybrid", description="hybrid, bm25, dense, splade, bm42 or late")
    retrievers: list[str] | None = Field(
        None, description="legs fused with RRF instead of method, e.g. [\"bm25\", \"dense\"]")
    filter: dict[str, Any] | None = Field(
        None, description='metadata filter, e.g. {"lang": "en", "year": {"$gte": 2020}}')
    explain: bool = Field(False, description="every stage's score and rank per hit")
    return_text: bool = Field(False, description="also return each document's whole text")


class StageOut(BaseModel):
    score: float
    rank: int


class Hit(BaseModel):
    id: str
    score: float
    span: tuple[int, int] = Field(description="characters of the best chunk in the text")
    passage: str
    metadata: dict[str, Any]
    stages: dict[str, StageOut] = {}
    skipped: dict[str, str] = Field({}, description="with explain: legs left out, and why")
    text: str | None = None


class SearchResponse(BaseModel):
    results: list[Hit] | list[list[Hit]] = Field(
        description="hits for a single query; a list of hit lists for a batch")
    took_ms: float


# ----------------------------------------------------------------------------- documents
class DocumentIn(BaseModel):
    model_config = STRICT
    id: str | None = None
    text: str
    metadata: dict[str, Any] | None = None


class AddRequest(BaseModel):
    model_config = STRICT
    documents: list[DocumentIn]


class AddResponse(BaseModel):
    ids: list[str]
    documents: int
    generation: int


class DeleteRequest(BaseModel):
    model_config = STRICT
    ids: list[str]
    missing: Literal["raise", "ignore"] = "raise"


class DeleteResponse(BaseModel):
    deleted: int
    documents: int
    generation: int


# ----------------------------------------------------------------------------- OpenAI embeddings
class EmbeddingsRequest(BaseModel):
    model_config = LENIENT
    model: str = Field(description="any name: the collection's encoder answers")
    input: str | list[str]
    dimensions: int | None = Field(None, description="Matryoshka cut (renormalised)")
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None


class EmbeddingOut(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingOut]
    model: str
    usage: Usage


# ----------------------------------------------------------------------------- rerank
class RerankDocument(BaseModel):
    model_config = LENIENT
    text: str


class RerankRequest(BaseModel):
    model_config = LENIENT
    model: str | None = None
    query: str
    documents: list[str | RerankDocument]
    top_n: int | None = None
    return_documents: bool = False


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]
    usage: dict[str, int]
    meta: dict[str, Any]
