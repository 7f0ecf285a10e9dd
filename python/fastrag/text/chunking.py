"""Splitting documents into passages and chunks with character spans.

`split_passages` cuts the collection's passages; `sentences`, `paragraphs`, `token_windows`
and `merge_short` make `Chunk`s for chunk-level indexing and late chunking, and
`token_spans` maps their character spans to a tokenized text's token positions.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastrag.text.ja_wordpiece import copy_tokenizer

# A sentence ends at . ! ? (followed by a space) or at 。！？ (Japanese needs no space),
# with closing quotes and brackets kept on the sentence they close.
_SENTENCE_END = re.compile(r"(?:[.!?]+[\"')\]]*(?=\s)|[。！？]+[」』）”’]*)")
_PARAGRAPH = re.compile(r"\n\s*\n")
_SPACE = re.compile(r"\s+")


def _cuts(text: str, start: int, end: int, pattern: re.Pattern[str]) -> list[int]:
    """Positions in (start, end) just after each match of `pattern`."""
    return [m.end() for m in pattern.finditer(text, start, end) if start < m.end() < end]


def _pack(
    text: str, start: int, end: int, limit_of: Callable[[int], int]
) -> list[tuple[int, int]]:
    """Spans covering [start, end), each ending at or before `limit_of(its start)`, cut at
    the best boundary in the last three quarters of the room: a paragraph break, then a
    sentence end, then whitespace, else a hard cut at the limit."""
    spans: list[tuple[int, int]] = []
    pos = start
    while True:
        limit = min(limit_of(pos), end)
        if limit >= end:
            break
        limit = max(limit, pos + 1)
        cut = 0
        for pattern in (_PARAGRAPH, _SENTENCE_END, _SPACE):
            found = _cuts(text, pos + (limit - pos) // 4, limit, pattern)
            if found:
                cut = found[-1]
                break
        if not cut:
            cut = limit
        spans.append((pos, cut))
        pos = cut
    spans.append((pos, end))
    return spans


def split_passages(
    text: str,
    *,
    max_chars: int = 1000,
    max_tokens: int | None = None,
    tokenizer: Any = None,
) -> list[tuple[int, int]]:
    """Character spans (start, end) of passages of at most `max_chars` characters (and, with
    `max_tokens`, at most that many tokens of `tokenizer`).

    Paragraphs (blank-line separated) are packed together up to the limit; longer ones are
    cut at sentence ends (English . ! ? and Japanese 。！？), else at whitespace, else hard.
    Leading and trailing whitespace is trimmed from every span; whitespace-only text gives [].
    A text within the limits is one passage.

    `max_tokens` counts the tokens of a `tokenizers.Tokenizer` (special tokens not counted;
    it is used without truncation): every passage, tokenized on its own, then has at most
    `max_tokens` tokens, so an encoder whose window holds `max_tokens` plus its special
    tokens and prompt never truncates a passage.
    """
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 16:
        raise ValueError(f"max_chars must be an int >= 16, got {max_chars!r}")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 4:
            raise ValueError(f"max_tokens must be an int >= 4 or None, got {max_tokens!r}")
        if tokenizer is None:
            raise ValueError("max_tokens needs the tokenizer= that counts the tokens")
        return _token_passages(text, max_chars, max_tokens, tokenizer)
    return _trim_all(text, _pack(text, 0, len(text), lambda pos: pos + max_chars))


def _trim_all(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The spans without their leading and trailing whitespace; blank ones dropped."""
    out = []
    for start, end in spans:
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            out.append((start, end))
    return out


def _token_passages(
    text: str, max_chars: int, max_tokens: int, tokenizer: Any
) -> list[tuple[int, int]]:
    """`split_passages` with a token limit: packed on the text's token offsets, then every
    passage counted on its own (a tokenizer can count a piece differently from its place in
    the whole text) and packed again, tighter, when it exceeds the limit."""
    tok = untruncated(tokenizer)
    out: list[tuple[int, int]] = []
    todo = [(0, len(text), max_tokens)]
    while todo:
        start, end, budget = todo.pop(0)
        piece = text[start:end]
        starts = _word_offsets(tok, piece)[:, 0] + start

        def limit_of(
            pos: int, starts: np.ndarray = starts, budget: int = budget, end: int = end
        ) -> int:
            first = int(np.searchsorted(starts, pos, side="left"))
            over = first + budget  # the first token that does not fit
            room = end if over >= len(starts) else int(starts[over])
            return min(room, pos + max_chars)

        spans = _trim_all(text, _pack(text, start, end, limit_of))
        counts = [len(e) for e in tok.encode_batch(
            [text[s:e] for s, e in spans], add_special_tokens=False)] if spans else []
        for (s, e), n in zip(spans, counts, strict=True):
            if n <= max_tokens or budget <= 1 or e - s <= 1:
                out.append((s, e))
            else:  # pack this passage again with a budget smaller by its excess
                todo.append((s, e, max(1, budget - (n - max_tokens) - 1)))
    return sorted(out)


# ---------------------------------------------------------------------------- chunks


@dataclass(frozen=True)
class Chunk:
    """A piece of a document: its text and its character span, ``text == doc[start:end]``."""

    text: str
    start: int
    end: int


#: closing quotes and brackets that stay on the sentence they close
_CLOSERS = "\"'”’)\\]）］」』】〕〉》"
# A run of sentence marks and closers (one character class: no nested repetition, so no
# catastrophic backtracking); `True`: the run must be followed by whitespace or the end.
# English: . ! ? then whitespace or the end of the text, so "3.5" and "e.g.x" stay whole.
_EN_END = (re.compile(rf"[.!?][.!?{_CLOSERS}]*"), True)
# Japanese: 。．！？ need no space after them.
_JA_END = (re.compile(rf"[。．！？][。．！？{_CLOSERS}]*"), False)
# In Japanese text ASCII ! and ? end sentences too (they are rarely followed by a space there).
_JA_ASCII_END = (re.compile(rf"[!?][!?{_CLOSERS}]*"), False)
_SENTENCE_RULES = {
    "auto": (_EN_END, _JA_END),
    "en": (_EN_END,),
    "ja": (_JA_END, _JA_ASCII_END, _EN_END),
}
LANGUAGES = tuple(_SENTENCE_RULES)


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    return text


def _trimmed(text: str, start: int, end: int) -> Chunk | None:
    """The chunk of text[start:end] without its surrounding whitespace (None when blank)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Chunk(text[start:end], start, end) if end > start else None


def _between(text: str, cuts: list[int]) -> list[Chunk]:
    """Trimmed, non-empty chunks between consecutive cut positions (0 and len(text) added)."""
    bounds = [0, *cuts, len(text)]
    out = []
    for start, end in itertools.pairwise(bounds):
        chunk = _trimmed(text, start, end)
        if chunk is not None:
            out.append(chunk)
    return out


def sentences(text: str, *, language: str = "auto") -> list[Chunk]:
    """Sentences of `text` with their character spans, in order, never overlapping.

    A sentence ends:
      - ("en", "auto") after . ! ? followed by whitespace or the end of the text, with any
        closing quotes / brackets (``" ' ” ’ ) ]``) kept on the sentence: ``He said "Go."``;
        no space, no end: "3.5", "a.b" stay whole (abbreviations such as "Dr. X" do end one);
      - ("ja", "auto") after 。．！？ (no space needed), with closing brackets and quotes
        (」』）】〕〉》”’ " ' ) ]) kept on the sentence: 「行く。」と言った。 gives 「行く。」
        and と言った。 (a quoted sentence is a sentence); "ja" also ends sentences at ASCII
        ! and ? (Japanese text rarely puts a space after them);
      - at every newline.
    Whitespace around sentences belongs to none (spans are trimmed); blank text gives [].
    A text without any boundary is one chunk, and one huge sentence stays one chunk (see
    `token_windows` and `merge_short` to bound chunk sizes).
    """
    text = _check_text(text)
    rule = _SENTENCE_RULES.get(language)
    if rule is None:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, got {language!r}")
    cuts = {m.end() for m in re.finditer("\n", text)}
    n = len(text)
    for pattern, needs_space in rule:
        for m in pattern.finditer(text):
            if not needs_space or m.end() == n or text[m.end()].isspace():
                cuts.add(m.end())
    return _between(text, sorted(cuts))


def paragraphs(text: str) -> list[Chunk]:
    """Paragraphs: the text between blank lines (a newline, optional whitespace, a newline),
    trimmed; a text without blank lines is one paragraph; blank text gives []."""
    text = _check_text(text)
    cuts: list[int] = []
    for m in _PARAGRAPH.finditer(text):
        cuts += [m.start(), m.end()]
    return _between(text, cuts)


_UNTRUNCATED: dict[int, tuple[Any, Any]] = {}


def untruncated(tokenizer: Any) -> Any:
    """A copy of a `tokenizers.Tokenizer` that neither truncates nor pads (cached per object).

    Encoders keep their tokenizer truncated to the model's window; chunkers and long late
    chunking need every token of a document. A tokenizer without truncation or padding is
    returned as it is.
    """
    if getattr(tokenizer, "truncation", None) is None and getattr(
        tokenizer, "padding", None
    ) is None:
        return tokenizer
    hit = _UNTRUNCATED.get(id(tokenizer))
    if hit is not None and hit[0] is tokenizer:
        return hit[1]
    copy = copy_tokenizer(tokenizer)  # keeps a Japanese BERT's MeCab word splitter
    copy.no_truncation()
    copy.no_padding()
    if len(_UNTRUNCATED) > 16:
        _UNTRUNCATED.clear()
    _UNTRUNCATED[id(tokenizer)] = (tokenizer, copy)  # the original is kept: its id stays unique
    return copy


def _word_offsets(tokenizer: Any, text: str) -> np.ndarray:
    """(tokens, 2) character spans of `text`'s tokens, special tokens and empty ones left out."""
    enc = untruncated(tokenizer).encode(text, add_special_tokens=False)
    offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
    return offsets[offsets[:, 1] > offsets[:, 0]]


def token_windows(text: str, tokenizer: Any, *, size: int, overlap: int = 0) -> list[Chunk]:
    """Fixed windows of `size` tokens, consecutive windows sharing `overlap` tokens.

    Tokens come from `tokenizer` (a `tokenizers.Tokenizer`, e.g. ``encoder.model.tokenizer``;
    it is used without truncation, without special tokens). A window's span runs from its first
    token's first character to its last token's last character, so windows overlap in text
    when `overlap` > 0. The last window holds the remaining tokens (it may be shorter); no
    window holds only tokens already in the previous one. Blank text gives [].
    """
    text = _check_text(text)
    for name, value, low in (("size", size, 1), ("overlap", overlap, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if overlap >= size:
        raise ValueError(f"overlap ({overlap}) must be smaller than size ({size})")
    offsets = _word_offsets(tokenizer, text)
    n = len(offsets)
    out = []
    start = 0
    while start < n:
        end = min(start + size, n)
        a, b = int(offsets[start, 0]), int(offsets[end - 1, 1])
        out.append(Chunk(text[a:b], a, b))
        if end == n:
            break
        start = end - overlap
    return out


def merge_short(
    chunks: Sequence[Chunk],
    text: str,
    *,
    budget: int,
    tokenizer: Any = None,
    length: Callable[[str], int] | None = None,
    cross_paragraphs: bool = False,
) -> list[Chunk]:
    """Merges consecutive chunks (sentences) while the merged text fits `budget` tokens.

    Greedy, left to right: a chunk joins the current group when the text from the group's
    start to the chunk's end counts at most `budget` tokens; otherwise it starts a new group.
    A chunk longer than `budget` on its own stays as it is. The merged span covers the text
    between the parts (the whitespace, newlines). Groups do not cross a blank line unless
    `cross_paragraphs`.

    Args:
        chunks: ordered, non-overlapping chunks of `text` (e.g. `sentences(text)`).
        budget: the most tokens of a merged chunk (special tokens not counted).
        tokenizer: a `tokenizers.Tokenizer` to count tokens with, or
        length: any function str -> length (e.g. ``len`` for characters).
    """
    text = _check_text(text)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be an int >= 1, got {budget!r}")
    if (tokenizer is None) == (length is None):
        raise ValueError("pass exactly one of tokenizer= and length=")
    if length is None:
        tok = untruncated(tokenizer)

        def length(s: str) -> int:
            return len(tok.encode(s, add_special_tokens=False).ids)

    check_spans(chunks, text, overlapping=False)
    out: list[Chunk] = []
    group: tuple[int, int] | None = None
    for chunk in chunks:
        if group is not None:
            joined = (group[0], chunk.end)
            blank = not cross_paragraphs and _PARAGRAPH.search(text, group[1], chunk.start)
            if not blank and length(text[joined[0] : joined[1]]) <= budget:
                group = joined
                continue
            out.append(Chunk(text[group[0] : group[1]], *group))
        group = (chunk.start, chunk.end)
    if group is not None:
        out.append(Chunk(text[group[0] : group[1]], *group))
    return out


def check_spans(chunks: Sequence[Chunk], text: str, *, overlapping: bool = True) -> None:
    """ValueError unless every chunk satisfies 0 <= start <= end <= len(text) (and, with
    ``overlapping=False``, each starts at or after the previous one's end)."""
    previous_end = 0
    for i, c in enumerate(chunks):
        if not (isinstance(c.start, (int, np.integer)) and isinstance(c.end, (int, np.integer))):
            raise TypeError(f"chunk {i}: start and end must be ints, got {c.start!r}, {c.end!r}")
        if not 0 <= c.start <= c.end <= len(text):
            raise ValueError(
                f"chunk {i} spans [{c.start}, {c.end}), outside the text's {len(text)} characters"
                " (or start > end)"
            )
        if not overlapping and c.start < previous_end:
            raise ValueError(f"chunk {i} starts at {c.start}, before the previous chunk's end")
        previous_end = c.end


# ---------------------------------------------------------------------------- token spans


def token_spans(
    chunks: Sequence[Chunk], offsets: np.ndarray, *, prompt_chars: int = 0
) -> np.ndarray:
    """(len(chunks), 2) int64 token spans [start, end) of character-span chunks.

    `offsets` are the (tokens, 2) character spans of a tokenized text, as a model saw it:
    special tokens ([CLS], [SEP]: offsets (0, 0), or any empty span) and a prompt put before the
    text (its `prompt_chars` characters: chunk spans are shifted by it) included, so token
    positions count the leading [CLS] and the prompt's tokens, as `TokenVectors.offsets` does.
    A chunk's span covers every token whose characters lie inside the chunk's; a token cut by
    a chunk boundary belongs to neither side. A chunk without tokens (blank, or beyond the
    tokenized text) gets an empty span (start == end).
    """
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    starts = np.array([c.start for c in chunks], dtype=np.int64) + prompt_chars
    ends = np.array([c.end for c in chunks], dtype=np.int64) + prompt_chars
    real = np.flatnonzero(offsets[:, 1] > offsets[:, 0])
    out = np.zeros((len(chunks), 2), dtype=np.int64)
    if not len(real) or not len(chunks):
        return out
    s, e = offsets[real, 0], offsets[real, 1]
    if np.all(np.diff(s) >= 0) and np.all(np.diff(e) >= 0):
        first = np.searchsorted(s, starts, side="left")  # first token starting inside
        last = np.searchsorted(e, ends, side="right") - 1  # last token ending inside
    else:  # offsets out of order (unusual tokenizers): a mask per chunk
        first = np.empty(len(chunks), dtype=np.int64)
        last = np.empty(len(chunks), dtype=np.int64)
        for i, (a, b) in enumerate(zip(starts, ends, strict=True)):
            inside = np.flatnonzero((s >= a) & (e <= b))
            first[i], last[i] = (inside[0], inside[-1]) if len(inside) else (0, -1)
    ok = first <= last
    out[ok, 0] = real[first[ok]]
    out[ok, 1] = real[last[ok]] + 1
    return out
