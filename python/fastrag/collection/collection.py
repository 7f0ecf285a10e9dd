"""A collection: documents, their chunks and every index over them, in one folder.

Layout of the folder: ``collection.sqlite`` (see `fastrag.collection.store`) and the index
files over chunks, ``bm25.<gen>.fridx`` and ``dense.<gen>.frdx``, written by `commit`.

Crash safety: `commit` writes the index files of a new generation first (each atomically),
then commits the SQLite transaction that holds the document changes and names the new
generation, and only then deletes the older files. A process killed at any point leaves
either the old or the new state, complete. Only a writer deletes files, and only while it
holds SQLite's write lock, against the generation it reads under that lock: readers never
delete (a reader that finds its generation's files gone re-reads the generation). A search
catches up with commits of other connections, so its rows and index files are always of one
generation.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from fastrag._core import IndexFormatError
from fastrag.collection import legs as legs_mod
from fastrag.collection import mk, passages, store
from fastrag.collection.clock import CommitClock
from fastrag.collection.docstore import DocStore
from fastrag.collection.docstore import file_name as docs_file
from fastrag.collection.filters import compile_filter
from fastrag.collection.ingest import MAX_FILE_BYTES, Found, read_paths
from fastrag.collection.metaindex import Unsupported
from fastrag.collection.store import CollectionError
from fastrag.encoders.base import Encoder, check_texts
from fastrag.encoders.models import SpladeEncoder, TextEncoder
from fastrag.encoders.static import StaticEncoder, is_static_model
from fastrag.index import BM25, DenseIndex
from fastrag.index.dense import as_matrix
from fastrag.search.corpus import NO_DOC, ChunkHit, ChunkTable, Document
from fastrag.search.llm import ChatClient
from fastrag.search.pipeline import Pipeline, Result, default_pipeline
from fastrag.search.spec import pipeline_from_spec
from fastrag.text.chunking import split_passages
from fastrag.text.language import detect_language

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
_T = TypeVar("_T")


def _checked(method: F) -> F:
    """SQLite's "database disk image is malformed" in `method` becomes IndexFormatError."""

    @functools.wraps(method)
    def wrapper(self: Collection, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as e:
            damage = store.as_damage(e, self.path)
            if damage is e:
                raise
            raise damage from e

    return wrapper  # type: ignore[return-value]


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
        self._chunks: ChunkTable | None = None  # chunk -> document and span, read lazily
        self._language_shares: dict[str, float] | None = None  # languages(), lazily
        # (generation key, arrays) of _allowed_in_memory
        self._record_of_ordinal: tuple[Any, tuple[np.ndarray, ...]] | None = None
        self._documents_verified = False  # every document row checked (see allowed_chunks)
        self._generation = 0  # of the index files in memory
        self._data_version = -1  # SQLite's PRAGMA data_version when last found current
        # the commit clock, and its value when last found current (-2: not found even yet)
        self._clock = CommitClock(path)
        self._clock_seen = -2
        self._mmap = False
        self._splade: Any = None  # the SPLADE model of a sparse="splade" collection
        self._indexes: dict[str, Any] = {}  # leg -> index over chunk ids
        self._docs = DocStore()  # the documents of the generation (and changes since)
        self._closed = False
        self._pipelines: dict[str, Pipeline] = {}  # the pipelines behind method names
        self._deferred: set[str] = set()  # legs left out by add(skip_legs=), until set_index

    @property
    def bm25(self) -> BM25 | None:
        """The BM25 index over chunks."""
        return self._indexes.get("bm25")

    @property
    def dense(self) -> DenseIndex | None:
        """The dense index over chunks (None without an encoder)."""
        return self._indexes.get("dense")

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        encoder: Encoder | str | None = "default",
        analyzer: str = "auto",
        chunk_chars: int | None = None,
        chunk_tokens: int | str | None = "auto",
        quantize: str | None = None,
        storage: str = "auto",
        languages: Sequence[str] | None = None,
        token_vectors: bool = False,
        sparse: str | None = None,
        late_chunking: bool = False,
        splade: SpladeEncoder | str = "splade-tiny",
    ) -> Collection:
        """A new, empty collection in folder `path` (created; it must not hold one already).

        Args:
            encoder: the dense encoder: a `fastrag.Encoder`, a model name for
                `fastrag.TextEncoder` ("default": all-MiniLM-L6-v2, offline), a static model
                (``static:<folder or id>``, `fastrag.encoders.StaticEncoder`), or None for a
                BM25-only collection.
            analyzer: BM25 analyzer ("auto", "english", "japanese", "bigram").
            chunk_chars: longest chunk in characters (documents are split into chunks);
                None: 1000, or 8 per token of `chunk_tokens` when that applies.
            chunk_tokens: longest chunk in tokens of the encoder: "auto" (its window less
                special tokens and prompt, so no chunk is ever truncated), an int, or None
                (characters only). Applies to local encoders (with a tokenizer) only.
            quantize: None or "int8": run the encoder named by `encoder` in int8 (also when
                the collection is opened again).
            storage: dense vector storage: "auto" (float32 below 1,024 vectors, then int8
                codes walked and the float32 vectors kept to rescore the beam: the same
                recall, a faster search), "float32", "int8", "float16" or "int4".
            languages: the encoder's languages, when `encoder` is an object that does not
                say (the registry knows them for model names).
            token_vectors: also store every chunk's token vectors (float16, unit length per
                token) for late-interaction (MaxSim) reranking; needs a `fastrag.TextEncoder`.
                About n_tokens x dim x 2 bytes per chunk.
            sparse: a learned sparse leg: "splade" (the `splade` model, run on every chunk)
                or "bm42" (word weights from the encoder's [CLS] attentions, out of the same
                pass as the dense vectors; the encoder is exported with attentions).
            late_chunking: a "late" leg of late-chunking vectors (each document through the
                encoder whole, each chunk the mean of its tokens), searched with
                ``Retriever("late")``.
        """
        folder = Path(path)
        if (folder / store.DB).exists() and not store.unfinished_create(folder / store.DB):
            raise CollectionError(f"{folder} already holds a collection; use Collection.open")
        if chunk_chars is not None:
            split_passages("x" * 16, max_chars=chunk_chars)  # validates chunk_chars
        if storage not in legs_mod.STORAGE_SETTINGS:
            raise ValueError(f"storage must be one of {', '.join(legs_mod.STORAGE_SETTINGS)}, "
                             f"got {storage!r}")
        if sparse not in (None, *legs_mod.SPARSE):
            raise ValueError(f"sparse must be None, 'splade' or 'bm42', got {sparse!r}")
        enc = _make_encoder(encoder, attentions=sparse == "bm42", quantize=quantize)
        chunk_chars, tokens = passages.chunk_settings(chunk_chars, chunk_tokens, enc)
        local = hasattr(enc, "token_vectors")
        for flag, wanted in [("token_vectors=True", token_vectors), ("sparse='bm42'",
                             sparse == "bm42"), ("late_chunking=True", late_chunking)]:
            if wanted and not local:
                raise ValueError(f"{flag} needs a local fastrag.TextEncoder (encoder=...)")
        splade_model = splade if isinstance(splade, str) else None
        splade_enc = _make_splade(splade) if sparse == "splade" else None
        settings = {
            "format": store.FORMAT,
            "version": store.VERSION,
            "analyzer": analyzer,
            "chunk_chars": chunk_chars,
            "chunk_tokens": tokens,
            "storage": storage,
            "token_vectors": bool(token_vectors),
            "sparse": sparse,
            "late_chunking": bool(late_chunking),
            "splade": None if splade_enc is None else {
                "model": splade_model, "fingerprint": splade_enc.fingerprint,
                "languages": _languages_of(splade_enc),
            },
            "encoder": None if enc is None else {
                "model": encoder if isinstance(encoder, str) else None,
                "quantize": quantize,
                "fingerprint": enc.fingerprint,
                "dim": enc.dim,
                "languages": list(languages or _languages_of(enc)),
            },
        }
        folder.mkdir(parents=True, exist_ok=True)
        db = store.create_db(folder, settings)
        col = cls(folder, db, settings)
        col._encoder, col._splade = enc, splade_enc
        col._indexes = {leg: legs_mod.new_index(leg, settings, enc, splade_enc)
                        for leg in legs_mod.legs_of(settings)}
        return col

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        encoder: Encoder | str | None = None,
        splade: SpladeEncoder | str | None = None,
        mmap: bool = False,
    ) -> Collection:
        """Opens the collection in folder `path` at its last committed state.

        `encoder` (an object or model name) must make the vectors the collection was built
        with (same fingerprint); by default the model named at creation is loaded. `splade`
        likewise for a collection with a SPLADE leg.
        """
        folder = Path(path)
        db, settings = store.open_db(folder)
        col = cls(folder, db, settings)
        enc_info = settings.get("encoder")
        try:
            if enc_info is not None:
                source = encoder if encoder is not None else enc_info.get("model")
                enc = _make_encoder(source, attentions=settings.get("sparse") == "bm42",
                                    quantize=enc_info.get("quantize")
                                    if isinstance(source, str) else None)
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
            splade_info = settings.get("splade")
            if splade_info is not None:
                if splade is None and splade_info.get("model") is None:
                    raise CollectionError(f"{folder} was built with SPLADE model "
                                          f"{splade_info['fingerprint']}; pass splade=")
                col._splade = _make_splade(splade if splade is not None else splade_info["model"])
                if col._splade.fingerprint != splade_info["fingerprint"]:
                    raise CollectionError(f"{folder} was built with SPLADE model "
                                          f"{splade_info['fingerprint']}, not "
                                          f"{col._splade.fingerprint}")
            col._mmap = mmap
            with store.sqlite_damage(folder):
                col._load_indexes()
        except BaseException:
            col.close()
            raise
        return col

    def _load_indexes(self) -> None:
        """Loads the index files of the committed generation. A writer in another process may
        commit a newer one and delete these files meanwhile: then the generation is read
        again (readers never delete anything)."""
        legs = legs_mod.legs_of(self.settings)
        for _ in range(20):
            gen = store.meta_int(self._db, "generation")
            try:
                if gen == 0:
                    indexes = {leg: legs_mod.new_index(leg, self.settings, self._encoder,
                                                       self._splade) for leg in legs}
                else:
                    indexes = {
                        leg: legs_mod.load_index(leg, self.path / legs_mod.file_name(leg, gen),
                                                 self._encoder, self._splade, self._mmap)
                        for leg in legs
                    }
            except OSError:
                if store.meta_int(self._db, "generation") != gen:
                    continue  # a newer generation was committed (and this one deleted)
                if gen and all((self.path / legs_mod.file_name(leg, gen)).exists()
                               for leg in legs):
                    raise
                raise IndexFormatError(
                    f"{self.path}: the index files of generation {gen} are missing; "
                    "rebuild the collection"
                ) from None
            try:
                docs = (DocStore.load(self.path / docs_file(gen), populate=not self._mmap)
                        if gen else DocStore())
            except FileNotFoundError:
                if store.meta_int(self._db, "generation") != gen:
                    continue
                # written before the document file existed (or it was removed): from the
                # database; the next commit writes it
                rows = self._db.execute("SELECT id, text, metadata, crc FROM documents").fetchall()
                for row in rows:
                    store.document_row(*row)  # checks the row's checksum
                docs = DocStore.from_rows(rows)
            chunks = int(self._db.execute("SELECT count(*) FROM chunks").fetchone()[0])
            n_docs = int(self._db.execute("SELECT count(*) FROM documents").fetchone()[0])
            if store.meta_int(self._db, "generation") != gen:
                continue  # the documents moved on while the files were read
            if len(docs) != n_docs:
                raise IndexFormatError(
                    f"{self.path}: the database holds {n_docs} documents but the document "
                    f"file of generation {gen} holds {len(docs)}: the collection is damaged; "
                    "rebuild it"
                )
            for leg, index in indexes.items():
                if len(index) != chunks:
                    raise IndexFormatError(
                        f"{self.path}: the database holds {chunks} chunks but the {leg} index "
                        f"of generation {gen} holds {len(index)}: the collection is damaged; "
                        "rebuild it"
                    )
            self._indexes, self._generation, self._docs = indexes, gen, docs
            self._forget_rows()
            return
        raise CollectionError(f"{self.path}: the collection changed too often while opening")

    def _forget_rows(self) -> None:
        """Drops what was cached from the database's rows (they changed)."""
        self._chunks = None
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
            tick = self._clock.read()  # before SQLite's answer: a commit after it moves it
            version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
            if version != self._data_version:
                if store.meta_int(self._db, "generation") != self._generation:
                    self._load_indexes()
                self._data_version = version
            self._clock_seen = tick if tick % 2 == 0 else -2  # (-1, no clock, is odd)
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
            gen = store.meta_int(self._db, "generation")
            for p in self.path.iterdir():
                m = store.INDEX_FILE.match(p.name)
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
        """Closes the database (uncommitted changes are lost); closing again does nothing."""
        if self._closed:
            return
        if self._db.in_transaction:
            self._db.rollback()
        self._db.close()
        self._docs.close()
        self._clock.close()
        self._closed = True

    # ------------------------------------------------------------------ properties
    @property
    def encoder(self) -> Encoder | None:
        return self._encoder

    @property
    def generation(self) -> int:
        """The commit counter of the index files this connection has loaded (each commit
        writes a new generation)."""
        return self._generation

    def index_file(self, leg: str) -> Path:
        """The file a leg's index was loaded from (of `generation`; none before the first
        commit)."""
        self.index(leg)  # ValueError for a leg the collection does not hold
        return self.path / legs_mod.file_name(leg, self._generation)

    @property
    def splade(self) -> SpladeEncoder | None:
        """The SPLADE model of a ``sparse="splade"`` collection (None otherwise): pass it as
        ``Collection.open(..., splade=)`` to share one loaded model between connections."""
        return self._splade  # type: ignore[no-any-return]

    @_checked
    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM documents").fetchone()[0])

    @_checked
    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and self._db.execute(
            "SELECT 1 FROM documents WHERE id = ?", (doc_id,)
        ).fetchone() is not None

    @_checked
    def info(self) -> dict[str, Any]:
        """Counts, settings, languages and files (see `read_info`); with a dense leg, the
        storage its vectors are in now (``dense_storage``: "float32" or "int8" under
        storage "auto")."""
        found = store.info(self.path, self._db, self.settings)
        if self.dense is not None:
            found["dense_storage"] = self.dense.storage
        return {**found, "uncommitted_changes": self._dirty}

    @_checked
    def verify(self) -> dict[str, int]:
        """Checks the whole database: SQLite's structure (``PRAGMA integrity_check``) and the
        checksum of every row; raises `fastrag.IndexFormatError` on damage, else returns the
        counts of rows checked."""
        with store.sqlite_damage(self.path):
            # integrity_check, not quick_check: it also compares every index with its table
            problems = [r[0] for r in self._db.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                raise IndexFormatError(
                    f"{self.path / store.DB} is damaged: {'; '.join(problems[:3])}"
                )
            docs = sum(1 for _ in self.documents())
            with self._lock:
                self._chunks = None  # read (and check) every chunk row again
                chunks = len(self.chunk_table().hits)
            tokens = 0
            for c, n, data, crc in self._db.execute("SELECT chunk, n, data, crc FROM tokens"):
                if not store.crc_matches(crc, store.tokens_crc, c, n, data):
                    raise store.damaged(f"the token vectors of chunk {c}")
                tokens += 1
            # the generation's document file: the same documents, every record readable
            with self._lock:
                stored = dict(self._db.execute("SELECT id, crc FROM documents"))
                if self._docs.crcs() != stored:
                    raise IndexFormatError(f"{self.path}: the document file does not match "
                                           "the database; rebuild the collection")
                for start in range(0, len(stored), 1000):
                    self._docs.get_many(list(stored)[start : start + 1000])
        return {"documents": docs, "chunks": chunks, "token_rows": tokens}

    @_checked
    def languages(self) -> dict[str, float]:
        """Share of chunks per language family ({"en": 0.9, "ja": 0.1}).

        Read by every adaptive hybrid query: counted once, then again only after a change.
        """
        with self._lock:
            if self._language_shares is None:
                self._language_shares = store.chunk_languages(self._db)
            return dict(self._language_shares)

    # ------------------------------------------------------------------ documents
    @_checked
    def get(self, doc_id: str) -> Document:
        """A stored document (KeyError for an unknown id)."""
        with store.sqlite_damage(self.path):
            doc_id = store.check_id(doc_id, "doc_id")
            self._current()  # another connection may have committed since
            found = self.texts_of([doc_id])
        if not found:
            raise KeyError(f"no document with id {doc_id!r}")
        return found[doc_id]

    def documents(self) -> Iterator[Document]:
        with store.sqlite_damage(self.path):
            for row in self._db.execute(
                "SELECT id, text, metadata, crc FROM documents ORDER BY rowid"
            ):
                yield store.document_row(*row)

    def chunk_table(self) -> ChunkTable:
        """Every chunk's document and span, read (and checked) once, then kept up to date."""
        chunks = self._chunks
        return chunks if chunks is not None else self._read_chunk_table()

    @_checked
    def _read_chunk_table(self) -> ChunkTable:
        with self._lock:
            if self._chunks is None:
                hits = []
                for c, d, o, s, e, lang, crc in self._db.execute(
                    "SELECT chunk, doc, ord, start, end, lang, crc FROM chunks"
                ):
                    if not store.crc_matches(crc, store.chunk_crc, c, d, o, s, e, lang):
                        raise store.damaged(f"chunk {c}")
                    hits.append(ChunkHit(c, d, s, e))
                self._chunks = ChunkTable(hits)
            return self._chunks

    def chunks_of(self, chunk_ids: Iterable[int]) -> dict[int, ChunkHit]:
        """{chunk id: ChunkHit} of the chunks that exist."""
        found = self.chunk_table().hits
        return {c: found[c] for c in chunk_ids if c in found}

    def reader(self) -> Callable[[str], Document] | None:
        """A function that reads a document by id when called, from the document file of
        this generation (None while documents are added or deleted and not committed)."""
        return self._docs.reader()

    def readers_of(self, doc_ids: Iterable[str]) -> dict[str, Callable[[str], Document]]:
        """`texts_of` without the reading: a function per stored document that reads it
        when called with its id (results of explain read their texts when first used)."""
        return self._docs.readers(doc_ids)

    @_checked
    def texts_of(self, doc_ids: Iterable[str]) -> dict[str, Document]:
        """The stored documents among `doc_ids` (unknown ids are left out), from the
        generation's document file (each record's checksum checked as it is read)."""
        return self._docs.get_many(str(d) for d in doc_ids)

    @_checked
    def add(
        self,
        texts: Sequence[str] | str,
        ids: Sequence[str] | str | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | Mapping[str, Any] | None = None,
        *,
        vectors: Any = None,
        batch_size: int = 32,
        show_progress: bool | passages.Progress = False,
        skip_legs: Sequence[str] = (),
    ) -> list[str]:
        """Adds (or replaces: upsert by id) documents; returns their ids.

        Documents are split into chunks of at most ``chunk_chars`` characters; each chunk is
        indexed by BM25 and (with an encoder) embedded. An add is all or nothing: when any
        text is empty or invalid, an id is not a str, a metadata value is not JSON, or the
        encoder fails or returns NaN, the collection is left exactly as it was.

        `vectors` (n, dim) brings precomputed embeddings of the collection's encoder, one per
        document (every document must then fit in one chunk) or one per chunk, in order (as
        `vectors_of` returns them: merging collections reuses their vectors).

        `show_progress`: True draws a progress bar of the chunks encoded (tqdm, on stderr);
        a callable is called with (chunks done, chunks in this call) after each batch.

        `skip_legs` (bulk loading, e.g. ``("dense",)`` with `vectors`): legs whose index this
        call leaves as it is; the caller hands over a complete index for each of them with
        `set_index` before `commit`, which refuses to write until then (`fastrag merge`
        builds the merged HNSW graph this way, by inserting into a shard's graph).
        """
        skip = {skip_legs} if isinstance(skip_legs, str) else set(skip_legs)
        if skip - set(self.legs()):
            raise ValueError(f"skip_legs: this collection has no {sorted(skip - set(self.legs()))} "
                             f"leg (it has {', '.join(self.legs())})")
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
        ids = [store.check_id(d, f"ids[{i}]") for i, d in enumerate(ids)]
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
        spans = passages.passage_spans(texts, self.settings, self._encoder)
        chunk_texts = [t[s:e] for t, sp in zip(texts, spans, strict=True) for s, e in sp]
        if vectors is not None:
            if self.dense is None:
                raise ValueError("vectors given, but this collection has no encoder")
            vectors = as_matrix(vectors, self.dense.dim)
            long = [ids[i] for i, sp in enumerate(spans) if len(sp) != 1]
            if long and len(vectors) != len(chunk_texts):
                raise ValueError(
                    f"vectors are one per document (or one per chunk: {len(chunk_texts)}), but "
                    f"{long[:3]} do not fit in one chunk of {self.settings['chunk_chars']} "
                    "characters"
                )
            if len(vectors) != len(chunk_texts):
                raise ValueError(f"{len(texts)} texts ({len(chunk_texts)} chunks) but "
                                 f"{len(vectors)} vectors")
        encoded = passages.encode_batches(self.settings, self._encoder,
                                          self._indexes.get("splade"), texts, spans, vectors,
                                          batch_size, show_progress)
        for name, rows_ in (("dense", encoded.dense), ("late", encoded.late)):
            index = self._indexes.get(name)
            if index is not None and rows_ is not None:
                if len(rows_) != len(chunk_texts):
                    raise ValueError(f"the encoder returned {len(rows_)} vectors for "
                                     f"{len(chunk_texts)} chunks")
                index._core_check(rows_)  # NaN / inf / zero rows, before anything changes
        token_rows = encoded.tokens
        with self._lock:
            self._begin()
            self._db.execute("SAVEPOINT fastrag_add")
            added: list[Any] = []
            replaced: dict[str, Any] = {}  # legs whose index add_vectors replaced: the old ones
            try:
                old = self._chunks_of_docs(ids)
                self._delete_rows(old)
                first = store.meta_int(self._db, "next_chunk")
                rows, chunk_ids, n = [], [], first
                for doc_id, text, sp in zip(ids, texts, spans, strict=True):
                    for j, (start, end) in enumerate(sp):
                        lang = detect_language(text, start, end)
                        crc = store.chunk_crc(n, doc_id, j, start, end, lang)
                        rows.append((n, doc_id, j, start, end, lang, crc))
                        chunk_ids.append(n)
                        n += 1
                doc_rows = [(d, t, m, store.doc_crc(d, t, m))
                            for d, t, m in zip(ids, texts, meta_json, strict=True)]
                self._db.executemany(
                    "INSERT INTO documents(id, text, metadata, crc) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET text = excluded.text, "
                    "metadata = excluded.metadata, crc = excluded.crc",
                    doc_rows,
                )
                self._db.executemany(
                    "INSERT INTO chunks(chunk, doc, ord, start, end, lang, crc) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                if token_rows:
                    self._db.executemany(
                        "INSERT INTO tokens(chunk, n, data, crc) VALUES (?, ?, ?, ?)",
                        [(c, len(t), t.tobytes(), store.tokens_crc(c, len(t), t.tobytes()))
                         for c, t in zip(chunk_ids, token_rows, strict=True)],
                    )
                store.set_meta(self._db, "next_chunk", n)
                # the new chunks go into the indexes next to the old ones, which leave only
                # once every index took the new ones: a failure can be undone exactly
                if chunk_ids:
                    for leg, index in list(self._indexes.items()):
                        if leg in skip:
                            continue
                        added.append(index)
                        grown = _add_to_leg(self.settings, leg, index, chunk_texts, encoded,
                                            chunk_ids)
                        if grown is not index:  # a new index (int8 from here on)
                            replaced[leg] = index
                            self._indexes[leg] = grown
            except BaseException:
                for index in added:
                    index.delete(chunk_ids, missing="ignore")
                self._indexes.update(replaced)
                self._db.execute("ROLLBACK TO fastrag_add")
                self._db.execute("RELEASE fastrag_add")
                raise
            self._db.execute("RELEASE fastrag_add")
            self._docs.put(doc_rows)
            self._drop_from_indexes(old)
            if self._chunks is not None:
                self._chunks.put([ChunkHit(c, d, start, end)
                                  for c, d, _, start, end, _, _ in rows])
            self._dirty = True
            self._deferred |= skip
        return ids

    def set_index(self, leg: str, index: Any) -> None:
        """Replaces a leg's index with `index`, which must be of the same kind and settings
        (dimension, metric, storage, encoder fingerprint) and hold exactly the collection's
        chunk ids: the other half of ``add(..., skip_legs=...)``. Written at `commit`."""
        current = self.index(leg)
        if type(index) is not type(current):
            raise TypeError(f"the {leg} leg holds a {type(current).__name__}, not a "
                            f"{type(index).__name__}")
        for attr in ("dim", "metric", "fingerprint"):
            if getattr(index, attr, None) != getattr(current, attr, None):
                raise ValueError(f"set_index: the {leg} index has {attr}="
                                 f"{getattr(index, attr, None)!r}, the collection's "
                                 f"{getattr(current, attr, None)!r}")
        if isinstance(index, DenseIndex) and not legs_mod.storage_allows(self.settings, index):
            raise ValueError(f"set_index: the {leg} index has storage={index.storage!r} "
                             f"(rescore={index.rescore}); the collection's storage setting is "
                             f"{self.settings['storage']!r}")
        with self._lock:
            chunks = set(self.chunk_table().hits)
            ids = index.ids
            if len(ids) != len(chunks) or set(ids) != chunks:
                extra = sorted(set(ids) - chunks, key=str)[:3]
                lost = sorted(chunks - set(ids))[:3]
                raise ValueError(f"set_index: the {leg} index must hold exactly the "
                                 f"collection's {len(chunks)} chunks (it has {len(ids)} ids; "
                                 f"not chunks: {extra}, chunks missing: {lost})")
            if isinstance(index, DenseIndex):
                index = legs_mod.settled(self.settings, index)
            self._begin()
            self._indexes[leg] = index
            self._deferred.discard(leg)
            self._dirty = True

    def add_files(
        self,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        max_file_bytes: int = MAX_FILE_BYTES,
        batch_size: int = 32,
        show_progress: bool | passages.Progress = False,
    ) -> Found:
        """Adds the documents of files and folders as `fastrag index` does (.txt/.md/.rst
        files, JSON lines, BEIR folders; ids are paths relative to each given folder, or the
        JSON rows' ids); returns what was read and skipped (`Found`). All or nothing, like
        `add`; commit to keep them."""
        items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        found = read_paths(items, max_file_bytes)
        if found.texts:
            self.add(found.texts, ids=found.ids, metadata=found.metadata, batch_size=batch_size,
                     show_progress=show_progress)
        return found

    @_checked
    def delete(self, ids: Iterable[str] | str, *, missing: str = "raise") -> int:
        """Deletes documents (and their chunks from every index); returns how many."""
        if missing not in ("raise", "ignore"):
            raise ValueError(f"missing must be 'raise' or 'ignore', got {missing!r}")
        if isinstance(ids, str):
            ids = [ids]
        ids = list(dict.fromkeys(store.check_id(d, f"ids[{i}]") for i, d in enumerate(ids)))
        unknown = [i for i in ids if i not in self]
        if unknown and missing == "raise":
            raise KeyError(f"unknown document ids: {unknown[:5]}")
        known = [i for i in ids if i not in unknown]
        with self._lock:
            self._begin()
            old = self._chunks_of_docs(known)
            self._delete_rows(old)
            self._db.executemany("DELETE FROM documents WHERE id = ?", [(i,) for i in known])
            self._docs.remove(known)
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
        for index in self._indexes.values():
            index.delete(chunks, missing="ignore")
        if self._chunks is not None:
            self._chunks.drop(chunks)

    def _begin(self) -> None:
        """Takes SQLite's write lock for this collection's changes (until commit/rollback);
        the first write also clears files that a killed writer left behind."""
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if store.meta_int(self._db, "generation") != self._generation:
                    self._load_indexes()  # another connection committed: write on top of it
                self._remove_stale()
            except BaseException:
                self._db.rollback()
                raise

    # ------------------------------------------------------------------ persistence
    @_checked
    def commit(self) -> None:
        """Writes the indexes of a new generation, then commits the documents with it."""
        with self._lock:
            if not self._dirty:
                if self._db.in_transaction:
                    self._db.commit()
                return
            if self._deferred:
                raise CollectionError(
                    f"the {', '.join(sorted(self._deferred))} index lacks the chunks added with "
                    "skip_legs: hand over the complete index with set_index first (or rollback)")
            self._begin()
            gen = store.meta_int(self._db, "generation") + 1
            for leg, index in self._indexes.items():
                index.save(self.path / legs_mod.file_name(leg, gen))
            self._docs.save(self.path / docs_file(gen))
            # the file, not the changes
            docs = DocStore.load(self.path / docs_file(gen), populate=not self._mmap)
            store.set_meta(self._db, "generation", gen)
            with self._clock.committing():
                self._db.commit()
            self._dirty = False
            self._generation, self._docs = gen, docs
            self._remove_stale()

    def rollback(self) -> None:
        """Drops uncommitted changes: back to the last committed state."""
        with self._lock:
            if self._db.in_transaction:
                self._db.rollback()
            self._forget_rows()
            self._deferred.clear()
            if self._dirty:
                self._load_indexes()
                self._dirty = False

    # ------------------------------------------------------------------ the Corpus protocol
    @property
    def encoder_languages(self) -> frozenset[str]:
        """Languages the collection's encoder knows ("multi" for all)."""
        info = self.settings.get("encoder") or {}
        return frozenset(info.get("languages") or ["en"])

    def legs(self) -> tuple[str, ...]:
        """Names of the indexes this collection holds ("bm25", "dense", "splade", "bm42",
        "late")."""
        return tuple(self._indexes)

    def leg_languages(self, leg: str) -> frozenset[str]:
        """Languages of the model behind a leg: BM25 all ("multi"), SPLADE its model's,
        the others the encoder's."""
        if leg == "bm25":
            return frozenset({"multi"})
        if leg == "splade":
            return frozenset((self.settings.get("splade") or {}).get("languages") or ["en"])
        return self.encoder_languages

    def index(self, leg: str) -> Any:
        """The index of a leg."""
        found = self._indexes.get(leg)
        if found is None:
            raise ValueError(
                f"this collection has no {leg!r} index; it has {', '.join(self.legs())}"
            )
        return found

    def vectors_of(self, chunk_ids: Iterable[int]) -> np.ndarray:
        """Stored (normalised) dense vectors of chunks, (n, dim) float32."""
        if self.dense is None:
            raise CollectionError("this collection has no dense index")
        return self.dense.get_vectors(int(c) for c in chunk_ids)

    @_checked
    def token_vectors_of(self, chunk_ids: Iterable[int]) -> list[np.ndarray]:
        """Stored token vectors (float16 (n, dim)) of chunks, in the order given."""
        if not self.settings.get("token_vectors"):
            raise CollectionError("this collection stores no token vectors (token_vectors=True)")
        dim = int(self.settings["encoder"]["dim"])
        found: dict[int, np.ndarray] = {}
        ids = [int(c) for c in chunk_ids]
        for start in range(0, len(ids), 900):
            part = ids[start : start + 900]
            marks = ",".join("?" * len(part))
            for c, n, data, crc in self._db.execute(
                f"SELECT chunk, n, data, crc FROM tokens WHERE chunk IN ({marks})", part
            ):
                if not (store.crc_matches(crc, store.tokens_crc, c, n, data)
                        and len(data) == n * dim * 2):
                    raise store.damaged(f"the token vectors of chunk {c}")
                found[c] = np.frombuffer(data, dtype=np.float16).reshape(n, dim)
        return [found.get(c, np.zeros((0, dim), dtype=np.float16)) for c in ids]

    # ------------------------------------------------------------------ filters
    def _allowed_in_memory(self, docs: DocStore, spec: Mapping[str, Any]) -> list[int]:
        ids, meta = docs.meta_index()
        mask = meta.mask(spec)
        table = self.chunk_table()
        key = (meta, table, len(table.doc_ids), len(table.chunk_doc))
        if self._record_of_ordinal is None or self._record_of_ordinal[0] != key:
            # chunk table document ordinal -> record of the document file (-1: none), and
            # each chunk's ordinal (0 for no chunk: `live` masks those out)
            pos = {d: i for i, d in enumerate(ids)}
            records = np.array([pos.get(d, -1) for d in table.doc_ids], dtype=np.int64)
            live = table.chunk_doc != NO_DOC
            self._record_of_ordinal = (key, (records, records >= 0, live,
                                             np.where(live, table.chunk_doc, 0)))
        records, known, live, ordinal = self._record_of_ordinal[1]
        by_ordinal = np.zeros(len(records), dtype=bool)
        by_ordinal[known] = mask[records[known]]
        chunks: list[int] = np.flatnonzero(by_ordinal[ordinal] & live).tolist()
        return chunks

    @_checked
    def allowed_chunks(self, spec: Mapping[str, Any]) -> list[int]:
        """Chunk ids of the documents whose metadata match the filter (see compile_filter).

        A field that no document has raises ValueError (most likely a typo). Committed
        documents are filtered in memory (their metadata parsed once per generation, see
        metaindex.py); pending changes, or values only SQLite compares exactly, in SQL.
        """
        with self._lock:
            # every document row is checked once (a flipped bit in the database would
            # otherwise go unseen by filters, or change their result silently)
            if not self._documents_verified:
                for row in self._db.execute("SELECT id, text, metadata, crc FROM documents"):
                    store.document_row(*row)
                self._documents_verified = True
            docs = None if self._db.in_transaction or self._docs.pending else self._docs
        if docs is not None:
            try:
                return self._allowed_in_memory(docs, spec)
            except Unsupported:
                pass
        return self._allowed_sql(spec)

    def _allowed_sql(self, spec: Mapping[str, Any]) -> list[int]:
        cond, params, fields = compile_filter(spec)
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

    # ------------------------------------------------------------------ stored pipeline
    @_checked
    def set_default_pipeline(self, spec: Mapping[str, Any] | None) -> None:
        """Stores a pipeline spec (see `fastrag.search.spec`; `fastrag tune` fits one) as this
        collection's default: ``search(method="hybrid")`` (the default method) and
        ``method="tuned"`` run it from now on, also after reopening. None goes back to the
        built-in default. Committed at once; refused while documents are uncommitted, and
        for legs the collection does not hold. Other open connections see it when reopened.
        """
        if spec is not None:
            missing = [r.method for r in pipeline_from_spec(spec).retrievers
                       if r.method not in self.legs()]
            if missing:
                raise ValueError(f"the pipeline uses legs this collection does not hold: "
                                 f"{', '.join(missing)} (it has {', '.join(self.legs())})")
        with self._lock:
            if self._dirty:
                raise ValueError("commit() or rollback() the document changes first")
            self._begin()
            store.set_meta(self._db, "default_pipeline", None if spec is None else dict(spec))
            self._db.commit()
            self._pipelines.clear()

    @_checked
    def default_pipeline_spec(self) -> dict[str, Any] | None:
        """The stored default pipeline spec (`set_default_pipeline`), or None."""
        spec = store.get_meta(self._db, "default_pipeline")
        if spec is not None and not isinstance(spec, dict):
            raise IndexFormatError(f"{store.DB}: the default pipeline is {type(spec).__name__}, "
                                   "not a spec: the database is damaged; set it again with "
                                   "set_default_pipeline")
        return spec

    def _named_pipeline(self, method: str) -> Pipeline:
        spec = self.default_pipeline_spec() if method in ("hybrid", "tuned") else None
        if spec is not None:
            return pipeline_from_spec(spec)
        if method == "tuned":
            raise ValueError("this collection has no tuned pipeline: run `fastrag tune DATASET "
                             "-c DIR` or Collection.set_default_pipeline(spec)")
        return default_pipeline(self, method)

    # ------------------------------------------------------------------ search
    def search(
        self,
        query: str,
        k: int = 10,
        *,
        method: str | Pipeline = "hybrid",
        filter: Mapping[str, Any] | None = None,
        explain: bool = False,
        vector: Any = None,
        augment: str | None = None,
        llm: ChatClient | None = None,
    ) -> list[Result]:
        """The k best documents for `query`: a list of `fastrag.search.Result`.

        `method` is "hybrid" (the default pipeline, or the one `set_default_pipeline`
        stored), "tuned" (that stored one only), "bm25", "dense", or a
        `fastrag.search.Pipeline`. `filter` restricts to documents whose metadata match.
        `vector`: the query's embedding by the collection's encoder, when you have it.
        `augment="mk"`: an LLM (`llm`, or the one `fastrag prepare` used) rewrites the query
        into sub-questions that are retrieved and fused (see `fastrag.collection.mk`).
        """
        if augment is not None:
            (query,) = check_texts([query], name="query")
            if vector is not None:
                raise ValueError("vector= cannot be used with augment= (sub-questions are "
                                 "embedded by the collection's encoder)")
            return mk.augmented_search(self, query, k, augment=augment, method=method,
                                       filter=filter, explain=explain, llm=llm)
        pipeline = self._pipeline(method)
        return self._consistent(lambda: pipeline.search(  # (it checks the query)
            self, query, k=k, filter=filter, explain=explain, vector=vector), filter)

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        method: str | Pipeline = "hybrid",
        filter: Mapping[str, Any] | None = None,
        explain: bool = False,
        vectors: Any = None,
        threads: int = 0,
    ) -> list[list[Result]]:
        """`search` for many queries: one encoder run for the batch, and the rest in one
        native call across `threads` cores (0 = all) for the built-in methods."""
        pipeline = self._pipeline(method)
        return self._consistent(lambda: pipeline.search_batch(
            self, queries, k=k, filter=filter, explain=explain, vectors=vectors,
            threads=threads), filter)

    def _pipeline(self, method: str | Pipeline) -> Pipeline:
        if isinstance(method, Pipeline):
            return method
        pipeline = self._pipelines.get(method)  # built once per name (its checks cost more
        if pipeline is None:                    # than a small query)
            pipeline = self._pipelines[method] = self._named_pipeline(method)
        return pipeline

    def _consistent(self, run: Callable[[], _T], filter: Mapping[str, Any] | None) -> _T:
        """`run()` (a search) on rows and index files of one generation."""
        try:
            # nothing committed since the last look (the clock has not moved) and no filter
            # (which reads the database): search without asking SQLite
            if filter is None and self._clock.read() == self._clock_seen:
                try:
                    return run()
                except IndexFormatError:
                    pass  # the files of a newer generation? asked below
            # when another connection commits while we read, search again on the new one
            for _ in range(5):
                version = self._current()
                try:
                    results = run()
                except IndexFormatError:
                    if self._unchanged_since(version):
                        raise
                    continue
                # without a filter a search reads only what _current loaded (the indexes,
                # the chunk table and the document file of one generation); a filter reads
                # the database, which another connection may have committed to meanwhile
                if filter is None or self._unchanged_since(version):
                    return results
            return self._consistent_locked(run)
        except sqlite3.DatabaseError as e:
            raise store.as_damage(e, self.path) from e

    def _consistent_locked(self, run: Callable[[], _T]) -> _T:
        with self._lock:  # a writer commits without pause: read in one transaction
            if self._db.in_transaction:
                return run()
            for _ in range(50):
                # load the newest generation outside any transaction (its files may be
                # deleted by the next commit: _load_indexes then reads again), then search
                # in a read transaction that still names that generation
                if store.meta_int(self._db, "generation") != self._generation:
                    self._load_indexes()
                self._db.execute("BEGIN")
                try:
                    if store.meta_int(self._db, "generation") == self._generation:
                        return run()
                finally:
                    self._db.rollback()
            raise CollectionError(f"{self.path}: the collection changed too often to search")


def _languages_of(enc: object) -> list[str]:
    langs = getattr(enc, "manifest", {}).get("languages") if hasattr(enc, "manifest") else None
    return list(langs) if langs else ["en"]


def _make_encoder(encoder: Encoder | str | None, *, attentions: bool = False,
                  quantize: str | None = None) -> Encoder | None:
    if quantize is not None and not isinstance(encoder, str):
        raise ValueError("quantize= applies to an encoder given by name; pass "
                         "TextEncoder(..., quantize=...) as the encoder instead")
    if encoder is None or isinstance(encoder, Encoder):
        if attentions and encoder is not None and "cls_attention" not in getattr(
            getattr(encoder, "model", None), "output_names", ()
        ):
            raise ValueError("sparse='bm42' needs a TextEncoder with attentions=True")
        return encoder
    if isinstance(encoder, str) and is_static_model(encoder):
        if attentions or quantize is not None:
            raise ValueError("a static model has no attentions (sparse='bm42') and no int8 mode")
        return StaticEncoder(encoder)
    if isinstance(encoder, str):
        return TextEncoder(encoder, attentions=attentions, quantize=quantize)
    raise TypeError(f"encoder must be a fastrag Encoder, a model name or None, got {encoder!r}")


def _make_splade(model: SpladeEncoder | str) -> SpladeEncoder:
    return model if isinstance(model, SpladeEncoder) else SpladeEncoder(model)


def _add_to_leg(settings: dict[str, Any], leg: str, index: Any, chunk_texts: list[str],
                encoded: legs_mod.Encoded, chunk_ids: list[int]) -> Any:
    """Adds a batch of new chunks to one leg's index; returns the leg's index (a new one
    when a dense leg of storage "auto" turns int8: `legs.add_vectors`)."""
    if leg in ("dense", "late"):
        vectors = encoded.dense if leg == "dense" else encoded.late
        return legs_mod.add_vectors(settings, index, vectors, chunk_ids)  # type: ignore[arg-type]
    if leg == "bm25":
        index.add(chunk_texts, ids=chunk_ids)
    elif leg == "splade":
        index.add(encoded.splade, ids=chunk_ids)
    elif leg == "bm42":
        index.add_token_vectors(encoded.bm42, ids=chunk_ids)
    else:  # pragma: no cover - legs_of names no other
        raise ValueError(f"unknown leg {leg!r}")
    return index
