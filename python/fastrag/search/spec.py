"""A fused pipeline as plain JSON data, so that a collection can store the one fitted for it.

A spec::

    {"retrievers": [{"method": "bm25", "depth": 100},
                    {"method": "dense", "depth": 100, "weight": 0.5}],
     "fusion": "rrf", "fusion_options": {"k": 20}, "aggregate": "max"}

`weight` is optional per retriever (absent: the pipeline's adaptive weighting decides, see
`fastrag.search.Pipeline`); `fusion`, `fusion_options` and `aggregate` default to RRF with k 60
and "max". Rerank stages hold models and are not part of a spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastrag.search.pipeline import Pipeline
from fastrag.search.retrievers import RETRIEVERS, Retriever

__all__ = ["pipeline_from_spec", "spec_of"]

_KEYS = frozenset({"retrievers", "fusion", "fusion_options", "aggregate"})
_LEG_KEYS = frozenset({"method", "depth", "weight"})


def pipeline_from_spec(spec: Mapping[str, Any]) -> Pipeline:
    """The pipeline a spec describes; a malformed spec is a ValueError that says what is wrong."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"a pipeline spec must be a JSON object, got {type(spec).__name__}")
    unknown = set(spec) - _KEYS
    if unknown:
        raise ValueError(f"unknown pipeline spec keys {sorted(unknown)}; "
                         f"allowed: {', '.join(sorted(_KEYS))}")
    legs = spec.get("retrievers")
    if not isinstance(legs, list) or not legs:
        raise ValueError("a pipeline spec needs 'retrievers': a non-empty list of "
                         '{"method": ..., "depth": ..., "weight": ...} objects')
    retrievers = []
    for i, leg in enumerate(legs):
        if not isinstance(leg, Mapping) or "method" not in leg:
            raise ValueError(f"retrievers[{i}] must be an object with a 'method' "
                             f"({', '.join(RETRIEVERS)})")
        extra = set(leg) - _LEG_KEYS
        if extra:
            raise ValueError(f"retrievers[{i}]: unknown keys {sorted(extra)}; "
                             f"allowed: {', '.join(sorted(_LEG_KEYS))}")
        options = {key: leg[key] for key in ("depth", "weight") if key in leg}
        try:
            retrievers.append(Retriever(leg["method"], **options))
        except ValueError as e:
            raise ValueError(f"retrievers[{i}]: {e}") from e
    options = spec.get("fusion_options", {"k": 60})
    if not isinstance(options, Mapping):
        raise ValueError("fusion_options must be an object, e.g. {\"k\": 60}")
    return Pipeline(retrievers, fusion=str(spec.get("fusion", "rrf")),
                    fusion_options=dict(options), aggregate=str(spec.get("aggregate", "max")))


def spec_of(pipeline: Pipeline) -> dict[str, Any]:
    """The spec of a pipeline without rerank stages (ValueError with them)."""
    if pipeline.rerankers:
        raise ValueError("a pipeline with rerank stages has no spec (its stages hold models)")
    legs = []
    for r in pipeline.retrievers:
        leg: dict[str, Any] = {"method": r.method, "depth": r.depth}
        if r.weight is not None:
            leg["weight"] = r.weight
        legs.append(leg)
    return {"retrievers": legs, "fusion": pipeline.fusion,
            "fusion_options": dict(pipeline.fusion_options), "aggregate": pipeline.aggregate}
