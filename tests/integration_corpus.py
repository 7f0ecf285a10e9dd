"""The small corpus the framework adapter tests share (tests/test_integration_*.py)."""

from __future__ import annotations

from typing import Any

IDS = ["a", "b", "c", "d"]
TEXTS = [
    "The boundary layer of a flat plate thickens downstream.",
    "Heat transfer in hypersonic flow over a blunt body.",
    "Shock waves in supersonic flow over a wedge.",
    "Inverted indexes answer keyword queries with BM25.",
]
META: list[dict[str, Any]] = [
    {"topic": "fluids", "year": 1995, "tags": ["plate", "layer"]},
    {"topic": "heat", "year": 2004, "tags": ["heat"]},
    {"topic": "fluids", "year": 2011, "tags": ["shock", "wedge"]},
    {"topic": "search", "year": 2020, "tags": ["ir", "bm25"]},
]
