"""Results of a collection search read their text and metadata when first used
(`fastrag.search.LazyResult`): they must behave as the eager `Result` they stand for, and read
the generation that was searched whatever happens to the collection afterwards."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from pathlib import Path

import pytest

from fake_encoder import FakeEncoder
from fastrag import Collection, IndexFormatError
from fastrag.search import DenseRescore, Pipeline, Retriever
from fastrag.search.pipeline import LazyResult, Result

DOCS = {
    "apple": "Apples grow on trees in the orchard near the river.",
    "bread": "Bread is baked in a hot oven every morning, before the sun rises.",
    "comet": "A comet has a bright tail when it passes close to the sun.",
}


@pytest.fixture
def col(tmp_path: Path) -> Collection:
    c = Collection.create(tmp_path / "c", encoder=FakeEncoder())
    c.add(list(DOCS.values()), ids=list(DOCS), metadata=[{"n": i} for i in range(3)])
    c.commit()
    return c


def eager(col: Collection, query: str) -> list[Result]:
    """The same search through the general path (stage by stage in Python, texts read at
    once): a rerank stage with explain."""
    pipe = Pipeline([Retriever("bm25", depth=20)], rerankers=[(DenseRescore(), 1)])
    got = pipe.search(col, query, k=3, explain=True)
    assert all(type(r) is Result for r in got)
    return got


def test_lazy_results_read_what_an_eager_search_returns(col: Collection) -> None:
    got = col.search("sun", method="bm25", k=3)
    assert got and all(type(r) is LazyResult for r in got)
    assert [r.id for r in got] == ["comet", "bread"]
    for r in got:
        assert r.text == DOCS[r.id]
        assert r.metadata == {"n": list(DOCS).index(r.id)}
        assert r.passage and r.passage in r.text
    want = eager(col, "sun")
    assert [(r.id, r.text, r.metadata, r.span) for r in got] == [
        (r.id, r.text, r.metadata, r.span) for r in want]


def test_many_makes_what_of_makes(col: Collection) -> None:
    read = col.reader()
    assert read is not None
    rows = [("comet", 2.5, (0, 10)), ("apple", 1.0, (3, 8))]
    many = LazyResult.many(rows, read)
    one_by_one = [LazyResult.of(d, s, read, span) for d, s, span in rows]
    assert [type(r) for r in many] == [LazyResult, LazyResult]
    assert many == one_by_one
    assert [(r.id, r.score, r.span, r.text, r.stages, r.scored_by) for r in many] == [
        (d, s, span, DOCS[d], {}, None) for d, s, span in rows]
    assert LazyResult.many([], read) == []


def test_lazy_results_equal_copy_pickle_and_replace_as_results(col: Collection) -> None:
    (r, *_) = col.search("orchard", method="bm25")
    plain = Result(r.id, r.score, DOCS[r.id], {"n": 0}, r.span, {})
    assert r == plain and plain == r
    assert r != dataclasses.replace(plain, score=r.score + 1)
    for other in (pickle.loads(pickle.dumps(r)), copy.copy(r), copy.deepcopy(r)):
        assert type(other) is Result and other == r
    assert dataclasses.asdict(r)["text"] == DOCS["apple"]
    assert dataclasses.replace(r, score=2.0).text == DOCS["apple"]
    assert "apple" in repr(r)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        r.nope  # noqa: B018
    with pytest.raises(TypeError):
        hash(r)


def test_lazy_results_read_the_generation_that_was_searched(col: Collection) -> None:
    before = col.search("bread oven", method="bm25")
    assert before[0].id == "bread"
    col.delete("bread")
    col.add(["Bread, rewritten."], ids=["bread"])
    col.commit()
    col.close()  # the old document file is gone from the collection's view, and closed
    assert before[0].text == DOCS["bread"]
    assert before[0].metadata == {"n": 1}


def test_documents_changed_since_the_commit_are_read_as_they_were(col: Collection) -> None:
    col.add(["Bread of a new kind, baked with oven heat."], ids=["bread"])  # not committed
    got = col.search("bread oven", method="bm25")
    col.rollback()
    assert got[0].id == "bread" and got[0].text == "Bread of a new kind, baked with oven heat."


def test_a_hit_without_a_stored_document_fails_when_read(col: Collection) -> None:
    """A damaged collection whose chunk table names a document the document file lacks: the
    search returns its id, and reading the text says what is wrong (as a bad checksum does)."""
    store = col._docs
    store._pos = {d: i for d, i in store._pos.items() if d != "comet"}
    got = col.search("comet tail", method="bm25", k=1)
    assert got[0].id == "comet"
    with pytest.raises(IndexFormatError, match="'comet' has chunks but no record"):
        got[0].text  # noqa: B018
    with pytest.raises(IndexFormatError, match="'comet'"):  # the eager paths at once
        col.search("comet tail", method="bm25", k=1, explain=True)
