"""The SQLite side of a collection: schema, row checksums, settings, creation and upgrades.

``collection.sqlite`` holds documents (user id, text, metadata JSON), chunks (character spans
and language), token vectors (optional) and ``meta`` (settings, encoder fingerprint, the
committed generation of the index files). Every row carries a CRC-32 of its content, checked
whenever the row is read: a damaged database raises `fastrag.IndexFormatError`, never a
silently wrong passage, metadata or filter result.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastrag._core import IndexFormatError
from fastrag.collection.legs import legs_of
from fastrag.search.corpus import Document

DB = "collection.sqlite"
FORMAT = "fastrag.collection"
VERSION = 2  # 2: a CRC-32 per row (version 1 collections are upgraded when opened)
# index files of a generation, and the temporary files the core writes them through
INDEX_FILE = re.compile(
    r"^(bm25|dense|splade|bm42|late|docs)\.(\d+)\.(fridx|frdx|frds)(\.tmp-\d+-\d+)?$"
)
# a database being created: written under this name, then renamed into place
_CREATING = re.compile(r"^collection\.sqlite\.creating-\d+(-wal|-shm|-journal)?$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    crc INTEGER
);
CREATE TABLE IF NOT EXISTS chunks (
    chunk INTEGER PRIMARY KEY,
    doc TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ord INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    lang TEXT NOT NULL,
    crc INTEGER
);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks(doc);
CREATE TABLE IF NOT EXISTS tokens (
    chunk INTEGER PRIMARY KEY REFERENCES chunks(chunk) ON DELETE CASCADE,
    n INTEGER NOT NULL,
    data BLOB NOT NULL,
    crc INTEGER
);
"""


# ---------------------------------------------------------------------- row checksums
def doc_crc(doc_id: str, text: str, metadata: str) -> int:
    return zlib.crc32("\x00".join((doc_id, text, metadata)).encode("utf-8", "surrogatepass"))


def chunk_crc(chunk: int, doc: str, ord_: int, start: int, end: int, lang: str) -> int:
    head = struct.pack("<qqqq", chunk, ord_, start, end)
    return zlib.crc32(head + f"{doc}\x00{lang}".encode("utf-8", "surrogatepass"))


def tokens_crc(chunk: int, n: int, data: bytes) -> int:
    return zlib.crc32(struct.pack("<qq", chunk, n) + bytes(data))


# what a checksum function raises for columns of another type than the schema's
_WRONG_TYPE = (TypeError, ValueError, OverflowError, struct.error)


def crc_matches(crc: object, checksum: Callable[..., int], *columns: object) -> bool:
    """Whether a stored row's `crc` is `checksum(*columns)`; False also for columns of another
    type (a NULL, a number for a text), which a damaged page can hold despite the schema."""
    try:
        return crc == checksum(*columns)
    except _WRONG_TYPE:
        return False


def _upgrade_crc(checksum: Callable[..., int], what: str, *columns: object) -> int:
    """`checksum(*columns)` of a version 1 row being upgraded; IndexFormatError for columns of
    another type."""
    try:
        return checksum(*columns)
    except _WRONG_TYPE as e:
        raise IndexFormatError(f"{DB}: {what} holds a column of another type ({e}): the "
                               "database is damaged; rebuild the collection") from e


def _corrupt(e: BaseException) -> bool:
    """SQLite's SQLITE_CORRUPT: "database disk image is malformed" (not a foreign file, a busy
    lock or a constraint)."""
    if isinstance(e, sqlite3.OperationalError) and "decode to UTF-8" in str(e):
        return True  # a TEXT value that is not UTF-8
    code = getattr(e, "sqlite_errorcode", None)  # Python 3.11+ (extended codes too)
    return (code & 0xFF) == 11 if code is not None else "malformed" in str(e)


@contextmanager
def sqlite_damage(path: Path) -> Iterator[None]:
    """Turns SQLite's "database disk image is malformed" into IndexFormatError."""
    try:
        yield
    except sqlite3.DatabaseError as e:
        raise as_damage(e, path) from e


def as_damage(e: sqlite3.DatabaseError, path: Path) -> BaseException:
    """IndexFormatError for a damaged database (SQLITE_CORRUPT, text that is not UTF-8),
    else `e` itself."""
    if not _corrupt(e):
        return e
    return IndexFormatError(f"{path / DB} is damaged ({e}); restore it from a backup or "
                            "rebuild the collection")


def damaged(what: str) -> IndexFormatError:
    return IndexFormatError(
        f"{DB}: {what} fails its checksum: the database is damaged; restore it from a backup "
        "or rebuild the collection"
    )


class CollectionError(ValueError):
    """A folder that is not a collection, or a collection used in a way it cannot be."""


def chunk_languages(db: sqlite3.Connection) -> dict[str, float]:
    stats = dict(db.execute("SELECT lang, count(*) FROM chunks GROUP BY lang").fetchall())
    total = sum(stats.values())
    return {k: v / total for k, v in stats.items()} if total else {}


def info(path: Path, db: sqlite3.Connection, settings: dict[str, Any]) -> dict[str, Any]:
    # the counts and the generation from one snapshot: a commit of another connection
    # between two of the reads would give counts of two states
    own = not db.in_transaction
    if own:
        db.execute("BEGIN")
    try:
        docs = int(db.execute("SELECT count(*) FROM documents").fetchone()[0])
        chunks = int(db.execute("SELECT count(*) FROM chunks").fetchone()[0])
        generation = meta_int(db, "generation")
        languages = chunk_languages(db)
    finally:
        if own:
            db.execute("COMMIT")
    return {
        "path": str(path),
        "documents": docs,
        "chunks": chunks,
        "generation": generation,
        "analyzer": settings["analyzer"],
        "chunk_chars": settings["chunk_chars"],
        "chunk_tokens": settings.get("chunk_tokens"),
        "legs": list(legs_of(settings)),
        "token_vectors": bool(settings.get("token_vectors")),
        "storage": settings["storage"],
        "encoder": settings.get("encoder"),
        "languages": languages,
        "files": _file_sizes(path),
    }


def _file_sizes(path: Path) -> dict[str, int]:
    """Sizes of the folder's files; a commit's temporary files, and old generations' files
    removed by a commit of another connection between the listing and the stat, are left
    out."""
    sizes = {}
    for p in sorted(path.iterdir()):
        found = INDEX_FILE.match(p.name)
        if (found and found.group(4)) or _CREATING.match(p.name):
            continue
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode):
            sizes[p.name] = st.st_size
    return sizes


def read_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A collection's counts, settings and files, read without loading indexes or models."""
    folder = Path(path)
    db, settings = open_db(folder)
    try:
        return info(folder, db, settings)
    finally:
        db.close()


def open_db(folder: Path) -> tuple[sqlite3.Connection, dict[str, Any]]:
    """The database and settings of a collection folder, checked (and upgraded from
    version 1, which had no row checksums)."""
    if not (folder / DB).is_file():
        raise CollectionError(f"{folder} is not a fastrag collection (no {DB})")
    db = None
    try:
        db = connect(folder / DB)
        settings = get_meta(db, "settings")
        if not isinstance(settings, dict) or settings.get("format") != FORMAT:
            raise CollectionError(f"{folder / DB} is not a fastrag collection")
        version = settings.get("version", 0)
        if isinstance(version, bool) or not isinstance(version, int):
            raise IndexFormatError(f"{folder / DB}: the settings' version is {version!r}, not "
                                   "a number: the database is damaged; rebuild the collection")
        if version > VERSION:
            raise CollectionError(f"{folder} needs a newer fastrag (format {version})")
        if version < 2:
            settings = _upgrade_v1(db)
        check_settings(settings, folder)
        check_schema(db, folder)
        meta_int(db, "generation")
        meta_int(db, "next_chunk")
    except (sqlite3.DatabaseError, json.JSONDecodeError) as e:
        if db is not None:
            db.close()
        if _corrupt(e):
            raise IndexFormatError(f"{folder / DB} is damaged ({e})") from e
        raise CollectionError(f"{folder / DB} is not a readable collection ({e})") from e
    except BaseException:
        if db is not None:
            db.close()
        raise
    return db, settings


_SETTINGS = {"analyzer": str, "chunk_chars": int, "storage": str}


def check_settings(settings: dict[str, Any], folder: Path) -> None:
    """The settings a collection needs, of the right types (IndexFormatError otherwise)."""
    for key, kind in _SETTINGS.items():
        if not isinstance(settings.get(key), kind):
            raise IndexFormatError(f"{folder / DB}: the settings lack a valid {key!r}: the "
                                   "database is damaged; rebuild the collection")
    enc = settings.get("encoder")
    if enc is not None and not (isinstance(enc, dict) and isinstance(enc.get("fingerprint"), str)
                                and isinstance(enc.get("dim"), int)):
        raise IndexFormatError(f"{folder / DB}: the encoder settings are damaged")


_COLUMNS = {
    "meta": {"key", "value"},
    "documents": {"id", "text", "metadata", "crc"},
    "chunks": {"chunk", "doc", "ord", "start", "end", "lang", "crc"},
    "tokens": {"chunk", "n", "data", "crc"},
}


_FOREIGN_KEYS = {"chunks": {("documents", "doc", "id")}, "tokens": {("chunks", "chunk", "chunk")}}


def check_schema(db: sqlite3.Connection, folder: Path) -> None:
    """Every table with its columns and foreign keys (a damaged schema would fail later,
    query by query)."""
    for table, columns in _COLUMNS.items():
        found = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        keys = {(row[2], row[3], row[4]) for row in db.execute(
            f"PRAGMA foreign_key_list({table})")}
        if found != columns or keys != _FOREIGN_KEYS.get(table, set()):
            raise IndexFormatError(
                f"{folder / DB}: table {table!r} has columns {sorted(found)} and references "
                f"{sorted(keys)}: the schema is damaged; rebuild the collection"
            )


def meta_int(db: sqlite3.Connection, key: str) -> int:
    """A counter of the meta table (generation, next_chunk): a non-negative int, else
    IndexFormatError."""
    try:
        value = get_meta(db, key)
    except ValueError as e:
        raise IndexFormatError(f"{DB}: meta {key!r} is damaged ({e})") from e
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise IndexFormatError(f"{DB}: meta {key!r} is missing or damaged ({value!r}); rebuild "
                               "the collection")
    return value


def _upgrade_v1(db: sqlite3.Connection) -> dict[str, Any]:
    """Adds the row checksums of format 2 to a format 1 database (once, under the write
    lock; a concurrent opener waits, then finds it done)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        settings: dict[str, Any] = get_meta(db, "settings")  # a dict: the opener checked it
        if int(settings.get("version", 0)) < 2:
            for table in ("documents", "chunks", "tokens"):
                db.execute(f"ALTER TABLE {table} ADD COLUMN crc INTEGER")
            db.executemany("UPDATE documents SET crc = ? WHERE id = ?", [
                (_upgrade_crc(doc_crc, f"document {d!r}", d, t, m), d)
                for d, t, m in db.execute("SELECT id, text, metadata FROM documents").fetchall()
            ])
            db.executemany("UPDATE chunks SET crc = ? WHERE chunk = ?", [
                (_upgrade_crc(chunk_crc, f"chunk {row[0]}", *row), row[0]) for row in
                db.execute("SELECT chunk, doc, ord, start, end, lang FROM chunks").fetchall()
            ])
            db.executemany("UPDATE tokens SET crc = ? WHERE chunk = ?", [
                (_upgrade_crc(tokens_crc, f"the token vectors of chunk {c}", c, n, data), c)
                for c, n, data in db.execute("SELECT chunk, n, data FROM tokens").fetchall()
            ])
            settings = {**settings, "version": VERSION}
            set_meta(db, "settings", settings)
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return settings


def create_db(folder: Path, settings: dict[str, Any]) -> sqlite3.Connection:
    """The database of a new collection, made whole under a temporary name and renamed into
    place: a process killed while creating leaves no half-made collection."""
    for p in folder.iterdir():
        if _CREATING.match(p.name):
            p.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm", "-journal", ""):  # an unfinished create of version 1
        (folder / (DB + suffix)).unlink(missing_ok=True)
    tmp = folder / f"{DB}.creating-{os.getpid()}"
    db = sqlite3.connect(tmp, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=DELETE")
        db.executescript(_SCHEMA)  # a temporary file: no transaction needed for atomicity
        db.execute("BEGIN")
        set_meta(db, "settings", settings)
        set_meta(db, "generation", 0)
        set_meta(db, "next_chunk", 0)
        db.commit()
    finally:
        db.close()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, folder / DB)
    _fsync_dir(folder)
    return connect(folder / DB)


def unfinished_create(path: Path) -> bool:
    """True for a database that a killed `create` of fastrag 0.1 left: no settings yet."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            if "meta" not in tables:
                return True
            return db.execute("SELECT 1 FROM meta WHERE key = 'settings'").fetchone() is None
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return False


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)



def check_id(doc_id: Any, where: str) -> str:
    """A document id: a non-empty str that is valid Unicode (so it can be stored)."""
    if not isinstance(doc_id, str):
        raise TypeError(
            f"{where}: document ids are str, got {type(doc_id).__name__} {doc_id!r} "
            "(convert them yourself, e.g. str(i), so that 1 and '1' cannot collide)"
        )
    if not doc_id:
        raise ValueError(f"{where}: a document id cannot be empty")
    try:
        doc_id.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"{where}: id {doc_id!r} is not valid Unicode ({e.reason} at {e.start})"
        ) from e
    return doc_id


def document_row(doc_id: str, text: str, metadata: str, crc: int | None) -> Document:
    if not crc_matches(crc, doc_crc, doc_id, text, metadata):
        raise damaged(f"document {doc_id!r}")
    try:
        return Document(doc_id, text, {} if metadata == "{}" else json.loads(metadata))
    except json.JSONDecodeError as e:  # unreachable unless the checksum matched by chance
        raise damaged(f"document {doc_id!r}") from e


def connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    # reads of the hits' texts: pages from a memory map and a 32 MB page cache, not a read()
    # per page
    db.execute("PRAGMA mmap_size=1073741824")
    db.execute("PRAGMA cache_size=-32768")
    return db


def set_meta(db: sqlite3.Connection, key: str, value: Any) -> None:
    db.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, json.dumps(value, ensure_ascii=False)),
    )


def get_meta(db: sqlite3.Connection, key: str, default: Any = None) -> Any:
    """A value of the meta table (JSON text), `default` when the key is absent;
    IndexFormatError when the stored value is not text (a NULL or a number from a damaged
    page) and JSONDecodeError when the text is not JSON."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if row is None:
        return default
    if not isinstance(row[0], str | bytes):
        raise IndexFormatError(f"{DB}: meta {key!r} holds {type(row[0]).__name__}, not JSON "
                               "text: the database is damaged; rebuild the collection")
    return json.loads(row[0])
