"""What ``fastrag prepare`` wrote for a collection, on disk in ``<collection>/mk/``.

``mk/state.sqlite`` holds, per document, the LLM's topic, tags and question-answer pairs
(with a hash of the text they were written from), the clusters of documents by their tags
with one Meta Knowledge Summary each, and the settings of the run. Every document's answer
is committed as soon as it is parsed, so a run killed at any point (or stopped with Ctrl-C)
loses at most the answers in flight; SQLite's journal keeps the file whole. ``mk/questions/``
is a collection of the synthetic questions (one entry per question, its metadata naming its
document), ``mk/cache/`` the LLM's answers by prompt hash.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastrag.collection.store import CollectionError
from fastrag.search.prompts import DocMeta

__all__ = ["MK_DIR", "Cluster", "MKStore", "cluster_documents", "text_hash"]

#: the folder of a collection that holds what prepare wrote
MK_DIR = "mk"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs(id TEXT PRIMARY KEY, hash TEXT NOT NULL, topic TEXT NOT NULL,
                                tags TEXT NOT NULL, qa TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clusters(id INTEGER PRIMARY KEY, label TEXT NOT NULL,
                                    tags TEXT NOT NULL, docs TEXT NOT NULL,
                                    summary TEXT NOT NULL, key TEXT NOT NULL);
"""


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass
class Cluster:
    """Documents grouped by metadata, and the summary of what they hold.

    Attributes:
        label: the tag that groups them ("" for documents that share no frequent tag).
        tags: the most frequent tags of its documents.
        docs: the ids of its documents.
        summary: the Meta Knowledge Summary ("" until written).
        key: a hash of label, tags and documents: a summary is reused while it is unchanged.
    """

    label: str
    tags: list[str]
    docs: list[str]
    summary: str = ""
    key: str = field(default="")

    def __post_init__(self) -> None:
        if not self.key:
            self.key = text_hash(json.dumps([self.label, self.tags, sorted(self.docs)],
                                            ensure_ascii=False))

    @property
    def text(self) -> str:
        """What a query is matched against to pick the cluster."""
        return " ".join([self.label, *self.tags, self.summary])


class MKStore:
    """The state file ``mk/state.sqlite`` of a collection (see the module docstring)."""

    def __init__(self, folder: Path, db: sqlite3.Connection) -> None:
        self.folder = folder
        self._db = db

    @classmethod
    def open(cls, collection_path: Path, *, create: bool = False) -> MKStore:
        """The store of the collection in `collection_path`; without `create`, a
        `CollectionError` naming ``fastrag prepare`` when there is none."""
        folder = collection_path / MK_DIR
        path = folder / "state.sqlite"
        if not path.exists():
            if not create:
                raise CollectionError(
                    f"{collection_path} has no prepared metadata: run `fastrag prepare "
                    f"{collection_path}` (or fastrag.collection.prepare) first")
            folder.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(path, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise CollectionError(f"{path} is damaged ({e}): delete {folder} and run "
                                  "`fastrag prepare` again") from e
        return cls(folder, db)

    def close(self) -> None:
        self._db.close()

    # -- settings ---------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set(self, key: str, value: Any) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                             (key, json.dumps(value, ensure_ascii=False)))

    # -- documents --------------------------------------------------------------------------

    def hashes(self) -> dict[str, str]:
        """{document id: hash of the text its metadata was written from}."""
        return dict(self._db.execute("SELECT id, hash FROM docs"))

    def put(self, doc_id: str, text_digest: str, meta: DocMeta) -> None:
        """Stores one document's metadata (committed at once)."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO docs(id, hash, topic, tags, qa) VALUES (?, ?, ?, ?, ?)",
                (doc_id, text_digest, meta.topic, json.dumps(meta.tags, ensure_ascii=False),
                 json.dumps([list(p) for p in meta.qa], ensure_ascii=False)))

    def drop(self, doc_ids: Iterable[str]) -> None:
        with self._db:
            self._db.executemany("DELETE FROM docs WHERE id = ?", [(d,) for d in doc_ids])

    def metadata(self) -> dict[str, DocMeta]:
        """{document id: its metadata}, in the order they were stored."""
        out = {}
        for doc_id, topic, tags, qa in self._db.execute(
                "SELECT id, topic, tags, qa FROM docs ORDER BY rowid"):
            out[doc_id] = DocMeta(topic, json.loads(tags), [(q, a) for q, a in json.loads(qa)])
        return out

    # -- clusters ---------------------------------------------------------------------------

    def clusters(self) -> list[Cluster]:
        return [Cluster(label, json.loads(tags), json.loads(docs), summary, key)
                for label, tags, docs, summary, key in self._db.execute(
                    "SELECT label, tags, docs, summary, key FROM clusters ORDER BY id")]

    def set_clusters(self, clusters: list[Cluster]) -> None:
        """Replaces every cluster in one transaction."""
        with self._db:
            self._db.execute("DELETE FROM clusters")
            self._db.executemany(
                "INSERT INTO clusters(id, label, tags, docs, summary, key) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(i, c.label, json.dumps(c.tags, ensure_ascii=False),
                  json.dumps(c.docs, ensure_ascii=False), c.summary, c.key)
                 for i, c in enumerate(clusters)])


def _norm(tag: str) -> str:
    return " ".join(tag.lower().split())


def cluster_documents(metas: dict[str, DocMeta], max_clusters: int = 16,
                      n_tags: int = 8) -> list[Cluster]:
    """Groups documents by their metadata: the (at most `max_clusters`) tags that most
    documents share become clusters, and each document joins the most shared one of its own
    tags (its topic counts as a tag). Documents with none of them form one cluster labelled
    "". Deterministic: ties go to the alphabetically first tag."""
    tags_of = {d: list(dict.fromkeys(_norm(t) for t in [m.topic, *m.tags] if t.strip()))
               for d, m in metas.items()}
    df = Counter(t for tags in tags_of.values() for t in tags)
    labels = [t for t, n in sorted(df.items(), key=lambda x: (-x[1], x[0])) if n >= 2]
    labels = labels[:max_clusters]
    order = {t: i for i, t in enumerate(labels)}
    members: dict[str, list[str]] = {}
    for d, tags in tags_of.items():
        own = [t for t in tags if t in order]
        label = min(own, key=order.__getitem__) if own else ""
        members.setdefault(label, []).append(d)
    out = []
    for label in [*labels, ""]:
        docs = members.get(label)
        if not docs:
            continue
        counts = Counter(t for d in docs for t in tags_of[d])
        top = [t for t, _ in sorted(counts.items(), key=lambda x: (-x[1], x[0]))][:n_tags]
        out.append(Cluster(label, top, docs))
    return out
