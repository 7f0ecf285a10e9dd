"""BM25 quality on the shared BEIR collections: fastrag's analyzers beside bm25s's own tokenizer.

    python benchmarks/quality_bm25.py [--data ../shared/data] [--quick | --smoke] [--json PATH]

--quick: the first 200 judged queries per dataset; --smoke: tiny generated collections, no
bm25s. Every run is scored by ranx (nDCG@10, Recall@100, MRR@10); document = title + " " + text;
BM25 lucene, k1 1.5, b 0.75 for both engines. The last line is a SUMMARY.
"""

from __future__ import annotations

from typing import Any

import Stemmer

import fastrag
from _common import Results, beir_dataset, optional, parse, parser
from fastrag.eval import evaluate

bm25s: Any = None  # the peer, imported in main() unless --smoke


def fastrag_run(texts, ids, queries, qids, analyzer, depth=100):
    index = fastrag.BM25(analyzer=analyzer)
    index.add(texts, ids=ids)
    res = index.search(queries, k=depth)
    return {q: {str(h.id): h.score for h in res[i]} for i, q in enumerate(qids)}


def bm25s_run(texts, ids, queries, qids, depth=100):
    """bm25s with its default tokenizer (English stopwords + PyStemmer, as its README shows)."""
    stemmer = Stemmer.Stemmer("english")
    corpus = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)
    retriever = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    retriever.index(corpus, show_progress=False)
    q = bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False)
    docs, scores = retriever.retrieve(q, k=min(depth, len(texts)), show_progress=False)
    run = {}
    for i, qid in enumerate(qids):
        run[qid] = {ids[d]: float(s) for d, s in zip(docs[i], scores[i], strict=True) if s > 0}
    return run


def main() -> None:
    global bm25s
    args = parse(parser(__doc__, data=True))
    res = Results(__file__, args, peers=("bm25s", "PyStemmer", "sudachipy", "ranx"))
    if args.smoke:
        res.skip("bm25s (smoke mode: no peers)")
    else:
        bm25s = optional("bm25s", res, "the bm25s rows")
    summary = res.summary
    plan = {"cranfield": ["english", "auto"], "jsquad-valid": ["japanese", "bigram", "auto"]}
    print(f"{'dataset':<14} {'system':<28} {'nDCG@10':>8} {'R@100':>7} {'MRR@10':>7}")
    for name, analyzers in plan.items():
        data = beir_dataset(args.data, name, res)
        if data is None:
            continue
        ids, texts = data.documents()
        qids, queries = data.judged_queries()
        if args.quick:
            qids, queries = qids[:200], queries[:200]
        qrels = {q: data.qrels[q] for q in qids}
        runs = {f"fastrag {a}": fastrag_run(texts, ids, queries, qids, a) for a in analyzers}
        if bm25s is not None:
            runs["bm25s default tokenizer"] = bm25s_run(texts, ids, queries, qids)
        for system, run in runs.items():
            m = evaluate(run, qrels)
            print(
                f"{name:<14} {system:<28} {m['ndcg@10']:8.3f} {m['recall@100']:7.3f}"
                f" {m['mrr@10']:7.3f}"
            )
            engine = system.split()[-1] if system.startswith("fastrag") else "bm25s"
            key = f"ndcg10_{name.split('-')[0]}_{engine}"
            summary[key] = round(m["ndcg@10"], 4)
            res.details.setdefault(name, {})[system] = m
    res.finish()


if __name__ == "__main__":
    main()
