"""Japanese BERT tokenizers (``BertJapaneseTokenizer``) as a fast ``tokenizers.Tokenizer``.

cl-tohoku/bert-base-japanese-v3 and the models built on it (Ruri v1/v2 among them) split
text into words with MeCab, then each word into WordPiece pieces (or characters) of their
vocabulary. transformers has no fast tokenizer for them, so fastrag builds one:

- ``tokenizer.json`` holds everything `tokenizers` can say itself: the WordPiece model over
  the model's vocabulary (same greedy longest match, same 100-character limit), NFKC when the
  model normalises, the special and added tokens (matched on the raw text, as transformers
  does), ``[CLS] A [SEP] (B [SEP])`` with token types 0 / 1, and a whitespace placeholder for
  the word splitter;
- the manifest entry ``word_splitter`` (`WordSplitter.to_dict`) says how to split words:
  MeCab (fugashi) with the named dictionary, lowercasing, never-split words, WordPiece or
  characters. `attach` puts that splitter in place of the placeholder, so that offsets,
  truncation, pairs and batches are the ones of an ordinary fast tokenizer.

What the splitter reproduces, step by step (transformers' ``MecabTokenizer``,
``WordpieceTokenizer`` / ``CharacterTokenizer``): MeCab runs on the (NFKC-normalised) text;
each surface is lowercased when the model says so (unless it is a never-split word); the
WordPiece path then splits a surface at whitespace (MeCab can return a lone ``\\r``); the
character path NFKC-normalises a surface again and takes it one character at a time.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import threading
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

#: MeCab dictionaries a Japanese BERT may name (``mecab_kwargs.mecab_dic``) -> PyPI package
DICTIONARIES = {"unidic_lite": "unidic-lite", "unidic": "unidic", "ipadic": "ipadic"}
SUBWORDS = ("wordpiece", "character")
JA_EXTRA = 'pip install "fastrag-engine[ja]"'
#: the attribute that marks a tokenizer carrying a word splitter (with its serialised form)
_MARK = "fastrag_word_splitter"
_NON_SPACE = re.compile(r"\S+")
_SPACE = re.compile(r"\s")


@dataclass(frozen=True)
class WordSplitter:
    """How a Japanese BERT splits text into words before WordPiece (the manifest entry).

    Attributes:
        dictionary: the MeCab dictionary package ("unidic_lite", "unidic", "ipadic"), or None
            when `mecab_option` names a system dictionary itself.
        mecab_option: extra MeCab options, as the model's tokenizer_config gives them.
        normalize_text: NFKC before MeCab.
        lower_case: lowercase each word (never-split words excepted).
        never_split: words that keep their case.
        subword: "wordpiece" or "character".
    """

    dictionary: str | None = "unidic_lite"
    mecab_option: str = ""
    normalize_text: bool = True
    lower_case: bool = False
    never_split: tuple[str, ...] = field(default_factory=tuple)
    subword: str = "wordpiece"

    def __post_init__(self) -> None:
        if self.dictionary is not None and self.dictionary not in DICTIONARIES:
            raise ValueError(
                f"unknown MeCab dictionary {self.dictionary!r}: fastrag knows "
                f"{', '.join(DICTIONARIES)} (or None with a -d option in mecab_option)"
            )
        if self.subword not in SUBWORDS:
            raise ValueError(f"subword must be one of {', '.join(SUBWORDS)}, got {self.subword!r}")
        if not isinstance(self.mecab_option, str):
            raise ValueError(f"mecab_option must be a string, got {self.mecab_option!r}")
        if not all(isinstance(w, str) for w in self.never_split):
            raise ValueError(f"never_split must hold strings, got {self.never_split!r}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form kept in an exported folder's manifest."""
        return {
            "kind": "mecab",
            "dictionary": self.dictionary,
            "mecab_option": self.mecab_option,
            "normalize_text": self.normalize_text,
            "lower_case": self.lower_case,
            "never_split": list(self.never_split),
            "subword": self.subword,
        }

    @classmethod
    def from_dict(cls, data: Any) -> WordSplitter:
        """Reads `to_dict`'s form back; ValueError says what is wrong with it."""
        if not isinstance(data, dict) or data.get("kind") != "mecab":
            raise ValueError(f"word_splitter must be a dict with kind 'mecab', got {data!r}")
        flags = {k: data.get(k, d) for k, d in (("normalize_text", True), ("lower_case", False))}
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise ValueError(f"word_splitter.{name} must be true or false, got {value!r}")
        never = data.get("never_split") or []
        if not isinstance(never, list):
            raise ValueError(f"word_splitter.never_split must be a list, got {never!r}")
        return cls(
            dictionary=data.get("dictionary"),
            mecab_option=data.get("mecab_option") or "",
            never_split=tuple(never),
            subword=data.get("subword", "wordpiece"),
            **flags,
        )


def _module(name: str, package: str) -> Any:
    """Imports `name`; the ImportError names what to install (the ``ja`` extra brings fugashi
    and unidic-lite; other dictionaries are their own packages)."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        how = JA_EXTRA if package in ("fugashi", "unidic-lite") else f"pip install {package}"
        raise ImportError(
            f"this Japanese BERT tokenizer needs {package} for its MeCab word splitting: {how}"
        ) from e


def mecab_arguments(splitter: WordSplitter) -> str:
    """The MeCab argument string transformers builds for this dictionary and option."""
    option = splitter.mecab_option
    if splitter.dictionary is None:
        return option
    package = DICTIONARIES[splitter.dictionary]
    dic_dir = str(_module(splitter.dictionary, package).DICDIR)
    if not os.path.isdir(dic_dir):
        raise ImportError(
            f"the {package} package has no dictionary at {dic_dir} "
            f"(for unidic: python -m unidic download)"
        )
    mecabrc = os.path.join(dic_dir, "mecabrc")
    return f'-d "{dic_dir}" -r "{mecabrc}" ' + option


class _MecabWords:
    """The custom pre-tokenizer: MeCab words (one tagger per thread), then the subword split."""

    def __init__(self, splitter: WordSplitter) -> None:
        self.splitter = splitter
        self._fugashi = _module("fugashi", "fugashi")
        self._arguments = mecab_arguments(splitter)
        self._local = threading.local()
        self._tagger()  # a bad dictionary or option fails here, not at the first text

    def _tagger(self) -> Any:
        tagger = getattr(self._local, "tagger", None)
        if tagger is None:
            try:
                tagger = self._fugashi.GenericTagger(self._arguments)
            except RuntimeError as e:
                raise ValueError(f"MeCab could not start with {self._arguments!r}: {e}") from e
            self._local.tagger = tagger
        return tagger

    def words(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, surface) of each MeCab word of `text`, in order."""
        out = []
        pos = 0
        for node in self._tagger()(text):
            surface = node.surface
            start = text.find(surface, pos) if surface else -1
            if start < 0:  # MeCab's surfaces are pieces of the text; an empty one is no word
                continue
            out.append((start, start + len(surface), surface))
            pos = start + len(surface)
        return out

    def _split(self, _: int, normalized: Any) -> list[Any]:
        s = self.splitter
        pieces: list[Any] = []
        for start, end, surface in self.words(str(normalized)):
            word = normalized[start:end]
            if s.lower_case and surface not in s.never_split:
                _lower(word, surface)
            if s.subword == "character":
                if not s.normalize_text:
                    word.nfkc()
                pieces.extend(word[i : i + 1] for i in range(len(str(word))))
            elif _SPACE.search(surface) is None and not s.lower_case:
                pieces.append(word)  # the usual case: one word, one pre-token
            else:
                pieces.extend(word[m.start() : m.end()] for m in _NON_SPACE.finditer(str(word)))
        return pieces

    def pre_tokenize(self, pretok: Any) -> None:
        pretok.split(self._split)


def _lower(word: Any, surface: str) -> None:
    """Lowercases the NormalizedString `word` (in place, offsets kept) as Python's str.lower
    does: tokenizers lowers one character at a time, Python also knows the final sigma
    ("ΣΑΣ" -> "σας"), and transformers uses Python's."""
    word.lowercase()
    want = surface.lower()
    have = str(word)
    if have != want and len(have) == len(want):
        chars = iter(want)
        word.map(lambda _: next(chars))


def splitter_of(slow: Any) -> WordSplitter:
    """The word splitter of a transformers ``BertJapaneseTokenizer``, or ValueError for the
    configurations fastrag does not reproduce (Sudachi, Juman++, SentencePiece, ...)."""
    kind = getattr(slow, "word_tokenizer_type", None)
    if not getattr(slow, "do_word_tokenize", True) or kind != "mecab":
        raise ValueError(
            f"{type(slow).__name__} with word_tokenizer_type {kind!r}: fastrag reproduces only "
            "MeCab word splitting (word_tokenizer_type='mecab')"
        )
    subword = getattr(slow, "subword_tokenizer_type", None)
    if not getattr(slow, "do_subword_tokenize", True) or subword not in SUBWORDS:
        raise ValueError(
            f"{type(slow).__name__} with subword_tokenizer_type {subword!r}: fastrag "
            f"reproduces only {' and '.join(SUBWORDS)}"
        )
    words = slow.word_tokenizer
    kwargs = dict(getattr(slow, "mecab_kwargs", None) or {})
    # no mecab_dic: the dictionary this transformers version defaults to
    default_dic = inspect.signature(type(words).__init__).parameters["mecab_dic"].default
    return WordSplitter(
        dictionary=kwargs.get("mecab_dic", default_dic),
        mecab_option=kwargs.get("mecab_option") or "",
        normalize_text=bool(words.normalize_text),
        lower_case=bool(words.do_lower_case),
        never_split=tuple(words.never_split or ()),
        subword=subword,
    )


def is_japanese_bert(slow: Any) -> bool:
    """Whether a transformers tokenizer is a ``BertJapaneseTokenizer`` (by class name, so that
    no transformers import is needed here)."""
    return any(c.__name__ == "BertJapaneseTokenizer" for c in type(slow).__mro__)


def fast_from_slow(slow: Any) -> tuple[Tokenizer, WordSplitter]:
    """A fast tokenizer equal to the slow ``BertJapaneseTokenizer`` `slow`, without its word
    splitter attached (so that it can be saved), and that splitter."""
    splitter = splitter_of(slow)
    unk = str(slow.unk_token)
    vocab = dict(slow.vocab)
    if unk not in vocab:
        raise ValueError(f"the vocabulary has no unknown token {unk!r}")
    tok = Tokenizer(models.WordPiece(vocab, unk_token=unk, max_input_chars_per_word=100))
    if splitter.normalize_text:
        tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # replaced by `attach`
    tok.decoder = decoders.WordPiece(prefix="##")
    added = sorted(slow.added_tokens_decoder.items())
    tok.add_tokens([_added(t, special=False) for _, t in added if not t.special])
    tok.add_special_tokens([_added(t, special=True) for _, t in added if t.special])
    for i, t in added:
        if tok.token_to_id(str(t)) != i:
            raise ValueError(f"added token {str(t)!r} has id {i}, beyond the vocabulary's order")
    cls, sep = str(slow.cls_token), str(slow.sep_token)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, int(slow.cls_token_id)), (sep, int(slow.sep_token_id))],
    )
    return tok, splitter


def export_tokenizer(slow: Any) -> tuple[Tokenizer, dict[str, Any]]:
    """What an export writes for the ``BertJapaneseTokenizer`` `slow`: the fast tokenizer to
    save as tokenizer.json and the manifest's ``word_splitter`` entry.

    The fast tokenizer (with its splitter) is checked against `slow` on `CHECK_TEXTS` first;
    ValueError when the configuration is not reproduced or a check text comes out otherwise.
    """
    fast, splitter = fast_from_slow(slow)
    checked = attach(Tokenizer.from_str(fast.to_str()), splitter)
    wrong = mismatches(slow, checked, CHECK_TEXTS)
    if wrong:
        raise ValueError(
            "the fast tokenizer built for this Japanese BERT gives other token ids than "
            f"transformers: {'; '.join(wrong)}"
        )
    return fast, splitter.to_dict()


def check_requirements(folder: str | os.PathLike[str]) -> None:
    """ImportError naming what to install when the model folder's tokenizer_config.json names
    a MeCab ``BertJapaneseTokenizer`` and fugashi or its dictionary is missing (checked before
    transformers loads it, whose message does not name fastrag's extra)."""
    try:
        with open(os.path.join(folder, "tokenizer_config.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return
    if not isinstance(config, dict) or config.get("tokenizer_class") != "BertJapaneseTokenizer":
        return
    if config.get("word_tokenizer_type") != "mecab":
        return
    _module("fugashi", "fugashi")
    dictionary = (config.get("mecab_kwargs") or {}).get("mecab_dic", "unidic_lite")
    if dictionary in DICTIONARIES:
        _module(dictionary, DICTIONARIES[dictionary])


def _added(token: Any, *, special: bool) -> AddedToken:
    """A transformers AddedToken as a tokenizers one, matched on the raw text (transformers'
    slow tokenizers split added tokens out before any normalisation)."""
    return AddedToken(
        str(token),
        single_word=bool(getattr(token, "single_word", False)),
        lstrip=bool(getattr(token, "lstrip", False)),
        rstrip=bool(getattr(token, "rstrip", False)),
        normalized=False,
        special=special,
    )


def attach(tokenizer: Tokenizer, splitter: WordSplitter | dict[str, Any]) -> Tokenizer:
    """Puts the MeCab word splitter into `tokenizer` (in place; also returned).

    The tokenizer can no longer be saved (its splitter is Python code); `copy_tokenizer`
    copies it. ImportError names the extra when fugashi or the dictionary is missing.
    """
    if isinstance(splitter, dict):
        splitter = WordSplitter.from_dict(splitter)
    mark = getattr(tokenizer, _MARK, None)  # attached before: its saved form still holds
    serialised = tokenizer.to_str() if mark is None else mark[1]
    tokenizer.pre_tokenizer = pre_tokenizers.PreTokenizer.custom(_MecabWords(splitter))
    setattr(tokenizer, _MARK, (splitter, serialised))
    # an instance attribute shadows the method (tokenizers' objects carry a __dict__)
    tokenizer.encode_batch = types.MethodType(  # type: ignore[method-assign]  # on purpose
        _encode_one_by_one, tokenizer)
    return tokenizer


def _encode_one_by_one(
    self: Tokenizer, inputs: Sequence[Any], is_pretokenized: bool = False,
    add_special_tokens: bool = True,
) -> list[Any]:
    """``encode_batch`` of a tokenizer with the MeCab splitter: the texts one at a time on the
    calling thread. The splitter is Python code that needs the GIL, so tokenizers' worker
    threads would only queue for it (benchmarks/bench_ja_tokenizer.py times both). Padding
    and pre-tokenized input keep tokenizers' own batch call."""
    if is_pretokenized or self.padding is not None:
        return Tokenizer.encode_batch(self, inputs, is_pretokenized, add_special_tokens)
    out = []
    for item in inputs:
        if isinstance(item, str):
            out.append(self.encode(item, add_special_tokens=add_special_tokens))
        else:
            first, second = item
            out.append(self.encode(first, second, add_special_tokens=add_special_tokens))
    return out


def copy_tokenizer(tokenizer: Tokenizer) -> Tokenizer:
    """A copy of a `tokenizers.Tokenizer`, word splitter included when it has one (with the
    truncation and padding it was saved with; set them on the copy as needed)."""
    mark = getattr(tokenizer, _MARK, None)
    if mark is None:
        return Tokenizer.from_str(tokenizer.to_str())
    splitter, serialised = mark
    return attach(Tokenizer.from_str(serialised), splitter)


def load(path: str | os.PathLike[str], splitter: dict[str, Any] | None) -> Tokenizer:
    """``tokenizer.json`` at `path`, with the word splitter of a manifest entry when given."""
    tokenizer = Tokenizer.from_file(str(path))
    return tokenizer if splitter is None else attach(tokenizer, splitter)


def mismatches(
    slow: Any, fast: Tokenizer, texts: Sequence[str], *, limit: int = 3
) -> list[str]:
    """Texts whose ids differ between `slow` (transformers) and `fast` (at most `limit`),
    each with both id lists: the export's check of the tokenizer it writes."""
    out = []
    for text, enc in zip(texts, fast.encode_batch(list(texts)), strict=True):
        want = list(slow(text)["input_ids"])
        if want != enc.ids:
            out.append(f"{json.dumps(text, ensure_ascii=False)}: {want} != {enc.ids}")
            if len(out) >= limit:
                break
    return out


#: texts the export checks its tokenizer on (kana, kanji, Latin, digits, full-width forms)
CHECK_TEXTS = (
    "東京都に住んでいます。",
    "Boundary layers について説明する。",
    "ｶﾀｶﾅとＡＢＣ１２３、iPhone 15 Pro を買った！",
    "吾輩は猫である。名前はまだ無い。",
    "  前後に空白\tタブ\n改行\r\nと全角　空白 ",
)
