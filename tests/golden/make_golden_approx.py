"""Writes the golden approximate-index file (see README.md in this folder).

    python tests/golden/make_golden_approx.py [--force]

A tiny ApproxImpactIndex (format version 2: blocks made per list, each with its own summary)
over hard-coded vectors, one thread, document "d2" deleted; tests/test_sparse_approx.py loads it
and checks the results hard-coded there. The file is kept unless --force is given: never
regenerate the file of a released version (approx_v1.frax, format version 1, was written by the
version-1 code with the same vectors and settings; it is now refused with a clear error).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from fastrag import ApproxImpactIndex

HERE = Path(__file__).resolve().parent

# (term, weight) pairs per document; the weights are exact binary fractions.
DOCS = [
    [(0, 1.5), (2, 0.5), (5, 3.0)],
    [(1, 2.0), (3, 0.25)],
    [(0, 0.75), (1, 1.0), (3, 4.0)],
    [(4, 2.5), (5, 0.5)],
    [(0, 2.0), (5, 1.0)],
]
IDS = ["d0", "d1", "d2", "d3", "d4"]


def vectors() -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.array([t for t, _ in d]), np.array([w for _, w in d], dtype=np.float32))
            for d in DOCS]


def main() -> None:
    path = HERE / "approx_v2.frax"
    if path.exists() and "--force" not in sys.argv:
        print(f"{path.name} exists (pass --force to overwrite)")
        return
    index = ApproxImpactIndex(vectors(), IDS, vocab_size=8, list_size=3, cluster_size=2,
                              summary_energy=1.0, quantize=False, threads=1)
    index.delete("d2")
    index.save(path)
    print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
