"""Property-based tests: random sequences of add / upsert / delete / compact / save + load run
against a plain Python model of each index, and of a BM25-only collection.

Each state machine keeps a model (the live documents) next to the real object and checks after
every step that they agree: the ids, ``len``, ``in``, and search results (exact top-k against a
brute-force scorer written here, or against a freshly built index over the live documents).
Hypothesis runs derandomized (the same examples on every run) with bounded example counts;
FASTRAG_PROPERTY_SCALE=N multiplies them for a longer hunt (e.g. 20 before a release).
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import fastrag
from fastrag.index import ImpactIndex

SCALE = max(1, int(os.environ.get("FASTRAG_PROPERTY_SCALE", "1")))
SETTINGS = settings(
    derandomize=True,
    deadline=None,
    max_examples=150 * SCALE,
    stateful_step_count=30,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

ID_POOL = [f"d{i}" for i in range(12)]  # small, so that adds often replace (upsert)
WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]
BM25_METHODS = ["lucene", "robertson", "atire", "bm25l", "bm25+"]

ids_st = st.lists(st.sampled_from(ID_POOL), min_size=1, max_size=5, unique=True)
tokens_st = st.lists(st.sampled_from(WORDS), min_size=0, max_size=8)


def check_row(ids_row, scores_row, expected: dict, k: int, *, tol: float = 1e-5) -> None:
    """One result row is an exact top-k of `expected` ({id: score} of every matching doc):
    min(k, matches) distinct ids with their expected scores, best first, padding after them,
    and no unreturned match scoring above the last one returned (ties may go either way)."""
    ids_row, scores_row = list(ids_row), np.asarray(scores_row, dtype=np.float64)
    n = sum(d is not None for d in ids_row)
    assert all(d is not None for d in ids_row[:n]), ids_row
    assert all(d is None for d in ids_row[n:]), ids_row
    assert np.isneginf(scores_row[n:]).all(), scores_row
    got = ids_row[:n]
    assert len(set(got)) == n, f"duplicate ids in {got}"
    assert n == min(k, len(expected)), (got, expected)
    for d, s in zip(got, scores_row[:n], strict=True):
        assert d in expected, (d, expected)
        assert abs(s - expected[d]) <= tol * max(1.0, abs(expected[d])), (d, s, expected[d])
    assert all(a >= b - tol for a, b in itertools.pairwise(scores_row[:n])), scores_row
    if n and n < len(expected):
        last = scores_row[n - 1]
        left = {d: s for d, s in expected.items() if d not in got}
        assert max(left.values()) <= last + tol * max(1.0, abs(last)), (left, last)


def row_dict(ids_row, scores_row) -> dict:
    return {d: float(s) for d, s in zip(ids_row, scores_row, strict=True) if d is not None}


class _TempDirMachine(RuleBasedStateMachine):
    """A state machine with its own temporary folder, removed at teardown."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="fastrag-prop-"))
        self.saves = 0

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def next_path(self, suffix: str) -> Path:
        # alternate two names: a save may rename over the file a mapped index still reads
        self.saves += 1
        return self.tmp / f"index{self.saves % 2}{suffix}"


# ---------------------------------------------------------------------------- BM25
def plain_lucene(docs: dict[str, list[str]], query: list[str], k1=1.5, b=0.75) -> dict:
    """BM25 as bm25s's "lucene" variant (no (k1 + 1) factor) over the live documents, written
    plainly: {id: score} of the matching documents."""
    n = len(docs)
    avgdl = sum(len(t) for t in docs.values()) / n if n else 0.0
    out: dict[str, float] = {}
    for term in set(query):
        df = sum(term in t for t in docs.values())
        if not df:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for d, toks in docs.items():
            tf = toks.count(term)
            if tf:
                norm = tf + k1 * (1 - b + b * len(toks) / avgdl)
                out[d] = out.get(d, 0.0) + idf * tf / norm
    return out


class BM25Machine(_TempDirMachine):
    """fastrag.BM25 against {id: tokens} of the live documents."""

    @initialize(method=st.sampled_from(BM25_METHODS))
    def start(self, method: str) -> None:
        self.method = method
        self.index = fastrag.BM25(method=method)
        self.model: dict[str, list[str]] = {}

    @rule(ids=ids_st, data=st.data())
    def add(self, ids, data) -> None:
        docs = [data.draw(tokens_st) for _ in ids]
        self.index.add(docs, ids=ids)
        self.model.update(zip(ids, docs, strict=True))

    @rule(data=st.data())
    def delete(self, data) -> None:
        if not self.model:
            return
        ids = data.draw(st.lists(st.sampled_from(sorted(self.model)), min_size=1, unique=True))
        assert self.index.delete(ids) == len(ids)
        for d in ids:
            del self.model[d]

    @rule(d=st.sampled_from(ID_POOL))
    def delete_unknown(self, d) -> None:
        if d in self.model:
            return
        with pytest.raises(KeyError):
            self.index.delete([d, *list(self.model)[:1]])
        assert self.index.delete([d], missing="ignore") == 0

    @rule()
    def compact(self) -> None:
        self.index.compact()

    @rule(mmap=st.booleans())
    def save_load(self, mmap) -> None:
        path = self.next_path(".fridx")
        self.index.save(path)
        self.index = fastrag.BM25.load(path, mmap=mmap)

    @invariant()
    def same_ids(self) -> None:
        if not hasattr(self, "index"):
            return
        assert len(self.index) == len(self.model)
        assert sorted(self.index.ids) == sorted(self.model)
        assert all(d in self.index for d in self.model)
        assert all(d not in self.index for d in ID_POOL if d not in self.model)

    @precondition(lambda self: hasattr(self, "index"))
    @rule(
        queries=st.lists(st.lists(st.sampled_from([*WORDS, "unknown"]), min_size=1,
                                  max_size=3, unique=True), min_size=1, max_size=3),
        k=st.integers(1, 6),
        algorithm=st.sampled_from(["auto", "exhaustive", "maxscore"]),
        data=st.data(),
    )
    def search(self, queries, k, algorithm, data) -> None:
        live = dict(self.model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fastrag.EmptyDocumentWarning)
            fresh = fastrag.BM25(method=self.method)
            fresh.add(list(live.values()), ids=list(live))
        allow = None
        if data.draw(st.booleans()):  # live, deleted and never added ids
            allow = data.draw(st.lists(st.sampled_from(ID_POOL), unique=True))
        full = len(live) + 1
        got = self.index.search(queries, k=k, algorithm=algorithm, filter=allow, threads=1)
        got_all = self.index.search(queries, k=full, algorithm=algorithm, filter=allow)
        for qi, q in enumerate(queries):
            ref = fresh.search([q], k=full, filter=allow)
            expected = row_dict(ref.ids[0], ref.scores[0])
            if self.method == "lucene":
                plain = plain_lucene(live, q)
                if allow is not None:
                    plain = {d: s for d, s in plain.items() if d in allow}
                assert expected.keys() == plain.keys()
                for d, s in plain.items():
                    assert abs(expected[d] - s) <= 2e-5 * max(1.0, s)
            # same ids and scores as a fresh index over the live documents
            assert row_dict(got_all.ids[qi], got_all.scores[qi]).keys() == expected.keys()
            check_row(got_all.ids[qi], got_all.scores[qi], expected, full)
            check_row(got.ids[qi], got.scores[qi], expected, k)


TestBM25 = BM25Machine.TestCase
TestBM25.settings = SETTINGS


# ---------------------------------------------------------------------------- ImpactIndex
VOCAB = 12
weight_st = st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.75])  # exact in float32
vector_st = st.dictionaries(st.integers(0, VOCAB - 1), weight_st, max_size=6)
query_st = st.dictionaries(
    st.integers(0, VOCAB - 1), st.sampled_from([0.25, 0.5, 1.0, 2.5]), min_size=1, max_size=4
)


class ImpactMachine(_TempDirMachine):
    """fastrag.index.ImpactIndex against {id: {term: weight}}; exact dot-product top-k."""

    @initialize(vocab=st.sampled_from([None, VOCAB]))
    def start(self, vocab) -> None:
        self.index = ImpactIndex(vocab_size=vocab)
        self.model: dict[str, dict[int, float]] = {}

    @rule(ids=ids_st, data=st.data())
    def add(self, ids, data) -> None:
        vecs = [data.draw(vector_st) for _ in ids]
        self.index.add(vecs, ids=ids)
        for d, v in zip(ids, vecs, strict=True):
            self.model[d] = {t: w for t, w in v.items() if w > 0}

    @rule(data=st.data())
    def delete(self, data) -> None:
        if not self.model:
            return
        ids = data.draw(st.lists(st.sampled_from(sorted(self.model)), min_size=1, unique=True))
        assert self.index.delete(ids) == len(ids)
        for d in ids:
            del self.model[d]

    @rule()
    def compact(self) -> None:
        self.index.compact()

    @rule(mmap=st.booleans())
    def save_load(self, mmap) -> None:
        path = self.next_path(".fridx")
        self.index.save(path)
        self.index = ImpactIndex.load(path, mmap=mmap)

    @invariant()
    def same_ids(self) -> None:
        if not hasattr(self, "index"):
            return
        assert len(self.index) == len(self.model)
        assert sorted(self.index.ids) == sorted(self.model)
        assert all(d in self.index for d in self.model)

    @precondition(lambda self: hasattr(self, "index"))
    @rule(
        queries=st.lists(query_st, min_size=1, max_size=3),
        k=st.integers(1, 6),
        algorithm=st.sampled_from(["auto", "exhaustive", "maxscore"]),
        data=st.data(),
    )
    def search(self, queries, k, algorithm, data) -> None:
        allow = None
        if data.draw(st.booleans()):  # live, deleted and never added ids
            allow = set(data.draw(st.lists(st.sampled_from(ID_POOL), unique=True)))
        got = self.index.search(
            queries, k=k, algorithm=algorithm,
            filter=None if allow is None else sorted(allow), threads=1,
        )
        for qi, q in enumerate(queries):
            expected = {}
            for d, v in self.model.items():
                if allow is not None and d not in allow:
                    continue
                common = set(v) & set(q)
                if common:
                    expected[d] = sum(v[t] * q[t] for t in common)
            check_row(got.ids[qi], got.scores[qi], expected, k)


TestImpact = ImpactMachine.TestCase
TestImpact.settings = SETTINGS


# ---------------------------------------------------------------------------- DenseIndex
DIM = 8
dvec_st = st.lists(st.integers(-3, 3), min_size=DIM, max_size=DIM).filter(any)


class DenseMachine(_TempDirMachine):
    """fastrag.DenseIndex (float32) against {id: vector}: exact search equals numpy brute
    force; HNSW results hold live ids only, once each, with their exact scores."""

    @initialize(metric=st.sampled_from(["cosine", "ip", "l2"]))
    def start(self, metric) -> None:
        self.metric = metric
        self.index = fastrag.DenseIndex(DIM, metric=metric, M=4, ef_construction=16, seed=1)
        self.model: dict[str, np.ndarray] = {}

    @rule(ids=ids_st, data=st.data())
    def add(self, ids, data) -> None:
        rows = np.array([data.draw(dvec_st) for _ in ids], dtype=np.float32) / 4
        self.index.add(rows, ids=ids, threads=1)
        self.model.update(zip(ids, rows.astype(np.float64), strict=True))

    @rule(data=st.data())
    def delete(self, data) -> None:
        if not self.model:
            return
        ids = data.draw(st.lists(st.sampled_from(sorted(self.model)), min_size=1, unique=True))
        assert self.index.delete(ids) == len(ids)
        for d in ids:
            del self.model[d]

    @rule()
    def compact(self) -> None:
        self.index.compact(threads=1)

    @rule(mmap=st.booleans())
    def save_load(self, mmap) -> None:
        path = self.next_path(".frdx")
        self.index.save(path)
        self.index = fastrag.DenseIndex.load(path, mmap=mmap)

    @invariant()
    def same_ids(self) -> None:
        if not hasattr(self, "index"):
            return
        assert len(self.index) == len(self.model)
        assert sorted(self.index.ids) == sorted(self.model)
        assert all(d in self.index for d in self.model)

    def _scores(self, q: np.ndarray) -> dict[str, float]:
        out = {}
        for d, x in self.model.items():
            if self.metric == "cosine":
                out[d] = float(x @ q / (np.linalg.norm(x) * np.linalg.norm(q)))
            elif self.metric == "ip":
                out[d] = float(x @ q)
            else:
                out[d] = -float(((x - q) ** 2).sum())
        return out

    @precondition(lambda self: hasattr(self, "index"))
    @rule(
        queries=st.lists(dvec_st, min_size=1, max_size=3),
        k=st.integers(1, 8),
        data=st.data(),
    )
    def search(self, queries, k, data) -> None:
        q = np.array(queries, dtype=np.float32) / 4
        allow = None
        if data.draw(st.booleans()):  # live, deleted and never added ids
            allow = set(data.draw(st.lists(st.sampled_from(ID_POOL), unique=True)))
        flt = None if allow is None else sorted(allow)
        exact = self.index.search(q, k=k, exact=True, filter=flt, threads=1)
        approx = self.index.search(q, k=k, filter=flt, threads=1)
        for qi in range(len(q)):
            expected = self._scores(q[qi].astype(np.float64))
            if allow is not None:
                expected = {d: s for d, s in expected.items() if d in allow}
            check_row(exact.ids[qi], exact.scores[qi], expected, k)
            ids = [d for d in approx.ids[qi] if d is not None]
            assert len(ids) == len(set(ids)) <= min(k, len(expected)), ids
            for d, s in zip(ids, approx.scores[qi], strict=False):
                assert d in expected, (d, sorted(expected))
                assert abs(s - expected[d]) <= 1e-5 * max(1.0, abs(expected[d]))


TestDense = DenseMachine.TestCase
TestDense.settings = SETTINGS


# ---------------------------------------------------------------------------- Collection
FILLER = ["river", "stone", "cloud", "forest", "lamp", "paper"]


class CollectionMachine(_TempDirMachine):
    """A BM25-only fastrag.Collection against a model of committed and pending documents.

    Every text holds one word never used elsewhere, so that a search for it must find exactly
    its document while that version is visible, and nothing after it is replaced or deleted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.path = self.tmp / "col"
        self.col = fastrag.Collection.create(self.path, encoder=None, analyzer="english")
        self.committed: dict[str, str] = {}
        self.pending: dict[str, str | None] = {}  # None: deleted, not yet committed
        self.words: dict[str, str] = {}  # unique word -> id of the text it was put in
        self.counter = 0

    def teardown(self) -> None:
        self.col.close()
        super().teardown()

    @property
    def visible(self) -> dict[str, str]:
        out = dict(self.committed)
        for d, t in self.pending.items():
            if t is None:
                out.pop(d, None)
            else:
                out[d] = t
        return out

    @rule(ids=ids_st, data=st.data())
    def add(self, ids, data) -> None:
        texts = []
        for d in ids:
            self.counter += 1
            word = f"uniq{self.counter}x"
            self.words[word] = d
            filler = data.draw(st.lists(st.sampled_from(FILLER), max_size=4))
            texts.append(" ".join([*filler[:2], word, *filler[2:]]))
        assert self.col.add(texts, ids=ids) == ids
        self.pending.update(zip(ids, texts, strict=True))

    @rule(data=st.data())
    def delete(self, data) -> None:
        live = sorted(self.visible)
        if not live:
            return
        ids = data.draw(st.lists(st.sampled_from(live), min_size=1, max_size=3, unique=True))
        assert self.col.delete(ids) == len(ids)
        self.pending.update(dict.fromkeys(ids))

    @rule()
    def commit(self) -> None:
        self.col.commit()
        self.committed, self.pending = self.visible, {}

    @rule()
    def rollback(self) -> None:
        self.col.rollback()
        self.pending = {}

    @rule(mmap=st.booleans())
    def reopen(self, mmap) -> None:
        self.col.close()  # uncommitted changes are lost
        self.col = fastrag.Collection.open(self.path, mmap=mmap)
        self.pending = {}
        assert dict((d.id, d.text) for d in self.col.documents()) == self.committed

    @invariant()
    def same_documents(self) -> None:
        visible = self.visible
        assert len(self.col) == len(visible)
        for d in ID_POOL:
            assert (d in self.col) == (d in visible)
        for d, text in visible.items():
            assert self.col.get(d).text == text
        for d in ID_POOL:
            if d not in visible:
                with pytest.raises(KeyError):
                    self.col.get(d)

    @invariant()
    def search_unique_words(self) -> None:
        visible = self.visible
        # the newest few words: live ones must find their document, stale ones nothing
        for word, d in list(self.words.items())[-8:]:
            hits = [r.id for r in self.col.search(word, k=3, method="bm25")]
            if word in visible.get(d, "").split():
                assert hits == [d], (word, d, hits)
            else:
                assert hits == [], (word, d, hits)


TestCollection = CollectionMachine.TestCase
TestCollection.settings = settings(SETTINGS, max_examples=50 * SCALE, stateful_step_count=20)



class TwoConnectionsMachine(_TempDirMachine):
    """Two connections (Collection objects) on one folder take turns writing: each must see
    the other's commits (rows, len and search of one generation), its own uncommitted
    changes, and never the other's uncommitted ones. Only one holds uncommitted changes at a
    time (SQLite's write lock)."""

    def __init__(self) -> None:
        super().__init__()
        self.path = self.tmp / "col"
        fastrag.Collection.create(self.path, encoder=None, analyzer="english").close()
        self.cols = [fastrag.Collection.open(self.path), fastrag.Collection.open(self.path)]
        self.committed: dict[str, str] = {}
        self.pending: dict[str, str | None] = {}
        self.owner: int | None = None  # the connection with uncommitted changes
        self.words: dict[str, str] = {}
        self.counter = 0

    def teardown(self) -> None:
        for col in self.cols:
            col.close()
        super().teardown()

    def seen_by(self, i: int) -> dict[str, str]:
        out = dict(self.committed)
        if self.owner == i:
            for d, t in self.pending.items():
                if t is None:
                    out.pop(d, None)
                else:
                    out[d] = t
        return out

    def may_write(self, i: int) -> bool:
        return self.owner in (None, i)

    @rule(i=st.integers(0, 1), ids=ids_st, data=st.data())
    def add(self, i, ids, data) -> None:
        if not self.may_write(i):
            return
        texts = []
        for d in ids:
            self.counter += 1
            word = f"uniq{self.counter}x"
            self.words[word] = d
            filler = data.draw(st.lists(st.sampled_from(FILLER), max_size=3))
            texts.append(" ".join([word, *filler]))
        self.cols[i].add(texts, ids=ids)
        self.owner = i
        self.pending.update(zip(ids, texts, strict=True))

    @rule(i=st.integers(0, 1), data=st.data())
    def delete(self, i, data) -> None:
        live = sorted(self.seen_by(i))
        if not self.may_write(i) or not live:
            return
        ids = data.draw(st.lists(st.sampled_from(live), min_size=1, max_size=3, unique=True))
        assert self.cols[i].delete(ids) == len(ids)
        self.owner = i
        self.pending.update(dict.fromkeys(ids))

    @rule(i=st.integers(0, 1))
    def commit(self, i) -> None:
        if not self.may_write(i):
            return
        self.cols[i].commit()
        self.committed, self.pending, self.owner = self.seen_by(i), {}, None

    @rule(i=st.integers(0, 1))
    def rollback(self, i) -> None:
        if not self.may_write(i):
            return
        self.cols[i].rollback()
        self.pending, self.owner = {}, None

    @rule(i=st.integers(0, 1), mmap=st.booleans())
    def reopen(self, i, mmap) -> None:
        self.cols[i].close()
        if self.owner == i:
            self.pending, self.owner = {}, None
        self.cols[i] = fastrag.Collection.open(self.path, mmap=mmap)

    @invariant()
    def each_sees_its_state(self) -> None:
        for i, col in enumerate(self.cols):
            seen = self.seen_by(i)
            assert len(col) == len(seen), i
            for d in ID_POOL:
                assert (d in col) == (d in seen), (i, d)
            for d, text in seen.items():
                assert col.get(d).text == text, (i, d)
            for word, d in list(self.words.items())[-6:]:
                hits = [r.id for r in col.search(word, k=3, method="bm25")]
                expected = [d] if word in seen.get(d, "").split() else []
                assert hits == expected, (i, word, hits, expected)


TestTwoConnections = TwoConnectionsMachine.TestCase
TestTwoConnections.settings = settings(SETTINGS, max_examples=30 * SCALE, stateful_step_count=20)


def test_open_collection_searches_across_another_connections_commit(tmp_path) -> None:
    writer = fastrag.Collection.create(tmp_path / "col", encoder=None, analyzer="english")
    writer.add(["river stone", "river cloud"], ids=["a", "b"])
    writer.commit()
    reader = fastrag.Collection.open(tmp_path / "col")
    try:
        assert {r.id for r in reader.search("river", k=5, method="bm25")} == {"a", "b"}
        writer.delete(["a"])
        writer.commit()
        failures = []
        try:
            hits = reader.search("river", k=5, method="bm25")
            failures += [h for h in hits if "river" not in h.passage]
        except fastrag.IndexFormatError as e:
            failures.append(str(e))
        writer.add(["forest lamp"], ids=["a"])
        writer.commit()
        hits = reader.search("river", k=5, method="bm25")
        failures += [h for h in hits if "river" not in h.passage]
        assert not failures, failures
    finally:
        reader.close()
        writer.close()
