"""Text analyzers: turn raw text into the token lists that the indexes store.

The built-in analyzers are picklable, rebuild from their ``config()`` via
:func:`get_analyzer`, reject non-``str`` input and replace lone surrogates.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
import threading
import unicodedata
import warnings
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain, filterfalse
from typing import Any, ClassVar, Protocol, runtime_checkable

from fastrag import _core

from .language import CJK, detect_language, latin_runs
from .stopwords import ENGLISH_STOPWORDS

# Sudachi refuses inputs over 49,149 UTF-8 bytes; stay well below that.
_SUDACHI_MAX_BYTES = 40_000
# Where to cut an over-long text, best first (after NFKC, so full-width forms are ASCII).
_CUT_MARKS = ("\n", "。", "!", "?", ". ", "、", ",", " ", "\t")
_FORMS = {"normalized": "normalized_form", "dictionary": "dictionary_form", "surface": "surface"}

_WORD_RE = re.compile(r"\w+")
_BIGRAM_RUN_RE = re.compile(f"([{CJK}]+)|([^\\W{CJK}]+)")


class EmptyDocumentWarning(UserWarning):
    """A non-empty document produced no tokens, so no query can ever match it."""


@runtime_checkable
class Analyzer(Protocol):
    """What the indexes need from an analyzer."""

    @property
    def name(self) -> str: ...

    def __call__(self, text: str) -> list[str]: ...

    def analyze_many(self, texts: Iterable[str]) -> list[list[str]]: ...

    def config(self) -> dict[str, Any]: ...


def _prepare(text: object) -> str:
    """Check that *text* is a ``str``; replace lone surrogates with U+FFFD."""
    if not isinstance(text, str):
        kind = type(text).__name__
        if isinstance(text, (bytes, bytearray, memoryview)):
            hint = "; decode it first, e.g. data.decode('utf-8', errors='replace')"
            raise TypeError(f"expected str, got {kind}{hint}")
        raise TypeError(f"expected str, got {kind}")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # surrogate pairs are joined, lone surrogates replaced
            text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def _import(module: str, package: str) -> Any:
    """Import an optional dependency, naming the package to install when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f"the '{module}' module is needed for this analyzer: pip install {package}"
        raise ImportError(msg) from exc


class BaseAnalyzer:
    """Shared plumbing: input checks, batching, config, equality, repr and pickling.

    Subclasses set ``name``, list their constructor options (kept as same-named
    attributes) in ``_options`` and implement ``_analyze(text)`` for non-blank text.
    Pickling rebuilds from the options, so lazy caches need not be picklable.
    """

    name: ClassVar[str] = "base"
    _options: ClassVar[tuple[str, ...]] = ()

    def __call__(self, text: str) -> list[str]:
        """Return the tokens of *text* (``[]`` for empty or whitespace-only text)."""
        text = _prepare(text)
        return [] if not text or text.isspace() else self._analyze(text)

    def _analyze(self, text: str) -> list[str]:
        raise NotImplementedError

    def analyze_many(self, texts: Iterable[str]) -> list[list[str]]:
        """Analyze each of *texts* in order."""
        if isinstance(texts, str):
            raise TypeError("analyze_many expects an iterable of str, got a single str")
        return [self(text) for text in texts]

    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings; ``get_analyzer(config)`` rebuilds this analyzer."""
        return {"name": self.name, **{key: _plain(getattr(self, key)) for key in self._options}}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BaseAnalyzer):
            return NotImplemented
        return type(self) is type(other) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({options})"

    def __reduce__(self) -> tuple[Any, ...]:
        options = {key: getattr(self, key) for key in self._options}
        return functools.partial(type(self), **options), ()


def _plain(value: Any) -> Any:
    """Make an option JSON-friendly: tuples become lists, analyzers their configs."""
    if isinstance(value, tuple):
        return list(value)
    return value.config() if hasattr(value, "config") else value


class EnglishAnalyzer(BaseAnalyzer):
    """NFKC, lowercase, split on word characters, drop stopwords, Snowball-stem.

    ``stopwords`` is ``"english"`` (the built-in list), your own words or ``None``; they
    are compared with the tokens before stemming. ``stemmer`` is a PyStemmer algorithm
    (``"english"``, ``"porter"``, ...) or ``None``. Tokens shorter than ``min_length``
    characters are dropped.
    """

    name: ClassVar[str] = "english"
    _options: ClassVar[tuple[str, ...]] = ("lowercase", "stopwords", "stemmer", "min_length")

    def __init__(
        self,
        *,
        lowercase: bool = True,
        stopwords: str | Iterable[str] | None = "english",
        stemmer: str | None = "english",
        min_length: int = 2,
    ) -> None:
        self.lowercase = bool(lowercase)
        self.stopwords: str | list[str] | None  # as configured; the set is `stopword_set`
        self.stopword_set: frozenset[str]
        if stopwords is None:
            self.stopwords, self.stopword_set = None, frozenset()
        elif isinstance(stopwords, str):
            if stopwords.lower() != "english":
                raise ValueError(f"unknown stopword list {stopwords!r}; use 'english' or a list")
            self.stopwords, self.stopword_set = "english", ENGLISH_STOPWORDS
        else:
            words = {self._normalize(_prepare(word)) for word in stopwords}
            self.stopwords, self.stopword_set = sorted(words), frozenset(words)
        if stemmer is not None and stemmer not in _import("Stemmer", "PyStemmer").algorithms():
            raise ValueError(f"unknown stemmer {stemmer!r}; see Stemmer.algorithms()")
        self.stemmer = stemmer
        if isinstance(min_length, bool) or not isinstance(min_length, int) or min_length < 1:
            raise ValueError(f"min_length must be a positive int, got {min_length!r}")
        self.min_length = min_length
        self._words = _WORD_RE if min_length == 1 else re.compile(rf"\w{{{min_length},}}")
        # the same runs in ASCII text (\w there is exactly [A-Za-z0-9_]), where a character
        # class is a bitmap test instead of Unicode property lookups
        self._ascii_words = re.compile(rf"[A-Za-z0-9_]{{{min_length},}}")
        self._stemmer: Any = None  # created on first use

    def _normalize(self, text: str) -> str:
        text = unicodedata.normalize("NFKC", text)
        return text.lower() if self.lowercase else text

    def _analyze(self, text: str) -> list[str]:
        return self._stem([self._words_of(text)])[0]

    def analyze_many(self, texts: Iterable[str]) -> list[list[str]]:
        """Analyze each of *texts* in order; a word is stemmed once per batch."""
        if isinstance(texts, str):
            raise TypeError("analyze_many expects an iterable of str, got a single str")
        words = []
        for text in texts:
            text = _prepare(text)
            words.append([] if not text or text.isspace() else self._words_of(text))
        return self._stem(words)

    def _words_of(self, text: str) -> list[str]:
        """The words of a non-blank text before stemming (normalised, stopwords out)."""
        stopwords = self.stopword_set
        # runs of at least min_length word characters: the regex drops the short ones
        text = self._normalize(text)
        words: list[str] = (self._ascii_words if text.isascii() else self._words).findall(text)
        return list(filterfalse(stopwords.__contains__, words)) if stopwords else words

    def stem_words(self, words: list[str]) -> list[str]:
        """The tokens of already split and normalised *words* (stopwords taken out): their
        stems, or the words themselves without a stemmer."""
        if self.stemmer is None:
            return words
        if self._stemmer is None:
            self._stemmer = _import("Stemmer", "PyStemmer").Stemmer(self.stemmer)
        return self._stemmer.stemWords(words) if words else []

    def ascii_word_cache(self) -> _core.AsciiWordCache:
        """A new native splitter of ASCII text by this analyzer's rules, with an empty cache
        of word -> term id: BM25.add's fast path. On ASCII text the words of
        ``_words_of(text)`` are the maximal runs of ``[A-Za-z0-9_]`` of at least
        ``min_length`` characters (NFKC changes no ASCII character), lowercased, without the
        stopwords; ``stem_words`` makes them tokens."""
        return _core.AsciiWordCache(
            min_length=self.min_length,
            lowercase=self.lowercase,
            stopwords=sorted(self.stopword_set),
        )

    def _stem(self, docs: list[list[str]]) -> list[list[str]]:
        """Stems the words of every document. A batch stems each distinct word once and
        maps the documents' words through that table: a word repeats across documents far
        more often than it is new, and the tokens then share one str object each."""
        if self.stemmer is None:
            return docs
        if len(docs) == 1:
            return [self.stem_words(docs[0])]
        distinct = list(dict.fromkeys(chain.from_iterable(docs)))
        stem = dict(zip(distinct, self.stem_words(distinct), strict=True)).__getitem__
        return [list(map(stem, words)) for words in docs]


class JapaneseAnalyzer(BaseAnalyzer):
    """Morphological analysis with SudachiPy, dropping particles, auxiliaries and symbols.

    ``mode`` is Sudachi's split mode (``"A"`` shortest units, ``"B"``, ``"C"``); ``form``
    picks the token form: ``"normalized"`` (行きました -> 行く), ``"dictionary"`` or
    ``"surface"``. Morphemes whose top-level part of speech is in ``drop_pos`` are
    dropped. ``dict`` is ``"small"``, ``"core"``, ``"full"`` or a dictionary path. Texts
    over Sudachi's input limit are cut at line, sentence or space boundaries.
    """

    name: ClassVar[str] = "japanese"
    _options: ClassVar[tuple[str, ...]] = ("mode", "form", "drop_pos", "lowercase", "dict")

    def __init__(
        self,
        *,
        mode: str = "A",
        form: str = "normalized",
        drop_pos: Iterable[str] = ("助詞", "助動詞", "補助記号", "空白", "記号"),
        lowercase: bool = True,
        dict: str = "core",
    ) -> None:
        _import("sudachipy", "sudachipy")
        package = f"sudachidict_{dict}"
        if dict in ("small", "core", "full") and not importlib.util.find_spec(package):
            raise ImportError(f"Sudachi dictionary {dict!r} is missing: pip install {package}")
        if not isinstance(mode, str) or mode.upper() not in ("A", "B", "C"):
            raise ValueError(f"mode must be 'A', 'B' or 'C', got {mode!r}")
        if form not in _FORMS:
            raise ValueError(f"form must be one of {sorted(_FORMS)}, got {form!r}")
        if isinstance(drop_pos, str):
            raise TypeError("drop_pos must be an iterable of part-of-speech names, not a str")
        self.mode, self.form, self.drop_pos = mode.upper(), form, tuple(drop_pos)
        self.lowercase, self.dict = bool(lowercase), dict
        self._local = threading.local()  # Sudachi tokenizers must not be shared by threads

    def _runtime(self) -> tuple[Any, ...]:
        """This thread's (tokenizer, reusable morpheme list, drop matcher, form getter)."""
        runtime = getattr(self._local, "runtime", None)
        if runtime is None:
            dictionary = _sudachi_dictionary(self.dict)
            tokenizer = dictionary.tokenizer(mode=self.mode)
            drop = frozenset(self.drop_pos)
            runtime = self._local.runtime = (
                tokenizer,
                tokenizer.tokenize(""),  # passed as `out=` so the list is reused
                dictionary.pos_matcher(lambda pos: pos[0] in drop),
                getattr(_import("sudachipy", "sudachipy").Morpheme, _FORMS[self.form]),
            )
        return runtime

    def _analyze(self, text: str) -> list[str]:
        tokens: list[str] = []
        for piece in _split_long(unicodedata.normalize("NFKC", text)):
            self._analyze_piece(piece, tokens)
        return tokens

    def _analyze_piece(self, piece: str, tokens: list[str]) -> None:
        tokenizer, out, dropped, form = self._runtime()
        try:
            morphemes = tokenizer.tokenize(piece, out=out)
        except _import("sudachipy.errors", "sudachipy").SudachiError as exc:
            # Sudachi's own input normaliser may still lengthen a piece past its limit.
            if "too long" not in str(exc) or len(piece) < 2:
                raise
            self._analyze_piece(piece[: len(piece) // 2], tokens)
            self._analyze_piece(piece[len(piece) // 2 :], tokens)
            return
        lowercase = self.lowercase
        for morpheme in morphemes:
            if not dropped(morpheme):
                token = form(morpheme)
                if token and not token.isspace():
                    tokens.append(token.lower() if lowercase else token)


@functools.cache
def _sudachi_dictionary(name: str) -> Any:
    """Load a Sudachi dictionary once per process; tokenizers of all threads share it."""
    return _import("sudachipy", "sudachipy").Dictionary(dict=name)


def _split_long(text: str, max_bytes: int | None = None) -> list[str]:
    """Cut *text* into pieces of at most *max_bytes* UTF-8 bytes, preferably at a mark."""
    limit = _SUDACHI_MAX_BYTES if max_bytes is None else max_bytes
    if len(text) * 4 <= limit or len(text.encode("utf-8")) <= limit:
        return [text]
    pieces: list[str] = []
    start, size = 0, len(text)
    while start < size:
        end = min(size, start + max(1, limit // 3))
        while end - start > 1 and len(text[start:end].encode("utf-8")) > limit:
            end = start + (end - start) * 3 // 4
        if end < size:
            floor = start + (end - start) // 2
            cuts = (text.rfind(mark, floor, end) + len(mark) for mark in _CUT_MARKS)
            end = next((cut for cut in cuts if cut > floor), end)
        pieces.append(text[start:end])
        start = end
    return pieces


class BigramAnalyzer(BaseAnalyzer):
    """Dependency-free analyzer for CJK text: overlapping character bigrams.

    Runs of kana and ideographs become overlapping bigrams (a one-character run stays
    as is); runs of other word characters become whole words, so ``"Pythonの本"`` gives
    ``["python", "の本"]``.
    """

    name: ClassVar[str] = "bigram"
    _options: ClassVar[tuple[str, ...]] = ("lowercase",)

    def __init__(self, *, lowercase: bool = True) -> None:
        self.lowercase = bool(lowercase)

    def _analyze(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFKC", text)
        tokens: list[str] = []
        for cjk, word in _BIGRAM_RUN_RE.findall(text.lower() if self.lowercase else text):
            if word or len(cjk) == 1:
                tokens.append(word or cjk)
            else:
                tokens.extend(cjk[i : i + 2] for i in range(len(cjk) - 1))
        return tokens


class AutoAnalyzer(BaseAnalyzer):
    """Send each text to an English or a Japanese analyzer, using :func:`detect_language`.

    With ``split_scripts`` (the default), a Japanese text's Latin phrases go to the English
    analyzer and the rest to the Japanese one ("Boundary layersについて" gives the tokens of
    "boundary layers" that an English query makes, where Sudachi would normalise the English
    words into other forms). ``japanese`` defaults to :class:`JapaneseAnalyzer`, or to
    :class:`BigramAnalyzer` (with a warning) when SudachiPy is missing. Either may be a name
    or a config. Configs saved before ``split_scripts`` existed load with it off, so that
    their indexes keep their tokens.
    """

    name: ClassVar[str] = "auto"
    _options: ClassVar[tuple[str, ...]] = ("english", "japanese", "split_scripts")

    def __init__(
        self,
        *,
        english: Analyzer | str | Mapping[str, Any] | None = None,
        japanese: Analyzer | str | Mapping[str, Any] | None = None,
        split_scripts: bool = True,
    ) -> None:
        if not isinstance(split_scripts, bool):
            raise TypeError(f"split_scripts must be a bool, got {split_scripts!r}")
        self.split_scripts = split_scripts
        self.english = EnglishAnalyzer() if english is None else get_analyzer(english)
        if japanese is not None:
            self.japanese = get_analyzer(japanese)
            return
        try:
            self.japanese = JapaneseAnalyzer()
        except ImportError as exc:
            msg = f"AutoAnalyzer falls back to BigramAnalyzer for Japanese text ({exc})"
            warnings.warn(msg, stacklevel=2)
            self.japanese = BigramAnalyzer()

    def analyze_many(self, texts: Iterable[str]) -> list[list[str]]:
        """Analyze each of *texts* in order: the English ones in one batch of the English
        analyzer (which stems each distinct word once per batch), the others one by one."""
        if isinstance(texts, str):
            raise TypeError("analyze_many expects an iterable of str, got a single str")
        out: list[list[str]] = []
        english: list[str] = []
        at: list[int] = []
        for text in texts:
            text = _prepare(text)
            if not text or text.isspace():
                out.append([])
            elif detect_language(text) != "ja":
                at.append(len(out))
                english.append(text)
                out.append([])
            else:
                out.append(self._analyze(text))
        if english:
            for i, tokens in zip(at, self.english.analyze_many(english), strict=True):
                out[i] = tokens
        return out

    def _analyze(self, text: str) -> list[str]:
        if detect_language(text) != "ja":
            return self.english(text)
        if not self.split_scripts:
            return self.japanese(text)
        tokens: list[str] = []
        at = 0
        for start, end in latin_runs(text):
            if start > at:
                tokens += self.japanese(text[at:start])
            tokens += self.english(text[start:end])
            at = end
        if at < len(text):
            tokens += self.japanese(text[at:])
        return tokens


def ascii_english(analyzer: Analyzer) -> EnglishAnalyzer | None:
    """The built-in English analyzer that *analyzer* sends every ASCII text to, or None.

    An :class:`EnglishAnalyzer` is its own; an :class:`AutoAnalyzer` detects ASCII text as
    English (no kana, no ideographs), so it is its ``english`` analyzer when that is an
    EnglishAnalyzer. Subclasses do not count: they may split or stem otherwise.
    """
    if type(analyzer) is AutoAnalyzer:
        analyzer = analyzer.english
    return analyzer if type(analyzer) is EnglishAnalyzer else None


_ANALYZERS: dict[str, type[BaseAnalyzer]] = {
    cls.name: cls for cls in (EnglishAnalyzer, JapaneseAnalyzer, BigramAnalyzer, AutoAnalyzer)
}
_ALIASES = {"en": "english", "ja": "japanese"}


def get_analyzer(spec: str | Mapping[str, Any] | Analyzer) -> Analyzer:
    """Build an analyzer from a name or a ``config()`` dict; pass analyzers through.

    Names: ``"english"`` (``"en"``), ``"japanese"`` (``"ja"``), ``"bigram"``, ``"auto"``.
    """
    if not isinstance(spec, (str, Mapping)):
        if isinstance(spec, Analyzer):
            return spec
        raise TypeError(f"expected an analyzer name, config or instance, got {type(spec).__name__}")
    options: dict[str, Any] = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = options.pop("name", None)
    key = str(name).strip().lower()
    cls = _ANALYZERS.get(_ALIASES.get(key, key))
    if cls is None:
        valid = ", ".join(sorted([*_ANALYZERS, *_ALIASES]))
        raise ValueError(f"unknown analyzer name {name!r}; valid names: {valid}")
    if cls is AutoAnalyzer and not isinstance(spec, str) and "split_scripts" not in options:
        options["split_scripts"] = False  # a config saved before the option: same tokens
    try:
        return cls(**options)
    except TypeError as exc:
        raise ValueError(f"invalid options for the {cls.name} analyzer: {exc}") from exc


def analyze_corpus(
    analyzer: Analyzer | str | Mapping[str, Any], texts: Iterable[str], *, stacklevel: int = 2
) -> list[list[str]]:
    """Analyze *texts*; warn once (:class:`EmptyDocumentWarning`) about blank results.

    A non-blank document without tokens is still indexed but can never match a query.
    """
    analyzer = get_analyzer(analyzer)
    docs = texts if isinstance(texts, Sequence) and not isinstance(texts, str) else list(texts)
    tokens = analyzer.analyze_many(docs)
    empty = [i for i, toks in enumerate(tokens) if not toks]
    warn_empty_documents(analyzer, docs, empty, stacklevel=stacklevel)
    return tokens


def warn_empty_documents(
    analyzer: Analyzer, docs: Sequence[str], empty: Iterable[int], *, stacklevel: int = 2
) -> None:
    """Warns once (:class:`EmptyDocumentWarning`) if some of *docs* whose indexes are in
    *empty* (documents that gave no tokens) are not blank. *stacklevel* as for a
    ``warnings.warn`` in the caller."""
    bad = [i for i in empty if docs[i] and not docs[i].isspace()]
    if bad:
        warnings.warn(
            f"{len(bad)} of {len(docs)} non-empty documents produced no tokens with the "
            f"{analyzer.name} analyzer (e.g. index {bad[0]}); "
            "they are indexed but can never match",
            EmptyDocumentWarning,
            stacklevel=stacklevel + 1,
        )
