"""The LangChain adapter: langchain-tests' standard suites, filters, scores, errors, and a
query answered through LangChain's own runnable API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core", reason="the langchain extra is not installed")
pytest.importorskip("langchain_tests", reason="langchain-tests is not installed")

from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.runnables import RunnableLambda
from langchain_tests.integration_tests import (
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)

from fake_encoder import FakeEncoder
from fastrag import Collection
from fastrag.integrations.langchain import (
    FastragRetriever,
    FastragVectorStore,
    LangChainEncoder,
)
from integration_corpus import IDS, META, TEXTS


@pytest.fixture
def store(tmp_path: Path) -> FastragVectorStore:
    col = Collection.create(tmp_path / "col", encoder=FakeEncoder())
    out = FastragVectorStore(col)
    out.add_texts(TEXTS, META, ids=IDS)
    return out


# ---------------------------------------------------------------- the standard suites
# the suites' async tests need pytest-asyncio's mark: on the class, it reaches the sync
# tests too, which pytest-asyncio then warns about
_SYNC_TOO = pytest.mark.filterwarnings(
    "ignore:.*marked with '@pytest.mark.asyncio' but it is not an async function")


@pytest.mark.asyncio
@_SYNC_TOO
class TestStandardVectorStore(VectorStoreIntegrationTests):
    """langchain-tests' vector store suite (its DeterministicFakeEmbedding as encoder)."""

    @pytest.fixture
    def vectorstore(self, tmp_path: Path) -> FastragVectorStore:  # type: ignore[override]
        return FastragVectorStore.create(tmp_path / "std", embedding=self.get_embeddings())


@pytest.mark.asyncio
@_SYNC_TOO
class TestStandardRetriever(RetrieversIntegrationTests):
    """langchain-tests' retriever suite."""

    @pytest.fixture(autouse=True)
    def _collection(self, tmp_path: Path) -> None:
        self.col = Collection.create(tmp_path / "ret", encoder=FakeEncoder())
        self.col.add(TEXTS, ids=IDS, metadata=META)

    @property
    def retriever_constructor(self) -> type[FastragRetriever]:
        return FastragRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"collection": self.col, "k": 2}

    @property
    def retriever_query_example(self) -> str:
        return "flow over a body"


# ---------------------------------------------------------------- our own contract
def test_similarity_search_with_score_ranks_the_matching_text_first(
        store: FastragVectorStore) -> None:
    hits = store.similarity_search_with_score("hypersonic heat transfer", k=2)
    assert hits[0][0].id == "b"
    assert hits[0][0].metadata == META[1]
    assert hits[0][1] > hits[1][1] > 0


@pytest.mark.parametrize("flt, expected", [
    ({"topic": "fluids"}, {"a", "c"}),
    ({"year": {"$gte": 2004, "$lt": 2020}}, {"b", "c"}),
    ({"$or": [{"topic": "search"}, {"year": 1995}]}, {"a", "d"}),
    ({"topic": {"$nin": ["fluids", "heat"]}}, {"d"}),
])
def test_filters_are_fastrag_filters(store: FastragVectorStore, flt: dict[str, Any],
                                     expected: set[str]) -> None:
    docs = store.similarity_search("flow", k=4, filter=flt)
    assert {d.id for d in docs} == expected


def test_bad_filters_say_what_is_wrong_and_change_nothing(store: FastragVectorStore) -> None:
    with pytest.raises(TypeError, match="metadata filter language"):
        store.similarity_search("flow", filter=lambda d: True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown operator"):
        store.similarity_search("flow", filter={"year": {"$regex": "x"}})
    with pytest.raises(ValueError, match="no document has the metadata field"):
        store.similarity_search("flow", filter={"yaer": 2004})
    with pytest.raises(ValueError, match="k must be a positive int"):
        store.similarity_search("flow", k=0)
    assert len(store.collection) == 4


def test_add_is_all_or_nothing(store: FastragVectorStore) -> None:
    with pytest.raises(ValueError, match="empty"):
        store.add_texts(["fine text", "   "], ids=["e", "f"])
    with pytest.raises(ValueError, match="2 texts but 1 metadatas"):
        store.add_texts(["one", "two"], [{"x": 1}])
    assert len(store.collection) == 4 and store.get_by_ids(["e"]) == []


def test_writes_are_committed_and_reopen(store: FastragVectorStore, tmp_path: Path) -> None:
    store.delete(["a", "zz"])
    reopened = FastragVectorStore(Collection.open(tmp_path / "col", encoder=FakeEncoder()))
    assert [d.id for d in reopened.get_by_ids(["a", "b", "d"])] == ["b", "d"]
    with pytest.raises(TypeError, match="not a single string"):
        reopened.delete("b")  # type: ignore[arg-type]
    reopened.delete()  # LangChain: None deletes everything
    assert len(Collection.open(tmp_path / "col", encoder=FakeEncoder())) == 0


def test_relevance_scores_for_the_dense_method_only(store: FastragVectorStore) -> None:
    with pytest.raises(NotImplementedError, match="method='dense'"):
        store.similarity_search_with_relevance_scores("flow", k=2)
    dense = FastragVectorStore(store.collection, method="dense")
    hits = dense.similarity_search_with_relevance_scores("shock waves wedge", k=4)
    assert hits[0][0].id == "c"
    assert all(0.0 <= s <= 1.0 for _, s in hits)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)


def test_mmr_prefers_a_different_document_to_a_near_copy(tmp_path: Path) -> None:
    store = FastragVectorStore(Collection.create(tmp_path / "mmr", encoder=FakeEncoder()))
    store.add_texts(["shock waves over a wedge", "shock waves over a wedge again",
                     "shock tubes in a laboratory"], ids=["w1", "w2", "t"])
    top = [d.id for d in store.similarity_search("shock waves wedge", k=2)]
    assert sorted(top) == ["w1", "w2"]
    diverse = store.max_marginal_relevance_search("shock waves wedge", k=2, lambda_mult=0.3)
    assert diverse[0].id in ("w1", "w2") and diverse[1].id == "t"
    retriever = store.as_retriever(search_type="mmr",
                                   search_kwargs={"k": 2, "lambda_mult": 0.3})
    assert [d.id for d in retriever.invoke("shock waves wedge")] == [d.id for d in diverse]
    with pytest.raises(ValueError, match="lambda_mult"):
        store.max_marginal_relevance_search("shock", lambda_mult=2.0)
    bm25_only = FastragVectorStore(Collection.create(tmp_path / "bm25", encoder=None))
    with pytest.raises(NotImplementedError, match="no encoder"):
        bm25_only.max_marginal_relevance_search("shock")


def test_vector_store_retriever_in_a_runnable_chain(store: FastragVectorStore) -> None:
    """A query answered through LangChain's own API: as_retriever | a formatting step."""
    retriever = store.as_retriever(search_kwargs={"k": 2, "filter": {"topic": "fluids"}})
    chain = retriever | RunnableLambda(lambda docs: "\n".join(d.page_content for d in docs))
    answer = chain.invoke("shock waves over a wedge")
    assert answer.splitlines()[0] == TEXTS[2]
    assert TEXTS[1] not in answer


@pytest.mark.asyncio
async def test_async_search_and_write(store: FastragVectorStore) -> None:
    await store.aadd_documents([Document(page_content="Laminar flow in pipes.",
                                         metadata={"topic": "fluids"}, id="e")])
    docs = await store.asimilarity_search("laminar pipes", k=1)
    assert docs == [Document(page_content="Laminar flow in pipes.",
                             metadata={"topic": "fluids"}, id="e")]
    retriever = FastragRetriever(collection=store.collection, k=1, score_key="score")
    (doc,) = await retriever.ainvoke("laminar pipes")
    assert doc.id == "e" and doc.metadata["score"] > 0


def test_retriever_per_call_arguments(store: FastragVectorStore) -> None:
    retriever = FastragRetriever(collection=store.collection, k=4, method="bm25")
    docs = retriever.invoke("flow", filter={"year": {"$gt": 2000}}, k=3)
    assert {d.id for d in docs} == {"b", "c"}  # BM25: only these two hold "flow"
    with pytest.raises(TypeError, match="unexpected arguments: kk"):
        retriever.invoke("flow", kk=1)


class _Named(DeterministicFakeEmbedding):
    model: str = ""


def test_langchain_encoder_checks_the_model() -> None:
    enc = LangChainEncoder(DeterministicFakeEmbedding(size=8), name="fake-8")
    assert enc.dim == 8 and enc.fingerprint.endswith("-8")
    other = LangChainEncoder(DeterministicFakeEmbedding(size=8))
    assert other.name == "DeterministicFakeEmbedding" and other.fingerprint != enc.fingerprint
    # two models of one class (as OpenAIEmbeddings(model=...)) are two vector spaces
    m1, m2 = (LangChainEncoder(_Named(size=8, model=m)) for m in ("m1", "m2"))
    assert m1.name == "_Named:m1" and m1.fingerprint != m2.fingerprint
    vectors = enc.encode(["a text", "another"])
    assert vectors.shape == (2, 8)
    with pytest.raises(TypeError, match="Embeddings"):
        LangChainEncoder("not a model")  # type: ignore[arg-type]


def test_from_texts_needs_a_folder(tmp_path: Path) -> None:
    emb = DeterministicFakeEmbedding(size=16)
    with pytest.raises(ValueError, match="path="):
        FastragVectorStore.from_texts(["x"], emb)
    store = FastragVectorStore.from_texts(["alpha beta", "gamma"], emb, path=tmp_path / "ft",
                                          ids=["1", "2"])
    assert store.embeddings is emb
    assert [d.id for d in store.similarity_search("gamma", k=1)] == ["2"]
