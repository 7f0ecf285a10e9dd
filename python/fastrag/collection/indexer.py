"""Indexing many documents the way `fastrag index` does: what is already in the collection
(same id, same text and metadata) is skipped, changes are committed every N documents or
seconds (a killed run loses at most that much, and the same command resumes), and with
``sync`` the collection mirrors the source: documents not found there are deleted.

>>> found = read_documents("docs/")
>>> plan = plan_index(col, found, sync=True)
>>> run_index(col, found, plan, commit_every=500, commit_seconds=60)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastrag.collection.collection import Collection
from fastrag.collection.ingest import Found

__all__ = ["IndexPlan", "plan_index", "run_index"]

_LOOKUP = 500  # ids per texts_of call
SLICE_CHARS = 256 * 1024  # characters of text per add call
SLICE_DOCS = 256  # documents per add call


@dataclass
class IndexPlan:
    """What indexing `found` into a collection has to do.

    Attributes:
        todo: positions in `found` of the documents to add: new ones and changed ones.
        changed: how many of `todo` replace a stored document of the same id.
        unchanged: documents already stored with the same text and metadata (skipped).
        stale: ids of stored documents that `found` does not hold (deleted with sync).
    """

    todo: list[int] = field(default_factory=list)
    changed: int = 0
    unchanged: int = 0
    stale: list[str] = field(default_factory=list)


def plan_index(col: Collection, found: Found, *, sync: bool = False) -> IndexPlan:
    """Compares `found` with the collection's committed documents: ids (file paths for
    files, the rows' ids for JSON lines) and contents (text and metadata)."""
    plan = IndexPlan()
    for start in range(0, len(found.ids), _LOOKUP):
        ids = found.ids[start : start + _LOOKUP]
        stored = col.texts_of(ids)
        for i, doc_id in enumerate(ids, start):
            doc = stored.get(doc_id)
            if doc is None:
                plan.todo.append(i)
            elif doc.text == found.texts[i] and doc.metadata == found.metadata[i]:
                plan.unchanged += 1
            else:
                plan.todo.append(i)
                plan.changed += 1
    if sync:
        wanted = set(found.ids)
        plan.stale = [doc.id for doc in col.documents() if doc.id not in wanted]
    return plan


def _next_slice(found: Found, todo: list[int], pos: int, most: int) -> list[int]:
    """The documents of the next add call: from `pos`, at most `most` of them and about
    SLICE_CHARS characters."""
    part: list[int] = []
    size = 0
    while pos + len(part) < len(todo) and len(part) < most and (not part or size < SLICE_CHARS):
        i = todo[pos + len(part)]
        part.append(i)
        size += len(found.texts[i])
    return part


def run_index(
    col: Collection,
    found: Found,
    plan: IndexPlan,
    *,
    commit_every: int = 1000,
    commit_seconds: float = 60.0,
    batch_size: int = 32,
    progress: Callable[[float], None] | None = None,
    on_commit: Callable[[int], None] | None = None,
) -> int:
    """Deletes `plan.stale`, adds `plan.todo`, committing whenever `commit_every` documents
    or `commit_seconds` seconds have gone by since the last commit, and at the end.

    `progress(chars)` is called with the characters of text indexed so far (fractions
    within an add call, as its chunks are encoded); `on_commit(documents)` after each
    commit with the documents added so far. Returns the number of documents added. An
    error or interrupt rolls back what was not committed (earlier commits stay).
    """
    if commit_every < 1 or commit_seconds <= 0:
        raise ValueError("commit_every must be >= 1 and commit_seconds > 0")
    try:
        if plan.stale:
            col.delete(plan.stale, missing="ignore")
        done_chars = 0.0
        added = since = 0
        last = time.monotonic()
        pos = 0
        while pos < len(plan.todo):
            part = _next_slice(found, plan.todo, pos, min(SLICE_DOCS, commit_every - since))
            pos += len(part)
            chars = sum(len(found.texts[i]) for i in part)
            base = done_chars

            def report(done: int, total: int, base: float = base, chars: int = chars) -> None:
                if progress is not None:
                    progress(base + (chars * done / total if total else chars))

            col.add([found.texts[i] for i in part], ids=[found.ids[i] for i in part],
                    metadata=[found.metadata[i] for i in part], batch_size=batch_size,
                    show_progress=report)
            done_chars += chars
            added += len(part)
            since += len(part)
            if since >= commit_every or time.monotonic() - last >= commit_seconds:
                col.commit()
                since, last = 0, time.monotonic()
                if on_commit is not None:
                    on_commit(added)
        col.commit()
        if on_commit is not None and since:
            on_commit(added)
    except BaseException:
        col.rollback()
        raise
    return added
