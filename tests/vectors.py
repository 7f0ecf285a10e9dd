"""Reference scores of the dense tests, computed in numpy (float64)."""

from __future__ import annotations

import numpy as np


def reference_scores(vectors: np.ndarray, queries: np.ndarray, metric: str) -> np.ndarray:
    """(n_queries, n) higher-is-better scores in float64: the similarity for cosine / ip, the
    negated squared distance for l2."""
    x = np.asarray(vectors, dtype=np.float64)
    q = np.asarray(queries, dtype=np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    if metric == "l2":
        return -((q * q).sum(1)[:, None] - 2 * q @ x.T + (x * x).sum(1)[None, :])
    return q @ x.T
