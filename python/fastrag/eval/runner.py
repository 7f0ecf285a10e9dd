"""Runs a retrieval method over a dataset's judged queries and scores it, clean or noisy."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from fastrag.eval.datasets import Dataset
from fastrag.eval.metrics import DEFAULT_METRICS, evaluate
from fastrag.eval.noise import KINDS, NoisyDataset, inject
from fastrag.index import BM25, SearchResults

# A method takes (dataset, depth, options) and returns {query_id: {doc_id: score}}.
MethodFn = Callable[[Dataset, int, dict[str, Any]], dict[str, dict[str, float]]]
METHODS: dict[str, MethodFn] = {}
# Methods that take a Matryoshka `dim` option (reports plot nDCG against it).
MATRYOSHKA_METHODS: set[str] = set()
Run = dict[str, dict[str, float]]


def register_method(name: str, *, matryoshka: bool = False) -> Callable[[MethodFn], MethodFn]:
    """Registers a method under `name`; `matryoshka=True` says it takes a `dim` option.

    A method may report timings by setting ``options["_timings"]`` to a dict with
    ``index_seconds`` and ``search_seconds`` (the search of all judged queries).
    """

    def wrap(fn: MethodFn) -> MethodFn:
        METHODS[name] = fn
        if matryoshka:
            MATRYOSHKA_METHODS.add(name)
        return fn

    return wrap


def results_to_run(query_ids: list[str], results: SearchResults) -> dict[str, dict[str, float]]:
    return {q: {str(h.id): h.score for h in results[i]} for i, q in enumerate(query_ids)}


def index_and_search(
    index: Any, dataset: Dataset, depth: int, options: dict[str, Any], **search: Any
) -> Run:
    """Adds the dataset's documents to `index`, searches its judged queries (keyword options
    `search`), records index / search seconds in ``options["_timings"]``; returns the run."""
    doc_ids, texts = dataset.documents()
    t0 = time.perf_counter()
    index.add(texts, ids=doc_ids)
    t1 = time.perf_counter()
    query_ids, queries = dataset.judged_queries()
    results = index.search(queries, k=depth, **search)
    t2 = time.perf_counter()
    options["_timings"] = {"index_seconds": t1 - t0, "search_seconds": t2 - t1}
    return results_to_run(query_ids, results)


@register_method("bm25")
def run_bm25(dataset: Dataset, depth: int, options: dict[str, Any]) -> dict[str, dict[str, float]]:
    """BM25 with options analyzer (default "auto"), method, k1, b, delta, threads."""
    threads = options.pop("threads", 0)
    return index_and_search(BM25(**options), dataset, depth, options, threads=threads)


@register_method("dense", matryoshka=True)
def run_dense(dataset: Dataset, depth: int, options: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Dense retrieval with options model (default "default": all-MiniLM-L6-v2 offline; a
    static model as ``static:<folder or id>``),
    dim (Matryoshka truncation), quantize (None / "int8"), exact (default True: brute-force
    search, so the figure is the encoder's), ef, batch_size, threads, cache_dir."""
    from fastrag.encoders import Encoder, StaticEncoder, TextEncoder, is_static_model
    from fastrag.index import DenseIndex

    model = options.get("model", "default")
    encoder: Encoder
    if is_static_model(model):  # a model2vec model (static:<folder or id>)
        encoder = StaticEncoder(model)
    else:
        encoder = TextEncoder(
            model,
            quantize=options.get("quantize"),
            threads=int(options.get("threads", 0)),
            cache_dir=options.get("cache_dir"),
        )
    dim = options.get("dim")
    batch_size = int(options.get("batch_size", 32))
    doc_ids, texts = dataset.documents()
    # empty documents have nothing to embed (and cannot be found by any query)
    kept = [i for i, text in enumerate(texts) if text.strip()]
    doc_ids, texts = [doc_ids[i] for i in kept], [texts[i] for i in kept]
    t0 = time.perf_counter()
    vectors = encoder.encode_documents(texts, dim=dim, batch_size=batch_size)
    index = DenseIndex(vectors.shape[1], metric="ip", encoder=encoder)
    index.add(vectors, ids=doc_ids, threads=int(options.get("threads", 0)))
    t1 = time.perf_counter()
    query_ids, queries = dataset.judged_queries()
    qv = encoder.encode_queries(queries, dim=dim, batch_size=batch_size)
    results = index.search(
        qv, k=depth, exact=bool(options.get("exact", True)), ef=options.get("ef"),
    )
    t2 = time.perf_counter()
    options["_timings"] = {"index_seconds": t1 - t0, "search_seconds": t2 - t1}
    return results_to_run(query_ids, results)


@register_method("hybrid")
def run_hybrid(dataset: Dataset, depth: int, options: dict[str, Any]) -> Run:
    """The collection's multi-stage search, built in a temporary folder.

    Options: model (encoder, default "default"), retrievers ("bm25,dense"; also splade, bm42,
    late: the collection is built with those legs), splade_model, fusion ("rrf"),
    rrf_k (20, as the default pipeline), weights ("1,1" fixes the legs' weights; default
    adaptive, see `fastrag.search.Pipeline`), rerank ("dense" for full-dimension rescoring, or a
    "maxsim" for late interaction over stored token vectors, or a cross-encoder model name /
    folder), rerank_depth (50), chunk_chars (default: the collection's, chunks that fit the
    encoder's window), analyzer.
    """
    import tempfile

    from fastrag.collection import Collection
    from fastrag.search import CrossEncoderRerank, DenseRescore, MaxSimRerank, Pipeline, Retriever

    doc_ids, texts = dataset.documents()
    kept = [i for i, text in enumerate(texts) if text.strip()]
    legs = [m.strip() for m in str(options.get("retrievers", "bm25,dense")).split(",")]
    weights = options.get("weights")
    wlist = [float(w) for w in str(weights).split(",")] if weights is not None else None
    if wlist is not None and len(wlist) != len(legs):
        raise ValueError(f"{len(legs)} retrievers but {len(wlist)} weights")
    retrievers = [
        Retriever(m, depth=depth, weight=None if wlist is None else wlist[i])
        for i, m in enumerate(legs)
    ]
    fusion_options = {"k": float(options.get("rrf_k", 20))} if options.get(
        "fusion", "rrf") == "rrf" else {}
    rerankers: list[Any] = []
    rerank = options.get("rerank")
    if rerank == "dense":
        rerankers.append((DenseRescore(), int(options.get("rerank_depth", 50))))
    elif rerank == "maxsim":
        rerankers.append((MaxSimRerank(), int(options.get("rerank_depth", 50))))
    elif rerank:
        from fastrag.encoders import CrossEncoder

        rerankers.append(
            (CrossEncoderRerank(CrossEncoder(str(rerank))), int(options.get("rerank_depth", 50)))
        )
    pipeline = Pipeline(retrievers, fusion=str(options.get("fusion", "rrf")),
                        fusion_options=fusion_options, rerankers=rerankers)
    needs_encoder = bool({"dense", "bm42", "late"} & set(legs)) or rerank in ("dense", "maxsim")
    sparse = "splade" if "splade" in legs else "bm42" if "bm42" in legs else None
    with tempfile.TemporaryDirectory(prefix="fastrag-eval-") as tmp:
        t0 = time.perf_counter()
        col = Collection.create(
            tmp,
            encoder=options.get("model", "default") if needs_encoder else None,
            analyzer=str(options.get("analyzer", "auto")),
            # None: the collection's default (chunks cut by the encoder's window); the
            # 1000 characters used before split half of cranfield's abstracts (0.410 nDCG@10)
            chunk_chars=None if options.get("chunk_chars") is None
            else int(options["chunk_chars"]),
            token_vectors=rerank == "maxsim",
            sparse=sparse,
            late_chunking="late" in legs,
            splade=str(options.get("splade_model", "splade-tiny")),
        )
        col.add([texts[i] for i in kept], ids=[doc_ids[i] for i in kept])
        t1 = time.perf_counter()
        query_ids, queries = dataset.judged_queries()
        found = pipeline.search_batch(col, queries, k=depth, threads=0)
        # with rerank stages the order is the ranking: documents below a stage's depth keep
        # an earlier stage's score (another scale), so ranx gets rank-based scores
        run = {qid: ({r.id: float(len(results) - i) for i, r in enumerate(results)}
                     if rerankers else {r.id: r.score for r in results})
               for qid, results in zip(query_ids, found, strict=True)}
        t2 = time.perf_counter()
        col.close()
    options["_timings"] = {"index_seconds": t1 - t0, "search_seconds": t2 - t1}
    return run


@dataclass
class EvalResult:
    """The scores of one method on one dataset (`evaluate_method`).

    Attributes:
        method: the method's name (a key of `METHODS`).
        dataset: the dataset's name.
        queries: queries scored.
        metrics: {metric: mean score}, e.g. {"ndcg@10": 0.381, ...} (ranx).
        options: the method's options.
        timings: seconds per phase (``index_seconds``, ``search_seconds``), when the method
            reports them.
    """

    method: str
    dataset: str
    queries: int
    metrics: dict[str, float]
    options: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """One flat dict: the fields, with the metrics and timings as top-level keys."""
        out = asdict(self)
        out.update(out.pop("metrics"))
        out.update(out.pop("timings"))
        return out


def run_method(
    dataset: Dataset,
    method: str = "bm25",
    *,
    depth: int = 100,
    options: dict[str, Any] | None = None,
) -> tuple[Run, dict[str, float]]:
    """Runs `method` (a name in METHODS) on the judged queries: (run, timings)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(sorted(METHODS))}")
    opts = dict(options or {})
    run = METHODS[method](dataset, depth, opts)
    return run, opts.pop("_timings", {})


def evaluate_method(
    dataset: Dataset,
    method: str = "bm25",
    *,
    depth: int = 100,
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    options: dict[str, Any] | None = None,
) -> EvalResult:
    """Runs `method` (a name in METHODS) with `options` and scores it against the qrels."""
    return _score(
        dataset,
        method,
        *run_method(dataset, method, depth=depth, options=options),
        metrics=metrics,
        options=options,
    )


def _score(
    dataset: Dataset,
    method: str,
    run: Run,
    timings: dict[str, float],
    *,
    metrics: tuple[str, ...],
    options: dict[str, Any] | None,
) -> EvalResult:
    scores = evaluate(run, dataset.qrels, metrics)
    return EvalResult(method, dataset.name, len(run), scores, dict(options or {}), timings)


# ---------------------------------------------------------------------------- noise


def outranking(run: Run, noisy: NoisyDataset) -> dict[str, float]:
    """How often an added (noise) document ranks above every relevant document.

    Over the judged queries that have noise documents made for one of their relevant
    documents (``noisy.targets``): a query counts when some added document is retrieved
    above the best-ranked relevant one (or when no relevant one is retrieved at all).
    Returns ``{"queries": n, "count": c, "fraction": c / n}``.
    """
    added = noisy.added_docs
    count = 0
    for qid in noisy.targets:
        relevant = noisy.dataset.qrels.get(qid, {})
        ranking = sorted(run.get(qid, {}).items(), key=lambda kv: -kv[1])
        for doc_id, _ in ranking:
            if relevant.get(doc_id, 0) > 0:
                break
            if doc_id in added:
                count += 1
                break
    n = len(noisy.targets)
    return {"queries": n, "count": count, "fraction": count / n if n else 0.0}


@dataclass
class NoiseEvalResult:
    """A method on a dataset, clean and under one noise kind and rate."""

    clean: EvalResult
    noisy: EvalResult
    kind: str
    target: str
    rate: float
    seed: int
    changes: dict[str, int]
    outranked: dict[str, float] | None = None

    def deltas(self) -> dict[str, float]:
        """noisy - clean for each metric."""
        return {m: self.noisy.metrics[m] - v for m, v in self.clean.metrics.items()}

    def to_json(self) -> dict[str, Any]:
        """The clean result's keys plus noise, rate, seed, noisy metrics and deltas."""
        out = self.clean.to_json()
        noisy = self.noisy.to_json()
        out.update(
            noise=self.kind,
            target=self.target,
            rate=self.rate,
            seed=self.seed,
            changes=self.changes,
            noisy={k: v for k, v in noisy.items() if k not in ("method", "options")},
        )
        out.update({f"delta_{m}": d for m, d in self.deltas().items()})
        if self.outranked is not None:
            out["outranked"] = self.outranked
        return out


def evaluate_noise(
    dataset: Dataset,
    method: str = "bm25",
    *,
    kind: str,
    rate: float,
    seed: int = 0,
    target: str | None = None,
    depth: int = 100,
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    options: dict[str, Any] | None = None,
    clean: EvalResult | None = None,
    noisy: NoisyDataset | None = None,
) -> NoiseEvalResult:
    """Evaluates `method` clean and with `kind` noise injected at `rate` (see `inject`).

    Pass `clean` (an earlier result of the same method and options) to skip the clean run
    and `noisy` (an earlier `inject` result) to reuse an injection.
    """
    if noisy is None:
        noisy = inject(dataset, kind, rate, seed, target=target)
    if clean is None:
        clean = evaluate_method(dataset, method, depth=depth, metrics=metrics, options=options)
    run, timings = run_method(noisy.dataset, method, depth=depth, options=options)
    result = _score(noisy.dataset, method, run, timings, metrics=metrics, options=options)
    outranked = outranking(run, noisy) if KINDS[noisy.kind].adds_documents else None
    return NoiseEvalResult(
        clean, result, noisy.kind, noisy.target, noisy.rate, noisy.seed, noisy.summary(), outranked
    )
