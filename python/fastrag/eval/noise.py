"""Seeded noise injectors over BEIR-layout datasets, in the spirit of NoiserBench.

NoiserBench (Wu et al. 2024) sorts the noise that reaches a RAG context into kinds; for a
retrieval engine the question is how far each kind, put into the corpus or the queries,
moves the ranking. :func:`inject` returns a new :class:`~fastrag.eval.Dataset` plus a
record of what changed; the input is never modified and the output depends only on
``(dataset, kind, rate, seed, target)``.

Kinds and what ``rate`` means for each (see :data:`KINDS`):

``orthographic`` (corpus or queries)
    Typos. In English text a fraction ``rate`` of the words of three letters or more get
    one typo each: two adjacent letters swapped, a letter dropped or a letter replaced by a
    QWERTY neighbour. In Japanese text the units are runs of one script (kanji, hiragana,
    katakana, Latin letters/digits) and a fraction ``rate`` of them get one change: a kanji
    replaced by a homophone (an IME conversion error), a kana with its (han)dakuten
    toggled, a small/large kana switch, a kana of the same row with another vowel,
    hiragana/katakana switched, a character dropped, katakana turned half-width or Latin
    letters/digits turned full-width. Title and text are both affected; nothing else.
``datatype`` (corpus)
    URLs, code (Python, JSON, HTML) and Markdown tables, filled with words drawn from the
    corpus, inserted at sentence boundaries of each document's text; the inserted
    characters amount to ``rate`` times the text's length in expectation.
``illegal`` (corpus)
    Word salad: "sentences" of corpus words in random order (Japanese: content words
    joined by random particles), inserted like ``datatype``.
``semantic`` (corpus, adds documents)
    Near-topic distractors: for ``rate`` x (number of documents) relevant documents, a new
    document made of the sentences of the relevant document's nearest neighbours (lexical
    overlap) that overlap it most, excluding every document relevant to a query the
    relevant document answers; the title is the nearest neighbour's.
``counterfactual`` (corpus, adds documents)
    For ``rate`` x (number of documents) relevant documents, a copy with every number
    changed and a quarter of its entities, at most three (capitalised words, or long
    content words in lower-cased text; katakana, then kanji compounds in Japanese),
    replaced by other corpus entities of the same kind; title kept.
``query`` (queries)
    Typos as ``orthographic`` at ``rate`` plus filler words ("um", "basically", "えーと",
    "ちなみに", ...): ``rate`` x (number of words or script runs) fillers per query in
    expectation.

Added documents get ids ``noise:<kind>:<n>`` (never colliding with an existing id), are
judged non-relevant (qrels are unchanged) and are recorded with the relevant document they
were made for and the queries that document answers. Fractional counts are rounded
stochastically (``2.3`` is 3 with probability 0.3), so expectations match ``rate``.

NoiserBench's supportive and prior noise concern what a generator believes, not what a
ranker retrieves; they have no injector here.
"""

from __future__ import annotations

import logging
import math
import random
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from fastrag.eval.datasets import Dataset
from fastrag.text import ENGLISH_STOPWORDS, detect_language

__all__ = [
    "KINDS",
    "NoiseKind",
    "NoisyDataset",
    "fullwidth",
    "halfwidth_katakana",
    "inject",
    "typo_english",
    "typo_japanese",
]

logger = logging.getLogger(__name__)

CORPUS, QUERIES = "corpus", "queries"
MAX_ENTITIES = 3  # entities changed in a counterfactual copy (a quarter of them, at most 3)
ADDED_PREFIX = "noise:"


@dataclass(frozen=True)
class NoiseKind:
    """A noise kind: where it may go, whether it adds documents and what ``rate`` means."""

    name: str
    targets: tuple[str, ...]
    adds_documents: bool
    rate_meaning: str

    @property
    def default_target(self) -> str:
        return self.targets[0]


KINDS: dict[str, NoiseKind] = {
    k.name: k
    for k in (
        NoiseKind(
            "orthographic",
            (CORPUS, QUERIES),
            False,
            "fraction of words (Japanese: script runs) given one typo, in every text",
        ),
        NoiseKind(
            "datatype",
            (CORPUS,),
            False,
            "inserted URL/code/table characters per character of each document's text",
        ),
        NoiseKind(
            "illegal",
            (CORPUS,),
            False,
            "inserted word-salad characters per character of each document's text",
        ),
        NoiseKind(
            "semantic",
            (CORPUS,),
            True,
            "added near-topic distractors per document of the corpus",
        ),
        NoiseKind(
            "counterfactual",
            (CORPUS,),
            True,
            "added counterfactual copies of relevant documents per document of the corpus",
        ),
        NoiseKind(
            "query",
            (QUERIES,),
            False,
            "fraction of query words given a typo, and filler words per query word",
        ),
    )
}


@dataclass
class NoisyDataset:
    """A noisy copy of a dataset and a record of what the injector changed.

    Attributes:
        dataset: the new dataset (the input is never modified).
        kind: the noise kind (a key of `KINDS`).
        target: "corpus" or "queries": where the noise went.
        rate: the rate it was injected at.
        seed: the seed of every random choice.
        modified_docs: ids of existing documents whose title or text changed.
        modified_queries: ids of queries whose text changed.
        added_docs: added document id -> the relevant document it was made for.
        targets: query id -> added documents made for one of its relevant documents.
    """

    dataset: Dataset
    kind: str
    target: str
    rate: float
    seed: int
    modified_docs: list[str] = field(default_factory=list)
    modified_queries: list[str] = field(default_factory=list)
    added_docs: dict[str, str] = field(default_factory=dict)
    targets: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        """Counts of what changed (for reports and JSON output)."""
        return {
            "docs_modified": len(self.modified_docs),
            "queries_modified": len(self.modified_queries),
            "docs_added": len(self.added_docs),
            "queries_targeted": len(self.targets),
        }


# ---------------------------------------------------------------------------- helpers


def _stochastic_round(x: float, rng: random.Random) -> int:
    """floor(x) plus one with probability frac(x): the expectation is exactly x."""
    n = math.floor(x)
    return n + (1 if rng.random() < x - n else 0)


def _replace_spans(text: str, edits: Iterable[tuple[int, int, str]]) -> str:
    """Replaces non-overlapping (start, end, new) spans of text."""
    out, last = [], 0
    for start, end, new in sorted(edits):
        out.append(text[last:start])
        out.append(new)
        last = end
    out.append(text[last:])
    return "".join(out)


# ---------------------------------------------------------------------------- English typos

_QWERTY = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard_neighbours() -> dict[str, str]:
    where = {c: (r, i) for r, row in enumerate(_QWERTY) for i, c in enumerate(row)}
    table: dict[str, str] = {}
    for c, (r, i) in where.items():
        near = []
        steps = ((0, -1), (0, 1), (-1, 0), (-1, 1), (1, -1), (1, 0))  # rows are staggered
        for rr, ii in ((r + dr, i + di) for dr, di in steps):
            if 0 <= rr < len(_QWERTY) and 0 <= ii < len(_QWERTY[rr]):
                near.append(_QWERTY[rr][ii])
        table[c] = "".join(near)
    return table


_NEIGHBOURS = _keyboard_neighbours()
_EN_WORD_RE = re.compile(r"[^\W\d_]{3,}")


def typo_english(word: str, rng: random.Random) -> str:
    """One typo in ``word`` (3+ letters): adjacent swap, drop, or QWERTY neighbour.

    The result always differs from ``word``.
    """
    op = rng.choice(("swap", "drop", "key"))
    if op == "swap":
        spots = [i for i in range(len(word) - 1) if word[i] != word[i + 1]]
        if spots:
            i = rng.choice(spots)
            return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    elif op == "key":
        spots = [i for i, c in enumerate(word) if c.lower() in _NEIGHBOURS]
        if spots:
            i = rng.choice(spots)
            new = rng.choice(_NEIGHBOURS[word[i].lower()])
            return word[:i] + (new.upper() if word[i].isupper() else new) + word[i + 1 :]
    i = rng.randrange(len(word))
    return word[:i] + word[i + 1 :]


# ---------------------------------------------------------------------------- Japanese typos

_HIRA, _KATA = "\u3041-\u3096", "\u30a1-\u30fa\u30fc"
_KANJI = "\u3005\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_JA_UNIT_RE = re.compile(
    f"(?P<kanji>[{_KANJI}]+)|(?P<hira>[{_HIRA}]+)|(?P<kata>[{_KATA}]+)"
    r"|(?P<latin>[A-Za-z0-9]+)"
)


def _to_kata(s: str) -> str:
    return "".join(chr(ord(c) + 0x60) if "\u3041" <= c <= "\u3096" else c for c in s)


def _to_hira(s: str) -> str:
    return "".join(chr(ord(c) - 0x60) if "\u30a1" <= c <= "\u30f6" else c for c in s)


def _pairs_table(pairs: str) -> dict[str, list[str]]:
    """ "かが はばぱ" -> each character maps to the others of its group, hiragana and katakana."""
    table: dict[str, list[str]] = {}
    for group in pairs.split():
        for g in (group, _to_kata(group)):
            for c in g:
                table[c] = [o for o in g if o != c]
    return table


_DAKUTEN = _pairs_table(
    "かが きぎ くぐ けげ こご さざ しじ すず せぜ そぞ ただ ちぢ つづ てで とど "
    "はばぱ ひびぴ ふぶぷ へべぺ ほぼぽ"
)
_SMALL = _pairs_table("あぁ いぃ うぅ えぇ おぉ つっ やゃ ゆゅ よょ わゎ")
_ROWS = _pairs_table(
    "あいうえお かきくけこ さしすせそ たちつてと なにぬねの はひふへほ まみむめも やゆよ "
    "らりるれろ がぎぐげご ざじずぜぞ だぢづでど ばびぶべぼ ぱぴぷぺぽ"
)
# Kanji sharing an on-reading: what a kana-kanji converter offers for the same sound.
_HOMOPHONES = _pairs_table(
    "高校考交公行工広口効向港光好構降 間感館関観完官管漢刊慣巻 会回界海開解改階快械 "
    "気機器期記起基帰紀季規喜危 市史使私士始死指思止師支視詩紙 正生性成政製制西声整精清晴 "
    "自字時事次治持示辞寺 小少章商省賞証象称唱焼照 化科家課下火花価果歌加可夏河 "
    "当東島党投等頭答冬登統灯湯討 長町調朝超張帳兆鳥腸庁 先線選戦船専千川泉洗浅 "
    "新心進真信神深身森親針震 県見件建権研険検験券健憲 方法放報豊訪宝包砲 "
    "大体対代台待隊態退帯貸 文分聞 国告黒穀刻 上場条状常情城乗 定低提程庭停底帝弟 "
    "主手首種取守酒 十住重充従柔 中注昼虫柱宙忠駐 名明命迷鳴盟 用要洋様葉陽容曜養 "
    "両料量良領漁療 経計形係系軽型景警径敬 技議義疑儀 五午語誤護 学楽額 表票評標氷 "
    "以意異移位医委衣囲 田電伝殿 地知池置値 年念然燃 物仏 部歩府付不布負父"
)
_FULLWIDTH = {c: chr(ord(c) + 0xFEE0) for c in map(chr, range(0x21, 0x7F))}


def _halfwidth_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for cp in range(0xFF66, 0xFF9E):
        table.setdefault(unicodedata.normalize("NFKC", chr(cp)), chr(cp))
    for c in map(chr, range(0x30A1, 0x30FB)):
        decomposed = unicodedata.normalize("NFD", c)
        base, marks = decomposed[0], decomposed[1:]
        if marks and base in table:
            mark = {"\u3099": "\uff9e", "\u309a": "\uff9f"}.get(marks[0])
            if mark:
                table[c] = table[base] + mark
    return table


_HALFWIDTH = _halfwidth_table()


def fullwidth(text: str) -> str:
    """ASCII letters, digits and symbols as their full-width forms (NFKC undoes it)."""
    return "".join(_FULLWIDTH.get(c, c) for c in text)


def halfwidth_katakana(text: str) -> str:
    """Katakana as half-width katakana, voiced marks split off (NFKC undoes it)."""
    return "".join(_HALFWIDTH.get(c, c) for c in text)


def _swap_char(unit: str, table: dict[str, list[str]], rng: random.Random) -> str | None:
    spots = [i for i, c in enumerate(unit) if c in table]
    if not spots:
        return None
    i = rng.choice(spots)
    return unit[:i] + rng.choice(table[unit[i]]) + unit[i + 1 :]


def _japanese_ops(unit: str, script: str) -> list[str]:
    """The perturbations that apply to a script run (empty: the run is not eligible)."""
    ops: list[str] = []
    if script == "kanji":
        ops += ["homophone"] if any(c in _HOMOPHONES for c in unit) else []
    elif script in ("hira", "kata"):
        for name, table in (("dakuten", _DAKUTEN), ("small", _SMALL), ("vowel", _ROWS)):
            if any(c in table for c in unit):
                ops.append(name)
        if any(c != "ー" for c in unit):
            ops.append("script")
        if script == "kata" and any(c in _HALFWIDTH for c in unit):
            ops.append("halfwidth")
    else:  # Latin letters and digits
        ops.append("fullwidth")
        if len(unit) >= 3 and unit.isalpha():
            ops += ["en", "en", "en"]
    if len(unit) >= 2 and script != "latin":
        ops.append("drop")
    return ops


def typo_japanese(unit: str, rng: random.Random, script: str | None = None) -> str:
    """One change in a Japanese script run (kanji, hiragana, katakana or Latin/digits).

    Raises ValueError when no perturbation applies (e.g. one kanji without a homophone).
    The result always differs from ``unit``.
    """
    if script is None:
        m = _JA_UNIT_RE.fullmatch(unit)
        if m is None:
            raise ValueError(f"{unit!r} is not a run of one script")
        script = m.lastgroup or "latin"
    ops = _japanese_ops(unit, script)
    if not ops:
        raise ValueError(f"no perturbation applies to {unit!r}")
    op = rng.choice(ops)
    if op == "homophone":
        return _swap_char(unit, _HOMOPHONES, rng) or unit
    if op in ("dakuten", "small", "vowel"):
        table = {"dakuten": _DAKUTEN, "small": _SMALL, "vowel": _ROWS}[op]
        return _swap_char(unit, table, rng) or unit
    if op == "script":
        i = rng.choice([i for i, c in enumerate(unit) if c != "ー"])
        switch = _to_kata if script == "hira" else _to_hira
        return unit[:i] + switch(unit[i]) + unit[i + 1 :]
    if op == "halfwidth":
        return halfwidth_katakana(unit)
    if op == "fullwidth":
        return fullwidth(unit)
    if op == "en":
        return typo_english(unit, rng)
    i = rng.randrange(len(unit))  # drop
    return unit[:i] + unit[i + 1 :]


def _units(text: str, lang: str) -> list[tuple[int, int, str]]:
    """Spans (start, end, script) of the units that a typo may hit."""
    if lang == "en":
        return [(m.start(), m.end(), "en") for m in _EN_WORD_RE.finditer(text)]
    spans = []
    for m in _JA_UNIT_RE.finditer(text):
        script = m.lastgroup or "latin"
        if _japanese_ops(m.group(), script):
            spans.append((m.start(), m.end(), script))
    return spans


def _typos(text: str, lang: str, rate: float, rng: random.Random) -> str:
    """Perturbs a fraction ``rate`` of the eligible units of ``text`` (one typo each)."""
    units = _units(text, lang)
    n = min(len(units), _stochastic_round(rate * len(units), rng))
    if n == 0:
        return text
    edits = []
    for start, end, script in sorted(rng.sample(units, n)):
        unit = text[start:end]
        new = typo_english(unit, rng) if script == "en" else typo_japanese(unit, rng, script)
        edits.append((start, end, new))
    return _replace_spans(text, edits)


# ---------------------------------------------------------------------------- fillers

_FILLERS = {
    "en": (
        "um",
        "uh",
        "like",
        "you know",
        "basically",
        "actually",
        "well",
        "I mean",
        "kind of",
        "so",
        "please",
        "just",
    ),
    "ja": (
        "えーと",
        "あの",
        "ちなみに",
        "なんか",
        "ところで",
        "まあ",
        "えっと",
        "そういえば",
        "ちょっと",
        "教えてください",
    ),
}


def _fillers(text: str, lang: str, rate: float, rng: random.Random) -> str:
    """Inserts rate x (words or script runs) filler words at word/run boundaries."""
    if lang == "en":
        spots = sorted({0, *(m.end() for m in re.finditer(r"\S+", text))})
    else:
        spots = sorted({0, *(m.start() for m in _JA_UNIT_RE.finditer(text))})
    n_units = len(spots) - 1 if lang == "en" else len(spots)
    n = _stochastic_round(rate * max(n_units, 1), rng)
    if n == 0:
        return text
    edits = []
    for _ in range(n):
        at, filler = rng.choice(spots), rng.choice(_FILLERS[lang])
        new = f"{filler}、" if lang == "ja" else (f"{filler} " if at == 0 else f" {filler}")
        edits.append((at, at, new))
    return _replace_spans(text, edits)


# ---------------------------------------------------------------------------- corpus words


_CJK_RE = re.compile(f"[{_KANJI}{_HIRA}{_KATA}]")


def _script(run: str) -> str | None:
    """The script group of a single-script run ("kanji", "hira", "kata", "latin") or None."""
    m = _JA_UNIT_RE.fullmatch(run)
    return m.lastgroup if m else None


@dataclass
class _Pools:
    """Words drawn from the corpus (frequency-weighted lists) for generated material."""

    words: dict[str, list[str]]  # "en": all Latin-script words; "ja": kanji/katakana runs
    capitalised: list[str]
    long_words: list[str]
    kanji: list[str]
    katakana: list[str]

    @classmethod
    def build(cls, texts: Iterable[str]) -> _Pools:
        en: list[str] = []
        caps: list[str] = []
        longs: list[str] = []
        kanji: list[str] = []
        kata: list[str] = []
        for text in texts:
            for m in re.finditer(r"[^\W\d_]+", text):
                w = m.group()
                if _CJK_RE.search(w):
                    continue
                en.append(w.lower())
                if len(w) > 2 and w[0].isupper() and w[1:].islower():
                    caps.append(w)
                if len(w) >= 6 and w.lower() not in ENGLISH_STOPWORDS:
                    longs.append(w.lower())
            for m in _JA_UNIT_RE.finditer(text):
                if m.lastgroup == "kanji" and len(m.group()) >= 2:
                    kanji.append(m.group())
                elif m.lastgroup == "kata" and len(m.group()) >= 2:
                    kata.append(m.group())
        en = en or ["data", "value", "result", "table", "index", "record"]
        ja = kanji + kata or ["データ", "情報", "結果"]
        return cls({"en": en, "ja": ja}, caps, longs, kanji, kata)

    def word(self, lang: str, rng: random.Random) -> str:
        return rng.choice(self.words[lang])


def _replacement(entity: str, pool: list[str], rng: random.Random) -> str | None:
    """Another pool word of the same script as entity (a few tries), or None."""
    script = _script(entity)
    for _ in range(20 if pool else 0):
        word = rng.choice(pool)
        if word != entity and word.lower() != entity.lower() and _script(word) == script:
            return word
    return None


def _ident(pools: _Pools, rng: random.Random) -> str:
    words = [w for w in (pools.word("en", rng), pools.word("en", rng)) if w.isascii()]
    return "_".join(words) or f"value_{rng.randint(1, 99)}"


def _snippet_datatype(lang: str, pools: _Pools, rng: random.Random) -> tuple[str, bool]:
    """A URL, a code fragment or a table; (text, is_block)."""
    w = [pools.word(lang, rng) for _ in range(4)]
    n = rng.randint(2, 9999)
    kind = rng.choice(("url", "python", "json", "html", "table"))
    if kind == "url":
        if lang == "ja":
            return f"https://ja.example.org/wiki/{quote(w[0])}?oldid={n}", False
        return f"https://www.{w[0]}-{w[1]}.example.com/{w[2]}/{w[3]}.html?id={n}", False
    if kind == "python":
        name, arg = _ident(pools, rng), _ident(pools, rng)
        return f"def {name}({arg}):\n    return {arg} * {n}  # {w[0]} {w[1]}", True
    if kind == "json":
        return f'{{"{w[0]}": {n}, "{w[1]}": "{w[2]}", "{_ident(pools, rng)}": null}}', False
    if kind == "html":
        return f'<div class="{_ident(pools, rng)}"><span>{w[0]} {w[1]}</span></div>', False
    rows = [f"| {w[0]} | {w[1]} | {w[2]} |", "|---|---|---|"]
    for _ in range(rng.randint(2, 3)):
        rows.append(
            f"| {pools.word(lang, rng)} | {rng.randint(0, 999)} | "
            f"{rng.randint(0, 99)}.{rng.randint(0, 9)} |"
        )
    return "\n".join(rows), True


_PARTICLES = ("の", "は", "を", "に", "が", "と", "で", "も", "から", "へ", "より")


def _snippet_illegal(lang: str, pools: _Pools, rng: random.Random) -> tuple[str, bool]:
    """A grammatical-looking sentence of random corpus words."""
    if lang == "ja":
        parts = []
        for _ in range(rng.randint(3, 7)):
            parts += [pools.word("ja", rng), rng.choice(_PARTICLES)]
        return "".join(parts[:-1]) + "。", False
    words = [pools.word("en", rng) for _ in range(rng.randint(6, 14))]
    return " ".join(words).capitalize() + ".", False


# After a sentence end and its space (never inside "2.5"), after a Japanese full stop or a line.
_BOUNDARY_RE = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])|\n")


def _insert_snippets(
    text: str,
    lang: str,
    rate: float,
    make: Callable[[str, _Pools, random.Random], tuple[str, bool]],
    pools: _Pools,
    rng: random.Random,
) -> str:
    """Inserts snippets at sentence boundaries, about rate x len(text) characters in all."""
    budget = rate * len(text)
    if budget <= 0:
        return text
    spots = sorted({0, len(text), *(m.end() for m in _BOUNDARY_RE.finditer(text))})
    edits = []
    while budget > 0:
        snippet, block = make(lang, pools, rng)
        # Accept a snippet larger than what is left with probability left/size, so that
        # the expected inserted length is the budget even for short texts.
        if len(snippet) > budget and rng.random() >= budget / len(snippet):
            break
        at = rng.choice(spots)
        sep = "\n" if block else " "
        edits.append((at, at, (sep if at > 0 else "") + snippet + (sep if at < len(text) else "")))
        budget -= len(snippet)
    return _replace_spans(text, edits)


# ---------------------------------------------------------------------------- added documents

_SENTENCE_RE = re.compile(r"[^.!?。！？\n]+(?:[.!?。！？]+|(?=\n)|$)")
_NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)*")


def _sim_tokens(text: str, lang: str) -> list[str]:
    """Tokens for a rough lexical similarity: content words, or CJK character bigrams."""
    if lang == "en":
        return [w for w in re.findall(r"[^\W\d_]{3,}", text.lower()) if w not in ENGLISH_STOPWORDS]
    tokens = []
    for m in re.finditer(f"[{_KANJI}{_HIRA}{_KATA}]+|[A-Za-z0-9]+", text):
        run = m.group()
        if run.isascii():
            tokens.append(run.lower())
        else:
            tokens += [run[i : i + 2] for i in range(max(1, len(run) - 1))]
    return tokens


def _relevance_groups(dataset: Dataset) -> dict[str, list[str]]:
    """Relevant document id -> the judged queries it answers (in qrels order)."""
    groups: dict[str, list[str]] = {}
    for qid, rels in dataset.qrels.items():
        for did, grade in rels.items():
            if grade > 0 and did in dataset.corpus:
                groups.setdefault(did, []).append(qid)
    return groups


def _pick_sources(dataset: Dataset, rate: float, rng: random.Random) -> list[str]:
    groups = _relevance_groups(dataset)
    wanted = _stochastic_round(rate * len(dataset.corpus), rng)
    if wanted > len(groups):
        logger.warning(
            "rate %.3g asks for %d added documents but only %d documents are relevant to a "
            "query; adding %d",
            rate,
            wanted,
            len(groups),
            len(groups),
        )
    return rng.sample(list(groups), min(wanted, len(groups)))


def _distractors(
    dataset: Dataset, sources: list[str], rng: random.Random
) -> dict[str, dict[str, str] | None]:
    """Near-topic documents made of other documents' sentences, one per source."""
    from fastrag.index import BM25  # pre-tokenized: no analyzer runs here

    if not sources:
        return {}

    ids, _ = dataset.documents()
    texts = [dataset.corpus[i].get("text", "") for i in ids]
    langs = [
        detect_language(f"{dataset.corpus[i].get('title', '')} {t}")
        for i, t in zip(ids, texts, strict=True)
    ]
    tokens = [_sim_tokens(t, lang) for t, lang in zip(texts, langs, strict=True)]
    position = {d: n for n, d in enumerate(ids)}
    index = BM25(analyzer="bigram")
    index.add(tokens, ids=ids)
    groups = _relevance_groups(dataset)
    excluded = {s: {d for q in groups[s] for d in dataset.qrels[q]} | {s} for s in sources}
    depth = min(len(ids), 10 + max((len(e) for e in excluded.values()), default=0))
    queries = [sorted(set(tokens[position[s]])) or ["\x00"] for s in sources]
    results = index.search(queries, k=depth)
    made: dict[str, dict[str, str] | None] = {}
    for s, hits in zip(sources, results, strict=True):
        near = [str(h.id) for h in hits if str(h.id) not in excluded[s]][:5]
        if not near:
            others = [d for d in ids if d not in excluded[s]]
            near = rng.sample(others, min(3, len(others)))
        if not near:
            made[s] = None
            continue
        own = set(tokens[position[s]])
        lang = langs[position[s]]
        candidates = []
        for rank, d in enumerate(near):
            for m in _SENTENCE_RE.finditer(texts[position[d]]):
                sentence = m.group().strip()
                if sentence:
                    toks = _sim_tokens(sentence, lang)
                    overlap = len(own.intersection(toks)) / math.sqrt(len(toks) + 1)
                    candidates.append((-overlap, rank, rng.random(), sentence))
        candidates.sort()
        picked, size, goal = [], 0, max(len(texts[position[s]]), 1)
        for *_, sentence in candidates:
            if size >= goal:
                break
            picked.append(sentence)
            size += len(sentence)
        if not picked:
            made[s] = None
            continue
        title = dataset.corpus[near[0]].get("title", "")
        made[s] = {"title": title, "text": ("" if lang == "ja" else " ").join(picked)}
    return made


def _change_number(number: str, rng: random.Random) -> str:
    digits = [i for i, c in enumerate(number) if c.isdigit()]
    while True:
        chars = list(number)
        for j, i in enumerate(digits):
            low = 1 if j == 0 and number[i] != "0" and len(digits) > 1 else 0
            chars[i] = str(rng.randint(low, 9))
        new = "".join(chars)
        if new != number:
            return new


def _counterfactual(
    doc: dict[str, str], pools: _Pools, rng: random.Random
) -> dict[str, str] | None:
    """A copy of doc with every number and a few entities changed (title kept).

    Entities are capitalised words inside sentences, or (in lower-cased English such as
    cranfield) content words of six letters or more; katakana and kanji compounds in
    Japanese. Entities that occur in the title stay, so the copy keeps its topic.
    """
    title, text = doc.get("title", ""), doc.get("text", "")
    lang = detect_language(f"{title} {text}")
    mapping = {n: _change_number(n, rng) for n in dict.fromkeys(_NUMBER_RE.findall(text))}
    if lang == "en":
        caps = re.findall(r"(?<=[a-z,;:] )[A-Z][a-z]{2,}", text)
        if caps and pools.capitalised:
            candidates, pools_by_entity = caps, {"": pools.capitalised}
        else:
            candidates = [w for w in re.findall(r"[a-z]{6,}", text) if w not in ENGLISH_STOPWORDS]
            pools_by_entity = {"": pools.long_words}
    else:
        candidates = [
            m.group()
            for m in _JA_UNIT_RE.finditer(text)
            if m.lastgroup in ("kanji", "kata") and len(m.group()) >= 2
        ]
        pools_by_entity = {"kanji": pools.kanji, "kata": pools.katakana}
    lowered_title = title.lower()
    candidates = [c for c in dict.fromkeys(candidates) if c.lower() not in lowered_title]
    rng.shuffle(candidates)
    # Katakana runs (names, places) before kanji compounds; a few entities, not the whole text.
    candidates.sort(key=lambda c: _script(c) != "kata")
    for entity in candidates[: min(MAX_ENTITIES, math.ceil(len(candidates) / 4))]:
        pool = pools_by_entity.get(_script(entity) or "", pools_by_entity.get("", []))
        new = _replacement(entity, pool, rng)
        if new is not None:
            mapping[entity] = new
    if not mapping:
        return None
    keys = "|".join(map(re.escape, sorted(mapping, key=len, reverse=True)))
    # Whole tokens only: never a digit inside "2.5" or a word inside a longer word.
    pattern = re.compile(rf"(?<![\w.,])(?:{keys})(?!\w)" if lang == "en" else keys)
    new_text = pattern.sub(lambda m: mapping[m.group()], text)
    if new_text == text:
        return None
    return {"title": title, "text": new_text}


def _added_id(kind: str, n: int, taken: Mapping[str, object]) -> str:
    doc_id = f"{ADDED_PREFIX}{kind}:{n}"
    while doc_id in taken:
        doc_id += "'"
    return doc_id


# ---------------------------------------------------------------------------- inject


def inject(
    dataset: Dataset, kind: str, rate: float, seed: int = 0, *, target: str | None = None
) -> NoisyDataset:
    """Returns a noisy copy of ``dataset`` and a record of what changed.

    Args:
        dataset: a loaded BEIR dataset; never modified.
        kind: one of :data:`KINDS` ("orthographic", "datatype", "illegal", "semantic",
            "counterfactual", "query").
        rate: in [0, 1]; its meaning per kind is in the module docstring and
            ``KINDS[kind].rate_meaning``.
        seed: the same seed gives the identical dataset; every random choice comes from it.
        target: "corpus" or "queries" where the kind allows both (orthographic); defaults
            to the kind's first target.
    """
    spec = KINDS.get(kind)
    if spec is None:
        raise ValueError(f"unknown noise kind {kind!r}; choose from {', '.join(KINDS)}")
    target = spec.default_target if target is None else target
    if target not in spec.targets:
        raise ValueError(f"{kind} noise goes into {' or '.join(spec.targets)}, not {target!r}")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise ValueError(f"rate must be a number in [0, 1], got {rate!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    rate = float(rate)
    # A string seed goes through SHA-512: stable across processes and Python versions.
    rng = random.Random(f"fastrag.eval.noise/{kind}/{target}/{seed}")
    corpus = {i: dict(d) for i, d in dataset.corpus.items()}
    queries = dict(dataset.queries)
    qrels = {q: dict(r) for q, r in dataset.qrels.items()}
    out = NoisyDataset(
        Dataset(f"{dataset.name}+{kind}@{rate:g}", corpus, queries, qrels),
        kind,
        target,
        rate,
        seed,
    )

    if target == QUERIES:
        for qid, text in dataset.queries.items():
            lang = detect_language(text)
            new = _typos(text, lang, rate, rng)
            if kind == "query":
                new = _fillers(new, lang, rate, rng)
            if new != text:
                queries[qid] = new
                out.modified_queries.append(qid)
    elif kind == "orthographic":
        for did, doc in corpus.items():
            lang = detect_language(f"{doc.get('title', '')} {doc.get('text', '')}")
            changed = False
            for key in ("title", "text"):
                if doc.get(key):
                    new = _typos(doc[key], lang, rate, rng)
                    changed |= new != doc[key]
                    doc[key] = new
            if changed:
                out.modified_docs.append(did)
    elif kind in ("datatype", "illegal"):
        pools = _Pools.build(d.get("text", "") for d in dataset.corpus.values())
        make = _snippet_datatype if kind == "datatype" else _snippet_illegal
        for did, doc in corpus.items():
            text = doc.get("text", "")
            lang = detect_language(f"{doc.get('title', '')} {text}")
            new = _insert_snippets(text, lang, rate, make, pools, rng)
            if new != text:
                doc["text"] = new
                out.modified_docs.append(did)
    else:  # semantic / counterfactual: add documents
        sources = _pick_sources(dataset, rate, rng)
        made: dict[str, dict[str, str] | None]
        if kind == "semantic":
            made = _distractors(dataset, sources, rng)
        else:
            pools = _Pools.build(d.get("text", "") for d in dataset.corpus.values())
            made = {s: _counterfactual(dataset.corpus[s], pools, rng) for s in sources}
        groups = _relevance_groups(dataset)
        for s in sources:
            added = made[s]
            if added is None:
                logger.info("no %s document could be made for %r", kind, s)
                continue
            new_id = _added_id(kind, len(out.added_docs), corpus)
            corpus[new_id] = added
            out.added_docs[new_id] = s
            for qid in groups[s]:
                out.targets.setdefault(qid, []).append(new_id)
    logger.info("%s noise at %.3g (seed %d): %s", kind, rate, seed, out.summary())
    return out
