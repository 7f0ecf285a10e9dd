"""Sharded builds, exact global BM25, fan-out search and merging against one collection.

    python benchmarks/bench_distributed.py                  # full run: all of cranfield encoded
    python benchmarks/bench_distributed.py --quick          # 400 cranfield documents encoded
    python benchmarks/bench_distributed.py --smoke          # tiny generated data, BM25 only
    # options: --json PATH, --data DIR, --docs N, --shards S, --seed S, --ray (also time the
    #          Ray-actor router on a private local Ray: 10-20 s to start)

The peer is fastrag itself on one machine: one collection built in one process. Every row
runs in this script, in the same run, on the same documents (document = title + text):

- bm25_topk_identical: BM25 top-10 of a 4-shard collection (fan-out router, global statistics)
  against one collection, same ids and the same float scores, on all of cranfield (225
  queries) and on a seeded generated corpus (Zipf vocabulary, 5,000 documents, 200 queries)
  and on the encoded shards' BM25 leg; 1 only when every list is identical.
- build_speedup_2_workers: the encoder included (all-MiniLM-L6-v2, ONNX): the same 2-shard
  build with 2 worker processes against 1 (each worker's onnxruntime on 1 thread); also the
  2-worker build against one collection built in one process with onnxruntime on every core
  (build_speedup_vs_single). CPU seconds of both builds too (this process and its workers),
  and build_speedup_2_workers_cpu_bound = 2 x CPU(1 worker) / CPU(2 workers): the speedup
  with a whole core per worker, which a machine shared with other jobs cannot show.
- dense_recall_at10_vs_single: overlap of the sharded dense top-10 (each shard's HNSW,
  merged) with the single collection's, and both against the exact top-10 (brute force over
  the stored vectors, a document scored by its best chunk).
- merge_vs_rebuild_ratio: building the single collection from the texts (encoder included)
  over `fastrag merge` of the shards into one collection (stored vectors reused, BM25
  rebuilt, HNSW by insertion into the largest shard's graph, the default); > 1 when merging
  is faster.
- HNSW graphs merged or rebuilt (`fastrag merge --dense-merge insert|rebuild`), at equal
  recall: 20,000 vectors of 384 dimensions with --quick (100,000 in a full run), a seeded
  Gaussian mixture (bench_dense's generator: clustered, recall saturates near 1) and a
  Gaussian in a random 24-dimensional subspace (`_subspace`: recall@10 0.78 at ef 16, 0.98
  at ef 64, where a worse graph would show), cut into 2 (and for the mixture 4) contiguous
  shards, each shard's graph built and saved as a shard's is. Rebuild: one new graph from
  every vector. Insert: the largest shard's graph loaded from its file, its ids renamed, the
  other shards' vectors inserted (same M 16 and ef_construction 200, all cores for both).
  Recall@10 of both against exact search over all the vectors at the same ef (64, the
  default, and 16 in the keys; 32 and 128 printed).
  hnsw_merge_vs_rebuild_ratio = rebuild seconds / insert seconds (2 shards of the mixture;
  _4_shards and _subspace too); _cpu_ratio the same with the process's CPU seconds (every
  thread), steadier than the wall clock on a shared machine.
  On the encoded cranfield shards, `merge_shards(dense="insert")` against
  `dense="rebuild"` end to end (merge_insert_vs_rebuild_ratio) with the dense recall@10 of
  both merged collections against exact search.
- open_stats_cache_speedup: opening 4 BM25 shards (a Zipf vocabulary of 200,000 words;
  10,000 documents with --quick) with the merged statistics read from the folder's cache
  against merged from every shard (best of 3 each).
- fan-out latency: BM25 queries one at a time, single collection vs the 2-shard router in
  one process (bm25_qps_ratio_vs_single > 1 when the router is faster); the same for the
  hybrid search (BM25 + dense, RRF) with the query vectors given (hybrid_qps_ratio_vs_single;
  the router runs the pipeline in Python over fanned-out legs, the single collection in the
  native executor).

Shards are built by `fastrag.distributed.build_shards` (local process pool; the Ray path runs
the same build function). Load average printed at start and end: the machine is shared.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from _common import Results, parse, parser
from bench_dense import synthetic
from fastrag.collection import Collection
from fastrag.distributed import ShardedCollection, build_shards, merge_shards, split_contiguous
from fastrag.index import DenseIndex


def _beir(folder: Path, limit: int | None = None) -> tuple[list[str], list[str], list[str]]:
    rows = [json.loads(x) for x in (folder / "corpus.jsonl").read_text(encoding="utf-8")
            .splitlines() if x.strip()]
    rows = [r for r in rows if (r.get("title", "") + r.get("text", "")).strip()]
    if limit is not None:
        rows = rows[:limit]
    qs = [json.loads(x)["text"] for x in (folder / "queries.jsonl").read_text(encoding="utf-8")
          .splitlines() if x.strip()]
    texts = [(r.get("title", "") + " " + r.get("text", "")).strip() for r in rows]
    return texts, [str(r["_id"]) for r in rows], qs


def _generated(n: int, n_queries: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(3000)]
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 1.1
    p /= p.sum()
    texts = [" ".join(rng.choice(vocab, size=int(rng.integers(5, 120)), p=p)) for _ in range(n)]
    qs = [" ".join(rng.choice(vocab[:800], size=int(rng.integers(1, 8)))) for _ in range(n_queries)]
    return texts, [f"g{i}" for i in range(n)], qs


def _lists(results: list[list[Any]]) -> list[list[tuple[str, float]]]:
    return [[(r.id, r.score) for r in rs] for rs in results]


def _bm25_identical(root: Path, name: str, texts: list[str], ids: list[str], qs: list[str],
                    shards: int) -> tuple[int, int]:
    """(identical lists, lists) of BM25 top-10, 'shards' shards against one collection."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # documents without tokens, reported by the build
        one = Collection.create(root / f"{name}-one", encoder=None)
        one.add(texts, ids=ids)
        one.commit()
        build_shards(root / f"{name}-sh", texts, ids, shards=shards, executor="inline",
                     encoder=None)
    with ShardedCollection.open(root / f"{name}-sh") as sc:
        a = _lists(one.search_batch(qs, 10, method="bm25"))
        b = _lists(sc.search_batch(qs, 10, method="bm25"))
    one.close()
    same = sum(x == y for x, y in zip(a, b, strict=True))
    print(f"BM25 top-10 {name}: {same} of {len(qs)} lists identical (ids and scores), "
          f"{shards} shards", flush=True)
    return same, len(qs)


def _exact_docs(col: Collection, qvecs: np.ndarray, k: int) -> list[list[str]]:
    table = col.chunk_table()
    chunks = sorted(table.hits)
    vecs = col.vectors_of(chunks)
    docs = [table.hits[c].doc for c in chunks]
    sims = qvecs @ vecs.T
    out = []
    for row in sims:
        best: dict[str, float] = {}
        for j in np.argsort(-row)[: 8 * k]:
            best.setdefault(docs[j], float(row[j]))
            if len(best) == k:
                break
        out.append(list(best))
    return out


def _recall(index: DenseIndex, queries: np.ndarray, truth: np.ndarray, ef: int) -> float:
    found = index.search(queries, 10, ef=ef).ids
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found.tolist(),
                                                                   truth.tolist(),
                                                                   strict=True)]))


def _subspace(n: int, n_queries: int, seed: int, rank: int = 24) -> tuple[np.ndarray,
                                                                          np.ndarray]:
    """Unit vectors of a Gaussian in a random `rank`-dimensional subspace of 384 dimensions:
    no clusters and a low intrinsic dimension, where HNSW recall@10 is well below 1 at small
    ef (0.78 at ef 16, 0.98 at ef 64 on 20,000 vectors), so a worse graph would show. (An
    isotropic Gaussian in all 384 dimensions gave 0.27 at ef 64, a mixture 1.0: neither
    tells graphs apart.)"""
    rng = np.random.default_rng(seed + 1)
    basis = rng.normal(size=(rank, 384)).astype(np.float32)
    x = rng.normal(size=(n + n_queries, rank)).astype(np.float32) @ basis
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:n], x[n:]


def _hnsw_merge(root: Path, name: str, data: np.ndarray, queries: np.ndarray,
                shard_counts: tuple[int, ...], s: dict[str, Any]) -> None:
    """HNSW graphs of shards merged by insertion against one graph rebuilt (see the module's
    notes); the same operations as `merge_shards(dense="insert" / "rebuild")`."""
    n = len(data)
    truth = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    efs = (16, 32, 64, 128)
    t0, c0 = time.perf_counter(), time.process_time()
    rebuilt = DenseIndex(384)
    rebuilt.add(data, ids=list(range(n)))
    t_rebuild, c_rebuild = time.perf_counter() - t0, time.process_time() - c0
    rec_rebuild = {ef: _recall(rebuilt, queries, truth, ef) for ef in efs}
    del rebuilt
    print(f"HNSW of {n:,} x 384 vectors ({name}): rebuilt in {t_rebuild:.2f} s, recall@10 "
          + ", ".join(f"ef {ef} {r:.4f}" for ef, r in rec_rebuild.items()), flush=True)
    suffix = "" if name == "mixture" else f"_{name}"
    s[f"hnsw_rebuild_seconds{suffix}"] = round(t_rebuild, 3)
    s[f"hnsw_rebuild_recall_at10{suffix}"] = round(rec_rebuild[64], 4)
    s[f"hnsw_rebuild_recall_at10_ef16{suffix}"] = round(rec_rebuild[16], 4)
    for shards in shard_counts:
        parts = split_contiguous(n, shards)
        for i, (a, b) in enumerate(parts):  # each shard's graph, as its collection saves it
            g = DenseIndex(384)
            g.add(data[a:b], ids=list(range(b - a)))
            g.save(root / f"hnsw-{name}-{shards}-{i}.frdx")
            del g
        base = max(range(shards), key=lambda i: parts[i][1] - parts[i][0])
        t0, c0 = time.perf_counter(), time.process_time()
        merged = DenseIndex.load(root / f"hnsw-{name}-{shards}-{base}.frdx")
        a0, b0 = parts[base]
        merged.rename({j: a0 + j for j in range(b0 - a0)})
        for i, (a, b) in enumerate(parts):
            if i != base:
                merged.add(data[a:b], ids=list(range(a, b)))
        t_insert, c_insert = time.perf_counter() - t0, time.process_time() - c0
        rec = {ef: _recall(merged, queries, truth, ef) for ef in efs}
        del merged
        print(f"  {shards} shards merged by insertion in {t_insert:.2f} s "
              f"({t_rebuild / t_insert:.2f}x; CPU {c_insert:.1f} s against {c_rebuild:.1f} s, "
              f"{c_rebuild / c_insert:.2f}x), recall@10 "
              + ", ".join(f"ef {ef} {r:.4f}" for ef, r in rec.items()), flush=True)
        tag = suffix if shards == 2 else f"_{shards}_shards{suffix}"
        s[f"hnsw_merge_seconds{tag}"] = round(t_insert, 3)
        s[f"hnsw_merge_recall_at10{tag}"] = round(rec[64], 4)
        s[f"hnsw_merge_recall_at10_ef16{tag}"] = round(rec[16], 4)
        s[f"hnsw_merge_vs_rebuild_ratio{tag}"] = round(t_rebuild / t_insert, 3)
        # the work (CPU seconds of every thread), which neighbours on a shared machine
        # change less than the wall clock
        s[f"hnsw_merge_vs_rebuild_cpu_ratio{tag}"] = round(c_rebuild / c_insert, 3)


def _stats_cache(root: Path, n: int, seed: int, s: dict[str, Any]) -> None:
    """Opening 4 BM25 shards with the merged statistics cached (bm25-stats.json) against
    merging them from every shard (the cache removed before each open); best of 3 each. A
    Zipf vocabulary of 200,000 words, 60 per document: the statistics grow with the
    vocabulary, which a real corpus has large."""
    from fastrag.distributed.manifest import STATS_CACHE

    rng = np.random.default_rng(seed + 2)
    p = 1.0 / np.arange(1, 200_001)
    p /= p.sum()
    texts = [" ".join(f"w{w}" for w in row) for row in rng.choice(200_000, size=(n, 60), p=p)]
    folder = root / "stats-sh"
    build_shards(folder, texts, [f"s{i}" for i in range(n)], shards=4, executor="inline",
                 encoder=None)
    times: dict[bool, float] = {True: float("inf"), False: float("inf")}
    for _ in range(3):
        for cached in (False, True):
            if not cached:
                (folder / STATS_CACHE).unlink(missing_ok=True)
            t0 = time.perf_counter()
            with ShardedCollection.open(folder) as sc:
                terms = len(sc.stats[2])
            times[cached] = min(times[cached], time.perf_counter() - t0)
    s.update(stats_cache_terms=terms, open_seconds_stats_merged=round(times[False], 3),
             open_seconds_stats_cached=round(times[True], 3),
             open_stats_cache_speedup=round(times[False] / times[True], 3))
    print(f"opening 4 shards ({n:,} documents, {terms:,} terms): {times[False]:.3f} s merging "
          f"the statistics (and caching them), {times[True]:.3f} s from the cache", flush=True)


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished child processes."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _ray_latency(folder: Path, qs: list[str], s: dict[str, Any]) -> None:
    """BM25 through one Ray actor per shard, one query at a time (private local Ray)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    try:
        with ShardedCollection.open(folder, mode="ray") as sc:
            sc.search(qs[0], 10, method="bm25")
            t0 = time.perf_counter()
            for q in qs:
                sc.search(q, 10, method="bm25")
            t = time.perf_counter() - t0
    finally:
        ray.shutdown()
    s["ray_bm25_ms_per_query"] = round(t / len(qs) * 1e3, 3)
    print(f"BM25 through 2 Ray shard actors: {t / len(qs) * 1e3:.2f} ms per query", flush=True)


def main() -> None:
    ap = parser(__doc__, data=True)
    ap.add_argument("--docs", type=int, default=None, help="cranfield documents encoded")
    ap.add_argument("--shards", type=int, default=4, help="shards of the BM25 comparisons")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vectors", type=int, default=None,
                    help="vectors of the HNSW merge-or-rebuild comparison")
    ap.add_argument("--ray", action="store_true", help="also time the Ray-actor router")
    args = parse(ap)
    res = Results(__file__, args)
    smoke = args.mode == "smoke"
    cran = args.data / "cranfield"
    load_start = os.getloadavg()[0]
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    s = res.summary
    with tempfile.TemporaryDirectory(prefix="fastrag-bench-dist-") as tmp:
        root = Path(tmp)
        # ------------------------------------------------ exact BM25
        same = total = 0
        texts, ids, qs = _beir(cran)
        a, b = _bm25_identical(root, "cranfield", texts, ids, qs, args.shards)
        same, total = same + a, total + b
        s["bm25_identical_lists_cranfield"] = a
        gen = _generated(300 if smoke else 5000, 20 if smoke else 200, args.seed)
        a, b = _bm25_identical(root, "generated", *gen, args.shards)
        same, total = same + a, total + b
        s["bm25_identical_lists_generated"] = a
        _stats_cache(root, 500 if smoke else 10_000 if args.mode == "quick" else 40_000,
                     args.seed, s)

        # ------------------------------------------------ builds with the encoder
        model = None if smoke else "default"
        n = args.docs or (60 if smoke else 400 if args.mode == "quick" else len(texts))
        etexts, eids = texts[:n], ids[:n]
        eqs = qs
        if model is not None:  # export and load once, outside the timings
            Collection.create(root / "warm", encoder=model).close()
        t0 = time.perf_counter()
        one = Collection.create(root / "single", encoder=model)
        one.add(etexts, ids=eids)
        one.commit()
        t_single = time.perf_counter() - t0
        times, cpu = {}, {}
        for workers in (1, 2):
            c0 = _cpu_seconds()
            t0 = time.perf_counter()
            build_shards(root / f"w{workers}", etexts, eids, shards=2, workers=workers,
                         executor="process", encoder=model, threads=1)
            times[workers] = time.perf_counter() - t0
            cpu[workers] = _cpu_seconds() - c0
            print(f"2-shard build, {workers} worker(s): {times[workers]:.1f} s, "
                  f"{cpu[workers]:.1f} CPU s (this process and its workers)", flush=True)
        print(f"single collection, one process: {t_single:.1f} s ({n} documents)", flush=True)
        s.update(docs_encoded=n, seconds_single=round(t_single, 2),
                 seconds_2_shards_1_worker=round(times[1], 2),
                 seconds_2_shards_2_workers=round(times[2], 2),
                 build_speedup_2_workers=round(times[1] / times[2], 3),
                 build_speedup_vs_single=round(t_single / times[2], 3),
                 build_cpu_seconds_1_worker=round(cpu[1], 2),
                 build_cpu_seconds_2_workers=round(cpu[2], 2),
                 # what 2 workers would give with a whole core each: the work (CPU
                 # seconds) split in two, against the 1-worker work; on a loaded machine
                 # the wall-clock speedup above says more about the neighbours
                 build_speedup_2_workers_cpu_bound=round(2 * cpu[1] / max(cpu[2], 1e-9), 3))
        t_merge = {}
        for how in ("insert", "rebuild"):
            t0 = time.perf_counter()
            merge_shards([root / "w2"], root / f"merged-{how}", dense=how)
            t_merge[how] = time.perf_counter() - t0
        s.update(seconds_merge=round(t_merge["insert"], 2),
                 seconds_merge_dense_rebuild=round(t_merge["rebuild"], 2),
                 merge_vs_rebuild_ratio=round(t_single / t_merge["insert"], 3),
                 merge_insert_vs_rebuild_ratio=round(t_merge["rebuild"] / t_merge["insert"], 3))
        print(f"merge of the 2 shards: {t_merge['insert']:.1f} s (HNSW by insertion), "
              f"{t_merge['rebuild']:.1f} s (HNSW rebuilt); single build {t_single:.1f} s",
              flush=True)

        with ShardedCollection.open(root / "w2") as sc:
            a_ = _lists(one.search_batch(eqs, 10, method="bm25"))
            b_ = _lists(sc.search_batch(eqs, 10, method="bm25"))
            enc_same = sum(x == y for x, y in zip(a_, b_, strict=True))
            print(f"BM25 top-10 of the encoded shards: {enc_same} of {len(eqs)} identical")
            same, total = same + enc_same, total + len(eqs)
            if model is not None:
                qv = one.encoder.encode_queries(eqs)  # type: ignore[union-attr]
                single_d = [[r.id for r in rs] for rs in one.search_batch(eqs, 10,
                                                                          method="dense",
                                                                          vectors=qv)]
                shard_d = [[r.id for r in rs] for rs in sc.search_batch(eqs, 10,
                                                                        method="dense",
                                                                        vectors=qv)]
                exact = _exact_docs(one, qv, 10)

                def overlap(x: list[list[str]], y: list[list[str]]) -> float:
                    return float(np.mean([len(set(a) & set(b)) / max(1, len(b))
                                          for a, b in zip(x, y, strict=True)]))

                s.update(dense_recall_at10_vs_single=round(overlap(shard_d, single_d), 4),
                         dense_recall_at10_exact_sharded=round(overlap(shard_d, exact), 4),
                         dense_recall_at10_exact_single=round(overlap(single_d, exact), 4))
                for how in ("insert", "rebuild"):
                    with Collection.open(root / f"merged-{how}", encoder=one.encoder) as m:
                        got = [[r.id for r in rs]
                               for rs in m.search_batch(eqs, 10, method="dense", vectors=qv)]
                    s[f"dense_recall_at10_exact_merged_{how}"] = round(overlap(got, exact), 4)
                print(f"dense top-10 vs exact of the merged collections: HNSW by insertion "
                      f"{s['dense_recall_at10_exact_merged_insert']}, rebuilt "
                      f"{s['dense_recall_at10_exact_merged_rebuild']}", flush=True)
                print(f"dense top-10: sharded vs single {s['dense_recall_at10_vs_single']}, "
                      f"vs exact: sharded {s['dense_recall_at10_exact_sharded']}, single "
                      f"{s['dense_recall_at10_exact_single']}", flush=True)
            else:
                res.skip("dense recall (smoke: no encoder)")
            # fan-out latency, one query at a time (BM25: no encoder in the timing)
            reps = 1 if smoke else 3
            t_one = t_sh = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter()
                for q in eqs:
                    one.search(q, 10, method="bm25")
                t_one = min(t_one, time.perf_counter() - t0)
                t0 = time.perf_counter()
                for q in eqs:
                    sc.search(q, 10, method="bm25")
                t_sh = min(t_sh, time.perf_counter() - t0)
            s.update(bm25_qps_single=round(len(eqs) / t_one, 1),
                     bm25_qps_sharded=round(len(eqs) / t_sh, 1),
                     bm25_qps_ratio_vs_single=round(t_one / t_sh, 3))
            print(f"BM25 one query at a time: single {len(eqs) / t_one:.0f} q/s, 2-shard "
                  f"router {len(eqs) / t_sh:.0f} q/s", flush=True)
            if model is not None:  # hybrid (BM25 + dense, RRF), query vectors given
                t_one = t_sh = float("inf")
                for _ in range(reps):
                    t0 = time.perf_counter()
                    for i, q in enumerate(eqs):
                        one.search_batch([q], 10, vectors=qv[i : i + 1])
                    t_one = min(t_one, time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    for i, q in enumerate(eqs):
                        sc.search_batch([q], 10, vectors=qv[i : i + 1])
                    t_sh = min(t_sh, time.perf_counter() - t0)
                s.update(hybrid_qps_single=round(len(eqs) / t_one, 1),
                         hybrid_qps_sharded=round(len(eqs) / t_sh, 1),
                         hybrid_qps_ratio_vs_single=round(t_one / t_sh, 3))
                print(f"hybrid one query at a time (vectors given): single "
                      f"{len(eqs) / t_one:.0f} q/s (native executor), 2-shard router "
                      f"{len(eqs) / t_sh:.0f} q/s (the pipeline in Python over fanned-out "
                      "legs)", flush=True)
        if args.ray and not smoke:
            _ray_latency(root / "w2", eqs, s)
        one.close()
        # ------------------------------------------------ HNSW: merged or rebuilt
        n_vec = args.vectors or (1500 if smoke else 20_000 if args.mode == "quick" else 100_000)
        n_q = 50 if smoke else 300
        s["hnsw_merge_vectors"] = n_vec
        _hnsw_merge(root, "mixture", *synthetic(n_vec, 384, n_q, args.seed), (2, 4), s)
        _hnsw_merge(root, "subspace", *_subspace(n_vec, n_q, args.seed), (2,), s)
    s["bm25_topk_identical"] = int(same == total)
    s["bm25_lists_compared"] = total
    s.update(cores=os.cpu_count(), load_avg_start=round(load_start, 2),
             load_avg_end=round(os.getloadavg()[0], 2))
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    res.finish()


if __name__ == "__main__":
    main()
