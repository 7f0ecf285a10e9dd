"""IdMap's cached arrays (user ids by internal id) against arrays rebuilt from scratch, through
the changes a growing, editing index makes."""

from __future__ import annotations

import numpy as np

from fastrag.index.idmap import IdMap


def fresh_arrays(m: IdMap) -> tuple[list, np.ndarray]:
    rebuilt = IdMap(m.to_json())
    n = m.n_internal
    return rebuilt.to_user(np.arange(-1, n)).tolist(), rebuilt.int_slots()


def check(m: IdMap) -> None:
    n = m.n_internal
    users, slots = fresh_arrays(m)
    live = m.to_json()
    got = m.to_user(np.arange(-1, n)).tolist()
    # deleted slots keep their old id in the live map's arrays (results computed just before a
    # delete still map): compare the live slots and the -1 padding
    assert got[0] is None
    assert [g for g, d in zip(got[1:], live, strict=True) if d is not None] == [
        u for u, d in zip(users[1:], live, strict=True) if d is not None]
    s = m.int_slots()
    assert len(s) == n
    keep = [i for i, d in enumerate(live) if d is not None]
    np.testing.assert_array_equal(s[keep], slots[keep])


def test_appends_extend_the_cached_arrays_as_a_rebuild_would():
    m = IdMap()
    m.append([0, 1, 2])
    check(m)  # builds both caches
    m.append([3, "doc-a", 2**40, 4])  # ints too large for uint32 map to 0xFFFFFFFF
    assert m._int_array is not None and m._array is not None  # extended, not dropped
    check(m)
    np.testing.assert_array_equal(m.int_slots()[-4:], [3, 0xFFFFFFFF, 0xFFFFFFFF, 4])
    m.remove(np.array([1], dtype=np.uint32))
    m.append([5])
    check(m)
    m.assign_slots(m.dead_slots(1), [6])  # a reused slot: rebuilt on the next use
    check(m)
    m.truncate(m.n_internal - 1, {})
    check(m)
    m.renumber(np.array([0, 1, 2, -1, 4, 5, 3, 6], dtype=np.int64)[: m.n_internal])
    check(m)
    m.append(["doc-b"])
    check(m)


def test_an_append_before_any_search_builds_nothing():
    m = IdMap()
    m.append(["a", "b"])
    assert m._int_array is None and m._array is None
    m.append([1])
    np.testing.assert_array_equal(m.int_slots(), [0xFFFFFFFF, 0xFFFFFFFF, 1])
    assert m.to_user(np.array([2, 0, -1])).tolist() == [1, "a", None]
