"""End-to-end query latency of retrieval pipelines: fastrag's Collection against a peer built
from bm25s + hnswlib + sentence-transformers, one query at a time, in one process.

    python benchmarks/bench_pipeline.py            # full run (~5.5 min on 2 vCPUs)
    python benchmarks/bench_pipeline.py --quick    # cranfield (50 queries) + the native section
    python benchmarks/bench_pipeline.py --smoke    # tiny generated data, fastrag only
    # options: --json PATH, --skip-100k, --n-chunks N, --limit-queries N, --rounds R, --seed S,
    #          --data DIR

The native section (every mode): a generated collection of about 100,000 chunks (documents of
1 to 4 paragraphs, one chunk each; Gaussian-mixture vectors given through a lookup encoder),
200 queries with their vectors given. fastrag: `Collection.search(q, vector=v)` with BM25 and
dense legs at depth 100, RRF (k 60), max-chunk aggregation, top-10 (results read their texts
when first used: native_hybrid_p50_ms_fastrag_texts_read is the same with every text read);
peer: bm25s (numba) + hnswlib over the same chunks, RRF and max-chunk aggregation in Python.
Keys: hybrid_no_encoder_ratio_vs_peer (peer p50 / fastrag p50), python_overhead_us (fastrag
wall time minus the time inside the native call, p50: `_core.execute_one` for one query,
which also makes the (id, score, span) rows), bm25_collection_ratio_vs_index (bare
BM25 index p50 / `Collection.search(method="bm25")` p50 over 3 passes of the queries, the two
alternating query by query, the garbage collector paused), batch_speedup_2_threads (1,000
hybrid queries through `search_batch`, 1 thread / 2 threads, best of 3). The collection
has the default storage ("auto": at 100,000 chunks the graph is walked on int8 codes and the
beam rescored with the float vectors); beside it, the same hybrid on a collection with
`storage="float32"`: hybrid_no_encoder_ratio_vs_peer_float32; and the dense leg's
recall@100 against exact search for each (dense_recall100_fastrag, _float32, _peer: the query
vectors are random directions, far from every chunk, where HNSW finds half the true top-100
at ef 100 on both sides).

The legs section (not --smoke): `Collection.add` of 120 cranfield documents (600 in a full
run) with all-MiniLM-L6-v2 exported with attentions, dense-only against bm25 + dense + bm42 +
token vectors (legs_index_ratio_four_vs_dense) and that plus late chunking (..._five_...).

Pipelines (k = 10 documents, each returned with its text):

1. bm25: BM25 top-10.
2. dense: HNSW top-10 (M 16, ef_construction 200, ef 64; approximate search).
3. hybrid: BM25 top-100 + dense top-100, RRF (k = 60, weights 1 and 1), top-10.
4. hybrid+rescore: 3., then the best 50 fused candidates rescored by the cosine of the query
   with their stored vectors.

fastrag: `Pipeline(...).search(col, query, k=10, timings=t)` on a `Collection` built with
`add(texts, ids, vectors=...)` (one chunk per document); the single-leg pipelines use
`Retriever(method, depth=10)`, the hybrid ones `Retriever(method, weight=1.0)` (depth 100).
Peer: bm25s (numba backend when importable; `bm25s.tokenize` with its English stopwords and
PyStemmer), hnswlib (inner product on normalised vectors), sentence-transformers
all-MiniLM-L6-v2 for the query (`encode([q], normalize_embeddings=True)`), RRF in Python,
texts from a dict, rescoring with a numpy dot product over the stored vectors.

Each pipeline is timed per call: "enc" is the wall time of a call, text in, results with texts
out; "noenc" is that wall time minus the query-encoding part (fastrag: `timings["encode"]`;
peer: its `encode` call), so both sides exclude exactly the encoder. The bm25 pipeline encodes
nothing: its two figures differ only by noise. Threads: OMP/OpenBLAS/MKL 1,
torch.set_num_threads(1), TextEncoder(threads=1); single-query index searches. Builds use
both sides' defaults (fastrag's HNSW add and hnswlib's add_items on every core).

Timing: each side is warmed up on 10 queries per pipeline, then the queries run `--rounds`
times; within a round fastrag and the peer alternate query by query (who goes first alternates
too), so slow drifts of a shared machine hit both. The garbage collector is paused during
a round. p50 / p99 are over every timed call; q/s is 1 / mean latency; the ratio is peer p50
/ fastrag p50 (> 1: fastrag is faster).

Datasets: cranfield (document = title + " " + text, empty documents dropped, the 225 judged
queries) with all-MiniLM-L6-v2 document vectors from benchmarks/embeddings.py for both sides;
and a generated collection of `--n-chunks` documents (Zipf-distributed words over a vocabulary
of ~30,000: 42 English function words and made-up words; 60 to 120 words each), with seeded
Gaussian-mixture 384-d vectors, and 200 queries of 3 to 6 words sampled from random documents.
On the generated collection the query encoder's vectors are unrelated to the synthetic document
vectors: its dense and hybrid figures are latencies only.

Agreement (cranfield): mean top-10 overlap and share of identical top-10 sets per pipeline,
from the first timed round. The BM25 legs tokenize differently (bm25s's "en" stopword list is
shorter than fastrag's: "what", "must", "when", "can" stay), so the script also feeds a fastrag
BM25 index bm25s's own tokens and compares that with the peer's BM25 leg: the scorers agree.
In --smoke mode there is no peer: cranfield's stand-in is a tiny generated collection whose
document vectors come from fastrag's own encoder. The last line is a SUMMARY.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import sys  # noqa: E402
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
from fastrag.collection import Collection  # noqa: E402
from fastrag.eval import load_beir  # noqa: E402
from fastrag.search import DenseRescore, Pipeline, Retriever  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Results, optional, parse, parser  # noqa: E402
from embeddings import embeddings, minilm  # noqa: E402

# the peer's packages, imported in main() unless --smoke
bm25s: Any = None
hnswlib: Any = None
torch: Any = None

K = 10
DEPTH = 100
RRF_K = 60
RESCORE_DEPTH = 50
M, EF_CONSTRUCTION, EF = 16, 200, 64
BM25_PARAMS = {"method": "lucene", "k1": 1.5, "b": 0.75}
WARMUP = 10
BM25_ROUNDS = 3  # passes over the native section's queries for bm25_collection_ratio_vs_index
BATCH = 10_000
PIPELINES = ("bm25", "dense", "hybrid", "hybrid+rescore")
MODES = ("enc", "noenc")

# Call: query text -> (wall seconds, encode seconds, search seconds, result doc ids); "search"
# is fastrag's timings["search"] (the peer: wall - encode)
Call = Callable[[str], tuple[float, float, float, list[str]]]


# ----------------------------------------------------------------------------- fastrag side
def fastrag_pipelines() -> dict[str, Pipeline]:
    hybrid = [
        Retriever("bm25", depth=DEPTH, weight=1.0),
        Retriever("dense", depth=DEPTH, weight=1.0),
    ]
    rrf = {"fusion": "rrf", "fusion_options": {"k": RRF_K}}
    return {
        "bm25": Pipeline([Retriever("bm25", depth=K)]),
        "dense": Pipeline([Retriever("dense", depth=K)]),
        "hybrid": Pipeline(hybrid, **rrf),
        "hybrid+rescore": Pipeline(hybrid, rerankers=[(DenseRescore(), RESCORE_DEPTH)], **rrf),
    }


def fastrag_build(
    folder: Path,
    encoder: fastrag.TextEncoder,
    ids: list[str],
    texts: list[str],
    vectors: np.ndarray,
) -> tuple[Collection, float]:
    """A committed collection of one chunk per document (as the peer embeds whole documents,
    truncated to the model's window), and the seconds it took."""
    t0 = time.perf_counter()
    col = Collection.create(folder, encoder=encoder, chunk_chars=100_000, chunk_tokens=None)
    for s in range(0, len(texts), BATCH):
        col.add(texts[s : s + BATCH], ids=ids[s : s + BATCH], vectors=vectors[s : s + BATCH])
    col.commit()
    return col, time.perf_counter() - t0


def fastrag_call(col: Collection, pipeline: Pipeline) -> Call:
    def call(query: str) -> tuple[float, float, float, list[str]]:
        t: dict[str, float] = {}
        t0 = time.perf_counter()
        results = pipeline.search(col, query, k=K, timings=t)
        wall = time.perf_counter() - t0
        return wall, t.get("encode", 0.0), t.get("search", wall), [r.id for r in results]

    return call


# ----------------------------------------------------------------------------- peer side
@dataclass
class Peer:
    """bm25s + hnswlib + sentence-transformers, glued together in plain Python."""

    ids: list[str]
    docs: dict[str, str]
    vectors: np.ndarray
    bm25: Any
    hnsw: Any
    stemmer: Any
    model: Any
    build: dict[str, float] = field(default_factory=dict)

    @classmethod
    def create(
        cls, ids: list[str], texts: list[str], vectors: np.ndarray, model: Any, backend: str
    ) -> Peer:
        stemmer = Stemmer.Stemmer("english")
        t0 = time.perf_counter()
        tokens = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)
        bm = bm25s.BM25(backend=backend, **BM25_PARAMS)
        bm.index(tokens, show_progress=False)
        t1 = time.perf_counter()
        hnsw = hnswlib.Index(space="ip", dim=vectors.shape[1])
        hnsw.init_index(
            max_elements=len(vectors), M=M, ef_construction=EF_CONSTRUCTION, random_seed=100
        )
        hnsw.add_items(vectors, np.arange(len(vectors)), num_threads=-1)
        hnsw.set_ef(EF)
        t2 = time.perf_counter()
        docs = dict(zip(ids, texts, strict=True))
        t3 = time.perf_counter()
        build = {"bm25": t1 - t0, "hnsw": t2 - t1, "total": t3 - t0}
        return cls(list(ids), docs, vectors, bm, hnsw, stemmer, model, build)

    def encode(self, query: str) -> np.ndarray:
        return self.model.encode([query], normalize_embeddings=True, convert_to_numpy=True)[0]

    def bm25_leg(self, query: str, k: int) -> list[tuple[int, float]]:
        tokens = bm25s.tokenize(
            [query], stopwords="en", stemmer=self.stemmer, show_progress=False, return_ids=False
        )
        if not tokens[0]:  # only stopwords: bm25s refuses an empty query
            return []
        res = self.bm25.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return [
            (int(d), float(s))
            for d, s in zip(res.documents[0], res.scores[0], strict=True)
            if s > 0  # bm25s fills the list with documents of score 0
        ]

    def dense_leg(self, qvec: np.ndarray, k: int) -> list[tuple[int, float]]:
        labels, dists = self.hnsw.knn_query(qvec, k=k)
        return [(int(d), 1.0 - float(s)) for d, s in zip(labels[0], dists[0], strict=True)]

    @staticmethod
    def rrf(legs: Sequence[list[tuple[int, float]]]) -> list[tuple[int, float]]:
        fused: dict[int, float] = {}
        for leg in legs:
            for rank, (d, _) in enumerate(leg, 1):
                fused[d] = fused.get(d, 0.0) + 1.0 / (RRF_K + rank)
        return sorted(fused.items(), key=lambda ds: -ds[1])  # stable: ties keep first sight

    def rescore(self, qvec: np.ndarray, ranked: list[tuple[int, float]]) -> list[tuple[int, float]]:
        head = ranked[:RESCORE_DEPTH]
        rows = np.fromiter((d for d, _ in head), dtype=np.int64, count=len(head))
        scores = self.vectors[rows] @ qvec
        order = np.argsort(-scores, kind="stable")
        return [(int(rows[i]), float(scores[i])) for i in order] + ranked[RESCORE_DEPTH:]

    def results(self, ranked: list[tuple[int, float]]) -> list[tuple[str, float, str]]:
        out = []
        for d, s in ranked[:K]:
            doc_id = self.ids[d]
            out.append((doc_id, s, self.docs[doc_id]))
        return out

    def call(self, pipeline: str) -> Call:
        def call(query: str) -> tuple[float, float, float, list[str]]:
            t0 = time.perf_counter()
            qvec = None if pipeline == "bm25" else self.encode(query)
            t1 = time.perf_counter()
            if pipeline == "bm25":
                ranked = self.bm25_leg(query, K)
            elif pipeline == "dense":
                ranked = self.dense_leg(qvec, K)
            else:
                ranked = self.rrf([self.bm25_leg(query, DEPTH), self.dense_leg(qvec, DEPTH)])
                if pipeline == "hybrid+rescore":
                    ranked = self.rescore(qvec, ranked)
            results = self.results(ranked)
            wall = time.perf_counter() - t0
            return wall, t1 - t0, wall - (t1 - t0), [r[0] for r in results]

        return call


# ----------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Per-call seconds of one pipeline on one side, and the result ids of the first round."""

    enc: list[float] = field(default_factory=list)
    noenc: list[float] = field(default_factory=list)
    search: list[float] = field(default_factory=list)
    ids: list[list[str]] = field(default_factory=list)

    def stats(self, mode: str) -> dict[str, float]:
        ms = np.asarray(getattr(self, mode)) * 1e3
        return {
            "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)),
            "qps": float(1e3 / ms.mean()),
        }


def measure(calls: dict[str, Call], queries: list[str], rounds: int) -> dict[str, Timing]:
    """Warm-up, then `rounds` passes over the queries, the sides alternating per query."""
    for fn in calls.values():
        for q in queries[:WARMUP]:
            fn(q)
    names = list(calls)
    out = {name: Timing() for name in names}
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            for i, q in enumerate(queries):
                shift = (i + r) % len(names)
                for name in names[shift:] + names[:shift]:
                    wall, enc, search, ids = calls[name](q)
                    t = out[name]
                    t.enc.append(wall)
                    t.noenc.append(wall - enc)
                    t.search.append(search)
                    if r == 0:
                        t.ids.append(ids)
            gc.collect()
    finally:
        gc.enable()
    return out


def same_token_bm25(peer: Peer, texts: list[str], queries: list[str]) -> tuple[float, float]:
    """Top-10 overlap of the peer's BM25 leg with a fastrag BM25 index fed bm25s's tokens.

    The pipelines' BM25 legs differ by their analyzers (fastrag's English stopword list is
    longer than bm25s's); on the same tokens the two scorers should agree up to ties.
    """
    tokenize = {"stopwords": "en", "stemmer": peer.stemmer, "show_progress": False}
    docs = bm25s.tokenize(texts, return_ids=False, **tokenize)
    index = fastrag.BM25(**BM25_PARAMS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastrag.EmptyDocumentWarning)
        index.add([list(d) for d in docs], ids=list(range(len(docs))))
    ours, theirs = [], []
    for q in queries:
        (tokens,) = bm25s.tokenize([q], return_ids=False, **tokenize)
        hits = index.search([list(tokens)], k=K, threads=1)[0] if tokens else []
        ours.append([str(h.id) for h in hits])
        theirs.append([str(d) for d, _ in peer.bm25_leg(q, K)])
    return overlap(ours, theirs)


def overlap(a: list[list[str]], b: list[list[str]]) -> tuple[float, float]:
    """Mean |A & B| / 10 over queries, and the share of queries with the same top-10 set."""
    inter = [len(set(x) & set(y)) / K for x, y in zip(a, b, strict=True)]
    same = [set(x) == set(y) for x, y in zip(a, b, strict=True)]
    return round(float(np.mean(inter)), 4), round(float(np.mean(same)), 4)


# ----------------------------------------------------------------------------- datasets
_FUNCTION = (
    "the of and to in a is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when"
)
_ONSETS = "b c d f g h j k l m n p r s t v w z br cr dr fr gr pr tr st sp sl pl cl bl gl sh ch th"
FUNCTION_WORDS = _FUNCTION.split()
ONSETS = _ONSETS.split()
VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io"]
CODAS = ["", "", "n", "r", "s", "l", "t", "m", "nd", "st", "rk"]


def synthetic_vocabulary(rng: np.random.Generator, size: int) -> list[str]:
    """Function words first (the most frequent), then made-up words of 1 to 3 syllables."""
    words = dict.fromkeys(FUNCTION_WORDS)
    while len(words) < size:
        n = int(rng.integers(1, 4))
        syl = "".join(
            ONSETS[rng.integers(len(ONSETS))] + VOWELS[rng.integers(len(VOWELS))] for _ in range(n)
        )
        words.setdefault(syl + CODAS[rng.integers(len(CODAS))], None)
    return list(words)


def synthetic(
    n: int, n_queries: int, seed: int, dim: int = 384, words: tuple[int, int] = (60, 121)
) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """(ids, texts, unit vectors (n, dim) float32, queries) of a seeded generated collection."""
    rng = np.random.default_rng(seed)
    vocab = synthetic_vocabulary(rng, 30_000)
    ranks = np.arange(1, len(vocab) + 1, dtype=np.float64)
    p = 1.0 / (ranks + 2.7) ** 1.07  # Zipf-Mandelbrot, close to English word frequencies
    cdf = np.cumsum(p / p.sum())
    lengths = rng.integers(words[0], words[1], n)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    words = np.minimum(np.searchsorted(cdf, rng.random(int(bounds[-1]))), len(vocab) - 1)
    texts = []
    for i in range(n):
        w = [vocab[j] for j in words[bounds[i] : bounds[i + 1]].tolist()]
        w[0] = w[0].capitalize()
        texts.append(" ".join(w) + ".")
    ids = [f"doc{i}" for i in range(n)]
    centres = rng.standard_normal((1000, dim), dtype=np.float32)
    vectors = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 20_000):
        m = min(n, s + 20_000) - s
        noise = rng.standard_normal((m, dim), dtype=np.float32)
        block = centres[rng.integers(0, 1000, m)] + 0.6 * noise
        vectors[s : s + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    stop = set(FUNCTION_WORDS)
    queries = []
    for _ in range(n_queries):
        d = int(rng.integers(n))
        doc = np.unique(words[bounds[d] : bounds[d + 1]])
        content = [vocab[j] for j in doc.tolist() if vocab[j] not in stop]
        size = min(len(content), int(rng.integers(3, 7)))
        pick = rng.choice(len(content), size=size, replace=False)
        queries.append(" ".join(content[j] for j in pick))
    return ids, texts, vectors, queries


def cranfield(
    data: Path, encoder: fastrag.TextEncoder | None = None
) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """(ids, texts, MiniLM document vectors, judged queries), empty documents dropped.

    The vectors come from the peer (sentence-transformers, cached), or from `encoder` if given.
    """
    ds = load_beir(data / "cranfield")
    ids, texts = ds.documents()
    _, queries = ds.judged_queries()
    keep = [i for i, t in enumerate(texts) if t.strip()]
    ids, texts = [ids[i] for i in keep], [texts[i] for i in keep]
    if encoder is not None:
        return ids, texts, encoder.encode_documents(texts), queries
    emb = embeddings("cranfield", data)
    if [emb["doc_ids"][i] for i in keep] != ids:
        raise SystemExit("cached cranfield embeddings do not match the corpus: delete the cache")
    vectors = np.ascontiguousarray(np.asarray(emb["doc_vectors"], dtype=np.float32)[keep])
    return ids, texts, vectors, queries


# ----------------------------------------------------------------------------- one dataset
@dataclass
class Report:
    name: str
    label: str
    description: str
    times: dict[str, dict[str, Timing]] = field(default_factory=dict)  # pipeline -> side -> ..
    lines: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def note(self, line: str) -> None:
        print(f"  {line}", flush=True)
        self.lines.append(line)

    def tables(self) -> str:
        out = [f"### {self.name}", "", self.description, ""]
        for mode in MODES:
            title = "query encoding included" if mode == "enc" else "query encoding excluded"
            out += [
                f"{title} (ms per query; q/s = 1 / mean latency)",
                "",
                "| pipeline | fastrag p50 | p99 | q/s | peer p50 | p99 | q/s | peer/fastrag p50 |",
                "|---|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for pipe in PIPELINES:
                f = self.times[pipe]["fastrag"].stats(mode)
                if "peer" not in self.times[pipe]:
                    out.append(
                        f"| {pipe} | {f['p50']:.3f} | {f['p99']:.3f} | {f['qps']:,.0f} | "
                        "- | - | - | - |"
                    )
                    continue
                p = self.times[pipe]["peer"].stats(mode)
                out.append(
                    f"| {pipe} | {f['p50']:.3f} | {f['p99']:.3f} | {f['qps']:,.0f} | "
                    f"{p['p50']:.3f} | {p['p99']:.3f} | {p['qps']:,.0f} | "
                    f"{p['p50'] / f['p50']:.2f} |"
                )
            out.append("")
        out += [f"- {line}" for line in self.lines]
        return "\n".join(out)

    def summarize(self) -> None:
        for pipe in PIPELINES:
            key = pipe.replace("+", "_")
            for mode in MODES:
                sides = {side: t.stats(mode) for side, t in self.times[pipe].items()}
                suffix = f"{key}_{self.label}_{mode}"
                if "peer" in sides:
                    self.summary[f"p50_{key}_{mode}_ratio_vs_peer_{self.label}"] = round(
                        sides["peer"]["p50"] / sides["fastrag"]["p50"], 3
                    )
                for side, st in sides.items():
                    self.summary[f"{side}_p50_ms_{suffix}"] = round(st["p50"], 4)
                    self.summary[f"{side}_p99_ms_{suffix}"] = round(st["p99"], 4)

    def distributions(self) -> dict[str, Any]:
        """Latency percentiles 0..100 (ms) per pipeline, side and mode: the plots' data."""
        pct = np.arange(0, 101)
        return {
            pipe: {
                side: {
                    mode: np.round(np.percentile(np.asarray(getattr(t, mode)) * 1e3, pct), 4)
                    for mode in MODES
                }
                for side, t in sides.items()
            }
            for pipe, sides in self.times.items()
        }


def bench(
    name: str,
    label: str,
    data: tuple[list[str], list[str], np.ndarray, list[str]],
    encoder: fastrag.TextEncoder,
    model: Any,
    backend: str,
    args: argparse.Namespace,
    agreement: bool,
) -> Report:
    ids, texts, vectors, queries = data
    if args.limit_queries:
        queries = queries[: args.limit_queries]
    words = np.mean([len(t.split()) for t in texts])
    report = Report(
        name,
        label,
        f"{len(texts):,} documents (one chunk each, {words:.0f} words on average), "
        f"{len(queries):,} queries x {args.rounds} rounds, top-{K}.",
    )
    print(f"[{name}] {len(texts):,} documents, {len(queries):,} queries", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        gc.collect()
        col, f_build = fastrag_build(Path(tmp) / "col", encoder, ids, texts, vectors)
        gc.collect()
        report.summary[f"build_s_fastrag_{label}"] = round(f_build, 2)
        peer = None
        if model is not None:
            peer = Peer.create(ids, texts, vectors, model, backend)
            report.note(
                f"build: fastrag Collection.add(vectors=) in batches of {BATCH:,} + commit "
                f"{f_build:.1f} s; peer {peer.build['total']:.1f} s (bm25s tokenize + index "
                f"{peer.build['bm25']:.1f} s, hnswlib add_items {peer.build['hnsw']:.1f} s); "
                "fastrag's figure includes SQLite and writing the index files"
            )
            report.summary[f"build_s_peer_{label}"] = round(peer.build["total"], 2)
        pipes = fastrag_pipelines()
        for pipe in PIPELINES:
            print(f"[{name}] timing {pipe}", flush=True)
            calls = {"fastrag": fastrag_call(col, pipes[pipe])}
            if peer is not None:
                calls["peer"] = peer.call(pipe)
            report.times[pipe] = measure(calls, queries, args.rounds)
        searches = ", ".join(
            f"{pipe} {report.times[pipe]['fastrag'].stats('search')['p50']:.3f}"
            for pipe in PIPELINES
        )
        report.note(
            f"fastrag timings['search'] p50 (ms): {searches}; the noenc columns (wall - encode) "
            "also hold input checks and making the Result objects"
        )
        # fastrag's default single-leg pipelines retrieve 100 chunks for k = 10 (grouping)
        extra = {}
        for method in ("bm25", "dense"):
            default = Pipeline([Retriever(method)])
            t = measure({"x": fastrag_call(col, default)}, queries, 1)["x"]
            extra[method] = t.stats("enc")["p50"]
        report.note(
            "for reference, fastrag's default single-leg pipelines (depth 100, as "
            f"col.search(q, method=...)), p50 with encoding: bm25 {extra['bm25']:.3f} ms, "
            f"dense {extra['dense']:.3f} ms"
        )
        for pipe in PIPELINES if peer is not None else ():
            f, p = report.times[pipe]["fastrag"].ids, report.times[pipe]["peer"].ids
            mean, same = overlap(f, p)
            key = pipe.replace("+", "_")
            if agreement:
                report.note(
                    f"agreement {pipe}: mean top-{K} overlap {mean:.3f}, identical top-{K} "
                    f"sets {same:.3f} of queries"
                )
            report.summary[f"overlap10_{key}_{label}"] = mean
            report.summary[f"identical10_{key}_{label}"] = same
        if agreement and peer is not None:
            mean, same = same_token_bm25(peer, texts, queries)
            report.note(
                f"agreement bm25 on the same tokens (fastrag BM25 index fed bm25s.tokenize "
                f"output): mean top-{K} overlap {mean:.3f}, identical top-{K} sets {same:.3f}"
            )
            report.summary[f"overlap10_bm25_same_tokens_{label}"] = mean
            report.summary[f"identical10_bm25_same_tokens_{label}"] = same
        col.close()
    report.summarize()
    return report


# ----------------------------------------------------------------------------- native path
class LookupEncoder(fastrag.Encoder):
    """Gives each text the vector generated for it (the benchmark's stand-in encoder: the
    generated collection's vectors are Gaussian-mixture points, not a model's)."""

    def __init__(self, table: dict[str, np.ndarray], dim: int) -> None:
        self.table, self.dim, self.name = table, dim, "lookup"

    @property
    def fingerprint(self) -> str:
        return f"lookup-{self.dim}"

    def _embed(self, texts: list[str], kind: Any, batch_size: int) -> np.ndarray:
        return np.stack([self.vector(t) for t in texts])

    def vector(self, text: str) -> np.ndarray:
        """The text's generated vector; a text that is not one paragraph (a rare paragraph
        the chunker split) gets a seeded random one, the same every time."""
        found = self.table.get(text)
        if found is None:
            seed = int.from_bytes(text.encode()[:8].ljust(8, b"\0"), "little") ^ len(text)
            found = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            self.table[text] = found = found / np.linalg.norm(found)
        return found


def chunked_corpus(n_chunks: int, seed: int) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """Documents of 1 to 4 paragraphs (about n_chunks paragraphs in all); each paragraph is
    one chunk at chunk_chars 1,000 (95-135 words: two never fit together, one always fits).
    Returns (doc ids, doc texts, one vector per paragraph in order, queries)."""
    _, paras, vectors, queries = synthetic(n_chunks, 200, seed, words=(95, 126))
    rng = np.random.default_rng(seed + 1)
    ids, texts, i = [], [], 0
    while i < len(paras):
        n = int(rng.integers(1, 5))
        texts.append("\n\n".join(paras[i : i + n]))
        ids.append(f"doc{len(ids)}")
        i += n
    return ids, texts, vectors, queries


def bench_native(args: argparse.Namespace, res: Results, backend: str, peer_ok: bool) -> None:
    """The query path without the encoder (query vectors given) on a generated collection of
    many chunks per document: fastrag's Collection (one native call per query) against bm25s +
    hnswlib + RRF + max-chunk aggregation in plain Python; BM25 through the collection against
    the bare index; the Python overhead around the native call; a batch on 1 and 2 threads."""
    n = {"smoke": 2_000}.get(args.mode, 100_000)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        doc_ids, texts, vectors, queries = chunked_corpus(n, args.seed)
    queries = queries[: {"smoke": 20, "quick": 200}.get(args.mode, 200)]
    print(f"[native] {len(texts):,} documents generated in {time.perf_counter() - t0:.1f} s",
          flush=True)
    paras = [p for t in texts for p in t.split("\n\n")]
    encoder = LookupEncoder(dict(zip(paras, vectors, strict=True)), vectors.shape[1])
    qvecs = np.random.default_rng(args.seed + 2).standard_normal(
        (len(queries), vectors.shape[1])).astype(np.float32)
    qvecs /= np.linalg.norm(qvecs, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory(prefix="bench-native-") as tmp:
        t0 = time.perf_counter()
        col = Collection.create(Path(tmp) / "c", encoder=encoder, chunk_chars=1000)
        for s in range(0, len(texts), BATCH):
            col.add(texts[s : s + BATCH], ids=doc_ids[s : s + BATCH])
        col.commit()  # searched as users search: committed (not inside a write transaction)
        build = time.perf_counter() - t0
        table = col.chunk_table()
        chunks = sorted(table.hits.items())
        chunk_texts = [texts[int(h.doc[3:])][h.start : h.end] for _, h in chunks]
        chunk_doc = [h.doc for _, h in chunks]
        res.summary["native_n_chunks"] = len(chunks)
        res.summary["native_build_s_fastrag"] = round(build, 2)
        print(f"[native] {len(chunks):,} chunks; fastrag build {build:.1f} s", flush=True)
        hybrid = Pipeline([Retriever("bm25", depth=DEPTH, weight=1.0),
                           Retriever("dense", depth=DEPTH, weight=1.0)],
                          fusion="rrf", fusion_options={"k": RRF_K})
        texts_by_id = dict(zip(doc_ids, texts, strict=True))

        # fastrag: col.search with the query vector; time inside the native call recorded
        inside: list[float] = []
        native_calls = {name: getattr(fastrag._core, name) for name in ("execute", "execute_one")}

        def timed(call: Callable[..., Any]) -> Callable[..., Any]:
            def run(*a: Any, **kw: Any) -> Any:
                t = time.perf_counter()
                out = call(*a, **kw)
                inside.append(time.perf_counter() - t)
                return out
            return run

        def ours(i: int) -> list[str]:
            return [r.id for r in col.search(queries[i], k=K, method=hybrid, vector=qvecs[i])]

        # the same collection with float32 vectors walked (the storage before "auto")
        t0 = time.perf_counter()
        col32 = Collection.create(Path(tmp) / "c32", encoder=encoder, chunk_chars=1000,
                                  storage="float32")
        for s in range(0, len(texts), BATCH):
            col32.add(texts[s : s + BATCH], ids=doc_ids[s : s + BATCH])
        col32.commit()
        res.summary["native_build_s_fastrag_float32"] = round(time.perf_counter() - t0, 2)

        def ours32(i: int) -> list[str]:
            return [r.id for r in col32.search(queries[i], k=K, method=hybrid, vector=qvecs[i])]

        calls: dict[str, Callable[[int], list[str]]] = {"fastrag": ours,
                                                        "fastrag_float32": ours32}
        if peer_ok:
            peer_bm25 = bm25s.BM25(backend=backend, **BM25_PARAMS)
            stemmer = Stemmer.Stemmer("english")
            t0 = time.perf_counter()
            peer_bm25.index(bm25s.tokenize(chunk_texts, stopwords="en", stemmer=stemmer,
                                           show_progress=False), show_progress=False)
            hnsw = hnswlib.Index(space="ip", dim=vectors.shape[1])
            hnsw.init_index(max_elements=len(chunks), M=M, ef_construction=EF_CONSTRUCTION,
                            random_seed=100)
            hnsw.add_items(np.stack([encoder.vector(t) for t in chunk_texts]),
                           np.arange(len(chunks)), num_threads=-1)
            hnsw.set_ef(EF)
            res.summary["native_build_s_peer"] = round(time.perf_counter() - t0, 2)
            # the dense legs' recall@100 against exact search over the chunk vectors
            chunk_vecs = np.stack([encoder.vector(t) for t in chunk_texts])
            exact = np.argsort(-(qvecs @ chunk_vecs.T), axis=1)[:, :DEPTH]
            position = {c: i for i, (c, _) in enumerate(chunks)}

            def recall(found: list[list[int]]) -> float:
                return round(float(np.mean([len(set(f) & set(e.tolist())) / DEPTH
                                            for f, e in zip(found, exact, strict=True)])), 3)

            for key, c in (("fastrag", col), ("fastrag_float32", col32)):
                found = c.index("dense").search(qvecs, k=DEPTH, threads=1).ids
                res.summary[f"dense_recall100_{key}"] = recall(
                    [[position[int(x)] for x in row if x is not None] for row in found])
            res.summary["dense_recall100_peer"] = recall(
                hnsw.knn_query(qvecs, k=DEPTH)[0].tolist())
            doc_of = np.array([int(d[3:]) for d in chunk_doc], dtype=np.int64)

            def peer(i: int) -> list[str]:
                tokens = bm25s.tokenize([queries[i]], stopwords="en", stemmer=stemmer,
                                        show_progress=False, return_ids=False)
                legs = []
                if tokens[0]:
                    r = peer_bm25.retrieve(tokens, k=DEPTH, show_progress=False, n_threads=1)
                    legs.append([int(d) for d, sc in zip(r.documents[0], r.scores[0],
                                                         strict=True) if sc > 0])
                labels, _ = hnsw.knn_query(qvecs[i], k=DEPTH)
                legs.append(labels[0].tolist())
                fused: dict[int, float] = {}
                for leg in legs:
                    for rank, c in enumerate(leg, 1):
                        fused[c] = fused.get(c, 0.0) + 1.0 / (RRF_K + rank)
                order = sorted(fused.items(), key=lambda cs: -cs[1])
                best: dict[int, float] = {}  # a document scores as its best chunk
                for c, sc in order:
                    best.setdefault(int(doc_of[c]), sc)
                    if len(best) == K:
                        break
                return [f"doc{d}" for d in best if texts_by_id[f"doc{d}"]]

            calls["peer"] = peer
        for name, call in native_calls.items():
            setattr(fastrag._core, name, timed(call))
        try:
            for fn in calls.values():
                for i in range(WARMUP):
                    fn(i)
            times: dict[str, list[float]] = {name: [] for name in calls}
            walls: list[float] = []
            inside_fastrag: list[float] = []
            gc.collect()
            gc.disable()
            try:
                for i in range(len(queries)):
                    for name in (list(calls) if i % 2 else list(calls)[::-1]):
                        t = time.perf_counter()
                        calls[name](i)
                        times[name].append(time.perf_counter() - t)
                        if name == "fastrag":  # its wall time and the native call's inside it
                            walls.append(times[name][-1])
                            inside_fastrag.append(inside[-1])
            finally:
                gc.enable()
        finally:
            for name, call in native_calls.items():
                setattr(fastrag._core, name, call)
        p50 = {name: float(np.median(v)) * 1e3 for name, v in times.items()}
        overhead = float(np.median(np.array(walls) - np.array(inside_fastrag))) * 1e6
        res.summary["native_hybrid_p50_ms_fastrag"] = round(p50["fastrag"], 4)
        res.summary["python_overhead_us"] = round(overhead, 1)
        line = f"hybrid with the query vector given: fastrag p50 {p50['fastrag']:.3f} ms"
        if "peer" in p50:
            res.summary["native_hybrid_p50_ms_peer"] = round(p50["peer"], 4)
            res.summary["hybrid_no_encoder_ratio_vs_peer"] = round(p50["peer"] / p50["fastrag"],
                                                                   3)
            res.summary["native_hybrid_p50_ms_fastrag_float32"] = round(
                p50["fastrag_float32"], 4)
            res.summary["hybrid_no_encoder_ratio_vs_peer_float32"] = round(
                p50["peer"] / p50["fastrag_float32"], 3)
            line += (f", peer {p50['peer']:.3f} ms ({p50['peer'] / p50['fastrag']:.2f}x); "
                     f"float32 storage {p50['fastrag_float32']:.3f} ms "
                     f"({p50['peer'] / p50['fastrag_float32']:.2f}x)")
        print(f"[native] {line}; Python around the native call {overhead:.0f} us", flush=True)

        # the same with every hit's text read (results read theirs when first used; the
        # peer's texts are str objects in a dict already)
        def with_texts(i: int) -> int:
            return sum(len(r.text) for r in col.search(queries[i], k=K, method=hybrid,
                                                        vector=qvecs[i]))

        texts_times = []
        for i in range(len(queries)):
            t = time.perf_counter()
            with_texts(i)
            texts_times.append(time.perf_counter() - t)
        p50_texts = float(np.median(texts_times)) * 1e3
        res.summary["native_hybrid_p50_ms_fastrag_texts_read"] = round(p50_texts, 4)
        print(f"[native] fastrag with every hit's text read: p50 {p50_texts:.3f} ms", flush=True)

        # BM25 through the collection against the bare index (both top-10, same thread)
        bm25_index = col.bm25
        cases = {
            "index": lambda q: bm25_index.search(q, k=K, threads=1),  # type: ignore[union-attr]
            "collection": lambda q: col.search(q, k=K, method="bm25"),
        }
        bm: dict[str, list[float]] = {name: [] for name in cases}
        for fn in cases.values():
            for q in queries[:WARMUP]:
                fn(q)
        # BM25_ROUNDS passes, the two alternating query by query (who goes first alternates,
        # also from one pass to the next), the garbage collector paused as in `measure`
        gc.collect()
        gc.disable()
        try:
            for r in range(BM25_ROUNDS):
                for i, q in enumerate(queries):
                    for name in (list(cases) if (i + r) % 2 else list(cases)[::-1]):
                        t = time.perf_counter()
                        cases[name](q)
                        bm[name].append(time.perf_counter() - t)
        finally:
            gc.enable()
        ratio = float(np.median(bm["index"]) / np.median(bm["collection"]))
        res.summary["bm25_collection_ratio_vs_index"] = round(ratio, 3)
        print(f"[native] BM25 p50: index {np.median(bm['index']) * 1e3:.3f} ms, collection "
              f"{np.median(bm['collection']) * 1e3:.3f} ms ({ratio:.2f})", flush=True)

        # a batch of 1,000 hybrid queries on 1 and 2 threads (best of 3)
        reps = 1000 // len(queries) + 1
        bq = (queries * reps)[:1000]
        bv = np.ascontiguousarray(np.tile(qvecs, (reps, 1))[:1000])
        batch = {}
        for threads in (1, 2):
            col.search_batch(bq[:50], k=K, method=hybrid, vectors=bv[:50], threads=threads)
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                col.search_batch(bq, k=K, method=hybrid, vectors=bv, threads=threads)
                best = min(best, time.perf_counter() - t)
            batch[threads] = best
        res.summary["batch_qps_1_thread"] = round(1000 / batch[1], 1)
        res.summary["batch_qps_2_threads"] = round(1000 / batch[2], 1)
        res.summary["batch_speedup_2_threads"] = round(batch[1] / batch[2], 3)
        print(f"[native] 1,000 hybrid queries: {1000 / batch[1]:,.0f} q/s on 1 thread, "
              f"{1000 / batch[2]:,.0f} on 2 ({batch[1] / batch[2]:.2f}x)", flush=True)
        res.details["native"] = {"p50_ms": p50, "bm25_ms": {k: float(np.median(v)) * 1e3
                                                          for k, v in bm.items()},
                                 "batch_s": batch}
        col.close()
        col32.close()


# ----------------------------------------------------------------------------- legs
def bench_legs(args: argparse.Namespace, res: Results) -> None:
    """Indexing time of a collection with more legs against a dense-only one, on the same
    cranfield documents: bm25 + dense + bm42 + token vectors (one encoder pass per chunk
    batch feeds all three model outputs), and that plus late chunking (a document pass)."""
    if args.mode == "smoke" or not (args.data / "cranfield").is_dir():
        res.skip("legs: smoke mode or no cranfield")
        return
    ids, texts = load_beir(args.data / "cranfield").documents()
    keep = [i for i, t in enumerate(texts) if t.strip()][: 120 if args.mode == "quick" else 600]
    ids, texts = [ids[i] for i in keep], [texts[i] for i in keep]
    encoder = fastrag.TextEncoder(attentions=True)
    configs = {
        "dense": {},
        "four": {"sparse": "bm42", "token_vectors": True},
        "five": {"sparse": "bm42", "token_vectors": True, "late_chunking": True},
    }
    best = {name: float("inf") for name in configs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(2):
            for name, options in configs.items():
                with tempfile.TemporaryDirectory(prefix="bench-legs-") as tmp:
                    col = Collection.create(Path(tmp) / "c", encoder=encoder, **options)
                    t0 = time.perf_counter()
                    col.add(texts, ids=ids)
                    best[name] = min(best[name], time.perf_counter() - t0)
                    col.close()
    res.summary["legs_index_s_dense"] = round(best["dense"], 2)
    res.summary["legs_index_ratio_four_vs_dense"] = round(best["four"] / best["dense"], 3)
    res.summary["legs_index_ratio_five_vs_dense"] = round(best["five"] / best["dense"], 3)
    print(f"[legs] {len(texts)} documents: dense-only {best['dense']:.1f} s; bm25 + dense + "
          f"bm42 + token vectors {best['four']:.1f} s ({best['four'] / best['dense']:.2f}x); "
          f"+ late chunking {best['five']:.1f} s ({best['five'] / best['dense']:.2f}x)",
          flush=True)


# ----------------------------------------------------------------------------- main
def main() -> None:
    global bm25s, hnswlib, torch
    parser_ = parser(__doc__, data=True)
    parser_.add_argument("--n-chunks", type=int, default=None,
                         help="generated collection size (100,000; --quick 10,000)")
    parser_.add_argument("--skip-100k", action="store_true", help="cranfield only")
    parser_.add_argument("--limit-queries", type=int, default=None,
                         help="at most N queries per set")
    parser_.add_argument("--rounds", type=int, default=None, help="timed passes over the queries")
    parser_.add_argument("--seed", type=int, default=0)
    args = parse(parser_)
    n_chunks, limit, rounds = {"smoke": (300, 8, 1), "quick": (10_000, 50, 1)}.get(
        args.mode, (100_000, 0, 2)
    )
    args.n_chunks = args.n_chunks or n_chunks
    args.limit_queries = args.limit_queries if args.limit_queries is not None else limit
    args.rounds = args.rounds or rounds
    res = Results(
        __file__, args,
        peers=("bm25s", "numba", "hnswlib", "sentence-transformers", "torch", "PyStemmer"),
    )
    backend = "numpy"
    if args.smoke:
        res.skip("the peer (bm25s + hnswlib + sentence-transformers): smoke mode")
    else:
        bm25s = optional("bm25s", res, "the peer pipelines")
        hnswlib = optional("hnswlib", res, "the peer pipelines")
        torch = optional("torch", res, "the peer pipelines")
        st = optional("sentence_transformers", res, "the peer pipelines")
        if None in (bm25s, hnswlib, torch, st):
            res.skip("the peer: a package is missing")
        else:
            torch.set_num_threads(1)
            with contextlib.suppress(RuntimeError):  # already set in this process
                torch.set_num_interop_threads(1)
            if optional("numba", res, "bm25s's numba backend (numpy used)") is not None:
                backend = "numba"
    print(
        "threads: OMP/OpenBLAS/MKL 1, torch.set_num_threads(1), TextEncoder(threads=1); "
        f"bm25s ({backend} backend) retrieve n_threads=1; builds on every core",
        flush=True,
    )
    encoder = fastrag.TextEncoder(threads=1)
    peer_ok = None not in (bm25s, hnswlib, torch)
    model = minilm() if peer_ok else None

    reports = []
    if (args.data / "cranfield").is_dir():
        data = cranfield(args.data, None if peer_ok else encoder)
        reports.append(bench("cranfield", "cranfield", data, encoder, model, backend, args, True))
    else:
        res.skip(f"cranfield: {args.data / 'cranfield'} not found")
    bench_native(args, res, backend, peer_ok)
    bench_legs(args, res)
    if not args.skip_100k and args.mode != "quick":
        n = args.n_chunks
        label = f"{n // 1000}k" if n % 1000 == 0 else f"n{n}"
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = synthetic(n, 200, args.seed)
        print(f"[generated] {n:,} documents made in {time.perf_counter() - t0:.1f} s", flush=True)
        reports.append(
            bench(
                f"generated {n:,} (seed {args.seed}; dense and hybrid: latency only)",
                label,
                data,
                encoder,
                model,
                backend,
                args,
                False,
            )
        )

    print()
    for r in reports:
        print(r.tables())
        print()
    for r in reports:
        res.summary.update(r.summary)
        res.details.setdefault("latency_ms_percentiles", {})[r.label] = r.distributions()
        res.details.setdefault("notes", {})[r.label] = r.lines
    res.finish()


if __name__ == "__main__":
    main()
