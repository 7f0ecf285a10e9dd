"""The native query path (one ``_core.execute`` call per batch) against the stage-by-stage
Python path: the same documents, scores, spans and explain views, for every fusion, both
aggregations, filters, deletes, batches on several threads and query vectors given."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fake_encoder import FakeEncoder
from fastrag.collection import Collection
from fastrag.search import DenseRescore, Pipeline, Retriever, native

WORDS = (
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
    "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi",
    "psi", "omega",
)
QUERIES = ["alpha beta", "omega", "kappa theta sigma zeta", "pi rho", "delta", "nu xi mu"]


@pytest.fixture(scope="module")
def col(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """300 documents of 1-6 chunks of seeded random words, some deleted, with metadata."""
    rng = random.Random(5)
    texts = [
        "\n\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
                    for _ in range(rng.randint(1, 6)))
        for _ in range(300)
    ]
    col = Collection.create(Path(tmp_path_factory.mktemp("n")) / "c", encoder=FakeEncoder(),
                            chunk_chars=60)
    col.add(texts, ids=[f"d{i:03d}" for i in range(300)],
            metadata=[{"group": i % 3} for i in range(300)])
    col.delete([f"d{i:03d}" for i in range(0, 300, 7)])
    col.commit()
    yield col
    col.close()


def python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "supported", lambda *args: False)


def view(results: list[Any]) -> list[tuple[str, float, tuple[int, int]]]:
    return [(r.id, r.score, r.span) for r in results]


def assert_same(got: list[Any], want: list[Any]) -> None:
    assert [r.id for r in got] == [r.id for r in want]
    assert [r.span for r in got] == [r.span for r in want]
    np.testing.assert_allclose([r.score for r in got], [r.score for r in want], rtol=1e-5)
    for g, w in zip(got, want, strict=True):
        assert g.stages.keys() == w.stages.keys()
        for name in g.stages:
            assert g.stages[name].rank == w.stages[name].rank
            assert g.stages[name].score == pytest.approx(w.stages[name].score, rel=1e-5)


@pytest.mark.parametrize("fusion", ["rrf", "minmax", "zscore", "dbsf"])
@pytest.mark.parametrize("aggregate", ["max", "sum"])
def test_native_equals_python(col: Collection, monkeypatch: pytest.MonkeyPatch,
                              fusion: str, aggregate: str) -> None:
    pipe = Pipeline([Retriever("bm25", depth=30), Retriever("dense", depth=40)], fusion=fusion,
                    aggregate=aggregate, adaptive=False)
    for k, flt in [(10, None), (25, {"group": 1}), (400, None)]:
        got = [col.search(q, k=k, method=pipe, filter=flt, explain=True) for q in QUERIES]
        with monkeypatch.context() as m:
            python_path(m)
            want = [col.search(q, k=k, method=pipe, filter=flt, explain=True) for q in QUERIES]
        for g, w in zip(got, want, strict=True):
            assert_same(g, w)
            assert len(g) == min(k, len(w))


@pytest.mark.parametrize("method", ["bm25", "dense", "hybrid"])
def test_the_methods_are_native_and_equal_python(col: Collection,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 method: str) -> None:
    calls = []
    run = native.run
    monkeypatch.setattr(native, "run", lambda *a, **kw: calls.append(1) or run(*a, **kw))
    got = [col.search(q, k=10, method=method, explain=True) for q in QUERIES]
    assert len(calls) == len(QUERIES)
    python_path(monkeypatch)
    want = [col.search(q, k=10, method=method, explain=True) for q in QUERIES]
    for g, w in zip(got, want, strict=True):
        assert_same(g, w)


def test_a_batch_on_two_threads_equals_single_queries(col: Collection) -> None:
    queries = QUERIES * 20
    batch = col.search_batch(queries, k=10, threads=2)
    assert len(batch) == len(queries)
    for q, got in zip(queries, batch, strict=True):
        assert view(got) == view(col.search(q, k=10))


def test_query_vectors_given_skip_the_encoder(col: Collection) -> None:
    encoder = col.encoder
    assert isinstance(encoder, FakeEncoder)
    vectors = encoder.encode_queries(QUERIES)
    before = len(encoder.calls)
    batch = col.search_batch(QUERIES, k=5, vectors=vectors)
    single = [col.search(q, k=5, vector=v) for q, v in zip(QUERIES, vectors, strict=True)]
    assert len(encoder.calls) == before
    assert [view(r) for r in batch] == [view(r) for r in single]
    assert [view(r) for r in batch] == [view(col.search(q, k=5)) for q in QUERIES]
    with pytest.raises(ValueError, match="n_queries, dim"):
        col.search_batch(QUERIES, vectors=vectors[:2])


def test_native_path_sees_adds_and_deletes(tmp_path: Path) -> None:
    col = Collection.create(tmp_path / "c", encoder=FakeEncoder())
    col.add(["alpha beta", "beta gamma"], ids=["a", "b"])
    assert [r.id for r in col.search("beta", method="bm25")] == ["a", "b"] or [
        r.id for r in col.search("beta", method="bm25")] == ["b", "a"]
    col.delete("a")
    assert [r.id for r in col.search("beta")] == ["b"]
    col.add(["alpha alpha beta"], ids=["a"])
    assert [r.id for r in col.search("alpha")][:1] == ["a"]
    col.bm25.compact()  # type: ignore[union-attr]
    col.dense.compact()  # type: ignore[union-attr]
    assert sorted(r.id for r in col.search("beta")) == ["a", "b"]
    col.close()


class _Longest:
    """A rerank stage scoring passages by length (no encoder): the ordering differs from the
    fusion's, so the stage's effect is seen."""

    name = "longest"

    def rescore(self, corpus: Any, query: str, qvec: Any, ids: list[int],
                passages: list[str]) -> list[float]:
        return [float(len(p)) for p in passages]


@pytest.mark.parametrize("fusion", ["rrf", "zscore"])
@pytest.mark.parametrize("legs", [("bm25",), ("bm25", "dense")])
def test_rerank_stages_over_the_native_fusion_equal_python(
        col: Collection, monkeypatch: pytest.MonkeyPatch, fusion: str,
        legs: tuple[str, ...]) -> None:
    """With rerank stages the legs and the fusion run natively and the stages in Python: the
    same documents, spans, scores and scoring stages as the stage-by-stage Python path."""
    called: list[int] = []
    rerank = Pipeline._native_rerank

    def spy(self: Pipeline, *args: Any, **kwargs: Any) -> Any:
        called.append(1)
        return rerank(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "_native_rerank", spy)
    pipe = Pipeline([Retriever(name, depth=15) for name in legs], fusion=fusion, adaptive=False,
                    rerankers=[(DenseRescore(), 8), (_Longest(), 4)])  # type: ignore[list-item]
    for k, flt in [(5, None), (12, {"group": 2}), (400, None)]:
        got = [col.search(q, k=k, method=pipe, filter=flt) for q in QUERIES]
        with monkeypatch.context() as m:
            python_path(m)
            want = [col.search(q, k=k, method=pipe, filter=flt) for q in QUERIES]
        for g, w in zip(got, want, strict=True):
            assert_same(g, w)
            assert [r.scored_by for r in g] == [r.scored_by for r in w]
    assert called
