"""Late-interaction reranking (ColBERT MaxSim): fastrag against numpy and torch in the same run.

    python benchmarks/bench_maxsim.py [--quick | --smoke] [--json PATH] [--candidates 100]
                                      [--tokens 180] [--dim 384] [--query-tokens 32]
                                      [--rounds 7] [--seed 0]

One query of 32 token vectors reranks 100 candidate documents of 180 token vectors of 384
dimensions, on one thread (OMP/OpenBLAS/MKL and torch pinned to 1). The documents are stored
once as float16 (what a ColBERT index keeps); every engine scores the same values:

- fastrag: ``TokenStore.scores`` (float16 store, converted block by block inside the kernel),
  and the bare ``_core.maxsim`` call.
- numpy einsum: ``einsum("sh,bth->bst")`` over a padded (candidates, tokens, dim) float32 tensor,
  masked, max over document tokens, sum over query tokens.
- numpy matmul loop: ``(q @ doc.T).max(1).sum()`` per document, float32 documents.
- torch (if installed): PyLate's ``colbert_scores`` recipe, einsum over a padded float32 tensor
  times the document mask, max, sum.

The baselines get their float32 padded tensors built ahead of time, outside the timer (the
conversion from float16 and the padding are free for them). Every engine's scores must agree with
fastrag's within 1e-4 relative. Timing: the engines run in turn for several rounds, each sample
repeats a call for at least 0.1 s; the best sample counts. --quick: 3 rounds; --smoke: 10
candidates of 20 tokens x 64 dims, numpy only. The last line is a SUMMARY.
"""

from __future__ import annotations

import os
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np

from _common import Results, best_times, optional, parse, parser
from fastrag import _core
from fastrag.index.tokens import TokenStore


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--tokens", type=int, default=180, help="tokens per document (the most)")
    ap.add_argument("--min-tokens", type=int, default=None, help="fewest tokens (default: all)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--query-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    args = parse(ap)
    res = Results(__file__, args, peers=("torch",))
    if args.smoke:
        args.candidates, args.tokens, args.dim, args.query_tokens, args.rounds = 10, 20, 64, 8, 1
    elif args.quick:
        args.rounds = 3
    min_s = 0.01 if args.smoke else 0.1
    torch = None if args.smoke else optional("torch", res, "the torch peer")

    rng = np.random.default_rng(args.seed)
    n, t_max, d, m = args.candidates, args.tokens, args.dim, args.query_tokens
    lengths = rng.integers(args.min_tokens or t_max, t_max + 1, n)
    # Unit-norm token vectors, as ColBERT models emit them.
    docs16 = []
    for length in lengths:
        x = rng.standard_normal((int(length), d)).astype(np.float32)
        docs16.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16))
    q = rng.standard_normal((m, d)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)

    store = TokenStore.from_documents(docs16, dtype=np.float16)
    candidates = rng.permutation(n).astype(np.uint32)
    tokens, offsets = store.tokens, store.offsets

    # The baselines' inputs, in candidate order, built outside the timer.
    docs32 = [docs16[int(c)].astype(np.float32) for c in candidates]
    padded = np.zeros((n, t_max, d), dtype=np.float32)
    mask = np.zeros((n, t_max), dtype=np.float32)
    for i, x in enumerate(docs32):
        padded[i, : len(x)] = x
        mask[i, : len(x)] = 1.0
    neg = np.where(mask > 0, 0.0, -np.inf).astype(np.float32)[:, None, :]

    def numpy_einsum() -> np.ndarray:
        s = np.einsum("sh,bth->bst", q, padded, optimize=True) + neg
        return s.max(axis=2).sum(axis=1)

    def numpy_loop() -> np.ndarray:
        return np.array([(q @ x.T).max(axis=1).sum() for x in docs32], dtype=np.float32)

    engines: dict[str, Callable[[], np.ndarray]] = {
        "fastrag TokenStore.scores": lambda: store.scores(q, candidates, threads=1),
        "fastrag _core.maxsim": lambda: _core.maxsim(q, tokens, offsets, candidates, threads=1),
        "numpy einsum (padded)": numpy_einsum,
        "numpy matmul loop": numpy_loop,
    }
    if torch is not None:
        torch.set_num_threads(1)
        tq = torch.from_numpy(q).unsqueeze(0)
        tpad, tmask = torch.from_numpy(padded), torch.from_numpy(mask)

        def torch_pylate() -> np.ndarray:
            # PyLate colbert_scores: einsum("ash,bth->abst"), times the document mask, max, sum.
            with torch.inference_mode():
                s = torch.einsum("ash,bth->abst", tq, tpad)
                s = s * tmask.unsqueeze(0).unsqueeze(2)
                return s.max(dim=-1).values.sum(dim=-1)[0].numpy()

        engines[f"torch {torch.__version__} (PyLate recipe)"] = torch_pylate

    # Agreement first (also the warm-up).
    ref = engines["fastrag _core.maxsim"]()
    for name, fn in engines.items():
        got = np.asarray(fn(), dtype=np.float64)
        err = np.abs(got - ref).max() / np.abs(ref).max()
        if err > 1e-4:
            raise SystemExit(f"{name} disagrees with fastrag: max relative error {err:.3g}")

    best = best_times(engines, args.rounds, min_s)
    names = list(engines)

    flops = 2.0 * m * d * float(lengths.sum())
    print(
        f"{n} candidates, {int(lengths.min())}-{t_max} tokens x {d} dims (float16 store, "
        f"{tokens.nbytes / 1e6:.1f} MB), query {m} tokens, 1 thread, best of {args.rounds}"
    )
    fast = best["fastrag TokenStore.scores"]
    for name in names:
        t = best[name]
        print(
            f"  {name:34s} {t * 1e3:8.2f} ms  {n / t:10.0f} candidates/s  "
            f"{flops / t / 1e9:6.1f} GFLOP/s  fastrag x{t / fast:5.2f}"
        )
    numpy_best = min(best["numpy einsum (padded)"], best["numpy matmul loop"])
    torch_name = next((k for k in names if k.startswith("torch")), None)
    res.summary.update({
        "candidates": n,
        "tokens": t_max,
        "dim": d,
        "query_tokens": m,
        "fastrag_candidates_per_s": round(n / fast, 1),
        "numpy_candidates_per_s": round(n / numpy_best, 1),
        "torch_candidates_per_s": round(n / best[torch_name], 1) if torch_name else None,
        "maxsim_ratio_vs_numpy": round(numpy_best / fast, 2),
        "maxsim_ratio_vs_torch": round(best[torch_name] / fast, 2) if torch_name else None,
    })
    res.details["seconds_best"] = best
    res.finish()


if __name__ == "__main__":
    main()
