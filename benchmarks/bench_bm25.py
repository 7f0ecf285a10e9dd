"""BM25 benchmark: fastrag against bm25s (numpy and numba backends) and tantivy on the same tokens.

For cranfield (English analyzer), jsquad-valid (Japanese analyzer) and a synthetic Zipfian
corpus of integer term ids, it measures top-10 agreement, single-thread and 2-thread query
throughput (pre-tokenized and with query tokenization), indexing speed and index memory.
Both engines always get the same token lists, produced once by fastrag's analyzer.

    python benchmarks/bench_bm25.py --quick      # a few minutes: 100,000 synthetic documents
    python benchmarks/bench_bm25.py              # full run (1,000,000 synthetic documents)
    python benchmarks/bench_bm25.py --smoke      # seconds: tiny generated data, no bm25s
    # options: --json PATH, --data DIR, --docs N, --peer-docs N, --repeat R, --seed S, --skip ...

tantivy (the `tantivy` Python package, Rust tantivy underneath) is compared against a second
fastrag index with tantivy's fixed scoring: Lucene BM25, k1=1.2, b=0.75. It gets the very
tokens fastrag's analyzer produced, joined by spaces into a field with tantivy's "whitespace"
tokenizer and index option "freq" (document ids and term frequencies, no positions, nothing
stored but a fast i64 id column used to map hits back), written by one writer thread and
searched with term queries OR-ed together, one query per call, count=False (so tantivy may
use block-max WAND), on one searcher thread. fastrag's ratio is taken against its own one
call per query. tantivy quantises document lengths to one byte (fieldnorms), so its scores
differ slightly from the exact formula: agreement is the mean share of top-10 documents the
two engines have in common. Keys (no dataset suffix where the name says the dataset):
- qps_ratio_vs_tantivy_cranfield, qps_ratio_vs_tantivy_zipf: top-10 queries/s, 1 thread,
  fastrag / tantivy (zipf = the synthetic corpus: 1,000,000 documents in the full run,
  100,000 with --quick), fastrag with its default impact_cache="auto" (the impact cache
  held up to 2**24 postings: on the 100k corpus, not on the 1M one);
  qps_ratio_vs_tantivy_zipf_lean / _cached: fastrag with impact_cache=False / True;
- bytes_per_posting: fastrag's stats()['memory_bytes'] (every array of the index, the
  impact cache when held included) over its number of postings, on the synthetic corpus,
  default policy; bytes_per_posting_lean / _cached: the same with impact_cache=False (scores
  computed from tfs and document lengths as blocks are decoded) / True;
  file_bytes_per_posting: the saved file's size;
- index_bytes_ratio_vs_tantivy (_lean, _cached): tantivy's on-disk bytes (every file of its index
  folder after the commit and merges) / fastrag's memory_bytes, synthetic corpus; > 1 when
  fastrag's index is smaller (the inverse, fastrag / tantivy, is the issue's "goal <= 1.2");
  file_bytes_ratio_vs_tantivy: tantivy's on-disk bytes / the size of fastrag's saved file;
- index_docs_ratio_vs_tantivy_strings: cranfield raw strings indexed per second, analyzer
  included, one thread: fastrag BM25.add(strings) with its English analyzer / tantivy with
  its "en_stem" tokenizer (commit included);
- top10_overlap_vs_tantivy_cranfield / _zipf: the agreement above.

Timings: every case is warmed up once (numba JIT excluded), then the cases are run in turn,
in a rotating order, `--repeat` times; a sample repeats a call until it lasts at least
`min_sample_s`. Tables give the median and best rate; the SUMMARY ratios are medians over
rounds of the per-round time ratios (see `paired_ratio`), larger meaning fastrag is better.
"""

from __future__ import annotations

import os

# Fair single-thread timings: no BLAS/OpenMP pools (numba threads stay available for the
# explicitly 2-thread bm25s case; its 1-thread case uses bm25s's serial kernel).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import Stemmer  # noqa: E402

import fastrag  # noqa: E402
from _common import Results, optional, parse, parser, time_cases  # noqa: E402
from fastrag import _core  # noqa: E402

bm25s: Any = None  # the peer, imported in main() unless --smoke

K = 10
BM25_PARAMS = {"method": "lucene", "k1": 1.5, "b": 0.75}
TANTIVY_PARAMS = {"method": "lucene", "k1": 1.2, "b": 0.75}  # tantivy's fixed BM25
tantivy: Any = None  # the second peer, imported in main() unless --smoke
RTOL = 1e-4


# ----------------------------------------------------------------------------- timing
@dataclass
class Row:
    """One figure of a table: a rate (median and best sample) or a single value."""

    figure: str
    engine: str
    median: float
    best: float
    unit: str
    note: str = ""


@dataclass
class Report:
    name: str
    description: str
    rows: list[Row] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    top: dict[str, Any] = field(default_factory=dict)  # SUMMARY keys taken without a suffix

    def add_rates(
        self,
        figure: str,
        unit: str,
        items: int,
        times: dict[str, list[float]],
    ) -> dict[str, list[float]]:
        """Adds items/s rows from per-call times (median and best); returns the times."""
        for name, ts in times.items():
            self.rows.append(Row(figure, name, items / float(np.median(ts)), items / min(ts), unit))
        return times

    def add_value(self, figure: str, engine: str, value: float, unit: str, note: str = "") -> None:
        self.rows.append(Row(figure, engine, value, value, unit, note))

    def note(self, line: str) -> None:
        print(f"  {line}", flush=True)
        self.lines.append(line)

    def table(self) -> str:
        out = [f"### {self.name}", "", self.description, ""]
        out += ["| figure | engine / path | median | best | unit |", "|---|---|---:|---:|---|"]
        for r in self.rows:
            best = "" if r.best == r.median else _fmt(r.best)
            engine = f"{r.engine} ({r.note})" if r.note else r.engine
            out.append(f"| {r.figure} | {engine} | {_fmt(r.median)} | {best} | {r.unit} |")
        out += [""] + [f"- {line}" for line in self.lines]
        return "\n".join(out)


def _fmt(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def paired_ratio(times: dict[str, list[float]], ours: str, peers: Sequence[str]) -> float:
    """Median over rounds of (fastest peer's time / our time); > 1 when fastrag is faster.

    Samples of one round ran back to back, so pairing them cancels most of the machine's
    slow drifts (these VMs vary by up to 35% from run to run).
    """
    n = len(times[ours])
    r = [min(times[p][i] for p in peers) / times[ours][i] for i in range(n)]
    return round(float(np.median(r)), 3)


# ----------------------------------------------------------------------------- agreement
def _same_topk(ia, sa, ib, sb, rtol: float) -> bool:
    """Same documents up to ties at the k-th score, and the same scores within rtol.

    Padding (fastrag: -inf, bm25s: documents of score 0) counts as "no document"; every
    Lucene BM25 score of a matching document is positive.
    """
    sa = np.where(np.isfinite(sa), sa, 0.0).astype(np.float64)
    sb = np.where(np.isfinite(sb), sb, 0.0).astype(np.float64)
    a = {int(d): s for d, s in zip(ia, sa, strict=True) if s > 0}
    b = {int(d): s for d, s in zip(ib, sb, strict=True) if s > 0}
    if len(a) != len(b):
        return False
    if not np.allclose(np.sort(sa), np.sort(sb), rtol=rtol, atol=0):
        return False
    if not a:
        return True
    floor = min(a.values())

    def close(x: float, y: float) -> bool:
        return abs(x - y) <= rtol * max(abs(x), abs(y))

    if any(not close(a[d], b[d]) for d in a.keys() & b.keys()):
        return False
    # A document in only one list must tie with the k-th score.
    return all(close(a.get(d, b.get(d)), floor) for d in a.keys() ^ b.keys())


def agreement(ids_a, scores_a, ids_b, scores_b, rtol: float = RTOL) -> tuple[float, list[int]]:
    """Fraction of queries whose top-k agree, and the queries that do not."""
    bad = [
        q
        for q in range(len(ids_a))
        if not _same_topk(ids_a[q], scores_a[q], ids_b[q], scores_b[q], rtol)
    ]
    return 1.0 - len(bad) / max(1, len(ids_a)), bad


# ----------------------------------------------------------------------------- bm25s helpers
def bm25s_index(corpus: Any, backend: str = "numpy") -> Any:
    retriever = bm25s.BM25(backend=backend, **BM25_PARAMS)
    retriever.index(corpus, show_progress=False)
    return retriever


def bm25s_numba_twin(retriever: Any) -> Any:
    """A numba-backend retriever sharing the arrays of a built one (no second build)."""
    twin = bm25s.BM25(backend="numba", **BM25_PARAMS)
    for attr in ("scores", "vocab_dict", "unique_token_ids_set", "nonoccurrence_array"):
        setattr(twin, attr, getattr(retriever, attr))
    return twin


def bm25s_query_ids(retriever: Any, token_lists: Sequence[Sequence[str]]) -> list | None:
    """Queries as bm25s term ids, or None when some query has no indexed term.

    bm25s 0.3.16 maps such a query to its empty token, whose id lies past the end of the
    index's indptr: the numpy backend raises, the numba one reads out of bounds. Token
    strings avoid that path, so they are the form that always works.
    """
    ids = [retriever.get_tokens_ids(list(q)) for q in token_lists]
    return ids if all(ids) else None


def bm25s_retrieve(retriever: Any, queries: list, threads: int = 1):
    """Top-k with bm25s's fastest single-thread path for its backend.

    numpy: n_threads=0 is the plain sequential map (n_threads=1 adds a thread pool);
    numba: n_threads=1 selects the serial jitted kernel, 2 the parallel one.
    """
    if retriever.backend == "numba":
        return retriever.retrieve(queries, k=K, show_progress=False, n_threads=threads)
    return retriever.retrieve(
        queries,
        k=K,
        show_progress=False,
        n_threads=0 if threads == 1 else threads,
        backend_selection="numpy",
    )


def bm25s_bytes(retriever: Any) -> int:
    s = retriever.scores
    return int(s["data"].nbytes + s["indices"].nbytes + s["indptr"].nbytes)


# ----------------------------------------------------------------------------- tantivy helpers
@dataclass
class TantivyIndex:
    index: Any
    searcher: Any
    schema: Any
    path: Path
    seconds: float  # build time: documents added, committed, merges waited for

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def queries(self, token_lists: Sequence[Sequence[str]]) -> list:
        """Prebuilt OR queries of term queries over the given tokens (built outside timings)."""
        out = []
        for q in token_lists:
            terms = [
                (
                    tantivy.Occur.Should,
                    tantivy.Query.term_query(self.schema, "body", t, index_option="freq"),
                )
                for t in q  # repeats kept: both engines then weigh a repeated term twice
            ]
            out.append(tantivy.Query.boolean_query(terms))
        return out

    def search_all(self, queries: list) -> None:
        search = self.searcher.search
        for q in queries:
            search(q, K, count=False)

    def topk_ids(self, queries: list) -> list[list[int]]:
        out = []
        for q in queries:
            hits = self.searcher.search(q, K, count=False).hits
            out.append(self.searcher.fast_field_values("id", [a for _, a in hits]))
        return out


def tantivy_build(texts: Sequence[str], path: Path, tokenizer: str = "whitespace") -> TantivyIndex:
    """An on-disk tantivy index of `texts` (body: ids + tf, no positions; id: fast i64)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    sb = tantivy.SchemaBuilder()
    sb.add_text_field("body", stored=False, tokenizer_name=tokenizer, index_option="freq")
    sb.add_integer_field("id", stored=False, fast=True)
    schema = sb.build()
    t0 = time.perf_counter()
    index = tantivy.Index(schema, path=str(path))
    writer = index.writer(heap_size=1_000_000_000, num_threads=1)
    doc_cls = tantivy.Document
    for i, text in enumerate(texts):
        writer.add_document(doc_cls(body=text, id=i))
    writer.commit()
    writer.wait_merging_threads()
    seconds = time.perf_counter() - t0
    index.reload()
    return TantivyIndex(index, index.searcher(), schema, path, seconds)


def note_overlap(report, core, q_indptr, q_terms, tv, tq) -> tuple[float, np.ndarray]:
    """fastrag's and tantivy's top-10 overlap on the same queries, noted in the report, and
    fastrag's top-10 ids."""
    f_ids, _ = core.search(q_indptr, q_terms, k=K, threads=1)
    overlap = topk_overlap(f_ids, tv.topk_ids(tq))
    report.note(
        f"top-10 overlap fastrag (k1=1.2) vs tantivy, same tokens: {overlap:.4f} "
        "(mean share of common documents; tantivy quantises lengths)"
    )
    return overlap, f_ids


def topk_overlap(f_ids: np.ndarray, t_ids: list[list[int]]) -> float:
    """Mean over queries of |fastrag top-k & tantivy top-k| / max(sizes) (1 when both empty)."""
    shares = []
    for fa, tb in zip(f_ids, t_ids, strict=True):
        a = {int(d) for d in fa if d >= 0}
        b = set(tb)
        shares.append(len(a & b) / max(len(a), len(b)) if a or b else 1.0)
    return round(float(np.mean(shares)), 4)


# ----------------------------------------------------------------------------- text datasets
def load_beir(path: Path) -> tuple[list[str], list[str], list[str]]:
    """(doc ids, document texts = title + " " + text, query texts)."""
    ids, texts = [], []
    with open(path / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            ids.append(d["_id"])
            texts.append(f"{d.get('title') or ''} {d['text']}")
    with open(path / "queries.jsonl", encoding="utf-8") as f:
        queries = [json.loads(line)["text"] for line in f]
    return ids, texts, queries


def fastrag_build(
    analyzer: Any, docs: list, ids: list[str], params: dict[str, Any] = BM25_PARAMS
) -> fastrag.BM25:
    index = fastrag.BM25(analyzer=analyzer, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastrag.EmptyDocumentWarning)
        index.add(docs, ids=ids)
    index.stats()  # the core merges added documents lazily: include that work
    return index


def bench_tantivy_text(
    report: Report,
    key: str,
    analyzer: Any,
    texts: list[str],
    doc_tokens: list,
    doc_ids: list[str],
    query_tokens: list,
    args: argparse.Namespace,
    strings: bool,
) -> None:
    """fastrag (Lucene BM25, k1=1.2, b=0.75) against tantivy on the same tokens."""
    print(f"[{report.name}] tantivy", flush=True)
    reps, min_s = args.repeat, args.min_sample_s
    index = fastrag_build(analyzer, doc_tokens, doc_ids, TANTIVY_PARAMS)
    core = index._core
    q_indptr, q_terms = index.encode_queries(query_tokens)
    singles = [
        (
            np.array([0, q_indptr[i + 1] - q_indptr[i]], dtype=np.int64),
            q_terms[q_indptr[i] : q_indptr[i + 1]],
        )
        for i in range(len(query_tokens))
    ]

    def per_query_calls() -> None:
        for ip, terms in singles:
            core.search(ip, terms, k=K, threads=1)

    tmp = Path(tempfile.mkdtemp(prefix="fastrag-bench-tantivy-"))
    try:
        tv = tantivy_build([" ".join(d) for d in doc_tokens], tmp / "tokens")
        tq = tv.queries(query_tokens)
        overlap, _ = note_overlap(report, core, q_indptr, q_terms, tv, tq)
        n_q = len(query_tokens)
        cases: dict[str, Callable[[], object]] = {
            "fastrag core k1=1.2, one call per query": per_query_calls,
            "fastrag core k1=1.2, one batch call": lambda: core.search(
                q_indptr, q_terms, k=K, threads=1
            ),
            "tantivy, one search() per query, same tokens": lambda: tv.search_all(tq),
        }
        qps = report.add_rates(
            "top-10 QPS vs tantivy, 1 thread, pre-tokenized",
            "q/s",
            n_q,
            time_cases(cases, reps, min_s),
        )
        report.top[f"qps_ratio_vs_tantivy_{key}"] = paired_ratio(
            qps,
            "fastrag core k1=1.2, one call per query",
            ["tantivy, one search() per query, same tokens"],
        )
        report.top[f"top10_overlap_vs_tantivy_{key}"] = overlap
        report.add_value("index bytes", "tantivy on disk (tokens field)", tv.disk_bytes(), "bytes")
        if strings:
            n_d = len(texts)
            cases_ix: dict[str, Callable[[], object]] = {
                "fastrag BM25.add(strings), k1=1.2": lambda: fastrag_build(
                    analyzer, texts, doc_ids, TANTIVY_PARAMS
                ),
                "tantivy en_stem tokenizer, add + commit": lambda: tantivy_build(
                    texts, tmp / "strings", "en_stem"
                ),
            }
            ix = report.add_rates(
                "indexing raw strings vs tantivy, 1 thread",
                "docs/s",
                n_d,
                time_cases(cases_ix, max(3, reps // 2), min_s),
            )
            report.top["index_docs_ratio_vs_tantivy_strings"] = paired_ratio(
                ix,
                "fastrag BM25.add(strings), k1=1.2",
                ["tantivy en_stem tokenizer, add + commit"],
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_text(
    name: str,
    path: Path,
    analyzer: Any,
    args: argparse.Namespace,
    bm25s_own_tokenizer: bool = False,
) -> Report | None:
    if not (path / "corpus.jsonl").exists():
        print(f"[{name}] skipped: {path} not found", flush=True)
        return None
    doc_ids, texts, query_texts = load_beir(path)
    print(f"[{name}] {len(texts):,} docs, {len(query_texts):,} queries", flush=True)
    report = Report(
        name,
        f"{len(texts):,} documents, {len(query_texts):,} queries, {analyzer.name} analyzer "
        f"(fastrag's, for both engines).",
    )
    reps, min_s = args.repeat, args.min_sample_s
    peers = bm25s is not None

    # 1. Tokenize once; both engines index the same token lists.
    t0 = time.perf_counter()
    doc_tokens = analyzer.analyze_many(texts)
    tok_s = time.perf_counter() - t0
    query_tokens = analyzer.analyze_many(query_texts)
    report.add_value(
        "corpus tokenization (analyzer alone)",
        f"fastrag {analyzer.name}",
        len(texts) / tok_s,
        "docs/s",
        "one run",
    )

    index = fastrag_build(analyzer, doc_tokens, doc_ids)
    core = index._core
    q_indptr, q_terms = index.encode_queries(query_tokens)
    bm_queries: dict[str, list] = {}
    if peers:
        bm_np = bm25s_index(doc_tokens, "numpy")
        bm_nb = bm25s_numba_twin(bm_np)
        # bm25s query forms: token strings always; term ids when every query has a known term.
        bm_queries["tokens"] = [list(q) for q in query_tokens]
        bm_qids = bm25s_query_ids(bm_np, query_tokens)
        if bm_qids is None:
            report.note(
                "bm25s gets token strings only: some query has no indexed term, which its "
                "term-id path cannot take (see bm25s_query_ids)"
            )
        else:
            bm_queries["term ids"] = bm_qids

    # Agreement, on the exact calls that are timed.
    f_ids, f_scores = core.search(q_indptr, q_terms, k=K, threads=1)
    if peers:
        report.summary["top10_agreement"] = 1.0
    for label, retriever in (("bm25s numpy", bm_np), ("bm25s numba", bm_nb)) if peers else ():
        for form, queries in bm_queries.items():
            res = bm25s_retrieve(retriever, queries)
            frac, bad = agreement(f_ids, f_scores, res.documents, res.scores)
            report.note(
                f"top-10 agreement fastrag vs {label} ({form}): {frac:.4f} "
                f"({len(query_tokens) - len(bad)}/{len(query_tokens)} queries)"
                + (f", first disagreement: query {bad[0]}" if bad else "")
            )
            report.summary["top10_agreement"] = min(
                report.summary["top10_agreement"], round(frac, 4)
            )
    py = index.search(query_tokens, k=K, threads=1)
    internal = np.asarray(doc_ids, dtype=object)[np.where(f_ids >= 0, f_ids, 0)]
    same = np.array_equal(np.where(f_ids >= 0, internal, None), py.ids)
    report.note(f"fastrag ix.search(tokens) returns the core's results mapped to user ids: {same}")

    # 2. Query throughput, pre-tokenized queries.
    n_q = len(query_tokens)
    singles = [
        (
            np.array([0, q_indptr[i + 1] - q_indptr[i]], dtype=np.int64),
            q_terms[q_indptr[i] : q_indptr[i + 1]],
        )
        for i in range(n_q)
    ]

    def per_query_calls() -> None:
        for ip, terms in singles:
            core.search(ip, terms, k=K, threads=1)

    print(f"[{name}] search timings", flush=True)
    cases = {
        "fastrag core, term ids": lambda: core.search(q_indptr, q_terms, k=K, threads=1),
        "fastrag core, term ids, one call per query": per_query_calls,
        "fastrag ix.search(token lists)": lambda: index.search(query_tokens, k=K, threads=1),
    }
    for form, queries in bm_queries.items():
        cases[f"bm25s numpy, {form}"] = lambda q=queries: bm25s_retrieve(bm_np, q)
        cases[f"bm25s numba, {form}"] = lambda q=queries: bm25s_retrieve(bm_nb, q)
    qps = report.add_rates(
        "top-10 QPS, 1 thread, pre-tokenized", "q/s", n_q, time_cases(cases, reps, min_s)
    )
    cases2: dict[str, Callable[[], object]] = {
        "fastrag core, term ids, threads=2": lambda: core.search(q_indptr, q_terms, k=K, threads=2),
    }
    if peers:
        best_form = min(bm_queries, key=lambda f: float(np.median(qps[f"bm25s numba, {f}"])))
        cases2[f"bm25s numba, {best_form}, n_threads=2"] = lambda: bm25s_retrieve(
            bm_nb, bm_queries[best_form], 2
        )
    qps2 = report.add_rates(
        "top-10 QPS, 2 threads, pre-tokenized", "q/s", n_q, time_cases(cases2, reps, min_s)
    )
    cases_tok: dict[str, Callable[[], object]] = {
        "fastrag ix.search(strings)": lambda: index.search(query_texts, k=K, threads=1),
    }
    if peers:
        cases_tok["bm25s numpy, analyzer + retrieve(tokens)"] = lambda: bm25s_retrieve(
            bm_np, analyzer.analyze_many(query_texts)
        )
        cases_tok["bm25s numba, analyzer + retrieve(tokens)"] = lambda: bm25s_retrieve(
            bm_nb, analyzer.analyze_many(query_texts)
        )
    qps_tok = report.add_rates(
        "top-10 QPS, 1 thread, with query tokenization",
        "q/s",
        n_q,
        time_cases(cases_tok, reps, min_s),
    )

    # 3. Indexing.
    print(f"[{name}] indexing timings", flush=True)
    n_d = len(texts)
    cases_ix: dict[str, Callable[[], object]] = {
        "fastrag BM25.add(token lists)": lambda: fastrag_build(analyzer, doc_tokens, doc_ids),
    }
    if peers:
        cases_ix["bm25s numpy backend, index(token lists)"] = lambda: bm25s_index(
            doc_tokens, "numpy"
        )
        cases_ix["bm25s numba backend, index(token lists)"] = lambda: bm25s_index(
            doc_tokens, "numba"
        )
    ix_rate = report.add_rates(
        "indexing, pre-tokenized", "docs/s", n_d, time_cases(cases_ix, reps, min_s)
    )
    cases_ix_tok: dict[str, Callable[[], object]] = {
        "fastrag BM25.add(strings)": lambda: fastrag_build(analyzer, texts, doc_ids),
    }
    if peers:
        cases_ix_tok["bm25s numpy backend, analyzer + index"] = lambda: bm25s_index(
            analyzer.analyze_many(texts), "numpy"
        )
    if peers and bm25s_own_tokenizer:
        cases_ix_tok["bm25s numpy backend, bm25s.tokenize(en stopwords, PyStemmer) + index"] = (
            lambda: bm25s_index(
                bm25s.tokenize(
                    texts, stopwords="en", stemmer=Stemmer.Stemmer("english"), show_progress=False
                ),
                "numpy",
            )
        )
    ix_tok_rate = report.add_rates(
        "indexing, with tokenization",
        "docs/s",
        n_d,
        time_cases(cases_ix_tok, max(3, reps // 2), min_s),
    )

    # 4. Memory.
    f_bytes = int(index.stats()["memory_bytes"])
    report.add_value("index memory", "fastrag stats()['memory_bytes']", f_bytes, "bytes")
    report.summary["qps_fastrag"] = round(n_q / float(np.median(qps["fastrag core, term ids"])), 1)
    report.summary["memory_bytes_fastrag"] = f_bytes
    if tantivy is not None:
        bench_tantivy_text(
            report,
            name.split("-")[0],
            analyzer,
            texts,
            doc_tokens,
            doc_ids,
            query_tokens,
            args,
            strings=bm25s_own_tokenizer,
        )
    if not peers:
        return report
    b_bytes = bm25s_bytes(bm_np)
    report.add_value("index memory", "bm25s data + indices + indptr", b_bytes, "bytes")

    # Ratios against bm25s's faster query form (token strings or term ids) of each backend.
    peer_np = [f"bm25s numpy, {f}" for f in bm_queries]
    peer_nb = [f"bm25s numba, {f}" for f in bm_queries]
    s = report.summary
    s["qps_ratio_vs_bm25s_numpy"] = paired_ratio(qps, "fastrag core, term ids", peer_np)
    s["qps_ratio_vs_bm25s_numba"] = paired_ratio(qps, "fastrag core, term ids", peer_nb)
    s["qps_pyapi_ratio_vs_bm25s_numba"] = paired_ratio(
        qps, "fastrag ix.search(token lists)", peer_nb
    )
    s["qps_2t_ratio_vs_bm25s_numba_2t"] = paired_ratio(
        qps2, "fastrag core, term ids, threads=2", [f"bm25s numba, {best_form}, n_threads=2"]
    )
    s["qps_tokenized_ratio_vs_bm25s_numba"] = paired_ratio(
        qps_tok, "fastrag ix.search(strings)", ["bm25s numba, analyzer + retrieve(tokens)"]
    )
    s["index_docs_per_s_ratio_vs_bm25s"] = paired_ratio(
        ix_rate, "fastrag BM25.add(token lists)", ["bm25s numpy backend, index(token lists)"]
    )
    s["index_tokenized_docs_per_s_ratio_vs_bm25s"] = paired_ratio(
        ix_tok_rate, "fastrag BM25.add(strings)", ["bm25s numpy backend, analyzer + index"]
    )
    s["memory_ratio_vs_bm25s"] = ratio(b_bytes, f_bytes)
    return report


# ----------------------------------------------------------------------------- synthetic
def zipf_ranks(rng: np.random.Generator, n_terms: int, exponent: float, size: int) -> np.ndarray:
    """`size` draws of 0-based ranks with P(rank r) proportional to (r + 1) ** -exponent."""
    cdf = np.cumsum(np.arange(1, n_terms + 1, dtype=np.float64) ** -exponent)
    cdf /= cdf[-1]
    out = np.empty(size, dtype=np.uint32)
    step = 1 << 22  # bounded temporary memory
    for a in range(0, size, step):
        b = min(size, a + step)
        out[a:b] = np.minimum(np.searchsorted(cdf, rng.random(b - a), side="right"), n_terms - 1)
    return out


def make_synthetic(n_docs: int, n_queries: int, seed: int, n_terms: int = 200_000):
    """A Zipfian corpus as CSR (indptr int64, term ids uint32) and CSR queries.

    Documents: lognormal lengths (median 45, mean ~51 tokens), tokens drawn i.i.d. with
    exponent 1.1 over term ranks. Queries: 2-8 distinct terms with a milder exponent (0.8),
    so that frequent terms (long posting lists) show up in some queries. Term ids are a
    random permutation of the ranks.
    """
    rng = np.random.default_rng(seed)
    lengths = np.maximum(1, np.rint(rng.lognormal(np.log(45.0), 0.5, n_docs))).astype(np.int64)
    indptr = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    perm = rng.permutation(n_terms).astype(np.uint32)
    terms = perm[zipf_ranks(rng, n_terms, 1.1, int(indptr[-1]))]

    queries = []
    for n in rng.integers(2, 9, size=n_queries):
        picked: list[int] = []
        while len(picked) < n:
            for t in zipf_ranks(rng, n_terms, 0.8, int(n)).tolist():
                if t not in picked and len(picked) < n:
                    picked.append(t)
        queries.append(perm[picked])
    q_indptr = np.zeros(n_queries + 1, dtype=np.int64)
    np.cumsum([len(q) for q in queries], out=q_indptr[1:])
    return indptr, terms, q_indptr, np.concatenate(queries).astype(np.uint32), n_terms


def bench_tantivy_synthetic(
    report: Report,
    indptr: np.ndarray,
    terms: np.ndarray,
    q_indptr: np.ndarray,
    q_terms: np.ndarray,
    args: argparse.Namespace,
) -> None:
    """fastrag (Lucene BM25, k1=1.2, b=0.75) against tantivy on the synthetic term ids."""
    n_docs, n_q = len(indptr) - 1, len(q_indptr) - 1
    reps, min_s = max(3, args.repeat // 2), args.min_sample_s
    core = _core.SparseIndex(scoring="bm25", **TANTIVY_PARAMS)
    core.add(indptr, terms)
    st = core.stats()
    lean = _core.SparseIndex(scoring="bm25", impact_cache=False, **TANTIVY_PARAMS)
    lean.add(indptr, terms)
    st_lean = lean.stats()
    cached = _core.SparseIndex(scoring="bm25", impact_cache=True, **TANTIVY_PARAMS)
    cached.add(indptr, terms)
    st_cached = cached.stats()
    report.note(
        f"fastrag default impact_cache={core.impact_cache_policy!r}: cache held = "
        f"{core.impact_cache} ({st['n_postings']:,} postings)"
    )
    print(f"[synthetic] tantivy: writing {n_docs:,} documents as strings of term ids", flush=True)
    flat, ptr = terms.astype(str).tolist(), indptr.tolist()
    texts = [" ".join(flat[ptr[i] : ptr[i + 1]]) for i in range(n_docs)]
    del flat
    q_tokens = [q_terms[q_indptr[i] : q_indptr[i + 1]].astype(str).tolist() for i in range(n_q)]
    tmp = Path(tempfile.mkdtemp(prefix="fastrag-bench-tantivy-"))
    try:
        tv = tantivy_build(texts, tmp / "zipf")
        del texts
        report.add_value(
            "indexing from term ids",
            "tantivy, whitespace-joined ids, 1 writer thread",
            n_docs / tv.seconds,
            "docs/s",
            "one run; strings built beforehand",
        )
        tq = tv.queries(q_tokens)
        overlap, _ = note_overlap(report, core, q_indptr, q_terms, tv, tq)
        singles = [
            (
                np.array([0, q_indptr[i + 1] - q_indptr[i]], dtype=np.int64),
                q_terms[q_indptr[i] : q_indptr[i + 1]],
            )
            for i in range(n_q)
        ]

        def per_query_calls(ix: Any = core) -> None:
            for ip, t in singles:
                ix.search(ip, t, k=K, threads=1)

        f_res = core.search(q_indptr, q_terms, k=K, threads=1)
        for name, other in (("False", lean), ("True", cached)):
            o_res = other.search(q_indptr, q_terms, k=K, threads=1)
            same = np.array_equal(o_res[0], f_res[0]) and o_res[1].tobytes() == f_res[1].tobytes()
            report.note(f"impact_cache={name} returns the same ids and score bits: {same}")
        cases: dict[str, Callable[[], object]] = {
            "fastrag core k1=1.2, one call per query": per_query_calls,
            "fastrag core k1=1.2, impact_cache=False, one call per query": lambda: per_query_calls(
                lean
            ),
            "fastrag core k1=1.2, impact_cache=True, one call per query": lambda: per_query_calls(
                cached
            ),
            "tantivy, one search() per query, same tokens": lambda: tv.search_all(tq),
        }
        qps = report.add_rates(
            "top-10 QPS vs tantivy, 1 thread", "q/s", n_q, time_cases(cases, reps, min_s)
        )
        t_bytes = tv.disk_bytes()
        f_bytes, l_bytes = int(st["memory_bytes"]), int(st_lean["memory_bytes"])
        c_bytes = int(st_cached["memory_bytes"])
        core.save(str(tmp / "fastrag.fridx"))
        file_bytes = (tmp / "fastrag.fridx").stat().st_size
        report.add_value("index bytes", "fastrag k1=1.2 stats()['memory_bytes']", f_bytes, "bytes")
        report.add_value(
            "index bytes", "fastrag k1=1.2 impact_cache=False memory_bytes", l_bytes, "bytes"
        )
        report.add_value(
            "index bytes", "fastrag k1=1.2 impact_cache=True memory_bytes", c_bytes, "bytes"
        )
        report.add_value("index bytes", "fastrag saved file", file_bytes, "bytes")
        report.add_value("index bytes", "tantivy on disk", t_bytes, "bytes")
        n_post = max(1, int(st["n_postings"]))
        report.top["bytes_per_posting_lean"] = round(l_bytes / n_post, 3)
        report.top["bytes_per_posting_cached"] = round(c_bytes / n_post, 3)
        report.top["index_bytes_ratio_vs_tantivy_cached"] = ratio(t_bytes, c_bytes)
        report.top["file_bytes_per_posting"] = round(file_bytes / n_post, 3)
        report.top["index_bytes_ratio_vs_tantivy_lean"] = ratio(t_bytes, l_bytes)
        report.top["file_bytes_ratio_vs_tantivy"] = ratio(t_bytes, file_bytes)
        report.top["qps_ratio_vs_tantivy_zipf_lean"] = paired_ratio(
            qps,
            "fastrag core k1=1.2, impact_cache=False, one call per query",
            ["tantivy, one search() per query, same tokens"],
        )
        report.top["qps_ratio_vs_tantivy_zipf_cached"] = paired_ratio(
            qps,
            "fastrag core k1=1.2, impact_cache=True, one call per query",
            ["tantivy, one search() per query, same tokens"],
        )
        report.top["qps_ratio_vs_tantivy_zipf"] = paired_ratio(
            qps,
            "fastrag core k1=1.2, one call per query",
            ["tantivy, one search() per query, same tokens"],
        )
        report.top["top10_overlap_vs_tantivy_zipf"] = overlap
        report.top["index_bytes_ratio_vs_tantivy"] = ratio(t_bytes, f_bytes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_synthetic(args: argparse.Namespace) -> Report:
    n_docs, reps, min_s = args.docs, args.repeat, args.min_sample_s
    print(f"[synthetic] generating {n_docs:,} documents", flush=True)
    t0 = time.perf_counter()
    n_queries = 100 if args.mode == "smoke" else 1000
    indptr, terms, q_indptr, q_terms, n_terms = make_synthetic(n_docs, n_queries, args.seed)
    n_q = len(q_indptr) - 1
    report = Report(
        "synthetic",
        f"{n_docs:,} documents, {len(terms):,} tokens (mean length {len(terms) / n_docs:.1f}), "
        f"vocabulary {n_terms:,} term ids, Zipf exponent 1.1; {n_q:,} queries of 2-8 distinct "
        f"terms, Zipf exponent 0.8; seed {args.seed}. Generated in "
        f"{time.perf_counter() - t0:.1f} s.",
    )

    # Indexing: fastrag from the numpy CSR arrays directly.
    def fastrag_core_build() -> Any:
        core = _core.SparseIndex(scoring="bm25", **BM25_PARAMS)
        core.add(indptr, terms)
        core.stats()  # forces the lazy merge
        return core

    print("[synthetic] fastrag indexing", flush=True)
    times = time_cases(
        {"fastrag core add(indptr, term ids)": fastrag_core_build}, max(2, reps // 2), 0.0
    )
    f_rate = report.add_rates("indexing from term ids", "docs/s", n_docs, times)
    core = fastrag_core_build()
    st = core.stats()
    report.note(f"fastrag: {st['n_postings']:,} postings, {st['n_terms']:,} terms")
    report.top["bytes_per_posting"] = round(st["memory_bytes"] / max(1, st["n_postings"]), 3)
    if tantivy is not None:
        bench_tantivy_synthetic(report, indptr, terms, q_indptr, q_terms, args)
    if bm25s is None:
        results = {
            a: core.search(q_indptr, q_terms, k=K, threads=1, algorithm=a)
            for a in ("exhaustive", "maxscore")
        }
        ms_frac, _ = agreement(*results["maxscore"], *results["exhaustive"], rtol=1e-6)
        report.summary["maxscore_agreement_vs_exhaustive"] = round(ms_frac, 4)
        cases0: dict[str, Callable[[], object]] = {
            f"fastrag core, algorithm={a}": (
                lambda a=a: core.search(q_indptr, q_terms, k=K, threads=1, algorithm=a)
            )
            for a in ("auto", "exhaustive", "maxscore")
        }
        qps0 = report.add_rates("top-10 QPS, 1 thread", "q/s", n_q, time_cases(cases0, reps, min_s))
        report.summary["qps_fastrag"] = round(
            n_q / float(np.median(qps0["fastrag core, algorithm=auto"])), 1
        )
        report.summary["docs"] = n_docs
        return report

    # bm25s from the same ids: per-document Python lists (built outside the timing).
    peer_docs = min(n_docs, args.peer_docs) if args.peer_docs else n_docs
    print(f"[synthetic] bm25s indexing ({peer_docs:,} docs)", flush=True)
    flat, ptr = terms[: indptr[peer_docs]].tolist(), indptr[: peer_docs + 1].tolist()
    doc_lists = [flat[ptr[i] : ptr[i + 1]] for i in range(peer_docs)]
    del flat
    vocab = {str(i): i for i in range(n_terms)}
    tokenized = bm25s.tokenization.Tokenized(ids=doc_lists, vocab=vocab)
    bm25s_index(bm25s.tokenization.Tokenized(ids=[[0, 1], [1]], vocab={"a": 0, "b": 1}), "numba")
    t0 = time.perf_counter()
    bm_nb = bm25s_index(tokenized, "numba")  # numba CSC builder (JIT warmed just above)
    bm_s = time.perf_counter() - t0
    del doc_lists, tokenized
    report.add_value(
        "indexing from term ids",
        "bm25s numba backend, index(Tokenized ids)",
        peer_docs / bm_s,
        "docs/s",
        "one run; lists of ints built beforehand",
    )
    bm_np = bm25s.BM25(backend="numpy", **BM25_PARAMS)
    for attr in ("scores", "vocab_dict", "unique_token_ids_set", "nonoccurrence_array"):
        setattr(bm_np, attr, getattr(bm_nb, attr))
    if peer_docs != n_docs:
        core_peer = _core.SparseIndex(scoring="bm25", **BM25_PARAMS)
        core_peer.add(indptr[: peer_docs + 1], terms[: indptr[peer_docs]])
        report.note(
            f"bm25s indexes only the first {peer_docs:,} documents (--peer-docs); "
            "its QPS and agreement are against a fastrag index of the same subset"
        )
    else:
        core_peer = core

    q_lists = [q_terms[q_indptr[i] : q_indptr[i + 1]].tolist() for i in range(n_q)]
    empty = bm_nb.vocab_dict[""]  # bm25s's own empty token, for a query with no known term
    q_lists = [[t for t in q if t in bm_nb.unique_token_ids_set] or [empty] for q in q_lists]

    # Agreement.
    results = {
        a: core.search(q_indptr, q_terms, k=K, threads=1, algorithm=a)
        for a in ("auto", "exhaustive", "maxscore")
    }
    ms_frac, bad = agreement(*results["maxscore"], *results["exhaustive"], rtol=1e-6)
    report.note(
        f"fastrag maxscore vs exhaustive: {ms_frac:.4f} agree"
        + (f" (first disagreement: query {bad[0]})" if bad else "")
    )
    report.summary["maxscore_agreement_vs_exhaustive"] = round(ms_frac, 4)
    peer_results = core_peer.search(q_indptr, q_terms, k=K, threads=1)
    fracs = []
    for label, retriever in (("bm25s numpy", bm_np), ("bm25s numba", bm_nb)):
        res = bm25s_retrieve(retriever, q_lists)
        frac, bad = agreement(*peer_results, res.documents, res.scores)
        fracs.append(frac)
        report.note(
            f"top-10 agreement fastrag vs {label}: {frac:.4f} "
            + (f"(first disagreement: query {bad[0]})" if bad else "")
        )
    report.summary["top10_agreement"] = round(min(fracs), 4)

    # Query throughput.
    print("[synthetic] search timings", flush=True)
    cases: dict[str, Callable[[], object]] = {
        f"fastrag core, algorithm={a}": (
            lambda a=a: core.search(q_indptr, q_terms, k=K, threads=1, algorithm=a)
        )
        for a in ("auto", "exhaustive", "maxscore")
    }
    if peer_docs != n_docs:
        cases["fastrag core, auto, peer subset"] = lambda: core_peer.search(
            q_indptr, q_terms, k=K, threads=1
        )
    cases["bm25s numpy, term ids"] = lambda: bm25s_retrieve(bm_np, q_lists)
    cases["bm25s numba, term ids"] = lambda: bm25s_retrieve(bm_nb, q_lists)
    qps = report.add_rates(
        "top-10 QPS, 1 thread", "q/s", n_q, time_cases(cases, max(3, reps // 2), min_s)
    )
    cases2 = {
        "fastrag core, auto, threads=2": lambda: core.search(q_indptr, q_terms, k=K, threads=2),
        "bm25s numba, n_threads=2": lambda: bm25s_retrieve(bm_nb, q_lists, 2),
    }
    qps2 = report.add_rates(
        "top-10 QPS, 2 threads", "q/s", n_q, time_cases(cases2, max(3, reps // 2), min_s)
    )

    f_bytes, b_bytes = int(st["memory_bytes"]), bm25s_bytes(bm_nb)
    report.add_value("index memory", "fastrag stats()['memory_bytes']", f_bytes, "bytes")
    report.add_value(
        "index memory",
        "bm25s data + indices + indptr",
        b_bytes,
        "bytes",
        f"{peer_docs:,} docs" if peer_docs != n_docs else "",
    )

    peer_case = "auto, peer subset" if peer_docs != n_docs else "algorithm=auto"
    fr = f"fastrag core, {peer_case}"
    s = report.summary
    s["qps_ratio_vs_bm25s_numpy"] = paired_ratio(qps, fr, ["bm25s numpy, term ids"])
    s["qps_ratio_vs_bm25s_numba"] = paired_ratio(qps, fr, ["bm25s numba, term ids"])
    s["qps_2t_ratio_vs_bm25s_numba_2t"] = paired_ratio(
        qps2, "fastrag core, auto, threads=2", ["bm25s numba, n_threads=2"]
    )
    f_per_s = n_docs / float(np.median(f_rate["fastrag core add(indptr, term ids)"]))
    s["index_docs_per_s_ratio_vs_bm25s"] = ratio(f_per_s, peer_docs / bm_s)
    s["memory_ratio_vs_bm25s"] = ratio(b_bytes * n_docs / peer_docs, f_bytes)
    s["docs"] = n_docs
    return report


# ----------------------------------------------------------------------------- main
def bench_reorder(args: argparse.Namespace, res: Results) -> None:
    """`compact(reorder=True)` (recursive graph bisection) against the order documents came
    in: the saved postings' size and top-10 queries/s (auto algorithm, one thread, CPU time,
    best of 3, the two indexes interleaved) on cranfield, jsquad-valid and the synthetic
    Zipf corpus (100,000 documents with --quick)."""
    corpora: dict[str, tuple[list, list]] = {}
    for key, folder, analyzer in (("cranfield", "cranfield", fastrag.EnglishAnalyzer),
                                  ("jsquad", "jsquad-valid", fastrag.JapaneseAnalyzer)):
        if key not in args.skip and (args.data / folder).is_dir():
            _, texts, queries = load_beir(args.data / folder)
            a = analyzer()
            corpora[key] = (a.analyze_many(texts), a.analyze_many(queries))
    if "synthetic" not in args.skip:
        n = min(args.docs, 100_000)
        indptr, terms, q_indptr, q_terms, _ = make_synthetic(n, 1000, args.seed)
        corpora["zipf"] = ([terms[indptr[i] : indptr[i + 1]].astype(str).tolist()
                            for i in range(n)],
                           [q_terms[q_indptr[i] : q_indptr[i + 1]].astype(str).tolist()
                            for i in range(len(q_indptr) - 1)])
    for key, (docs, queries) in corpora.items():
        indexes, sizes = {}, {}
        for name in ("unordered", "reordered"):
            index = fastrag.BM25()
            index.add(docs, ids=list(range(len(docs))))
            t0 = time.perf_counter()
            if name == "reordered":
                index.compact(reorder=True)
                res.summary[f"reorder_s_{key}"] = round(time.perf_counter() - t0, 2)
            with tempfile.TemporaryDirectory(prefix="bench-bp-") as tmp:
                index.save(Path(tmp) / "x")
                sizes[name] = (Path(tmp) / "x").stat().st_size
            indexes[name] = index
        best = {name: float("inf") for name in indexes}
        for _ in range(3):
            for name, index in indexes.items():
                t0 = time.process_time()
                index.search(queries, k=10, threads=1)
                best[name] = min(best[name], time.process_time() - t0)
        res.summary[f"file_bytes_ratio_vs_unordered_{key}"] = round(
            sizes["reordered"] / sizes["unordered"], 3)
        res.summary[f"qps_ratio_vs_unordered_{key}"] = round(
            best["unordered"] / best["reordered"], 3)
        print(f"[reorder] {key}: {len(docs):,} documents, BP in "
              f"{res.summary[f'reorder_s_{key}']} s; file {sizes['unordered']:,} -> "
              f"{sizes['reordered']:,} bytes; top-10 q/s {len(queries) / best['unordered']:,.0f}"
              f" -> {len(queries) / best['reordered']:,.0f}", flush=True)


def main() -> None:
    global bm25s, tantivy
    ap = parser(__doc__, data=True)
    ap.add_argument(
        "--docs",
        type=int,
        default=None,
        help="synthetic corpus size (default 1,000,000; 100,000 with --quick; 2,000 with --smoke)",
    )
    ap.add_argument(
        "--peer-docs",
        type=int,
        default=0,
        help="index only this many synthetic documents in bm25s (0 = all)",
    )
    ap.add_argument("--repeat", type=int, default=None, help="timed samples per case")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["cranfield", "jsquad", "synthetic"],
        help="datasets to skip",
    )
    args = parse(ap)
    if args.docs is None:
        args.docs = {"smoke": 2_000, "quick": 100_000}.get(args.mode, 1_000_000)
    if args.repeat is None:
        args.repeat = {"smoke": 1, "quick": 3}.get(args.mode, 7)
    args.min_sample_s = {"smoke": 0.005, "quick": 0.02}.get(args.mode, 0.1)
    random.seed(args.seed)
    np.random.seed(args.seed)
    res = Results(__file__, args, peers=("bm25s", "numba", "PyStemmer", "sudachipy", "tantivy"))
    if args.smoke:
        res.skip("bm25s and tantivy (smoke mode: no peers)")
    else:
        bm25s = optional("bm25s", res, "the bm25s peer")
        tantivy = optional("tantivy", res, "the tantivy peer")

    reports: dict[str, Report] = {}
    plan = [
        ("cranfield", "cranfield", fastrag.EnglishAnalyzer, True),
        ("jsquad", "jsquad-valid", fastrag.JapaneseAnalyzer, False),
    ]
    for key, folder, analyzer, own in plan:
        if key in args.skip:
            continue
        r = bench_text(folder, args.data / folder, analyzer(), args, bm25s_own_tokenizer=own)
        if r:
            reports[key] = r
        else:
            res.skip(f"{folder}: {args.data / folder} not found")
    if "synthetic" not in args.skip:
        reports["synthetic"] = bench_synthetic(args)
    bench_reorder(args, res)

    print()
    for r in reports.values():
        print(r.table())
        print()
    for key, r in reports.items():
        for name, value in r.summary.items():
            res.summary[f"{name}_{key}"] = value
        res.summary.update(r.top)
        res.details[key] = {
            "rows": [
                {
                    "figure": row.figure,
                    "engine": row.engine,
                    "median": row.median,
                    "best": row.best,
                    "unit": row.unit,
                }
                for row in r.rows
            ],
            "notes": r.lines,
        }
    res.finish()


if __name__ == "__main__":
    main()
