"""Tests for fastrag.text analyzers (pure Python; no compiled core needed)."""

from __future__ import annotations

import contextlib
import json
import pickle
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import fastrag
from fastrag.text import (
    ENGLISH_STOPWORDS,
    Analyzer,
    AutoAnalyzer,
    BigramAnalyzer,
    EmptyDocumentWarning,
    EnglishAnalyzer,
    JapaneseAnalyzer,
    analyze_corpus,
    detect_language,
    get_analyzer,
)
from fastrag.text import analyzers as analyzers_module
from fastrag.text.language import latin_runs

ODD_SCRIPTS = ["Привет, мир", "مرحبا بالعالم", "สวัสดีครับ", "😀🎉 party 🚀", "\x00\x07", "\ufeff"]


@pytest.fixture(scope="module")
def ja() -> JapaneseAnalyzer:
    pytest.importorskip("sudachipy")
    return JapaneseAnalyzer()


def all_analyzers() -> list[Analyzer]:
    found: list[Analyzer] = [EnglishAnalyzer(), BigramAnalyzer()]
    with contextlib.suppress(ImportError):
        found.append(JapaneseAnalyzer())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found.append(AutoAnalyzer())
    return found


# --- English -------------------------------------------------------------------------


def test_english_stems_and_drops_stopwords() -> None:
    en = EnglishAnalyzer()
    assert en("running dogs") == ["run", "dog"]
    assert en("The dogs were running in the park!") == ["dog", "run", "park"]
    assert en("The THE and Of it") == []


def test_english_options() -> None:
    assert EnglishAnalyzer(stemmer=None)("running dogs") == ["running", "dogs"]
    assert EnglishAnalyzer(stopwords=None, stemmer=None)("the dog") == ["the", "dog"]
    assert EnglishAnalyzer(stopwords=["DOG"], stemmer=None)("the dog barks") == ["the", "barks"]
    assert EnglishAnalyzer(min_length=1, stopwords=None, stemmer=None)("x y") == ["x", "y"]
    assert EnglishAnalyzer(lowercase=False, stemmer=None)("Dog dog") == ["Dog", "dog"]
    # NFKC folds full-width letters and ligatures.
    assert EnglishAnalyzer(stemmer=None)("ＡＢＣ ﬁle") == ["abc", "file"]
    with pytest.raises(ValueError, match="stemmer"):
        EnglishAnalyzer(stemmer="klingon")
    with pytest.raises(ValueError, match="stopword"):
        EnglishAnalyzer(stopwords="french")
    with pytest.raises(ValueError, match="min_length"):
        EnglishAnalyzer(min_length=0)


def test_stopword_list() -> None:
    assert 150 <= len(ENGLISH_STOPWORDS) <= 200
    assert {"the", "and", "of", "is", "which"} <= ENGLISH_STOPWORDS
    assert all(word == word.lower() for word in ENGLISH_STOPWORDS)


def test_english_is_fast() -> None:
    corpus = Path("/work/shared/data/cranfield/corpus.jsonl")
    if corpus.exists():
        with corpus.open(encoding="utf-8") as fh:
            texts = [(doc["title"] + " " + doc["text"]) for doc in map(json.loads, fh)]
    else:
        texts = ["experimental investigation of the aerodynamics of a wing " * 20] * 1400
    tokens = EnglishAnalyzer().analyze_many(texts)
    assert len(tokens) == len(texts) and sum(map(len, tokens)) > 10 * len(texts)


@pytest.mark.parametrize(
    "options",
    [{}, {"stemmer": None}, {"stopwords": None}, {"min_length": 1}, {"min_length": 4},
     {"stemmer": "porter", "stopwords": ["flow", "The"]}, {"lowercase": False}],
)
def test_english_batch_equals_one_by_one(options: dict) -> None:
    """A batch stems each distinct word once (a table per batch): every text's tokens are
    those it gets alone, with blank texts, repeats, short words and odd scripts mixed in."""
    analyzer = EnglishAnalyzer(**options)
    texts = ["Running dogs ran; the DOGS run", "", "   ", "a b cd efg hijk", "Flows flowing flow",
             "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ", "dogs \ud800 dogs", *ODD_SCRIPTS, "running dogs"]
    assert analyzer.analyze_many(texts) == [analyzer(t) for t in texts]
    assert analyzer.analyze_many(iter(texts[:1])) == [analyzer(texts[0])]
    assert analyzer.analyze_many([]) == []


# --- Japanese ------------------------------------------------------------------------


def test_japanese_drops_particles_and_normalizes(ja: JapaneseAnalyzer) -> None:
    tokens = ja("東京タワーへ行きました。")
    assert tokens == ["東京", "タワー", "行く"]
    assert not {"へ", "まし", "た", "。"} & set(tokens)
    assert ja("ＡＩとは") == ["ai"]
    assert ja("日本の首都は？") == ["日本", "首都"]
    assert ja("ﾃｽﾄ") == ["テスト"]


def test_japanese_forms_and_options(ja: JapaneseAnalyzer) -> None:
    assert JapaneseAnalyzer(form="surface")("行きました") == ["行き"]
    assert JapaneseAnalyzer(form="dictionary")("行きました") == ["行く"]
    assert "まし" in JapaneseAnalyzer(form="surface", drop_pos=())("行きました")
    assert JapaneseAnalyzer(lowercase=False)("Pythonの本") == ["Python", "本"]
    with pytest.raises(ValueError, match="mode"):
        JapaneseAnalyzer(mode="D")
    with pytest.raises(ValueError, match="form"):
        JapaneseAnalyzer(form="reading")


def test_japanese_long_text(ja: JapaneseAnalyzer) -> None:
    sentence = "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。\n"
    text = sentence * (1_000_000 // len(sentence.encode("utf-8")) + 1)
    assert len(text.encode("utf-8")) > 1_000_000
    tokens = ja(text)
    assert tokens[:3] == ja(sentence)[:3]
    assert tokens.count("猫") == text.count("猫")


def test_japanese_long_text_without_breaks(ja: JapaneseAnalyzer) -> None:
    text = "東京都" * 40_000  # 360 kB with no newline, full stop or space
    tokens = ja(text)  # hard cuts may split a few words, but no text is lost
    assert "".join(tokens) == text and tokens.count("東京") > 39_900


def test_japanese_retries_pieces_sudachi_rejects(
    ja: JapaneseAnalyzer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(analyzers_module, "_SUDACHI_MAX_BYTES", 200_000)
    assert JapaneseAnalyzer()("猫と犬。" * 20_000).count("猫") == 20_000


def test_split_long_respects_limit_and_boundaries() -> None:
    split = analyzers_module._split_long
    text = "あいうえお。" * 5000 + "😀" * 20_000
    pieces = split(text, max_bytes=1000)
    assert "".join(pieces) == text
    assert all(len(piece.encode("utf-8")) <= 1000 for piece in pieces)
    assert pieces[0].endswith("。")
    assert split("short", max_bytes=1000) == ["short"]


def test_japanese_threads(ja: JapaneseAnalyzer) -> None:
    texts = ["私は猫が好きです。", "東京タワーへ行きました。"] * 50
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(ja, texts))
    assert results == [ja(text) for text in texts]


def test_missing_sudachi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sudachipy", None)
    with pytest.raises(ImportError, match="pip install sudachipy"):
        JapaneseAnalyzer()
    with pytest.warns(UserWarning, match="BigramAnalyzer"):
        auto = AutoAnalyzer()
    assert isinstance(auto.japanese, BigramAnalyzer)
    assert auto("東京タワー") == ["東京", "京タ", "タワ", "ワー"]


# --- Bigram --------------------------------------------------------------------------


def test_bigram() -> None:
    bi = BigramAnalyzer()
    assert bi("東京タワーへ行く") == ["東京", "京タ", "タワ", "ワー", "ーへ", "へ行", "行く"]
    assert bi("Pythonの本") == ["python", "の本"]
    assert bi("猫、犬。") == ["猫", "犬"]
    assert bi("ｶﾀｶﾅ・人々") == ["カタ", "タカ", "カナ", "人々"]
    assert bi("Version 2.0 リリース") == ["version", "2", "0", "リリ", "リー", "ース"]


# --- Language detection and routing --------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["東京", "Pythonの使い方", "ＡＩとは", "日本の首都は？", "ｶﾀｶﾅ", "富士山 height", "漢字"],
)
def test_detect_japanese(text: str) -> None:
    assert detect_language(text) == "ja"


@pytest.mark.parametrize(
    "text",
    ["hello world", "The kanji 水 means water", "", "1234", "Привет", "😀", "Tokyo 東 station"],
)
def test_detect_english(text: str) -> None:
    assert detect_language(text) == "en"


def test_auto_routes_per_text(ja: JapaneseAnalyzer) -> None:
    auto = AutoAnalyzer()
    assert auto("running dogs") == ["run", "dog"]
    assert auto("東京タワーへ行きました") == ["東京", "タワー", "行く"]
    texts = ["running dogs", "犬が走る", "", "The kanji 水 means water"]
    assert auto.analyze_many(texts) == [auto(text) for text in texts]
    assert auto.analyze_many(texts)[1] == ja("犬が走る")
    custom = AutoAnalyzer(english="bigram", japanese=BigramAnalyzer())
    assert custom("running dogs") == ["running", "dogs"]


# --- Config, registry, pickling ------------------------------------------------------


@pytest.mark.parametrize("analyzer", all_analyzers(), ids=lambda a: a.name)
def test_config_round_trip_and_pickle(analyzer: Analyzer) -> None:
    config = analyzer.config()
    rebuilt = get_analyzer(json.loads(json.dumps(config)))
    assert rebuilt == analyzer and rebuilt.config() == config
    text = "running dogs 東京タワーへ行きました"
    analyzer(text)  # populate lazy caches before pickling
    clone = pickle.loads(pickle.dumps(analyzer))
    assert clone == analyzer and clone(text) == analyzer(text)
    assert isinstance(analyzer, Analyzer)


def test_get_analyzer_names() -> None:
    assert isinstance(get_analyzer("english"), EnglishAnalyzer)
    assert isinstance(get_analyzer("EN"), EnglishAnalyzer)
    assert isinstance(get_analyzer("bigram"), BigramAnalyzer)
    custom = EnglishAnalyzer(stemmer=None, stopwords=["foo"])
    assert get_analyzer(custom) is custom
    assert get_analyzer(custom.config()) == custom
    assert get_analyzer(custom.config()) != EnglishAnalyzer()
    with pytest.raises(ValueError, match="auto, bigram, en, english, ja, japanese"):
        get_analyzer("klingon")
    with pytest.raises(ValueError, match="name"):
        get_analyzer({"lowercase": True})
    with pytest.raises(ValueError, match="invalid options"):
        get_analyzer({"name": "bigram", "colour": "red"})


def test_get_analyzer_japanese() -> None:
    pytest.importorskip("sudachipy")
    assert get_analyzer("ja") == JapaneseAnalyzer()
    assert get_analyzer({"name": "japanese", "mode": "c"}).config()["mode"] == "C"


# --- Robustness ----------------------------------------------------------------------


@pytest.mark.parametrize("analyzer", all_analyzers(), ids=lambda a: a.name)
def test_robustness(analyzer: Analyzer) -> None:
    assert analyzer("") == [] and analyzer(" \n\t\u3000") == []
    with pytest.raises(TypeError, match=r"got bytes; decode it first"):
        analyzer(b"running dogs")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got int"):
        analyzer(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="single str"):
        analyzer.analyze_many("running dogs")
    assert "dog" in "".join(analyzer("dogs \ud800 dogs"))
    assert analyzer("\ud83d\ude00 \udfff") == analyzer("\ud83d\ude00 \udfff")
    for text in ODD_SCRIPTS:
        tokens = analyzer(text)
        assert isinstance(tokens, list) and all(isinstance(t, str) and t for t in tokens)
    assert analyzer.analyze_many(iter(["", "dogs"]))[0] == []


def test_stopwords_only() -> None:
    assert EnglishAnalyzer()("the and of it is was") == []


def test_detect_language_rejects_bytes() -> None:
    with pytest.raises(TypeError, match="bytes"):
        detect_language(b"abc")  # type: ignore[arg-type]


# --- analyze_corpus ------------------------------------------------------------------


def test_analyze_corpus_warns_once_with_counts() -> None:
    texts = ["running dogs", "the and of", "", "   ", "it is", "cats"]
    with pytest.warns(EmptyDocumentWarning) as record:
        tokens = analyze_corpus(EnglishAnalyzer(), texts)
    assert len(record) == 1
    message = str(record[0].message)
    assert message.startswith("2 of 6 non-empty documents produced no tokens")
    assert "english analyzer (e.g. index 1)" in message
    assert record[0].filename == __file__
    assert tokens == [["run", "dog"], [], [], [], [], ["cat"]]


def test_analyze_corpus_quiet_and_by_name() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert analyze_corpus("english", (t for t in ["dogs", ""])) == [["dog"], []]


def test_one_language_detector_for_analyzers_collections_and_queries(tmp_path) -> None:
    """English with a stray kanji is English everywhere (collections and hybrid routing used
    to call any kana or kanji Japanese, while the analyzer wanted 30% of the letters)."""
    from fake_encoder import FakeEncoder
    from fastrag.collection import Collection
    from fastrag.search.pipeline import dense_weight
    from fastrag.text.language import detect_language

    stray = "The boundary layer 層 thickens downstream of the leading edge."
    assert detect_language(stray) == "en"
    assert detect_language("境界層の厚さ") == "ja"
    assert detect_language("xx東京xx", 2, 4) == "ja"
    col = Collection.create(tmp_path / "c", encoder=FakeEncoder())
    col.add([stray], ids=["s"])
    assert col.languages() == {"en": 1.0}
    assert dense_weight(col, "boundary 層 layer thickness") == 1.0
    col.close()


# ---------------------------------------------------------------------- mixed scripts
MIXED = "Boundary layers について説明する。"


def test_latin_phrases_of_japanese_text_go_to_the_english_analyzer() -> None:
    auto = get_analyzer("auto")
    english = get_analyzer("english")
    tokens = auto(MIXED)
    # the tokens an English query makes, where Sudachi turned "Boundary" into katakana
    assert tokens[:2] == english("boundary layers") == ["boundari", "layer"]
    assert "説明" in tokens
    assert auto("COVID-19の影響とmachine learningの関係") == [
        "covid", "19", "影響", "machin", "learn", "関係"]
    assert latin_runs("ＡＢＣ社のＩＴ部門") == [(0, 3), (5, 7)]  # full-width Latin too
    assert latin_runs("東京") == []


def test_whole_text_routing_stays_for_configs_saved_before_split_scripts() -> None:
    auto = get_analyzer("auto")
    assert auto.split_scripts is True and auto.config()["split_scripts"] is True
    saved = {k: v for k, v in auto.config().items() if k != "split_scripts"}
    old = get_analyzer(saved)
    assert old.split_scripts is False and "layer" not in old(MIXED)
    assert get_analyzer(auto.config()) == auto
    with pytest.raises(TypeError, match="split_scripts"):
        AutoAnalyzer(split_scripts="yes")


def test_an_english_query_finds_english_words_inside_japanese_text() -> None:
    index = fastrag.BM25(analyzer="auto")
    index.add([MIXED, "東京の天気は晴れです。", "Layers of paint on a wall."],
              ids=["mixed", "ja", "en"])
    hits = index.search("boundary layers", k=2)[0]
    assert hits[0].id == "mixed"
