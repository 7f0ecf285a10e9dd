"""Late chunking quality with all-MiniLM-L6-v2: naive chunking, late chunking, no chunking.

    python benchmarks/quality_late.py [--data ../shared/data] [--quick | --smoke] [--json PATH]
                                      [--skip jsquad]

--quick: cranfield's first 200 documents and 50 queries, 5 jsquad articles; --smoke: tiny
generated collections.

Every run is scored by ranx through `fastrag.eval.metrics.evaluate`; chunk vectors are searched
exactly in a `DenseIndex` and a document (or paragraph) scores its best chunk
(`fastrag.eval.late.best_chunk_run`, as ``fastrag eval --method late`` does).

cranfield (English; 1,400 documents = title + " " + text, 225 judged queries; depth 100):
* no chunking: one vector per document (`encode_documents`, cut at the model's 256 tokens);
* naive: each sentence encoded on its own; late: sentences pooled from one pass over the
  document (long late chunking: macro-windows of 256 tokens overlapping by half, each token
  from the window where it is most central); late, truncated: the seed's behaviour (one
  window, sentences past it dropped); the same two with sentences merged up to 64 tokens;
  late, whole document: the mean of all of the document's stitched token vectors.

jsquad-valid (Japanese, JGLUE JSQuAD v1.3 validation, CC BY-SA 4.0): documents are the
articles (paragraph ids ``<title>#<k>``: paragraphs of one title, in k order, joined by blank
lines; 59 articles, most far past 256 tokens); 4,442 questions, each with one relevant
paragraph. Paragraph level: a chunk counts for the paragraph it lies inside (sentence and
paragraph chunks never cross one), a paragraph scores its best chunk; naive paragraph chunks
are the usual one-vector-per-paragraph index. Article level (depth 10): an article scores its
best chunk; no chunking = one vector per article (its first 256 tokens). MiniLM is an English
model (a third of its tokens on this text are [UNK]): a sanity check of the mechanics only.

The last line is a SUMMARY.
"""

from __future__ import annotations

import bisect
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from _common import Results, parse, parser
from fastrag.encoders import TextEncoder, TruncationWarning
from fastrag.encoders.late import LateChunker
from fastrag.eval import evaluate, load_beir
from fastrag.eval.late import best_chunk_run
from fastrag.index import DenseIndex
from fastrag.text.chunking import Chunk, merge_short, paragraphs, sentences, untruncated

DEPTH = 100
Run = dict[str, dict[str, float]]
ChunkVectors = list[list[tuple[Chunk, np.ndarray]]]


def whole(text: str) -> list[Chunk]:
    start = len(text) - len(text.lstrip())
    end = len(text.rstrip())
    return [Chunk(text[start:end], start, end)]


def late_pass(
    late: LateChunker, texts: list[str], chunkers: dict[str, Callable[[str], list[Chunk]]],
    group: int = 32,
) -> tuple[dict[str, ChunkVectors], float]:
    """Several chunkings pooled from one late-chunking pass over `texts` (and its seconds)."""
    out: dict[str, ChunkVectors] = {name: [] for name in chunkers}
    t0 = time.perf_counter()
    for start in range(0, len(texts), group):
        batch = texts[start : start + group]
        for text, tokens in zip(batch, late.token_embeddings(batch), strict=True):
            for name, chunker in chunkers.items():
                out[name].append(late.pool(chunker(text), tokens))
    return out, time.perf_counter() - t0


def chunk_run(
    per_doc: ChunkVectors, labels: Callable[[int, Chunk], str | None],
    qv: np.ndarray, qids: list[str], depth: int, dim: int,
) -> Run:
    """Best-chunk run; `labels(doc_index, chunk)` names the unit a chunk counts for (None: none)."""
    vectors, units = [], []
    for i, doc in enumerate(per_doc):
        for chunk, v in doc:
            unit = labels(i, chunk)
            if unit is not None:
                vectors.append(v)
                units.append(unit)
    index = DenseIndex(dim, metric="ip")
    index.add(np.stack(vectors), ids=list(range(len(vectors))))
    return best_chunk_run(index, units, qv, qids, depth)


def doc_run(
    vectors: np.ndarray, ids: list[str], qv: np.ndarray, qids: list[str], depth: int
) -> Run:
    index = DenseIndex(vectors.shape[1], metric="ip")
    index.add(vectors, ids=list(range(len(ids))))
    results = index.search(qv, k=min(depth, len(ids)), exact=True)
    return {q: {ids[int(h.id)]: float(h.score) for h in results[i]} for i, q in enumerate(qids)}


def report(
    title: str, runs: dict[str, Run], qrels: dict[str, dict[str, int]], seconds: dict[str, float],
    metrics: tuple[str, ...],
) -> dict[str, dict[str, float]]:
    print(f"\n{title}")
    print(f"{'system':<46}" + "".join(f"{m:>11}" for m in metrics) + f"{'seconds':>9}")
    scores = {}
    for name, run in runs.items():
        m = evaluate(run, qrels, metrics)
        scores[name] = m
        print(f"{name:<46}" + "".join(f"{m[k]:11.4f}" for k in metrics)
              + f"{seconds.get(name, float('nan')):9.1f}")
    return scores


def count(per_doc: ChunkVectors) -> int:
    return sum(len(d) for d in per_doc)


# ---------------------------------------------------------------------------- cranfield


def cranfield(enc: TextEncoder, folder: Path, quick: bool, summary: dict[str, float]) -> None:
    data = load_beir(folder)
    ids, texts = data.documents()
    keep = [i for i, t in enumerate(texts) if t.strip()]
    ids, texts = [ids[i] for i in keep], [texts[i] for i in keep]
    qids, queries = data.judged_queries()
    if quick:
        ids, texts, qids, queries = ids[:200], texts[:200], qids[:50], queries[:50]
    qrels = {q: data.qrels[q] for q in qids}
    qv = enc.encode_queries(queries)
    tok = enc.model.tokenizer
    n_long = sum(len(untruncated(tok).encode(t).ids) > enc.max_length for t in texts)

    def merged(text: str) -> list[Chunk]:
        return merge_short(sentences(text), text, budget=64, tokenizer=tok)

    runs: dict[str, Run] = {}
    seconds: dict[str, float] = {}
    chunks: dict[str, int] = {}

    t0 = time.perf_counter()
    runs["no chunking (whole document, 256 tokens)"] = doc_run(
        enc.encode_documents(texts), ids, qv, qids, DEPTH
    )
    seconds["no chunking (whole document, 256 tokens)"] = time.perf_counter() - t0

    def by_doc(i: int, _: Chunk) -> str:
        return ids[i]

    for label, chunker in (("sentences", "sentence"), ("sentences <= 64 tokens", None)):
        t0 = time.perf_counter()
        naive = LateChunker(enc, merged if chunker is None else chunker, naive=True)
        per_doc = naive.encode(texts)
        name = f"naive, {label}"
        seconds[name] = time.perf_counter() - t0
        runs[name] = chunk_run(per_doc, by_doc, qv, qids, DEPTH, enc.dim)
        chunks[name] = count(per_doc)

    late = LateChunker(enc, "sentence")
    shared, late_s = late_pass(
        late, texts, {"sentences": sentences, "sentences <= 64 tokens": merged, "doc": whole}
    )
    for label in ("sentences", "sentences <= 64 tokens"):
        name = f"late, {label}"
        runs[name] = chunk_run(shared[label], by_doc, qv, qids, DEPTH, enc.dim)
        seconds[name] = late_s
        chunks[name] = count(shared[label])
    name = "late, whole document (mean of all tokens)"
    runs[name] = chunk_run(shared["doc"], by_doc, qv, qids, DEPTH, enc.dim)
    seconds[name] = late_s

    t0 = time.perf_counter()
    trunc = LateChunker(enc, "sentence", long=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_doc = trunc.encode(texts)
    name = "late, sentences, truncated at 256 (seed)"
    seconds[name] = time.perf_counter() - t0
    runs[name] = chunk_run(per_doc, by_doc, qv, qids, DEPTH, enc.dim)
    chunks[name] = count(per_doc)
    skipped = trunc.last_stats["skipped"]

    n_sent = chunks["naive, sentences"]
    print(f"cranfield: {len(ids)} documents ({n_long} past {enc.max_length} tokens), "
          f"{len(qids)} judged queries; {n_sent} sentences ({n_sent / len(ids):.1f} per "
          f"document), {chunks['naive, sentences <= 64 tokens']} chunks when merged up to 64 "
          f"tokens; the truncated late run drops {skipped} sentences past the window")
    scores = report(
        "cranfield (documents; a document scores its best chunk)", runs, qrels, seconds,
        ("ndcg@10", "recall@100", "mrr@10"),
    )
    print("(seconds: encoding the documents; the late rows share one pass; queries encoded "
          "once, not counted)")
    keys = {
        "no chunking (whole document, 256 tokens)": "none",
        "naive, sentences": "naive",
        "late, sentences": "late",
        "late, sentences, truncated at 256 (seed)": "late_truncated",
        "naive, sentences <= 64 tokens": "naive_64",
        "late, sentences <= 64 tokens": "late_64",
        "late, whole document (mean of all tokens)": "late_document",
    }
    for name, key in keys.items():
        summary[f"ndcg10_cranfield_{key}"] = round(scores[name]["ndcg@10"], 4)
        summary[f"recall100_cranfield_{key}"] = round(scores[name]["recall@100"], 4)


# ---------------------------------------------------------------------------- jsquad


def jsquad(enc: TextEncoder, folder: Path, quick: bool, summary: dict[str, float]) -> None:
    data = load_beir(folder)
    grouped: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for pid, doc in data.corpus.items():
        title, sep, k = pid.rpartition("#")
        if not sep or not k.isdigit():
            print(f"jsquad: paragraph id {pid!r} is not <title>#<k>: no article grouping; skipped")
            return
        grouped[title].append((int(k), pid, doc["text"]))
    titles = list(grouped)[:5] if quick else list(grouped)
    articles, para_starts, para_ends, para_ids = [], [], [], []
    for title in titles:
        parts = sorted(grouped[title])
        text, starts, ends, pids = "", [], [], []
        for _, pid, para in parts:
            if text:
                text += "\n\n"
            starts.append(len(text))
            text += para
            ends.append(len(text))
            pids.append(pid)
        articles.append(text)
        para_starts.append(starts)
        para_ends.append(ends)
        para_ids.append(pids)
    article_of = {pid: titles[a] for a, pids in enumerate(para_ids) for pid in pids}
    qids = [q for q in data.queries if any(d in article_of for d in data.qrels.get(q, {}))]
    qrels = {q: data.qrels[q] for q in qids}
    qrels_article = {q: {article_of[d]: 1 for d in data.qrels[q] if d in article_of} for q in qids}
    t0 = time.perf_counter()
    qv = enc.encode_queries([data.queries[q] for q in qids])
    query_s = time.perf_counter() - t0
    crossing = 0

    def by_paragraph(a: int, chunk: Chunk) -> str | None:
        nonlocal crossing
        p = bisect.bisect_right(para_starts[a], chunk.start) - 1
        if p < 0 or chunk.end > para_ends[a][p]:
            crossing += 1
            return None
        return para_ids[a][p]

    def by_article(a: int, _: Chunk) -> str:
        return titles[a]

    full_tokens = [len(untruncated(enc.model.tokenizer).encode(t).ids) for t in articles]
    runs_p: dict[str, Run] = {}
    runs_a: dict[str, Run] = {}
    seconds: dict[str, float] = {}
    chunks: dict[str, int] = {}
    for label, chunker in (("sentences", "sentence"), ("paragraphs", "paragraph")):
        t0 = time.perf_counter()
        per_doc = LateChunker(enc, chunker, naive=True).encode(articles)
        name = f"naive, {label}"
        seconds[name] = time.perf_counter() - t0
        runs_p[name] = chunk_run(per_doc, by_paragraph, qv, qids, DEPTH, enc.dim)
        runs_a[name] = chunk_run(per_doc, by_article, qv, qids, 10, enc.dim)
        chunks[name] = count(per_doc)
    late = LateChunker(enc, "sentence")
    shared, late_s = late_pass(
        late, articles, {"sentences": sentences, "paragraphs": paragraphs, "doc": whole}, group=4
    )
    for label in ("sentences", "paragraphs"):
        name = f"late, {label}"
        runs_p[name] = chunk_run(shared[label], by_paragraph, qv, qids, DEPTH, enc.dim)
        runs_a[name] = chunk_run(shared[label], by_article, qv, qids, 10, enc.dim)
        seconds[name] = late_s
        chunks[name] = count(shared[label])
    name = "late, whole article (mean of all tokens)"
    runs_a[name] = chunk_run(shared["doc"], by_article, qv, qids, 10, enc.dim)
    seconds[name] = late_s
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        whole_vectors = enc.encode_documents(articles)
    name = "no chunking (whole article, 256 tokens)"
    runs_a[name] = doc_run(whole_vectors, titles, qv, qids, 10)
    seconds[name] = time.perf_counter() - t0

    total = sum(full_tokens)
    print(f"\njsquad-valid: {len(articles)} articles of {sum(map(len, para_ids))} paragraphs, "
          f"{total:,} MiniLM tokens ({total / len(articles):.0f} per article on average, "
          f"{sum(t > enc.max_length for t in full_tokens)} articles past {enc.max_length}); "
          f"{len(qids)} questions (encoded in {query_s:.0f} s); {chunks['naive, sentences']} "
          f"sentences; {crossing} chunks crossing a paragraph boundary")
    scores_p = report(
        "jsquad-valid, paragraph level (a paragraph scores its best chunk inside it)",
        runs_p, qrels, seconds, ("ndcg@10", "recall@100", "mrr@10"),
    )
    scores_a = report(
        "jsquad-valid, article level (an article scores its best chunk; depth 10)",
        runs_a, qrels_article, seconds, ("ndcg@10", "recall@10", "mrr@10"),
    )
    for name, key in (("naive, sentences", "naive_sentences"), ("late, sentences",
                      "late_sentences"), ("naive, paragraphs", "naive_paragraphs"),
                      ("late, paragraphs", "late_paragraphs")):
        summary[f"ndcg10_jsquad_paragraph_{key}"] = round(scores_p[name]["ndcg@10"], 4)
        summary[f"recall100_jsquad_paragraph_{key}"] = round(scores_p[name]["recall@100"], 4)
    for name, key in (("no chunking (whole article, 256 tokens)", "none"),
                      ("late, whole article (mean of all tokens)", "late_document"),
                      ("naive, sentences", "naive_sentences"),
                      ("late, sentences", "late_sentences")):
        summary[f"ndcg10_jsquad_article_{key}"] = round(scores_a[name]["ndcg@10"], 4)


def main() -> None:
    ap = parser(__doc__, data=True)
    ap.add_argument("--skip", nargs="*", default=[], choices=["cranfield", "jsquad"])
    args = parse(ap)
    res = Results(__file__, args, peers=("ranx",))
    warnings.simplefilter("ignore", TruncationWarning)  # naive chunks past 256 tokens: counted
    enc = TextEncoder("default")
    summary = res.summary
    quick = args.mode != "full"
    t0 = time.perf_counter()
    if "cranfield" not in args.skip:
        folder = args.data / "cranfield"
        if folder.is_dir():
            cranfield(enc, folder, quick, summary)
        else:
            res.skip(f"cranfield: not found under {args.data}")
    if "jsquad" not in args.skip:
        folder = args.data / "jsquad-valid"
        if folder.is_dir():
            jsquad(enc, folder, quick, summary)
        else:
            res.skip(f"jsquad-valid: not found under {args.data}")
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
    res.finish()


if __name__ == "__main__":
    main()
