"""Collection: documents + chunks + BM25 + dense in one folder; upsert, delete, commit,
rollback, crash safety (real SIGKILLs), metadata filters and bad input."""

from __future__ import annotations

import itertools
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fake_encoder import FakeEncoder
from fastrag.collection import Collection, CollectionError, read_info
from fastrag.text.chunking import split_passages

TESTS = Path(__file__).resolve().parent

SHORT = {
    "apple": "Apples grow on trees in the orchard near the river.",
    "bread": "Bread is baked in a hot oven every morning.",
    "comet": "A comet has a bright tail when it passes close to the sun.",
    "delta": "The river delta floods each spring and feeds the fields.",
    "ember": "An ember glows red long after the campfire dies down.",
}
LONG_ID = "long"
LONG = "\n\n".join(
    " ".join(f"Paragraph {p} sentence {s} mentions word{p}x{s} and filler text."
             for s in range(4))
    for p in range(6)
)
JA_ID = "ja"
JA = "東京は日本の首都で、多くの人が住んでいます。"


def new(path: Path, **options: Any) -> Collection:
    options.setdefault("encoder", FakeEncoder())
    return Collection.create(path, **options)


def reopen(path: Path, **options: Any) -> Collection:
    options.setdefault("encoder", FakeEncoder())
    return Collection.open(path, **options)


def bm25_ids(col: Collection, query: str, k: int = 100, **options: Any) -> list[str]:
    return [r.id for r in col.search(query, k=k, method="bm25", **options)]


def dense_ids(col: Collection, query: str, k: int = 100, **options: Any) -> list[str]:
    return [r.id for r in col.search(query, k=k, method="dense", **options)]


def chunk_rows(path: Path) -> dict[str, list[tuple[int, int, int]]]:
    """{doc: [(chunk id, start, end), ...]} read straight from the committed database."""
    db = sqlite3.connect(path / "collection.sqlite")
    try:
        out: dict[str, list[tuple[int, int, int]]] = {}
        for chunk, doc, start, end in db.execute(
            "SELECT chunk, doc, start, end FROM chunks ORDER BY doc, ord"
        ):
            out.setdefault(doc, []).append((chunk, start, end))
        return out
    finally:
        db.close()


def live_chunks(col: Collection) -> set[int]:
    return {c for rows in _chunk_rows_of(col).values() for c, _, _ in rows}


def _chunk_rows_of(col: Collection) -> dict[str, list[tuple[int, int, int]]]:
    out: dict[str, list[tuple[int, int, int]]] = {}
    for chunk, doc, start, end in col._db.execute(
        "SELECT chunk, doc, start, end FROM chunks ORDER BY doc, ord"
    ):
        out.setdefault(doc, []).append((chunk, start, end))
    return out


def index_files(path: Path) -> set[str]:
    """Every file of the folder that is not the database (or its WAL / shared memory) or the
    commit clock."""
    return {p.name for p in path.iterdir()
            if not p.name.startswith(("collection.sqlite", "collection.clock"))}


def assert_indexes_match_chunks(col: Collection) -> None:
    chunks = live_chunks(col)
    assert col.bm25 is not None
    assert set(col.bm25.ids) == chunks
    if col.dense is not None:
        assert set(col.dense.ids) == chunks


def snapshot(col: Collection, queries: list[str]) -> dict[str, Any]:
    """Everything a user can observe: documents, counts and search results."""
    docs = {d.id: (d.text, d.metadata) for d in col.documents()}
    info = col.info()
    out: dict[str, Any] = {
        "docs": docs,
        "len": len(col),
        "counts": (info["documents"], info["chunks"]),
        "bm25": {q: bm25_ids(col, q) for q in queries},
    }
    if col.dense is not None:
        out["dense"] = {q: dense_ids(col, q) for q in queries}
    return out


# ---------------------------------------------------------------------- round trip


def test_create_add_commit_open_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "col"
    col = new(path, chunk_chars=120)
    assert col.info()["generation"] == 0 and len(col) == 0
    ids = [*SHORT, LONG_ID, JA_ID]
    texts = [*SHORT.values(), LONG, JA]
    metas = [{"n": i, "kind": "short"} for i in range(len(SHORT))] + [
        {"kind": "long", "nested": {"a": [1, 2]}},
        None,
    ]
    assert col.add(texts, ids=ids, metadata=metas) == ids
    assert len(col) == 7 and "apple" in col and "nope" not in col
    assert col.info()["uncommitted_changes"] is True
    col.commit()
    info = col.info()
    assert info["generation"] == 1 and info["uncommitted_changes"] is False
    assert index_files(path) == {"bm25.1.fridx", "dense.1.frdx", "docs.1.frds"}
    col.close()

    # chunks: the long document is split into several spans that cover its text
    rows = chunk_rows(path)
    long_spans = [(s, e) for _, s, e in rows[LONG_ID]]
    assert len(long_spans) >= 4
    assert long_spans == split_passages(LONG, max_chars=120)
    assert all(0 <= s < e <= len(LONG) and e - s <= 120 for s, e in long_spans)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(long_spans))
    covered = set().union(*(range(s, e) for s, e in long_spans))
    assert all(i in covered for i, ch in enumerate(LONG) if not ch.isspace())
    for doc_id in [*SHORT, JA_ID]:
        assert len(rows[doc_id]) == 1
    n_chunks = sum(len(v) for v in rows.values())

    col = reopen(path)
    assert len(col) == 7
    assert [d.id for d in col.documents()] == ids
    for doc_id, text, meta in zip(ids, texts, metas, strict=True):
        doc = col.get(doc_id)
        assert (doc.id, doc.text, doc.metadata) == (doc_id, text, meta or {})
    with pytest.raises(KeyError):
        col.get("nope")
    info = col.info()
    assert (info["documents"], info["chunks"], info["generation"]) == (7, n_chunks, 1)
    assert info["encoder"]["fingerprint"] == FakeEncoder().fingerprint
    assert info["encoder"]["dim"] == 64 and info["encoder"]["languages"] == ["en"]
    assert info["chunk_chars"] == 120
    assert col.languages() == pytest.approx({"en": (n_chunks - 1) / n_chunks,
                                             "ja": 1 / n_chunks})
    assert read_info(path)["documents"] == 7
    assert_indexes_match_chunks(col)

    # a word from one chunk of the long document: the result's span is that chunk's
    chunk_no = 3
    s, e = long_spans[chunk_no]
    word = next(w for w in LONG[s:e].split() if w.startswith("word"))
    for method in ("bm25", "hybrid"):
        top = col.search(word, k=3, method=method)[0]
        assert top.id == LONG_ID and top.span == (s, e) and word in top.passage
    assert bm25_ids(col, "orchard") == ["apple"]
    assert dense_ids(col, "comet tail sun", k=1) == ["comet"]
    assert bm25_ids(col, "東京") == [JA_ID]

    # the next commit is generation 2, and the files of generation 1 go
    col.add(["Fresh text about volcanoes."], ids=["volcano"])
    col.commit()
    assert col.info()["generation"] == 2
    assert index_files(path) == {"bm25.2.fridx", "dense.2.frdx", "docs.2.frds"}
    col.close()
    col = reopen(path)
    assert len(col) == 8 and bm25_ids(col, "volcanoes") == ["volcano"]
    col.close()


def test_commit_without_changes_keeps_the_generation(tmp_path: Path) -> None:
    col = new(tmp_path / "c")
    col.add(list(SHORT.values()), ids=list(SHORT))
    col.commit()
    col.commit()
    assert col.info()["generation"] == 1
    assert index_files(tmp_path / "c") == {"bm25.1.fridx", "dense.1.frdx", "docs.1.frds"}
    col.close()


def test_auto_ids_never_overwrite_existing_documents(tmp_path: Path) -> None:
    col = new(tmp_path / "c")
    col.add(["first text here", "second text here", "third text here"])
    assert len(col) == 3 and len(set(d.id for d in col.documents())) == 3
    col.close()


def test_auto_ids_skip_every_existing_id(tmp_path: Path) -> None:
    col = new(tmp_path / "c")
    col.add(["alpha text", "kept document about giraffes"], ids=["a", "3"])
    new_ids = col.add(["generated one", "generated two"])  # len 2: proposes "2", "3"
    assert len(col) == 4, new_ids
    assert col.get("3").text == "kept document about giraffes"
    col.close()


def test_a_single_id_string_with_a_list_of_texts_is_refused(tmp_path: Path) -> None:
    col = new(tmp_path / "c")
    with pytest.raises((TypeError, ValueError)):
        col.add(["first text", "second text"], ids="ab")
    assert len(col) == 0
    col.close()


# ---------------------------------------------------------------------- upsert / delete


def test_upsert_replaces_text_metadata_and_chunks(tmp_path: Path) -> None:
    path = tmp_path / "c"
    col = new(path, chunk_chars=60)
    old = "Zebras cross the savanna. " * 8  # several chunks
    col.add([old, *SHORT.values()], ids=["z", *SHORT], metadata=[{"v": 1}] + [{}] * 5)
    col.commit()
    old_chunks = {c for c, *_ in _chunk_rows_of(col)["z"]}
    assert len(old_chunks) > 1
    assert bm25_ids(col, "zebras") == ["z"]

    col.add("Giraffes have long necks.", ids="z", metadata={"v": 2})
    for c in (col, None):
        if c is None:  # again after commit + reopen
            col.commit()
            col.close()
            col = reopen(path)
        assert len(col) == 6
        doc = col.get("z")
        assert (doc.text, doc.metadata) == ("Giraffes have long necks.", {"v": 2})
        assert bm25_ids(col, "zebras savanna") == []
        assert bm25_ids(col, "giraffes") == ["z"]
        assert col.bm25 is not None and col.dense is not None
        assert not old_chunks & set(col.bm25.ids)
        assert not old_chunks & set(col.dense.ids)
        hits = col.dense.search(FakeEncoder().encode_queries(["zebras savanna"]), k=50)
        assert not old_chunks & {int(h.id) for h in hits[0]}
        dense = col.search("zebras cross the savanna", k=50, method="dense")
        assert [r.id for r in dense].count("z") == 1
        assert next(r for r in dense if r.id == "z").passage == "Giraffes have long necks."
        assert_indexes_match_chunks(col)
        assert col.info()["chunks"] == 6
    col.close()


def test_languages_follow_deletes_and_upserts(tmp_path: Path) -> None:
    col = new(tmp_path / "c")
    col.add([JA, "東京タワーは赤いです。", *SHORT.values()], ids=["j1", "j2", *SHORT])
    assert col.languages() == pytest.approx({"en": 5 / 7, "ja": 2 / 7})
    col.delete("j1")
    col.add("Now an English text about towers.", ids="j2")  # upsert ja -> en
    assert col.languages() == pytest.approx({"en": 1.0})
    col.close()


def test_delete_removes_from_every_index(tmp_path: Path) -> None:
    path = tmp_path / "c"
    col = new(path, chunk_chars=60)
    col.add([LONG, *SHORT.values()], ids=[LONG_ID, *SHORT])
    col.commit()
    long_chunks = {c for c, *_ in _chunk_rows_of(col)[LONG_ID]}
    assert bm25_ids(col, "word2x1")[0] == LONG_ID

    assert col.delete(LONG_ID) == 1
    with pytest.raises(KeyError, match="nope"):
        col.delete(["comet", "nope"])  # nothing deleted: unknown ids raise first
    assert "comet" in col
    assert col.delete(["nope", "comet"], missing="ignore") == 1
    assert col.delete("nope", missing="ignore") == 0
    for c in (col, None):
        if c is None:
            col.commit()
            col.close()
            col = reopen(path)
        assert len(col) == 4 and LONG_ID not in col and "comet" not in col
        assert col.info()["documents"] == 4 and col.info()["chunks"] == 4
        assert bm25_ids(col, "word2x1 paragraph sentence filler") == []
        assert bm25_ids(col, "comet tail") == []
        for q in ("paragraph sentence mentions filler text", "comet tail sun", "river"):
            found = dense_ids(col, q)
            assert sorted(found) == sorted(["apple", "bread", "delta", "ember"])
        assert col.bm25 is not None and col.dense is not None
        assert not long_chunks & (set(col.bm25.ids) | set(col.dense.ids))
        assert_indexes_match_chunks(col)
        with pytest.raises(KeyError):
            col.get(LONG_ID)
    col.close()


def test_delete_checks_missing_argument(tmp_path: Path) -> None:
    col = new(tmp_path / "c")
    col.add(["some text"], ids=["a"])
    with pytest.raises(ValueError, match="missing"):
        col.delete("nope", missing="skip")
    col.close()


# ---------------------------------------------------------------------- commit / rollback

QUERIES = ["river orchard", "oven bread", "comet", "zebra savanna", "volcano lava"]


def test_uncommitted_changes_are_lost_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "c"
    col = new(path)
    col.add(list(SHORT.values()), ids=list(SHORT), metadata=[{"i": i} for i in range(5)])
    col.commit()
    before = snapshot(col, QUERIES)
    col.add(["Zebras roam the savanna."], ids=["zebra"])
    col.add("Changed bread text about volcano lava.", ids="bread", metadata={"x": 1})
    col.delete("comet")
    assert snapshot(col, QUERIES) != before
    col.close()
    col = reopen(path)
    assert snapshot(col, QUERIES) == before
    assert col.info()["generation"] == 1
    col.close()


def test_rollback_restores_the_committed_state(tmp_path: Path) -> None:
    path = tmp_path / "c"
    col = new(path)
    col.add(list(SHORT.values()), ids=list(SHORT))
    col.commit()
    before = snapshot(col, QUERIES)
    col.add(["Zebras roam the savanna."], ids=["zebra"])
    col.add("Changed bread text about volcano lava.", ids="bread")
    col.delete("comet")
    assert bm25_ids(col, "zebra savanna") == ["zebra"]
    col.rollback()
    assert snapshot(col, QUERIES) == before
    assert col.info()["uncommitted_changes"] is False
    assert_indexes_match_chunks(col)
    # the collection keeps working after a rollback
    col.add(["Lava flows from the volcano."], ids=["lava"])
    col.commit()
    assert col.info()["generation"] == 2
    col.close()
    col = reopen(path)
    assert len(col) == 6 and bm25_ids(col, "lava") == ["lava"]
    assert col.get("bread").text == SHORT["bread"]
    col.close()


def test_rollback_of_a_never_committed_collection(tmp_path: Path) -> None:
    col = new(tmp_path / "c")
    col.add(list(SHORT.values()), ids=list(SHORT))
    col.rollback()
    assert len(col) == 0 and col.search("river", k=5) == []
    col.close()


def test_with_block_commits_or_rolls_back(tmp_path: Path) -> None:
    path = tmp_path / "c"
    with new(path) as col:
        col.add(list(SHORT.values()), ids=list(SHORT))
    col = reopen(path)
    assert len(col) == 5 and col.info()["generation"] == 1
    before = snapshot(col, QUERIES)
    with pytest.raises(RuntimeError, match="boom"), col:
        col.add(["Zebras roam the savanna."], ids=["zebra"])
        col.delete("apple")
        raise RuntimeError("boom")
    col = reopen(path)
    assert snapshot(col, QUERIES) == before
    assert col.info()["generation"] == 1
    assert index_files(path) == {"bm25.1.fridx", "dense.1.frdx", "docs.1.frds"}
    col.close()


# ---------------------------------------------------------------------- crash safety

A = {"a1": "Alpha apples are red.", "a2": "Alpha bananas are yellow.",
     "a3": "Alpha cherries are dark."}
B = {"b1": "Beta zebras are striped.", "b2": "Beta giraffes are tall."}

CRASH_SCRIPT = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from fake_encoder import FakeEncoder
import fastrag as fc
from fastrag.collection import Collection

path, marker, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
A, B = {A!r}, {B!r}

def hang():
    marker.write_text("ready")
    time.sleep(60)
    os._exit(3)  # never reached when the parent kills us

col = Collection.create(path, encoder=FakeEncoder(), chunk_chars=200)
col.add(list(A.values()), ids=list(A), metadata=[{{"set": "A"}}] * len(A))
col.commit()

def change():
    col.add(list(B.values()), ids=list(B), metadata=[{{"set": "B"}}] * len(B))
    col.add("Alpha apples changed to green.", ids="a1", metadata={{"set": "B"}})
    col.delete("a3")

if mode == "add":
    change()
    hang()
elif mode == "between_index_files":
    def save(self, p):
        hang()
    fc.DenseIndex.save = save
    change()
    col.commit()
elif mode == "mid_write":
    def save(self, p):
        p = Path(p)
        # what the native writer leaves while it writes: <name>.tmp-<pid>-<n>
        (p.parent / (p.name + ".tmp-%d-1" % os.getpid())).write_bytes(b"FRIDX" + bytes(100))
        hang()
    fc.DenseIndex.save = save
    change()
    col.commit()
elif mode == "before_sqlite_commit":
    original = fc.DenseIndex.save
    def save(self, p):
        original(self, p)
        hang()
    fc.DenseIndex.save = save
    change()
    col.commit()
elif mode == "after_sqlite_commit":
    def remove_stale(self):
        hang()
    change()  # (the first write clears leftovers through _remove_stale too)
    fc.Collection._remove_stale = remove_stale
    col.commit()
else:
    raise SystemExit("unknown mode " + mode)
"""

STATE_A = {k: (v, {"set": "A"}) for k, v in A.items()}
STATE_AB = {
    "a1": ("Alpha apples changed to green.", {"set": "B"}),
    "a2": (A["a2"], {"set": "A"}),
    **{k: (v, {"set": "B"}) for k, v in B.items()},
}


def run_and_kill(tmp_path: Path, mode: str) -> Path:
    """Runs the crash script in `mode` and SIGKILLs it once it says it is ready."""
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT.format(tests=str(TESTS), A=A, B=B))
    path, marker = tmp_path / "col", tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), str(marker), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"crash script ended with {proc.returncode}: {err.decode()}")
            if time.monotonic() > deadline:
                pytest.fail("crash script never got ready")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    return path


def check_state(path: Path, state: dict[str, tuple[str, dict[str, Any]]], gen: int) -> None:
    col = reopen(path)
    try:
        assert {d.id: (d.text, d.metadata) for d in col.documents()} == state
        info = col.info()
        assert (info["documents"], info["chunks"], info["generation"]) == (
            len(state), len(state), gen)
        assert_indexes_match_chunks(col)
        for word in ("alpha", "apples", "cherries", "green", "beta", "zebras", "giraffes"):
            want = sorted(d for d, (t, _) in state.items() if word in t.lower())
            assert sorted(bm25_ids(col, word)) == want, word
        assert sorted(dense_ids(col, "beta zebras")) == sorted(state)
        assert sorted(r.id for r in col.search("alpha", k=10)) == sorted(state)
        # a reader never deletes: what the killed writer left stays until the next write
        assert {f"bm25.{gen}.fridx", f"dense.{gen}.frdx", f"docs.{gen}.frds"} <= index_files(path)
        # and the collection keeps working; its first write clears the leftovers
        col.add(["Gamma text about lions."], ids=["g"])
        assert index_files(path) == {f"bm25.{gen}.fridx", f"dense.{gen}.frdx", f"docs.{gen}.frds"}
        assert not [p for p in path.iterdir() if ".tmp-" in p.name]
        col.commit()
        assert index_files(path) == {f"bm25.{gen + 1}.fridx", f"dense.{gen + 1}.frdx",
                                     f"docs.{gen + 1}.frds"}
    finally:
        col.close()
    col = reopen(path)
    assert len(col) == len(state) + 1 and bm25_ids(col, "lions") == ["g"]
    col.close()


@pytest.mark.parametrize("mode", ["add", "between_index_files", "before_sqlite_commit"])
def test_kill_before_the_commit_point_leaves_the_old_state(tmp_path: Path, mode: str) -> None:
    path = run_and_kill(tmp_path, mode)
    if mode == "before_sqlite_commit":  # the new generation's files were written
        assert {"bm25.2.fridx", "dense.2.frdx"} <= index_files(path)
    check_state(path, STATE_A, 1)


def test_kill_while_an_index_file_is_written_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = run_and_kill(tmp_path, "mid_write")
    check_state(path, STATE_A, 1)


def test_kill_after_the_commit_point_keeps_the_new_state(tmp_path: Path) -> None:
    path = run_and_kill(tmp_path, "after_sqlite_commit")
    assert {"bm25.1.fridx", "dense.1.frdx", "bm25.2.fridx", "dense.2.frdx"} <= index_files(path)
    check_state(path, STATE_AB, 2)


def test_open_during_a_commit_does_not_delete_the_writers_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fastrag as fc

    path = tmp_path / "c"
    col = new(path)
    col.add(list(A.values()), ids=list(A))
    col.commit()
    col.add(list(B.values()), ids=list(B))
    original = fc.DenseIndex.save

    def save(self: Any, p: Any) -> None:
        original(self, p)
        reader = reopen(path)  # e.g. `fastrag search` in another process, mid-commit
        assert len(reader) == 3
        reader.close()

    monkeypatch.setattr(fc.DenseIndex, "save", save)
    col.commit()
    col.close()
    monkeypatch.undo()
    col = reopen(path)
    assert len(col) == 5 and sorted(bm25_ids(col, "beta")) == ["b1", "b2"]
    col.close()


# ---------------------------------------------------------------------- filters

LANGS = ["en", "ja", "de"]
KINDS = ["pdf", "html", "txt"]


def _metadata(rng: random.Random, i: int) -> dict[str, Any]:
    meta: dict[str, Any] = {"lang": rng.choice(LANGS), "tag": rng.choice("abcd")}
    if rng.random() < 0.8:
        meta["year"] = rng.randint(1990, 2020)
    if rng.random() < 0.7:
        meta["score"] = round(rng.uniform(0, 1), 3)
    if rng.random() < 0.7:
        meta["src"] = {"kind": rng.choice(KINDS), "pages": rng.randint(1, 50)}
    if i % 7 == 0:
        meta["flag"] = True
    return meta


def _get(meta: dict[str, Any], name: str) -> Any:
    value: Any = meta
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


_MISSING = object()


def _match(meta: dict[str, Any], spec: dict[str, Any]) -> bool:
    for name, cond in spec.items():
        v = _get(meta, name)
        ops = cond if isinstance(cond, dict) else {"$eq": cond}
        for op, want in ops.items():
            if v is _MISSING:
                return False
            number = isinstance(v, (int, float)) and not isinstance(v, bool)
            if op == "$eq" and v != want:
                return False
            if op == "$in" and v not in want:
                return False
            if op in ("$gt", "$gte", "$lt", "$lte"):
                if not number:
                    return False
                ok = {"$gt": v > want, "$gte": v >= want, "$lt": v < want,
                      "$lte": v <= want}[op]
                if not ok:
                    return False
    return True


FILTERS: list[dict[str, Any]] = [
    {"lang": "en"},
    {"lang": {"$in": ["ja", "de"]}},
    {"year": {"$gte": 2000, "$lt": 2010}},
    {"year": {"$gt": 2015}},
    {"year": {"$lte": 1995}},
    {"score": {"$gte": 0.25, "$lte": 0.75}},
    {"src.kind": "pdf"},
    {"src.pages": {"$lt": 10}},
    {"lang": "en", "year": {"$gte": 2005}, "src.kind": {"$in": ["pdf", "html"]}},
    {"tag": {"$in": ["a"]}, "flag": True},
    {"year": 2000},
]


@pytest.fixture(scope="module")
def filtered(tmp_path_factory: pytest.TempPathFactory) -> Any:
    rng = random.Random(7)
    n = 80
    texts, metas = [], []
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]
    for i in range(n):
        body = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
        texts.append(f"common {body}")
        metas.append(_metadata(rng, i))
    ids = [f"d{i:02d}" for i in range(n)]
    col = new(tmp_path_factory.mktemp("filters") / "c")
    col.add(texts, ids=ids, metadata=metas)
    col.commit()
    yield col, dict(zip(ids, metas, strict=True))
    col.close()


@pytest.mark.parametrize("spec", FILTERS, ids=[str(f) for f in FILTERS])
def test_filter_returns_exactly_the_matching_documents(filtered: Any, spec: dict) -> None:
    col, metas = filtered
    want = sorted(d for d, m in metas.items() if _match(m, spec))
    assert want, "each filter should match something"
    assert len(want) < len(metas)
    assert sorted(bm25_ids(col, "common", filter=spec)) == want
    assert sorted(dense_ids(col, "common alpha", filter=spec)) == want
    assert sorted(r.id for r in col.search("common", k=100, filter=spec)) == want
    allowed = col.allowed_chunks(spec)
    assert sorted(h.doc for h in col.chunks_of(allowed).values()) == want


def test_filter_matching_nothing_gives_no_results(filtered: Any) -> None:
    col, _ = filtered
    assert col.search("common", k=10, filter={"lang": "fr"}) == []
    assert col.search("common", k=10, filter={"year": {"$gt": 2100}}) == []
    assert col.search("common", k=10, method="bm25", filter={"lang": "en", "year": 1}) == []


def test_filtered_bm25_top_k_is_the_unfiltered_list_restricted(filtered: Any) -> None:
    col, metas = filtered
    for spec in FILTERS:
        for query in ("alpha beta", "omega", "kappa theta sigma"):
            full = col.search(query, k=100, method="bm25")
            want = [(r.id, r.score) for r in full if _match(metas[r.id], spec)][:5]
            got = [(r.id, r.score) for r in col.search(query, k=5, method="bm25", filter=spec)]
            assert [g[0] for g in got] == [w[0] for w in want], (spec, query)
            np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], rtol=1e-6)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"nosuchfield": "x"}, "no document has"),
        ({"src.nosuch": 1}, "no document has"),
        ({"lang": {"$regex": "e.*"}}, "unknown operator"),
        ({"lang": {"$in": []}}, r"\$in"),
        ({"lang": {"$in": "en"}}, r"\$in"),
        ({"a;DROP TABLE documents": 1}, "field"),
        ({"year') OR 1=1 --": 1}, "field"),
        ({"lang": {}}, "empty"),
        ({"score": float("nan")}, "not a JSON number"),
        ({"score": {"$gt": float("inf")}}, "not a JSON number"),
        ({"year": {"$in": [2000, float("nan")]}}, "not a JSON number"),
        ({"lang": ["en"]}, "filter values"),
        ({"lang": {"$ne": None}}, "null"),
        ({}, "non-empty"),
    ],
)
def test_bad_filters_raise(filtered: Any, spec: Any, match: str) -> None:
    col, _ = filtered
    with pytest.raises(ValueError, match=match):
        col.search("common", k=5, filter=spec)
    assert len(col) == 80  # nothing happened to the data


def test_range_filters_do_not_match_strings(tmp_path: Path) -> None:
    col = new(tmp_path / "c")
    col.add(["apple pie", "apple tart", "apple cake"], ids=["s", "n", "m"],
            metadata=[{"year": "1990"}, {"year": 2005}, {"year": 1990}])
    assert sorted(bm25_ids(col, "apple", filter={"year": {"$lt": 2000}})) == ["m"]
    assert sorted(bm25_ids(col, "apple", filter={"year": {"$gte": 2000}})) == ["n"]
    col.close()


# ---------------------------------------------------------------------- bad input


def test_open_refuses_what_is_not_a_collection(tmp_path: Path) -> None:
    with pytest.raises(CollectionError, match="not a fastrag collection"):
        Collection.open(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CollectionError, match="not a fastrag collection"):
        Collection.open(empty)
    with pytest.raises(CollectionError):
        read_info(empty)
    other = tmp_path / "other"
    other.mkdir()
    db = sqlite3.connect(other / "collection.sqlite")
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(CollectionError):
        Collection.open(other)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    db = sqlite3.connect(foreign / "collection.sqlite")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('settings', '{\"format\": \"other\"}')")
    db.commit()
    db.close()
    with pytest.raises(CollectionError, match="not a fastrag collection"):
        Collection.open(foreign)


def test_open_refuses_a_garbage_database(tmp_path: Path) -> None:
    folder = tmp_path / "garbage"
    folder.mkdir()
    (folder / "collection.sqlite").write_bytes(bytes(random.Random(1).randbytes(4096)))
    with pytest.raises(CollectionError):
        Collection.open(folder, encoder=FakeEncoder())
    with pytest.raises(CollectionError):
        read_info(folder)


def test_create_refuses_an_existing_collection(tmp_path: Path) -> None:
    path = tmp_path / "c"
    col = new(path)
    col.add(["some text"], ids=["a"])
    col.commit()
    col.close()
    with pytest.raises(CollectionError, match="already holds"):
        new(path)
    with pytest.raises(CollectionError, match="already holds"):
        Collection.create(path, encoder=None)
    col = reopen(path)
    assert len(col) == 1
    col.close()


def test_create_checks_its_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_chars"):
        new(tmp_path / "c", chunk_chars=4)
    with pytest.raises(TypeError, match="encoder"):
        Collection.create(tmp_path / "d", encoder=42)  # type: ignore[arg-type]
    assert not (tmp_path / "c" / "collection.sqlite").exists()


def test_open_with_another_encoder_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c"
    col = new(path)
    col.add(list(SHORT.values()), ids=list(SHORT))
    col.commit()
    col.close()
    with pytest.raises(CollectionError, match="not comparable"):
        Collection.open(path, encoder=FakeEncoder(salt="other"))
    with pytest.raises(CollectionError, match="not comparable"):
        Collection.open(path, encoder=FakeEncoder(dim=32))
    with pytest.raises(CollectionError, match="encoder"):
        Collection.open(path)  # built with an object: no model name to load
    col = reopen(path)
    assert len(col) == 5
    col.close()


BAD_ADDS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"texts": ["good text", ""], "ids": ["x", "y"]}, ValueError, "empty"),
    ({"texts": ["good text", "   \n "], "ids": ["x", "y"]}, ValueError, "empty"),
    ({"texts": ["good text", b"caf\xe9 latte"], "ids": ["x", "y"]}, ValueError, "UTF-8"),
    ({"texts": ["good text", "bad \udcff surrogate"], "ids": ["x", "y"]}, ValueError,
     "Unicode"),
    ({"texts": ["good text", 42], "ids": ["x", "y"]}, TypeError, "str"),
    ({"texts": ["one text", "two text"], "ids": ["x"]}, ValueError, "ids"),
    ({"texts": ["one text", "two text"], "ids": ["x", "x"]}, ValueError, "repeat"),
    ({"texts": ["one text", "two text"], "ids": ["x", "y"],
      "metadata": [{"a": 1}, {"tags": {"s", "t"}}]}, ValueError, "JSON"),
    ({"texts": ["one text", "two text"], "ids": ["x", "y"],
      "metadata": [{"a": float("nan")}, {}]}, ValueError, "JSON"),
    ({"texts": ["one text", "two text"], "ids": ["x", "y"],
      "metadata": [{"a": 1}]}, ValueError, "metadata"),
    ({"texts": ["one text", "two text"], "ids": ["x", "y"],
      "metadata": [{"a": 1}, "not a dict"]}, TypeError, "metadata"),
    # replacing an existing document with bad input changes it neither
    ({"texts": ["apple replacement", ""], "ids": ["apple", "y"]}, ValueError, "empty"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), BAD_ADDS,
                         ids=[str(i) for i in range(len(BAD_ADDS))])
def test_bad_add_changes_nothing(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    path = tmp_path / "c"
    col = new(path)
    col.add(list(SHORT.values()), ids=list(SHORT), metadata=[{"i": i} for i in range(5)])
    col.commit()
    queries = [*QUERIES, "good text", "one two", "apple replacement"]
    before = snapshot(col, queries)
    with pytest.raises(error, match=match):
        col.add(kwargs["texts"], ids=kwargs["ids"], metadata=kwargs.get("metadata"))
    assert snapshot(col, queries) == before
    assert col.info()["uncommitted_changes"] is False
    col.commit()
    col.close()
    col = reopen(path)
    assert snapshot(col, queries) == before
    assert col.info()["generation"] == 1
    col.close()


def test_precomputed_vectors(tmp_path: Path) -> None:
    path = tmp_path / "c"
    enc = FakeEncoder()
    col = new(path, chunk_chars=60)
    texts = list(SHORT.values())
    col.add(texts, ids=list(SHORT), vectors=enc.encode_documents(texts))
    col.commit()
    assert dense_ids(col, "comet tail sun", k=1) == ["comet"]
    before = snapshot(col, QUERIES)

    bad = enc.encode_documents(["new one", "new two"])
    bad[1, 3] = np.nan
    with pytest.raises(ValueError):
        col.add(["new one", "new two"], ids=["n1", "n2"], vectors=bad)
    assert snapshot(col, QUERIES) == before
    with pytest.raises(ValueError, match="one chunk"):
        col.add(["short text", "Long text. " * 20], ids=["n1", "n2"],
                vectors=enc.encode_documents(["short text", "long text"]))
    assert snapshot(col, QUERIES) == before
    with pytest.raises(ValueError, match="vectors"):
        col.add(["short text", "other text"], ids=["n1", "n2"],
                vectors=enc.encode_documents(["short text"]))
    with pytest.raises(ValueError):
        col.add(["short text"], ids=["n1"], vectors=np.zeros((1, 32), np.float32))
    with pytest.raises(ValueError):
        col.add(["short text"], ids=["n1"], vectors=np.zeros((1, 64), np.float32))
    assert snapshot(col, QUERIES) == before
    col.commit()
    col.close()
    col = reopen(path)
    assert snapshot(col, QUERIES) == before
    col.close()


# ---------------------------------------------------------------------- BM25 only


def test_bm25_only_collection(tmp_path: Path) -> None:
    path = tmp_path / "c"
    col = Collection.create(path, encoder=None)
    assert col.dense is None and col.encoder is None
    col.add(list(SHORT.values()), ids=list(SHORT))
    col.commit()
    assert index_files(path) == {"bm25.1.fridx", "docs.1.frds"}
    col.close()
    col = Collection.open(path)
    assert col.info()["encoder"] is None and col.dense is None
    for q in QUERIES:
        hybrid = [(r.id, r.score) for r in col.search(q, k=5, method="hybrid")]
        assert hybrid == [(r.id, r.score) for r in col.search(q, k=5, method="bm25")]
        assert hybrid == [(r.id, r.score) for r in col.search(q, k=5)]
    assert [r.id for r in col.search("orchard river")][:1] == ["apple"]
    with pytest.raises(ValueError, match="encoder"):
        col.search("river", method="dense")
    with pytest.raises(ValueError, match="encoder"):
        col.add(["text"], ids=["t"], vectors=np.ones((1, 64), np.float32))
    with pytest.raises(ValueError, match="unknown method"):
        col.search("river", method="sparse")
    col.close()
