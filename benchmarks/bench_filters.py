"""Filtered BM25 search: a collection's metadata filters against bm25s with a weight mask.

    python benchmarks/bench_filters.py [--quick | --smoke] [--json PATH]

A generated collection (documents of 30 words from a 5,000-word vocabulary, one chunk each;
metadata: tenant 0-49, year 2000-2019, lang en/ja) is searched with BM25, top-10, one query
at a time, under three filters: one tenant (2% of the documents), a year range (25%), and an
$or of a language and a tenant list (about 39%). Timed, interleaved, p50 per query:

* fastrag: ``Collection.search(q, method="bm25", filter=...)``: the committed metadata as
  in-memory columns (metaindex.py), the allow-list applied inside the top-k loop;
* fastrag's SQL path (how every filter ran before the columns: SQLite's JSON functions over
  every document), the same call with the columns switched off;
* the peer: bm25s (numpy backend) with ``weight_mask``, the mask computed per query with numpy
  from metadata columns the user prepared up front (the strongest plain-Python way to filter).

All three must agree before anything is timed: the columns and the SQL on the documents,
fastrag and bm25s on the scores (documents of equal length tie often), and every hit passes.
The SUMMARY gives p50 milliseconds and the ratios (> 1: fastrag faster). --quick: 50,000
documents and 30 queries; full: 200,000 and 100; --smoke: 2,000 and 5, no peer.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from _common import Results, optional, parse, parser
from fastrag.collection import Collection
from fastrag.collection import collection as collection_mod
from fastrag.collection.metaindex import Unsupported

FILTERS: dict[str, dict[str, Any]] = {
    "tenant": {"tenant": 7},
    "range": {"year": {"$gte": 2015}},
    "or": {"$or": [{"lang": "ja"}, {"tenant": {"$in": [1, 2, 3, 4, 5]}}]},
}


def corpus(n: int, seed: int) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(5000)])
    weights = 1.0 / np.arange(1, 5001)  # Zipf-like: a few common words, many rare ones
    weights /= weights.sum()
    texts = [" ".join(rng.choice(words, 30, p=weights)) for _ in range(n)]
    metas = [{"tenant": i % 50, "year": 2000 + (i * 7) % 20, "lang": "ja" if i % 3 == 0 else "en"}
             for i in range(n)]
    queries = [" ".join(rng.choice(words[50:2000], 3)) for _ in range(200)]
    return texts, metas, queries


def peer_mask(columns: dict[str, np.ndarray], name: str) -> np.ndarray:
    """The user's own filter for bm25s: numpy over prepared columns."""
    if name == "tenant":
        return columns["tenant"] == 7
    if name == "range":
        return columns["year"] >= 2015
    return (columns["lang"] == "ja") | np.isin(columns["tenant"], [1, 2, 3, 4, 5])


def p50_ms(fns: dict[str, Callable[[int], object]], n: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(n):
        for name in list(fns)[i % len(fns):] + list(fns)[: i % len(fns)]:
            t = time.perf_counter()
            fns[name](i)
            times[name].append(time.perf_counter() - t)
    return {name: float(np.median(v)) * 1e3 for name, v in times.items()}


def sql_only(*_: Any) -> list[int]:
    raise Unsupported


def main() -> None:
    args = parse(parser(__doc__))
    res = Results(__file__, args, peers=("bm25s",))
    n = {"smoke": 2_000, "quick": 50_000, "full": 200_000}[args.mode]
    n_queries = {"smoke": 5, "quick": 30, "full": 100}[args.mode]
    bm25s = None if args.smoke else optional("bm25s", res, "the bm25s peer")
    texts, metas, queries = corpus(n, 0)
    ids = [f"d{i}" for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="bench-filters-") as tmp:
        t0 = time.perf_counter()
        col = Collection.create(Path(tmp) / "c", encoder=None)
        for s in range(0, n, 20_000):
            col.add(texts[s : s + 20_000], ids=ids[s : s + 20_000], metadata=metas[s : s + 20_000])
        col.commit()
        print(f"{n:,} documents indexed in {time.perf_counter() - t0:.1f} s", flush=True)
        col.search(queries[0], k=10, method="bm25")  # the chunk table, read once
        for name, spec in FILTERS.items():  # the columns, built once per generation
            t0 = time.perf_counter()
            col.allowed_chunks(spec)
            res.summary[f"first_filter_s_{name}"] = round(time.perf_counter() - t0, 3)
        columns = {k: np.array([m[k] for m in metas]) for k in ("tenant", "year", "lang")}
        peer = None
        if bm25s is not None:
            peer = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
            peer.index([t.split() for t in texts], show_progress=False)
        real = collection_mod.Collection._allowed_in_memory
        for name, spec in FILTERS.items():
            share = len(col.allowed_chunks(spec)) / n

            def ours(i: int, spec: dict[str, Any] = spec) -> list[str]:
                return [r.id for r in col.search(queries[i], k=10, method="bm25", filter=spec)]

            def sql(i: int, spec: dict[str, Any] = spec) -> list[str]:
                collection_mod.Collection._allowed_in_memory = sql_only  # type: ignore[method-assign]
                try:
                    return ours(i, spec)
                finally:
                    collection_mod.Collection._allowed_in_memory = real  # type: ignore[method-assign]

            fns: dict[str, Callable[[int], object]] = {"fastrag": ours, "sql": sql}
            if peer is not None:
                def theirs(i: int, name: str = name) -> list[str]:
                    mask = peer_mask(columns, name).astype(np.float32)
                    docs, scores = peer.retrieve([queries[i].split()], k=10, weight_mask=mask,
                                                 show_progress=False, n_threads=1)
                    return [ids[d] for d, s in zip(docs[0], scores[0], strict=True) if s > 0]

                fns["bm25s"] = theirs
            for i in range(min(n_queries, 10)):  # the same documents (up to score ties)
                got = {k: fn(i) for k, fn in fns.items()}
                if got["fastrag"] != got["sql"]:
                    raise SystemExit(f"{name}: the columns and the SQL disagree on query {i}")
                if "bm25s" in got:  # ties (every document has 30 words) order freely
                    mask = peer_mask(columns, name)
                    a = [round(r.score, 3) for r in col.search(
                        queries[i], k=10, method="bm25", filter=FILTERS[name])]
                    b = [round(float(x), 3) for x in peer.retrieve(
                        [queries[i].split()], k=10, weight_mask=mask.astype(np.float32),
                        show_progress=False, n_threads=1)[1][0] if x > 0]
                    if a != b or not all(mask[int(d[1:])] for d in got["fastrag"]):
                        raise SystemExit(f"{name}: fastrag and bm25s disagree on query {i}")
            p50 = p50_ms(fns, n_queries)
            print(f"[{name}] {share:.0%} of the documents pass: fastrag {p50['fastrag']:.2f} ms, "
                  f"SQL path {p50['sql']:.2f} ms"
                  + (f", bm25s + weight_mask {p50['bm25s']:.2f} ms" if "bm25s" in p50 else ""),
                  flush=True)
            res.summary[f"p50_ms_fastrag_{name}"] = round(p50["fastrag"], 3)
            res.summary[f"p50_ms_sql_{name}"] = round(p50["sql"], 3)
            res.summary[f"speed_ratio_vs_sql_{name}"] = round(p50["sql"] / p50["fastrag"], 2)
            if "bm25s" in p50:
                res.summary[f"p50_ms_bm25s_{name}"] = round(p50["bm25s"], 3)
                res.summary[f"speed_ratio_vs_bm25s_{name}"] = round(
                    p50["bm25s"] / p50["fastrag"], 2)
        col.close()
    res.summary["documents"] = n
    res.finish()


if __name__ == "__main__":
    main()
