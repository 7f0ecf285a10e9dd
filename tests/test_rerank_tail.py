"""Candidates below a rerank stage's depth keep real scores (issue 17, item 12): the score of
the stage that last scored them, with ``Result.scored_by`` naming it, ranked after the
reranked ones; a rerank stage that returns a wrong number of scores or NaN is refused."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fake_encoder import FakeEncoder
from fastrag.collection import Collection
from fastrag.search import Pipeline, Retriever
from fastrag.search.stages import Candidate, rescored

WORDS = ("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta")


class ByLength:
    """A rerank stage on another scale: 1000 + the passage's length."""

    def __init__(self, name: str = "rerank", bad: str = "") -> None:
        self.name, self.bad = name, bad

    def rescore(self, corpus: Any, query: str, qvec: Any, chunks: list[int],
                passages: list[str]) -> np.ndarray:
        out = np.array([1000.0 + len(p) for p in passages])
        if self.bad == "short":
            return out[:-1]
        if self.bad == "nan":
            out[-1] = math.nan
        return out


@pytest.fixture(scope="module")
def col(tmp_path_factory: pytest.TempPathFactory) -> Any:
    rng = random.Random(3)
    texts = ["\n\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
                         for _ in range(rng.randint(1, 3))) for _ in range(60)]
    col = Collection.create(Path(tmp_path_factory.mktemp("t")) / "c", encoder=FakeEncoder(),
                            chunk_chars=40)
    col.add(texts, ids=[f"d{i:02d}" for i in range(60)])
    col.commit()
    yield col
    col.close()


LEGS = [Retriever("bm25", depth=50), Retriever("dense", depth=50)]


def test_below_the_depth_the_fusion_score_stays(col: Collection) -> None:
    plain = col.search("alpha omega", k=30, method=Pipeline(LEGS, adaptive=False), explain=True)
    got = col.search("alpha omega", k=30, explain=True,
                     method=Pipeline(LEGS, rerankers=[(ByLength(), 5)], adaptive=False))
    reranked = [r for r in got if r.scored_by == "rerank"]
    rest = [r for r in got if r.scored_by != "rerank"]
    assert got == reranked + rest and 1 <= len(reranked) <= 5
    for r in reranked:
        assert r.score == 1000.0 + len(r.passage) == r.stages["rerank"].score
    fusion = {r.id: r.score for r in plain}
    assert rest and all(r.scored_by == "fusion" for r in rest)
    for r in rest:  # the real fused score, the one the pipeline without the stage gives
        assert r.score == pytest.approx(fusion[r.id], rel=1e-6)
        assert r.score == pytest.approx(r.stages["fusion"].score, rel=1e-6)
        assert "rerank" not in r.stages
    assert [r.id for r in rest] == [r.id for r in plain if r.id not in {x.id for x in reranked}][
        : len(rest)]
    # without rerank stages nothing is marked
    assert all(r.scored_by is None for r in plain)


def test_two_stages_mark_three_tiers(col: Collection) -> None:
    pipe = Pipeline(LEGS, rerankers=[(ByLength("first"), 8), (ByLength("second"), 3)],
                    adaptive=False)
    got = col.search("kappa theta", k=20, method=pipe, explain=True)
    tiers = [r.scored_by for r in got]
    assert tiers == sorted(tiers, key=["second", "first", "fusion"].index)
    assert set(tiers) == {"second", "first", "fusion"}
    for r in got:
        assert r.score == pytest.approx(r.stages[r.scored_by].score, rel=1e-6)


def test_sum_adds_only_scores_of_one_stage(col: Collection) -> None:
    pipe = Pipeline(LEGS, rerankers=[(ByLength(), 4)], aggregate="sum", adaptive=False)
    got = col.search("beta gamma delta", k=40, method=pipe)
    for r in got:
        if r.scored_by == "rerank":
            assert r.score >= 1000.0  # no fusion score (~0.03) was added to it
        else:
            assert r.score < 1.0


@pytest.mark.parametrize(("bad", "match"), [("short", "returned 3 scores for 4 candidates"),
                                            ("nan", "returned NaN for 1 of 4")])
def test_a_broken_stage_is_refused(col: Collection, bad: str, match: str) -> None:
    pipe = Pipeline(LEGS, rerankers=[(ByLength(bad=bad), 4)], adaptive=False)
    with pytest.raises(ValueError, match=f"rerank stage 'rerank' {match}"):
        col.search("alpha", k=10, method=pipe)


def test_rescored_keeps_the_tail_untouched() -> None:
    order = [Candidate(c, s, "fusion", 0) for c, s in [(7, 0.5), (3, 0.4), (9, 0.3), (1, 0.2)]]
    out = rescored(order, 2, "ce", 1, [1.0, 4.0])
    assert out == [Candidate(3, 4.0, "ce", 1), Candidate(7, 1.0, "ce", 1), *order[2:]]
    assert rescored(order, 10, "ce", 1, [1.0, 2.0, 3.0, 4.0])[0] == Candidate(1, 4.0, "ce", 1)


def test_eval_ranks_as_the_pipeline_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An evaluation run keeps the pipeline's order although a stage's scores (here all
    negative) are on another scale than the fused scores of the candidates below it."""
    import json

    import fastrag.search
    from fastrag.eval import load_beir
    from fastrag.eval.runner import run_hybrid

    rng = random.Random(5)
    (tmp_path / "qrels").mkdir()
    with (tmp_path / "corpus.jsonl").open("w") as f:
        for i in range(40):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")
    (tmp_path / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{j}", "text": w}) + "\n"
                for j, w in enumerate(["alpha beta", "omega", "kappa sigma"])))
    (tmp_path / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq0\td1\t1\nq1\td2\t1\nq2\td3\t1\n")

    class Negative(ByLength):
        def rescore(self, *args: Any) -> np.ndarray:
            return -super().rescore(*args)

    seen: list[list[Any]] = []
    search_batch = Pipeline.search_batch

    def recorded(self: Pipeline, *args: Any, **kw: Any) -> Any:
        out = search_batch(self, *args, **kw)
        seen.extend(out)
        return out

    monkeypatch.setattr(fastrag.search, "DenseRescore", lambda: Negative())
    monkeypatch.setattr(Pipeline, "search_batch", recorded)
    run = run_hybrid(load_beir(tmp_path), 20, {"model": FakeEncoder(), "rerank": "dense",
                                               "rerank_depth": 3})
    assert len(seen) == 3
    for qid, results in zip(["q0", "q1", "q2"], seen, strict=True):
        assert any(r.scored_by == "rerank" for r in results)
        assert any(r.scored_by == "fusion" and r.score > 0 for r in results)
        ranked = sorted(run[qid], key=lambda d: -run[qid][d])
        assert ranked == [r.id for r in results]
