"""Reading documents from files and folders: what `fastrag index` and `Collection.add_files`
index. Plain text (.txt, .md, .rst, and any suffix added with `extensions`; HTML converted
to text), JSON lines (one document per line, see `read_documents`), Parquet tables (one
document per row, the same fields as JSON lines; needs pyarrow) and BEIR folders (their
corpus.jsonl).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastrag.text.html import html_to_text

__all__ = [
    "HTML_SUFFIXES",
    "MAX_FILE_BYTES",
    "ROW_SUFFIXES",
    "TEXT_FIELDS",
    "TEXT_SUFFIXES",
    "Found",
    "parse_extensions",
    "read_documents",
    "read_paths",
]

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
#: JSON fields read as a row's text by default: the first one present (after ``title``)
TEXT_FIELDS = ("text", "contents", "content", "body")
ID_FIELDS = ("_id", "id")
#: files of rows, one document each: JSON lines and Parquet
ROW_SUFFIXES = {".jsonl", ".parquet"}
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
    other_types: list[str] = field(default_factory=list)  # files of suffixes not read

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


def parse_extensions(spec: str | Iterable[str]) -> set[str]:
    """Suffixes from ``".py,.html"`` (or a list): lower case, with their dot."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = set()
    for item in items:
        item = item.strip().lower()
        if not item:
            continue
        suffix = item if item.startswith(".") else "." + item
        if len(suffix) < 2 or any(c in suffix[1:] for c in "/\\*?. "):
            raise ValueError(f"not a file suffix: {item!r} (write e.g. .py,.html)")
        out.add(suffix)
    return out


def read_documents(
    path: str | os.PathLike[str],
    max_bytes: int = MAX_FILE_BYTES,
    *,
    extensions: Iterable[str] = (),
    text_fields: Sequence[str] | None = None,
    id_field: str | None = None,
) -> Found:
    """Documents from a text file, a .jsonl or .parquet file, a BEIR folder (corpus.jsonl)
    or a folder.

    Files that are too large, binary, or of other types are skipped with a reason; invalid
    UTF-8 is decoded with replacement characters and noted. Hidden files and folders, and
    folders of build outputs and installed packages, are not read.

    Args:
        extensions: more suffixes to read as text (".py"); .html/.htm/.xhtml files are
            converted to their readable text.
        text_fields: JSON lines and Parquet: the fields whose values, joined by a space, are
            a row's text. Default: ``title`` and the first of ``text``, ``contents``,
            ``content``, ``body``.
        id_field: JSON lines and Parquet: the field holding a row's id (default ``_id``, else
            ``id``, else ``<file>:<line>`` or ``<file>:<row>``, counted from 1).

    A row's other top-level fields are kept as its metadata (next to those of a nested
    ``metadata`` object, which win), with ``source``: the file it came from. Parquet values
    become JSON values (dates and times as ISO 8601 text); binary columns are left out. A
    Parquet file that pyarrow cannot read is skipped with the reason; without pyarrow
    installed, .parquet files are skipped with the command that installs it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    suffixes = TEXT_SUFFIXES | ROW_SUFFIXES | parse_extensions(extensions)
    found = Found()
    if path.is_dir() and (path / "corpus.jsonl").is_file():
        files, root = [path / "corpus.jsonl"], path
    elif path.is_file():
        files, root = [path], path.parent
    else:
        files, root = sorted(p for p in path.rglob("*") if p.is_file()), path
    seen: dict[str, str] = {}
    for f in files:
        rel = f.relative_to(root).as_posix()
        parts = Path(rel).parts
        if any(p.startswith(".") for p in parts) or any(p in SKIP_DIRS for p in parts[:-1]):
            continue
        if f.name != "corpus.jsonl" and _in_beir_folder(f, root):
            continue  # a BEIR folder's queries and qrels are not documents
        suffix = f.suffix.lower()
        if suffix not in suffixes:
            hint = suffix or ".<suffix>"
            reason = (f"{rel}: not a .txt/.md/.rst/.jsonl/.parquet file "
                      f"(--ext {hint} adds it)")
            found.skipped.append(reason)
            found.other_types.append(reason)
            continue
        if suffix == ".parquet":
            rows = _parquet_rows(f, rel, max_bytes, found)
            if rows is not None:
                _read_rows(rows, rel, found, seen, text_fields, id_field)
            continue
        text = _read_text(f, rel, max_bytes, found)
        if text is None:
            continue
        if suffix == ".jsonl":
            _read_rows(_json_rows(text, rel), rel, found, seen, text_fields, id_field)
        else:
            if suffix in HTML_SUFFIXES:
                text = html_to_text(text)
            found.add(rel, text, {"source": rel}, rel, seen)
    return found


def read_paths(paths: Iterable[str | os.PathLike[str]],
               max_file_bytes: int = MAX_FILE_BYTES) -> Found:
    """The documents of several files and folders (`read_documents` on each), as
    `Collection.add_files` reads them: an id given twice keeps its first document and the
    second is skipped with the reason."""
    found = Found()
    seen: dict[str, str] = {}
    for path in paths:
        part = read_documents(path, max_file_bytes)
        for doc_id, text, meta in zip(part.ids, part.texts, part.metadata, strict=True):
            found.add(doc_id, text, meta, f"{path}: {doc_id}", seen)
        found.skipped += part.skipped
        found.notes += part.notes
    return found


def _read_text(f: Path, rel: str, max_bytes: int, found: Found) -> str | None:
    """A file's text, or None (and the reason in `found`) when it is not to be read."""
    size = f.stat().st_size
    if size > max_bytes:
        found.skipped.append(
            f"{rel}: {_size(size)}, larger than {_size(max_bytes)} (--max-file-mb)"
        )
        return None
    raw = f.read_bytes()
    if b"\x00" in raw[:8192]:
        found.skipped.append(f"{rel}: binary content")
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        found.notes.append(f"{rel}: invalid UTF-8 at byte {e.start}, replaced with U+FFFD")
        return raw.decode("utf-8", errors="replace")


def _json_rows(text: str, rel: str) -> Iterator[tuple[str, Any]]:
    """(``file:line``, the decoded row or None when it is not JSON) for each non-blank line."""
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        yield f"{rel}:{n}", row


def _parquet_rows(
    f: Path, rel: str, max_bytes: int, found: Found
) -> Iterator[tuple[str, Any]] | None:
    """(``file:row``, the row as a dict of JSON values) for each row of a Parquet file, one
    record batch in memory at a time; None (and the reason in `found`) when it is not read."""
    size = f.stat().st_size
    if size > max_bytes:
        found.skipped.append(
            f"{rel}: {_size(size)}, larger than {_size(max_bytes)} (--max-file-mb)"
        )
        return None
    try:
        import pyarrow.parquet as pq  # optional: the parquet extra
    except ImportError:
        found.skipped.append(
            f'{rel}: reading Parquet needs pyarrow (pip install "fastrag-engine[parquet]")'
        )
        return None
    try:
        table = pq.ParquetFile(f)
    except Exception as e:  # pyarrow raises several types for damaged files
        found.skipped.append(f"{rel}: not a readable Parquet file ({e})")
        return None

    def rows() -> Iterator[tuple[str, Any]]:
        n = 0
        try:
            for batch in table.iter_batches(batch_size=4096):
                for row in batch.to_pylist():
                    n += 1
                    yield f"{rel}:{n}", {k: _jsonable(v) for k, v in row.items()
                                         if not isinstance(v, (bytes, bytearray))}
        except Exception as e:  # a damaged page: the rows before it are kept
            found.skipped.append(f"{rel}: unreadable after row {n} ({e})")

    return rows()


def _jsonable(value: Any) -> Any:
    """A Parquet value as a JSON value: dates and times as ISO 8601 text, containers inside."""
    if isinstance(value, (dt.date, dt.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)  # decimals and other scalars


def _read_rows(
    rows: Iterable[tuple[str, Any]],
    rel: str,
    found: Found,
    seen: dict[str, str],
    text_fields: Sequence[str] | None,
    id_field: str | None,
) -> None:
    """The documents of a file of rows (JSON lines, Parquet), one per row."""
    for where, row in rows:
        if not isinstance(row, dict):
            found.skipped.append(f"{where}: not a JSON object")
            continue
        if id_field is not None:
            if row.get(id_field) is None:
                found.skipped.append(f"{where}: no {id_field!r} field (--id-field)")
                continue
            doc_id, used = str(row[id_field]), {id_field}
        else:
            key = next((k for k in ID_FIELDS if row.get(k) is not None), None)
            doc_id = str(row[key]) if key else where
            used = set(ID_FIELDS)
        fields = list(text_fields) if text_fields else ["title", *[
            k for k in TEXT_FIELDS if isinstance(row.get(k), str)][:1]]
        missing = [k for k in fields if k not in row]
        if text_fields and len(missing) == len(fields):
            found.skipped.append(f"{where}: no {' or '.join(map(repr, fields))} field "
                                 "(--text-field)")
            continue
        body = " ".join(_as_text(row[k]) for k in fields if k in row).strip()
        used |= set(fields) | {"metadata"}
        given = row.get("metadata")
        nested = given if isinstance(given, dict) else {}
        meta = {"source": rel, **{k: v for k, v in row.items() if k not in used}, **nested}
        found.add(doc_id, body, meta, where, seen)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


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
