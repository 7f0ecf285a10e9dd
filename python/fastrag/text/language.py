"""The one language detector of fastrag: English or Japanese, by script.

Used by the analyzers (which analyzer a text goes to), by collections (the language of each
chunk) and by hybrid search (whether the encoder knows the query's language).
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["CJK", "IDEOGRAPHS", "KANA", "LATIN", "detect_language", "latin_runs"]

Language = Literal["en", "ja"]

IDEOGRAPHS = "\u3005\u3006\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"
KANA = "\u3041-\u309f\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff"  # without the middle dot ・
CJK = KANA + IDEOGRAPHS
_KANA_RE = re.compile(f"[{KANA}\uff66-\uff9f]")  # plus half-width katakana
_IDEOGRAPH_RUN_RE = re.compile(f"[{IDEOGRAPHS}]+")
LATIN = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\uff21-\uff3a\uff41-\uff5a"
_LATIN_RUN_RE = re.compile(f"[{LATIN}]+")
_DIGITS = "0-9\uff10-\uff19"
# Latin words and what joins them into one phrase (spaces, hyphens, apostrophes, periods),
# starting at a letter (or digits right before one) and ending at a letter or digit
_LATIN_SPAN_RE = re.compile(
    f"(?:[{_DIGITS}]+)?[{LATIN}](?:[{LATIN}{_DIGITS} \\t\\-'\u2019.&]*[{LATIN}{_DIGITS}])?"
)


def detect_language(text: str, start: int = 0, end: int | None = None) -> Language:
    """``"ja"`` for Japanese text, ``"en"`` for everything else (of ``text[start:end]``).

    Text is Japanese if it has any kana (half-width katakana included) or if ideographs
    make up at least 30% of its letters (Latin letters plus ideographs): ``"東京"`` is
    Japanese, English with a stray kanji is not, and kana-free Chinese counts as ``"ja"``.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    end = len(text) if end is None else end
    if _KANA_RE.search(text, start, end):
        return "ja"
    ideographs = sum(map(len, _IDEOGRAPH_RUN_RE.findall(text, start, end)))
    if not ideographs:
        return "en"
    latin = sum(map(len, _LATIN_RUN_RE.findall(text, start, end)))
    return "ja" if ideographs >= 0.3 * (ideographs + latin) else "en"


def latin_runs(text: str) -> list[tuple[int, int]]:
    """The (start, end) spans of Latin phrases in `text` ("Boundary layers" in
    "Boundary layersについて"): where a mixed Japanese text hands over to an English analyzer."""
    return [m.span() for m in _LATIN_SPAN_RE.finditer(text)]
