"""The documents of one committed generation in one file, read without SQLite.

A search returns the texts and metadata of its hits. Reading them from SQLite costs one
B-tree lookup per document (about 17 us each through Python's sqlite3, 170 us for ten
hits: more than the query itself). The generation's index files already hold what the
documents mean to each leg; ``docs.<generation>.frds`` holds the documents themselves,
written beside them at commit and memory-mapped at open, so a hit's text is a slice of the
map and a decode.

SQLite stays the source of truth (filters, ``documents()``, ``check()``); the file is its
copy for the generation. Every record carries the row's checksum (``store.doc_crc``),
checked when it is read.

File layout (little-endian)::

    header   b"FRDS", u32 version, u64 n, u64 id bytes, u64 blob bytes, u32 crc, u32 0
    ids      u64 offsets[n + 1], then the ids (UTF-8)
    records  u64 starts[n + 1], u64 text bytes[n], u32 crc[n]
    blob     per record: text (UTF-8), then metadata (JSON, UTF-8)

The header's crc covers its first 32 bytes and the id and record sections; the blob is
checked record by record.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import zlib
from collections.abc import Callable, Iterable
from functools import partial
from itertools import count, pairwise
from pathlib import Path
from typing import Any

import numpy as np

from fastrag._core import IndexFormatError
from fastrag.collection.metaindex import MetaIndex
from fastrag.search.corpus import Document

__all__ = ["DocStore", "file_name"]

MAGIC = b"FRDS"
VERSION = 1
_HEADER = struct.Struct("<4sIQQQII")
_tmp_names = count()


def file_name(generation: int) -> str:
    return f"docs.{generation}.frds"


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def _parsed(doc_id: str, text: str, meta: str) -> Document:
    return Document(doc_id, text, {} if meta == "{}" else json.loads(meta))


def _changed_doc(text: str, meta: str, doc_id: str) -> Document:
    return _parsed(doc_id, text, meta)


class DocStore:
    """Documents by id: the committed file's records (memory-mapped), plus the changes made
    since (``put`` / ``remove``) until the next ``save``."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._ids: list[str] = []
        self._pos: dict[str, int] = {}
        self._starts = np.zeros(1, dtype=np.uint64)
        self._split = np.zeros(0, dtype=np.uint64)
        self._crcs = np.zeros(0, dtype=np.uint32)
        self._checked = bytearray()  # 1 for records whose checksum was checked
        self._blob: bytes | mmap.mmap = b""
        self._base = 0  # where the blob starts in self._blob
        self._changed: dict[str, tuple[str, str, int]] = {}  # id -> (text, metadata, crc)
        self._removed: set[str] = set()
        self._meta: tuple[list[str], MetaIndex] | None = None

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        # removed ids are never among the changed ones (put and remove keep them apart)
        added = sum(1 for d in self._changed if d not in self._pos)
        return len(self._pos) - len(self._removed) + added

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._changed or (doc_id in self._pos and doc_id not in self._removed)

    def get_many(self, doc_ids: Iterable[str]) -> dict[str, Document]:
        """The stored documents among `doc_ids` (unknown ids are left out). A record whose
        checksum does not match raises IndexFormatError."""
        return {d: read(d) for d, read in self.readers(doc_ids).items()}

    def reader(self) -> Callable[[str], Document] | None:
        """A function that reads a document of the committed file by id when it is called
        (the file stays mapped while the function lives; an id the file does not hold raises
        IndexFormatError then); None while documents are put or removed and not yet saved
        (`readers` resolves those at once)."""
        if self._changed or self._removed:
            return None
        return partial(self._read_id, self._blob)

    def _read_id(self, blob: bytes | mmap.mmap, doc_id: str) -> Document:
        i = self._pos.get(doc_id)
        if i is None:
            raise IndexFormatError(f"{self._path}: document {doc_id!r} has chunks but no record "
                                   "in the document file; rebuild the collection")
        return self._record(blob, i, doc_id)

    def readers(self, doc_ids: Iterable[str]) -> dict[str, Callable[[str], Document]]:
        """`get_many` without the reading: for each stored document among `doc_ids`, a
        function that reads it when called with its id (its record's checksum checked then;
        results keep the id, not a function per document). The functions read the
        store as it is now, whatever happens to it later: the committed file stays mapped
        while one of them lives, and a document changed since holds its text already."""
        pos, removed, changed = self._pos, self._removed, self._changed
        out: dict[str, Callable[[str], Document]] = {}
        for d in doc_ids:
            if d in out:
                continue
            if d in changed:
                text, meta, _ = changed[d]
                out[d] = partial(_changed_doc, text, meta)
                continue
            i = pos.get(d)
            if i is not None and d not in removed:
                out[d] = partial(self._record, self._blob, i)
        return out

    def _record(self, blob: bytes | mmap.mmap, i: int, doc_id: str) -> Document:
        """Record i (of id `doc_id`) of the committed file mapped as `blob`."""
        starts, base = self._starts, self._base
        a = starts.item(i) + base
        cut = a + self._split.item(i)
        raw_text, raw_meta = blob[a:cut], blob[cut : starts.item(i + 1) + base]
        if not self._checked[i]:  # the first read of a record (the file never changes)
            # the row checksum (store.doc_crc) over the stored bytes, not re-encoded
            crc = zlib.crc32(raw_text, zlib.crc32(_encode(doc_id) + b"\x00"))
            if zlib.crc32(raw_meta, zlib.crc32(b"\x00", crc)) != self._crcs[i]:
                raise self._damaged(doc_id)
            self._checked[i] = 1
        text = raw_text.decode("utf-8", "surrogatepass")
        if raw_meta == b"{}":  # most documents: no metadata to parse
            return Document(doc_id, text, {})
        try:
            return _parsed(doc_id, text, raw_meta.decode("utf-8", "surrogatepass"))
        except json.JSONDecodeError:  # unreachable unless the checksum matched by chance
            raise self._damaged(doc_id) from None

    @property
    def pending(self) -> bool:
        """Whether documents were put or removed since the file was written."""
        return bool(self._changed or self._removed)

    def meta_index(self) -> tuple[list[str], MetaIndex]:
        """(ids, MetaIndex over their metadata, in that order) of the file's documents,
        built on the first call (every record read and checked once). Only without pending
        changes: the caller filters those in SQL."""
        if self.pending:
            raise RuntimeError("meta_index of a document store with pending changes")
        if self._meta is None:
            self._meta = (list(self._ids), MetaIndex(self._all_metadata()))
        return self._meta

    def _all_metadata(self) -> list[dict[str, Any]]:
        """Every record's metadata in file order, each record checked (once) on the way;
        parsed by one json.loads of them all as an array."""
        starts, split, crcs, blob, base = (self._starts.tolist(), self._split.tolist(),
                                           self._crcs, self._blob, self._base)
        checked, raw = self._checked, []
        for i, d in enumerate(self._ids):
            a = starts[i] + base
            cut = a + split[i]
            meta = blob[cut : starts[i + 1] + base]
            if not checked[i]:
                crc = zlib.crc32(blob[a:cut], zlib.crc32(_encode(d) + b"\x00"))
                if zlib.crc32(meta, zlib.crc32(b"\x00", crc)) != crcs.item(i):
                    raise self._damaged(d)
                checked[i] = 1
            raw.append(meta)
        try:
            out: list[dict[str, Any]] = json.loads(_decode(b"[" + b",".join(raw) + b"]"))
        except json.JSONDecodeError:  # unreachable unless a checksum matched by chance
            raise self._damaged(self._ids[0]) from None
        if len(out) != len(raw) or not all(isinstance(m, dict) for m in out):
            raise self._damaged(self._ids[0])
        return out

    def crcs(self) -> dict[str, int]:
        """{id: checksum} of every document (to compare with the database)."""
        out = {d: int(self._crcs[i]) for d, i in self._pos.items() if d not in self._removed}
        out.update((d, crc) for d, (_, _, crc) in self._changed.items())
        return out

    def _damaged(self, doc_id: str) -> IndexFormatError:
        return IndexFormatError(f"{self._path}: the record of document {doc_id!r} fails its "
                                "checksum; rebuild the collection")

    # ------------------------------------------------------------------ changes
    def put(self, rows: Iterable[tuple[str, str, str, int]]) -> None:
        """Adds or replaces documents: rows of (id, text, metadata JSON, checksum)."""
        for d, text, meta, crc in rows:
            self._changed[d] = (text, meta, crc)
            self._removed.discard(d)

    def remove(self, doc_ids: Iterable[str]) -> None:
        for d in doc_ids:
            self._changed.pop(d, None)
            if d in self._pos:
                self._removed.add(d)

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes every document to `path` (through a temporary file renamed over it, synced
        to disk first)."""
        path = Path(path)
        keep = np.array([d not in self._removed and d not in self._changed for d in self._ids],
                        dtype=bool)
        old = np.flatnonzero(keep)
        ids = [self._ids[i] for i in old] + list(self._changed)
        lengths = np.diff(self._starts)[old]
        split = self._split[old]
        crcs = self._crcs[old]
        new = [(_encode(t), _encode(m), crc) for t, m, crc in self._changed.values()]
        if new:
            lengths = np.concatenate([lengths, np.array([len(t) + len(m) for t, m, _ in new],
                                                        dtype=np.uint64)])
            split = np.concatenate([split, np.array([len(t) for t, _, _ in new], np.uint64)])
            crcs = np.concatenate([crcs, np.array([c for _, _, c in new], np.uint32)])
        starts = np.zeros(len(ids) + 1, dtype=np.uint64)
        np.cumsum(lengths, out=starts[1:])
        id_bytes = [_encode(d) for d in ids]
        id_offsets = np.zeros(len(ids) + 1, dtype=np.uint64)
        np.cumsum([len(b) for b in id_bytes], out=id_offsets[1:])
        sections = [id_offsets.astype("<u8").tobytes(), b"".join(id_bytes),
                    starts.astype("<u8").tobytes(), split.astype("<u8").tobytes(),
                    crcs.astype("<u4").tobytes()]
        head = struct.pack("<4sIQQQ", MAGIC, VERSION, len(ids), int(id_offsets[-1]),
                           int(starts[-1]))
        crc = zlib.crc32(head)
        for s in sections:
            crc = zlib.crc32(s, crc)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{next(_tmp_names)}")
        try:
            with open(tmp, "wb") as f:
                f.write(head + struct.pack("<II", crc, 0))
                for s in sections:
                    f.write(s)
                # the kept records, in runs of consecutive ones, then the changed ones
                if len(old):
                    breaks = np.flatnonzero(np.diff(old) != 1) + 1
                    for run in np.split(old, breaks):
                        a = int(self._starts[run[0]]) + self._base
                        b = int(self._starts[run[-1] + 1]) + self._base
                        f.write(self._blob[a:b])
                for t, m, _ in new:
                    f.write(t)
                    f.write(m)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, populate: bool = False) -> DocStore:
        """Opens a file written by ``save``: every section is checked now, each record when
        it is read. A damaged or truncated file raises IndexFormatError.

        `populate`: map every page now (the file is read into the page cache once; a hit's
        text then costs no page fault), as a collection opened without ``mmap=True`` does.
        """
        path = Path(path)
        self = cls()
        self._path = path
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size

            def bad(why: str) -> IndexFormatError:
                return IndexFormatError(f"{path} is not a readable document file ({why}); "
                                        "rebuild the collection")

            head = f.read(_HEADER.size)
            if len(head) != _HEADER.size:
                raise bad("truncated")
            magic, version, n, n_id, n_blob, crc, _ = _HEADER.unpack(head)
            if magic != MAGIC:
                raise bad("wrong magic")
            if version > VERSION:
                raise IndexFormatError(f"{path} needs a newer fastrag (format {version})")
            meta_size = 8 * (n + 1) + n_id + 8 * (n + 1) + 8 * n + 4 * n
            if _HEADER.size + meta_size + n_blob != size:
                raise bad("its size does not match its header: truncated or damaged")
            meta = f.read(meta_size)
            if zlib.crc32(meta, zlib.crc32(head[:32])) != crc:
                raise bad("checksum mismatch")
            at = 0

            def take(dtype: str, items: int) -> np.ndarray:
                nonlocal at
                arr = np.frombuffer(meta, dtype=dtype, count=items, offset=at)
                at += arr.nbytes
                return arr.astype(dtype[1:])

            id_offsets = take("<u8", n + 1)
            id_blob = meta[at : at + n_id]
            at += n_id
            self._starts, self._split, self._crcs = (take("<u8", n + 1), take("<u8", n),
                                                     take("<u4", n))
            if (
                id_offsets[0] != 0 or id_offsets[-1] != n_id or self._starts[0] != 0
                or self._starts[-1] != n_blob or np.any(np.diff(id_offsets.astype(np.int64)) < 0)
                or np.any(np.diff(self._starts.astype(np.int64)) < 0)
                or np.any(self._split > np.diff(self._starts))
            ):
                raise bad("inconsistent offsets")
            try:
                self._ids = [_decode(id_blob[int(a) : int(b)])
                             for a, b in pairwise(id_offsets)]
            except UnicodeDecodeError:
                raise bad("an id is not UTF-8") from None
            self._pos = {d: i for i, d in enumerate(self._ids)}
            self._checked = bytearray(n)
            if len(self._pos) != n:
                raise bad("an id repeats")
            self._base = _HEADER.size + meta_size
            flags = mmap.MAP_SHARED | (getattr(mmap, "MAP_POPULATE", 0) if populate else 0)
            self._blob = (mmap.mmap(f.fileno(), 0, flags=flags, prot=mmap.PROT_READ)
                          if n_blob else b"")
            if not n_blob:
                self._base = 0
        return self

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, str, str, int]]) -> DocStore:
        """A store of the given (id, text, metadata JSON, checksum) rows, not yet saved (for
        collections written before this file existed)."""
        self = cls()
        self.put(rows)
        return self

    def close(self) -> None:
        """Lets go of the committed file (unmapped once no reader of `readers` holds it)."""
        self._blob = b""
