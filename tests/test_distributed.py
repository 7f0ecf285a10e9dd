"""Sharded builds, exact global BM25, fan-out search and merging (fastrag.distributed).

Local execution only (the process pool and inline): the Ray tests are in
tests/test_distributed_ray.py.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fake_encoder import FakeEncoder
from fastrag import _core
from fastrag.collection import Collection
from fastrag.distributed import (
    ShardedCollection,
    ShardError,
    ShardMismatchError,
    ShardMissingError,
    ShardMissingWarning,
    build_shards,
    merge_shards,
    split_contiguous,
)
from fastrag.distributed.build import _run, global_term_order
from fastrag.index import BM25
from fastrag.search import Pipeline, Retriever, fused_pipeline

WORDS = (
    "wing", "flow", "shock", "boundary", "layer", "heat", "transfer", "pressure", "drag", "lift",
    "nozzle", "jet", "plate", "cone", "cylinder", "supersonic", "subsonic", "laminar",
    "turbulent", "velocity", "mach", "number", "slender", "body", "theory", "experiment",
)


def corpus(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Seeded texts of 3-40 words from a Zipf-like vocabulary (repeats make ties)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, len(WORDS) + 1)
    p /= p.sum()
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 40)), p=p)) for _ in range(n)]
    return texts, [f"d{i}" for i in range(n)]


def queries(n: int, seed: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 6)))) for _ in range(n)]


def same(a: list[list[Any]], b: list[list[Any]]) -> bool:
    return [[(r.id, r.score) for r in x] for x in a] == [[(r.id, r.score) for r in x] for x in b]


# ---------------------------------------------------------------------- the core hook
@pytest.mark.parametrize("impact_cache", [True, False])
def test_global_stats_make_shard_scores_equal_one_index_bit_for_bit(impact_cache: bool) -> None:
    """Also without the impact cache (scores computed from tf and the global statistics as
    the compressed blocks are decoded)."""
    texts, ids = corpus(300)
    whole = BM25(analyzer="english", impact_cache=impact_cache)
    whole.add(texts, ids=ids)
    order = whole.vocabulary
    parts = []
    for a, b in split_contiguous(len(texts), 3):
        shard = BM25(analyzer="english", impact_cache=impact_cache)
        # terms numbered in the whole index's order, as build_shards aligns them
        shard.reserve_terms(sorted({t for doc in whole.analyzer.analyze_many(texts[a:b])
                                    for t in doc}, key=order.__getitem__))
        shard.add(texts[a:b], ids=ids[a:b])
        parts.append(shard)
    stats = [p.collection_stats() for p in parts]
    n = sum(s[0] for s in stats)
    total = sum(s[1] for s in stats)
    df: dict[str, int] = {}
    for s in stats:
        for t, c in s[2].items():
            df[t] = df.get(t, 0) + c
    for p in parts:
        p.set_global_stats(n, total, df)
    assert whole.stats()["total_len"] == total
    for q in queries(100):
        want = whole.search(q, k=10)[0]
        got = sorted((h for p in parts for h in p.search(q, k=10)[0]),
                     key=lambda h: -h.score)[:10]
        assert [h.score for h in got] == [h.score for h in want]  # exact float equality
        assert {h.id for h in got if h.score > want[-1].score} == {
            h.id for h in want if h.score > want[-1].score}
    parts[0].clear_global_stats()
    assert not parts[0]._core.has_global_stats


def test_global_stats_refuse_what_does_not_cover_the_shard() -> None:
    ix = BM25(analyzer="english")
    ix.add(["wing flow", "flow shock"], ids=["a", "b"])
    with pytest.raises(ValueError, match="missing from the global statistics"):
        ix.set_global_stats(10, 100.0, {"wing": 1})
    with pytest.raises(ValueError, match="outside"):
        ix.set_global_stats(10, 100.0, {"wing": 1, "flow": 1, "shock": 1})  # flow: local df 2
    with pytest.raises(ValueError, match="must cover this shard"):
        ix.set_global_stats(1, 100.0, {"wing": 1, "flow": 2, "shock": 1})
    with pytest.raises(ValueError, match="must cover this shard"):
        ix.set_global_stats(10, 1.0, {"wing": 1, "flow": 2, "shock": 1})
    core = _core.SparseIndex(scoring="impact")
    with pytest.raises(ValueError, match="BM25 scoring only"):
        core.set_global_stats(1, 1.0, np.zeros(0, dtype=np.uint32))
    with pytest.raises(ValueError, match="reserve_terms must come before"):
        ix.reserve_terms(["x"])
    before = ix.search("flow", k=2)[0]
    assert not ix._core.has_global_stats  # the refused calls changed nothing
    ix.set_global_stats(10, 40.0, {"wing": 1, "flow": 2, "shock": 1})
    assert ix.search("flow", k=2)[0][0].score != before[0].score


def test_global_term_order_is_first_occurrence_over_the_shards() -> None:
    assert global_term_order([["b", "a"], ["c", "a", "d"], ["d", "e"]]) == {
        "b": 0, "a": 1, "c": 2, "d": 3, "e": 4}


def test_split_contiguous() -> None:
    assert split_contiguous(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert split_contiguous(1, 3) == [(0, 1), (1, 1), (1, 1)]
    with pytest.raises(ValueError):
        split_contiguous(3, 0)


# ---------------------------------------------------------------------- sharded collections
@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str], list[str]]:
    """A single collection and the same documents in 3 shards (process pool of 2)."""
    root = tmp_path_factory.mktemp("dist")
    texts, ids = corpus(240)
    texts[5] = texts[5] * 40  # a long document: several chunks
    single = Collection.create(root / "single", encoder=FakeEncoder(), chunk_chars=300)
    single.add(texts, ids=ids)
    single.commit()
    single.close()
    build_shards(root / "sharded", texts, ids, shards=3, workers=2, encoder=FakeEncoder(),
                 chunk_chars=300)
    return root / "single", root / "sharded", texts, ids


def test_sharded_bm25_equals_one_collection(built: Any) -> None:
    single_dir, sharded_dir, _, _ = built
    qs = queries(60)
    with Collection.open(single_dir, encoder=FakeEncoder()) as single, \
            ShardedCollection.open(sharded_dir, encoder=FakeEncoder()) as sc:
        assert len(sc.handles) == 3 and not sc.missing
        for k in (1, 10, 50):
            assert same(single.search_batch(qs, k, method="bm25"),
                        sc.search_batch(qs, k, method="bm25"))
        # the dense leg: close to the single collection's (HNSW on both sides, approximate)
        a, b = single.search_batch(qs, 10, method="dense"), sc.search_batch(qs, 10,
                                                                             method="dense")
        overlap = np.mean([len({r.id for r in x} & {r.id for r in y}) / 10
                           for x, y in zip(a, b, strict=True)])
        assert overlap >= 0.9
        hybrid = sc.search("shock wing", k=5, explain=True)
        assert len(hybrid) == 5 and "fusion" in hybrid[0].stages
        assert {"bm25", "dense"} & set(hybrid[0].stages)


def test_sharded_bm25_equals_one_collection_on_cranfield(tmp_path: Path,
                                                         beir_collection: Any) -> None:
    rows, qrows = beir_collection("cranfield", 225)
    kept = [r for r in rows if (r.get("title", "") + r["text"]).strip()]  # one is empty
    texts = [(r.get("title", "") + " " + r["text"]).strip() for r in kept]
    ids = [r["_id"] for r in kept]
    single = Collection.create(tmp_path / "one", encoder=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # two abstracts have no tokens
        single.add(texts, ids=ids)
        build_shards(tmp_path / "sh", texts, ids, shards=4, executor="inline", encoder=None)
    qs = [q["text"] for q in qrows]
    with ShardedCollection.open(tmp_path / "sh") as sc:
        assert sc.stats[0] == len(single.bm25)
        assert same(single.search_batch(qs, 10, method="bm25"),
                    sc.search_batch(qs, 10, method="bm25"))
    single.close()


def test_a_filter_is_applied_inside_every_shard(tmp_path: Path) -> None:
    """A metadata filter reaches each shard's top-k: filtered sharded BM25 equals the filtered
    single collection bit for bit, and every hit of a filtered hybrid search passes it."""
    texts, ids = corpus(150, seed=3)
    meta = [{"group": i % 3} for i in range(len(texts))]
    single = Collection.create(tmp_path / "single", encoder=None)
    single.add(texts, ids=ids, metadata=meta)
    single.commit()
    build_shards(tmp_path / "sharded", texts, ids, meta, shards=3, workers=1,
                 executor="inline", encoder=FakeEncoder())
    qs, flt = queries(30, seed=4), {"group": {"$in": [0, 2]}}
    with ShardedCollection.open(tmp_path / "sharded", encoder=FakeEncoder()) as sc:
        for k in (1, 10):
            want = single.search_batch(qs, k, method="bm25", filter=flt)
            got = sc.search_batch(qs, k, method="bm25", filter=flt)
            assert same(want, got)
            assert got != sc.search_batch(qs, k, method="bm25")  # the filter did something
        hits = sc.search("shock wing", k=10, filter={"group": 1})
        assert hits and all(r.metadata["group"] == 1 for r in hits)
    single.close()


def test_a_shard_of_another_encoder_or_analyzer_is_refused(built: Any, tmp_path: Path) -> None:
    _, sharded_dir, texts, ids = built
    folder = tmp_path / "s"
    shutil.copytree(sharded_dir, folder)
    shutil.rmtree(folder / "shard-0001")
    other = Collection.create(folder / "shard-0001", encoder=FakeEncoder(salt="b"),
                              chunk_chars=300)
    other.add(texts[80:160], ids=ids[80:160])
    other.commit()
    other.close()
    with pytest.raises(ShardMismatchError, match="shard-0001 was built with encoder"):
        ShardedCollection.open(folder, encoder=FakeEncoder())
    with pytest.raises(ShardMismatchError, match="encoder"):
        merge_shards([folder], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()  # refused before anything was written
    shutil.rmtree(folder / "shard-0001")
    other = Collection.create(folder / "shard-0001", encoder=FakeEncoder(), chunk_chars=300,
                              analyzer="english")
    other.commit()
    other.close()
    with pytest.raises(ShardMismatchError, match="analyzer='english'"):
        ShardedCollection.open(folder, encoder=FakeEncoder())
    with pytest.raises(ShardMismatchError, match="analyzer"):
        merge_shards([folder / "shard-0000", folder / "shard-0001"], tmp_path / "merged")


def test_a_missing_shard_gives_partial_results_with_a_warning_or_an_error(
    built: Any, tmp_path: Path
) -> None:
    _, sharded_dir, _, ids = built
    folder = tmp_path / "s"
    shutil.copytree(sharded_dir, folder)
    shutil.rmtree(folder / "shard-0002")
    with pytest.raises(ShardMissingError, match="shard-0002"):
        ShardedCollection.open(folder, encoder=FakeEncoder(), on_missing="error")
    with pytest.warns(ShardMissingWarning, match="2 of 3 shards: shard-0002"):
        sc = ShardedCollection.open(folder, encoder=FakeEncoder())
    with sc:
        assert sc.missing == ["shard-0002"]
        got = sc.search("wing", k=300, method="bm25")
        assert got and {r.id for r in got} <= set(ids[:160])

    # a shard failing during a search
    def broken(*_: Any) -> Any:
        raise OSError("disk gone")

    with ShardedCollection.open(sharded_dir, encoder=FakeEncoder()) as sc:
        sc.handles["shard-0001"].search = broken  # type: ignore[method-assign]
        with pytest.warns(ShardMissingWarning, match="shard-0001 unavailable when searching"):
            got = sc.search("wing", k=300, method="bm25")
        assert got and not {r.id for r in got} & set(ids[80:160])
    with ShardedCollection.open(sharded_dir, encoder=FakeEncoder(), on_missing="error") as sc:
        sc.handles["shard-0001"].search = broken  # type: ignore[method-assign]
        with pytest.raises(ShardMissingError, match="disk gone"):
            sc.search("wing", k=5, method="bm25")
        with pytest.raises(ValueError, match="unknown method"):
            sc.search("wing", method="nope")
        with pytest.raises(ValueError, match="k must be"):
            sc.search("wing", k=0)
    with pytest.raises(ValueError, match="on_missing"):
        ShardedCollection.open(sharded_dir, encoder=FakeEncoder(), on_missing="ignore")
    with pytest.raises(ShardError, match="not a sharded collection"):
        ShardedCollection.open(tmp_path)


def test_merge_equals_one_collection(built: Any, tmp_path: Path) -> None:
    single_dir, sharded_dir, _, _ = built
    enc = FakeEncoder()
    out = merge_shards([sharded_dir], tmp_path / "merged", encoder=enc)
    assert out["shards"] == 3 and out["documents"] == 240
    assert not [c for c in enc.calls if c[0] == "document"]  # vectors reused, not re-encoded
    qs = queries(40)
    with Collection.open(single_dir, encoder=FakeEncoder()) as single, \
            Collection.open(tmp_path / "merged", encoder=FakeEncoder()) as merged:
        assert len(merged) == len(single)
        assert merged.chunk_table().hits == single.chunk_table().hits
        assert same(single.search_batch(qs, 10, method="bm25"),
                    merged.search_batch(qs, 10, method="bm25"))
        np.testing.assert_allclose(merged.vectors_of(range(5)), single.vectors_of(range(5)),
                                   atol=1e-6)
    with pytest.raises(ValueError, match="is in two shards"):
        merge_shards([sharded_dir / "shard-0000", sharded_dir / "shard-0000"],
                     tmp_path / "twice", encoder=FakeEncoder())
    assert not (tmp_path / "twice").exists()  # nothing half-merged left behind
    with pytest.raises(ShardError, match="missing"):
        merge_shards([tmp_path / "nope"], tmp_path / "m2")


def test_build_refuses_bad_input_and_retries_a_failed_shard(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ids repeat"):
        build_shards(tmp_path / "a", ["x", "y"], ["1", "1"], encoder=None)
    with pytest.raises(ValueError, match="shards must be"):
        build_shards(tmp_path / "a", ["x"], encoder=None, shards=0)
    with pytest.raises(ValueError, match="executor"):
        build_shards(tmp_path / "a", ["x"], encoder=None, executor="threads")
    build_shards(tmp_path / "a", ["x y", "y z"], encoder=None, executor="inline")
    with pytest.raises(ShardError, match="already holds"):
        build_shards(tmp_path / "a", ["x"], encoder=None)

    attempts: list[int] = []

    def flaky(t: int) -> int:
        attempts.append(t)
        if attempts.count(t) == 1 and t == 2:
            raise OSError("worker lost")
        return t * 10

    said: list[str] = []
    assert _run(flaky, [1, 2, 3], "inline", 1, 1, None, said.append, str) == [10, 20, 30]
    assert attempts == [1, 2, 2, 3] and "2 failed (worker lost); retrying" in said
    with pytest.raises(ShardError, match="2 failed after 1 attempts: worker lost"):
        attempts.clear()
        _run(flaky, [1, 2, 3], "inline", 1, 0, None, said.append, str)


# ---------------------------------------------------------------------- the command line
def test_cli_index_shards_search_and_merge(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fastrag.cli import main

    texts, ids = corpus(60)
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, t in zip(ids, texts, strict=True):
        (docs / f"{i}.txt").write_text(t, encoding="utf-8")
    run = CliRunner().invoke
    res = run(main, ["index", str(docs), "-c", str(tmp_path / "sh"), "--model", "none",
                     "--shards", "3", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "into 3 shards" in res.output
    res = run(main, ["search", str(tmp_path / "sh"), "wing shock", "--method", "bm25", "-k", "3"])
    assert res.exit_code == 0, res.output
    assert len([ln for ln in res.output.splitlines() if ln.strip()]) == 3
    allowed = [f"{i}.txt" for i in ids[::4]]
    res = run(main, ["search", str(tmp_path / "sh"), texts[0], "--method", "bm25", "-k", "5",
                     "--json", "--filter", json.dumps({"source": {"$in": allowed}})])
    assert res.exit_code == 0, res.output
    got = [json.loads(ln)["id"] for ln in res.output.splitlines() if ln.startswith("{")]
    assert got and set(got) <= set(allowed) and got[0] == "d0.txt"
    res = run(main, ["search", str(tmp_path / "sh"), "wing", "--augment", "mk"])
    assert res.exit_code != 0 and "sharded collection" in res.output
    res = run(main, ["search", str(tmp_path / "sh"), "wing", "--retrievers", "bm25,dense"])
    assert res.exit_code != 0 and "no 'dense' leg in these shards (legs: bm25)" in res.output
    res = run(main, ["search", str(tmp_path / "sh"), "wing shock", "--retrievers", "bm25",
                     "-k", "2", "--json"])
    assert res.exit_code == 0, res.output
    with ShardedCollection.open(tmp_path / "sh") as sc:
        want = [r.id for r in sc.search("wing shock", 2, method="bm25")]
    assert [json.loads(ln)["id"] for ln in res.output.splitlines()
            if ln.startswith("{")] == want
    res = run(main, ["merge", str(tmp_path / "sh"), "-c", str(tmp_path / "one")])
    assert res.exit_code == 0, res.output
    assert "merged 3 shards" in res.output and "60 documents" in res.output
    res = run(main, ["merge", str(tmp_path / "sh"), "-c", str(tmp_path / "one-b"),
                     "--dense-merge", "rebuild"])
    assert res.exit_code == 0, res.output
    res = run(main, ["merge", str(tmp_path / "sh"), "-c", str(tmp_path / "x"),
                     "--dense-merge", "graft"])
    assert res.exit_code != 0 and "graft" in res.output
    res = run(main, ["merge", str(tmp_path / "nope"), "-c", str(tmp_path / "two")])
    assert res.exit_code != 0 and "missing" in res.output
    res = run(main, ["index", str(docs), "-c", str(tmp_path / "x"), "--model", "none",
                     "--ray"])
    assert res.exit_code != 0 and "--ray needs --shards" in res.output


def test_collection_add_takes_one_vector_per_chunk(tmp_path: Path) -> None:
    enc = FakeEncoder()
    col = Collection.create(tmp_path / "c", encoder=enc, chunk_chars=100)
    texts = ["wing flow " * 30, "shock"]  # 3 + 1 chunks
    spans_probe = Collection.create(tmp_path / "p", encoder=FakeEncoder(), chunk_chars=100)
    spans_probe.add(texts, ids=["a", "b"])
    n_chunks = len(spans_probe.chunk_table().hits)
    vectors = spans_probe.vectors_of(sorted(spans_probe.chunk_table().hits))
    spans_probe.close()
    assert n_chunks == len(vectors) > 2
    with pytest.raises(ValueError, match="one per chunk"):
        col.add(texts, ids=["a", "b"], vectors=vectors[:2])
    assert len(col) == 0  # nothing added
    enc.calls.clear()
    col.add(texts, ids=["a", "b"], vectors=vectors)
    assert not [c for c in enc.calls if c[0] == "document"]
    np.testing.assert_allclose(col.vectors_of(sorted(col.chunk_table().hits)), vectors,
                               atol=1e-6)
    col.close()


# ---------------------------------------------------------------------- merging HNSW graphs
def _exact_top10(col: Collection, qv: np.ndarray) -> list[list[str]]:
    table = col.chunk_table()
    chunks = sorted(table.hits)
    sims = qv @ col.vectors_of(chunks).T
    out = []
    for row in sims:
        best: dict[str, None] = {}
        for j in np.argsort(-row, kind="stable"):
            best.setdefault(table.hits[chunks[j]].doc)
            if len(best) == 10:
                break
        out.append(list(best))
    return out


@pytest.mark.parametrize("dense", ["insert", "rebuild"])
@pytest.mark.parametrize("base", ["first", "middle", "other-settings"])
def test_merge_dense_graph_with_deleted_documents(built: Any, tmp_path: Path, dense: str,
                                                  base: str) -> None:
    """The HNSW graph inserted into or rebuilt: every chunk keeps its own vector under its
    new id, and the dense top-10 of the merged collection matches exact search. The graph
    kept is the largest shard's: the first, with deleted slots ("first"), or the second,
    the first shard's vectors waiting for it ("middle"); a graph of other settings than a
    new one's is not kept ("other-settings": a rebuild)."""
    from fastrag.index import DenseIndex

    _, sharded_dir, _, ids = built
    folder = tmp_path / "s"
    shutil.copytree(sharded_dir, folder)
    # shard chunks 82, 80, 80 (document 5 has 3 chunks)
    gone = {"first": ids[3:5] + ids[170:183],
            "middle": ids[3:40:3] + ids[170:175]}.get(base, ids[170:175])
    for name in ("shard-0000", "shard-0002"):
        with Collection.open(folder / name, encoder=FakeEncoder()) as shard:
            shard.delete([d for d in gone if d in shard])
    if base == "other-settings":  # shard 0's graph made again with M 8
        with Collection.open(folder / "shard-0000", encoder=FakeEncoder()) as shard:
            path = shard.index_file("dense")
            old = shard.dense
            other = DenseIndex(encoder=FakeEncoder(), M=8)
            other.add(old.get_vectors(old.ids), ids=old.ids)
        other.save(path)
    out = merge_shards([folder], tmp_path / "m", encoder=FakeEncoder(), dense=dense)
    assert out["dense"] == ("rebuild" if base == "other-settings" else dense)
    assert out["documents"] == len(ids) - len(gone)
    with Collection.open(tmp_path / "m", encoder=FakeEncoder()) as merged:
        table = merged.chunk_table()
        assert sorted(table.hits) == list(range(len(table.hits)))
        by_span = {}
        for name in ("shard-0000", "shard-0001", "shard-0002"):
            with Collection.open(folder / name, encoder=FakeEncoder()) as shard:
                hits = shard.chunk_table().hits
                vecs = shard.vectors_of(sorted(hits))
                for c, v in zip(sorted(hits), vecs, strict=True):
                    by_span[(hits[c].doc, hits[c].start, hits[c].end)] = v
        chunks = sorted(table.hits)
        want = np.stack([by_span[(table.hits[c].doc, table.hits[c].start, table.hits[c].end)]
                         for c in chunks])
        np.testing.assert_allclose(merged.vectors_of(chunks), want, atol=1e-6)
        assert merged.dense.M == 16
        qv = FakeEncoder().encode_queries(queries(40))
        got = [[r.id for r in rs] for rs in merged.search_batch(queries(40), 10, method="dense",
                                                                vectors=qv)]
        exact = _exact_top10(merged, qv)
        assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact, strict=True)]) >= 0.95
        assert not set(gone) & {d for row in got for d in row}


def test_rename_set_index_and_skip_legs_refuse_bad_input(tmp_path: Path) -> None:
    from fastrag.collection import CollectionError
    from fastrag.index import DenseIndex

    ix = DenseIndex(4)
    ix.add(np.eye(4, dtype=np.float32), ids=[0, 1, 2, 3])
    ix.delete([2])
    with pytest.raises(KeyError, match="no new id"):
        ix.rename({0: 10, 1: 11})
    with pytest.raises(ValueError, match="duplicate"):
        ix.rename({0: 10, 1: 10, 3: 12})
    assert ix.ids == [0, 1, 3]  # unchanged
    ix.rename({0: "a", 1: 11, 3: 12})
    assert ix.ids == ["a", 11, 12] and ix.search(np.eye(4)[3], k=1).ids[0, 0] == 12
    ix.add(np.ones((1, 4), dtype=np.float32), ids=[5])  # takes the deleted slot
    assert ix.stats()["n_vectors"] == 4 and len(ix) == 4

    col = Collection.create(tmp_path / "c", encoder=FakeEncoder(dim=8))
    with pytest.raises(ValueError, match="no \\['splade'\\] leg"):
        col.add(["wing flow"], ids=["a"], skip_legs=("splade",))
    vecs = FakeEncoder(dim=8).encode_documents(["wing flow", "shock"])
    col.add(["wing flow", "shock"], ids=["a", "b"], vectors=vecs, skip_legs="dense")
    assert len(col.dense) == 0
    with pytest.raises(CollectionError, match="set_index"):
        col.commit()
    other = DenseIndex(encoder=FakeEncoder(dim=8))
    other.add(vecs, ids=[0, 7])
    with pytest.raises(ValueError, match="exactly the collection's 2 chunks"):
        col.set_index("dense", other)
    with pytest.raises(TypeError, match="DenseIndex"):
        col.set_index("dense", col.bm25)
    with pytest.raises(ValueError, match="dim="):
        col.set_index("dense", DenseIndex(4))
    good = DenseIndex(encoder=FakeEncoder(dim=8))
    good.add(vecs, ids=[0, 1])
    col.set_index("dense", good)
    col.commit()
    col.close()
    with Collection.open(tmp_path / "c", encoder=FakeEncoder(dim=8)) as col:
        assert col.search("shock", k=1, method="dense")[0].id == "b"
        col.add(["lift"], ids=["c"], vectors=vecs[:1], skip_legs=["dense"])
        col.rollback()  # forgets the pending leg too
        col.add(["lift"], ids=["c"])
        col.commit()
    with pytest.raises(ValueError, match="dense must be one of"):
        merge_shards([tmp_path / "c"], tmp_path / "m", dense="graft")



# ---------------------------------------------------------------------- fusing any legs
@pytest.fixture(scope="module")
def splade(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from importlib.util import find_spec

    if find_spec("cognition") is None or find_spec("torch") is None:
        pytest.skip("splade-tiny needs the cognition package and torch (for the export)")
    from fastrag.encoders import SpladeEncoder

    return SpladeEncoder("splade-tiny", cache_dir=tmp_path_factory.mktemp("splade-models"))


def test_sharded_fusion_of_any_legs_equals_one_collection(splade: Any, tmp_path: Path) -> None:
    """BM25 + SPLADE (both exact over shards) fused by the router: the same documents in the
    same order as the single collection, for RRF and a score fusion, with and without a
    filter; unknown legs fail with the legs there are."""
    texts, ids = corpus(150, seed=5)
    texts[7] = texts[7] * 40  # several chunks
    meta = [{"group": i % 3} for i in range(len(texts))]
    single = Collection.create(tmp_path / "one", encoder=FakeEncoder(), chunk_chars=300,
                               sparse="splade", splade=splade)
    single.add(texts, ids=ids, metadata=meta)
    single.commit()
    build_shards(tmp_path / "sh", texts, ids, meta, shards=3, executor="inline",
                 encoder=FakeEncoder(), chunk_chars=300, sparse="splade", splade=splade)
    qs = queries(30, seed=6)
    pipelines = [fused_pipeline(["bm25", "splade"]),
                 Pipeline([Retriever("splade", depth=5), Retriever("bm25", depth=5)],
                          fusion="minmax", fusion_options={"weights": [2.0, 1.0]})]
    with ShardedCollection.open(tmp_path / "sh", encoder=FakeEncoder(), splade=splade) as sc:
        assert sc.legs() == ("bm25", "dense", "splade")
        for pipeline in pipelines:
            for k in (1, 10, 40):
                for flt in (None, {"group": {"$in": [0, 2]}}):
                    want = single.search_batch(qs, k, method=pipeline, filter=flt)
                    got = sc.search_batch(qs, k, method=pipeline, filter=flt)
                    assert [[r.id for r in x] for x in got] == [[r.id for r in x] for x in want]
                    for x, y in zip(got, want, strict=True):
                        assert [r.score for r in x] == pytest.approx([r.score for r in y],
                                                                     rel=1e-6)
                        assert [(r.span, r.text, r.metadata) for r in x] == [
                            (r.span, r.text, r.metadata) for r in y]
        by_name = sc.search_batch(qs, 10, retrievers=["bm25", "splade"])
        assert [[r.id for r in x] for x in by_name] == [
            [r.id for r in x] for x in single.search_batch(qs, 10, method=pipelines[0])]
        three = sc.search(qs[0], 5, retrievers=["bm25", "splade", "dense"], explain=True)
        assert len(three) == 5 and {"bm25", "splade", "dense", "fusion"} >= set(
            three[0].stages) >= {"fusion"}
        with pytest.raises(ValueError, match=r"no 'bm42' leg in these shards \(legs: bm25, "
                                             r"dense, splade\)"):
            sc.search("wing", retrievers=["bm25", "bm42"])
        with pytest.raises(ValueError, match="no 'colbert' leg"):
            sc.search("wing", retrievers=["colbert"])
        with pytest.raises(ValueError, match="no 'late' leg"):
            sc.search("wing", method=Pipeline([Retriever("bm25"), Retriever("late")]))
        with pytest.raises(ValueError, match="unknown method"):
            sc.search("wing", method="fused")
    single.close()


# ---------------------------------------------------------------------- cached statistics
def test_bm25_statistics_are_cached_until_a_shard_changes(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from fastrag.distributed import LocalShard
    from fastrag.distributed.manifest import STATS_CACHE

    texts, ids = corpus(120, seed=7)
    build_shards(tmp_path / "sh", texts, ids, shards=3, executor="inline", encoder=None)
    calls: list[str] = []
    real = LocalShard.bm25_stats

    def counted(self: LocalShard) -> Any:
        calls.append(str(self.collection.path))
        return real(self)

    monkeypatch.setattr(LocalShard, "bm25_stats", counted)
    qs = queries(20, seed=8)
    made: list[int] = []

    def check(texts: list[str], ids: list[str]) -> None:
        made.append(1)
        single = Collection.create(tmp_path / f"one-{len(made)}", encoder=None)
        single.add(texts, ids=ids)
        with ShardedCollection.open(tmp_path / "sh") as sc:
            assert sc.stats == single.bm25.collection_stats()
            a = single.search_batch(qs, 10, method="bm25")
            b = sc.search_batch(qs, 10, method="bm25")
            for x, y in zip(a, b, strict=True):  # exact, but for the order of float sums of
                # a shard made without build_shards' term alignment
                assert [r.score for r in x] == pytest.approx([r.score for r in y], rel=1e-6)
        single.close()

    check(texts, ids)
    assert len(calls) == 3 and (tmp_path / "sh" / STATS_CACHE).is_file()
    with ShardedCollection.open(tmp_path / "sh") as sc:  # bit for bit from the cache too
        single = Collection.create(tmp_path / "one", encoder=None)
        single.add(texts, ids=ids)
        assert same(single.search_batch(qs, 10, method="bm25"),
                    sc.search_batch(qs, 10, method="bm25"))
        single.close()
    assert len(calls) == 3
    check(texts, ids)
    assert len(calls) == 3  # read from the cache
    with Collection.open(tmp_path / "sh" / "shard-0001") as shard:  # a commit to one shard
        shard.add(["wing wing shock mach"], ids=["new"])
    texts, ids = [*texts[:80], "wing wing shock mach", *texts[80:]], [*ids[:80], "new", *ids[80:]]
    check(texts, ids)
    assert len(calls) == 6  # merged again
    check(texts, ids)
    assert len(calls) == 6
    (tmp_path / "sh" / STATS_CACHE).write_text('{"format": "fastrag.shards.bm25-stats", "n"')
    check(texts, ids)
    assert len(calls) == 9  # a damaged cache is merged again (and written anew)
    # a shard built again from scratch reaches the same generation, not the same file
    shutil.rmtree(tmp_path / "sh" / "shard-0002")
    with Collection.create(tmp_path / "sh" / "shard-0002", encoder=None) as shard:
        shard.add(texts[81:120], ids=ids[81:120])
    check(texts[:120], ids[:120])
    assert len(calls) == 12
