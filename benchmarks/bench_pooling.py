"""Span mean pooling (late chunking): fastrag against numpy and torch, next to memcpy bandwidth.

    python benchmarks/bench_pooling.py [--quick | --smoke] [--json PATH] [--docs 32]
                                       [--tokens 2048] [--dim 768] [--span 200] [--rounds 5]
                                       [--seed 0]

A late-chunking batch: 32 documents of 2048 token vectors of 768 dimensions (float32, as an
encoder returns them), each cut into consecutive spans of 150-250 tokens (about 10 a document)
between the leading [CLS] and the final [SEP], as sentence chunks are. Every engine pools the same
spans of the same arrays on one thread (OMP/OpenBLAS/MKL and torch pinned to 1):

- fastrag: ``mean_pool_batch`` on the list of per-document arrays (the public API, no packing),
  and the bare ``_core.span_mean_pool_batch`` on the packed store; also, for information only,
  ``mean_pool_batch`` on a float16 copy (its GB/s counts float16 bytes).
- numpy loop: ``tokens[s:e].mean(axis=0)`` per span.
- numpy cumsum: per document, a float32 prefix sum over its tokens with a zero row in front,
  then ``(c[ends] - c[starts]) / lengths`` for all its spans at once.
- torch (if installed): a loop of ``t[s:e].mean(0)``, and ``torch.segment_reduce(..., "mean")``
  over the packed store cut at every span boundary (the gaps are pooled too, then dropped).
- memcpy: ``np.copyto`` of the whole packed store into a preallocated array, for context.

Throughput is bytes of token vectors the spans cover divided by the time (for memcpy: bytes
copied, each read once and written once). Every engine's means must agree with a float64
reference within 1e-4 of the largest mean magnitude (the float32 cumsum loses the most). Timing:
the engines run in turn for several rounds, each sample repeats a call for at least 0.1 s; the
best sample counts. The last line is a SUMMARY; ratios are fastrag's ``mean_pool_batch`` GB/s
over the faster numpy variant and over memcpy. --quick: 8 documents, 3 rounds; --smoke: 2
documents of 256 tokens x 64 dims, no torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np

from _common import Results, best_times, optional, parse, parser
from fastrag import _core
from fastrag.encoders.pooling import mean_pool_batch


def l3_cache() -> str:
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (index / "level").read_text().strip() == "3":
                return (index / "size").read_text().strip()
        except OSError:
            pass
    return "unknown"


def make_spans(rng: np.random.Generator, n_tokens: int, span: int) -> np.ndarray:
    """Consecutive spans of span +- 25% tokens from 1 ([CLS] excluded) to n_tokens - 1."""
    bounds = [1]
    while bounds[-1] < n_tokens - 1:
        step = int(rng.integers(span * 3 // 4, span * 5 // 4 + 1))
        bounds.append(min(bounds[-1] + step, n_tokens - 1))
    b = np.array(bounds, dtype=np.int64)
    return np.stack([b[:-1], b[1:]], axis=1)


def reference(docs: list[np.ndarray], spans: list[np.ndarray]) -> np.ndarray:
    """float64 means of every span, document by document."""
    rows = [
        x[s:e].astype(np.float64).mean(0) for x, sp in zip(docs, spans, strict=True) for s, e in sp
    ]
    return np.stack(rows)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--docs", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=2048, help="tokens per document")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--span", type=int, default=200, help="mean span length in tokens")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = parse(ap)
    res = Results(__file__, args, peers=("torch",))
    if args.smoke:
        args.docs, args.tokens, args.dim, args.span, args.rounds = 2, 256, 64, 40, 1
    elif args.quick:
        args.docs, args.rounds = 8, 3
    min_s = 0.01 if args.smoke else 0.1
    torch = None if args.smoke else optional("torch", res, "the torch peers")

    rng = np.random.default_rng(args.seed)
    n_docs, n_tok, d = args.docs, args.tokens, args.dim
    store = rng.standard_normal((n_docs * n_tok, d), dtype=np.float32)
    offsets = np.arange(n_docs + 1, dtype=np.uint64) * n_tok
    docs = [store[k * n_tok : (k + 1) * n_tok] for k in range(n_docs)]  # views
    spans = [make_spans(rng, n_tok, args.span) for _ in range(n_docs)]
    counts = [len(s) for s in spans]
    span_offsets = np.zeros(n_docs + 1, dtype=np.uint64)
    span_offsets[1:] = np.cumsum(counts)
    flat = np.concatenate(spans)
    n_spans = len(flat)
    covered = int((flat[:, 1] - flat[:, 0]).sum())
    nbytes = covered * d * 4
    store16 = store.astype(np.float16)
    docs16 = [store16[k * n_tok : (k + 1) * n_tok] for k in range(n_docs)]
    copy_dst = np.empty_like(store)
    pairs = list(zip(docs, spans, strict=True))

    def numpy_loop() -> np.ndarray:
        return np.stack([x[s:e].mean(axis=0) for x, sp in pairs for s, e in sp])

    def numpy_cumsum() -> np.ndarray:
        out = []
        for x, sp in pairs:
            c = np.empty((len(x) + 1, d), dtype=np.float32)
            c[0] = 0.0
            np.cumsum(x, axis=0, out=c[1:])
            lengths = (sp[:, 1] - sp[:, 0]).astype(np.float32)[:, None]
            out.append((c[sp[:, 1]] - c[sp[:, 0]]) / lengths)
        return np.concatenate(out)

    engines: dict[str, Callable[[], np.ndarray]] = {
        "fastrag mean_pool_batch": lambda: mean_pool_batch(docs, spans, threads=1).pooled,
        "fastrag _core.span_mean_pool_batch": lambda: _core.span_mean_pool_batch(
            store, offsets, flat, span_offsets, threads=1
        )[0],
        "numpy loop (mean per span)": numpy_loop,
        "numpy cumsum (per document)": numpy_cumsum,
    }
    if torch is not None:
        torch.set_num_threads(1)
        tdocs = [torch.from_numpy(x) for x in docs]
        tstore = torch.from_numpy(store)
        # Segments of the packed store cut at every span boundary; keep = the span segments.
        cuts, keep = [0], []
        for k, sp in enumerate(spans):
            for s, e in sp:
                for b in (k * n_tok + int(s), k * n_tok + int(e)):
                    if b != cuts[-1]:
                        cuts.append(b)
                    if b == k * n_tok + int(e):
                        keep.append(len(cuts) - 2)
        cuts.append(n_docs * n_tok)
        tlengths = torch.tensor(np.diff(cuts), dtype=torch.int64)
        tkeep = torch.tensor(keep, dtype=torch.int64)

        def torch_loop() -> np.ndarray:
            with torch.inference_mode():
                rows = [
                    t[int(s) : int(e)].mean(0)
                    for t, sp in zip(tdocs, spans, strict=True)
                    for s, e in sp
                ]
                return torch.stack(rows).numpy()

        def torch_segment() -> np.ndarray:
            with torch.inference_mode():
                seg = torch.segment_reduce(tstore, "mean", lengths=tlengths, axis=0)
                return seg.index_select(0, tkeep).numpy()

        engines[f"torch {torch.__version__} loop (mean per span)"] = torch_loop
        engines["torch segment_reduce (mean)"] = torch_segment
    extra: dict[str, Callable[[], object]] = {
        "fastrag mean_pool_batch, float16 copy": lambda: (
            mean_pool_batch(docs16, spans, threads=1).pooled
        ),
        "memcpy (np.copyto, whole store)": lambda: np.copyto(copy_dst, store),
    }

    # Agreement first (also the warm-up).
    ref = reference(docs, spans)
    scale = np.abs(ref).max()
    errors = {}
    for name, fn in engines.items():
        got = np.asarray(fn(), dtype=np.float64)
        errors[name] = float(np.abs(got - ref).max() / scale)
        if got.shape != ref.shape or errors[name] > 1e-4:
            raise SystemExit(f"{name} disagrees with the float64 reference: {errors[name]:.3g}")
    ref16 = reference(docs16, spans)
    err16 = np.abs(extra["fastrag mean_pool_batch, float16 copy"]() - ref16).max() / scale
    if err16 > 1e-4:
        raise SystemExit(f"fastrag float16 disagrees with its float64 reference: {err16:.3g}")

    timed = {**engines, **extra}
    best = best_times(timed, args.rounds, min_s)
    names = list(timed)

    gbps = {name: nbytes / best[name] / 1e9 for name in engines}
    gbps["fastrag mean_pool_batch, float16 copy"] = (
        nbytes / 2 / best["fastrag mean_pool_batch, float16 copy"] / 1e9
    )
    memcpy = store.nbytes / best["memcpy (np.copyto, whole store)"] / 1e9
    gbps["memcpy (np.copyto, whole store)"] = memcpy
    print(
        f"{n_docs} documents x {n_tok} tokens x {d} dims float32 ({store.nbytes / 1e6:.0f} MB), "
        f"{n_spans} spans of {covered // n_spans} tokens on average ({nbytes / 1e6:.0f} MB "
        f"covered), 1 thread, best of {args.rounds}; kernels {_core.pooling_kernels()}, "
        f"L3 {l3_cache()}"
    )
    fast = gbps["fastrag mean_pool_batch"]
    for name in names:
        err = f"  max err {errors[name]:.1e}" if name in errors else ""
        print(
            f"  {name:40s} {best[name] * 1e3:8.2f} ms  {gbps[name]:6.2f} GB/s  "
            f"fastrag x{fast / gbps[name]:6.2f}{err}"
        )
    numpy_gbps = max(gbps["numpy loop (mean per span)"], gbps["numpy cumsum (per document)"])
    torch_names = [k for k in engines if k.startswith("torch")]
    torch_gbps = max(gbps[k] for k in torch_names) if torch_names else None
    res.summary.update({
        "docs": n_docs,
        "tokens": n_tok,
        "dim": d,
        "spans": n_spans,
        "fastrag_gbps": round(fast, 2),
        "fastrag_float16_gbps": round(gbps["fastrag mean_pool_batch, float16 copy"], 2),
        "numpy_gbps": round(numpy_gbps, 2),
        "torch_gbps": round(torch_gbps, 2) if torch_gbps else None,
        "memcpy_gbps": round(memcpy, 2),
        "gbps_ratio_vs_numpy": round(fast / numpy_gbps, 2),
        "gbps_ratio_vs_torch": round(fast / torch_gbps, 2) if torch_gbps else None,
        "gbps_ratio_vs_memcpy": round(fast / memcpy, 2),
    })
    res.details["gbps"] = gbps
    res.details["l3_cache"] = l3_cache()
    res.finish()


if __name__ == "__main__":
    main()
