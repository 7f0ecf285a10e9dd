"""Learned sparse retrieval quality on cranfield: SPLADE-tiny and BM42 beside BM25.

    python benchmarks/quality_sparse.py [--data ../shared/data] [--quick | --smoke] [--json PATH]

--quick: the first 300 documents and 50 judged queries; --smoke: a tiny generated collection.

Every run is scored by ranx through `fastrag.eval.metrics.evaluate` (nDCG@10, Recall@100,
MRR@10; depth 100); document = title + " " + text, the judged test queries.

Systems:
* BM25: fastrag's BM25 (Lucene, k1 1.5, b 0.75), English analyzer.
* SPLADE-tiny (the `cognition` package's weights): documents encoded once with every term the
  model weighs; queries encoded by the model ("model"), or inference-free: the query's
  WordPiece tokens weighted by their idf over the collection ("idf") or by 1 ("ones"). Also
  with 8-bit weights (uint8, the precision only: the core stores float32) and with documents
  pruned to their 64 heaviest terms (static pruning).
* BM42: all-MiniLM-L6-v2's last-layer [CLS] attention (head average) as the word weight,
  pieces summed into words, stopwords / punctuation dropped, stemmed, max over repeats; query
  words weigh their idf. Also with fastembed's rescoring log(1 + w) ** 0.5.

The last line is a SUMMARY.
"""

from __future__ import annotations

import time
import warnings

from _common import Results, parse, parser
from fastrag.encoders import BM42Index, SpladeEncoder, SpladeIndex, TextEncoder, TruncationWarning
from fastrag.eval import evaluate, load_beir
from fastrag.index import BM25, SearchResults

DEPTH = 100


def to_run(qids: list[str], results: SearchResults) -> dict[str, dict[str, float]]:
    return {q: {str(h.id): h.score for h in results[i]} for i, q in enumerate(qids)}


def splade_rows(splade, texts, ids, queries, qids, runs, seconds) -> None:
    """The SPLADE-tiny runs (model, idf and ones queries; uint8; top 64 terms)."""
    long_docs = sum(bool(splade.model.tokenizer.encode(t).overflowing) for t in texts)
    t0 = time.perf_counter()
    index = SpladeIndex(splade)
    vectors = index.encode_documents(texts)
    encode_s = time.perf_counter() - t0
    index.add(vectors, ids=ids)
    for mode in ("model", "idf", "ones"):
        t0 = time.perf_counter()
        name = f"SPLADE-tiny, {mode} queries"
        runs[name] = to_run(qids, index.search(queries, k=DEPTH, query_mode=mode))
        seconds[name] = encode_s + time.perf_counter() - t0
    for label, options in (("uint8", {"quantize": "uint8"}), ("top_k=64", {"top_k": 64})):
        t0 = time.perf_counter()
        variant = SpladeIndex(splade, **options)
        variant.add(vectors, ids=ids)
        name = f"SPLADE-tiny {label}, model queries"
        runs[name] = to_run(qids, variant.search(queries, k=DEPTH))
        seconds[name] = encode_s + time.perf_counter() - t0
    stats = index.stats()
    print(f"SPLADE-tiny: {stats['avgdl']:.0f} terms per document ({long_docs} documents cut at "
          f"{splade.model.max_length} tokens), documents encoded in {encode_s:.0f} s")


def main() -> None:
    args = parse(parser(__doc__, data=True))
    res = Results(__file__, args, peers=("ranx",))
    folder = args.data / "cranfield"
    if not folder.is_dir():
        res.skip(f"cranfield: not found under {args.data}")
        res.finish()
        return
    data = load_beir(folder)
    ids, texts = data.documents()
    qids, queries = data.judged_queries()
    if args.quick:
        ids, texts, qids, queries = ids[:300], texts[:300], qids[:50], queries[:50]
    qrels = {q: data.qrels[q] for q in qids}
    runs: dict[str, dict[str, dict[str, float]]] = {}
    seconds: dict[str, float] = {}
    warnings.simplefilter("ignore", TruncationWarning)  # counted below instead

    t0 = time.perf_counter()
    bm25 = BM25(analyzer="english")
    bm25.add(texts, ids=ids)
    runs["BM25 (english)"] = to_run(qids, bm25.search(queries, k=DEPTH))
    seconds["BM25 (english)"] = time.perf_counter() - t0

    try:
        splade = SpladeEncoder("splade-tiny")
    except (ImportError, OSError, RuntimeError) as e:  # the cognition package is optional
        res.skip(f"SPLADE-tiny rows: {type(e).__name__}: {e}")
        splade = None
    if splade is not None:
        splade_rows(splade, texts, ids, queries, qids, runs, seconds)
    minilm = TextEncoder("default", attentions=True)
    for label, alpha in (("", None), (", log(1+w)^0.5", 0.5)):
        t0 = time.perf_counter()
        bm42 = BM42Index(minilm, alpha=alpha)
        bm42.add(texts, ids=ids)
        name = f"BM42 (MiniLM attentions{label})"
        runs[name] = to_run(qids, bm42.search(queries, k=DEPTH))
        seconds[name] = time.perf_counter() - t0

    print(f"cranfield: {len(ids)} documents, {len(qids)} judged queries; "
          f"BM42 vocabulary {len(bm42.vocabulary):,} words")
    print(f"{'system':<42} {'nDCG@10':>8} {'R@100':>7} {'MRR@10':>7} {'seconds':>8}")
    summary = res.summary
    keys = {
        "BM25 (english)": "bm25",
        "SPLADE-tiny, model queries": "splade",
        "SPLADE-tiny, idf queries": "splade_idf",
        "SPLADE-tiny, ones queries": "splade_ones",
        "SPLADE-tiny uint8, model queries": "splade_uint8",
        "SPLADE-tiny top_k=64, model queries": "splade_top64",
        "BM42 (MiniLM attentions)": "bm42",
        "BM42 (MiniLM attentions, log(1+w)^0.5)": "bm42_alpha05",
    }
    for name, run in runs.items():
        m = evaluate(run, qrels)
        print(f"{name:<42} {m['ndcg@10']:8.4f} {m['recall@100']:7.4f} {m['mrr@10']:7.4f} "
              f"{seconds[name]:8.1f}")
        summary[f"ndcg10_{keys[name]}"] = round(m["ndcg@10"], 4)
        summary[f"recall100_{keys[name]}"] = round(m["recall@100"], 4)
        res.details[name] = m
    print("(seconds: index + search of all queries; SPLADE rows include the one shared "
          "document encoding)")
    res.finish()


if __name__ == "__main__":
    main()
