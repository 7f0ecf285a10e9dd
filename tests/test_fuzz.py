"""Replays the fuzz seed corpus and seeded mutations of it through the fuzz targets of
tests/fuzz/harnesses.py, without atheris: file loaders must load or refuse with
IndexFormatError / ValueError (a loaded index must then answer searches), analyzers must give
clean tokens. The atheris driver itself (tests/fuzz/run.py) is smoke-tested when installed.
"""

from __future__ import annotations

import importlib.util
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent / "fuzz"
sys.path.insert(0, str(FUZZ))

import harnesses  # noqa: E402
from fileformat import HEADER, MAGIC, checksum, reseal  # noqa: E402

MUTATIONS = 120  # per target


@pytest.fixture(autouse=True)
def _fuzz_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTRAG_FUZZ_TMP", str(tmp_path))
    yield
    harnesses.cleanup()


def _seeds(kind: str) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted(harnesses.seed_dir(kind).iterdir())]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One seeded mutation: truncation, bit flips, byte overwrites, a header field set to an
    extreme, an insertion or a deletion."""
    d = bytearray(data)
    op = rng.randrange(6)
    if op == 0 or not d:
        return bytes(d[: rng.randrange(len(d) + 1)])
    if op == 1:
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(d))
            d[i] ^= 1 << rng.randrange(8)
    elif op == 2:
        for _ in range(rng.randint(1, 8)):
            d[rng.randrange(len(d))] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
    elif op == 3 and len(d) >= 16:
        # an 8-byte little-endian field at an 8-byte boundary set to an extreme
        i = rng.randrange(len(d) // 8) * 8
        value = rng.choice([0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1, rng.randrange(1 << 16)])
        d[i : i + 8] = struct.pack("<Q", value)[: len(d) - i]
    elif op == 4:
        i = rng.randrange(len(d) + 1)
        d[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:
        i = rng.randrange(len(d))
        del d[i : i + rng.randint(1, 64)]
    return bytes(d)


def test_checksum_matches_the_core() -> None:
    for name, data in _seeds("bm25") + _seeds("dense"):
        assert data.startswith(MAGIC) and len(data) > HEADER, name
        assert reseal(data) == data, name
    assert checksum(b"") != checksum(b"\0")


@pytest.mark.parametrize("kind", [*harnesses.LOADERS, *(f"{k}_mmap" for k in harnesses.LOADERS)])
def test_loader_seeds_load(kind: str) -> None:
    mmap = kind.endswith("_mmap")
    base = kind.removesuffix("_mmap")
    # the golden files of tests/golden hold opaque metadata, not an index's: refused by the
    # Python loaders after the core has read them (still useful seeds for the core's checks)
    for name, data in _seeds(kind):
        assert harnesses.load_file(base, data, mmap) != name.startswith("golden_"), name


@pytest.mark.parametrize("kind", sorted(harnesses.TARGETS))
def test_seeds_and_mutations(kind: str) -> None:
    target = harnesses.TARGETS[kind]
    seeds = _seeds(kind)
    assert seeds
    rng = random.Random(f"fastrag-fuzz-{kind}")
    for _, data in seeds:
        target(data)
    for _ in range(MUTATIONS):
        _, data = rng.choice(seeds)
        data = mutate(data, rng)
        if rng.random() < 0.3:
            data = mutate(data, rng)
        try:
            target(data)
        except harnesses.Finding as e:  # pragma: no cover - shows the input of a failure
            pytest.fail(f"{e}\ninput ({len(data)} bytes): {data[:200]!r}...")


def test_mmap_file_is_not_kept_open_by_refusal(tmp_path) -> None:
    # a refused file can be removed and its name reused at once (no stale mapping)
    _, data = _seeds("dense")[0]
    for _ in range(3):
        assert not harnesses.load_file("dense", data[:-64], True)
    assert not any(tmp_path.rglob("in*"))


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed")
def test_atheris_driver_smoke() -> None:
    p = subprocess.run(
        [sys.executable, str(FUZZ / "run.py"), "--seconds", "3", "--kind", "bm25_mmap",
         "--kind", "analyzer_bigram"],
        capture_output=True, text=True, timeout=120,
    )
    lines = p.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("SUMMARY runs="), p.stdout + p.stderr
    assert p.returncode == 0, p.stdout


def test_collection_seed_opens() -> None:
    (_, data), = _seeds("collection")
    assert harnesses.open_collection(data)


def _seed_collection(folder: Path) -> None:
    import fastrag

    col = fastrag.Collection.create(folder, encoder=None, analyzer="english")
    col.add(["river stone", "cloud lamp"], ids=["a", "b"])
    col.commit()
    col.close()


_UNTYPED_META = (
    "ALTER TABLE meta RENAME TO old_meta; CREATE TABLE meta (key TEXT PRIMARY KEY, value); "
    "INSERT INTO meta SELECT key, value FROM old_meta; DROP TABLE old_meta; "
)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE meta SET value = '[1]' WHERE key = 'settings'",
        "UPDATE meta SET value = '\"x\"' WHERE key = 'generation'",
        "UPDATE documents SET text = CAST(x'77ff' AS TEXT) WHERE id = 'a'",
        "UPDATE meta SET value = CAST(x'ff' AS TEXT) WHERE key = 'next_chunk'",
        "DELETE FROM meta WHERE key = 'generation'",
        "DELETE FROM meta WHERE key = 'next_chunk'",
        "UPDATE meta SET value = json_remove(value, '$.analyzer') WHERE key = 'settings'",
        "UPDATE chunks SET start = 'x'",
        # values that are not JSON text, as a damaged page can hold them (the fuzzer found a
        # NULL settings value): the meta table is first rebuilt without its NOT NULL and TEXT
        _UNTYPED_META + "UPDATE meta SET value = NULL WHERE key = 'settings'",
        _UNTYPED_META + "UPDATE meta SET value = NULL WHERE key = 'generation'",
        _UNTYPED_META + "UPDATE meta SET value = 7 WHERE key = 'settings'",
        _UNTYPED_META + "UPDATE meta SET value = 2.5 WHERE key = 'next_chunk'",
        _UNTYPED_META + "INSERT INTO meta(key, value) VALUES ('default_pipeline', NULL)",
        "INSERT INTO meta(key, value) VALUES ('default_pipeline', '[1, 2]')",
        "UPDATE meta SET value = json_set(value, '$.version', json('[2]')) WHERE key = 'settings'",
        "UPDATE meta SET value = json_set(value, '$.version', 'two') WHERE key = 'settings'",
    ],
)
def test_damaged_collection_database_is_refused(tmp_path, sql: str) -> None:
    """A collection whose database was damaged (rows changed behind fastrag's back) opens and
    works, or is refused with CollectionError / IndexFormatError (ValueErrors), never another
    exception."""
    import sqlite3

    import fastrag

    _seed_collection(tmp_path / "col")
    db = sqlite3.connect(tmp_path / "col" / "collection.sqlite")
    db.executescript(sql)
    db.commit()
    db.close()
    try:
        col = fastrag.Collection.open(tmp_path / "col")
        try:
            list(col.documents())
            col.info()
            col.default_pipeline_spec()
            col.search("river", k=2, method="bm25")
            col.add(["paper"], ids=["z"])
            col.commit()
        finally:
            col.close()
    except ValueError:
        pass


@pytest.mark.parametrize("value", ["[1, 2]", "3", None])
def test_damaged_meta_values_name_the_damage(tmp_path, value: str | None) -> None:
    """A meta value that is not JSON text, or a default pipeline that is not a spec, is
    IndexFormatError naming the key, not a TypeError from json or a list returned as a spec."""
    import sqlite3

    import fastrag
    from fastrag._core import IndexFormatError

    _seed_collection(tmp_path / "col")
    db = sqlite3.connect(tmp_path / "col" / "collection.sqlite")
    db.executescript(_UNTYPED_META)
    db.execute("INSERT INTO meta(key, value) VALUES ('default_pipeline', ?)", (value,))
    db.commit()
    db.close()
    col = fastrag.Collection.open(tmp_path / "col")
    try:
        with pytest.raises(IndexFormatError, match=r"default.pipeline"):
            col.default_pipeline_spec()
    finally:
        col.close()
    db = sqlite3.connect(tmp_path / "col" / "collection.sqlite")
    db.execute("UPDATE meta SET value = NULL WHERE key = 'settings'")
    db.commit()
    db.close()
    with pytest.raises(IndexFormatError, match="meta 'settings' holds NoneType"):
        fastrag.Collection.open(tmp_path / "col")


def test_damaged_sqlite_page_is_refused() -> None:
    # one byte of the schema page of the seed database changed: SQLITE_CORRUPT on open
    (_, data), = _seeds("collection")
    data = bytearray(data)
    data[3540] = 130
    harnesses.open_collection(bytes(data))


def _damaged_folder(tmp_path: Path, data: bytes) -> Path:
    folder = tmp_path / "col"
    folder.mkdir()
    (folder / "collection.sqlite").write_bytes(data)
    for f in harnesses.COLLECTION_FILES.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    return folder


def test_verify_finds_an_index_that_disagrees_with_its_table(tmp_path) -> None:
    import fastrag

    (_, data), = _seeds("collection")
    data = bytearray(data)
    assert data[20473] == ord("d")  # the id in the documents table's row of document 'd'
    data[20473] = 0x7F
    col = fastrag.Collection.open(_damaged_folder(tmp_path, bytes(data)))
    try:
        try:
            col.verify()
        except fastrag.IndexFormatError:
            return
        ids = [d.id for d in col.documents()]
        assert all(d in col for d in ids), ids
    finally:
        col.close()


def test_damaged_schema_is_refused(tmp_path) -> None:
    import sqlite3

    import fastrag

    _seed_collection(tmp_path / "col")
    db = sqlite3.connect(tmp_path / "col" / "collection.sqlite")
    db.execute("PRAGMA writable_schema = ON")
    db.execute(
        "UPDATE sqlite_master SET sql = replace(sql, 'metadata TEXT', 'metadatx TEXT') "
        "WHERE name = 'documents'"
    )
    db.commit()
    db.close()
    try:
        col = fastrag.Collection.open(tmp_path / "col")
        try:
            list(col.documents())
            col.search("river", k=2, method="bm25")
        finally:
            col.close()
    except ValueError:
        pass


def test_damaged_foreign_key_is_refused(tmp_path) -> None:
    import sqlite3

    import fastrag

    _seed_collection(tmp_path / "col")
    db = sqlite3.connect(tmp_path / "col" / "collection.sqlite")
    db.execute("PRAGMA writable_schema = ON")
    db.execute(
        "UPDATE sqlite_master SET sql = replace(sql, 'REFERENCES documents(id)', "
        "'REFERENCES dgcuments(id)') WHERE name = 'chunks'"
    )
    db.commit()
    db.close()
    try:
        col = fastrag.Collection.open(tmp_path / "col")
        try:
            col.verify()
            col.add(["paper"], ids=["z"])
            col.delete(["a"])
            col.commit()
        finally:
            col.close()
    except ValueError:
        pass


_LOAD_IN_1GB = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
import fastrag
try:
    fastrag.DenseIndex.load(sys.argv[1])
except BaseException as e:
    print(type(e).__name__, e)
else:
    print("loaded")
"""


def test_dense_load_checks_the_vector_count_before_allocating(tmp_path) -> None:
    data = bytearray(dict(_seeds("dense"))["empty.frdx"])
    meta = 384  # the meta section of this seed (section 1 in its table): 14 u64
    assert struct.unpack_from("<IIQQ", data, HEADER)[:3] == (1, 8, meta)
    struct.pack_into("<Q", data, meta + 7 * 8, 0xFFFFFFFE)  # n_vectors
    path = tmp_path / "huge.frdx"
    path.write_bytes(reseal(bytes(data)))
    p = subprocess.run(
        [sys.executable, "-c", _LOAD_IN_1GB, str(path)],
        capture_output=True, text=True, timeout=120,
    )
    assert p.stdout.startswith("IndexFormatError"), p.stdout + p.stderr[-500:]


def test_dense_float_rows_out_of_range_are_refused_or_compact(tmp_path) -> None:
    import fastrag

    data = bytearray(dict(_seeds("dense"))["cosine_f16.frdx"])
    table = [struct.unpack_from("<IIQQ", data, HEADER + 24 * i) for i in range(3)]
    assert table[2][:2] == (3, 4)  # section 3: the float32 rows, 4-byte elements
    struct.pack_into("<f", data, table[2][2], 1e30)
    path = tmp_path / "f16.frdx"
    path.write_bytes(reseal(bytes(data)))
    try:
        index = fastrag.DenseIndex.load(path)
    except fastrag.IndexFormatError:
        return
    index.compact(threads=1)
