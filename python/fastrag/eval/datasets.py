"""Evaluation collections in the BEIR layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Dataset:
    """A BEIR-layout collection. ``qrels[query_id][doc_id]`` is the graded relevance."""

    name: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)

    def documents(self) -> tuple[list[str], list[str]]:
        """Document ids and texts (title + " " + text, the usual BEIR protocol)."""
        ids = list(self.corpus)
        texts = [f"{d.get('title', '')} {d.get('text', '')}".strip() for d in self.corpus.values()]
        return ids, texts

    def judged_queries(self) -> tuple[list[str], list[str]]:
        """Ids and texts of the queries that have relevance judgements."""
        ids = [q for q in self.queries if self.qrels.get(q)]
        return ids, [self.queries[q] for q in ids]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a BEIR JSON lines file: each a JSON object with an "_id"."""
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from e
            if not isinstance(row, dict) or "_id" not in row:
                raise ValueError(f'{path}:{n}: expected a JSON object with an "_id"')
            rows.append(row)
    return rows


def load_beir(path: str | os.PathLike[str], split: str = "test") -> Dataset:
    """Loads a BEIR-layout folder; raises FileNotFoundError naming what is missing."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    needed = [root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / f"{split}.tsv"]
    missing = [str(p.relative_to(root)) for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{root} is not a BEIR folder: missing {', '.join(missing)}")
    corpus = {
        str(r["_id"]): {"title": r.get("title") or "", "text": r.get("text") or ""}
        for r in _read_jsonl(needed[0])
    }
    queries = {str(r["_id"]): r.get("text") or "" for r in _read_jsonl(needed[1])}
    qrels: dict[str, dict[str, int]] = {}
    with needed[2].open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        for n, row in enumerate(reader, 1):
            if not row or (n == 1 and not row[-1].lstrip("-").isdigit()):
                continue  # blank line or the header
            if len(row) < 3:
                raise ValueError(f"{needed[2]}:{n}: expected query-id, corpus-id, score")
            qid, did, score = row[0], row[1], int(row[-1])
            if score > 0:
                qrels.setdefault(qid, {})[did] = score
    return Dataset(name=root.name, corpus=corpus, queries=queries, qrels=qrels)
