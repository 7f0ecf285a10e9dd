"""RemoteReranker against a scripted rerank server on 127.0.0.1 (no other network).

The fake server speaks the three styles, told apart by path: ``/v2/rerank`` (Cohere),
``/v1/rerank`` (Jina) and ``/tei/rerank`` (text-embeddings-inference). It checks the request
body like the real services do (422 on a wrong shape), scores by word overlap and returns
results sorted by score, best first, cut to ``top_n``.
"""

from __future__ import annotations

import json
import re
import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

import numpy as np
import pytest

from fastrag.rerank import RemoteReranker, RerankError
from http_fake import ScriptedServer, fixture

STYLE_PATHS = {"cohere": "/v2", "jina": "/v1", "tei": "/tei"}
KEYS_COHERE = {"model", "query", "documents", "top_n", "return_documents"}
KEYS_TEI = {"query", "texts", "raw_scores", "truncate"}
WORDS = ["bm25", "ranking", "dense", "vector", "index", "query", "token", "score", "rerank",
         "passage", "search", "model", "cross", "encoder", "recall"]


def overlap(query: str, passage: str) -> float:
    """The server's relevance: the share of the passage's words that are in the query."""
    q = set(query.lower().split())
    words = passage.lower().split()
    return sum(w in q for w in words) / len(words)


def expected(query: str, passages: list[str]) -> np.ndarray:
    return np.array([overlap(query, p) for p in passages], dtype=np.float32)


def passages(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"p{i} " + " ".join(rng.choice(WORDS, size=int(rng.integers(2, 7))))
            for i in range(n)]


QUERY = "bm25 ranking of a dense vector index"


class FakeServer(ScriptedServer):
    """A rerank endpoint; `script` holds actions taken by the next requests in turn.

    Actions: ("status", code, body_bytes, headers), ("nan",), ("non_json",), ("missing",),
    ("duplicate",), ("out_of_range",), ("string_score",), ("sleep", seconds), ("cap", n),
    ("raw", json_value). Requests with no action left are answered normally.
    """

    def url(self, style: str) -> str:
        return self.root + STYLE_PATHS[style]

    def respond(
        self, handler: BaseHTTPRequestHandler, body: dict[str, Any], action: tuple[Any, ...]
    ) -> None:
        styles = {path + "/rerank": style for style, path in STYLE_PATHS.items()}
        style = styles.get(handler.path)
        if style is None:
            return self.send(handler, 404, b'{"message": "no such route"}')
        if self.scripted(handler, action):
            return None
        kind = action[0]

        tei = style == "tei"
        texts = body.get("texts" if tei else "documents")
        allowed = KEYS_TEI if tei else KEYS_COHERE
        if (set(body) - allowed or not isinstance(body.get("query"), str)
                or not isinstance(texts, list) or not texts):
            return self.send(handler, 422, json.dumps({"error": f"bad body {body}"}).encode())
        key = "score" if tei else "relevance_score"
        results: list[dict[str, Any]] = [
            {"index": i, key: overlap(body["query"], t)} for i, t in enumerate(texts)
        ]
        results.sort(key=lambda r: (-r[key], r["index"]))
        top_n = action[1] if kind == "cap" else body.get("top_n")
        if top_n is not None:
            results = results[:top_n]
        if kind == "nan":
            results[-1][key] = float("nan")  # json.dumps writes NaN, as a sloppy server might
        if kind == "missing":
            results.pop()
        if kind == "duplicate":
            results[-1]["index"] = results[0]["index"]
        if kind == "out_of_range":
            results[0]["index"] = len(texts)
        if kind == "string_score":
            results[0][key] = "0.5"
        answer: Any = results if tei else {"id": "x", "results": results,
                                            "meta": {"billed_units": {"search_units": 1}}}
        return self.send(handler, 200, json.dumps(answer).encode())


@pytest.fixture(autouse=True)
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RERANK_API_KEY", raising=False)


server = fixture(FakeServer)


def make(server: FakeServer, style: str = "cohere", **options: Any) -> RemoteReranker:
    options.setdefault("backoff", 0.001)
    options.setdefault("timeout", 5.0)
    model = options.pop("model", "test-rerank")
    return RemoteReranker(model, base_url=server.url(style), style=style, **options)


# -- order, batching, request shape ------------------------------------------------------------


@pytest.mark.parametrize("style", ["cohere", "jina", "tei"])
def test_scores_aligned_with_input_order(server: FakeServer, style: str) -> None:
    docs = passages(12, seed=1)
    got = make(server, style).score(QUERY, docs)
    want = expected(QUERY, docs)
    assert got.dtype == np.float32 and got.shape == (12,)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert len(set(want.tolist())) > 3  # the server's order really differs from the input's
    assert server.requests[0]["path"] == STYLE_PATHS[style] + "/rerank"


@pytest.mark.parametrize("style", ["cohere", "tei"])
def test_batches_split_and_sent_concurrently(server: FakeServer, style: str) -> None:
    rng = np.random.default_rng(2)
    server.delays = list(rng.uniform(0.02, 0.06, size=7))  # batches finish out of order
    docs = passages(25, seed=2)
    got = make(server, style, batch_size=4, concurrency=3).score(QUERY, docs)
    np.testing.assert_allclose(got, expected(QUERY, docs), rtol=1e-6)
    assert len(server.requests) == 7  # ceil(25 / 4)
    assert 2 <= server.max_inflight <= 3
    field = "texts" if style == "tei" else "documents"
    sent = [body[field] for body in server.bodies()]
    assert sorted(len(b) for b in sent) == [1, 4, 4, 4, 4, 4, 4]
    assert sorted(t for b in sent for t in b) == sorted(docs)  # each passage exactly once
    if style == "cohere":
        assert all(body["top_n"] == len(body["documents"]) for body in server.bodies())


def test_concurrency_one_is_sequential(server: FakeServer) -> None:
    server.delays = [0.01] * 4
    docs = passages(10, seed=3)
    got = make(server, batch_size=3, concurrency=1).score(QUERY, docs)
    np.testing.assert_allclose(got, expected(QUERY, docs), rtol=1e-6)
    assert server.max_inflight == 1
    assert [b["documents"] for b in server.bodies()] == [docs[i:i + 3] for i in range(0, 10, 3)]


@pytest.mark.parametrize("style", ["cohere", "jina"])
def test_request_body_cohere_and_jina(server: FakeServer, style: str) -> None:
    make(server, style).score("what is bm25", ["bm25 is a ranking function", "dense vectors"])
    (request,) = server.requests
    assert request["body"] == {
        "model": "test-rerank", "query": "what is bm25",
        "documents": ["bm25 is a ranking function", "dense vectors"],
        "top_n": 2, "return_documents": False,
    }
    assert request["headers"]["Content-Type"] == "application/json"


def test_request_body_tei(server: FakeServer) -> None:
    make(server, "tei").score("what is bm25", ["bm25 is a ranking function", "dense vectors"])
    assert server.bodies() == [{"query": "what is bm25",
                                "texts": ["bm25 is a ranking function", "dense vectors"],
                                "raw_scores": False}]


def test_model_none_is_left_out(server: FakeServer) -> None:
    rr = make(server, model=None)
    assert rr.name == server.url("cohere")
    rr.score("q bm25", ["bm25"])
    assert "model" not in server.bodies()[0]


def test_empty_passages_send_nothing(server: FakeServer) -> None:
    got = make(server).score(QUERY, [])
    assert got.dtype == np.float32 and got.shape == (0,)
    assert server.requests == []


@pytest.mark.parametrize(
    ("query", "docs", "pattern"),
    [(QUERY, ["fine", "  "], r"passages\[1\] is empty"),
     ("", ["fine"], r"query\[0\] is empty"),
     (QUERY, ["fine", ""], r"passages\[1\] is empty")],
)
def test_empty_text_rejected_before_any_request(
    server: FakeServer, query: str, docs: list[str], pattern: str
) -> None:
    with pytest.raises(ValueError, match=pattern):
        make(server).score(query, docs)
    assert server.requests == []


# -- auth, fingerprint, options ----------------------------------------------------------------


def test_auth_header_only_with_a_key(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    make(server).score("q", ["x"])
    make(server, api_key="sk-test").score("q", ["x"])
    monkeypatch.setenv("RERANK_API_KEY", "sk-env")
    make(server).score("q", ["x"])
    monkeypatch.setenv("COHERE_API_KEY", "co-env")
    make(server, api_key_env="COHERE_API_KEY").score("q", ["x"])
    make(server, api_key="sk-given").score("q", ["x"])  # an explicit key beats the env
    monkeypatch.setenv("RERANK_API_KEY", "")
    make(server).score("q", ["x"])  # an empty key sends no header
    auth = [r["headers"].get("Authorization") for r in server.requests]
    assert auth == [None, "Bearer sk-test", "Bearer sk-env", "Bearer co-env",
                    "Bearer sk-given", None]


def test_fingerprint_and_name(server: FakeServer) -> None:
    a = make(server, api_key="k1")
    b = RemoteReranker("test-rerank", base_url=server.url("cohere") + "/", api_key="k2")
    assert a.fingerprint == b.fingerprint
    assert re.fullmatch(r"remote-rerank:[0-9a-f]{16}", a.fingerprint)
    assert a.fingerprint != make(server, model="other").fingerprint
    assert a.fingerprint != make(server, model=None).fingerprint
    assert a.fingerprint != make(server, "jina").fingerprint
    same_url_other_style = RemoteReranker("test-rerank", base_url=server.url("cohere"),
                                          style="tei")
    assert a.fingerprint != same_url_other_style.fingerprint
    assert a.name == "test-rerank"
    assert "test-rerank" in repr(a) and "k1" not in repr(a)
    assert server.requests == []


@pytest.mark.parametrize(
    "options",
    [{"batch_size": 0}, {"concurrency": 0}, {"max_retries": -1}, {"timeout": 0},
     {"backoff": -1.0}, {"style": "openai"}, {"base_url": "localhost:8080"}, {"model": ""}],
)
def test_bad_options(options: dict[str, Any]) -> None:
    options.setdefault("base_url", "http://127.0.0.1:9")
    model = options.pop("model", "m")
    with pytest.raises(ValueError):
        RemoteReranker(model, **options)


# -- retries and errors ------------------------------------------------------------------------


@pytest.mark.parametrize("code", [429, 500, 502, 503, 504])
def test_transient_errors_are_retried(server: FakeServer, code: int) -> None:
    error = json.dumps({"message": "slow down"}).encode()
    server.script = [("status", code, error, {"Retry-After": "0"})] * 2
    docs = passages(5)
    got = make(server, max_retries=3).score(QUERY, docs)
    np.testing.assert_allclose(got, expected(QUERY, docs), rtol=1e-6)
    assert len(server.requests) == 3
    assert all(b == server.bodies()[0] for b in server.bodies())


def test_retry_after_is_honoured(server: FakeServer) -> None:
    server.script = [("status", 429, b"{}", {"Retry-After": "0.3"})]
    start = time.perf_counter()
    make(server, backoff=0.0).score("q", ["x"])
    assert time.perf_counter() - start >= 0.25
    assert len(server.requests) == 2


def test_retries_exhausted(server: FakeServer, caplog: pytest.LogCaptureFixture) -> None:
    error = json.dumps({"message": "overloaded"}).encode()
    server.script = [("status", 503, error, {})] * 10
    with caplog.at_level("WARNING", logger="fastrag.rerank.remote"), \
            pytest.raises(RerankError, match=r"3 attempt.*503.*overloaded") as info:
        make(server, max_retries=2).score("q", ["x"])
    assert info.value.attempts == 3 and info.value.status == 503
    assert len(server.requests) == 3
    assert sum("retry" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.parametrize(
    ("style", "body", "message"),
    [("cohere", {"message": "invalid request: query cannot be empty"}, "query cannot be empty"),
     ("jina", {"detail": "Model not found"}, "Model not found"),
     ("tei", {"error": "batch size 64 > maximum allowed batch size 32",
              "error_type": "Validation"}, "maximum allowed batch size 32")],
)
def test_client_error_raises_at_once(
    server: FakeServer, style: str, body: dict[str, Any], message: str
) -> None:
    server.script = [("status", 400, json.dumps(body).encode(), {})]
    with pytest.raises(RerankError, match=f"400.*{message}") as info:
        make(server, style).score("q", ["x"])
    assert info.value.status == 400 and info.value.attempts == 1
    assert len(server.requests) == 1


def test_client_error_with_plain_body(server: FakeServer) -> None:
    server.script = [("status", 401, b"invalid api token", {})]
    with pytest.raises(RerankError, match=r"401.*invalid api token"):
        make(server).score("q", ["x"])
    assert len(server.requests) == 1


def test_error_in_one_batch_stops_the_call(server: FakeServer) -> None:
    server.script = [("status", 400, b'{"message": "bad input"}', {})]
    with pytest.raises(RerankError, match="bad input"):
        make(server, batch_size=1, concurrency=2).score(QUERY, passages(8))
    assert len(server.requests) <= 8


@pytest.mark.parametrize(
    ("action", "pattern"),
    [(("missing",), r"scores for 4 of 5 passage\(s\); missing passage\(s\) \d"),
     (("cap", 3), r"scores for 3 of 5 passage\(s\).*top_n"),
     (("duplicate",), r"returned index \d twice"),
     (("out_of_range",), r"returned index 5 for a request of 5 passage"),
     (("nan",), r"score nan for passage \d"),
     (("string_score",), r"non-numeric score \"0.5\""),
     (("non_json",), r"not JSON.*Bad Gateway")],
)
@pytest.mark.parametrize("style", ["cohere", "tei"])
def test_malformed_answers(
    server: FakeServer, style: str, action: tuple[Any, ...], pattern: str
) -> None:
    server.script = [action]
    with pytest.raises(RerankError, match=pattern):
        make(server, style).score(QUERY, passages(5, seed=4))
    assert len(server.requests) == 1  # a malformed answer is not retried


def test_nan_in_a_later_batch_names_the_passage(server: FakeServer) -> None:
    docs = passages(6, seed=5)
    server.script = [("ok",), ("nan",)]
    scores = expected(QUERY, docs[3:])
    worst = 3 + max(range(3), key=lambda i: (-scores[i], i))  # the server sorts NaN's slot last
    with pytest.raises(RerankError, match=f"for passage {worst}$"):
        make(server, batch_size=3, concurrency=1).score(QUERY, docs)


@pytest.mark.parametrize(
    ("style", "answer", "pattern"),
    [("cohere", [{"index": 0, "relevance_score": 0.5}], r"without a \"results\".*style=\"tei\""),
     ("tei", {"results": []}, r"instead of a JSON list.*style=\"cohere\""),
     ("cohere", {"results": [{"index": 0, "score": 0.5}]}, r"without \"index\" and "
      r"\"relevance_score\""),
     ("tei", [{"index": True, "score": 0.5}], r"returned index True")],
)
def test_wrong_answer_shape(
    server: FakeServer, style: str, answer: Any, pattern: str
) -> None:
    server.script = [("raw", answer)]
    with pytest.raises(RerankError, match=pattern):
        make(server, style).score("q", ["x"])


def test_timeout_is_retried(server: FakeServer) -> None:
    server.script = [("sleep", 1.0)]
    got = make(server, timeout=0.2, max_retries=2).score(QUERY, ["bm25 ranking"])
    np.testing.assert_allclose(got, [1.0])
    assert len(server.requests) == 2


def test_timeout_exhausted(server: FakeServer) -> None:
    server.script = [("sleep", 1.0)] * 2
    with pytest.raises(RerankError, match=r"2 attempt.*(?i:timed out|timeout)") as info:
        make(server, timeout=0.2, max_retries=1).score("q", ["x"])
    assert info.value.status is None and info.value.attempts == 2


def test_connection_refused_names_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    rr = RemoteReranker("m", base_url=url, backoff=0.001)
    pattern = re.escape(f"{url}/rerank") + ".*connection refused"
    with pytest.raises(RerankError, match=pattern) as info:
        rr.score("q", ["x"])
    assert info.value.attempts == 1


def test_scores_are_float32_of_the_servers_values(server: FakeServer) -> None:
    server.script = [("raw", [{"index": 1, "score": -3}, {"index": 0, "score": 1e-3}])]
    got = make(server, "tei").score("q", ["a", "b"])
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array([1e-3, -3], dtype=np.float32))
