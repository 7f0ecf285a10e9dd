"""Collections under failure: a reader racing a writer, an add that fails half-way, a damaged
database, ids that cannot be stored, an interrupted create, bad pipeline settings."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import fastrag as fc
from fake_encoder import FakeEncoder
from fastrag import IndexFormatError
from fastrag.cli import main
from fastrag.collection import Collection, CollectionError, store
from fastrag.search import DenseRescore, Pipeline, Retriever

TESTS = Path(__file__).resolve().parent
DOCS = {
    "apple": "Apples grow on trees in the orchard near the river.",
    "bread": "Bread is baked in a hot oven every morning.",
    "comet": "A comet has a bright tail when it passes close to the sun.",
}


def new(path: Path, **options: Any) -> Collection:
    options.setdefault("encoder", FakeEncoder())
    col = Collection.create(path, **options)
    col.add(list(DOCS.values()), ids=list(DOCS), metadata=[{"year": 2000 + i} for i in range(3)])
    col.commit()
    return col


def reopen(path: Path, **options: Any) -> Collection:
    options.setdefault("encoder", FakeEncoder())
    return Collection.open(path, **options)


def index_files(path: Path) -> set[str]:
    return {p.name for p in path.iterdir() if p.name.startswith(("bm25.", "dense."))}


def state(col: Collection) -> dict[str, Any]:
    return {
        "docs": {d.id: (d.text, d.metadata) for d in col.documents()},
        "bm25": {q: [r.id for r in col.search(q, k=10, method="bm25")]
                 for q in ("apples", "oven", "comet", "river", "zebra")},
        "dense": [r.id for r in col.search("bright comet", k=10, method="dense")],
        "chunks": (len(col.bm25 or ()), len(col.dense or ())),
    }


# ---------------------------------------------------------------------- readers never delete


def test_a_reader_racing_a_commit_keeps_the_writers_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader reads generation g; before it loads g's files, a writer commits g + 1
    (and, as the writer, deletes g). The reader must delete nothing and still open."""
    path = tmp_path / "c"
    writer = new(path)
    writer.add(["Zebras have stripes."], ids=["zebra"])
    get_meta = store.get_meta
    raced = []

    def racing_get_meta(db: sqlite3.Connection, key: str, default: Any = None) -> Any:
        value = get_meta(db, key, default)
        if key == "generation" and db is not writer._db and not raced:
            raced.append(value)
            writer.commit()  # another process commits between the reader's steps
        return value

    monkeypatch.setattr(store, "get_meta", racing_get_meta)
    reader = reopen(path)
    monkeypatch.undo()
    assert raced == [1]
    assert index_files(path) == {"bm25.2.fridx", "dense.2.frdx"}
    assert "zebra" in reader and [r.id for r in reader.search("zebras", method="bm25")] == [
        "zebra"]
    reader.close()
    writer.close()
    col = reopen(path)
    assert len(col) == 4
    col.close()


WRITER = """
import sys, time
sys.path.insert(0, {tests!r})
from fake_encoder import FakeEncoder
from fastrag.collection import Collection
col = Collection.open({path!r}, encoder=FakeEncoder())
end = time.monotonic() + {seconds}
n = 0
while time.monotonic() < end:
    col.add([f"Writer text number {{n}} about gliders."], ids=[f"w{{n}}"])
    col.commit()
    n += 1
col.close()
print(n)
"""


def test_readers_opening_while_a_writer_commits_in_a_loop(tmp_path: Path) -> None:
    path = tmp_path / "c"
    new(path).close()
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(tests=str(TESTS), path=str(path), seconds=3)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    opens = 0
    try:
        while writer.poll() is None:
            col = reopen(path, mmap=opens % 2 == 0)  # what `fastrag search` does
            assert len(col.search("gliders", k=3, method="bm25")) <= 3
            col.close()
            opens += 1
    finally:
        out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    commits = int(out)
    assert commits > 0 and opens > 0
    col = reopen(path)
    assert len(col) == 3 + commits
    assert col.info()["generation"] == 1 + commits
    assert index_files(path) == {f"bm25.{1 + commits}.fridx", f"dense.{1 + commits}.frdx"}
    col.close()


# ---------------------------------------------------------------------- an add is all or nothing


class NaNEncoder(FakeEncoder):
    """Returns NaN for texts holding the word 'poison'."""

    def _embed(self, texts: list[str], kind: Any, batch_size: int) -> np.ndarray:
        out = super()._embed(texts, kind, batch_size)
        out[["poison" in t.lower() for t in texts]] = np.nan
        return out


def test_an_add_whose_encoder_returns_nan_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c"
    new(path).close()
    col = reopen(path, encoder=NaNEncoder())
    before = state(col)
    with pytest.raises(ValueError, match="NaN"):
        col.add(["A fine text.", "A poison text about apples."], ids=["fine", "bad"])
    with pytest.raises(ValueError, match="NaN"):  # an upsert keeps the old document
        col.add(["Poison apples now."], ids=["apple"])
    assert state(col) == before and len(col) == 3
    col.commit()
    col.close()
    col = reopen(path)
    assert state(col) == before and col.info()["generation"] == 1
    col.close()


@pytest.mark.parametrize("upsert", [False, True])
def test_an_add_that_fails_inside_an_index_is_undone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upsert: bool
) -> None:
    path = tmp_path / "c"
    col = new(path)
    col.add(["Pending change about rivers."], ids=["pending"])
    before = state(col)

    def broken_add(self: Any, *args: Any, **kwargs: Any) -> None:
        raise MemoryError("the dense index could not grow")

    monkeypatch.setattr(fc.DenseIndex, "add", broken_add)
    doc_id = "apple" if upsert else "new"
    with pytest.raises(MemoryError):
        col.add(["Cherries grow near the river too."], ids=[doc_id])
    monkeypatch.undo()
    assert state(col) == before
    assert [r.id for r in col.search("cherries", method="bm25")] == []
    col.commit()  # the earlier pending change still lands
    col.close()
    col = reopen(path)
    assert state(col) == before and "pending" in col
    col.close()


# ---------------------------------------------------------------------- a damaged database


def damage(path: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Changes rows behind fastrag's back, as a flipped bit would (checksums not updated)."""
    db = sqlite3.connect(path / "collection.sqlite")
    with db:
        db.execute(sql, params)
    db.close()


def test_a_changed_passage_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "c"
    new(path).close()
    damage(path, "UPDATE documents SET text = replace(text, 'oven', 'ovem') WHERE id = 'bread'")
    col = reopen(path)
    # searches read the generation's document file, which holds the text as committed
    assert col.get("bread").text == DOCS["bread"]
    assert [r.text for r in col.search("oven", method="bm25")] == [DOCS["bread"]]
    with pytest.raises(IndexFormatError, match=r"document 'bread'.*checksum"):
        col.verify()  # the damaged row itself
    col.close()


def docs_file(path: Path) -> Path:
    (found,) = path.glob("docs.*.frds")
    return found


def test_a_changed_record_of_the_document_file_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "c"
    new(path).close()
    raw = docs_file(path).read_bytes()
    at = raw.index(b"oven")
    docs_file(path).write_bytes(raw[:at] + b"ovem" + raw[at + 4 :])
    col = reopen(path)
    assert col.get("apple").text == DOCS["apple"]  # undamaged records read as before
    with pytest.raises(IndexFormatError, match=r"document 'bread'.*checksum"):
        col.get("bread")
    # a search reads a hit's record when its text is first used: the damage shows there
    (hit,) = col.search("oven", method="bm25")
    assert hit.id == "bread"
    with pytest.raises(IndexFormatError, match="checksum"):
        hit.text  # noqa: B018
    with pytest.raises(IndexFormatError, match="checksum"):
        col.search("oven", method="bm25")[0].metadata  # noqa: B018
    with pytest.raises(IndexFormatError, match="checksum"):
        col.verify()
    col.close()


@pytest.mark.parametrize("cut", [0, 10, 40, -1])
def test_a_truncated_or_damaged_document_file_fails_at_open(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "c"
    new(path).close()
    raw = docs_file(path).read_bytes()
    if cut >= 0:
        docs_file(path).write_bytes(raw[:cut])  # truncated
    else:
        docs_file(path).write_bytes(raw[:50] + bytes([raw[50] ^ 1]) + raw[51:])  # an id's byte
    with pytest.raises(IndexFormatError, match="document file"):
        reopen(path)


def test_a_missing_document_file_is_rebuilt_from_the_database(tmp_path: Path) -> None:
    path = tmp_path / "c"
    col = new(path)
    before = state(col)
    col.close()
    docs_file(path).unlink()  # as a collection written before the file existed
    col = reopen(path)
    assert state(col) == before and col.get("bread").text == DOCS["bread"]
    col.add(["A new text about ovens."], ids=["new"])
    col.commit()
    col.close()
    assert docs_file(path).name == "docs.2.frds"
    col = reopen(path)
    assert col.get("new").text == "A new text about ovens." and len(col) == len(DOCS) + 1
    col.close()


def test_changed_metadata_is_detected_before_a_filter_uses_it(tmp_path: Path) -> None:
    path = tmp_path / "c"
    new(path).close()
    damage(path, """UPDATE documents SET metadata = '{"year": 2099}' WHERE id = 'comet'""")
    col = reopen(path)
    with pytest.raises(IndexFormatError, match="comet"):
        col.search("comet", filter={"year": {"$gte": 2050}})
    col.close()


@pytest.mark.parametrize("sql", [
    "UPDATE chunks SET start = start + 1 WHERE doc = 'apple'",
    "UPDATE chunks SET doc = 'bread' WHERE doc = 'apple'",
])
def test_a_changed_chunk_is_detected(tmp_path: Path, sql: str) -> None:
    path = tmp_path / "c"
    new(path).close()
    damage(path, "PRAGMA foreign_keys = OFF")
    damage(path, sql)
    col = reopen(path)
    with pytest.raises(IndexFormatError, match="chunk"):
        col.search("apples orchard")
    col.close()


def test_chunks_missing_from_the_database_are_detected_at_open(tmp_path: Path) -> None:
    path = tmp_path / "c"
    new(path).close()
    damage(path, "DELETE FROM chunks WHERE doc = 'comet'")
    with pytest.raises(IndexFormatError, match="2 chunks but the bm25 index"):
        reopen(path)


def test_a_flipped_byte_in_the_file_never_gives_a_wrong_passage(tmp_path: Path) -> None:
    path = tmp_path / "c"
    new(path).close()
    raw = (path / "collection.sqlite").read_bytes()
    at = raw.index(b"orchard")
    (path / "collection.sqlite").write_bytes(raw[:at] + b"orchird" + raw[at + 7:])
    col = reopen(path)
    assert col.get("apple").text == DOCS["apple"]  # from the document file, as committed
    with pytest.raises(IndexFormatError):
        col.verify()
    col.close()


def test_missing_index_files_are_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "c"
    new(path).close()
    (path / "dense.1.frdx").unlink()
    with pytest.raises(IndexFormatError, match="generation 1 are missing"):
        reopen(path)


def as_version_1(path: Path) -> sqlite3.Connection:
    """The collection's database made as format 1 wrote it (no row checksums); open."""
    db = sqlite3.connect(path / "collection.sqlite")
    with db:
        for table in ("documents", "chunks", "tokens"):
            db.execute(f"ALTER TABLE {table} DROP COLUMN crc")
        settings = store.get_meta(db, "settings")
        store.set_meta(db, "settings", {**settings, "version": 1})
    return db


def test_a_version_1_collection_is_upgraded_with_checksums(tmp_path: Path) -> None:
    path = tmp_path / "c"
    col = new(path)
    before = state(col)
    col.close()
    as_version_1(path).close()
    col = reopen(path)
    assert col.settings["version"] == store.VERSION
    assert state(col) == before
    assert col.verify() == {"documents": 3, "chunks": 3, "token_rows": 0}
    col.close()


@pytest.mark.parametrize("damage", [
    "UPDATE chunks SET start = 'x'",
    # a NULL the schema forbids, as a damaged page can hold: the NOT NULL is taken out of the
    # stored schema text (the records' format does not change)
    "PRAGMA writable_schema = ON; UPDATE sqlite_master SET sql = replace(sql, "
    "'text TEXT NOT NULL', 'text TEXT') WHERE name = 'documents'",
])
def test_a_damaged_version_1_collection_is_refused_and_left_as_it_was(
    tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "c"
    new(path).close()
    db = as_version_1(path)
    db.executescript(damage)
    db.close()
    if "writable_schema" in damage:
        db = sqlite3.connect(path / "collection.sqlite")
        db.execute("UPDATE documents SET text = NULL WHERE rowid = 1")
        db.commit()
        db.close()
    with pytest.raises(IndexFormatError, match="holds a column of another type"):
        reopen(path)
    db = sqlite3.connect(path / "collection.sqlite")
    assert store.get_meta(db, "settings")["version"] == 1  # the upgrade was rolled back
    assert "crc" not in {row[1] for row in db.execute("PRAGMA table_info(documents)")}
    db.close()


# ---------------------------------------------------------------------- ids


def test_ids_must_be_storable_strings(tmp_path: Path) -> None:
    col = new(tmp_path / "c")
    before = state(col)
    for bad, error in [(None, TypeError), (1, TypeError), ("", ValueError),
                       ("\ud800", ValueError)]:
        with pytest.raises(error, match="ids\\[0\\]"):
            col.add(["Some text."], ids=[bad])  # type: ignore[list-item]
    assert state(col) == before
    assert 1 not in col and None not in col
    assert col.delete(["apple", "apple"]) == 1
    assert "apple" not in col
    col.commit()
    col.close()


# ---------------------------------------------------------------------- create


def test_an_interrupted_create_leaves_a_folder_that_can_be_created_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c"

    def crash(*args: Any) -> None:
        raise KeyboardInterrupt  # as a kill would stop it: midway through the database

    monkeypatch.setattr(store, "set_meta", crash)
    with pytest.raises(KeyboardInterrupt):
        Collection.create(path, encoder=None)
    monkeypatch.undo()
    assert not (path / "collection.sqlite").exists()
    with pytest.raises(CollectionError, match="not a fastrag collection"):
        Collection.open(path)
    Collection.create(path, encoder=None).close()
    assert [p.name for p in path.iterdir() if "creating" in p.name] == []
    Collection.open(path).close()


def test_create_replaces_what_a_killed_create_of_version_0_1_left(tmp_path: Path) -> None:
    path = tmp_path / "c"
    path.mkdir()
    sqlite3.connect(path / "collection.sqlite").execute("PRAGMA journal_mode=WAL").close()
    col = Collection.create(path, encoder=None)
    col.add(["text"], ids=["t"])
    col.commit()
    col.close()
    with pytest.raises(CollectionError, match="already holds"):
        Collection.create(path, encoder=None)


def test_a_killed_create_leaves_no_collection(tmp_path: Path) -> None:
    path = tmp_path / "c"
    script = textwrap.dedent(f"""
        import os
        from fastrag.collection import Collection, store
        def die(*args):
            os.kill(os.getpid(), 9)
        store.set_meta = die
        Collection.create({str(path)!r}, encoder=None)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9
    Collection.create(path, encoder=None).close()
    names = {p.name for p in path.iterdir()}
    assert "collection.sqlite" in names and not any(".creating" in n for n in names), names


# ---------------------------------------------------------------------- pipeline settings


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), -1.0, "1"])
def test_a_bad_fusion_weight_is_refused(weight: Any) -> None:
    with pytest.raises(ValueError, match="weight"):
        Retriever("bm25", weight=weight)


@pytest.mark.parametrize("depth", [0, -3, 2.5, True])
def test_a_bad_depth_is_refused(depth: Any) -> None:
    with pytest.raises(ValueError, match="depth"):
        Retriever("bm25", depth=depth)
    with pytest.raises(ValueError, match="depth"):
        Pipeline([Retriever("bm25")], rerankers=[(DenseRescore(), depth)])


def test_a_huge_k_returns_every_document(tmp_path: Path) -> None:
    path = tmp_path / "c"
    new(path).close()
    col = reopen(path)
    for method in ("bm25", "dense", "hybrid"):
        assert len(col.search("the", k=10**12, method=method)) <= 3
    assert len(col.search("bright comet", k=2**62, method="dense")) == 3
    col.close()
    new(tmp_path / "bm25", encoder=None).close()  # the CLI loads encoders by model name
    t0 = time.monotonic()
    result = CliRunner().invoke(main, ["search", str(tmp_path / "bm25"), "comet", "--k",
                                       "1000000000000"])
    assert result.exit_code == 0, result.output
    assert "comet" in result.output and time.monotonic() - t0 < 60


def test_a_structurally_damaged_database_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "c"
    col = new(path, encoder=None)
    col.add([f"Filler document {i} about gliders and wings." * 20 for i in range(200)],
            ids=[f"f{i}" for i in range(200)])
    col.commit()
    col.close()
    db_file = path / "collection.sqlite"
    raw = bytearray(db_file.read_bytes())
    page = 4096
    for at in range(2 * page, len(raw), page):  # wreck the b-tree page headers
        raw[at : at + 8] = b"\xff" * 8
    db_file.write_bytes(bytes(raw))
    try:
        col = Collection.open(path)
    except IndexFormatError:
        return  # found at open: fine
    with pytest.raises(IndexFormatError):
        col.verify()
    with pytest.raises(IndexFormatError):
        for _ in col.documents():
            pass
    col.close()


# ---------------------------------------------------------------------- two connections


def test_two_writers_do_not_lose_each_others_commits(tmp_path: Path) -> None:
    path = tmp_path / "c"
    new(path).close()
    a, b = reopen(path), reopen(path)  # two processes, both opened at generation 1
    a.add(["Zebras have stripes."], ids=["zebra"])
    a.commit()
    b.add(["Gliders have long wings."], ids=["glider"])  # b catches up before writing
    b.commit()
    assert [r.id for r in b.search("zebras", method="bm25")] == ["zebra"]
    a.close()
    b.close()
    col = reopen(path)
    assert len(col) == 5 and col.info()["generation"] == 3
    assert len(col.bm25 or ()) == len(col.dense or ()) == 5
    assert [r.id for r in col.search("gliders wings", k=1, method="dense")] == ["glider"]
    col.close()


def test_a_reader_follows_commits_of_another_connection(tmp_path: Path) -> None:
    path = tmp_path / "c"
    writer = new(path)
    reader = reopen(path)
    assert [r.id for r in reader.search("oven", method="bm25")] == ["bread"]
    writer.delete(["bread"])
    writer.add(["Apples were replaced by pears."], ids=["apple"])
    writer.commit()
    assert reader.search("oven", method="bm25") == []
    hits = reader.search("pears", method="hybrid")
    assert hits[0].id == "apple" and "pears" in hits[0].passage
    assert all(r.id != "bread" for r in reader.search("the", k=10, method="dense"))
    reader.close()
    writer.close()


def test_info_reads_one_committed_state_while_another_connection_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a service's /info ran beside a writer's commit: its counts came from two states and a
    # file the commit removed between the listing and the stat failed the request
    path = tmp_path / "c"
    writer = new(path)
    reader = reopen(path)
    other = sqlite3.connect(path / store.DB, isolation_level=None)
    committed = []

    def commit_between(sql: str) -> None:
        if "FROM chunks" in sql and not committed:
            other.execute("UPDATE meta SET value = '99' WHERE key = 'generation'")
            committed.append(sql)

    reader._db.set_trace_callback(commit_between)
    listed = Path.iterdir

    def with_a_vanished_file(folder: Path) -> Any:
        yield folder / "bm25.7.fridx"  # listed, then removed by a commit
        yield folder / "dense.1.frdx.tmp-12-3"  # a commit's file being written
        yield from listed(folder)

    monkeypatch.setattr(Path, "iterdir", with_a_vanished_file)
    found = reader.info()
    assert committed and found["generation"] == 1 and found["documents"] == 3
    assert "bm25.7.fridx" not in found["files"] and store.DB in found["files"]
    assert not any(".tmp-" in name for name in found["files"])
    reader._db.set_trace_callback(None)
    assert reader.info()["generation"] == 99
    other.close()
    reader.close()
    writer.close()


# ---------------------------------------------------------------------- k documents


@pytest.mark.parametrize("method", ["bm25", "dense", "hybrid"])
def test_every_method_returns_k_documents_when_k_match(tmp_path: Path, method: str) -> None:
    """A long document whose chunks fill the first depth must not crowd the others out."""
    col = Collection.create(tmp_path / "c", encoder=FakeEncoder(), chunk_chars=60)
    long = "\n\n".join(f"Gliders glide over ridge {i} all day long." for i in range(60))
    col.add([long] + [f"A glider story number {i} told twice." for i in range(15)],
            ids=["long"] + [f"s{i}" for i in range(15)])
    assert len(col.chunks_of(range(200))) > 60
    hits = col.search("gliders glide ridge", k=10, method=method)
    assert len({h.id for h in hits}) == len(hits) == 10
    assert len(col.search("glider", k=100, method=method)) == 16
    col.close()


# ---------------------------------------------------------------------- files from Python


def test_add_files_reads_what_fastrag_index_reads(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.md").write_text("Gliders soar on thermals.")
    (docs / "sub" / "b.txt").write_text("Kites need wind.")
    (docs / "c.bin").write_bytes(b"\x00\x01")
    (docs / "rows.jsonl").write_text('{"_id": "r1", "title": "Sails", "text": "Boats sail."}\n')
    col = Collection.create(tmp_path / "c", encoder=None)
    found = col.add_files([docs])
    assert sorted(found.ids) == ["a.md", "r1", "sub/b.txt"]
    assert any("c.bin" in s for s in found.skipped)
    assert [r.id for r in col.search("thermals", method="bm25")] == ["a.md"]
    assert col.get("r1").text == "Sails Boats sail." and col.get("a.md").metadata == {
        "source": "a.md"}
    with pytest.raises(FileNotFoundError):
        col.add_files(tmp_path / "missing")
    assert len(col) == 3
    col.close()


def test_closing_twice_does_nothing(tmp_path: Path) -> None:
    col = new(tmp_path / "c")
    col.close()
    col.close()
