"""The Haystack adapter: Haystack's own document store test suites, filter translation, and a
query answered by a Haystack Pipeline through the retriever component."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # no network calls from tests
pytest.importorskip("haystack", reason="the haystack extra is not installed")

from haystack import Document, Pipeline
from haystack.dataclasses import ByteStream, SparseEmbedding
from haystack.document_stores.errors import DuplicateDocumentError
from haystack.document_stores.types import DuplicatePolicy, FilterPolicy
from haystack.errors import FilterError
from haystack.testing.document_store import DocumentStoreBaseTests
from haystack.testing.document_store_async import (
    CountDocumentsAsyncTest,
    DeleteDocumentsAsyncTest,
    WriteDocumentsAsyncTest,
)

from fake_encoder import FakeEncoder
from fastrag.integrations.haystack import FastragDocumentStore, FastragRetriever
from fastrag.integrations.haystack_filters import to_fastrag_filter
from integration_corpus import IDS, META, TEXTS

# tags on "d" only, and one meta value None (to Haystack, the same as missing)
DOCS = [Document(id=i, content=t, meta={k: v for k, v in m.items() if k != "tags" or i == "d"})
        for i, t, m in zip(IDS, TEXTS, META, strict=True)]
DOCS[1].meta["note"] = None


class TestHaystackContract(DocumentStoreBaseTests):
    """Haystack's document store suite: count, write with each policy, delete, filters."""

    @pytest.fixture
    def document_store(self, tmp_path: Path) -> FastragDocumentStore:
        return FastragDocumentStore(tmp_path / "hs", encoder=None)

    def test_write_documents(self, document_store: FastragDocumentStore) -> None:
        """The default policy (NONE) is FAIL, as in Haystack's in-memory store."""
        doc = Document(content="test doc")
        assert document_store.write_documents([doc]) == 1
        with pytest.raises(DuplicateDocumentError):
            document_store.write_documents([doc])
        self.assert_documents_are_equal(document_store.filter_documents(), [doc])


class TestHaystackAsyncContract(CountDocumentsAsyncTest, WriteDocumentsAsyncTest,
                                DeleteDocumentsAsyncTest):
    """Haystack's async suites for the ``*_async`` methods."""

    @pytest.fixture
    def document_store(self, tmp_path: Path) -> FastragDocumentStore:
        return FastragDocumentStore(tmp_path / "hsa", encoder=None)

    @pytest.mark.asyncio
    async def test_write_documents_async(self, document_store: FastragDocumentStore) -> None:
        doc = Document(content="test doc")
        assert await document_store.write_documents_async([doc]) == 1
        with pytest.raises(DuplicateDocumentError):
            await document_store.write_documents_async([doc], policy=DuplicatePolicy.FAIL)
        assert await document_store.filter_documents_async() == [doc]


@pytest.fixture
def store(tmp_path: Path) -> FastragDocumentStore:
    out = FastragDocumentStore(tmp_path / "col", encoder=FakeEncoder())
    out.write_documents(DOCS)
    return out


def test_every_field_comes_back(tmp_path: Path) -> None:
    store = FastragDocumentStore(tmp_path / "f", encoder=None)
    doc = Document(id="x", content="some text", meta={"a": 1, "b": None, "c": {"d": [1.5]}},
                   embedding=[0.1, 0.2, 1 / 3], blob=ByteStream(b"\x00\x01", mime_type="a/b"),
                   sparse_embedding=SparseEmbedding(indices=[3, 7], values=[0.5, 0.25]))
    store.write_documents([doc])
    again = FastragDocumentStore(tmp_path / "f", encoder=None)  # committed, reopened
    assert again.filter_documents() == [doc]


def test_bad_documents_write_nothing(store: FastragDocumentStore) -> None:
    with pytest.raises(ValueError, match="has no text"):
        store.write_documents([Document(id="e", content="fine"), Document(id="f", content="")])
    with pytest.raises(ValueError, match="reserved"):
        store.write_documents([Document(id="g", content="x", meta={"_haystack": 1})])
    with pytest.raises(DuplicateDocumentError):
        store.write_documents([Document(id="e", content="new"), DOCS[0]])
    assert store.count_documents() == 4 and "e" not in store.collection


def test_skip_and_overwrite_within_one_batch(store: FastragDocumentStore) -> None:
    first, second = Document(id="e", content="first"), Document(id="e", content="second")
    assert store.write_documents([first, second, DOCS[0]], policy=DuplicatePolicy.SKIP) == 1
    assert store.filter_documents({"field": "meta.topic", "operator": "==", "value": None}) == [
        first]
    assert store.write_documents([first, second], policy=DuplicatePolicy.OVERWRITE) == 1
    assert store.collection.get("e").text == "second"


@pytest.mark.parametrize("filters, expected", [
    ({"field": "meta.topic", "operator": "==", "value": "fluids"}, "ac"),
    ({"field": "meta.note", "operator": "==", "value": None}, "abcd"),  # None == missing
    ({"field": "meta.tags", "operator": "!=", "value": None}, "d"),
    ({"field": "meta.year", "operator": ">=", "value": 2004}, "bcd"),
    ({"field": "meta.year", "operator": "<", "value": None}, ""),
    ({"field": "meta.topic", "operator": "in", "value": ["heat", None]}, "b"),
    ({"field": "meta.topic", "operator": "not in", "value": ["heat", "search"]}, "ac"),
    ({"field": "meta.nowhere", "operator": "==", "value": 3}, ""),  # a field no one has
    ({"field": "meta.nowhere", "operator": "not in", "value": [3]}, "abcd"),
    ({"operator": "OR", "conditions": []}, ""),
    ({"operator": "NOT", "conditions": [
        {"field": "meta.topic", "operator": "==", "value": "fluids"},
        {"field": "meta.year", "operator": ">", "value": 2000}]}, "abd"),
    ({"operator": "AND", "conditions": [
        {"field": "meta.year", "operator": ">", "value": 1990},
        {"operator": "OR", "conditions": [
            {"field": "meta.tags", "operator": "==", "value": "ir"},
            {"field": "meta.topic", "operator": "==", "value": "heat"}]}]}, "bd"),
])
def test_filters(store: FastragDocumentStore, filters: dict[str, Any], expected: str) -> None:
    assert "".join(d.id for d in store.filter_documents(filters)) == expected


@pytest.mark.parametrize("filters, message", [
    ({"field": "content", "operator": "==", "value": "x"}, "meta.<name>"),
    ({"field": "meta.year", "operator": "~", "value": 1}, "unknown comparison operator"),
    ({"field": "meta.year", "operator": ">", "value": "soon"}, "ISO 8601"),
    ({"field": "meta.year", "operator": ">", "value": True}, "numbers or ISO dates"),
    ({"field": "meta.year", "operator": "in", "value": (1, 2)}, "takes a list"),
    ({"field": "meta.year", "operator": "==", "value": {"a": 1}}, "str, number, bool or None"),
    ({"field": "meta.year", "operator": "==", "value": float("nan")}, "NaN|JSON number"),
    ({"operator": "XOR", "conditions": []}, "unknown logical operator"),
])
def test_bad_filters_raise_filter_error(store: FastragDocumentStore, filters: dict[str, Any],
                                       message: str) -> None:
    with pytest.raises(FilterError, match=message):
        store.filter_documents(filters)
    with pytest.raises(FilterError, match=message):
        FastragRetriever(store).run("flow", filters=filters)


def test_translation_is_fastrag_filter_language() -> None:
    spec = to_fastrag_filter({"operator": "AND", "conditions": [
        {"field": "meta.src.kind", "operator": "==", "value": "pdf"},
        {"field": "meta.year", "operator": "<=", "value": 2000}]}, lambda name: True)
    assert spec == {"$and": [{"src.kind": {"$eq": "pdf"}}, {"year": {"$lte": 2000}}]}


def test_pipeline_answers_a_query(store: FastragDocumentStore) -> None:
    """A query answered through Haystack's own API: a Pipeline with the retriever."""
    pipe = Pipeline()
    pipe.add_component("retriever", FastragRetriever(store, top_k=2))
    out = pipe.run({"retriever": {"query": "shock waves over a wedge", "filters": {
        "field": "meta.topic", "operator": "==", "value": "fluids"}}})
    docs = out["retriever"]["documents"]
    assert [d.id for d in docs] == ["c", "a"]
    assert docs[0].score > docs[1].score > 0
    assert docs[0].meta == {"topic": "fluids", "year": 2011}


def test_filter_policy_and_top_k(store: FastragDocumentStore) -> None:
    init = {"field": "meta.year", "operator": ">", "value": 2000}
    run = {"field": "meta.topic", "operator": "==", "value": "fluids"}
    merge = FastragRetriever(store, filters=init, filter_policy=FilterPolicy.MERGE)
    assert [d.id for d in merge.run("flow", filters=run)["documents"]] == ["c"]
    replace = FastragRetriever(store, filters=init)
    assert {d.id for d in replace.run("flow", filters=run)["documents"]} == {"a", "c"}
    assert len(replace.run("flow", top_k=1)["documents"]) == 1
    with pytest.raises(ValueError, match="top_k must be a positive int"):
        FastragRetriever(store, top_k=0)


@pytest.mark.asyncio
async def test_async_pipeline(store: FastragDocumentStore) -> None:
    pipe = Pipeline()  # Haystack 3: one Pipeline class with run_async
    pipe.add_component("retriever", FastragRetriever(store, top_k=1, method="bm25"))
    out = await pipe.run_async({"retriever": {"query": "hypersonic heat"}})
    assert [d.id for d in out["retriever"]["documents"]] == ["b"]
    await store.delete_documents_async(["b"])
    assert await store.count_documents_async() == 3


def test_serialization_round_trip(tmp_path: Path) -> None:
    store = FastragDocumentStore(tmp_path / "s", encoder=None, analyzer="english")
    store.write_documents(DOCS)
    retriever = FastragRetriever(store, top_k=3, method="bm25",
                                 filters={"field": "meta.year", "operator": ">", "value": 2000})
    pipe = Pipeline()
    pipe.add_component("retriever", retriever)
    # Haystack loads components only from modules the caller trusts
    loaded = Pipeline.loads(pipe.dumps(), allowed_modules=["fastrag.integrations.haystack"])
    out = loaded.run({"retriever": {"query": "flow"}})
    assert {d.id for d in out["retriever"]["documents"]} == {"b", "c"}
    with pytest.raises(ValueError, match="encoder is an object"):
        FastragDocumentStore(tmp_path / "o", encoder=FakeEncoder()).to_dict()
