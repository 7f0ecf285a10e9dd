"""``fastrag prepare``: LLM-written metadata, synthetic questions and Meta Knowledge Summaries.

For each document an LLM writes a topic, tags and question-answer pairs (`prepare`); the
documents are clustered by their tags and the LLM writes one summary per cluster; the
synthetic questions go into a small collection of their own (``<collection>/mk/questions``),
one entry per question whose metadata names its document, so that a search hit on a
question returns its document. Everything is kept in ``<collection>/mk/`` (see
`fastrag.collection.mk_store`): a second run asks only about documents that are new or
changed, and summaries only for clusters that changed; a run stopped by Ctrl-C or a crash
resumes where it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastrag.collection.mk_store import MKStore, cluster_documents, text_hash
from fastrag.search.llm import ChatClient, Usage
from fastrag.search.prompts import metadata_messages, parse_metadata, summary_messages

if TYPE_CHECKING:
    from fastrag.collection.collection import Collection

__all__ = ["PrepareReport", "collection_language", "prepare"]

logger = logging.getLogger(__name__)

#: called with (step, done, total) as documents and clusters are prepared
Progress = Callable[[str, int, int], None]
QUESTIONS_DIR = "questions"


@dataclass
class PrepareReport:
    """What one `prepare` run did.

    Attributes:
        documents: documents in the collection.
        asked: documents whose metadata the LLM wrote in this run.
        reused: documents whose metadata an earlier run wrote (text unchanged).
        failed: documents whose answer held no usable JSON (asked again next run).
        questions: synthetic questions indexed.
        clusters: clusters of documents.
        summaries: cluster summaries written in this run (the others were reused).
        usage: the LLM's requests, cached answers, tokens and seconds in this run.
    """

    documents: int = 0
    asked: int = 0
    reused: int = 0
    failed: list[str] = field(default_factory=list)
    questions: int = 0
    clusters: int = 0
    summaries: int = 0
    usage: Usage = field(default_factory=Usage)

    def as_dict(self) -> dict[str, Any]:
        return {"documents": self.documents, "asked": self.asked, "reused": self.reused,
                "failed": len(self.failed), "questions": self.questions,
                "clusters": self.clusters, "summaries": self.summaries,
                "usage": self.usage.as_dict()}


def collection_language(col: Collection) -> str:
    """"ja" when most of the collection's chunks are Japanese, else "en"."""
    shares = col.languages()
    return "ja" if shares.get("ja", 0.0) > 0.5 else "en"


def prepare(
    col: Collection,
    client: ChatClient,
    *,
    n_questions: int = 3,
    max_clusters: int = 16,
    language: str | None = None,
    batch_size: int = 16,
    progress: Progress | None = None,
) -> PrepareReport:
    """Writes metadata, synthetic questions and cluster summaries for `col` (committed).

    Args:
        col: an open collection with no uncommitted changes.
        client: the LLM (its answers are cached in ``<collection>/mk/cache`` when it has no
            cache folder of its own).
        n_questions: question-answer pairs asked per document.
        max_clusters: the most clusters (tags shared by most documents).
        language: "en" or "ja" prompts; None: the collection's main language.
        batch_size: documents asked per round (the client's `concurrency` at a time); each
            round's answers are committed before the next.
        progress: called with (step, done, total), step "documents" or "summaries".

    Raises:
        fastrag.search.llm.LLMError: the LLM could not be reached or kept failing (what was
            done is kept: run again to resume).
        ValueError: bad options, or uncommitted changes in `col`.
    """
    if isinstance(n_questions, bool) or not isinstance(n_questions, int) or not (
            1 <= n_questions <= 10):
        raise ValueError(f"n_questions must be an int in 1..10, got {n_questions!r}")
    if isinstance(max_clusters, bool) or not isinstance(max_clusters, int) or max_clusters < 1:
        raise ValueError(f"max_clusters must be a positive int, got {max_clusters!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if col.info()["uncommitted_changes"]:
        raise ValueError("commit() the collection's changes before preparing it")
    lang = language or collection_language(col)
    if lang not in ("en", "ja"):
        raise ValueError(f"language must be 'en' or 'ja', got {lang!r}")
    state = MKStore.open(col.path, create=True)
    if client.cache_dir is None:
        client.cache_dir = state.folder / "cache"
    before = client.usage
    report = PrepareReport()
    try:
        _documents(col, client, state, report, lang, n_questions, batch_size, progress)
        _summaries(client, state, report, lang, max_clusters, progress)
        report.questions = _index_questions(col, state)
        state.set("settings", {"model": client.model, "base_url": client.base_url,
                               "language": lang, "n_questions": n_questions})
    finally:
        state.close()
        after = client.usage
        report.usage = Usage(*(getattr(after, f) - getattr(before, f) for f in
                               ("requests", "cached", "prompt_tokens", "completion_tokens",
                                "seconds")))
    return report


def _documents(col: Collection, client: ChatClient, state: MKStore, report: PrepareReport,
               lang: str, n_questions: int, batch_size: int,
               progress: Progress | None) -> None:
    """Asks for the metadata of new and changed documents, committing every round."""
    done = state.hashes()
    todo: list[tuple[str, str, str]] = []
    present = set()
    for doc in col.documents():
        present.add(doc.id)
        digest = text_hash(doc.text)
        if done.get(doc.id) == digest:
            report.reused += 1
        else:
            todo.append((doc.id, digest, doc.text))
    report.documents = len(present)
    state.drop([d for d in done if d not in present])
    for start in range(0, len(todo), batch_size):
        if progress is not None:
            progress("documents", start, len(todo))
        part = todo[start:start + batch_size]
        asked = [metadata_messages(text, lang, n_questions) for _, _, text in part]
        answers = client.chat_many(asked)
        for (doc_id, digest, _), messages, answer in zip(part, asked, answers, strict=True):
            meta = parse_metadata(answer, n_questions)
            if meta is None:
                report.failed.append(doc_id)
                client.forget(messages)  # asked again next run, not read from the cache
                logger.warning("no metadata in the LLM's answer for document %r: %r", doc_id,
                               " ".join(answer.split())[:120])
                continue
            state.put(doc_id, digest, meta)
            report.asked += 1
    if progress is not None:
        progress("documents", len(todo), len(todo))


def _summaries(client: ChatClient, state: MKStore, report: PrepareReport, lang: str,
               max_clusters: int, progress: Progress | None) -> None:
    """Clusters the documents and writes the summaries of clusters that changed."""
    metas = state.metadata()
    clusters = cluster_documents(metas, max_clusters)
    old = {c.key: c.summary for c in state.clusters() if c.summary}
    todo = [c for c in clusters if c.key not in old]
    for c in clusters:
        c.summary = old.get(c.key, "")
    if progress is not None:
        progress("summaries", 0, len(todo))
    asked = [summary_messages(c.tags, [q for d in c.docs[:20] for q, _ in metas[d].qa[:1]]
                              or [metas[d].topic for d in c.docs[:20]], lang) for c in todo]
    for c, answer in zip(todo, client.chat_many(asked) if asked else [], strict=True):
        c.summary = answer.strip()
    if progress is not None:
        progress("summaries", len(todo), len(todo))
    state.set_clusters(clusters)
    report.clusters, report.summaries = len(clusters), len(todo)


def _index_questions(col: Collection, state: MKStore) -> int:
    """Brings ``mk/questions`` in line with the stored questions; returns how many."""
    wanted: dict[str, tuple[str, str]] = {}
    for doc_id, meta in state.metadata().items():
        for i, (q, _) in enumerate(meta.qa):
            wanted[f"{doc_id}#q{i}"] = (q, doc_id)
    path = state.folder / QUESTIONS_DIR
    qcol = open_questions(col, create=bool(wanted))
    if qcol is None:
        return 0
    with qcol:
        have = {d.id: d.text for d in qcol.documents()}
        stale = [d for d in have if d not in wanted]
        if stale:
            qcol.delete(stale)
        new = [(i, q, d) for i, (q, d) in wanted.items() if have.get(i) != q]
        for start in range(0, len(new), 512):
            part = new[start:start + 512]
            qcol.add([q for _, q, _ in part], ids=[i for i, _, _ in part],
                     metadata=[{"doc": d} for _, _, d in part])
        qcol.commit()
    logger.info("%d synthetic question(s) indexed in %s", len(wanted), path)
    return len(wanted)


def open_questions(col: Collection, *, create: bool = False) -> Collection | None:
    """The collection of `col`'s synthetic questions (made with `col`'s encoder and analyzer
    when `create`), or None when there is none."""
    path = col.path / "mk" / QUESTIONS_DIR
    if (path / "collection.sqlite").exists():
        return type(col).open(path, encoder=col.encoder)
    if not create:
        return None
    return type(col).create(path, encoder=col.encoder, analyzer=col.settings["analyzer"],
                            languages=sorted(col.encoder_languages)
                            if col.encoder is not None else None)
