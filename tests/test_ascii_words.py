"""BM25.add's fast path for ASCII text (fastrag._core.AsciiWordCache): the same term ids, in
the same order, as the English analyzer's tokens, on edge cases, random text and real
documents; the cache across adds, save/load and threads; bad input."""

from __future__ import annotations

import json
import random
import string
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from fastrag import BM25, AutoAnalyzer, EmptyDocumentWarning, EnglishAnalyzer, _core
from fastrag.text import ascii_english

EDGE = [
    "",
    " ",
    " \t\n ",
    "a",
    "I",
    "The cat sat on the mat. Cats like warm mats!",
    "Don't stop: it's the users' 'quoted' words, isn't it?",
    "snake_case __dunder__ _ __ a_b A_B_C under_score_",
    "digits 0 1 42 3.14159 1e-10 2026-12-07 x86_64 COVID19 9am",
    "MiXeD CaSe WORDS Running RUNS runner",
    "punctuation!!! ??? ... --- ;;; (parens) [brackets] {braces} <angle> a/b a\\b a|b",
    "tabs\tand\nnewlines\r\nand\x0bvertical\x0cfeeds\x00nul\x7fdel",
    "e-mail co-operate re-enter U.S.A. a.k.a. Ph.D.",
    "x" * 5000,
    "word" * 3000 + " short",
    "to be or not to be",  # stopwords only
    "!!! ### $$$",  # not blank, no words
    "café naïve résumé",
    "Boundary layersについて",
    "東京タワー",
    "half ASCII and then é",
    "lone \ud800 surrogate",
]


def analyzers() -> list:
    return [
        EnglishAnalyzer(),
        EnglishAnalyzer(min_length=1),
        EnglishAnalyzer(min_length=4),
        EnglishAnalyzer(lowercase=False),
        EnglishAnalyzer(stemmer=None),
        EnglishAnalyzer(stemmer="porter", stopwords=None),
        EnglishAnalyzer(stopwords=["Cat", "e-mail", "runs", "ÉTÉ", "", "x_y"]),
        EnglishAnalyzer(lowercase=False, stopwords=["Cat", "the"]),
        AutoAnalyzer(japanese="bigram"),
    ]


def reference(analyzer, docs) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Term ids the way BM25 numbers the analyzer's tokens (no fast path)."""
    index = BM25(analyzer=analyzer)
    indptr, ids = index._term_ids(analyzer.analyze_many(docs))
    return indptr, ids, index._vocab


def fast(index: BM25, docs) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyDocumentWarning)
        return index._encode_texts(list(docs), ascii_english(index.analyzer))


def assert_same(analyzer, docs, index: BM25 | None = None) -> BM25:
    index = BM25(analyzer=analyzer) if index is None else index
    before = dict(index._vocab)
    indptr, ids = fast(index, docs)
    # the reference continues from the same vocabulary
    ref = BM25(analyzer=analyzer)
    ref._vocab = dict(before)
    ref_indptr, ref_ids = ref._term_ids(analyzer.analyze_many(docs))
    assert indptr.dtype == np.int64 and ids.dtype == np.uint32
    np.testing.assert_array_equal(indptr, ref_indptr)
    np.testing.assert_array_equal(ids, ref_ids)
    assert list(index._vocab.items()) == list(ref._vocab.items())  # same ids, same order
    return index


@pytest.mark.parametrize("analyzer", analyzers(), ids=repr)
def test_edge_cases_give_the_analyzers_tokens(analyzer) -> None:
    assert_same(analyzer, EDGE)
    assert_same(analyzer, EDGE[::-1])
    for text in EDGE:
        assert_same(analyzer, [text])


@pytest.mark.parametrize("analyzer", analyzers()[:5], ids=repr)
def test_random_text_gives_the_analyzers_tokens(analyzer) -> None:
    rng = random.Random(24)
    alphabet = string.ascii_letters + string.digits + "_'-.,;:!? \t\n" + "éßΩ日本カ\u00a0\u2019"
    index = BM25(analyzer=analyzer)
    for _ in range(6):  # one index: later batches hit the cache of the earlier ones
        docs = []
        for _ in range(60):
            ascii_only = rng.random() < 0.7
            chars = alphabet[:76] if ascii_only else alphabet
            docs.append("".join(rng.choice(chars) for _ in range(rng.randrange(0, 120))))
        assert_same(analyzer, docs, index)
    assert index._word_cache.size > 0


def cranfield() -> list[str]:
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "cranfield" / "corpus.jsonl"
    if not path.exists():  # where tests/conftest.py looks for the evaluation collections
        return []
    with open(path, encoding="utf-8") as f:
        return [f"{d.get('title') or ''} {d['text']}" for d in map(json.loads, f)]


def test_real_documents_give_the_analyzers_tokens() -> None:
    """Cranfield when it is at hand, else this repository's docs: whole, then in batches
    (the second half of the batches meets a full cache)."""
    docs = cranfield()
    if not docs:
        root = Path(__file__).resolve().parents[1]
        docs = [p.read_text(encoding="utf-8") for p in sorted(root.glob("docs/**/*.md"))]
        docs += [line for d in docs for line in d.splitlines()]
    assert len(docs) > 100
    analyzer = EnglishAnalyzer()
    assert_same(analyzer, docs)
    index = BM25(analyzer=analyzer)
    for i in range(0, len(docs), 97):
        assert_same(analyzer, docs[i : i + 97], index)


def test_search_results_equal_the_pre_tokenized_index() -> None:
    docs = EDGE * 3 + [f"document {i} about cats and {i % 7} dogs running" for i in range(200)]
    analyzer = EnglishAnalyzer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyDocumentWarning)
        a = BM25(analyzer=analyzer)
        a.add(docs[:100])
        a.add(docs[100:])
        b = BM25(analyzer=analyzer)
        b.add(analyzer.analyze_many(docs))
    assert a.vocabulary == b.vocabulary
    queries = ["cats running", "dogs 3", "document 17", "mat", "nothing-here"]
    ra, rb = a.search(queries, k=20), b.search(queries, k=20)
    np.testing.assert_array_equal(ra.scores, rb.scores)
    assert [[h.id for h in r] for r in ra] == [[h.id for h in r] for r in rb]


def test_auto_analyzer_uses_the_fast_path_for_ascii_only() -> None:
    index = BM25(analyzer=AutoAnalyzer(japanese="bigram"))
    docs = ["Boundary layers of flows", "東京タワーの高さ", "more boundary layers"]
    assert_same(index.analyzer, docs, index)
    assert index._word_cache.size == 3  # the ASCII texts' words: boundary layers flows
    assert ascii_english(BM25(analyzer="bigram").analyzer) is None
    index = BM25(analyzer="bigram")
    index.add(["plain ascii text"])  # no fast path: the analyzer as it was
    assert index._word_cache is None and len(index.vocabulary) == 3


def test_cache_survives_adds_and_starts_empty_after_load(tmp_path) -> None:
    docs = [f"text number {i} on boundary layers and shock waves" for i in range(50)]
    index = BM25(analyzer="english")
    index.add(docs[:25])
    cached = index._word_cache.size
    assert cached > 0
    index.save(tmp_path / "ix.bm25")
    loaded = BM25.load(tmp_path / "ix.bm25")
    assert loaded._word_cache is None
    index.add(docs[25:])
    loaded.add(docs[25:])
    assert index._word_cache.size > cached
    assert loaded.vocabulary == index.vocabulary
    r1, r2 = index.search(["shock waves 30", "layers"], k=5), loaded.search(
        ["shock waves 30", "layers"], k=5
    )
    np.testing.assert_array_equal(r1.scores, r2.scores)
    assert [[h.id for h in r] for r in r1] == [[h.id for h in r] for r in r2]


def test_a_new_analyzer_gets_a_new_cache() -> None:
    index = BM25(analyzer="english")
    index.add(["Running cats and dogs"])
    index.analyzer = EnglishAnalyzer(stemmer=None, min_length=4)
    index.add(["Running cats and dogs"])
    assert "running" in index.vocabulary and "run" in index.vocabulary
    assert "cats" in index.vocabulary and "and" not in index.vocabulary


def test_bad_documents_change_nothing() -> None:
    index = BM25(analyzer="english")
    index.add(["first document here"], ids=["a"])
    vocab, n = index.vocabulary, len(index)
    for bad in (["ok text", b"bytes"], ["ok text", 3], ["ok", None, "more"], ["ok", ["a"]]):
        with pytest.raises(TypeError):
            index.add(bad)
        assert index.vocabulary == vocab and len(index) == n
    assert index.search("document")[0][0].id == "a"


def test_empty_documents_warn_at_the_caller() -> None:
    index = BM25(analyzer="english")
    with pytest.warns(EmptyDocumentWarning, match="2 of 6 non-empty") as record:
        index.add(["", "  ", "!!!", "good words", "to be", "日本"])
    assert Path(record[0].filename) == Path(__file__)
    assert len(index) == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyDocumentWarning)
        index.add(["", " \n"])


def test_huge_and_surrogate_documents() -> None:
    index = BM25(analyzer="english")
    huge = " ".join(f"w{i % 50000}" for i in range(400_000)) + " " + "z" * 100_000
    docs = [huge, "lone \udc80 surrogate word", "x" * 1_000_000]
    assert_same(index.analyzer, docs, index)
    index = BM25(analyzer="english")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyDocumentWarning)
        index.add(docs)
    assert index.search("surrogate")[0][0].id == 1
    assert index.search("w49999")[0][0].id == 0


# ---------------------------------------------------------------------------- the core object
def core_cache(**options) -> _core.AsciiWordCache:
    return _core.AsciiWordCache(
        min_length=options.pop("min_length", 2),
        lowercase=options.pop("lowercase", True),
        stopwords=options.pop("stopwords", ["the", "of"]),
        **options,
    )


def test_core_encode_and_resolve() -> None:
    cache = core_cache()
    stop, indptr, ids, new = cache.encode(["The Cat of cats, cat", "café", "dog"])
    assert stop == 1 and new == ["cat", "cats"]
    np.testing.assert_array_equal(indptr, [0, 3])
    np.testing.assert_array_equal(ids, [2**31, 2**31 + 1, 2**31])
    cache.resolve(ids, new, np.array([7, 9], dtype=np.uint32))
    np.testing.assert_array_equal(ids, [7, 9, 7])
    assert cache.size == 2 and cache.memory_bytes > 0
    stop, indptr, ids, new = cache.encode(["x", "café", "cat dog", "CATS"], 2)
    assert stop == 4 and new == ["dog"]
    np.testing.assert_array_equal(ids, [7, 2**31, 9])
    assert cache.encode(["a"], 1)[0] == 1  # start == len: nothing
    assert cache.min_length == 2 and cache.lowercase


def test_core_cache_stops_growing_at_max_words() -> None:
    cache = core_cache(max_words=2)
    _, _, ids, new = cache.encode(["aa bb cc dd"])
    cache.resolve(ids, new, np.arange(4, dtype=np.uint32))
    assert cache.size == 2
    _, _, ids, new = cache.encode(["dd aa cc"])
    assert new == ["dd", "cc"]
    cache.resolve(ids, new, np.array([3, 2], dtype=np.uint32))
    np.testing.assert_array_equal(ids, [3, 0, 2])


def test_core_bad_arguments() -> None:
    with pytest.raises(ValueError, match="min_length"):
        core_cache(min_length=0)
    with pytest.raises(ValueError, match="max_words"):
        core_cache(max_words=0)
    cache = core_cache()
    with pytest.raises(ValueError, match="start"):
        cache.encode(["a"], -1)
    with pytest.raises(TypeError):
        cache.encode(("a tuple",))
    _, _, ids, new = cache.encode(["some new words"])
    with pytest.raises(ValueError, match="one id per new word"):
        cache.resolve(ids, new, np.zeros(1, dtype=np.uint32))
    with pytest.raises(ValueError, match="uint32"):
        cache.resolve(ids, new, np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="below 2"):
        cache.resolve(ids, new, np.array([1, 2, 2**31], dtype=np.uint32))
    with pytest.raises(ValueError, match="pending word"):
        cache.resolve(ids.copy(), new[:1], np.zeros(1, dtype=np.uint32))
    frozen = ids.copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        cache.resolve(frozen, new, np.arange(3, dtype=np.uint32))
    assert cache.size == 0  # every refusal came before any change
    np.testing.assert_array_equal(ids >> 31, [1, 1, 1])


def test_core_threads_share_one_cache() -> None:
    rng = random.Random(7)
    words = [f"w{i}" for i in range(3000)]
    docs = [" ".join(rng.choice(words) for _ in range(200)) for _ in range(40)]
    cache = core_cache()
    term = {w: i for i, w in enumerate(words)}
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(30):
                batch = docs[(seed + i) % 40 :][:8]
                _, _, ids, new = cache.encode(batch)
                cache.resolve(ids, new, np.array([term[w] for w in new], dtype=np.uint32))
                expect = [term[w] for d in batch for w in d.split()]
                np.testing.assert_array_equal(ids, expect)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cache.size == len({w for d in docs for w in d.split()})


def query_reference(index: BM25, query: str) -> list[int]:
    """The query's term ids through the analyzer (unknown stems: the id past every term)."""
    return [index._vocab.get(t, 0xFFFFFFFF) for t in index.analyzer.analyze_many([query])[0]]


@pytest.mark.parametrize("analyzer", analyzers()[:5], ids=repr)
def test_queries_through_the_cache_give_the_analyzers_term_ids(analyzer) -> None:
    rng = random.Random(7)
    index = BM25(analyzer=analyzer)
    index.add(EDGE[:12])
    words = ["the", "cats", "running", "runs", "runner", "water", "flows", "night", "dogs",
             "boundary", "layer", "zebra"]
    queries = EDGE + [" ".join(rng.choice(words) for _ in range(rng.randrange(0, 6)))
                      for _ in range(80)]
    for q in queries + queries:  # the second pass reads what the first one cached
        indptr, ids = index.encode_queries([q])
        assert indptr.dtype == np.int64 and ids.dtype == np.uint32
        assert indptr.tolist() == [0, len(ids)]
        assert ids.tolist() == query_reference(index, q), q
    batch = [q for q in queries if q.isascii()]  # a batch of ASCII queries in one call
    indptr, ids = index.encode_queries(batch)
    refs = [query_reference(index, q) for q in batch]
    assert indptr.tolist() == np.cumsum([0] + [len(r) for r in refs]).tolist()
    assert ids.tolist() == [i for r in refs for i in r]
    # a stem unknown at query time is not cached as unknown: once a document brings it, the
    # query finds it
    assert index.encode_queries(["zebras"])[1].tolist() == [0xFFFFFFFF]
    index.add(["two zebras"])
    assert index.encode_queries(["zebras"])[1].tolist() == query_reference(index, "zebras")
    assert index.search("zebras", k=1).ids[0].tolist() == [len(EDGE[:12])]
