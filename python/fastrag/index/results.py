"""Search results: numpy arrays for batch work, lists of hits for reading."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

DocId = str | int
"""A document id as the user gave it: a string, or an int (indexes number documents
added without ids)."""


@dataclass(frozen=True)
class Hit:
    """One retrieved document: the user's id and its score."""

    id: DocId
    score: float


@dataclass(frozen=True)
class SearchResults:
    """Top-k results of a batch of queries.

    ``ids`` is an object array (n_queries, k) of the user's document ids, ``None`` where a
    query matched fewer than k documents; ``scores`` is float32 (n_queries, k), ``-inf`` there.
    ``results[i]`` gives query i's hits, best first, without the padding.
    """

    ids: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __getitem__(self, i: int) -> list[Hit]:
        row_ids, row_scores = self.ids[i], self.scores[i]
        n = int(np.count_nonzero(np.isfinite(row_scores)))
        return [Hit(row_ids[j], float(row_scores[j])) for j in range(n)]

    def __iter__(self) -> Iterator[list[Hit]]:
        for i in range(len(self)):
            yield self[i]
