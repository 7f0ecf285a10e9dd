"""A collection: documents, their chunks and every index over them, in one folder.

Layout of the folder:

- ``collection.sqlite``: documents (user id, text, metadata JSON), chunks (character spans),
  and ``meta`` (settings, encoder fingerprint, the committed generation of the index files);
- ``bm25.<gen>.fridx``, ``dense.<gen>.frdx``: the indexes over chunks, written by `commit`.

Crash safety: `commit` writes the index files of a new generation first (each atomically),
then commits the SQLite transaction that holds the document changes and names the new
generation, and only then deletes the older files. A process killed at any point leaves
either the old or the new state, complete. Only a writer deletes files, and only while it
holds SQLite's write lock, against the generation it reads under that lock: readers never
delete (a reader that finds its generation's files gone re-reads the generation).

Integrity: every row of ``documents``, ``chunks`` and ``tokens`` carries a CRC-32 of its
content, checked whenever the row is read; a damaged database raises
`fastrag.IndexFormatError`, never a silently wrong passage, metadata or filter result.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sqlite3
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastrag._core import IndexFormatError
from fastrag.encoders.base import Encoder, check_texts
from fastrag.index import BM25, DenseIndex
from fastrag.index.dense import as_matrix
from fastrag.text.chunking import split_passages
from fastrag.text.language import detect_language

log = logging.getLogger(__name__)

DB = "collection.sqlite"
FORMAT = "fastrag.collection"
VERSION = 2  # 2: a CRC-32 per row (version 1 collections are upgraded when opened)
# index files of a generation, and the temporary files the core writes them through
_FILE = re.compile(r"^(bm25|dense)\.(\d+)\.(fridx|frdx)(\.tmp-\d+-\d+)?$")
# a database being created: written under this name, then renamed into place
_CREATING = re.compile(r"^collection\.sqlite\.creating-\d+(-wal|-shm|-journal)?$")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_OPS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}

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
def _doc_crc(doc_id: str, text: str, metadata: str) -> int:
    return zlib.crc32("\x00".join((doc_id, text, metadata)).encode("utf-8", "surrogatepass"))


def _chunk_crc(chunk: int, doc: str, ord_: int, start: int, end: int, lang: str) -> int:
    head = struct.pack("<qqqq", chunk, ord_, start, end)
    return zlib.crc32(head + f"{doc}\x00{lang}".encode("utf-8", "surrogatepass"))


def _tokens_crc(chunk: int, n: int, data: bytes) -> int:
    return zlib.crc32(struct.pack("<qq", chunk, n) + bytes(data))


def _corrupt(e: BaseException) -> bool:
    """SQLite's SQLITE_CORRUPT: "database disk image is malformed" (not a foreign file, a busy
    lock or a constraint)."""
    code = getattr(e, "sqlite_errorcode", None)  # Python 3.11+
    return code == 11 if code is not None else "malformed" in str(e)


@contextmanager
def _sqlite_damage(path: Path) -> Iterator[None]:
    """Turns SQLite's "database disk image is malformed" into IndexFormatError."""
    try:
        yield
    except sqlite3.DatabaseError as e:
        if not _corrupt(e):
            raise
        raise IndexFormatError(f"{path / DB} is damaged ({e}); restore it from a backup or "
                               "rebuild the collection") from e


def _damaged(what: str) -> IndexFormatError:
    return IndexFormatError(
        f"{DB}: {what} fails its checksum: the database is damaged; restore it from a backup "
        "or rebuild the collection"
    )


class CollectionError(ValueError):
    """A folder that is not a collection, or a collection used in a way it cannot be."""


@dataclass
class Document:
    """A stored document."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChunkHit:
    """A chunk of a document in a result list."""

    chunk: int
    doc: str
    start: int
    end: int


def _json_value(value: Any, where: str) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} is not a JSON number")
        return value
    raise ValueError(f"{where}: filter values must be str, number, bool or null, got {value!r}")


def compile_filter(spec: Mapping[str, Any]) -> tuple[str, list[Any], list[str]]:
    """A metadata filter -> (SQL condition on documents.metadata, parameters, field names).

    ``{"lang": "en"}`` (equality), ``{"year": {"$gte": 2000, "$lt": 2010}}`` (ranges: $gt,
    $gte, $lt, $lte, $ne, $eq), ``{"tag": {"$in": ["a", "b"]}}`` (in-list); several fields
    are ANDed. Nested fields are written with dots: ``{"source.kind": "pdf"}``.
    """
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError("a filter is a non-empty dict such as {'lang': 'en'}")
    clauses, params, fields = [], [], []
    for name, cond in spec.items():
        if not isinstance(name, str) or not _FIELD.match(name):
            raise ValueError(f"filter field {name!r}: use letters, digits, _ and dots")
        path = f"$.{name}"
        fields.append(name)
        ops = cond if isinstance(cond, Mapping) else {"$eq": cond}
        if not ops:
            raise ValueError(f"filter on {name!r} is empty")
        for op, value in ops.items():
            where = f"filter on {name!r}"
            if op == "$in":
                if not isinstance(value, (list, tuple)) or not value:
                    raise ValueError(f"{where}: $in takes a non-empty list")
                values = [_json_value(v, where) for v in value]
                clauses.append(
                    f"json_extract(metadata, ?) IN ({', '.join('?' * len(values))})"
                )
                params += [path, *values]
            elif op in _OPS:
                v = _json_value(value, where)
                if v is None:
                    raise ValueError(f"{where}: compare with null is not supported")
                # compare like with like: SQLite orders every text above every number
                kinds = ("'true','false'" if isinstance(v, bool) else
                         "'integer','real'" if isinstance(v, (int, float)) else "'text'")
                clauses.append(
                    f"(json_type(metadata, ?) IN ({kinds}) AND json_extract(metadata, ?) "
                    f"{_OPS[op]} ?)"
                )
                params += [path, path, v]
            else:
                raise ValueError(
                    f"{where}: unknown operator {op!r}; use $in, {', '.join(_OPS)}"
                )
    return " AND ".join(clauses), params, fields


class Collection:
    """Documents, chunks, metadata and their BM25 and dense indexes in one folder.

    >>> col = Collection.create("docs.fr", encoder="default")
    >>> col.add(["first text", "second text"], ids=["a", "b"], metadata=[{"lang": "en"}, {}])
    >>> col.commit()
    >>> col.search("which text?", k=5)

    Use `create` and `open`, not the constructor. Changes (`add`, `delete`) are visible to
    searches at once and reach the disk at `commit` (or when a ``with`` block ends).
    """

    def __init__(self, path: Path, db: sqlite3.Connection, settings: dict[str, Any]) -> None:
        self.path = path
        self._db = db
        self.settings = settings
        self._lock = threading.RLock()
        self._dirty = False
        self._encoder: Encoder | None = None
        self._chunk_map: dict[int, ChunkHit] | None = None  # chunk -> document span, lazily
        self._language_shares: dict[str, float] | None = None  # languages(), lazily
        self._documents_verified = False  # every document row checked (see allowed_chunks)
        self._generation = 0  # of the index files in memory
        self._data_version = -1  # SQLite's PRAGMA data_version when last found current
        self._mmap = False
        self.bm25: BM25 | None = None
        self.dense: DenseIndex | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        encoder: Encoder | str | None = "default",
        analyzer: str = "auto",
        chunk_chars: int = 1000,
        storage: str = "float32",
        languages: Sequence[str] | None = None,
        token_vectors: bool = False,
    ) -> Collection:
        """A new, empty collection in folder `path` (created; it must not hold one already).

        Args:
            encoder: the dense encoder: a `fastrag.Encoder`, a model name for
                `fastrag.TextEncoder` ("default": all-MiniLM-L6-v2, offline), or None for a
                BM25-only collection.
            analyzer: BM25 analyzer ("auto", "english", "japanese", "bigram").
            chunk_chars: longest chunk in characters (documents are split into chunks).
            storage: dense vector storage ("float32", "int8", "float16").
            languages: the encoder's languages, when `encoder` is an object that does not
                say (the registry knows them for model names).
            token_vectors: also store every chunk's token vectors (float16, unit length per
                token) for late-interaction (MaxSim) reranking; needs a `fastrag.TextEncoder`.
                About n_tokens x dim x 2 bytes per chunk.
        """
        folder = Path(path)
        if (folder / DB).exists() and not _unfinished_create(folder / DB):
            raise CollectionError(f"{folder} already holds a collection; use Collection.open")
        split_passages("x" * 16, max_chars=chunk_chars)  # validates chunk_chars
        enc = _make_encoder(encoder)
        if token_vectors and not hasattr(enc, "token_vectors"):
            raise ValueError("token_vectors=True needs a local fastrag.TextEncoder")
        settings = {
            "format": FORMAT,
            "version": VERSION,
            "analyzer": analyzer,
            "chunk_chars": chunk_chars,
            "storage": storage,
            "token_vectors": bool(token_vectors),
            "encoder": None if enc is None else {
                "model": encoder if isinstance(encoder, str) else None,
                "fingerprint": enc.fingerprint,
                "dim": enc.dim,
                "languages": list(languages or _languages_of(enc)),
            },
        }
        folder.mkdir(parents=True, exist_ok=True)
        db = _create_db(folder, settings)
        col = cls(folder, db, settings)
        col._encoder = enc
        col.bm25 = BM25(analyzer=analyzer)
        col.dense = None if enc is None else DenseIndex(encoder=enc, storage=storage)
        return col

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        encoder: Encoder | str | None = None,
        mmap: bool = False,
    ) -> Collection:
        """Opens the collection in folder `path` at its last committed state.

        `encoder` (an object or model name) must make the vectors the collection was built
        with (same fingerprint); by default the model named at creation is loaded.
        """
        folder = Path(path)
        db, settings = _open_db(folder)
        col = cls(folder, db, settings)
        enc_info = settings.get("encoder")
        try:
            if enc_info is not None:
                enc = _make_encoder(encoder if encoder is not None else enc_info.get("model"))
                if enc is None:
                    raise CollectionError(
                        f"{folder} was built with encoder {enc_info['fingerprint']}; "
                        "pass encoder= (the same model) to open it"
                    )
                if enc.fingerprint != enc_info["fingerprint"]:
                    raise CollectionError(
                        f"{folder} was built with encoder {enc_info['fingerprint']}, not "
                        f"{enc.fingerprint}: vectors of another encoder are not comparable; "
                        "open it with the same model, or build a new collection"
                    )
                col._encoder = enc
            col._mmap = mmap
            col._load_indexes()
        except BaseException:
            db.close()
            raise
        return col

    def _load_indexes(self) -> None:
        """Loads the index files of the committed generation. A writer in another process may
        commit a newer one and delete these files meanwhile: then the generation is read
        again (readers never delete anything)."""
        for _ in range(20):
            gen = int(_get_meta(self._db, "generation"))
            try:
                if gen == 0:
                    bm25 = BM25(analyzer=self.settings["analyzer"])
                    dense = None if self._encoder is None else DenseIndex(
                        encoder=self._encoder, storage=self.settings["storage"]
                    )
                else:
                    bm25 = BM25.load(self.path / f"bm25.{gen}.fridx", mmap=self._mmap)
                    dense = None if self._encoder is None else DenseIndex.load(
                        self.path / f"dense.{gen}.frdx", mmap=self._mmap, encoder=self._encoder
                    )
            except OSError:
                if int(_get_meta(self._db, "generation")) != gen:
                    continue  # a newer generation was committed (and this one deleted)
                names = [f"bm25.{gen}.fridx"] + ([f"dense.{gen}.frdx"] if self._encoder else [])
                if all((self.path / n).exists() for n in names):
                    raise
                raise IndexFormatError(
                    f"{self.path}: the index files of generation {gen} are missing; "
                    "rebuild the collection"
                ) from None
            chunks = int(self._db.execute("SELECT count(*) FROM chunks").fetchone()[0])
            if int(_get_meta(self._db, "generation")) != gen:
                continue  # the documents moved on while the files were read
            if len(bm25) != chunks or (dense is not None and len(dense) != chunks):
                raise IndexFormatError(
                    f"{self.path}: the database holds {chunks} chunks but the index files of "
                    f"generation {gen} hold {len(bm25)}: the collection is damaged; rebuild it"
                )
            self.bm25, self.dense, self._generation = bm25, dense, gen
            self._forget_rows()
            return
        raise CollectionError(f"{self.path}: the collection changed too often while opening")

    def _forget_rows(self) -> None:
        """Drops what was cached from the database's rows (they changed)."""
        self._chunk_map = None
        self._language_shares = None
        self._documents_verified = False

    def _current(self) -> int | None:
        """Catches up with commits of other connections (processes, or other Collection
        objects): when the committed generation moved on, its index files are loaded. Returns
        SQLite's data_version to compare after reading (None inside our own write
        transaction, where nobody else can commit)."""
        with self._lock:
            if self._db.in_transaction:
                return None
            version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
            if version != self._data_version:
                if int(_get_meta(self._db, "generation")) != self._generation:
                    self._load_indexes()
                self._data_version = version
            return version

    def _unchanged_since(self, version: int | None) -> bool:
        return version is None or version == int(
            self._db.execute("PRAGMA data_version").fetchone()[0]
        )

    def _remove_stale(self) -> None:
        """Deletes index files of other generations than the committed one: older ones, and
        newer or temporary ones that a killed writer left. Only a writer calls this, holding
        the write lock (or taking it, if free), and it reads the generation under the lock;
        without the lock it deletes only older generations, which nothing can need again."""
        locked = self._db.in_transaction
        own = False
        if not locked:
            self._db.execute("PRAGMA busy_timeout = 0")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                locked = own = True
            except sqlite3.OperationalError:  # another writer is active
                pass
            finally:
                self._db.execute("PRAGMA busy_timeout = 5000")
        try:
            gen = int(_get_meta(self._db, "generation"))
            for p in self.path.iterdir():
                m = _FILE.match(p.name)
                if not m:
                    continue
                file_gen, temporary = int(m.group(2)), m.group(4) is not None
                if (file_gen < gen and not temporary) or (
                    locked and (file_gen > gen or temporary)
                ):
                    p.unlink(missing_ok=True)
        finally:
            if own:
                self._db.rollback()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()
        self.close()

    def close(self) -> None:
        """Closes the database (uncommitted changes are lost)."""
        if self._db.in_transaction:
            self._db.rollback()
        self._db.close()

    # ------------------------------------------------------------------ properties
    @property
    def encoder(self) -> Encoder | None:
        return self._encoder

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM documents").fetchone()[0])

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and self._db.execute(
            "SELECT 1 FROM documents WHERE id = ?", (doc_id,)
        ).fetchone() is not None

    def info(self) -> dict[str, Any]:
        """Counts, settings, languages and files (see `read_info`)."""
        return {**_info(self.path, self._db, self.settings), "uncommitted_changes": self._dirty}

    def verify(self) -> dict[str, int]:
        """Checks the whole database: SQLite's structure (``PRAGMA quick_check``) and the
        checksum of every row; raises `fastrag.IndexFormatError` on damage, else returns the
        counts of rows checked."""
        with _sqlite_damage(self.path):
            problems = [r[0] for r in self._db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise IndexFormatError(
                    f"{self.path / DB} is damaged: {'; '.join(problems[:3])}"
                )
            docs = sum(1 for _ in self.documents())
            with self._lock:
                self._chunk_map = None  # read (and check) every chunk row again
                self.chunks_of(())
                chunks = len(self._chunk_map or {})
            tokens = 0
            for c, n, data, crc in self._db.execute("SELECT chunk, n, data, crc FROM tokens"):
                if crc != _tokens_crc(c, n, data):
                    raise _damaged(f"the token vectors of chunk {c}")
                tokens += 1
        return {"documents": docs, "chunks": chunks, "token_rows": tokens}

    def languages(self) -> dict[str, float]:
        """Share of chunks per language family ({"en": 0.9, "ja": 0.1}).

        Read by every adaptive hybrid query: counted once, then again only after a change.
        """
        with self._lock:
            if self._language_shares is None:
                self._language_shares = _languages(self._db)
            return dict(self._language_shares)

    # ------------------------------------------------------------------ documents
    def get(self, doc_id: str) -> Document:
        """A stored document (KeyError for an unknown id)."""
        with _sqlite_damage(self.path):
            found = self.texts_of([_check_id(doc_id, "doc_id")])
        if not found:
            raise KeyError(f"no document with id {doc_id!r}")
        return found[doc_id]

    def documents(self) -> Iterator[Document]:
        with _sqlite_damage(self.path):
            for row in self._db.execute(
                "SELECT id, text, metadata, crc FROM documents ORDER BY rowid"
            ):
                yield _document(*row)

    def chunks_of(self, chunk_ids: Iterable[int]) -> dict[int, ChunkHit]:
        """{chunk id: ChunkHit} of the chunks that exist (from an in-memory map, read once)."""
        with self._lock:
            if self._chunk_map is None:
                found = {}
                for c, d, o, s, e, lang, crc in self._db.execute(
                    "SELECT chunk, doc, ord, start, end, lang, crc FROM chunks"
                ):
                    if crc != _chunk_crc(c, d, o, s, e, lang):
                        raise _damaged(f"chunk {c}")
                    found[c] = ChunkHit(c, d, s, e)
                self._chunk_map = found
            found = self._chunk_map
        return {c: found[c] for c in chunk_ids if c in found}

    def texts_of(self, doc_ids: Iterable[str]) -> dict[str, Document]:
        ids = list(dict.fromkeys(str(d) for d in doc_ids))
        out: dict[str, Document] = {}
        for start in range(0, len(ids), 900):
            part = ids[start : start + 900]
            marks = ",".join("?" * len(part))
            q = f"SELECT id, text, metadata, crc FROM documents WHERE id IN ({marks})"
            for row in self._db.execute(q, part):
                out[row[0]] = _document(*row)
        return out

    def add(
        self,
        texts: Sequence[str] | str,
        ids: Sequence[str] | str | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | Mapping[str, Any] | None = None,
        *,
        vectors: Any = None,
        batch_size: int = 32,
    ) -> list[str]:
        """Adds (or replaces: upsert by id) documents; returns their ids.

        Documents are split into chunks of at most ``chunk_chars`` characters; each chunk is
        indexed by BM25 and (with an encoder) embedded. An add is all or nothing: when any
        text is empty or invalid, an id is not a str, a metadata value is not JSON, or the
        encoder fails or returns NaN, the collection is left exactly as it was.

        `vectors` (n, dim) brings precomputed embeddings of the collection's encoder, one per
        document; every document must then fit in one chunk.
        """
        if isinstance(texts, str):
            texts = [texts]
            ids = [ids] if isinstance(ids, str) else ids
            metadata = [metadata] if isinstance(metadata, Mapping) else metadata
        elif isinstance(ids, (str, bytes)):
            raise TypeError("ids must be a list of ids (one per text), not a single string")
        texts = check_texts(list(texts))
        if ids is None:
            base = len(self)
            ids = [str(base + i) for i in range(len(texts))]
            while any(i in self for i in ids):
                base += len(texts)
                ids = [str(base + i) for i in range(len(texts))]
        ids = [_check_id(d, f"ids[{i}]") for i, d in enumerate(ids)]  # type: ignore[union-attr]
        if len(ids) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(ids)} ids")
        if len(set(ids)) != len(ids):
            raise ValueError("ids repeat within one add call")
        metas = list(metadata) if metadata is not None else [None] * len(texts)
        if len(metas) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(metas)} metadata entries")
        meta_json = []
        for i, m in enumerate(metas):
            if m is not None and not isinstance(m, Mapping):
                raise TypeError(f"metadata[{i}] must be a dict or None")
            try:
                meta_json.append(json.dumps(dict(m or {}), ensure_ascii=False, allow_nan=False))
            except (TypeError, ValueError) as e:
                raise ValueError(f"metadata[{i}] is not JSON-serialisable: {e}") from e

        # everything that can fail on the input happens before anything changes
        spans = [split_passages(t, max_chars=self.settings["chunk_chars"]) for t in texts]
        chunk_texts = [t[s:e] for t, sp in zip(texts, spans, strict=True) for s, e in sp]
        if vectors is not None:
            if self.dense is None:
                raise ValueError("vectors given, but this collection has no encoder")
            long = [ids[i] for i, sp in enumerate(spans) if len(sp) != 1]
            if long:
                raise ValueError(
                    f"vectors are one per document, but {long[:3]} do not fit in one chunk of "
                    f"{self.settings['chunk_chars']} characters"
                )
            vectors = as_matrix(vectors, self.dense.dim)
            if len(vectors) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(vectors)} vectors")
        token_rows: list[np.ndarray] = []
        if self.settings.get("token_vectors") and chunk_texts:
            token_rows, pooled = _token_pass(self._encoder, chunk_texts, batch_size)
            if vectors is None:
                vectors = pooled
        elif vectors is None and self.dense is not None and chunk_texts:
            vectors = self._encoder.encode_documents(  # type: ignore[union-attr]
                chunk_texts, batch_size=batch_size
            )
        if self.dense is not None and chunk_texts:
            vectors = as_matrix(vectors, self.dense.dim, name="encoder output")
            if len(vectors) != len(chunk_texts):
                raise ValueError(f"the encoder returned {len(vectors)} vectors for "
                                 f"{len(chunk_texts)} chunks")
            self.dense._core_check(vectors)  # NaN / inf / zero rows, before anything changes
        with self._lock:
            self._begin()
            self._db.execute("SAVEPOINT fastrag_add")
            added: list[Any] = []
            try:
                old = self._chunks_of_docs(ids)
                self._delete_rows(old)
                first = int(_get_meta(self._db, "next_chunk"))
                rows, chunk_ids, n = [], [], first
                for doc_id, text, sp in zip(ids, texts, spans, strict=True):
                    for j, (s, e) in enumerate(sp):
                        lang = detect_language(text, s, e)
                        crc = _chunk_crc(n, doc_id, j, s, e, lang)
                        rows.append((n, doc_id, j, s, e, lang, crc))
                        chunk_ids.append(n)
                        n += 1
                self._db.executemany(
                    "INSERT INTO documents(id, text, metadata, crc) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET text = excluded.text, "
                    "metadata = excluded.metadata, crc = excluded.crc",
                    [(d, t, m, _doc_crc(d, t, m))
                     for d, t, m in zip(ids, texts, meta_json, strict=True)],
                )
                self._db.executemany(
                    "INSERT INTO chunks(chunk, doc, ord, start, end, lang, crc) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                if token_rows:
                    self._db.executemany(
                        "INSERT INTO tokens(chunk, n, data, crc) VALUES (?, ?, ?, ?)",
                        [(c, len(t), t.tobytes(), _tokens_crc(c, len(t), t.tobytes()))
                         for c, t in zip(chunk_ids, token_rows, strict=True)],
                    )
                _set_meta(self._db, "next_chunk", n)
                # the new chunks go into the indexes next to the old ones, which leave only
                # once every index took the new ones: a failure can be undone exactly
                if chunk_ids:
                    assert self.bm25 is not None
                    added.append(self.bm25)
                    self.bm25.add(chunk_texts, ids=chunk_ids)
                    if self.dense is not None:
                        added.append(self.dense)
                        self.dense.add(vectors, ids=chunk_ids)
            except BaseException:
                for index in added:
                    index.delete(chunk_ids, missing="ignore")
                self._db.execute("ROLLBACK TO fastrag_add")
                self._db.execute("RELEASE fastrag_add")
                raise
            self._db.execute("RELEASE fastrag_add")
            self._drop_from_indexes(old)
            if self._chunk_map is not None:
                for c, d, _, s, e, _, _ in rows:
                    self._chunk_map[c] = ChunkHit(c, d, s, e)
            self._dirty = True
        return ids

    def delete(self, ids: Iterable[str] | str, *, missing: str = "raise") -> int:
        """Deletes documents (and their chunks from every index); returns how many."""
        if missing not in ("raise", "ignore"):
            raise ValueError(f"missing must be 'raise' or 'ignore', got {missing!r}")
        if isinstance(ids, str):
            ids = [ids]
        ids = list(dict.fromkeys(_check_id(d, f"ids[{i}]") for i, d in enumerate(ids)))
        unknown = [i for i in ids if i not in self]
        if unknown and missing == "raise":
            raise KeyError(f"unknown document ids: {unknown[:5]}")
        known = [i for i in ids if i not in unknown]
        with self._lock:
            self._begin()
            old = self._chunks_of_docs(known)
            self._delete_rows(old)
            self._db.executemany("DELETE FROM documents WHERE id = ?", [(i,) for i in known])
            self._drop_from_indexes(old)
            self._dirty = self._dirty or bool(known)
        return len(known)

    def _chunks_of_docs(self, doc_ids: list[str]) -> list[int]:
        old: list[int] = []
        for start in range(0, len(doc_ids), 900):
            part = doc_ids[start : start + 900]
            q = f"SELECT chunk FROM chunks WHERE doc IN ({','.join('?' * len(part))})"
            old += [r[0] for r in self._db.execute(q, part)]
        return old

    def _delete_rows(self, chunks: list[int]) -> None:
        self._db.executemany("DELETE FROM tokens WHERE chunk = ?", [(c,) for c in chunks])
        self._db.executemany("DELETE FROM chunks WHERE chunk = ?", [(c,) for c in chunks])

    def _drop_from_indexes(self, chunks: list[int]) -> None:
        self._language_shares = None
        if not chunks:
            return
        assert self.bm25 is not None
        self.bm25.delete(chunks, missing="ignore")
        if self.dense is not None:
            self.dense.delete(chunks, missing="ignore")
        if self._chunk_map is not None:
            for c in chunks:
                self._chunk_map.pop(c, None)

    def _begin(self) -> None:
        """Takes SQLite's write lock for this collection's changes (until commit/rollback);
        the first write also clears files that a killed writer left behind."""
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if int(_get_meta(self._db, "generation")) != self._generation:
                    self._load_indexes()  # another connection committed: write on top of it
                self._remove_stale()
            except BaseException:
                self._db.rollback()
                raise

    # ------------------------------------------------------------------ persistence
    def commit(self) -> None:
        """Writes the indexes of a new generation, then commits the documents with it."""
        with self._lock:
            if not self._dirty:
                if self._db.in_transaction:
                    self._db.commit()
                return
            self._begin()
            gen = int(_get_meta(self._db, "generation")) + 1
            assert self.bm25 is not None
            self.bm25.save(self.path / f"bm25.{gen}.fridx")
            if self.dense is not None:
                self.dense.save(self.path / f"dense.{gen}.frdx")
            _set_meta(self._db, "generation", gen)
            self._db.commit()
            self._dirty = False
            self._generation = gen
            self._remove_stale()

    def rollback(self) -> None:
        """Drops uncommitted changes: back to the last committed state."""
        with self._lock:
            if self._db.in_transaction:
                self._db.rollback()
            self._forget_rows()
            if self._dirty:
                self._load_indexes()
                self._dirty = False

    # ------------------------------------------------------------------ filters
    def allowed_chunks(self, spec: Mapping[str, Any]) -> list[int]:
        """Chunk ids of the documents whose metadata match the filter (see compile_filter).

        A field that no document has raises ValueError (most likely a typo).
        """
        cond, params, fields = compile_filter(spec)
        with self._lock:
            # the filter runs inside SQLite over every document's metadata: check them all
            # once (a flipped bit would otherwise change the result silently)
            if not self._documents_verified:
                for row in self._db.execute("SELECT id, text, metadata, crc FROM documents"):
                    _document(*row)
                self._documents_verified = True
        for name in fields:
            hit = self._db.execute(
                "SELECT 1 FROM documents WHERE json_type(metadata, ?) IS NOT NULL LIMIT 1",
                (f"$.{name}",),
            ).fetchone()
            if hit is None:
                raise ValueError(f"no document has the metadata field {name!r}")
        q = (
            "SELECT c.chunk FROM chunks c JOIN documents d ON d.id = c.doc "
            f"WHERE {cond.replace('metadata', 'd.metadata')}"
        )
        return [r[0] for r in self._db.execute(q, params)]

    # ------------------------------------------------------------------ search
    def search(
        self,
        query: str,
        k: int = 10,
        *,
        method: str | Any = "hybrid",
        filter: Mapping[str, Any] | None = None,
        explain: bool = False,
    ) -> list[Any]:
        """The k best documents for `query`: a list of `fastrag.search.Result`.

        `method` is "hybrid" (the default pipeline), "bm25", "dense", or a
        `fastrag.search.Pipeline`. `filter` restricts to documents whose metadata match.
        """
        from fastrag.search.pipeline import Pipeline, default_pipeline

        pipeline = method if isinstance(method, Pipeline) else default_pipeline(self, method)
        def run() -> list[Any]:
            return pipeline.search(self, query, k=k, filter=filter, explain=explain)

        with _sqlite_damage(self.path):
            # rows and index files must be of one generation: when another connection
            # commits while we read, search again on the new one
            for _ in range(5):
                version = self._current()
                try:
                    results = run()
                except IndexFormatError:
                    if self._unchanged_since(version):
                        raise
                    continue
                if self._unchanged_since(version):
                    return results
            with self._lock:  # a writer commits without pause: read in one transaction
                if self._db.in_transaction:
                    return run()
                self._db.execute("BEGIN")
                try:
                    if int(_get_meta(self._db, "generation")) != self._generation:
                        self._load_indexes()
                    return run()
                finally:
                    self._db.rollback()


def _languages(db: sqlite3.Connection) -> dict[str, float]:
    stats = dict(db.execute("SELECT lang, count(*) FROM chunks GROUP BY lang").fetchall())
    total = sum(stats.values())
    return {k: v / total for k, v in stats.items()} if total else {}


def _info(path: Path, db: sqlite3.Connection, settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "path": str(path),
        "documents": int(db.execute("SELECT count(*) FROM documents").fetchone()[0]),
        "chunks": int(db.execute("SELECT count(*) FROM chunks").fetchone()[0]),
        "generation": int(_get_meta(db, "generation")),
        "analyzer": settings["analyzer"],
        "chunk_chars": settings["chunk_chars"],
        "storage": settings["storage"],
        "encoder": settings.get("encoder"),
        "languages": _languages(db),
        "files": {p.name: p.stat().st_size for p in sorted(path.iterdir()) if p.is_file()},
    }


def read_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A collection's counts, settings and files, read without loading indexes or models."""
    folder = Path(path)
    db, settings = _open_db(folder)
    try:
        return _info(folder, db, settings)
    finally:
        db.close()


def _open_db(folder: Path) -> tuple[sqlite3.Connection, dict[str, Any]]:
    """The database and settings of a collection folder, checked (and upgraded from
    version 1, which had no row checksums)."""
    if not (folder / DB).is_file():
        raise CollectionError(f"{folder} is not a fastrag collection (no {DB})")
    db = None
    try:
        db = _connect(folder / DB)
        settings = _get_meta(db, "settings")
        if not isinstance(settings, dict) or settings.get("format") != FORMAT:
            raise CollectionError(f"{folder / DB} is not a fastrag collection")
        if int(settings.get("version", 0)) > VERSION:
            raise CollectionError(
                f"{folder} needs a newer fastrag (format {settings['version']})"
            )
        if int(settings.get("version", 0)) < 2:
            settings = _upgrade_v1(db)
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


def _upgrade_v1(db: sqlite3.Connection) -> dict[str, Any]:
    """Adds the row checksums of format 2 to a format 1 database (once, under the write
    lock; a concurrent opener waits, then finds it done)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        settings = _get_meta(db, "settings")
        if int(settings.get("version", 0)) < 2:
            for table in ("documents", "chunks", "tokens"):
                db.execute(f"ALTER TABLE {table} ADD COLUMN crc INTEGER")
            db.executemany("UPDATE documents SET crc = ? WHERE id = ?", [
                (_doc_crc(d, t, m), d)
                for d, t, m in db.execute("SELECT id, text, metadata FROM documents").fetchall()
            ])
            db.executemany("UPDATE chunks SET crc = ? WHERE chunk = ?", [
                (_chunk_crc(*row), row[0]) for row in
                db.execute("SELECT chunk, doc, ord, start, end, lang FROM chunks").fetchall()
            ])
            db.executemany("UPDATE tokens SET crc = ? WHERE chunk = ?", [
                (_tokens_crc(c, n, data), c)
                for c, n, data in db.execute("SELECT chunk, n, data FROM tokens").fetchall()
            ])
            settings = {**settings, "version": VERSION}
            _set_meta(db, "settings", settings)
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return settings


def _create_db(folder: Path, settings: dict[str, Any]) -> sqlite3.Connection:
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
        _set_meta(db, "settings", settings)
        _set_meta(db, "generation", 0)
        _set_meta(db, "next_chunk", 0)
        db.commit()
    finally:
        db.close()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, folder / DB)
    _fsync_dir(folder)
    return _connect(folder / DB)


def _unfinished_create(path: Path) -> bool:
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



def _check_id(doc_id: Any, where: str) -> str:
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


def _document(doc_id: str, text: str, metadata: str, crc: int | None) -> Document:
    if crc != _doc_crc(doc_id, text, metadata):
        raise _damaged(f"document {doc_id!r}")
    try:
        return Document(doc_id, text, json.loads(metadata))
    except json.JSONDecodeError as e:  # unreachable unless the checksum matched by chance
        raise _damaged(f"document {doc_id!r}") from e


def _languages_of(enc: Encoder) -> list[str]:
    langs = getattr(enc, "manifest", {}).get("languages") if hasattr(enc, "manifest") else None
    return list(langs) if langs else ["en"]


def _make_encoder(encoder: Encoder | str | None) -> Encoder | None:
    if encoder is None or isinstance(encoder, Encoder):
        return encoder
    if isinstance(encoder, str):
        from fastrag.encoders import TextEncoder

        return TextEncoder(encoder)
    raise TypeError(f"encoder must be a fastrag Encoder, a model name or None, got {encoder!r}")


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    return db


def _set_meta(db: sqlite3.Connection, key: str, value: Any) -> None:
    db.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, json.dumps(value, ensure_ascii=False)),
    )


def _get_meta(db: sqlite3.Connection, key: str, default: Any = None) -> Any:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return default if row is None else json.loads(row[0])


def _token_pass(
    encoder: Any, texts: list[str], batch_size: int
) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Token vectors (float16, unit length per token) of every text, and, when the encoder
    mean-pools without a document prompt, the pooled document vectors from the same pass."""
    from fastrag.encoders.base import normalize

    out = encoder.token_vectors(texts, kind="document", batch_size=min(batch_size, 16))
    rows = [normalize(np.array(t.vectors, dtype=np.float32)).astype(np.float16) for t in out]
    pooled = None
    if getattr(encoder, "pooling", None) == "mean" and not encoder.prompts.get("document"):
        pooled = np.stack([t.vectors.mean(axis=0) for t in out]).astype(np.float32)
        if encoder.normalized:
            pooled = normalize(pooled)
    return rows, pooled


def token_vectors_of(col: Collection, chunk_ids: Sequence[int]) -> list[np.ndarray]:
    """Stored token vectors (float16 (n, dim)) of chunks, in the order given."""
    if not col.settings.get("token_vectors"):
        raise CollectionError("this collection stores no token vectors (token_vectors=True)")
    dim = int(col.settings["encoder"]["dim"])
    found: dict[int, np.ndarray] = {}
    ids = [int(c) for c in chunk_ids]
    for start in range(0, len(ids), 900):
        part = ids[start : start + 900]
        marks = ",".join("?" * len(part))
        for c, n, data, crc in col._db.execute(
            f"SELECT chunk, n, data, crc FROM tokens WHERE chunk IN ({marks})", part
        ):
            if crc != _tokens_crc(c, n, data) or len(data) != n * dim * 2:
                raise _damaged(f"the token vectors of chunk {c}")
            found[c] = np.frombuffer(data, dtype=np.float16).reshape(n, dim)
    return [found.get(c, np.zeros((0, dim), dtype=np.float16)) for c in ids]


def vectors_of(col: Collection, chunk_ids: Sequence[int]) -> np.ndarray:
    """Stored (normalised) dense vectors of chunks, (n, dim) float32."""
    if col.dense is None:
        raise CollectionError("this collection has no dense index")
    return np.stack([col.dense.get_vector(int(c)) for c in chunk_ids]).astype(np.float32)
