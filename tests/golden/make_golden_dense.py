"""Writes the golden dense (HNSW) index files of format version 2 (see README.md here).

    python tests/golden/make_golden_dense.py [--force]

The vectors come from a fixed generator (values in eighths, so that every score is exact in
float32) and the graphs are built single-threaded with the generic kernels, so the files are
the same on every machine; the expected results are hard-coded in tests/test_dense_core.py.
Existing files are kept unless --force is given: a golden file of a released format version
must never be regenerated.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from fastrag import _core

HERE = Path(__file__).resolve().parent

N, DIM = 40, 16
FIRST_BATCH = 25  # two add() calls: ids 0..24, then 25..39
DELETED = [7]
EXTRA = b"fastrag golden dense v1 \x00\xff\n"


def vectors() -> np.ndarray:
    """40 x 16 values in {-1, -7/8, ..., 1} from a 31-bit linear congruential generator
    (seed 2), written out so that no library's random stream is involved; rows distinct."""
    values = []
    state = 2
    for _ in range(N * DIM):
        state = (state * 1103515245 + 12345) % (1 << 31)
        values.append((state >> 16) % 17 - 8)
    return (np.array(values, dtype=np.float32) / 8).reshape(N, DIM)


@contextmanager
def generic_kernels() -> Iterator[None]:
    """The kernels are chosen when an index is created: the generic ones give the same
    distances, hence the same graph, on every CPU."""
    old = os.environ.get("FASTRAG_KERNELS")
    os.environ["FASTRAG_KERNELS"] = "generic"
    try:
        yield
    finally:
        if old is None:
            del os.environ["FASTRAG_KERNELS"]
        else:
            os.environ["FASTRAG_KERNELS"] = old


def build(metric: str, storage: str, keep_float: bool) -> _core.HnswIndex:
    with generic_kernels():
        index = _core.HnswIndex(
            DIM,
            metric=metric,
            storage=storage,
            keep_float=keep_float,
            M=4,
            ef_construction=16,
            seed=100,
        )
    x = vectors()
    index.add(np.ascontiguousarray(x[:FIRST_BATCH]), threads=1)
    index.add(np.ascontiguousarray(x[FIRST_BATCH:]), threads=1)
    index.remove(np.array(DELETED, dtype=np.uint32))
    return index


# Version 1 files (dense_v1.frdx, dense_v1_int8.frdx) were written by this script's version-1
# form with the first two builds below; fastrag now writes version 2 and they stay as they are.
FILES: dict[str, Callable[[], _core.HnswIndex]] = {
    "dense_v2.frdx": lambda: build("ip", "float32", False),
    "dense_v2_int8.frdx": lambda: build("l2", "int8", True),
    "dense_v2_int4.frdx": lambda: build("ip", "int4", False),
}


def main(argv: list[str]) -> int:
    force = "--force" in argv
    for name, make in FILES.items():
        path = HERE / name
        if path.exists() and not force:
            print(f"keeping {path} (use --force to overwrite)")
            continue
        make().save(str(path), EXTRA)
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
