"""The LlamaIndex adapter: nodes, scores, MetadataFilters, async, and a query answered
through LlamaIndex's own query engine (a MockLLM: no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_index.core", reason="the llamaindex extra is not installed")

from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import NodeRelationship, TextNode
from llama_index.core.vector_stores import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from fake_encoder import FakeEncoder
from fastrag import Collection
from fastrag.integrations.llama_index import FastragRetriever, to_fastrag_filter
from integration_corpus import IDS, META, TEXTS


@pytest.fixture
def col(tmp_path: Path) -> Collection:
    out = Collection.create(tmp_path / "col", encoder=FakeEncoder())
    out.add(TEXTS, ids=IDS, metadata=META)
    return out


def _filters(*items: tuple[str, str, Any], condition: str = "and") -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key=k, operator=op, value=v)
                                    for k, op, v in items], condition=condition)


def test_retrieve_gives_scored_text_nodes(col: Collection) -> None:
    hits = FastragRetriever(col, similarity_top_k=2).retrieve("hypersonic heat transfer")
    assert [h.node.node_id for h in hits][:1] == ["b"]
    assert isinstance(hits[0].node, TextNode) and hits[0].node.text == TEXTS[1]
    assert hits[0].node.metadata == META[1]
    assert hits[0].score > hits[1].score > 0


@pytest.mark.parametrize("filters, expected", [
    (_filters(("topic", "==", "fluids")), {"a", "c"}),
    (_filters(("year", ">=", 2004), ("year", "<", 2020)), {"b", "c"}),
    (_filters(("topic", "in", ["heat", "search"])), {"b", "d"}),
    (_filters(("topic", "nin", ["heat", "search"])), {"a", "c"}),
    (_filters(("tags", "contains", "wedge")), {"c"}),
    (_filters(("tags", "any", ["ir", "heat"])), {"b", "d"}),
    (_filters(("tags", "all", ["ir", "bm25"])), {"d"}),
    (_filters(("tags", "all", ["ir", "heat"])), set()),
    (_filters(("topic", "==", "heat"), ("year", "==", 1995), condition="or"), {"a", "b"}),
    (_filters(("topic", "==", "fluids"), ("year", ">", 2015), condition="not"), {"b"}),
    (MetadataFilters(filters=[
        MetadataFilter(key="year", operator=FilterOperator.GT, value=2000),
        MetadataFilters(filters=[MetadataFilter(key="topic", value="fluids"),
                                 MetadataFilter(key="topic", value="search")],
                        condition=FilterCondition.OR)]), {"c", "d"}),
])
def test_metadata_filters(col: Collection, filters: MetadataFilters, expected: set[str]) -> None:
    hits = FastragRetriever(col, similarity_top_k=4, filters=filters).retrieve("flow")
    assert {h.node.node_id for h in hits} == expected


def test_filter_translation() -> None:
    spec = to_fastrag_filter(_filters(("year", ">", 2000), ("tags", "all", ["x", "y"])))
    assert spec == {"$and": [{"year": {"$gt": 2000}}, {"$and": [{"tags": "x"}, {"tags": "y"}]}]}
    assert to_fastrag_filter(MetadataFilters(filters=[])) is None


def test_bad_filters_are_refused_up_front(col: Collection) -> None:
    with pytest.raises(ValueError, match="'text_match' has no fastrag equivalent"):
        FastragRetriever(col, filters=_filters(("topic", "text_match", "flu")))
    with pytest.raises(ValueError, match="in takes a list"):
        FastragRetriever(col, filters=_filters(("topic", "in", "heat")))
    with pytest.raises(TypeError, match="MetadataFilters"):
        FastragRetriever(col, filters={"topic": "heat"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="similarity_top_k must be a positive int"):
        FastragRetriever(col, similarity_top_k=0)
    typo = FastragRetriever(col, filters=_filters(("topik", "==", "heat")))
    with pytest.raises(ValueError, match="no document has the metadata field 'topik'"):
        typo.retrieve("flow")


def test_passage_nodes_point_at_their_document(tmp_path: Path) -> None:
    col = Collection.create(tmp_path / "long", encoder=None, chunk_chars=60)
    text = ("Boundary layers grow along flat plates in viscous flow. " * 2
            + "Shock waves form ahead of a wedge at supersonic speed.")
    col.add([text], ids=["doc"])
    (hit,) = FastragRetriever(col, similarity_top_k=1, passage=True).retrieve("wedge shock")
    node = hit.node
    assert "wedge" in node.text and len(node.text) < len(text)
    assert text[node.start_char_idx:node.end_char_idx] == node.text
    assert node.relationships[NodeRelationship.SOURCE].node_id == "doc"


@pytest.mark.asyncio
async def test_async_retrieve(col: Collection) -> None:
    hits = await FastragRetriever(col, similarity_top_k=1, method="bm25").aretrieve("wedge")
    assert [h.node.node_id for h in hits] == ["c"]


def test_query_engine_answers_through_llama_index(col: Collection) -> None:
    """A query answered through LlamaIndex's own API: RetrieverQueryEngine over the retriever
    (MockLLM echoes no model; the sources are ours)."""
    retriever = FastragRetriever(col, similarity_top_k=2,
                                 filters=_filters(("topic", "==", "fluids")))
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM(max_tokens=8))
    response = engine.query("shock waves over a wedge")
    assert [n.node.node_id for n in response.source_nodes] == ["c", "a"]
    assert response.source_nodes[0].score > response.source_nodes[1].score
