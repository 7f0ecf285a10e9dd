"""Dense search: fastrag's HNSW against hnswlib, faiss (IndexHNSWFlat) and usearch, same run.

    python benchmarks/bench_dense.py [--quick | --smoke] [--json PATH] [--data DIR]
                                     [--n 200000] [--skip real synthetic]

Same vectors, same M and ef_construction for every engine; builds on 2 threads (wall time);
queries on one thread in one batch call, timed in CPU time of the process (best of 3), the
engines interleaved at each ef (all built first).
Recall@10 is measured against exact search (numpy matmul). For each engine and ef the script
prints recall@10 and queries/s, then the QPS at the smallest ef that reaches recall 0.95.
Quantised keys (`*_quantized_*`) take the fastest of fastrag's quantised configurations (int8
codes with float32 rescoring, int8 codes only, int4 codes walked with int8 rescoring) at
recall 0.95; `memory_ratio_vs_hnswlib_quantized_*` is that configuration's memory over
hnswlib's (lower is better). usearch runs as f32 and as i8 (its own quantisation).
Real vectors: all-MiniLM-L6-v2 embeddings of the cranfield and jsquad-valid corpora
(benchmarks/embeddings.py, computed with sentence-transformers), their queries as queries.
Synthetic: a seeded Gaussian mixture (1,000 centres, unit noise) with a power-law spectrum
(variance of component i ~ 1/i) in a random rotation, which gives it a local intrinsic
dimension close to the MiniLM vectors' (about 25 against their 21, measured on 2,500
vectors); until 2026-12-06 the mixture was isotropic (well-separated clusters, recall 0.99 at
ef 10 for every engine), too easy to rank engines at recall 0.95.
--quick: 20,000 synthetic vectors, 300 queries, the real vectors' first 1,000 queries;
--smoke: 2,000 synthetic vectors, no peers, no real vectors. Peers that are not installed
are reported as skipped. The last line is a SUMMARY.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from _common import Results, measure, optional, parse, parser
from fastrag import _core

EFS = (10, 16, 24, 32, 48, 64, 96, 128, 192)
M, EF_CONSTRUCTION, K = 16, 200, 10


@dataclass
class Engine:
    name: str
    build_s: float
    memory: int
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # (ef, recall, qps)
    per_vector: float = 0.0  # bytes
    # ef -> a call that searches every query at that beam and returns the ids (n, K)
    search: Callable[[int], Callable[[], np.ndarray]] | None = field(default=None, repr=False)

    def qps_at(self, target: float) -> tuple[float, float, int] | None:
        """(qps, recall, ef) at the smallest ef whose recall reaches target."""
        for ef, rec, qps in self.curve:
            if rec >= target:
                return qps, rec, ef
        return None


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def sweep(engines: list[Engine], truth: np.ndarray, repeat: int) -> None:
    """Each engine's curve over EFS, timed interleaved: at each ef every engine searches once
    per round (the order rotating), `repeat` rounds, best CPU time kept. On this shared machine
    one engine's speed moved by up to 40% between minutes even in CPU time: timing the engines
    side by side at each ef keeps such swings out of their ratios (until 2026-12-07 each
    engine's sweep ran after the other's)."""
    n = len(truth)
    for ef in EFS:
        calls = [e.search(ef) for e in engines]  # type: ignore[misc]
        best = [float("inf")] * len(engines)
        found = [call() for call in calls]  # the warm-up call; its ids give the recall
        for r in range(repeat):
            for j in range(len(engines)):
                i = (j + r) % len(engines)
                t0 = time.process_time()
                calls[i]()
                best[i] = min(best[i], time.process_time() - t0)
        for e, ids, dt in zip(engines, found, best, strict=True):
            e.curve.append((ef, recall(ids, truth), n / max(dt, 1e-9)))


def timed(repeat: int, fn, *args, **kwargs) -> tuple[float, object]:
    """Best CPU time of the process over `repeat` calls of fn(*args, **kwargs) after one
    warm-up call, and the warm-up's result. Every engine searches on one thread, so CPU time is
    its time on one core; on a shared machine wall time also counts the time other processes
    hold that core, which swung single runs of one engine by 2x (until 2026-12-06 this was
    the best wall time)."""
    out = fn(*args, **kwargs)
    return measure(
        lambda: fn(*args, **kwargs), warmup=0, repeats=repeat, clock=time.process_time
    ).best, out


def exact_truth(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    out = np.empty((len(queries), K), dtype=np.int64)
    for s in range(0, len(queries), 1024):
        sims = queries[s : s + 1024] @ data.T
        top = np.argpartition(-sims, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        out[s : s + 1024] = np.take_along_axis(top, order, axis=1)
    return out


def run_fastrag(name, data, queries, **kw) -> Engine:
    search_kw = kw.pop("search", {})
    ix = _core.HnswIndex(data.shape[1], metric="ip", M=M, ef_construction=EF_CONSTRUCTION, **kw)
    t0 = time.perf_counter()
    ix.add(data, threads=2)
    eng = Engine(name, time.perf_counter() - t0, ix.stats()["memory_bytes"])
    eng.per_vector = eng.memory / len(data)

    def search(ef: int) -> Callable[[], np.ndarray]:
        opts = {k: (v(ef) if callable(v) else v) for k, v in search_kw.items()}
        return lambda: ix.search(queries, k=K, ef=ef, threads=1, **opts)[0]

    eng.search = search
    return eng


def run_hnswlib(data, queries, res: Results) -> Engine | None:
    hnswlib = optional("hnswlib", res, "the hnswlib peer")
    if hnswlib is None:
        return None
    ix = hnswlib.Index(space="ip", dim=data.shape[1])
    t0 = time.perf_counter()
    ix.init_index(max_elements=len(data), M=M, ef_construction=EF_CONSTRUCTION, random_seed=100)
    ix.add_items(data, num_threads=2)
    build = time.perf_counter() - t0
    # Memory: the level-0 block (links + vector + label per element) plus upper links.
    size = ix.element_count * (4 + 4 * 2 * M + 4 * data.shape[1] + 8)
    eng = Engine("hnswlib", build, size)

    def search(ef: int) -> Callable[[], np.ndarray]:
        def call() -> np.ndarray:
            ix.set_ef(max(ef, K))  # the beam is the index's state: set before every call
            return ix.knn_query(queries, k=K, num_threads=1)[0].astype(np.int64)
        return call

    eng.search = search
    return eng


def run_faiss(data, queries, res: Results) -> Engine | None:
    faiss = optional("faiss", res, "the faiss peer")
    if faiss is None:
        return None
    faiss.omp_set_num_threads(2)
    ix = faiss.IndexHNSWFlat(data.shape[1], M, faiss.METRIC_INNER_PRODUCT)
    ix.hnsw.efConstruction = EF_CONSTRUCTION
    t0 = time.perf_counter()
    ix.add(data)
    build = time.perf_counter() - t0
    faiss.omp_set_num_threads(1)
    size = len(data) * (4 * data.shape[1] + 4 * 2 * M)
    eng = Engine("faiss HNSWFlat", build, size)

    def search(ef: int) -> Callable[[], np.ndarray]:
        def call() -> np.ndarray:
            ix.hnsw.efSearch = max(ef, K)
            return ix.search(queries, K)[1]
        return call

    eng.search = search
    return eng


def run_usearch(
    data, queries, res: Results, dtype: str = "f32"
) -> Engine | None:
    """usearch (the same M / ef_construction; ef = expansion_search), when installed; dtype
    "f32" or "i8" (its scalar quantisation, no rescoring pass)."""
    usearch_index = optional("usearch.index", res, "the usearch peer")
    if usearch_index is None:
        return None
    ix = usearch_index.Index(
        ndim=data.shape[1], metric="ip", dtype=dtype, connectivity=M,
        expansion_add=EF_CONSTRUCTION, expansion_search=64,
    )
    t0 = time.perf_counter()
    ix.add(np.arange(len(data)), data, threads=2)
    build = time.perf_counter() - t0
    eng = Engine(f"usearch {dtype}", build, int(ix.memory_usage))

    def search(ef: int) -> Callable[[], np.ndarray]:
        def call() -> np.ndarray:
            ix.expansion_search = max(ef, K)
            return ix.search(queries, K, threads=1).keys.astype(np.int64)
        return call

    eng.search = search
    return eng


def report(title: str, engines: list[Engine], n: int) -> None:
    print(f"\n### {title}\n")
    print(
        "| engine | build s (2 threads) | memory MB | bytes / vector | "
        + " | ".join(f"ef {e}" for e in EFS)
        + " |"
    )
    print("|---|---:|---:|---:|" + "---:|" * len(EFS))
    for e in engines:
        cells = " | ".join(f"{r:.3f} @ {q:,.0f}" for _, r, q in e.curve)
        per = e.per_vector or e.memory / max(1, n)
        print(f"| {e.name} | {e.build_s:.2f} | {e.memory / 2**20:.1f} | {per:,.0f} | {cells} |")
    print("\n(cells: recall@10 @ queries/s, one thread)")
    for e in engines:
        at = e.qps_at(0.95)
        msg = f"{at[0]:,.0f} q/s at recall {at[1]:.3f} (ef {at[2]})" if at else "never reached"
        print(f"- {e.name}: recall >= 0.95: {msg}")


def ratio(engines: dict[str, Engine], name: str, peer: str = "hnswlib") -> float | None:
    a, b = engines.get(name), engines.get(peer)
    if not a or not b or not a.qps_at(0.95) or not b.qps_at(0.95):
        return None
    return a.qps_at(0.95)[0] / b.qps_at(0.95)[0]


def bench(title, data, queries, repeat, res: Results, tag, peers: bool = True) -> None:
    truth = exact_truth(data, queries)
    engines = [
        run_fastrag("fastrag float32", data, queries),
        run_fastrag(
            "fastrag int8 + float32 rescoring",
            data,
            queries,
            storage="int8",
            keep_float=True,
            search={"rescore": lambda ef: min(max(ef, K), 2 * K)},  # DenseIndex's default
        ),
        run_fastrag("fastrag int8 only", data, queries, storage="int8"),
        run_fastrag("fastrag float16", data, queries, storage="float16"),
        # int4 codes next to the links for the walk; the whole beam rescored with the int8
        # rows (rescore=0: DenseIndex's default for int4 storage without float32 rows).
        run_fastrag("fastrag int4 + int8 rescoring", data, queries, storage="int4"),
    ]
    if peers:
        engines += [e for e in (run_hnswlib(data, queries, res),) if e]
        engines += [e for e in (run_faiss(data, queries, res),) if e]
        engines += [e for e in (run_usearch(data, queries, res),) if e]
        engines += [e for e in (run_usearch(data, queries, res, "i8"),) if e]
    sweep(engines, truth, repeat)
    report(title, engines, len(data))
    res.details.setdefault("ann", {})[tag] = {
        "title": title,
        "n": len(data),
        "dim": data.shape[1],
        "queries": len(queries),
        "engines": {
            e.name: {
                "build_s": round(e.build_s, 3),
                "memory_bytes": e.memory,
                "bytes_per_vector": round(e.memory / len(data), 1),
                "curve": [{"ef": ef, "recall": round(r, 4), "qps": round(q, 1)}
                          for ef, r, q in e.curve],
            }
            for e in engines
        },
    }
    summary = res.summary
    by = {e.name: e for e in engines}
    summary[f"vectors_{tag}"] = len(data)
    summary[f"build_s_fastrag_{tag}"] = round(by["fastrag float32"].build_s, 3)
    summary[f"recall10_fastrag_max_ef_{tag}"] = round(by["fastrag float32"].curve[-1][1], 4)
    summary[f"qps_fastrag_at_r95_{tag}"] = (
        round(by["fastrag float32"].qps_at(0.95)[0], 1) if by["fastrag float32"].qps_at(0.95)
        else None
    )
    for key, name in [
        ("qps_ratio_vs_hnswlib_at_r95", "fastrag float32"),
        ("qps_ratio_vs_hnswlib_at_r95_int8", "fastrag int8 + float32 rescoring"),
        ("qps_ratio_vs_hnswlib_at_r95_int8_only", "fastrag int8 only"),
        ("qps_ratio_vs_hnswlib_at_r95_int4", "fastrag int4 + int8 rescoring"),
    ]:
        r = ratio(by, name)
        if r is not None:
            summary[f"{key}_{tag}"] = round(r, 3)
    for peer, key in (("faiss HNSWFlat", "faiss"), ("usearch f32", "usearch")):
        r = ratio(by, "fastrag float32", peer)
        if r is not None:
            summary[f"qps_ratio_vs_{key}_at_r95_{tag}"] = round(r, 3)
    r = ratio(by, "fastrag int8 + float32 rescoring", "usearch i8")
    if r is not None:
        summary[f"qps_ratio_vs_usearch_i8_at_r95_quantized_{tag}"] = round(r, 3)
    # The quantised configuration: the fastest quantised one at recall 0.95 (int8 codes walked
    # with float32 rows kept for rescoring or not, int4 codes walked with int8 rescoring), its
    # memory against hnswlib's (fastrag / hnswlib: lower is better, as the goal <= 0.5 reads).
    quantized = [
        (e.qps_at(0.95)[0], e)
        for e in (
            by["fastrag int8 + float32 rescoring"],
            by["fastrag int8 only"],
            by["fastrag int4 + int8 rescoring"],
        )
        if e.qps_at(0.95)
    ]
    if quantized and "hnswlib" in by and by["hnswlib"].qps_at(0.95):
        best = max(quantized, key=lambda t: t[0])[1]
        summary[f"qps_ratio_vs_hnswlib_at_r95_quantized_{tag}"] = round(
            best.qps_at(0.95)[0] / by["hnswlib"].qps_at(0.95)[0], 3
        )
        summary[f"memory_ratio_vs_hnswlib_quantized_{tag}"] = round(
            best.memory / by["hnswlib"].memory, 3
        )
        summary[f"bytes_per_vector_quantized_{tag}"] = round(best.memory / len(data), 1)
        summary[f"bytes_per_vector_hnswlib_{tag}"] = round(by["hnswlib"].memory / len(data), 1)
    if "hnswlib" in by:
        summary[f"build_ratio_vs_hnswlib_{tag}"] = round(
            by["hnswlib"].build_s / by["fastrag float32"].build_s, 3
        )


def funnel(data, queries, repeat, efs_dims=(64, 128, 256, 384)) -> None:
    """Matryoshka funnel on the real vectors: walk with the first d dims, rescore with 384."""
    truth = exact_truth(data, queries)
    ix = _core.HnswIndex(data.shape[1], metric="ip", M=M, ef_construction=EF_CONSTRUCTION)
    ix.add(data, threads=2)
    print("\n### Matryoshka funnel (real vectors; ef 64; rescoring the 64 best with all dims)\n")
    print("| dims walked | recall@10 | queries/s | exact prefix scan + rescore: recall@10 | q/s |")
    print("|---:|---:|---:|---:|---:|")
    for d in efs_dims:
        dims = 0 if d == data.shape[1] else d
        dt, (ids, _) = timed(
            repeat, ix.search, queries, k=K, ef=64, threads=1, dims=dims, rescore=64
        )
        dt2, (ids2, _) = timed(
            1, ix.search, queries, k=K, exact=True, threads=1, dims=dims, rescore=100
        )
        print(
            f"| {d} | {recall(ids, truth):.3f} | {len(queries) / dt:,.0f} | "
            f"{recall(ids2, truth):.3f} | {len(queries) / dt2:,.0f} |"
        )


def synthetic(n: int, dim: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors from a Gaussian mixture (1,000 centres, unit noise) whose component i has
    variance ~ 1/i, in a random rotation: a decaying spectrum like sentence embeddings', not
    aligned with the axes (which per-dimension quantisers would find too easy)."""
    rng = np.random.default_rng(seed)
    scale = (np.arange(1, dim + 1, dtype=np.float64) ** -0.5).astype(np.float32)
    rotation = np.linalg.qr(rng.normal(size=(dim, dim)))[0].astype(np.float32)
    centres = rng.normal(size=(1000, dim)).astype(np.float32)

    def draw(m: int) -> np.ndarray:
        x = centres[rng.integers(0, 1000, m)] + rng.normal(size=(m, dim)).astype(np.float32)
        x = (x * scale) @ rotation.T
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    data = draw(n)
    return data, draw(n_queries)


def main() -> None:
    global EFS
    ap = parser(__doc__, data=True)
    ap.add_argument("--n", type=int, default=200_000, help="synthetic vectors")
    ap.add_argument("--queries", type=int, default=1000, help="synthetic queries")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", nargs="*", default=[], choices=["real", "synthetic"])
    args = parse(ap)
    res = Results(
        __file__, args, peers=("hnswlib", "faiss-cpu", "usearch", "sentence-transformers")
    )
    n = {"smoke": 2_000, "quick": 20_000}.get(args.mode, args.n)
    n_queries = {"smoke": 50, "quick": 300}.get(args.mode, args.queries)
    repeat = 1 if args.smoke else 3
    if args.smoke:
        EFS = (10, 64)
    peers = not args.smoke
    if args.smoke:
        res.skip("real vectors (smoke mode: they come from the sentence-transformers peer)")
    elif "real" not in args.skip:
        from embeddings import embeddings

        names = [c for c in ("cranfield", "jsquad-valid") if (args.data / c).is_dir()]
        for c in ("cranfield", "jsquad-valid"):
            if c not in names:
                res.skip(f"real vectors of {c}: {args.data / c} not found")
        if names and optional("sentence_transformers", res, "real vectors") is not None:
            parts = [embeddings(c, args.data) for c in names]
            data = np.concatenate([p["doc_vectors"] for p in parts])
            queries = np.concatenate([p["query_vectors"] for p in parts])
            if args.quick:
                queries = queries[:1000]
            print(f"real: {len(data):,} MiniLM vectors, {len(queries):,} queries")
            bench(f"real: MiniLM, {' + '.join(names)}", data, queries, repeat, res, "real", peers)
            funnel(data, queries, repeat)
    if "synthetic" not in args.skip:
        data, queries = synthetic(n, 384, n_queries, args.seed)
        print(f"\nsynthetic: {n:,} x 384 mixture, power-law spectrum, {len(queries):,} queries")
        bench(f"synthetic {n:,} x 384", data, queries, repeat, res, "synthetic", peers)
    res.finish()


if __name__ == "__main__":
    main()
