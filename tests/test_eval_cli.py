"""The evaluation harness (BEIR loading, ranx metrics) and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fastrag.cli import main
from fastrag.eval import evaluate, evaluate_method, load_beir

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_beir(root: Path) -> Path:
    docs = [
        ("d1", "Boundary layers", "the boundary layer on a flat plate in supersonic flow"),
        ("d2", "Heat transfer", "heat transfer to a blunt body at hypersonic speed"),
        ("d3", "Buckling", "buckling of thin cylindrical shells under axial load"),
        ("d4", "東京", "東京は日本の首都です。"),
    ]
    queries = [
        ("q1", "supersonic boundary layer"),
        ("q2", "cylinder buckling"),
        ("q3", "日本の首都はどこ"),
        ("q4", "unjudged query"),
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for i, t, x in docs:
            f.write(json.dumps({"_id": i, "title": t, "text": x}, ensure_ascii=False) + "\n")
    with (root / "queries.jsonl").open("w", encoding="utf-8") as f:
        for i, x in queries:
            f.write(json.dumps({"_id": i, "text": x}, ensure_ascii=False) + "\n")
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td3\t1\nq3\td4\t1\nq2\td2\t0\n"
    )
    return root


def test_load_beir(tmp_path: Path) -> None:
    data = load_beir(write_beir(tmp_path / "toy"))
    assert data.name == "toy" and len(data.corpus) == 4 and len(data.queries) == 4
    assert data.qrels == {"q1": {"d1": 2}, "q2": {"d3": 1}, "q3": {"d4": 1}}  # zero grades dropped
    ids, texts = data.documents()
    assert ids[0] == "d1" and texts[0].startswith("Boundary layers the boundary")
    assert data.judged_queries()[0] == ["q1", "q2", "q3"]


def test_load_beir_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_beir(tmp_path / "missing")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "corpus.jsonl").write_text("")
    with pytest.raises(FileNotFoundError, match=r"queries\.jsonl"):
        load_beir(tmp_path / "half")
    root = write_beir(tmp_path / "bad")
    (root / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n{broken\n')
    with pytest.raises(ValueError, match=r"corpus\.jsonl:2"):
        load_beir(root)


@pytest.mark.parametrize("row", ['["d2", "text"]', '"d2"', '{"text": "no id"}'])
def test_load_beir_refuses_rows_that_are_not_objects_with_an_id(tmp_path: Path, row: str) -> None:
    root = write_beir(tmp_path / "bad")
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "ok"}\n' + row + "\n")
    with pytest.raises(ValueError, match=r'queries\.jsonl:2: expected a JSON object with an "_id"'):
        load_beir(root)


def test_metrics_use_ranx_semantics() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    perfect = evaluate({"q1": {"a": 2.0, "x": 1.0}, "q2": {"b": 1.0}}, qrels)
    assert perfect == pytest.approx({"ndcg@10": 1.0, "recall@100": 1.0, "mrr@10": 1.0})
    # q2 has no results: it counts as zero, the mean halves.
    half = evaluate({"q1": {"x": 2.0, "a": 1.0}}, qrels, ["mrr@10", "recall@100"])
    assert half == pytest.approx({"mrr@10": 0.25, "recall@100": 0.5})


def test_evaluate_method_bm25(tmp_path: Path) -> None:
    data = load_beir(write_beir(tmp_path / "toy"))
    result = evaluate_method(data, "bm25", options={"analyzer": "auto"})
    assert result.queries == 3
    assert result.metrics["mrr@10"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown method"):
        evaluate_method(data, "nope")


def test_cli_eval_json(tmp_path: Path) -> None:
    root = write_beir(tmp_path / "toy")
    out = CliRunner().invoke(main, ["eval", str(root), "--method", "bm25", "--json"])
    assert out.exit_code == 0, out.output
    row = json.loads(out.output)
    assert {"method", "queries", "ndcg@10", "recall@100", "mrr@10"} <= set(row)
    assert row["method"] == "bm25" and row["queries"] == 3 and row["mrr@10"] == 1.0
    bad = CliRunner().invoke(main, ["eval", str(root), "--method", "nope"])
    assert bad.exit_code != 0 and "unknown method" in bad.output


def test_cli_index_and_search(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text("Block-max MaxScore skips blocks of postings.", encoding="utf-8")
    (docs / "sub" / "b.md").write_text("# Sudachi\n日本語の形態素解析です。", encoding="utf-8")
    (docs / "c.jsonl").write_text('{"_id": "j1", "title": "HNSW", "text": "graph search"}\n')
    (docs / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (docs / "binary.txt").write_bytes(b"abc\x00\x01\x02")
    col = tmp_path / "col"
    runner = CliRunner()
    out = runner.invoke(main, ["index", str(docs), "--collection", str(col)])
    assert out.exit_code == 0, out.output
    assert "indexed 3 documents" in out.output
    assert "binary.txt: binary content" in out.output
    assert "skipped 1 files of other types" in out.output and "image.png" not in out.output
    verbose = runner.invoke(main, ["index", str(docs), "--collection", str(col), "--verbose"])
    assert verbose.exit_code == 0 and "image.png: not a .txt" in verbose.output
    out = runner.invoke(main, ["search", str(col), "maxscore postings", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output.splitlines()[0])["id"] == "a.txt"
    out = runner.invoke(main, ["search", str(col), "形態素解析"])
    assert "sub/b.md" in out.output
    # the English model's leg sits a Japanese query out: one note on stderr, no warning
    assert out.stderr.count("note: the dense leg was left out: its model knows en, not the "
                            "query's language (ja)") == 1, out.stderr
    assert "UserWarning" not in out.stderr
    out = runner.invoke(main, ["search", str(tmp_path / "nowhere"), "x"])
    assert out.exit_code != 0 and "not a fastrag collection" in out.output


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not present (dev/CI only)")
def test_cranfield_quality() -> None:
    """BM25 on cranfield stays at the measured level (bm25s: 0.373 / 0.738)."""
    result = evaluate_method(
        load_beir(SHARED / "cranfield"), "bm25", options={"analyzer": "english"}
    )
    assert result.queries == 225
    assert result.metrics["ndcg@10"] == pytest.approx(0.381, abs=0.005)
    assert result.metrics["recall@100"] == pytest.approx(0.753, abs=0.005)
