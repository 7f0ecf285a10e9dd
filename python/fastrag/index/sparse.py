"""BM25 over the C++ inverted index, with analyzers, a vocabulary and the user's ids."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from itertools import accumulate, chain, repeat
from typing import Any, Literal

import numpy as np

from fastrag import _core
from fastrag._core import IndexFormatError
from fastrag.index.base import InvertedIndex, as_batch
from fastrag.index.results import DocId, SearchResults
from fastrag.text import (
    Analyzer,
    EnglishAnalyzer,
    analyze_corpus,
    ascii_english,
    get_analyzer,
    warn_empty_documents,
)

Tokens = Sequence[str]
Corpus = Sequence[str] | Sequence[Tokens]
_UNKNOWN_TERM = 0xFFFFFFFF  # a term id the core never holds
_PENDING = 0x80000000  # AsciiWordCache: a word not cached yet (its place among the new ones)


def _is_pretokenized(items: Sequence[Any]) -> bool:
    first = next((x for x in items), None)
    return first is not None and not isinstance(first, str) and isinstance(first, (list, tuple))


def _check_utf8(docs: Sequence[Tokens]) -> None:
    """Refuses tokens with a lone surrogate: the vocabulary is saved as UTF-8, so one such term
    would make every later save() fail (analyzers never produce them)."""
    for i, doc in enumerate(docs):
        for t in doc:
            if not t.isascii():
                try:
                    t.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError(
                        f"document {i} has the token {t!r}, which is not valid Unicode (a lone "
                        "surrogate); tokens must be encodable as UTF-8"
                    ) from None


class BM25(InvertedIndex):
    """A BM25 index: the scoring variants and parameters of bm25s, exact top-k search.

    >>> index = BM25(analyzer="english")
    >>> index.add(["The cat sat.", "Dogs bark."], ids=["a", "b"])
    >>> index.search("cat", k=1)[0]
    [Hit(id='a', score=...)]

    Args:
        analyzer: "auto" (per-text English/Japanese routing), "english", "japanese",
            "bigram", an analyzer config dict or an Analyzer. Ignored for pre-tokenized input.
        method: "lucene" (default), "robertson", "atire", "bm25l" or "bm25+".
        k1: term-frequency saturation (BM25's k1).
        b: document-length normalisation, 0 (none) to 1 (full).
        delta: the shift of the term-frequency part in bm25l and bm25+ (ignored otherwise).
        impact_cache: True keeps one float score per posting in memory beside the
            compressed postings (about 4 more bytes per posting; an index of at most 2M
            postings also keeps its document ids decoded, 4 bytes more, as fast as
            uncompressed postings); False computes scores from term frequencies and document
            lengths as blocks are decoded (under 2 bytes per posting on large collections);
            "auto" (default) keeps the cache while the index holds at most 2**24 (16.8M)
            postings, about 400,000 documents of 50 tokens, and drops it past that size,
            where search runs at 0.9-0.97x the cached speed for a third of the memory.
            Results are identical either way; saved files never hold the cache.
    """

    _FORMAT = "fastrag.bm25"

    def __init__(
        self,
        *,
        analyzer: str | dict[str, Any] | Analyzer = "auto",
        method: str = "lucene",
        k1: float = 1.5,
        b: float = 0.75,
        delta: float = 0.5,
        impact_cache: bool | Literal["auto"] = "auto",
    ) -> None:
        self.analyzer: Analyzer = get_analyzer(analyzer)
        self._core = _core.SparseIndex(
            scoring="bm25", method=method, k1=k1, b=b, delta=delta, impact_cache=impact_cache
        )
        self._vocab: dict[str, int] = {}
        self._init_ids()
        self._init_word_cache()

    def _init_word_cache(self) -> None:
        # The fast path of add() for ASCII text (analyzer English, or auto with an English
        # analyzer): text -> term ids in C++, with a cache of each word's term id. It is
        # derived data that starts empty (also after load) and fills as documents come.
        self._cache_english: EnglishAnalyzer | None = None
        self._word_cache: _core.AsciiWordCache | None = None

    # ------------------------------------------------------------------ building
    @classmethod
    def from_texts(cls, texts: Corpus, ids: Iterable[DocId] | None = None, **options: Any) -> BM25:
        """Builds an index over texts (or token lists); options go to the constructor."""
        index = cls(**options)
        index.add(texts, ids=ids)
        return index

    def add(self, docs: Corpus | str, ids: Iterable[DocId] | DocId | None = None) -> None:
        """Adds documents: strings (analyzed) or lists of tokens; a single string is one document.

        Ids default to integers above every integer id used so far. An id already in the index
        is replaced (upsert); the same id twice in one call is an error. Documents that yield no
        tokens are indexed (they count in N and the average length, as in bm25s) and reported
        by an EmptyDocumentWarning.
        """
        docs, ids = as_batch(docs, ids)
        docs = list(docs)
        with self._write_lock:
            new_ids = self._ids.new_ids(ids, len(docs))
            if not docs:
                return
            english = ascii_english(self.analyzer)
            if english is None or _is_pretokenized(docs):
                csr = self._term_ids(self._tokens(docs, corpus=True))
            else:
                csr = self._encode_texts(docs, english)
            self._upsert(new_ids, *csr)

    def _encode_texts(
        self, docs: list[Any], english: EnglishAnalyzer
    ) -> tuple[np.ndarray, np.ndarray]:
        """Texts as CSR term ids, as `_term_ids(analyzer.analyze_many(docs))` gives them (the
        same ids, new terms numbered in the same order), the ASCII texts without Python
        strings per word: runs of ASCII texts go through the word cache (C++), and only the
        words it has not seen come back here to be stemmed and numbered; the other texts
        take the analyzer. Everything is analysed before the vocabulary changes, so that a
        bad document (not a str) changes nothing."""
        cache = self._word_cache_for(english)
        n = len(docs)
        runs: list[tuple[int, Any]] = []  # (start, (indptr, ids, new words) or token lists)
        i = 0
        while i < n:
            stop, indptr, ids, new_words = cache.encode(docs, i)
            if stop > i:
                runs.append((i, (indptr, ids, new_words)))
            i = stop
            while stop < n and not (isinstance(docs[stop], str) and docs[stop].isascii()):
                stop += 1
            if stop > i:
                runs.append((i, self.analyzer.analyze_many(docs[i:stop])))
            i = stop
        vocab = self._vocab
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        empty: list[int] = []
        for start, run in runs:
            if isinstance(run, tuple):
                indptr, ids, new_words = run
                if new_words:
                    stems = english.stem_words(new_words)
                    for term in stems:
                        if term not in vocab:
                            vocab[term] = len(vocab)
                    new_ids = np.fromiter(map(vocab.__getitem__, stems), dtype=np.uint32,
                                          count=len(stems))
                    cache.resolve(ids, new_words, new_ids)
            else:
                indptr, ids = self._term_ids(run)
            empty.extend(start + int(j) for j in np.flatnonzero(indptr[1:] == indptr[:-1]))
            parts.append((indptr, ids))
        warn_empty_documents(self.analyzer, docs, empty, stacklevel=3)  # -> the caller of add()
        if len(parts) == 1:
            return parts[0]
        offsets = np.cumsum([0] + [int(p[0][-1]) for p in parts[:-1]])
        indptr = np.concatenate([[0]] + [p[0][1:] + o for p, o in zip(parts, offsets, strict=True)])
        return indptr.astype(np.int64), np.concatenate([p[1] for p in parts])

    def _word_cache_for(self, english: EnglishAnalyzer) -> _core.AsciiWordCache:
        """The word cache of `english` (a new, empty one when the analyzer changed)."""
        cache = self._word_cache
        if cache is None or self._cache_english is not english:
            cache = english.ascii_word_cache()
            self._word_cache, self._cache_english = cache, english
        return cache

    def _encode_ascii_queries(self, queries: list[Any],
                              english: EnglishAnalyzer) -> tuple[np.ndarray, ...]:
        """ASCII queries as CSR (indptr, term ids) through the word cache of `add`'s fast path:
        a word seen before never becomes a Python string. Words it has not seen are stemmed
        here; those whose stem is in the vocabulary are cached (a stem's id never changes),
        the others get the unknown id and are not cached (a later add may bring the stem)."""
        cache = self._word_cache_for(english)
        _, indptr, ids, new_words = cache.encode(queries)
        if new_words:
            vocab = self._vocab
            new_ids = np.fromiter((vocab.get(t, _UNKNOWN_TERM) for t in
                                   english.stem_words(new_words)), dtype=np.uint32,
                                  count=len(new_words))
            pending = ids >= _PENDING
            ids[pending] = new_ids[ids[pending] & ~np.uint32(_PENDING)]
            known = np.flatnonzero(new_ids != _UNKNOWN_TERM)
            if len(known):  # ids are patched above: resolve only caches the known words
                cache.resolve(ids[:0], [new_words[i] for i in known], new_ids[known])
        return indptr, ids

    def _term_ids(self, tokens: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Documents' tokens as CSR term ids (indptr, term_ids); a new term gets the next id,
        in order of first occurrence. The per-token work runs in C (map over the flat tokens):
        Python loops over the batch's distinct new terms only."""
        vocab = self._vocab
        flat = list(chain.from_iterable(tokens))
        for term in dict.fromkeys(flat):
            if term not in vocab:
                vocab[term] = len(vocab)
        indptr = np.zeros(len(tokens) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens)),
                  out=indptr[1:])
        ids = np.fromiter(map(vocab.__getitem__, flat), dtype=np.uint32, count=len(flat))
        return indptr, ids

    def reserve_terms(self, terms: Iterable[str]) -> None:
        """Gives term ids to `terms`, in order, before any document is added (a shard of a
        larger collection numbers its terms in the collection's order, so that every shard
        adds a query's terms up in the same order as one index over all of them would)."""
        with self._write_lock:
            if len(self._ids) or self._vocab:
                raise ValueError("reserve_terms must come before any document is added")
            for t in terms:
                if not isinstance(t, str):
                    raise TypeError(f"terms must be str, got {t!r}")
                self._vocab.setdefault(t, len(self._vocab))

    # ------------------------------------------------------------------ sharding
    def collection_stats(self) -> tuple[int, float, dict[str, int]]:
        """(live documents, their summed lengths, {term: live document frequency}): what a
        shard contributes to the statistics of a collection split into shards."""
        s = self._core.stats()
        df = self._core.document_frequencies()
        terms = self._terms()
        return int(s["n_live"]), float(s["total_len"]), {
            t: int(df[i]) for i, t in enumerate(terms[: len(df)]) if df[i]
        }

    def set_global_stats(self, n_docs: int, total_len: float, df: dict[str, int]) -> None:
        """Scores with the statistics of a whole collection split into shards (this index
        being one): N, the summed document lengths and each term's document frequency, as
        merged from every shard's `collection_stats`. Scores then equal those of one index
        over all the shards, bit for bit. Terms are matched by string; every term of this
        index must be in `df` with at least its local frequency, else ValueError."""
        terms = self._terms()
        local = self._core.document_frequencies()
        arr = np.zeros(len(local), dtype=np.uint32)
        for i in range(len(local)):
            if local[i]:
                g = df.get(terms[i])
                if g is None:
                    raise ValueError(f"term {terms[i]!r} of this index is missing from the "
                                     "global statistics (they come from other shards)")
                arr[i] = g
        self._core.set_global_stats(int(n_docs), float(total_len), arr)

    def clear_global_stats(self) -> None:
        """Back to this index's own statistics."""
        self._core.clear_global_stats()

    def _terms(self) -> list[str]:
        terms = [""] * len(self._vocab)
        for t, i in list(self._vocab.items()):
            terms[i] = t
        return terms

    # ------------------------------------------------------------------ searching
    def search(
        self,
        queries: str | Sequence[str] | Sequence[Tokens],
        k: int = 10,
        *,
        threads: int = 0,
        filter: Iterable[DocId] | None = None,
        algorithm: str = "auto",
    ) -> SearchResults:
        """Top-k documents for one query or a batch (strings or token lists).

        Args:
            k: results per query; fewer when fewer documents share a term with the query.
            threads: worker threads for a batch (0 = all cores).
            filter: only these document ids may be returned (exact, applied inside top-k).
            algorithm: "auto", "exhaustive" or "maxscore" (all exact; for testing/tuning).
        """
        k = self._check_k(k)
        if isinstance(queries, str):
            queries = [queries]
        queries = list(queries)
        indptr, flat = self.encode_queries(queries)
        return self._search_core(
            filter, indptr, flat, k=int(k), threads=threads, algorithm=algorithm
        )

    def encode_queries(self, queries: Sequence[str] | Sequence[Tokens]) -> tuple[np.ndarray, ...]:
        """Queries as CSR term ids (indptr, term_ids); unknown terms get an id past the
        vocabulary, which the core skips."""
        if queries and all(type(q) is str and q.isascii() for q in queries):
            english = ascii_english(self.analyzer)
            if english is not None:  # ASCII queries (the common case): the word cache
                return self._encode_ascii_queries(list(queries), english)
        tokens = self._tokens(queries, corpus=False)
        indptr = np.fromiter(accumulate(map(len, tokens), initial=0), dtype=np.int64,
                             count=len(tokens) + 1)
        n = int(indptr[-1])
        flat = np.fromiter(
            map(self._vocab.get, chain.from_iterable(tokens), repeat(_UNKNOWN_TERM, n)),
            dtype=np.uint32,
            count=n,
        )
        return indptr, flat

    def _tokens(self, items: Sequence[Any], *, corpus: bool) -> Sequence[Sequence[str]]:
        if _is_pretokenized(items):
            if any(isinstance(item, str) for item in items):
                raise TypeError("mix of texts and token lists: give one kind per call")
            if corpus:
                if not all(isinstance(t, str) for item in items for t in item):
                    raise TypeError("pre-tokenized documents must be lists of str tokens")
                _check_utf8(items)
            return items
        if corpus:
            return analyze_corpus(self.analyzer, items, stacklevel=4)  # -> the caller of add()
        return self.analyzer.analyze_many(items)

    # ------------------------------------------------------------------ inspection
    @property
    def vocabulary(self) -> dict[str, int]:
        """Term -> term id (a copy)."""
        return dict(self._vocab)

    @property
    def method(self) -> str:
        """The BM25 variant ("lucene", "robertson", "atire", "bm25l" or "bm25+")."""
        return str(self._core.method)

    def stats(self) -> dict[str, Any]:
        """Counts, average length and the bytes held by the core's arrays."""
        return dict(self._core.stats())

    def document_frequency(self, term: str) -> int:
        """Live documents that contain an (analyzed) term."""
        i = self._vocab.get(term)
        return 0 if i is None else int(self._core.document_frequencies()[i])

    def __repr__(self) -> str:
        return (
            f"BM25(method={self.method!r}, k1={self._core.k1:g}, b={self._core.b:g}, "
            f"docs={len(self)}, terms={len(self._vocab)})"
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Saves to one file (written to a temporary file, then renamed into place; an error
        leaves no temporary file and an existing file unchanged)."""
        terms = [""] * len(self._vocab)
        for t, i in list(self._vocab.items()):
            terms[i] = t
        self._save(path, {"analyzer": self.analyzer.config(), "terms": terms})

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        mmap: bool = False,
        impact_cache: bool | Literal["auto"] = "auto",
    ) -> BM25:
        """Loads a saved index. With mmap=True the postings stay in the file, paged in on
        use (a modification first copies them into memory); impact_cache as in BM25()."""
        core, meta, ids = cls._load_core(_core.SparseIndex, path, mmap, "n_docs",
                                         impact_cache=impact_cache)
        if core.scoring != "bm25":  # as ImpactIndex refuses a BM25 core
            raise IndexFormatError(f"{path} holds impact scores, not a BM25 index")
        terms, analyzer = meta.get("terms"), meta.get("analyzer")
        if not isinstance(terms, list) or len(terms) < core.stats()["n_terms"]:
            raise IndexFormatError(f"{path} has a vocabulary that does not match its postings")
        try:
            analyzer = get_analyzer(analyzer)  # type: ignore[arg-type]
        except (TypeError, ValueError) as e:
            raise IndexFormatError(f"{path} has an invalid analyzer config ({e})") from e
        index = cls.__new__(cls)
        index.analyzer = analyzer
        index._core = core
        index._vocab = {t: i for i, t in enumerate(terms)}
        index._init_ids(ids)
        index._init_word_cache()
        return index
