"""Reading documents from files and folders: what `fastrag index` and `Collection.add_files`
index. Plain text (.txt, .md, .rst), JSON lines (one document per line: ``_id``/``id``,
``title``, ``text``, ``metadata``) and BEIR folders (their corpus.jsonl).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MAX_FILE_BYTES", "TEXT_SUFFIXES", "Found", "read_documents"]

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}
MAX_FILE_BYTES = 50 * 1024 * 1024
SKIP_DIRS = {"__pycache__", "node_modules", "site-packages", "build", "dist"}


@dataclass
class Found:
    """Documents read from files: ids, texts and metadata, and what was skipped and why."""

    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self, doc_id: str, text: str, meta: dict[str, Any], where: str, seen: dict[str, str]
    ) -> None:
        if not text.strip():
            self.skipped.append(f"{where}: empty")
            return
        if doc_id in seen:
            self.skipped.append(f"{where}: id {doc_id!r} repeats ({seen[doc_id]} kept)")
            return
        seen[doc_id] = where
        self.ids.append(doc_id)
        self.texts.append(text)
        self.metadata.append(meta)


def read_documents(path: str | os.PathLike[str], max_bytes: int = MAX_FILE_BYTES) -> Found:
    """Documents from a text file, a .jsonl file, a BEIR folder (corpus.jsonl) or a folder.

    Files that are too large, binary, or of other types are skipped with a reason; invalid
    UTF-8 is decoded with replacement characters and noted.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    found = Found()
    if path.is_dir() and (path / "corpus.jsonl").is_file():
        files, root = [path / "corpus.jsonl"], path
    elif path.is_file():
        files, root = [path], path.parent
    else:
        files, root = sorted(p for p in path.rglob("*") if p.is_file()), path
    seen: dict[str, str] = {}
    for f in files:
        rel = str(f.relative_to(root))
        parts = Path(rel).parts
        if any(p.startswith(".") for p in parts) or any(p in SKIP_DIRS for p in parts[:-1]):
            continue
        if f.name != "corpus.jsonl" and _in_beir_folder(f, root):
            continue  # a BEIR folder's queries and qrels are not documents
        if f.suffix.lower() not in TEXT_SUFFIXES | {".jsonl"}:
            found.skipped.append(f"{rel}: not a .txt/.md/.rst/.jsonl file")
            continue
        size = f.stat().st_size
        if size > max_bytes:
            found.skipped.append(
                f"{rel}: {_size(size)}, larger than {_size(max_bytes)} (--max-file-mb)"
            )
            continue
        raw = f.read_bytes()
        if b"\x00" in raw[:8192]:
            found.skipped.append(f"{rel}: binary content")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            text = raw.decode("utf-8", errors="replace")
            found.notes.append(f"{rel}: invalid UTF-8 at byte {e.start}, replaced with U+FFFD")
        if f.suffix.lower() != ".jsonl":
            found.add(rel, text, {"source": rel}, rel, seen)
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                doc_id = str(row.get("_id", row.get("id", f"{rel}:{n}")))
                body = f"{row.get('title', '')} {row.get('text', '')}".strip()
            except (json.JSONDecodeError, AttributeError):
                found.skipped.append(f"{rel}:{n}: not a JSON object")
                continue
            meta = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
            found.add(doc_id, body, {"source": rel, **meta}, f"{rel}:{n}", seen)
    return found


def _in_beir_folder(f: Path, root: Path) -> bool:
    """Whether `f` lies in a BEIR folder (one holding corpus.jsonl) at or below `root`."""
    for folder in [f.parent, *f.parent.parents]:
        if (folder / "corpus.jsonl").is_file():
            return True
        if folder == root:
            break
    return False


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n} GB"  # pragma: no cover
