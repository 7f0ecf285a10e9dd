"""`fastrag serve` end to end: a real server process on 127.0.0.1 over a tiny collection built
with the offline all-MiniLM-L6-v2, spoken to with httpx and the official `openai` client."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serve_helpers import API_KEY, DOCS, Server, build_collection, model_cache, needs_server_stack


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    needs_server_stack()
    return model_cache(tmp_path_factory)


@pytest.fixture(scope="module")
def encoder(cache: Path) -> Any:
    from fastrag.encoders import TextEncoder

    return TextEncoder("default", cache_dir=cache / "models")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cache: Path, encoder: Any
           ) -> Iterator[Server]:
    folder = build_collection(tmp_path_factory.mktemp("serve") / "col", cache)
    srv = Server(folder, cache, folder.parent / "server.log", "--max-body-mb", "1",
                 "--max-k", "100")
    try:
        srv.wait_ready()
        yield srv
    finally:
        code = srv.stop()
        assert code == 0, srv.log


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[Any]:
    with server.client() as c:
        yield c


def error_of(response: Any, status: int) -> str:
    """The error message of a refused request (asserts the status and the JSON shape)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    return str(body["error"]["message"])


# ----------------------------------------------------------------------------- service basics
def test_health_is_open_and_the_api_needs_the_key(server: Server, http: Any) -> None:
    import httpx

    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert "Bearer" in error_of(httpx.get(server.url + "/info"), 401)
    wrong = {"Authorization": "Bearer " + API_KEY[:-1] + "x"}
    error_of(httpx.get(server.url + "/info", headers=wrong), 401)
    error_of(httpx.post(server.url + "/search", json={"query": "x"}, headers=wrong), 401)
    error_of(httpx.get(server.url + "/metrics"), 401)
    info = http.get("/info").json()
    assert info["documents"] == len(DOCS) and info["model"] == "all-MiniLM-L6-v2"
    assert "path" not in info and set(info["legs"]) == {"bm25", "dense"}


def test_openapi_schema_and_docs_pages(server: Server) -> None:
    import httpx

    schema = httpx.get(server.url + "/openapi.json").json()
    for path in ("/search", "/documents", "/v1/embeddings", "/rerank", "/info", "/metrics"):
        assert path in schema["paths"], path
    assert httpx.get(server.url + "/docs").status_code == 200
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "<script>" in page.text and "fastrag" in page.text


def test_cors_is_off_by_default(server: Server) -> None:
    import httpx

    pre = httpx.options(server.url + "/search", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers


# ----------------------------------------------------------------------------- embeddings
def test_openai_client_gets_the_encoders_query_vectors(server: Server, encoder: Any) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)
    texts = ["boundary layer transition", "what is a shock wave?", "東京の天気"]
    got = client.embeddings.create(model="text-embedding-3-small", input=texts)
    assert [d.index for d in got.data] == [0, 1, 2]
    vectors = np.array([d.embedding for d in got.data], dtype=np.float32)
    np.testing.assert_allclose(vectors, encoder.encode_queries(texts), atol=1e-5)
    assert got.usage.prompt_tokens > len(texts) and got.model == "all-MiniLM-L6-v2"

    cut = client.embeddings.create(model="m", input=texts[0], dimensions=128,
                                   encoding_format="float")
    assert len(cut.data) == 1 and len(cut.data[0].embedding) == 128
    np.testing.assert_allclose(np.array(cut.data[0].embedding, np.float32),
                               encoder.encode_queries([texts[0]], dim=128)[0], atol=1e-5)


def test_embeddings_base64_over_httpx(http: Any, encoder: Any) -> None:
    import base64

    body = http.post("/v1/embeddings", json={"model": "m", "input": ["flutter"],
                                             "encoding_format": "base64",
                                             "dimensions": 64}).json()
    row = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(row, encoder.encode_queries(["flutter"], dim=64)[0], atol=1e-5)


# ----------------------------------------------------------------------------- search
def test_search_one_query_a_batch_filters_and_explain(http: Any) -> None:
    one = http.post("/search", json={"query": "supersonic shock wave", "k": 2,
                                     "explain": True, "return_text": True}).json()
    top = one["results"][0]
    assert top["id"] == "shock" and len(one["results"]) == 2
    assert set(top["stages"]) == {"bm25", "dense", "fusion"}
    assert top["text"][top["span"][0]:top["span"][1]] == top["passage"]

    batch = http.post("/search", json={"query": ["shell buckling", "reentry heating"],
                                       "k": 1}).json()["results"]
    assert [r[0]["id"] for r in batch] == ["shell", "heat"]
    assert "stages" not in batch[0][0] and "text" not in batch[0][0]

    flt = http.post("/search", json={"query": "flow", "k": 5,
                                     "filter": {"topic": "structures"}}).json()["results"]
    assert {r["id"] for r in flt} <= {"shell", "flutter"} and flt
    ranged = http.post("/search", json={"query": "flow", "k": 5,
                                        "filter": {"year": {"$gte": 2015}}}).json()["results"]
    assert all(r["metadata"]["year"] >= 2015 for r in ranged)


def test_search_methods_and_retrievers(http: Any) -> None:
    for body in ({"method": "bm25"}, {"method": "dense"}, {"retrievers": ["bm25", "dense"]}):
        got = http.post("/search", json={"query": "panel flutter Mach", "k": 1, **body})
        assert got.status_code == 200, got.text
        assert got.json()["results"][0]["id"] == "flutter"
    assert "splade" in error_of(http.post("/search", json={"query": "x", "method": "splade"}),
                                400)
    assert "legs" in error_of(http.post("/search", json={"query": "x",
                                                         "retrievers": ["nope"]}), 400)


# ----------------------------------------------------------------------------- rerank
def test_rerank_cohere_and_jina_shape(http: Any, encoder: Any) -> None:
    docs = ["a recipe for lemon cake", "shock waves on a wedge in supersonic flow",
            "supersonic shock"]
    got = http.post("/rerank", json={"model": "any", "query": "supersonic shock waves",
                                     "documents": docs, "top_n": 2,
                                     "return_documents": True}).json()
    assert [r["index"] for r in got["results"]] == [2, 1]
    assert got["results"][0]["document"] == {"text": docs[2]}
    q = encoder.encode_queries(["supersonic shock waves"])[0].astype(np.float64)
    d = encoder.encode_documents(docs).astype(np.float64)
    expect = (d @ q + 1) / 2
    for r in got["results"]:
        assert r["relevance_score"] == pytest.approx(expect[r["index"]], abs=1e-5)
    jina = http.post("/v1/rerank", json={"query": "cake", "documents": [{"text": d}
                                                                      for d in docs]}).json()
    assert jina["results"][0]["index"] == 0 and "document" not in jina["results"][0]
    assert len(jina["results"]) == 3 and jina["usage"]["total_tokens"] > 0


def test_rerank_with_the_cohere_client(server: Server) -> None:
    if importlib.util.find_spec("cohere") is None:
        pytest.skip("the cohere package is not installed")
    import cohere

    co = cohere.Client(api_key=API_KEY, base_url=server.url)
    got = co.rerank(model="rerank-english-v3.0", query="cake",
                    documents=["shock waves", "lemon cake"], top_n=1)
    assert [r.index for r in got.results] == [1]
    v2 = cohere.ClientV2(api_key=API_KEY, base_url=server.url)
    got2 = v2.rerank(model="rerank-v3.5", query="supersonic shock",
                     documents=["lemon cake", "shock waves in supersonic flow"])
    assert [r.index for r in got2.results] == [1, 0]
    assert 0.0 <= got2.results[1].relevance_score < got2.results[0].relevance_score <= 1.0


# ----------------------------------------------------------------------------- documents
def test_add_search_upsert_and_delete(http: Any) -> None:
    added = http.post("/documents", json={"documents": [
        {"id": "new1", "text": "Vortex shedding behind a circular cylinder at low Reynolds "
                               "numbers.", "metadata": {"lang": "en", "year": 2024}},
    ]})
    assert added.status_code == 200, added.text
    assert added.json()["ids"] == ["new1"] and added.json()["documents"] == len(DOCS) + 1
    hit = http.post("/search", json={"query": "vortex shedding cylinder", "k": 1}).json()
    assert hit["results"][0]["id"] == "new1"
    http.post("/documents", json={"documents": [{"id": "new1", "text": "Nozzle flow."}]})
    hit = http.post("/search", json={"query": "nozzle", "k": 1, "method": "bm25"}).json()
    assert hit["results"][0]["id"] == "new1" and hit["results"][0]["metadata"] == {}
    gone = http.request("DELETE", "/documents", json={"ids": ["new1"]})
    assert gone.json()["deleted"] == 1 and gone.json()["documents"] == len(DOCS)
    hits = http.post("/search", json={"query": "nozzle", "method": "bm25"}).json()["results"]
    assert "new1" not in {h["id"] for h in hits}


def test_a_failed_write_changes_nothing(http: Any) -> None:
    before = http.get("/info").json()
    msg = error_of(http.request("DELETE", "/documents", json={"ids": ["bl", "no-such-id"]}),
                   404)
    assert "no-such-id" in msg
    error_of(http.post("/documents", json={"documents": [
        {"id": "ok", "text": "fine"}, {"id": "bad", "text": "   "}]}), 400)
    error_of(http.post("/documents", json={"documents": [
        {"id": "a1", "text": "x"}, {"id": "a1", "text": "y"}]}), 400)
    nan = b'{"documents": [{"id": "m", "text": "x", "metadata": {"v": NaN}}]}'
    error_of(http.post("/documents", content=nan,
                       headers={"Content-Type": "application/json"}), 400)
    after = http.get("/info").json()
    assert after["documents"] == before["documents"]
    assert after["generation"] == before["generation"]
    assert http.post("/search", json={"query": "boundary layer", "k": 1}).json()[
        "results"][0]["id"] == "bl"


# ----------------------------------------------------------------------------- bad input
BAD = [
    ("malformed JSON", "/search", b'{"query": "x",', 400, "not valid JSON"),
    ("invalid UTF-8", "/search", b'{"query": "\xff\xfe"}', 400, "UTF-8"),
    ("lone surrogate", "/search", b'{"query": "\\ud800"}', 400, "Unicode"),
    ("wrong type", "/search", {"query": 5}, 422, "query"),
    ("k as a string", "/search", {"query": "x", "k": "5"}, 422, "k"),
    ("missing field", "/search", {"k": 5}, 422, "query"),
    ("unknown field", "/search", {"query": "x", "kk": 5}, 422, "kk"),
    ("k = 0", "/search", {"query": "x", "k": 0}, 400, "k must be"),
    ("k = 10^9", "/search", {"query": "x", "k": 10**9}, 400, "k must be"),
    ("empty query list", "/search", {"query": []}, 400, "empty"),
    ("empty query", "/search", {"query": "  "}, 400, "empty"),
    ("NaN in a filter", "/search", b'{"query": "x", "filter": {"year": NaN}}', 400, "finite"),
    ("unknown filter field", "/search", {"query": "x", "filter": {"nofield": 1}}, 400,
     "nofield"),
    ("bad filter operator", "/search", {"query": "x", "filter": {"year": {"$nope": 1}}}, 400,
     ""),
    ("query too long", "/search", {"query": "a " * 5000}, 413, "limit"),
    ("batch too large", "/search", {"query": ["a"] * 300}, 413, "limit"),
    ("not JSON content type", "/search", "query=x", 415, "Content-Type"),
    ("embeddings without input", "/v1/embeddings", {"model": "m"}, 422, "input"),
    ("token arrays", "/v1/embeddings", {"model": "m", "input": [[1, 2]]}, 422, "input"),
    ("dimensions 0", "/v1/embeddings", {"model": "m", "input": "x", "dimensions": 0}, 400,
     "dimensions"),
    ("dimensions too large", "/v1/embeddings", {"model": "m", "input": "x",
                                                "dimensions": 385}, 400, "dimensions"),
    ("bad encoding format", "/v1/embeddings", {"model": "m", "input": "x",
                                               "encoding_format": "hex"}, 422, "encoding"),
    ("rerank top_n 0", "/rerank", {"query": "x", "documents": ["a"], "top_n": 0}, 400, "top_n"),
    ("rerank no documents", "/rerank", {"query": "x", "documents": []}, 400, "empty"),
    ("documents not a list", "/documents", {"documents": "text"}, 422, "documents"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_requests_get_a_json_error_and_the_server_stays_up(http: Any, case: tuple) -> None:
    _, path, body, status, words = case
    if isinstance(body, bytes):
        r = http.post(path, content=body, headers={"Content-Type": "application/json"})
    elif isinstance(body, str):
        r = http.post(path, content=body,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    else:
        r = http.post(path, content=json.dumps(body),
                      headers={"Content-Type": "application/json"})
    assert words in error_of(r, status)
    assert http.get("/health").status_code == 200
    assert http.get("/info").json()["documents"] >= len(DOCS)


def test_huge_bodies_are_refused_before_reading_them(http: Any) -> None:
    big = b'{"query": "' + b"a" * (1 << 20) + b'"}'
    assert "limit" in error_of(http.post("/search", content=big,
                                         headers={"Content-Type": "application/json"}), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
        yield b'{"query": "'
        for _ in range(40):
            yield b"a" * 65536
        yield b'"}'

    r = http.post("/search", content=chunks(), headers={"Content-Type": "application/json"})
    error_of(r, 413)
    assert http.get("/health").status_code == 200


def test_metrics_in_prometheus_text_format(http: Any) -> None:
    http.post("/search", json={"query": "boundary layer"})
    http.post("/v1/embeddings", json={"model": "m", "input": "x"})
    text = http.get("/metrics").text
    assert 'fastrag_requests_total{endpoint="/search",method="POST",status="200"}' in text
    assert "fastrag_request_seconds_bucket" in text
    assert "fastrag_encoder_batch_texts_count" in text
    assert "fastrag_requests_in_flight" in text
    count = [line for line in text.splitlines()
             if line.startswith("fastrag_encoder_batch_requests_count")]
    assert count and float(count[0].split()[-1]) >= 2
    assert "_created" not in text


def test_explain_says_which_legs_were_left_out(http: Any) -> None:
    http.post("/documents", json={"documents": [{"id": "ja", "text": "東京は日本の首都です。"}]})
    try:
        got = http.post("/search", json={"query": "東京の首都", "k": 3, "explain": True}).json()
        top = got["results"][0]
        assert top["id"] == "ja"
        assert "dense" in top["skipped"] and "dense" not in top["stages"]
        plain = http.post("/search", json={"query": "東京の首都", "k": 3}).json()
        assert "skipped" not in plain["results"][0]
    finally:
        http.request("DELETE", "/documents", json={"ids": ["ja"]})


def test_readers_see_only_committed_states_while_a_write_runs(server: Server) -> None:
    import threading

    with server.client() as http:
        before = http.get("/info").json()["documents"]
    docs = [{"id": f"w{i}", "text": f"Wind tunnel run {i}: turbulent wake behind a bluff body."}
            for i in range(80)]
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def write() -> None:
        with server.client() as c:
            outcome["add"] = c.post("/documents", json={"documents": docs})
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    seen = set()
    with server.client() as http:
        while not done.is_set():
            seen.add(http.get("/info").json()["documents"])
            hits = http.post("/search", json={"query": "turbulent wake wind tunnel", "k": 100,
                                              "method": "bm25"})
            assert hits.status_code == 200, hits.text
            found = {h["id"] for h in hits.json()["results"]} & {d["id"] for d in docs}
            assert len(found) in (0, len(docs)), len(found)  # all of the add or none of it
        writer.join()
        assert outcome["add"].status_code == 200, outcome["add"].text
        assert seen <= {before, before + len(docs)}, seen
        gone = http.request("DELETE", "/documents", json={"ids": [d["id"] for d in docs]})
        assert gone.json()["documents"] == before
