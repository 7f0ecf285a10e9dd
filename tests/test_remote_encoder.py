"""RemoteEncoder against a scripted OpenAI-compatible server on 127.0.0.1 (no other network)."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from typing import Any

import numpy as np
import pytest

from fastrag.encoders.remote import RemoteEncoder, RemoteEncoderError
from http_fake import ScriptedServer, fixture

FULL_DIM = 64


def vector(text: str, dim: int = FULL_DIM) -> np.ndarray:
    """The server's (unnormalised) embedding of `text`: seeded by the text's hash."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(FULL_DIM)[:dim]


def expected(texts: list[str], dim: int = FULL_DIM, prompt: str = "") -> np.ndarray:
    rows = np.array([vector(prompt + t, dim) for t in texts], dtype=np.float64)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


class FakeServer(ScriptedServer):
    """An /v1/embeddings endpoint; `script` holds actions taken by the next requests in turn.

    Actions: ("status", code, body_bytes, headers), ("nan",), ("wrong_count",), ("non_json",),
    ("sleep", seconds), ("ignore_dims",). Requests with no action left are answered normally.
    """

    def __init__(self) -> None:
        super().__init__()
        self.reverse = False  # answer items in reverse order (clients must use "index")

    @property
    def url(self) -> str:
        return self.root + "/v1"

    def respond(
        self, handler: BaseHTTPRequestHandler, body: dict[str, Any], action: tuple[Any, ...]
    ) -> None:
        if handler.path != "/v1/embeddings":
            return self.send(handler, 404, b'{"error": {"message": "no such route"}}')
        if self.scripted(handler, action):
            return None
        kind = action[0]
        texts = body["input"]
        dim = body.get("dimensions") if kind != "ignore_dims" else None
        data = [
            {"object": "embedding", "index": i, "embedding": vector(t, dim or FULL_DIM).tolist()}
            for i, t in enumerate(texts)
        ]
        if kind == "nan":
            data[-1]["embedding"][3] = float("nan")
        if kind == "wrong_count":
            data = data[:-1]
        if self.reverse:
            data.reverse()
        answer = {"object": "list", "data": data, "model": body["model"],
                  "usage": {"prompt_tokens": 1, "total_tokens": 1}}
        return self.send(handler, 200, json.dumps(answer).encode())


@pytest.fixture(autouse=True)
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


server = fixture(FakeServer)


def make(server: FakeServer, **options: Any) -> RemoteEncoder:
    options.setdefault("dim", FULL_DIM)
    options.setdefault("backoff", 0.001)
    options.setdefault("timeout", 5.0)
    return RemoteEncoder("test-embed", base_url=server.url, **options)


def texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"text {i} {rng.integers(1_000_000)}" for i in range(n)]


# -- order, batching, prompts ------------------------------------------------------------------


def test_order_preserved_across_batches_and_concurrency(server: FakeServer) -> None:
    rng = np.random.default_rng(1)
    server.reverse = True
    server.delays = list(rng.uniform(0.01, 0.05, size=10))  # batches finish out of order
    enc = make(server, batch_size=3, concurrency=4)
    docs = texts(25)
    got = enc.encode_documents(docs)
    assert got.dtype == np.float32 and got.shape == (25, FULL_DIM)
    np.testing.assert_allclose(got, expected(docs), rtol=1e-5, atol=1e-6)
    assert len(server.requests) == 9  # ceil(25 / 3)
    assert 2 <= server.max_inflight <= 4


def test_batch_size_caps_texts_per_request(server: FakeServer) -> None:
    enc = make(server, batch_size=4, concurrency=2)
    docs = texts(10)
    enc.encode(docs)
    sizes = sorted(len(b["input"]) for b in server.bodies())
    assert sizes == [2, 4, 4]
    server.requests.clear()
    enc.encode(docs, batch_size=3)  # a per-call override
    assert sorted(len(b["input"]) for b in server.bodies()) == [1, 3, 3, 3]
    sent = [t for b in sorted(server.bodies(), key=lambda b: docs.index(b["input"][0]))
            for t in b["input"]]
    assert sent == docs


def test_concurrency_one_is_sequential(server: FakeServer) -> None:
    server.delays = [0.02] * 5
    enc = make(server, batch_size=2, concurrency=1)
    docs = texts(9)
    np.testing.assert_allclose(enc.encode(docs), expected(docs), rtol=1e-5, atol=1e-6)
    assert server.max_inflight == 1
    assert [b["input"] for b in server.bodies()] == [docs[i:i + 2] for i in range(0, 9, 2)]


def test_request_shape(server: FakeServer) -> None:
    make(server).encode(["hello"])
    (request,) = server.requests
    assert request["path"] == "/v1/embeddings"
    assert request["body"] == {"model": "test-embed", "input": ["hello"],
                               "encoding_format": "float"}
    assert request["headers"]["Content-Type"] == "application/json"


def test_prompts_prepended_per_kind(server: FakeServer) -> None:
    enc = make(server, query_prompt="query: ", document_prompt="passage: ")
    q = enc.encode_queries(["what is bm25"])
    d = enc.encode_documents(["bm25 is a ranking function"])
    assert [b["input"] for b in server.bodies()] == [
        ["query: what is bm25"], ["passage: bm25 is a ranking function"]
    ]
    np.testing.assert_allclose(q, expected(["what is bm25"], prompt="query: "), rtol=1e-5)
    np.testing.assert_allclose(d, expected(["bm25 is a ranking function"], prompt="passage: "),
                               rtol=1e-5)


def test_normalize_false_returns_raw_vectors(server: FakeServer) -> None:
    got = make(server, normalize=False).encode(["abc", "def"])
    np.testing.assert_allclose(got, np.array([vector("abc"), vector("def")]), rtol=1e-6)
    assert make(server, normalize=False).normalized is False


def test_single_string_input(server: FakeServer) -> None:
    got = make(server).encode("just one")
    assert got.shape == (1, FULL_DIM)


# -- Matryoshka dimensions ---------------------------------------------------------------------


def test_dims_one_request_set_per_dimension(server: FakeServer) -> None:
    enc = make(server, batch_size=4, concurrency=3)
    docs = texts(10)
    got = enc.encode(docs, dims=[16, 32, 64])
    assert sorted(got) == [16, 32, 64]
    assert Counter(b["dimensions"] for b in server.bodies()) == {16: 3, 32: 3, 64: 3}
    for d, rows in got.items():
        assert rows.dtype == np.float32 and rows.shape == (10, d)
        np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(rows, expected(docs, d), rtol=1e-5, atol=1e-6)


def test_single_dim_sends_dimensions(server: FakeServer) -> None:
    got = make(server).encode(["a b c"], dim=16)
    assert got.shape == (1, 16)
    assert server.bodies()[0]["dimensions"] == 16


def test_dimensions_unsupported_truncates_locally(server: FakeServer) -> None:
    enc = make(server, batch_size=4, dimensions_supported=False)
    docs = texts(10)
    got = enc.encode(docs, dims=[16, 32, 64])
    assert len(server.requests) == 3
    assert all("dimensions" not in b for b in server.bodies())
    for d, rows in got.items():
        assert rows.shape == (10, d)
        np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(rows, expected(docs, d), rtol=1e-5, atol=1e-6)


def test_server_ignoring_dimensions_is_reported(server: FakeServer) -> None:
    server.script = [("ignore_dims",)]
    with pytest.raises(RemoteEncoderError, match="dimensions_supported=False"):
        make(server).encode(["x"], dim=16)


# -- retries and errors ------------------------------------------------------------------------


@pytest.mark.parametrize("code", [429, 500, 502, 503, 504])
def test_transient_errors_are_retried(server: FakeServer, code: int) -> None:
    error = json.dumps({"error": {"message": "slow down"}}).encode()
    server.script = [("status", code, error, {"Retry-After": "0"})] * 2
    got = make(server, max_retries=3).encode(["one", "two"])
    np.testing.assert_allclose(got, expected(["one", "two"]), rtol=1e-5)
    assert len(server.requests) == 3
    assert all(b == server.bodies()[0] for b in server.bodies())


def test_retry_after_is_honoured(server: FakeServer) -> None:
    server.script = [("status", 429, b"{}", {"Retry-After": "0.3"})]
    start = time.perf_counter()
    make(server, backoff=0.0).encode(["x"])
    assert time.perf_counter() - start >= 0.25
    assert len(server.requests) == 2


def test_retries_exhausted(server: FakeServer, caplog: pytest.LogCaptureFixture) -> None:
    error = json.dumps({"error": {"message": "overloaded"}}).encode()
    server.script = [("status", 503, error, {})] * 10
    with caplog.at_level("WARNING", logger="fastrag.encoders.remote"), \
            pytest.raises(RemoteEncoderError, match=r"3 attempt.*503.*overloaded") as info:
        make(server, max_retries=2).encode(["x"])
    assert info.value.attempts == 3 and info.value.status == 503
    assert len(server.requests) == 3
    assert sum("retry" in r.getMessage() for r in caplog.records) == 2


def test_client_error_raises_at_once(server: FakeServer) -> None:
    error = {"error": {"message": "This model's maximum context length is 8192 tokens",
                       "type": "invalid_request_error"}}
    server.script = [("status", 400, json.dumps(error).encode(), {})]
    with pytest.raises(RemoteEncoderError, match=r"400.*maximum context length") as info:
        make(server).encode(["x"])
    assert info.value.status == 400
    assert len(server.requests) == 1


def test_client_error_with_plain_body(server: FakeServer) -> None:
    server.script = [("status", 401, b"invalid api key", {})]
    with pytest.raises(RemoteEncoderError, match=r"401.*invalid api key"):
        make(server).encode(["x"])
    assert len(server.requests) == 1


def test_error_in_one_batch_stops_the_call(server: FakeServer) -> None:
    server.script = [("status", 400, b'{"error": {"message": "bad input"}}', {})]
    with pytest.raises(RemoteEncoderError, match="bad input"):
        make(server, batch_size=1, concurrency=2).encode(texts(6))
    assert len(server.requests) <= 6


def test_nan_raises_value_error_naming_the_text(server: FakeServer) -> None:
    server.script = [("ok",), ("nan",)]
    with pytest.raises(ValueError, match="text 5 "):
        make(server, batch_size=3, concurrency=1).encode(texts(6))


def test_wrong_count(server: FakeServer) -> None:
    server.script = [("wrong_count",)]
    with pytest.raises(RemoteEncoderError, match="2 embeddings for 3 texts"):
        make(server).encode(texts(3))


def test_non_json_answer(server: FakeServer) -> None:
    server.script = [("non_json",)]
    with pytest.raises(RemoteEncoderError, match=r"not JSON.*Bad Gateway"):
        make(server).encode(["x"])


def test_wrong_full_dimension(server: FakeServer) -> None:
    with pytest.raises(RemoteEncoderError, match=r"64-dimensional.*expected dim=32"):
        make(server, dim=32).encode(["x"])


def test_timeout_is_retried(server: FakeServer) -> None:
    server.script = [("sleep", 1.0)]
    got = make(server, timeout=0.2, max_retries=2).encode(["slow"])
    np.testing.assert_allclose(got, expected(["slow"]), rtol=1e-5)
    assert len(server.requests) == 2


def test_timeout_exhausted(server: FakeServer) -> None:
    server.script = [("sleep", 1.0)] * 2
    with pytest.raises(RemoteEncoderError, match=r"2 attempt.*(?i:timed out|timeout)"):
        make(server, timeout=0.2, max_retries=1).encode(["slow"])


def test_connection_refused_names_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    enc = RemoteEncoder("m", base_url=url, dim=8, backoff=0.001)
    pattern = re.escape(f"{url}/embeddings") + ".*connection refused"
    with pytest.raises(RemoteEncoderError, match=pattern):
        enc.encode(["x"])


def test_empty_text_rejected_before_any_request(server: FakeServer) -> None:
    enc = make(server)
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        enc.encode(["fine", "  "])
    assert server.requests == []


# -- auth, fingerprint, dim --------------------------------------------------------------------


def test_auth_header_only_with_a_key(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    make(server).encode(["x"])
    make(server, api_key="sk-test").encode(["x"])
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    make(server).encode(["x"])
    auth = [r["headers"].get("Authorization") for r in server.requests]
    assert auth == [None, "Bearer sk-test", "Bearer sk-env"]


def test_fingerprint(server: FakeServer) -> None:
    a = make(server, api_key="k1")
    b = RemoteEncoder("test-embed", base_url=server.url + "/", api_key="k2", dim=FULL_DIM)
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint.startswith("remote:")
    assert a.fingerprint != RemoteEncoder("other", base_url=server.url).fingerprint
    assert a.fingerprint != make(server, query_prompt="q: ").fingerprint
    assert a.fingerprint != make(server, normalize=False).fingerprint
    assert a.name == "test-embed"
    assert server.requests == []


def test_dim_is_probed_once_when_not_given(server: FakeServer) -> None:
    enc = make(server, dim=None)
    assert "dim=None" in repr(enc) and server.requests == []
    assert enc.dim == FULL_DIM
    assert enc.dim == FULL_DIM
    assert server.bodies() == [{"model": "test-embed", "input": ["dimension probe"],
                                "encoding_format": "float"}]
    assert enc.encode(["x"]).shape == (1, FULL_DIM)
    assert len(server.requests) == 2


def test_dim_learned_from_first_response(server: FakeServer) -> None:
    enc = make(server, dim=None)
    assert enc._embed(["a", "b"], "document", 32).shape == (2, FULL_DIM)
    assert enc.dim == FULL_DIM
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "options",
    [{"batch_size": 0}, {"concurrency": 0}, {"max_retries": -1}, {"timeout": 0},
     {"backoff": -1.0}, {"dim": 0}, {"base_url": "localhost:8000/v1"}],
)
def test_bad_options(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RemoteEncoder("m", **options)
