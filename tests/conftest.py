"""Shared fixtures: where the evaluation collections and the golden files live."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GOLDEN = Path(__file__).resolve().parent / "golden"


def read_jsonl(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if limit is not None and len(rows) >= limit:
                break
            if line.strip():
                rows.append(json.loads(line))
    return rows


@pytest.fixture(scope="session")
def beir_collection():
    """Returns load(name, n_queries) -> (corpus rows, query rows); skips if the data is absent."""

    def load(name: str, n_queries: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        folder = SHARED_DATA / name
        if not (folder / "corpus.jsonl").is_file():
            pytest.skip(f"evaluation collection {name!r} not found at {folder}")
        return read_jsonl(folder / "corpus.jsonl"), read_jsonl(folder / "queries.jsonl", n_queries)

    return load


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN
