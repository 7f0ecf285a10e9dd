"""Writes the golden index files of the current format version (see README.md in this folder).

    python tests/golden/make_golden.py [--force]

The inputs are hard-coded so that the files are reproducible; the expected statistics and
results are hard-coded in tests/test_bm25_core.py. Existing files are kept unless --force is
given: a golden file of a released format version must never be regenerated.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from fastrag import _core

HERE = Path(__file__).resolve().parent

# Six documents as token ids; document 3 is deleted after the second add() call.
DOCS_A = [[0, 1, 2, 1], [1, 3], [0, 0, 4, 5, 2]]
DOCS_B = [[2, 6], [7, 1, 0], [5, 5, 5, 3]]
DELETED = [3]
EXTRA = b"fastrag golden v1 \x00\xff\n"

# Impact scoring: (term, weight) pairs per document; document 1 is deleted. Document 0 holds
# term 2 twice: the larger weight (3.0) is kept. Weights are exact binary fractions.
IMPACT_DOCS = [
    [(0, 1.5), (2, 0.5), (2, 3.0)],
    [(1, 2.0), (3, 0.25)],
    [(0, 0.75), (1, 1.0), (3, 4.0)],
    [(4, 2.5)],
]
IMPACT_DELETED = [1]


def csr(docs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.zeros(len(docs) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(d) for d in docs])
    flat = np.array([t for d in docs for t in d], dtype=np.uint32)
    return indptr, flat


def build_bm25(method: str, k1: float, b: float, delta: float) -> _core.SparseIndex:
    index = _core.SparseIndex(scoring="bm25", method=method, k1=k1, b=b, delta=delta)
    index.add(*csr(DOCS_A))
    index.add(*csr(DOCS_B))
    index.remove(np.array(DELETED, dtype=np.uint32))
    return index


def build_impact() -> _core.SparseIndex:
    index = _core.SparseIndex(scoring="impact")
    indptr, flat = csr([[t for t, _ in d] for d in IMPACT_DOCS])
    values = np.array([w for d in IMPACT_DOCS for _, w in d], dtype=np.float32)
    index.add(indptr, flat, values)
    index.remove(np.array(IMPACT_DELETED, dtype=np.uint32))
    return index


# Files of the version fastrag writes (2: compressed postings). The version-1 files, written by
# this script before the bump with the same inputs under *_v1 names, stay committed as they are.
FILES = {
    "sparse_v2.fridx": lambda: build_bm25("lucene", 1.2, 0.75, 0.5),
    "sparse_v2_bm25plus.fridx": lambda: build_bm25("bm25+", 1.5, 0.5, 1.0),
    "sparse_v2_impact.fridx": build_impact,
}


def main(argv: list[str]) -> int:
    force = "--force" in argv
    for name, build in FILES.items():
        path = HERE / name
        if path.exists() and not force:
            print(f"keeping {path} (use --force to overwrite)")
            continue
        build().save(str(path), EXTRA)
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
