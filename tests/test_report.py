"""Evaluation reports: method specs, tables, plots and the `fastrag report` command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fastrag.cli import main
from fastrag.eval import Dataset, run_method
from fastrag.eval import runner as runner_module
from fastrag.eval.report import (
    MethodConfig,
    parse_method_spec,
    parse_noise_spec,
    run_report,
    write_report,
)

PNG = b"\x89PNG\r\n\x1a\n"
DOCS = {
    "d1": (
        "Boundary layers",
        "The boundary layer on a flat plate thickens downstream. "
        "Transition occurs near a Reynolds number of 500000.",
    ),
    "d2": (
        "Heat transfer",
        "Heat transfer to a blunt body at hypersonic speed was measured. "
        "Tests in the Langley tunnel used 12 models.",
    ),
    "d3": (
        "Shell buckling",
        "Buckling of thin cylindrical shells under axial load is studied. "
        "Imperfections reduce the critical load by 40 percent.",
    ),
    "d4": (
        "Flutter",
        "Flutter of a swept wing was observed in the wind tunnel. "
        "The flutter speed depends on the torsional stiffness.",
    ),
    "d5": ("東京", "東京は日本の首都であり、人口は約1400万人である。政治と経済の中心地である。"),
}
QUERIES = {
    "q1": "boundary layer transition",
    "q2": "hypersonic heat transfer",
    "q3": "buckling of shells",
    "q4": "日本の首都はどこ",
}
QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}, "q4": {"d5": 1}}


@pytest.fixture
def data() -> Dataset:
    corpus = {i: {"title": t, "text": x} for i, (t, x) in DOCS.items()}
    return Dataset("toy", corpus, dict(QUERIES), {q: dict(r) for q, r in QRELS.items()})


def test_parse_method_spec() -> None:
    assert parse_method_spec("bm25:english") == MethodConfig(
        "bm25:english", "bm25", {"analyzer": "english"}
    )
    spec = parse_method_spec(" bm25:japanese:k1=1.2:b=0:method=bm25+ ")
    assert spec.label == "bm25:japanese:k1=1.2:b=0:method=bm25+"
    assert spec.options == {"analyzer": "japanese", "k1": 1.2, "b": 0, "method": "bm25+"}
    assert parse_method_spec("bm25").options == {}
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        parse_method_spec("nope:x")
    with pytest.raises(ValueError, match="empty option"):
        parse_method_spec("bm25:k1=")


def test_parse_noise_spec() -> None:
    everything = parse_noise_spec("all")
    assert ("orthographic", "corpus") in everything and ("orthographic", "queries") in everything
    assert len(everything) == 7 and ("query", "queries") in everything
    assert parse_noise_spec("semantic, orthographic:queries,semantic") == [
        ("semantic", "corpus"),
        ("orthographic", "queries"),
    ]
    with pytest.raises(ValueError, match="unknown noise kind"):
        parse_noise_spec("prior")
    with pytest.raises(ValueError, match="goes into corpus"):
        parse_noise_spec("illegal:queries")
    with pytest.raises(ValueError, match="no noise kind"):
        parse_noise_spec(" , ")


def test_report_tables_and_plots(tmp_path: Path, data: Dataset) -> None:
    configs = [parse_method_spec("bm25:auto"), parse_method_spec("bm25:bigram")]
    messages: list[str] = []
    report = run_report(
        data,
        configs,
        noises=parse_noise_spec("all"),
        rates=(0.1, 0.3),
        seed=3,
        progress=messages.append,
    )
    assert len(report.noisy) == 2 * 7 * 2 and messages[0] == "clean: bm25:auto"
    assert all(r.clean is report.clean[label] for (label, *_), r in report.noisy.items())
    written = write_report(report, tmp_path / "out")
    names = sorted(p.name for p in written)
    assert names == [
        "ndcg10_vs_latency.png",
        "ndcg10_vs_rate.png",
        "recall100_vs_rate.png",
        "report.md",
        "results.json",
    ]
    for png in (tmp_path / "out").glob("*.png"):
        raw = png.read_bytes()
        assert raw.startswith(PNG) and len(raw) < 150_000
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    for needle in (
        "## Clean",
        "`bm25:auto`",
        "`bm25:bigram`",
        "| orthographic:queries |",
        "| counterfactual |",
        "ranked above every relevant one",
        "search ms/query",
        "![nDCG@10 against noise rate](ndcg10_vs_rate.png)",
        "Skipped: no configuration",
    ):
        assert needle in md, needle
    results = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    assert results["dataset"] == "toy" and len(results["noisy"]) == 28
    assert results["clean"]["bm25:bigram"]["options"] == {"threads": 1, "analyzer": "bigram"}
    # Same seed: the same numbers (timings aside).
    again = run_report(data, configs[:1], noises=[("semantic", "corpus")], rates=(0.3,), seed=3)
    key = ("bm25:auto", "semantic", "corpus", 0.3)
    assert again.noisy[key].noisy.metrics == report.noisy[key].noisy.metrics


def test_matryoshka_plot_when_a_method_takes_dim(
    tmp_path: Path, data: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    dims_seen: list[int] = []

    def toy_dense(dataset: Dataset, depth: int, options: dict[str, Any]) -> dict:
        dim = options.pop("dim", 256)
        dims_seen.append(dim)
        run, timings = run_method(dataset, "bm25", depth=depth, options={"analyzer": "auto"})
        options["_timings"] = timings
        keep = max(1, dim // 64)  # fewer results at small dims, so nDCG moves with dim
        return {q: dict(list(r.items())[:keep]) for q, r in run.items()}

    monkeypatch.setitem(runner_module.METHODS, "toydense", toy_dense)
    monkeypatch.setattr(runner_module, "MATRYOSHKA_METHODS", {"toydense"})
    monkeypatch.setattr("fastrag.eval.report.MATRYOSHKA_METHODS", {"toydense"})
    configs = [parse_method_spec("toydense:dim=256"), parse_method_spec("bm25")]
    report = run_report(data, configs, noises=[("query", "queries")], rates=(0.2,), dims=(64, 128))
    assert [d for d, _ in report.matryoshka["toydense:dim=256"]] == [64, 128]
    assert "bm25" not in report.matryoshka and {64, 128} <= set(dims_seen)
    write_report(report, tmp_path)
    assert (tmp_path / "ndcg10_vs_dim.png").read_bytes().startswith(PNG)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "![nDCG@10 against Matryoshka dimension](ndcg10_vs_dim.png)" in md


def test_report_rejects_bad_configurations(data: Dataset) -> None:
    with pytest.raises(ValueError, match="no method configuration"):
        run_report(data, [], noises=[("query", "queries")], rates=(0.1,))
    twice = [parse_method_spec("bm25:english")] * 2
    with pytest.raises(ValueError, match="distinct"):
        run_report(data, twice, noises=[("query", "queries")], rates=(0.1,))


def test_cli_report(tmp_path: Path, data: Dataset) -> None:
    root = tmp_path / "toy"
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for i, d in data.corpus.items():
            f.write(json.dumps({"_id": i, **d}, ensure_ascii=False) + "\n")
    with (root / "queries.jsonl").open("w", encoding="utf-8") as f:
        for i, q in data.queries.items():
            f.write(json.dumps({"_id": i, "text": q}, ensure_ascii=False) + "\n")
    (root / "qrels" / "test.tsv").write_text(
        "".join(f"{q}\t{d}\t1\n" for q, rel in data.qrels.items() for d in rel)
    )
    out = tmp_path / "report"
    args = [
        "report",
        str(root),
        "--methods",
        "bm25:english,bm25:bigram",
        "-m",
        "bm25:auto",
        "--noise",
        "orthographic,semantic",
        "--rates",
        "0.2",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "--methods bm25:english,bm25:bigram,bm25:auto --noise orthographic,semantic" in md
    assert md.count("| semantic | `bm25:") == 3 * 3  # nDCG, Recall and outranking tables
    for bad, message in (
        (["--rates", "0"], "--rates"),
        (["--methods", "bm25:x:y=1:=2"], "empty"),
        (["--noise", "prior"], "unknown noise kind"),
    ):
        res = CliRunner().invoke(main, ["report", str(root), "--out", str(out), *bad])
        assert res.exit_code != 0 and message in res.output, res.output
