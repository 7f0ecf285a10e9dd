"""Tests of the Python BM25 index (fastrag.BM25): ids, analyzers, updates, filters, files."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import fastrag
from fastrag import BM25, EmptyDocumentWarning, EnglishAnalyzer, Hit, SearchResults, _core

DOCS = {
    "cat": "The cat sat on the mat. Cats like warm mats.",
    "dog": "A dog barks at the mailman; dogs are loyal.",
    "fish": "Fish swim in the sea, and some fish fly.",
    "bird": "Birds sing in the morning and fly south in winter.",
    "mixed": "The cat watched the fish while the dog slept.",
}


def make_index(**options) -> BM25:
    index = BM25(analyzer="english", **options)
    index.add(list(DOCS.values()), ids=list(DOCS))
    return index


def hit_ids(results: SearchResults, i: int = 0) -> list:
    return [h.id for h in results[i]]


def assert_topk_matches_reference(ids, scores, ref, k, rtol=1e-4, atol=1e-6):
    """Top-k equal to the reference scores up to ties (ids are positions in `ref`)."""
    eligible = ref > 0
    n = len(ids)
    assert n == min(k, int(eligible.sum()))
    assert eligible[ids].all()
    np.testing.assert_allclose(scores, ref[ids], rtol=rtol, atol=atol)
    if n:
        kth = np.sort(ref[eligible])[::-1][n - 1]
        assert scores[-1] == pytest.approx(kth, rel=rtol, abs=atol)
        above = np.flatnonzero(ref > kth + atol + rtol * kth)
        assert set(above.tolist()) <= set(ids)


# ---------------------------------------------------------------------------- building
def test_build_from_texts_with_str_ids():
    index = make_index()
    assert len(index) == 5 and "cat" in index and "cow" not in index
    assert index.ids == list(DOCS)
    results = index.search("cats", k=3)
    assert isinstance(results, SearchResults) and len(results) == 1
    hits = results[0]
    assert [h.id for h in hits] == ["cat", "mixed"]  # trimmed: only two documents match
    assert all(isinstance(h, Hit) and isinstance(h.score, float) for h in hits)
    assert hits[0].score > hits[1].score > 0
    assert results.ids.shape == (1, 3) and results.ids.dtype == object
    assert results.ids[0, 2] is None and np.isneginf(results.scores[0, 2])
    assert results.scores.dtype == np.float32


def test_int_ids_and_default_ids():
    index = BM25(analyzer="english")
    index.add(["red apple", "green apple", "red car"], ids=[10, 20, 30])
    hits = index.search("red", k=10)[0]
    assert sorted(h.id for h in hits) == [10, 30]
    assert all(type(h.id) is int for h in hits)
    fresh = BM25(analyzer="english")
    fresh.add(["red apple", "green apple"])
    assert fresh.ids == [0, 1]
    assert hit_ids(fresh.search("green")) == [1]


def test_pretokenized_input_equals_texts():
    analyzer = EnglishAnalyzer()
    tokens = [analyzer(t) for t in DOCS.values()]
    a, b = make_index(), BM25(analyzer="english")
    b.add(tokens, ids=list(DOCS))
    queries = ["fish fly", "dog cat", "winter morning birds"]
    ra, rb = a.search(queries, k=5), b.search([analyzer(q) for q in queries], k=5)
    np.testing.assert_array_equal(ra.ids, rb.ids)
    np.testing.assert_array_equal(ra.scores, rb.scores)
    with pytest.raises(TypeError, match="pre-tokenized"):
        b.add([["ok"], ["bad", 3]])


def test_k_larger_than_collection_and_batches():
    index = make_index()
    results = index.search(["fish", "cat dog fish bird", "zebra"], k=50)
    assert results.ids.shape == (3, 50)
    assert len(results[0]) == 2 and len(results[1]) == 5 and results[2] == []
    assert [len(hits) for hits in results] == [2, 5, 0]
    assert index.search([], k=3).ids.shape == (0, 3)


def test_stats_and_document_frequency():
    index = make_index()
    st = index.stats()
    assert st["n_live"] == 5 and st["n_docs"] == 5
    assert index.document_frequency("fish") == 2  # analyzed form
    assert index.document_frequency("fishes") == 0
    index.delete(["fish"])
    assert index.document_frequency("fish") == 1
    assert index.stats()["n_live"] == 4
    assert "BM25(" in repr(index)


@pytest.mark.parametrize("k", [0, -1, 1.5, "3", True, None])
def test_k_validation(k):
    with pytest.raises(ValueError, match="k must"):
        make_index().search("cat", k=k)


def test_numpy_integer_k_is_accepted():
    assert len(make_index().search("cat", k=np.int64(1))[0]) == 1


def test_unknown_algorithm():
    with pytest.raises(ValueError, match="algorithm"):
        make_index().search("cat", algorithm="wand")


def test_a_single_string_is_not_split_into_characters():
    """add("text") must not index one document per character (search() accepts a str)."""
    index = BM25(analyzer="english")
    try:
        index.add("hello world")
    except (TypeError, ValueError):
        assert len(index) == 0
    else:
        assert len(index) == 1 and hit_ids(index.search("hello")) == [0]


# ---------------------------------------------------------------------------- real data
def parity_on_collection(beir_collection, name, analyzer, n_queries=50, k=10):
    bm25s = pytest.importorskip("bm25s")
    corpus, queries = beir_collection(name, n_queries)
    texts = [f"{d.get('title', '')} {d['text']}" for d in corpus]
    doc_tokens = analyzer.analyze_many(texts)
    query_tokens = analyzer.analyze_many([q["text"] for q in queries])
    retriever = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    retriever.index(doc_tokens, show_progress=False)
    index = BM25(analyzer=analyzer, method="lucene", k1=1.5, b=0.75)
    index.add(doc_tokens, ids=[d["_id"] for d in corpus])
    position = {d["_id"]: i for i, d in enumerate(corpus)}
    results = index.search(query_tokens, k=k)
    from_text = index.search([q["text"] for q in queries], k=k)  # analyzed by the index
    np.testing.assert_array_equal(results.ids, from_text.ids)
    checked = 0
    for qi, toks in enumerate(query_tokens):
        hits = results[qi]
        ids = np.array([position[h.id] for h in hits], dtype=np.int64)
        scores = np.array([h.score for h in hits], dtype=np.float64)
        ref = retriever.get_scores(toks) if toks else np.zeros(len(corpus))
        assert_topk_matches_reference(ids, scores, ref.astype(np.float64), k)
        checked += bool(hits)
    assert checked >= 0.9 * len(queries)


def test_cranfield_parity_with_bm25s(beir_collection):
    parity_on_collection(beir_collection, "cranfield", EnglishAnalyzer())


def test_jsquad_parity_with_bm25s(beir_collection):
    pytest.importorskip("sudachipy")
    parity_on_collection(beir_collection, "jsquad-valid", fastrag.JapaneseAnalyzer())


# ---------------------------------------------------------------------------- updates
def test_upsert_replaces_document():
    index = make_index()
    index.add(["A parrot that talks."], ids=["cat"])
    assert len(index) == 5
    assert "cat" not in hit_ids(index.search("mat"))
    assert hit_ids(index.search("parrot")) == ["cat"]
    assert index.stats()["n_live"] == 5 and index.stats()["n_docs"] == 6
    assert index.ids == ["dog", "fish", "bird", "mixed", "cat"]


def test_duplicate_ids_in_one_call_are_rejected():
    index = make_index()
    with pytest.raises(ValueError, match="duplicate"):
        index.add(["one", "two"], ids=["new", "new"])
    with pytest.raises(ValueError, match="ids"):
        index.add(["one", "two"], ids=["only-one"])
    with pytest.raises(TypeError):
        index.add(["one"], ids=[1.5])
    assert len(index) == 5 and "new" not in index


@pytest.mark.parametrize("single", ["new", 7])
def test_one_id_for_a_batch_is_refused_by_name(single):
    index = make_index()
    with pytest.raises(TypeError, match="ids must be a list of ids, one per document"):
        index.add(["one", "two"], ids=single)
    assert len(index) == 5 and single not in index
    index.add("one", ids=single)  # a single document takes a single id
    assert single in index


def test_delete():
    index = make_index()
    with pytest.raises(KeyError, match="nope"):
        index.delete(["cat", "nope"])
    assert len(index) == 5 and "cat" in index  # nothing deleted
    assert index.delete(["cat", "nope"], missing="ignore") == 1
    assert "cat" not in index and len(index) == 4
    assert "cat" not in hit_ids(index.search("cat", k=5))
    assert index.delete(["nope"], missing="ignore") == 0
    with pytest.raises(ValueError, match="missing"):
        index.delete(["dog"], missing="skip")
    assert "dog" in index


def test_compact_keeps_ids_and_results():
    index = make_index()
    index.delete(["dog", "bird"])
    before = index.search(["fish cat", "dog"], k=5)
    index.compact()
    after = index.search(["fish cat", "dog"], k=5)
    np.testing.assert_array_equal(before.ids, after.ids)
    np.testing.assert_array_equal(before.scores, after.scores)
    assert index.stats()["n_docs"] == 3 and index.ids == ["cat", "fish", "mixed"]


def test_compact_with_reorder_keeps_ids_results_and_files(tmp_path):
    """Reordering renumbers internal ids only: the same hits (user ids, scores) before and
    after, after a save and load, and for learned-sparse (impact) indexes too."""
    rng = np.random.default_rng(5)
    words = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(words[(i % 6) * 50 : (i % 6) * 50 + 50], 12)) for i in range(600)]
    ids = [f"d{i}" for i in range(600)]
    index = BM25(analyzer="english")
    index.add(texts, ids=ids)
    index.delete(ids[::7])
    queries = [" ".join(rng.choice(words, 3)) for _ in range(40)]
    before = index.search(queries, k=600)  # every match: ties at a cut may change sides
    index.compact(reorder=True, min_size=4)
    assert sorted(index.ids) == sorted(set(ids) - set(ids[::7]))
    after = index.search(queries, k=600)
    for q in range(len(queries)):
        assert dict(zip(before.ids[q], before.scores[q], strict=True)) == dict(
            zip(after.ids[q], after.scores[q], strict=True))
    index.save(tmp_path / "bp.fridx")
    again = BM25.load(tmp_path / "bp.fridx").search(queries, k=600)
    np.testing.assert_array_equal(again.ids, after.ids)
    np.testing.assert_array_equal(again.scores, after.scores)
    # an impact index (SPLADE-like weights) reorders the same way
    impact = fastrag.ImpactIndex(vocab_size=300)
    vecs = [(np.unique(rng.integers(0, 300, 10)), None) for _ in range(200)]
    vecs = [(t, rng.random(len(t)).astype(np.float32) + 0.1) for t, _ in vecs]
    impact.add(vecs, ids=list(range(200)))
    qv = (np.array([1, 50, 120]), np.array([1.0, 0.5, 2.0], dtype=np.float32))
    hits = impact.search(qv, k=50)
    impact.compact(reorder=True)
    assert dict(zip(impact.search(qv, k=50).ids[0], impact.search(qv, k=50).scores[0],
                    strict=True)) == dict(zip(hits.ids[0], hits.scores[0], strict=True))
    with pytest.raises(ValueError, match="iterations"):
        index.compact(reorder=True, iterations=0)


def test_default_ids_never_replace_existing_documents():
    """Default ids continue after the existing ones: adding without ids never upserts."""
    index = BM25(analyzer="english")
    index.add(["alpha cat", "beta dog", "gamma fish"])
    index.delete([0])
    index.compact()
    index.add(["delta bird"])
    assert len(index) == 3
    assert hit_ids(index.search("fish")) == [2]
    assert len(index.search("bird")[0]) == 1

    explicit = BM25(analyzer="english")
    explicit.add(["x cat"], ids=[1])
    explicit.add(["y dog", "z fish"])
    assert len(explicit) == 3
    assert hit_ids(explicit.search("cat")) == [1]


def test_updates_equal_fresh_index():
    rng = np.random.default_rng(4)
    words = [f"w{i}" for i in range(400)]
    texts = {f"d{i}": " ".join(rng.choice(words, int(rng.integers(3, 30)))) for i in range(600)}
    index = BM25(analyzer="english")
    keys = list(texts)
    for lo in range(0, 600, 150):
        index.add([texts[key] for key in keys[lo : lo + 150]], ids=keys[lo : lo + 150])
    gone = [f"d{i}" for i in rng.choice(600, 120, replace=False)]
    index.delete(gone)
    changed = [f"d{i}" for i in range(0, 600, 37) if f"d{i}" not in gone]
    for key in changed:
        texts[key] = " ".join(rng.choice(words, 10))
    index.add([texts[key] for key in changed], ids=changed)
    survivors = [key for key in keys if key not in gone and key not in changed] + changed
    fresh = BM25(analyzer="english")
    fresh.add([texts[key] for key in survivors], ids=survivors)
    queries = [" ".join(rng.choice(words, 3)) for _ in range(50)]
    # Both indexes hold the survivors in the same internal order, so ties order alike.
    for compacted in (False, True):
        if compacted:
            index.compact()
        a, b = index.search(queries, k=10), fresh.search(queries, k=10)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
    assert index.stats()["avgdl"] == pytest.approx(fresh.stats()["avgdl"])
    assert index.document_frequency("w7") == fresh.document_frequency("w7")


# ---------------------------------------------------------------------------- filters
def test_filter_with_user_ids():
    index = make_index()
    assert hit_ids(index.search("fish", filter=["mixed", "cat"])) == ["mixed"]
    assert hit_ids(index.search("fish", filter=["mixed", "nope", 42])) == ["mixed"]
    assert index.search("fish", filter=[])[0] == []
    assert index.search("fish", filter=iter(["fish"]))[0][0].id == "fish"
    index.delete(["fish"])
    assert hit_ids(index.search("fish", filter=["fish", "mixed"])) == ["mixed"]


def test_filter_equals_restricted_ranking():
    rng = np.random.default_rng(9)
    words = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(words, int(rng.integers(5, 25)))) for _ in range(2000)]
    ids = [f"doc-{i}" for i in range(2000)]
    index = BM25(analyzer="english")
    index.add(texts, ids=ids)
    allowed = {d for d in ids if rng.random() < 0.2}
    queries = [" ".join(rng.choice(words, 2)) for _ in range(30)]
    full = index.search(queries, k=2000)
    for algorithm in ("exhaustive", "maxscore", "auto"):
        got = index.search(queries, k=10, filter=allowed, algorithm=algorithm)
        for qi in range(len(queries)):
            expected = [h for h in full[qi] if h.id in allowed][:10]
            assert [h.id for h in got[qi]] == [h.id for h in expected]
            np.testing.assert_allclose(
                [h.score for h in got[qi]], [h.score for h in expected], rtol=1e-6
            )


# ---------------------------------------------------------------------------- edge cases
def test_empty_corpus_and_empty_queries():
    index = BM25(analyzer="english")
    assert index.search("anything")[0] == []
    index.add([])
    assert len(index) == 0 and index.search(["a", ""], k=2)[1] == []
    index = make_index()
    for query in ("", "   ", "the and of to", "!!! ???"):
        results = index.search(query, k=3)
        assert results[0] == [] and np.all(results.ids[0] == None)  # noqa: E711


def test_unexpected_scripts_are_indexed_and_searchable():
    texts = ["Привет, мир! Москва", "สวัสดีครับ ภาษาไทย", "party 🎉 time 🚀", "مرحبا بالعالم"]
    index = BM25(analyzer="english")
    index.add(texts, ids=["ru", "th", "emoji", "ar"])
    assert hit_ids(index.search("мир")) == ["ru"]
    assert hit_ids(index.search("ภาษาไทย")) == ["th"]
    assert hit_ids(index.search("party 🎉")) == ["emoji"]
    assert hit_ids(index.search("بالعالم")) == ["ar"]
    assert index.search("🎉")[0] == []


def test_empty_documents_warn_and_still_count():
    index = BM25(analyzer="english")
    with pytest.warns(EmptyDocumentWarning):
        index.add(["real words here", "!!! ...", "the of and"], ids=["a", "b", "c"])
    assert len(index) == 3 and index.stats()["n_live"] == 3
    n_tokens = len(EnglishAnalyzer()("real words here"))
    assert index.stats()["avgdl"] == pytest.approx(n_tokens / 3)
    assert hit_ids(index.search("words")) == ["a"]


def test_ten_megabyte_document():
    filler = "the quick brown fox jumps over the lazy dog while rivers flow to seas "
    big = filler * (10_000_000 // len(filler) + 1) + " zyzzyva"
    assert len(big) >= 10_000_000
    index = BM25(analyzer="english")
    start = time.perf_counter()
    index.add(["small note about rivers", big, "zyzzyva once"], ids=["s", "big", "z"])
    assert time.perf_counter() - start < 30
    assert sorted(hit_ids(index.search("zyzzyva"))) == ["big", "z"]
    assert hit_ids(index.search("zyzzyva"))[0] == "z"  # length normalisation
    assert index.stats()["n_postings"] < 40


@pytest.mark.parametrize("mmap", [False, True])
def test_impact_cache_off_same_results_less_memory(tmp_path, mmap):
    cached, lean = make_index(method="bm25l"), make_index(method="bm25l", impact_cache=False)
    queries = ["cat fish", "dogs fly", "sea mat morning", "nothing here"]
    ra, rb = cached.search(queries, k=3), lean.search(queries, k=3)
    assert np.array_equal(ra.ids, rb.ids) and ra.scores.tobytes() == rb.scores.tobytes()
    assert lean.stats()["memory_bytes"] < cached.stats()["memory_bytes"]
    path = tmp_path / "index.fridx"
    cached.save(path)
    loaded = BM25.load(path, mmap=mmap, impact_cache=False)
    assert loaded.stats()["memory_bytes"] == lean.stats()["memory_bytes"]
    rl = loaded.search(queries, k=3)
    assert np.array_equal(rl.ids, ra.ids) and rl.scores.tobytes() == ra.scores.tobytes()


# ---------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_round_trip(tmp_path, mmap):
    index = BM25(
        analyzer={"name": "english", "stemmer": "porter", "min_length": 1},
        method="bm25+",
        k1=1.1,
        b=0.6,
        delta=0.7,
    )
    index.add(list(DOCS.values()), ids=[1, "cat", 3, "x y", "ünï"])
    index.delete([3])
    path = tmp_path / "index.fridx"
    index.save(path)
    loaded = BM25.load(path, mmap=mmap)
    assert loaded.ids == index.ids == [1, "cat", "x y", "ünï"]
    assert [type(i) for i in loaded.ids] == [int, str, str, str]
    assert loaded.analyzer == index.analyzer
    assert loaded.analyzer.config() == index.analyzer.config()
    assert loaded.method == "bm25+" and loaded.vocabulary == index.vocabulary
    # the same contents; allocations differ (a built index has spare capacity)
    spare = ("allocated_bytes", "capacity")
    assert {k: v for k, v in loaded.stats().items() if k not in spare} == {
        k: v for k, v in index.stats().items() if k not in spare
    }
    queries = ["cat", "fish fly", "a dog", "birds in winter", ""]
    a, b = index.search(queries, k=4), loaded.search(queries, k=4)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    # The loaded index keeps working: new terms, upserts, deletes, and saves again.
    loaded.add(["a brand new zebra"], ids=["cat"])
    assert hit_ids(loaded.search("zebra")) == ["cat"]
    loaded.save(tmp_path / "again.fridx")
    again = BM25.load(str(tmp_path / "again.fridx"))
    assert hit_ids(again.search("zebra")) == ["cat"] and len(again) == 4


@pytest.mark.parametrize(
    "extra",
    [
        b"not json",
        b"",
        b"\xff\xfe",
        b"{}",
        b'{"format": "fastrag.dense", "version": 1}',
        b'{"format": "fastrag.bm25", "version": 1}',  # keys missing
        b'{"format": "fastrag.bm25", "version": "1", "ids": [], "terms": [], "analyzer": {}}',
        b'{"format": "fastrag.bm25", "version": 99, "ids": [], "terms": [], "analyzer": {}}',
        b'{"format": "fastrag.bm25", "version": 1, "ids": [1], "terms": [],'
        b' "analyzer": {"name": "english"}}',  # more ids than documents
    ],
)
def test_load_rejects_bad_metadata(tmp_path, extra):
    path = tmp_path / "core.fridx"
    _core.SparseIndex().save(str(path), extra)
    with pytest.raises(fastrag.IndexFormatError):
        BM25.load(path)


@pytest.mark.parametrize("extra", [b"null", b"[]", b'"text"', b"42"])
def test_load_rejects_metadata_that_is_not_an_object(tmp_path, extra):
    path = tmp_path / "core.fridx"
    _core.SparseIndex().save(str(path), extra)
    with pytest.raises(fastrag.IndexFormatError):
        BM25.load(path)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such index file"):
        BM25.load(tmp_path / "missing.fridx")
    with pytest.raises(IsADirectoryError):
        BM25.load(tmp_path)
    path = tmp_path / "garbage.fridx"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(fastrag.IndexFormatError):
        BM25.load(path)


def test_save_to_a_directory_fails(tmp_path):
    index = make_index()
    with pytest.raises(IsADirectoryError):
        index.save(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        index.save(tmp_path / "missing-dir" / "index.fridx")


# ---------------------------------------------------------------------------- concurrency
def test_searches_while_adding():
    rng = np.random.default_rng(21)
    words = [f"w{i}" for i in range(300)]

    def text() -> str:
        return " ".join(rng.choice(words, 20))

    first = [text() for _ in range(300)]
    batches = [[text() for _ in range(40)] for _ in range(60)]
    queries = ["w1 w2 w3", "w5", "w100 w200", "w7 w7 w8"]
    index = BM25(analyzer="english")
    index.add(first)
    stop = threading.Event()
    errors: list[BaseException] = []
    bad_rows: list[int] = []

    def searcher() -> None:
        while not stop.is_set():
            try:
                res = index.search(queries, k=20, threads=1)
                if (np.isfinite(res.scores) & np.equal(res.ids, None)).any():
                    bad_rows.append(1)
            except BaseException as e:  # collected and reported below
                errors.append(e)
                return

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for batch in batches:
            index.add(batch)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, f"searching while adding raised: {errors[0]!r}"
    assert not bad_rows, "a result held a document without a user id"
    fresh = BM25(analyzer="english")
    fresh.add(first + [t for batch in batches for t in batch])
    a, b = index.search(queries, k=20), fresh.search(queries, k=20)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_parallel_batch_search_equals_single_thread():
    rng = np.random.default_rng(2)
    words = [f"w{i}" for i in range(500)]
    index = BM25(analyzer="english")
    index.add([" ".join(rng.choice(words, 15)) for _ in range(3000)])
    queries = [" ".join(rng.choice(words, 3)) for _ in range(200)]
    one = index.search(queries, k=10, threads=1)
    for threads in (0, 2, 4):
        other = index.search(queries, k=10, threads=threads)
        np.testing.assert_array_equal(one.ids, other.ids)
        np.testing.assert_array_equal(one.scores, other.scores)
