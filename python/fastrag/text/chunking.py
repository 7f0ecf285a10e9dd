"""Splitting documents into passages with character spans (for chunk-level indexing)."""

from __future__ import annotations

import re

# A sentence ends at . ! ? (followed by a space) or at 。！？ (Japanese needs no space),
# with closing quotes and brackets kept on the sentence they close.
_SENTENCE_END = re.compile(r"(?:[.!?]+[\"')\]]*(?=\s)|[。！？]+[」』）”’]*)")
_PARAGRAPH = re.compile(r"\n\s*\n")


def _cuts(text: str, start: int, end: int, pattern: re.Pattern[str]) -> list[int]:
    """Positions in (start, end) just after each match of `pattern`."""
    return [m.end() for m in pattern.finditer(text, start, end) if start < m.end() < end]


def _pack(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    """Spans of at most `max_chars` covering [start, end), cut at the best boundary found:
    a paragraph break, then a sentence end, then whitespace, else a hard cut."""
    spans: list[tuple[int, int]] = []
    pos = start
    while end - pos > max_chars:
        limit = pos + max_chars
        cut = 0
        for pattern in (_PARAGRAPH, _SENTENCE_END, re.compile(r"\s+")):
            found = _cuts(text, pos + max_chars // 4, limit, pattern)
            if found:
                cut = found[-1]
                break
        if not cut:
            cut = limit
        spans.append((pos, cut))
        pos = cut
    spans.append((pos, end))
    return spans


def split_passages(text: str, *, max_chars: int = 1000) -> list[tuple[int, int]]:
    """Character spans (start, end) of passages of at most `max_chars` characters.

    Paragraphs (blank-line separated) are packed together up to `max_chars`; longer ones are
    cut at sentence ends (English . ! ? and Japanese 。！？), else at whitespace, else hard.
    Leading and trailing whitespace is trimmed from every span; whitespace-only text gives [].
    A text within `max_chars` is one passage.
    """
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 16:
        raise ValueError(f"max_chars must be an int >= 16, got {max_chars!r}")
    spans = []
    for start, end in _pack(text, 0, len(text), max_chars):
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            spans.append((start, end))
    return spans
