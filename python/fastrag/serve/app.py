"""The HTTP API of `fastrag serve` (FastAPI): search, documents, OpenAI embeddings, rerank,
info, health, Prometheus metrics and the web search page.

`Guard`, a plain ASGI middleware in front of everything, answers 503 while the server drains,
checks the bearer API key in constant time, refuses bodies over the size limit and bodies
that are not UTF-8, and records every request's endpoint, status and latency.
"""

from __future__ import annotations

import base64
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f'fastrag serve needs the server extra: pip install "fastrag-engine[server]" ({e})'
    ) from e

import numpy as np

from fastrag._core import IndexFormatError
from fastrag.collection import CollectionError
from fastrag.search.pipeline import Result
from fastrag.serve import schemas as S
from fastrag.serve.config import ServeConfig
from fastrag.serve.metrics import CONTENT_TYPE, Metrics
from fastrag.serve.service import RequestError, Service

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/", "/health", "/docs", "/docs/oauth2-redirect", "/redoc",
                        "/openapi.json"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def error_json(status: int, message: str, kind: str, param: str | None = None,
               headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The error shape of every endpoint (OpenAI's): {"error": {message, type, param, code}}."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": str(status)}}
    return JSONResponse(body, status_code=status, headers=headers)


class Guard:
    """ASGI middleware: draining, API key, body limit and UTF-8, per-request metrics."""

    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body: int, metrics: Metrics,
                 endpoints: frozenset[str]) -> None:
        self.app = app
        self.api_key = None if api_key is None else api_key.encode("utf-8")
        self.max_body = max_body
        self.metrics = metrics
        self.endpoints = endpoints
        self.draining = False  # set by the server on SIGTERM / SIGINT
        self.in_flight = 0

    def _authorized(self, scope: Scope) -> bool:
        if self.api_key is None or scope["path"] in OPEN_PATHS:
            return True
        given = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                given = value
                break
        scheme, _, token = given.partition(b" ")
        # compare_digest: the time taken does not depend on where the first difference is
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.api_key)

    async def _body(self, scope: Scope, receive: Receive) -> bytes | JSONResponse:
        """The whole body (bounded), or the error response that refuses it."""
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return error_json(400, "Content-Length is not a number", "invalid_request")
                if declared > self.max_body:
                    return self._too_large(declared)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return self._too_large(size)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        ctype = b""
        for name, value in scope.get("headers", []):
            if name == b"content-type":
                ctype = value.lower()
        if body and b"json" not in ctype:
            return error_json(415, "send the body as JSON with the header 'Content-Type: "
                              f"application/json' (got {ctype.decode('latin-1')!r})",
                              "invalid_request")
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as e:
            return error_json(400, f"the body is not valid UTF-8 ({e.reason} at byte "
                              f"{e.start}); send JSON encoded as UTF-8", "invalid_request")
        return body

    def _too_large(self, size: int) -> JSONResponse:
        return error_json(413, f"the body has {size} bytes or more; the limit is "
                          f"{self.max_body} (start the server with a larger --max-body-mb)",
                          "request_too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in self.endpoints else "other"
        status = 500
        t0 = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            refused: JSONResponse | None = None
            if self.draining:
                refused = error_json(503, "the server is shutting down; retry later or on "
                                     "another instance", "unavailable",
                                     headers={"Connection": "close", "Retry-After": "1"})
            elif not self._authorized(scope):
                refused = error_json(401, "a valid API key is required: send the header "
                                     "'Authorization: Bearer <key>'", "authentication_error",
                                     headers={"WWW-Authenticate": "Bearer"})
            if refused is None and scope["method"] in BODY_METHODS:
                got = await self._body(scope, receive)
                if isinstance(got, JSONResponse):
                    refused = got
                else:
                    receive = _replay(got, receive)
            if refused is not None:
                await refused(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()
            self.metrics.on_request(endpoint, scope["method"], status, time.perf_counter() - t0)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def hit_json(r: Result, explain: bool, text: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"id": r.id, "score": float(r.score), "span": list(r.span),
                           "passage": r.passage, "metadata": r.metadata}
    if explain:
        out["stages"] = {n: {"score": float(st.score), "rank": st.rank}
                         for n, st in r.stages.items()}
        skipped = getattr(r, "skipped", None)
        if skipped:
            out["skipped"] = dict(skipped)  # legs adaptive weighting left out, and why
    if text:
        out["text"] = r.text
    return out


def page_html() -> str:
    """The web search page (one HTML file with plain JavaScript)."""
    return resources.files("fastrag.serve").joinpath("static/index.html").read_text("utf-8")


def create_app(service: Service, config: ServeConfig, metrics: Metrics) -> FastAPI:
    """The ASGI application over a running `Service` (closed when the app shuts down)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        yield
        service.close()

    app = FastAPI(
        title="fastrag", version="0.1.0", lifespan=lifespan,
        description="Hybrid search over a fastrag collection, OpenAI-compatible embeddings "
                    "and a Cohere / Jina shaped rerank API.",
        responses={400: {"model": S.ErrorResponse}, 401: {"model": S.ErrorResponse},
                   413: {"model": S.ErrorResponse}, 503: {"model": S.ErrorResponse}},
    )
    _handlers(app)
    _routes(app, service, metrics)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])
    endpoints = frozenset(getattr(r, "path", "") for r in app.routes)
    guard = Guard(app.build_middleware_stack(), api_key=config.api_key,
                  max_body=config.limits.max_body_bytes, metrics=metrics, endpoints=endpoints)
    app.middleware_stack = guard
    app.state.guard = guard
    return app


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(_: Request, e: RequestError) -> JSONResponse:
        kind = "request_too_large" if e.status == 413 else (
            "not_found" if e.status == 404 else "invalid_request")
        return error_json(e.status, str(e), kind, e.param)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        errors = list(e.errors())
        if any(err.get("type") == "json_invalid" for err in errors):
            ctx = errors[0].get("ctx") or {}
            return error_json(400, f"the body is not valid JSON: {ctx.get('error', errors[0])}",
                              "invalid_request")
        parts = []
        for err in errors[:5]:
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{loc or 'body'}: {err.get('msg')}")
        first = ".".join(str(x) for x in errors[0].get("loc", ()) if x != "body") or None
        return error_json(422, "; ".join(parts), "invalid_request", first)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException) -> JSONResponse:
        kind = "not_found" if e.status_code == 404 else "invalid_request"
        return error_json(e.status_code, str(e.detail), kind, headers=e.headers)

    @app.exception_handler(IndexFormatError)
    @app.exception_handler(CollectionError)
    async def collection_error(_: Request, e: Exception) -> JSONResponse:
        log.error("collection error: %s", e)
        return error_json(500, f"the collection could not be read: {e}", "collection_error")

    @app.exception_handler(Exception)
    async def internal_error(_: Request, e: Exception) -> JSONResponse:
        log.exception("internal error")
        return error_json(500, f"internal error ({type(e).__name__}); see the server log",
                          "internal_error")


def _routes(app: FastAPI, service: Service, metrics: Metrics) -> None:
    @app.get("/health", tags=["service"])
    async def health() -> dict[str, str]:
        """Liveness: 200 while the server takes requests (503 once it drains)."""
        return {"status": "ok"}

    @app.get("/info", tags=["service"])
    async def info() -> dict[str, Any]:
        """The collection: documents, chunks, generation, legs, methods, model."""
        return await service.info()

    @app.get("/metrics", tags=["service"], response_class=Response)
    async def prometheus() -> Response:
        """Prometheus text format: requests, latency, encoder batches, queries."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html())

    @app.post("/search", tags=["search"], response_model=S.SearchResponse)
    async def search(req: S.SearchRequest) -> JSONResponse:
        """One query or a batch: k best documents each, with the best chunk's span."""
        t0 = time.perf_counter()
        single = isinstance(req.query, str)
        queries = [req.query] if isinstance(req.query, str) else req.query
        found = await service.search(queries, k=req.k, method=req.method,
                                     retrievers=req.retrievers, filter=req.filter,
                                     explain=req.explain)
        metrics.queries.labels("fused" if req.retrievers else req.method).inc(len(queries))
        rows = [[hit_json(r, req.explain, req.return_text) for r in res] for res in found]
        took = round((time.perf_counter() - t0) * 1000, 3)
        return JSONResponse({"results": rows[0] if single else rows, "took_ms": took})

    @app.post("/documents", tags=["documents"], response_model=S.AddResponse)
    async def add_documents(req: S.AddRequest) -> S.AddResponse:
        """Adds or replaces (by id) documents with metadata, then commits. All or nothing."""
        ids, count, gen = await service.add([d.text for d in req.documents],
                                             [d.id for d in req.documents],
                                             [d.metadata for d in req.documents])
        metrics.documents_written.labels("add").inc(len(ids))
        return S.AddResponse(ids=ids, documents=count, generation=gen)

    @app.delete("/documents", tags=["documents"], response_model=S.DeleteResponse)
    async def delete_documents(req: S.DeleteRequest) -> S.DeleteResponse:
        """Deletes documents by id, then commits; an unknown id is a 404 and deletes nothing
        (unless missing="ignore")."""
        deleted, count, gen = await service.delete(req.ids, missing=req.missing)
        metrics.documents_written.labels("delete").inc(deleted)
        return S.DeleteResponse(deleted=deleted, documents=count, generation=gen)

    @app.post("/v1/embeddings", tags=["models"], response_model=S.EmbeddingsResponse)
    async def embeddings(req: S.EmbeddingsRequest) -> JSONResponse:
        """OpenAI's embeddings API: query embeddings of the collection's encoder."""
        texts = [req.input] if isinstance(req.input, str) else req.input
        got = await service.embed(texts, dimensions=req.dimensions)
        data = []
        for i, row in enumerate(got.vectors):
            vec: Any = (base64.b64encode(np.ascontiguousarray(row, "<f4").tobytes()).decode()
                        if req.encoding_format == "base64" else row.tolist())
            data.append({"object": "embedding", "index": i, "embedding": vec})
        model = service.encoder.name if service.encoder is not None else req.model
        return JSONResponse({"object": "list", "data": data, "model": model,
                             "usage": {"prompt_tokens": got.tokens, "total_tokens": got.tokens}})

    async def rerank(req: S.RerankRequest) -> JSONResponse:
        """Cohere / Jina rerank: documents by relevance to the query, best first."""
        docs = [d if isinstance(d, str) else d.text for d in req.documents]
        if req.top_n is not None and req.top_n < 1:
            raise RequestError(f"top_n must be >= 1, got {req.top_n}", param="top_n")
        scores, tokens = await service.rerank(req.query, docs)
        order = np.argsort(-scores, kind="stable")[: req.top_n or len(docs)]
        results = []
        for i in order.tolist():
            item: dict[str, Any] = {"index": i, "relevance_score": float(scores[i])}
            if req.return_documents:
                item["document"] = {"text": docs[i]}
            results.append(item)
        name = (service.config.rerank_model or
                (service.encoder.name if service.encoder is not None else "none"))
        return JSONResponse({"id": str(uuid.uuid4()), "model": name, "results": results,
                             "usage": {"total_tokens": tokens},
                             "meta": {"billed_units": {"search_units": 1}}})

    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
        app.add_api_route(path, rerank, methods=["POST"], tags=["models"],
                          response_model=S.RerankResponse, include_in_schema=path == "/rerank")

