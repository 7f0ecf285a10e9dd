"""Fusion options end to end: ``fusion_options={"k": ..., "weights": ...}`` in a Pipeline reach
the native executor and the stage-by-stage Python path identically, and every method's options
are checked with an error that names the option (issue 17, item 8)."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fake_encoder import FakeEncoder
from fastrag.collection import Collection
from fastrag.search import Pipeline, Retriever, native
from fastrag.search.fusion import OPTIONS, check_options, fuse

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
         "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma")
QUERIES = ["alpha beta", "omicron", "kappa theta sigma", "pi rho mu", "delta"]
LEGS = [("a", 3.0), ("b", 2.0), ("c", 1.0)], [("c", 0.9), ("d", 0.5)]


@pytest.fixture(scope="module")
def col(tmp_path_factory: pytest.TempPathFactory) -> Any:
    rng = random.Random(17)
    texts = ["\n\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10)))
                         for _ in range(rng.randint(1, 4))) for _ in range(150)]
    col = Collection.create(Path(tmp_path_factory.mktemp("f")) / "c", encoder=FakeEncoder(),
                            chunk_chars=50)
    col.add(texts, ids=[f"d{i:03d}" for i in range(150)])
    col.commit()
    yield col
    col.close()


def run_both(col: Collection, pipe: Pipeline, monkeypatch: pytest.MonkeyPatch,
             k: int = 10) -> tuple[list[list[Any]], list[list[Any]]]:
    """Every query through the native executor (checked to be used), then the Python path."""
    calls: list[int] = []
    run = native.run
    with monkeypatch.context() as m:
        m.setattr(native, "run", lambda *a, **kw: calls.append(1) or run(*a, **kw))
        got = [col.search(q, k=k, method=pipe, explain=True) for q in QUERIES]
    assert len(calls) == len(QUERIES), "the options should not push the query off the executor"
    with monkeypatch.context() as m:
        m.setattr(native, "supported", lambda *a: False)
        want = [col.search(q, k=k, method=pipe, explain=True) for q in QUERIES]
    return got, want


def assert_same(got: list[list[Any]], want: list[list[Any]]) -> None:
    for g, w in zip(got, want, strict=True):
        assert [r.id for r in g] == [r.id for r in w]
        np.testing.assert_allclose([r.score for r in g], [r.score for r in w], rtol=1e-5)
        for a, b in zip(g, w, strict=True):
            assert {n: s.rank for n, s in a.stages.items()} == {
                n: s.rank for n, s in b.stages.items()}


def scores(results: list[list[Any]]) -> list[list[tuple[str, float]]]:
    return [[(r.id, round(r.score, 6)) for r in rs] for rs in results]


@pytest.mark.parametrize("fusion", ["rrf", "minmax", "zscore", "dbsf"])
def test_weights_reach_native_and_python_alike(col: Collection, monkeypatch: pytest.MonkeyPatch,
                                               fusion: str) -> None:
    legs = [Retriever("bm25", depth=30), Retriever("dense", depth=30)]
    pipe = Pipeline(legs, fusion=fusion, fusion_options={"weights": [3.0, 0.5]}, adaptive=False)
    got, want = run_both(col, pipe, monkeypatch)
    assert_same(got, want)
    # the same as weights on the retrievers, and not the same as equal weights
    on_legs = Pipeline([Retriever("bm25", depth=30, weight=3.0),
                        Retriever("dense", depth=30, weight=0.5)], fusion=fusion, adaptive=False)
    assert scores(got) == scores([col.search(q, k=10, method=on_legs, explain=True)
                                  for q in QUERIES])
    equal = Pipeline(legs, fusion=fusion, adaptive=False)
    assert scores(got) != scores([col.search(q, k=10, method=equal) for q in QUERIES])


def test_rrf_k_and_weights_together(col: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    legs = [Retriever("bm25", depth=40), Retriever("dense", depth=40)]
    pipe = Pipeline(legs, fusion_options={"k": 2, "weights": (1, 2)}, adaptive=False)
    got, want = run_both(col, pipe, monkeypatch)
    assert_same(got, want)
    for results in got:  # the fused score of the best chunk: sum of w / (k + rank)
        for r in results:
            ranks = {n: s.rank for n, s in r.stages.items()}
            expect = sum(w / (2 + ranks[n]) for n, w in (("bm25", 1), ("dense", 2)) if n in ranks)
            assert r.stages["fusion"].score == pytest.approx(expect, rel=1e-6)
    default_k = Pipeline(legs, fusion_options={"weights": (1, 2)}, adaptive=False)
    assert scores(got) != scores([col.search(q, k=10, method=default_k) for q in QUERIES])


def test_a_zero_weight_leaves_the_leg_out(col: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = Pipeline([Retriever("bm25", depth=30), Retriever("dense", depth=30)],
                    fusion_options={"weights": [1, 0]}, adaptive=False)
    got, want = run_both(col, pipe, monkeypatch)
    assert_same(got, want)
    bm25 = [col.search(q, k=10, method="bm25") for q in QUERIES]
    assert [[r.id for r in rs] for rs in got] == [[r.id for r in rs] for rs in bm25]


@pytest.mark.parametrize(
    ("fusion", "options", "match"),
    [
        ("rrf", {"c": 1}, r"does not take option\(s\) c; it takes k, weights"),
        ("minmax", {"k": 60}, r"'minmax' does not take option\(s\) k; it takes weights"),
        ("rrf", {"depth": 10}, "does not take option.*depth"),
        ("rrf", {"k": "60"}, "k must be a finite number > 0, got '60'"),
        ("rrf", {"k": True}, "k must be"),
        ("rrf", {"k": 0}, "k must be"),
        ("rrf", {"k": math.nan}, "k must be"),
        ("rrf", {"weights": [1.0]}, "1 weights for 2 rankings"),
        ("dbsf", {"weights": [1, -1]}, ">= 0"),
        ("zscore", {"weights": [0, 0]}, "all weights are zero"),
        ("rrf", {"weights": ["1", "2"]}, "sequence of numbers"),
        ("rrf", {"weights": "12"}, "sequence of numbers"),
        ("rrf", {"weights": [1, math.inf]}, "finite"),
        ("rrf", ["k", 60], "must be a dict"),
    ],
)
def test_bad_options_are_refused_when_the_pipeline_is_built(fusion: str, options: Any,
                                                            match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Pipeline([Retriever("bm25"), Retriever("dense")], fusion=fusion, fusion_options=options)


def test_weights_in_two_places_are_refused() -> None:
    with pytest.raises(ValueError, match="both in fusion_options and on retrievers"):
        Pipeline([Retriever("bm25", weight=1.0), Retriever("dense")],
                 fusion_options={"weights": [1, 1]})


def test_every_documented_option_is_accepted_by_fuse() -> None:
    values = {"k": 5, "weights": [2, 1], "depth": 2}
    for method, names in OPTIONS.items():
        opts = {n: values[n] for n in names}
        assert check_options(method, opts, n_legs=2) == {
            n: (tuple(float(w) for w in v) if n == "weights" else v) for n, v in opts.items()}
        assert fuse(method, list(LEGS), **opts)  # runs, and gives a ranking


@pytest.mark.parametrize("bad", [{"k": "1"}, {"k": None}, {"weights": [True, 1]},
                                 {"weights": {"a": 1}}])
def test_fuse_refuses_what_float_would_have_converted(bad: dict[str, Any]) -> None:
    method = "rrf"
    with pytest.raises(ValueError, match=r"k must be|numbers"):
        fuse(method, list(LEGS), **bad)
