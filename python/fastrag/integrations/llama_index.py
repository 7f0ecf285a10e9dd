"""A fastrag collection as a LlamaIndex retriever (``llama-index-core``).

>>> from fastrag.integrations.llama_index import FastragRetriever
>>> from llama_index.core.vector_stores import MetadataFilter, MetadataFilters
>>> retriever = FastragRetriever(col, similarity_top_k=5,
...     filters=MetadataFilters(filters=[MetadataFilter(key="year", operator=">=", value=2000)]))
>>> retriever.retrieve("hybrid search")          # [NodeWithScore(node=TextNode(...), score=...)]
>>> RetrieverQueryEngine.from_args(retriever, llm=llm).query("...")

Each hit is a `TextNode` whose id is the document's id and whose metadata is the document's,
scored by the collection's search (the RRF score of the hybrid pipeline, or the score of
`method`). With ``passage=True`` the node holds the document's best chunk instead of the
whole text, with its character span and a SOURCE relationship to the document.

`MetadataFilters` become fastrag filters (`to_fastrag_filter`): ==, !=, >, >=, <, <=, in,
nin, contains (an array field holds the value), any, all; conditions and, or, not (none
of); nested `MetadataFilters` too. text_match and is_empty have no fastrag equivalent and
raise ValueError. As in every fastrag filter, a key that no document has raises ValueError
(a typo, most likely).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastrag.collection import Collection
from fastrag.integrations._common import Method, check_k, missing_extra, search
from fastrag.search.pipeline import Result

try:
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import (
        NodeRelationship,
        NodeWithScore,
        QueryBundle,
        RelatedNodeInfo,
        TextNode,
    )
    from llama_index.core.vector_stores import (
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
    )
except ImportError as e:  # without the extra (tests/test_integration_extras.py)
    raise ImportError(missing_extra("LlamaIndex", "llama-index-core", "llamaindex")) from e

__all__ = ["FastragRetriever", "to_fastrag_filter"]

_SIMPLE = {
    FilterOperator.EQ: "$eq", FilterOperator.NE: "$ne", FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte", FilterOperator.LT: "$lt", FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in", FilterOperator.NIN: "$nin", FilterOperator.ANY: "$in",
}


def _one(f: MetadataFilter) -> dict[str, Any]:
    op = FilterOperator(f.operator)
    if op in _SIMPLE:
        if op in (FilterOperator.IN, FilterOperator.NIN, FilterOperator.ANY) and not isinstance(
                f.value, list):
            raise ValueError(f"filter on {f.key!r}: {op.value} takes a list, got {f.value!r}")
        return {f.key: {_SIMPLE[op]: f.value}}
    if op == FilterOperator.CONTAINS:
        return {f.key: f.value}  # an array field matches when one of its elements does
    if op == FilterOperator.ALL:
        if not isinstance(f.value, list) or not f.value:
            raise ValueError(f"filter on {f.key!r}: all takes a non-empty list, got {f.value!r}")
        return {"$and": [{f.key: v} for v in f.value]}
    raise ValueError(f"filter on {f.key!r}: operator {op.value!r} has no fastrag equivalent; "
                     f"use {', '.join(o.value for o in (*_SIMPLE, FilterOperator.CONTAINS))} "
                     "or all")


def to_fastrag_filter(filters: MetadataFilters | None, _depth: int = 0) -> dict[str, Any] | None:
    """LlamaIndex `MetadataFilters` as a fastrag filter (None when there are none)."""
    if filters is None:
        return None
    if not isinstance(filters, MetadataFilters):
        raise TypeError(f"filters must be llama_index MetadataFilters, got "
                        f"{type(filters).__name__}")
    if _depth > 32:
        raise ValueError("the filters nest deeper than 32 levels")
    parts = []
    for f in filters.filters:
        part = to_fastrag_filter(f, _depth + 1) if isinstance(f, MetadataFilters) else _one(f)
        if part is not None:
            parts.append(part)
    if not parts:
        return None
    condition = FilterCondition(filters.condition or FilterCondition.AND)
    if condition == FilterCondition.OR:
        return {"$or": parts}
    if condition == FilterCondition.NOT:  # none of them, as in LlamaIndex's simple store
        return {"$nor": parts}
    return parts[0] if len(parts) == 1 else {"$and": parts}


class FastragRetriever(BaseRetriever):
    """A LlamaIndex retriever over a `fastrag.Collection`.

    Args:
        collection: an open collection.
        similarity_top_k: nodes per query.
        filters: LlamaIndex `MetadataFilters` applied to every query.
        method: "hybrid" (default), "bm25", "dense", ... or a `fastrag.search.Pipeline`.
        passage: nodes hold the best chunk of each document (with its span), not the whole
            document.
    """

    def __init__(self, collection: Collection, *, similarity_top_k: int = 10,
                 filters: MetadataFilters | None = None, method: Method = "hybrid",
                 passage: bool = False, callback_manager: CallbackManager | None = None,
                 verbose: bool = False) -> None:
        if not isinstance(collection, Collection):
            raise TypeError(f"collection must be a fastrag.Collection, got "
                            f"{type(collection).__name__}")
        self.collection = collection
        self.similarity_top_k = check_k(similarity_top_k, "similarity_top_k")
        self.filters = filters
        self._filter = to_fastrag_filter(filters)  # checked now, not at the first query
        self.method = method
        self.passage = passage
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def _node(self, result: Result) -> NodeWithScore:
        if not self.passage:
            node = TextNode(id_=result.id, text=result.text, metadata=dict(result.metadata))
            return NodeWithScore(node=node, score=result.score)
        start, end = result.span
        node = TextNode(id_=f"{result.id}#{start}", text=result.text[start:end],
                        metadata=dict(result.metadata), start_char_idx=start,
                        end_char_idx=end,
                        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(
                            node_id=result.id)})
        return NodeWithScore(node=node, score=result.score)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        results = search(self.collection, query_bundle.query_str, self.similarity_top_k,
                         method=self.method, filter=self._filter, name="similarity_top_k")
        return [self._node(r) for r in results]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """`_retrieve` in a worker thread (the search releases the GIL in the native core)."""
        return await asyncio.to_thread(self._retrieve, query_bundle)
