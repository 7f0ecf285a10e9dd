"""Japanese BERTs (BertJapaneseTokenizer: MeCab words, then WordPiece or characters).

The fast tokenizer fastrag builds (`fastrag.text.ja_wordpiece`) must give transformers'
tokens, id for id, on a few hundred varied Japanese strings; an exported tiny random BERT with
that tokenizer must give PyTorch's vectors and logits. The vocabulary is built here from the
MeCab words of half the test sentences plus their characters (minus a few, for [UNK]), so that
whole words, WordPiece continuations and unknown characters all occur. Nothing is downloaded.
"""

from __future__ import annotations

import itertools
import json
import random
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fugashi", reason="needs fugashi: pip install 'fastrag-engine[ja]'")
pytest.importorskip("unidic_lite", reason="needs unidic-lite: pip install 'fastrag-engine[ja]'")
transformers = pytest.importorskip("transformers")

from fastrag.text import ja_wordpiece  # noqa: E402
from fastrag.text.chunking import token_windows, untruncated  # noqa: E402

JSQUAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "jsquad-valid"

BASE = [
    "東京都に住んでいます。",
    "吾輩は猫である。名前はまだ無い。",
    "今日はいい天気ですね、散歩に行きましょう！",
    "日本の首都は東京で、人口は約1400万人です。",
    "梅雨の時期が始まることを梅雨入りという。",
    "機械学習モデルを使って文書を検索します。",
    "Boundary layers について説明する。",
    "iPhone 15 Pro Maxを買った",
    "ＡＢＣ１２３とｶﾀｶﾅの全角半角",
    "ひらがなだけのぶんしょうです",
    "カタカナダケノブンショウデス",
    "漢字熟語形態素解析辞書",
    "😀絵文字👍🏽と顔文字(^_^)も入る",
    "  前後に空白\tタブ\n改行\r\nと全角　空白 ",
    "価格は¥1,980（税込）、送料は500円です。",
    "2024年12月6日午前9時30分に集合。",
    "「こんにちは」と彼女は言った。『本当に？』",
    "ΣΑΣ Straße İstanbul ﬁ ㈱ ①② ㍻",
    "文の途中に[SEP]特殊[MASK]トークンがある",
    "ＵＲＬはhttps://example.com/path?q=1です",
    "メールアドレス: user@example.co.jp",
    "ＮＦＫＣで正規化される文字：ｱｲｳｴｵ、㌔㍉",
    "量子コンピュータの研究が進んでいる。",
    "東京大学と京都大学の共同研究チーム",
    "富士山は日本一高い山である。",
    "COVID-19の感染拡大により、多くのイベントが中止された。",
    "彼はPythonとC++でプログラムを書く。",
    "北海道と小笠原諸島を除く日本では梅雨がある。",
    "シベリア気団はしばしば南下して寒波をもたらす。",
    "渋谷駅から徒歩５分のカフェ",
    "ありがとうございました！！！",
    "えっ、ほんと？　まじで〜",
    "第三次産業の割合は７０％を超える",
    "明治維新（めいじいしん）は1868年に起きた。",
    "大阪・京都・神戸の三都物語",
    "αβγとＡＢΓ、数学記号∑∫√",
    "ｈｅｌｌｏ　ＷＯＲＬＤ　Ｈｅｌｌｏ",
    "ロボットが人間の仕事を代替する時代",
    "令和元年５月１日に改元された",
    "ＪＲ東日本の新幹線「はやぶさ」",
]
#: characters left out of the vocabulary: they come out as [UNK]
HELD_OUT = set("㈱熟😀")
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WINDOW = 48  # the tiny model's positions: long texts get truncated


def corpus(n: int = 360, seed: int = 0) -> list[str]:
    """`n` varied strings: the base sentences, then seeded mixes of them with Latin words,
    digits, full-width forms and emoji, and long concatenations past the window."""
    rng = random.Random(seed)
    extras = ["BM25", "Ｒｕｒｉ", "ruri", "GPU", "１０２４", "3.14", "🎌", "ｶﾞｯｺｳ", "WiFi", "x"]
    out = list(BASE)
    while len(out) < n:
        parts = rng.sample(BASE, k=rng.randint(1, 3))
        if rng.random() < 0.5:
            parts.insert(rng.randint(0, len(parts)), rng.choice(extras))
        text = rng.choice(["", " ", "、"]).join(parts)
        if rng.random() < 0.1:
            text = "".join(rng.sample(BASE, k=12))  # far over the window
        out.append(text)
    return out


def _mecab_words(texts: list[str]) -> set[str]:
    splitter = ja_wordpiece.WordSplitter()
    words = ja_wordpiece._MecabWords(splitter)
    out: set[str] = set()
    for text in texts:
        norm = unicodedata.normalize("NFKC", text)
        out.update(surface for _, _, surface in words.words(norm))
    return out


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory) -> Path:
    """vocab.txt: specials, MeCab words of half the base sentences (and their lowercase forms),
    every character of the corpus but HELD_OUT, and each as a ## continuation."""
    words = _mecab_words(BASE[::2])
    words |= {w.lower() for w in words}
    chars = {c for t in corpus() for c in unicodedata.normalize("NFKC", t) + t.lower()}
    chars = {c for c in chars if not c.isspace()} - HELD_OUT
    tokens = [*SPECIALS, *sorted(words), *sorted(chars), *sorted("##" + c for c in chars)]
    tokens = list(dict.fromkeys(t for t in tokens if t and not any(c.isspace() for c in t)))
    path = tmp_path_factory.mktemp("ja_vocab") / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


VARIANTS = {
    # cl-tohoku/bert-base-japanese-v3, Ruri v1/v2
    "v3": {"mecab_kwargs": {"mecab_dic": "unidic_lite"}},
    "lower": {"do_lower_case": True, "never_split": ["iPhone", "GPU"],
              "mecab_kwargs": {"mecab_dic": "unidic_lite"}},
    "character": {"subword_tokenizer_type": "character",
                  "mecab_kwargs": {"mecab_dic": "unidic_lite"}},
    "raw": {"mecab_kwargs": {"mecab_dic": "unidic_lite", "normalize_text": False}},
}


def slow_tokenizer(vocab_file: Path, folder: Path, variant: str) -> object:
    """The transformers tokenizer saved to `folder` and loaded back as an export loads it."""
    slow = transformers.BertJapaneseTokenizer(
        str(vocab_file), word_tokenizer_type="mecab", model_max_length=WINDOW,
        **VARIANTS[variant],
    )
    slow.save_pretrained(folder)
    return transformers.AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def pair(request, vocab_file, tmp_path_factory):
    """(transformers' tokenizer, fastrag's fast tokenizer with its splitter) per variant."""
    slow = slow_tokenizer(vocab_file, tmp_path_factory.mktemp(request.param), request.param)
    assert type(slow).__name__ == "BertJapaneseTokenizer" and not slow.is_fast
    fast, splitter = ja_wordpiece.fast_from_slow(slow)
    return slow, ja_wordpiece.attach(fast, splitter)


def test_tokens_match_transformers(pair):
    slow, fast = pair
    texts = corpus()
    got = fast.encode_batch(texts)
    unknown = 0
    for text, enc in zip(texts, got, strict=True):
        want = slow(text, return_token_type_ids=True)
        assert enc.ids == want["input_ids"], text
        assert enc.type_ids == want["token_type_ids"], text
        assert enc.tokens == slow.convert_ids_to_tokens(want["input_ids"]), text
        unknown += enc.ids.count(slow.unk_token_id)
    assert unknown > 0  # the held-out characters were met
    pieces = [t for enc in got for t in enc.tokens if t.startswith("##")]
    if slow.subword_tokenizer_type == "wordpiece":
        assert len(pieces) > 100  # words outside the vocabulary were split


def test_truncation_matches_transformers(pair):
    slow, fast = pair
    texts = [t for t in corpus() if len(slow(t)["input_ids"]) > WINDOW]
    assert len(texts) > 10
    fast.enable_truncation(WINDOW)
    try:
        for text, enc in zip(texts, fast.encode_batch(texts), strict=True):
            assert enc.ids == slow(text, truncation=True, max_length=WINDOW)["input_ids"]
            assert enc.overflowing  # what the encoder's TruncationWarning counts
    finally:
        fast.no_truncation()


def test_pairs_match_transformers(pair):
    slow, fast = pair
    texts = corpus(120, seed=1)
    pairs = list(zip(texts[::2], texts[1::2], strict=True))
    for (a, b), enc in zip(pairs, fast.encode_batch(pairs), strict=True):
        want = slow(a, b, return_token_type_ids=True)
        assert enc.ids == want["input_ids"], (a, b)
        assert enc.type_ids == want["token_type_ids"], (a, b)


def test_offsets_point_at_the_text(vocab_file, tmp_path):
    """Each word piece's offsets cover the characters of the original text it came from (what
    late chunking and token windows cut at), through NFKC's changes of length."""
    slow = slow_tokenizer(vocab_file, tmp_path, "v3")
    fast = ja_wordpiece.attach(*ja_wordpiece.fast_from_slow(slow))
    for text in corpus(200):
        enc = fast.encode(text, add_special_tokens=False)
        ends = [b for _, b in enc.offsets]
        assert ends == sorted(ends) and all(b <= len(text) for b in ends)
        for token, (a, b) in zip(enc.tokens, enc.offsets, strict=True):
            if token in SPECIALS:
                continue
            # a piece of a character NFKC expands ("ﬁ" -> f, ##i) points at that character;
            # one NFKC composes ("ｶﾞ" -> ガ) points at its first (tokenizers' alignment)
            piece = token.removeprefix("##")
            covered = (unicodedata.normalize("NFKC", text[a : b + k]) for k in (0, 1))
            assert any(piece in c for c in covered), text
            assert a < b


def test_copies_keep_the_word_splitter(vocab_file, tmp_path):
    """Chunkers and late chunking copy the encoder's tokenizer without truncation: the copy
    still splits words with MeCab."""
    slow = slow_tokenizer(vocab_file, tmp_path, "v3")
    fast = ja_wordpiece.attach(*ja_wordpiece.fast_from_slow(slow))
    fast.enable_truncation(8)
    text = "".join(BASE[:6])
    full = untruncated(fast).encode(text)
    assert full.ids == slow(text)["input_ids"] and len(full.ids) > 8
    assert ja_wordpiece.copy_tokenizer(fast).encode(text).ids == full.ids
    windows = token_windows(text, fast, size=10)
    assert len(windows) > 2 and windows[0].text == text[windows[0].start : windows[0].end]


def test_threads_share_an_encoder(vocab_file, tmp_path):
    """A service encodes from several threads at once: each gets the single-threaded ids."""
    from concurrent.futures import ThreadPoolExecutor

    slow = slow_tokenizer(vocab_file, tmp_path, "v3")
    fast = ja_wordpiece.attach(*ja_wordpiece.fast_from_slow(slow))
    texts = corpus(120, seed=3)
    want = [enc.ids for enc in fast.encode_batch(texts)]
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: [e.ids for e in fast.encode_batch(texts)], range(8)))
    assert all(run == want for run in runs)


def test_padded_batches_use_tokenizers_own_call(vocab_file, tmp_path):
    """With padding on, encode_batch is tokenizers' threaded call (it pads to the longest):
    the same ids, padded."""
    slow = slow_tokenizer(vocab_file, tmp_path, "v3")
    fast = ja_wordpiece.attach(*ja_wordpiece.fast_from_slow(slow))
    texts = BASE[:10]
    plain = [enc.ids for enc in fast.encode_batch(texts)]
    fast.enable_padding(pad_id=0, pad_token="[PAD]")
    padded = fast.encode_batch(texts)
    width = max(len(ids) for ids in plain)
    assert [enc.ids for enc in padded] == [ids + [0] * (width - len(ids)) for ids in plain]


def test_the_export_check_finds_a_wrong_tokenizer(vocab_file, tmp_path):
    """The check an export runs (`mismatches`) reports a splitter that is not the model's."""
    slow = slow_tokenizer(vocab_file, tmp_path, "v3")
    fast, splitter = ja_wordpiece.fast_from_slow(slow)
    assert ja_wordpiece.mismatches(slow, ja_wordpiece.attach(fast, splitter), BASE) == []
    lowered = ja_wordpiece.WordSplitter(lower_case=True)
    wrong = ja_wordpiece.mismatches(slow, ja_wordpiece.attach(fast, lowered), BASE)
    assert wrong and "Boundary" in wrong[0]


def test_jsquad_texts_match_transformers(vocab_file, tmp_path):
    if not (JSQUAD / "corpus.jsonl").is_file():
        pytest.skip(f"JSQuAD texts are not at {JSQUAD} (optional test data)")
    slow = slow_tokenizer(vocab_file, tmp_path, "v3")
    fast = ja_wordpiece.attach(*ja_wordpiece.fast_from_slow(slow))
    texts = []
    for name, count in (("corpus.jsonl", 150), ("queries.jsonl", 150)):
        with (JSQUAD / name).open(encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in itertools.islice(f, count)]
    for text, enc in zip(texts, fast.encode_batch(texts), strict=True):
        assert enc.ids == slow(text)["input_ids"], text


# ---- bad input: clear errors --------------------------------------------------------------


def test_splitter_settings_are_checked():
    with pytest.raises(ValueError, match="unknown MeCab dictionary 'jumandic'"):
        ja_wordpiece.WordSplitter(dictionary="jumandic")
    with pytest.raises(ValueError, match="subword must be one of"):
        ja_wordpiece.WordSplitter(subword="sentencepiece")
    with pytest.raises(ValueError, match="kind 'mecab'"):
        ja_wordpiece.WordSplitter.from_dict({"kind": "sudachi"})
    with pytest.raises(ValueError, match="lower_case must be true or false"):
        ja_wordpiece.WordSplitter.from_dict({"kind": "mecab", "lower_case": "yes"})
    spec = ja_wordpiece.WordSplitter(lower_case=True, never_split=("GPU",))
    assert ja_wordpiece.WordSplitter.from_dict(spec.to_dict()) == spec


def test_missing_packages_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "fugashi", None)  # import fugashi raises ImportError
    with pytest.raises(ImportError, match=r'pip install "fastrag-engine\[ja\]"'):
        ja_wordpiece._MecabWords(ja_wordpiece.WordSplitter())
    monkeypatch.setitem(sys.modules, "ipadic", None)
    with pytest.raises(ImportError, match="pip install ipadic"):
        ja_wordpiece.mecab_arguments(ja_wordpiece.WordSplitter(dictionary="ipadic"))


def test_other_word_splitters_are_refused(vocab_file):
    slow = transformers.BertJapaneseTokenizer(str(vocab_file), word_tokenizer_type="basic")
    with pytest.raises(ValueError, match="only MeCab word splitting"):
        ja_wordpiece.fast_from_slow(slow)


def test_bad_mecab_option_is_a_clear_error():
    with pytest.raises(ValueError, match="MeCab could not start"):
        ja_wordpiece._MecabWords(ja_wordpiece.WordSplitter(mecab_option="-d /no/such/dic"))


# ---- end to end: export a tiny random Japanese BERT, encode with onnxruntime -----------------


def tiny_bert(vocab_file: Path, folder: Path, head: str = "base") -> Path:
    """A seeded tiny BERT over the test vocabulary, saved with its BertJapaneseTokenizer."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    vocab = len(vocab_file.read_text(encoding="utf-8").splitlines())
    config = transformers.BertConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=WINDOW, initializer_range=0.2,
        pad_token_id=0, num_labels=1,
    )
    model = (transformers.BertForSequenceClassification(config) if head == "classifier"
             else transformers.BertModel(config))
    model.eval().save_pretrained(folder)
    slow_tokenizer(vocab_file, folder, "v3")
    return folder


@pytest.fixture(scope="module")
def exported(vocab_file, tmp_path_factory) -> tuple[Path, Path]:
    from fastrag.encoders.export import export_model

    root = tmp_path_factory.mktemp("ja_bert")
    src = tiny_bert(vocab_file, root / "src")
    return src, export_model(src, root / "onnx")


def test_export_records_the_word_splitter(exported):
    out = exported[1]
    manifest = json.loads((out / "fastrag_model.json").read_text(encoding="utf-8"))
    assert manifest["word_splitter"] == ja_wordpiece.WordSplitter().to_dict()
    assert manifest["max_length"] == WINDOW


def test_word_splitter_is_part_of_the_fingerprint(exported):
    """Vectors from another word splitting are not comparable; models without one keep the
    fingerprints they had."""
    from fastrag.encoders.export import fingerprint_of

    manifest = json.loads((exported[1] / "fastrag_model.json").read_text(encoding="utf-8"))
    assert fingerprint_of(manifest) == manifest["fingerprint"]
    other = {**manifest, "word_splitter": {**manifest["word_splitter"], "lower_case": True}}
    assert fingerprint_of(other) != manifest["fingerprint"]
    without = {k: v for k, v in manifest.items() if k != "word_splitter"}
    assert fingerprint_of({**without, "word_splitter": None}) == fingerprint_of(without)


def test_exported_encoder_gives_pytorch_vectors(exported):
    """TextEncoder on the exported folder (batched, length-sorted, some texts truncated) gives
    the vectors of transformers' tokenizer + PyTorch + mean pooling."""
    import torch

    from fastrag.encoders import TextEncoder
    from fastrag.encoders.base import TruncationWarning

    src, out = exported
    texts = corpus(64, seed=2)
    slow = transformers.AutoTokenizer.from_pretrained(src)
    model = transformers.AutoModel.from_pretrained(src).eval()
    batch = slow(texts, padding=True, truncation=True, max_length=WINDOW, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    want = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    encoder = TextEncoder(out)
    with pytest.warns(TruncationWarning):
        got = encoder.encode_documents(texts, batch_size=7)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_exported_cross_encoder_scores_pairs(vocab_file, tmp_path):
    """(query, passage) pairs through a Japanese cross-encoder: PyTorch's logits."""
    import torch

    from fastrag.encoders import CrossEncoder
    from fastrag.encoders.export import export_model

    src = tiny_bert(vocab_file, tmp_path / "src", head="classifier")
    out = export_model(src, tmp_path / "onnx", task="rerank")
    query, passages = BASE[4], BASE[:12]
    slow = transformers.AutoTokenizer.from_pretrained(src)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(src).eval()
    batch = slow([query] * len(passages), passages, padding=True, return_tensors="pt",
                 return_token_type_ids=True)
    with torch.no_grad():
        want = model(**batch).logits[:, -1].numpy()
    np.testing.assert_allclose(CrossEncoder(out).score(query, passages), want, atol=2e-4)


def test_exported_folder_without_fugashi(exported, monkeypatch):
    from fastrag.encoders.onnx import OnnxModel

    monkeypatch.setitem(sys.modules, "fugashi", None)
    with pytest.raises(ImportError, match=r'fastrag-engine\[ja\]'):
        OnnxModel(exported[1])


def test_export_without_fugashi_names_the_extra(exported, monkeypatch, tmp_path):
    from fastrag.encoders.export import ExportError, export_model

    monkeypatch.setitem(sys.modules, "fugashi", None)
    with pytest.raises(ExportError, match=r'fastrag-engine\[ja\]'):
        export_model(exported[0], tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()


def test_bad_word_splitter_in_manifest(exported, tmp_path):
    import shutil

    from fastrag.encoders.onnx import ModelFormatError, OnnxModel

    folder = tmp_path / "copy"
    shutil.copytree(exported[1], folder)
    manifest = json.loads((folder / "fastrag_model.json").read_text(encoding="utf-8"))
    manifest["word_splitter"] = {"kind": "mecab", "dictionary": "jumandic"}
    (folder / "fastrag_model.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ModelFormatError, match="unknown MeCab dictionary 'jumandic'"):
        OnnxModel(folder)


def test_late_chunking_a_long_japanese_document(exported):
    """Late chunking copies the encoder's tokenizer without truncation: the whole document's
    ids are transformers' (MeCab words kept), in several macro-windows, and every sentence
    chunk gets a vector."""
    from fastrag.encoders import LateChunker, TextEncoder

    src, out = exported
    doc = "".join(BASE[:16])
    slow = transformers.AutoTokenizer.from_pretrained(src)
    late = LateChunker(TextEncoder(out), "sentence", max_chunk_tokens=16)
    (tokens,) = late.token_embeddings([doc])
    assert tokens.ids.tolist() == slow(doc)["input_ids"]
    assert len(tokens.windows) > 1  # longer than the window of 48 tokens
    (chunks,) = late.encode([doc])
    assert len(chunks) > 3 and late.last_stats["skipped"] == 0
    for chunk, vector in chunks:
        assert doc[chunk.start : chunk.end] == chunk.text
        assert abs(float(np.linalg.norm(vector)) - 1) < 1e-5


def test_hugging_face_folder_is_exported_on_first_use(exported, tmp_path):
    """TextEncoder(model folder) exports through the cache: the same vectors as the export."""
    from fastrag.encoders import TextEncoder

    src, out = exported
    texts = BASE[:8]
    cached = TextEncoder(src, cache_dir=tmp_path)
    assert cached.manifest["word_splitter"]["dictionary"] == "unidic_lite"
    assert cached.fingerprint == TextEncoder(out).fingerprint
    np.testing.assert_allclose(
        cached.encode_documents(texts), TextEncoder(out).encode_documents(texts), atol=1e-6
    )
