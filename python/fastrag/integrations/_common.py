"""What the framework adapters share: opening a collection, checked search arguments."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastrag.collection import Collection
from fastrag.collection.store import DB
from fastrag.search.pipeline import Pipeline, Result

Method = str | Pipeline


def missing_extra(framework: str, package: str, extra: str) -> str:
    """The one-line message of a missing framework package."""
    return (f"fastrag's {framework} adapter needs {package}: "
            f'pip install "fastrag-engine[{extra}]"')


def open_or_create(path: str | os.PathLike[str], **create: Any) -> Collection:
    """The collection in folder `path`: opened when it holds one, else created with the
    options of `Collection.create` (an `encoder` is also passed to `Collection.open`, which
    checks that it makes the vectors the collection was built with)."""
    folder = Path(path)
    if (folder / DB).exists():
        opening = {key: create[key] for key in ("encoder", "splade") if key in create}
        return Collection.open(folder, **opening)
    return Collection.create(folder, **create)


def check_k(k: Any, name: str = "k") -> int:
    """A positive int number of results."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{name} must be a positive int, got {k!r}")
    return k


def search(collection: Collection, query: str, k: int, *, method: Method,
           filter: Mapping[str, Any] | None, name: str = "k") -> list[Result]:
    """`Collection.search` with a checked `k`; an empty collection finds nothing (and a
    filter over it names no field, so it is not checked against the documents' fields)."""
    k = check_k(k, name)
    if len(collection) == 0:
        return []
    return collection.search(query, k, method=method, filter=filter)
