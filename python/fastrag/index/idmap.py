"""The mapping between the user's document ids and the core's dense internal ids."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from fastrag.index.results import DocId


def _check_id(doc_id: object) -> DocId:
    if isinstance(doc_id, np.integer):  # ids from np.arange, as hnswlib users pass them
        return int(doc_id)
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        raise TypeError(f"document ids must be str or int, got {type(doc_id).__name__}")
    if isinstance(doc_id, str):
        try:
            doc_id.encode("utf-8")
        except UnicodeEncodeError as e:
            # A lone surrogate (e.g. from os.fsdecode of a non-UTF-8 name): no file can hold it,
            # so such an id would make every later save() fail.
            raise ValueError(
                f"document id {doc_id!r} is not valid Unicode (a lone surrogate at position "
                f"{e.start}); ids must be encodable as UTF-8"
            ) from None
    return doc_id


def _int_slots(ids: Sequence[DocId | None]) -> np.ndarray:
    """uint32 per slot: the id when it is an int in [0, 2**32 - 1), else 0xFFFFFFFF."""
    return np.fromiter(
        (d if isinstance(d, int) and 0 <= d < 0xFFFFFFFF else 0xFFFFFFFF for d in ids),
        dtype=np.uint32, count=len(ids),
    )


class IdMap:
    """Internal id i was given to user id ``ids[i]``; it is live while ``pos[ids[i]] == i``.

    A deleted slot keeps its user id until compaction, so that results computed just before
    a deletion still map to the right id.
    """

    def __init__(self, ids: Sequence[DocId | None] = ()) -> None:
        self._ids: list[DocId | None] = list(ids)
        self._pos: dict[DocId, int] = {d: i for i, d in enumerate(self._ids) if d is not None}
        ints = [d for d in self._ids if isinstance(d, int)]
        self._next_int = max(ints) + 1 if ints else 0
        # (version, object array of the slots + None): rebuilt after any change of the slots.
        self._version = 0
        self._array: tuple[int, np.ndarray] | None = None
        self._int_array: tuple[int, np.ndarray] | None = None  # the same, see int_slots()
        # (positions version, user int id -> internal id or -1), see _int_positions()
        self._pos_version = 0
        self._int_pos: tuple[int, np.ndarray | None] | None = None
        # Deleted slots, oldest first, for indexes that can reuse them.
        self._free = [i for i, d in enumerate(self._ids) if d is None or self._pos.get(d) != i]

    def __len__(self) -> int:
        return len(self._pos)

    def _changed(self) -> None:
        self._version += 1
        self._pos_version += 1
        self._array = None
        self._int_array = None

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._pos

    @property
    def n_internal(self) -> int:
        return len(self._ids)

    def live_ids(self) -> list[DocId]:
        return [d for i, d in enumerate(self._ids) if d is not None and self._pos.get(d) == i]

    def new_ids(self, ids: Iterable[DocId] | None, n: int) -> list[DocId]:
        """Validates ids for n new documents. The default is integers above every integer id
        used so far, so a default id never replaces an existing document."""
        if ids is None:
            return list(range(self._next_int, self._next_int + n))
        out = [_check_id(d) for d in ids]
        if len(out) != n:
            raise ValueError(f"got {len(out)} ids for {n} documents")
        if len(set(out)) != len(out):
            seen: set[DocId] = set()
            dup = next(d for d in out if d in seen or seen.add(d))  # type: ignore[func-returns-value]
            raise ValueError(f"duplicate document id {dup!r} in one call")
        return out

    def existing(self, ids: Iterable[DocId]) -> np.ndarray:
        """Internal ids of those of `ids` already present (for upserts)."""
        return np.array([self._pos[d] for d in ids if d in self._pos], dtype=np.uint32)

    def append(self, ids: list[DocId]) -> None:
        base = len(self._ids)
        for i, d in enumerate(ids):
            self._pos[d] = base + i
            if isinstance(d, int):
                self._next_int = max(self._next_int, d + 1)
        self._ids.extend(ids)
        objects, ints, version = self._array, self._int_array, self._version
        self._changed()
        # Appending keeps what the cached arrays hold: extend them (a copy in C) instead of
        # letting the next search rebuild them slot by slot in Python (5 ms per 100,000 slots,
        # after every add of a collection that is searched while it grows).
        if objects is not None and objects[0] == version:
            arr = np.empty(len(self._ids) + 1, dtype=object)
            arr[:base] = objects[1][:base]
            arr[base:-1] = ids
            arr[-1] = None
            self._array = (self._version, arr)
        if ints is not None and ints[0] == version:
            self._int_array = (self._version, np.concatenate([ints[1], _int_slots(ids)]))

    def truncate(self, n: int, restore: dict[DocId, int]) -> None:
        """Undoes an append(): back to n slots, with `restore` put back into the live map."""
        for d in self._ids[n:]:
            if d is not None:
                self._pos.pop(d, None)
        del self._ids[n:]
        self._pos.update(restore)
        self._free = [i for i in self._free if i < n]
        self._changed()

    def lookup(self, ids: Iterable[DocId], *, missing: str = "raise") -> np.ndarray:
        """Internal ids of user ids; missing='raise' raises KeyError, 'ignore' drops them."""
        out: list[int] = []
        unknown: list[DocId] = []
        for d in ids:
            i = self._pos.get(d)
            if i is None:
                unknown.append(d)
            else:
                out.append(i)
        if unknown and missing == "raise":
            shown = ", ".join(repr(u) for u in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise KeyError(f"unknown document ids: {shown}{more}")
        return np.array(out, dtype=np.uint32)

    def remove(self, internal: np.ndarray) -> None:
        for i in internal.tolist():
            d = self._ids[i]
            if d is not None and self._pos.get(d) == i:
                del self._pos[d]
                self._free.append(i)
        self._pos_version += 1

    def dead_slots(self, n: int) -> list[int]:
        """Up to n deleted slots that a new id may take over."""
        return self._free[:n]

    def assign_slots(self, slots: list[int], ids: list[DocId]) -> None:
        """Gives deleted slots (from dead_slots) to new ids."""
        del self._free[: len(slots)]
        for i, d in zip(slots, ids, strict=True):
            self._ids[i] = d
            self._pos[d] = i
            if isinstance(d, int):
                self._next_int = max(self._next_int, d + 1)
        self._changed()

    def renumber(self, remap: np.ndarray) -> None:
        """Applies the old -> new map returned by a compaction (new ids are dense; in the old
        order, or any order when the compaction reordered documents)."""
        keep = np.flatnonzero(remap >= 0)
        by_new = np.empty(len(keep), dtype=np.int64)
        by_new[remap[keep]] = keep  # the old id of each new one
        self._ids = [self._ids[i] for i in by_new.tolist()]
        self._pos = {d: i for i, d in enumerate(self._ids) if d is not None}
        self._free = []
        self._changed()

    def to_user(self, internal: np.ndarray) -> np.ndarray:
        """Maps an int64 array of internal ids (-1 = none) to an object array of user ids."""
        cached = self._array
        if cached is None or cached[0] != self._version:
            version = self._version
            ids = self._ids[:]  # one atomic copy: another thread may change slots meanwhile
            arr = np.empty(len(ids) + 1, dtype=object)
            arr[:-1] = ids
            arr[-1] = None  # index -1
            # Tagged with the version it was copied at: a copy that raced with a change is
            # used for this call only and never served from the cache.
            self._array = cached = (version, arr)
        users: np.ndarray = cached[1][internal]
        return users

    def int_slots(self) -> np.ndarray:
        """uint32 per internal id: its user id when that is an int in [0, 2**32 - 1), else
        0xFFFFFFFF (for callers whose ids are ints, such as a collection's chunk ids)."""
        cached = self._int_array
        if cached is None or cached[0] != self._version:
            version = self._version
            self._int_array = cached = (version, _int_slots(self._ids[:]))
        return cached[1]

    def _int_positions(self) -> np.ndarray | None:
        """user id -> internal id (-1: not live) as an array over the int ids 0..max, when
        every live id is such an int and they are dense enough (a collection's chunk ids);
        else None."""
        cached = self._int_pos
        if cached is None or cached[0] != self._pos_version:
            table = None
            keys = np.fromiter(self._pos.keys(), dtype=object, count=len(self._pos))
            if all(type(d) is int for d in keys):
                keys = keys.astype(np.int64)
                if not len(keys) or (keys.min() >= 0 and keys.max() < 4 * len(keys) + 1024):
                    table = np.full(int(keys.max()) + 1 if len(keys) else 0, -1, np.int64)
                    table[keys] = np.fromiter(self._pos.values(), dtype=np.int64,
                                              count=len(keys))
            self._int_pos = cached = (self._pos_version, table)
        return cached[1]

    def _allowed_internal(self, ids: Iterable[DocId]) -> np.ndarray:
        """Internal ids of the live ones among `ids` (int64)."""
        if isinstance(ids, (list, np.ndarray)) and len(ids) and type(ids[0]) in (int, np.int64):
            try:
                arr = (ids if isinstance(ids, np.ndarray)
                       else np.fromiter(ids, dtype=np.int64, count=len(ids)))
            except (TypeError, ValueError, OverflowError):  # not all ints: the general path
                return self.lookup(ids, missing="ignore").astype(np.int64)
            table = self._int_positions() if arr.dtype.kind in "iu" and arr.ndim == 1 else None
            if table is not None:
                arr = arr[(arr >= 0) & (arr < len(table))].astype(np.int64, copy=False)
                idx = table[arr]
                return idx[idx >= 0]
        return self.lookup(ids, missing="ignore").astype(np.int64)

    def allow_bitset(self, ids: Iterable[DocId]) -> np.ndarray:
        """A uint64 bitset over internal ids with the bits of the given user ids set."""
        n_words = (len(self._ids) + 63) // 64
        bits = np.zeros(n_words * 64, dtype=bool)
        bits[self._allowed_internal(ids)] = True
        # little bit order: internal id i is bit i % 64 of word i // 64
        return np.packbits(bits, bitorder="little").view("<u8").astype(np.uint64, copy=False)

    def to_json(self) -> list[Any]:
        """Slots as a JSON list, deleted ones as null."""
        return [
            d if d is not None and self._pos.get(d) == i else None for i, d in enumerate(self._ids)
        ]
