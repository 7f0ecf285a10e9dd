"""Scaling out: sharded builds with exact global BM25 statistics, fan-out search, merging.

Local execution (a process pool) is the default; ``pip install "fastrag-engine[distributed]"``
adds Ray (`executor="ray"`, `mode="ray"`), which runs the same code in Ray Data actors
(building) and Ray actors (serving).
"""

from fastrag.collection.ingest import read_paths
from fastrag.distributed.build import ShardReport, build_shards, split_contiguous
from fastrag.distributed.manifest import (
    Manifest,
    ShardError,
    ShardMismatchError,
    ShardMissingError,
    ShardMissingWarning,
    is_sharded,
)
from fastrag.distributed.merge import merge_shards
from fastrag.distributed.router import ShardedCollection
from fastrag.distributed.shards import LocalShard, merge_stats, merge_topk

__all__ = [
    "LocalShard",
    "Manifest",
    "ShardError",
    "ShardMismatchError",
    "ShardMissingError",
    "ShardMissingWarning",
    "ShardReport",
    "ShardedCollection",
    "build_shards",
    "is_sharded",
    "merge_shards",
    "merge_stats",
    "merge_topk",
    "read_paths",
    "split_contiguous",
]
