"""Fan-out search over a sharded collection.

A router holds one handle per shard: a `LocalShard` (the shard's collection opened in this
process) or, in Ray mode, an actor holding one (`fastrag.distributed.ray_backend`). Opening
merges every shard's BM25 statistics (live documents, summed lengths, document frequency by
term string) and hands them back to each shard, so that a shard scores exactly as one index
over all the shards would: same ids, same scores, bit for bit.

A query is embedded once by the router (shards get the vector) and sent to every shard at
once; each leg's top-k is merged across shards before fusion. Per leg the merge is exact for
BM25 and the learned sparse legs, and for dense as exact as each shard's HNSW search (recall
measured in benchmarks/bench_distributed.py). Documents never span shards (shards split the
documents, not their chunks), so a document-level merge loses nothing.

A shard that is missing when opened, or fails during a search, gives partial results and a
`ShardMissingWarning` naming it (``on_missing="warn"``, the default), or a
`ShardMissingError` (``on_missing="error"``): never a silent loss.
"""

from __future__ import annotations

import heapq
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fastrag.collection import Collection
from fastrag.distributed.build import make_encoder
from fastrag.distributed.manifest import (
    Manifest,
    ShardMismatchError,
    ShardMissingError,
    ShardMissingWarning,
    check_same,
    identity_of,
)
from fastrag.encoders.base import Encoder
from fastrag.search.fusion import rrf
from fastrag.search.pipeline import Result, StageScore

log = logging.getLogger(__name__)

LEGS = ("bm25", "dense", "splade", "bm42", "late")
MISSING = ("warn", "error")

Stats = tuple[int, float, dict[str, int]]


class ShardHandle(Protocol):
    """What the router asks of a shard (in this process or in a Ray actor)."""

    def identity(self) -> dict[str, Any]: ...
    def bm25_stats(self) -> Stats: ...
    def set_global_stats(self, n_docs: int, total_len: float, df: dict[str, int]) -> None: ...
    def search(self, queries: list[str], k: int, leg: str, vectors: np.ndarray | None,
               filter: Mapping[str, Any] | None = None) -> list[list[Result]]: ...


class LocalShard:
    """A shard's collection opened in this process."""

    def __init__(self, path: str | os.PathLike[str], encoder: Encoder | None = None,
                 mmap: bool = False) -> None:
        self.collection = Collection.open(path, encoder=encoder, mmap=mmap)

    def identity(self) -> dict[str, Any]:
        ident = identity_of(self.collection.settings)
        bm25 = self.collection.bm25
        if bm25 is not None:
            core = bm25._core
            ident["bm25"] = {"method": bm25.method, "k1": round(float(core.k1), 6),
                             "b": round(float(core.b), 6), "delta": round(float(core.delta), 6)}
        return ident

    def bm25_stats(self) -> Stats:
        bm25 = self.collection.bm25
        return (0, 0.0, {}) if bm25 is None else bm25.collection_stats()

    def set_global_stats(self, n_docs: int, total_len: float, df: dict[str, int]) -> None:
        bm25 = self.collection.bm25
        if bm25 is not None:
            bm25.set_global_stats(n_docs, total_len, df)

    def search(self, queries: list[str], k: int, leg: str, vectors: np.ndarray | None,
               filter: Mapping[str, Any] | None = None) -> list[list[Result]]:
        if leg not in self.collection.legs():
            raise ValueError(f"this collection has no {leg!r} leg (it has "
                             f"{', '.join(self.collection.legs())})")
        use = vectors if leg in ("dense", "late") else None
        return self.collection.search_batch(queries, k, method=leg, vectors=use, threads=1,
                                            filter=filter)

    def close(self) -> None:
        self.collection.close()


def merge_stats(parts: Sequence[Stats]) -> Stats:
    """The statistics of the union of shards: sums of N, lengths and document frequencies."""
    n, total = 0, 0.0
    df: dict[str, int] = {}
    for pn, ptotal, pdf in parts:
        n += pn
        total += ptotal
        for t, c in pdf.items():
            df[t] = df.get(t, 0) + c
    return n, total, df


def merge_topk(per_shard: Sequence[Sequence[Result]], k: int) -> list[Result]:
    """The k best of the shards' best-first lists: by score, then shard order, then rank
    (the order one index over the shards, in document order, breaks ties in)."""
    keyed = ((-r.score, s, i, r) for s, rs in enumerate(per_shard) for i, r in enumerate(rs))
    return [t[3] for t in heapq.nsmallest(k, keyed, key=lambda t: t[:3])]


class ShardedCollection:
    """A sharded collection (``shards.json`` + one collection per shard) searched by fan-out.

    >>> sc = ShardedCollection.open("corpus.frs")
    >>> sc.search("which text?", k=5, method="bm25")

    Args of `open`:
        encoder: the encoder object (default: the model named in the manifest, loaded once
            here; in Ray mode once per actor too).
        on_missing: "warn" (partial results and a ShardMissingWarning) or "error".
        mode: "local" (shards opened in this process) or "ray" (one actor per shard).
    """

    def __init__(self, path: Path, manifest: Manifest, handles: dict[str, ShardHandle],
                 encoder: Encoder | None, on_missing: str,
                 closer: Callable[[], None] | None = None) -> None:
        self.path = path
        self.manifest = manifest
        self.handles = handles
        self.encoder = encoder
        self.on_missing = on_missing
        self.missing: list[str] = [s for s in manifest.shards if s not in handles]
        self._closer = closer
        self._threads: ThreadPoolExecutor | None = None
        self.stats: Stats = (0, 0.0, {})

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        encoder: Encoder | str | None = None,
        on_missing: str = "warn",
        mode: str = "local",
        ray_address: str | None = None,
        mmap: bool = False,
    ) -> ShardedCollection:
        if on_missing not in MISSING:
            raise ValueError(f"on_missing must be 'warn' or 'error', got {on_missing!r}")
        if mode not in ("local", "ray"):
            raise ValueError(f"mode must be 'local' or 'ray', got {mode!r}")
        folder = Path(path)
        manifest = Manifest.load(folder)
        enc_spec: Encoder | str | None = encoder
        if enc_spec is None and manifest.identity.get("encoder"):
            model = (manifest.encoder or {}).get("model")
            if model is None:
                raise ValueError(f"{folder} was built with an encoder object; pass encoder=")
            enc_spec = model
        quantize = (manifest.encoder or {}).get("quantize")
        enc = make_encoder(enc_spec, quantize=quantize if isinstance(enc_spec, str) else None)
        handles: dict[str, ShardHandle] = {}
        errors: dict[str, BaseException] = {}
        closer: Callable[[], None] | None = None
        if mode == "ray":
            from fastrag.distributed.ray_backend import open_actors

            handles, errors, closer = open_actors(folder, manifest, enc_spec, quantize,
                                                  ray_address, mmap)
        else:
            for name in manifest.shards:
                try:
                    handles[name] = LocalShard(folder / name, enc, mmap)
                except Exception as e:  # missing folder, damaged files: reported below
                    if "was built with" in str(e):  # another encoder: refused, not missing
                        raise ShardMismatchError(f"shard {name}: {e}") from e
                    errors[name] = e
        router = cls(folder, manifest, handles, enc, on_missing, closer)
        try:
            if errors:
                router._lost(errors, "opening")
            router._check_identity()
            router.refresh_stats()
        except BaseException:
            router.close()
            raise
        return router

    def _check_identity(self) -> None:
        found = [("manifest", self.manifest.identity)]
        found += [(n, h.identity()) for n, h in self.handles.items()]
        for _, ident in found[1:]:
            found[0][1].setdefault("bm25", ident.get("bm25"))
        check_same(found)
        if self.encoder is not None:
            fp = (self.manifest.identity.get("encoder") or {}).get("fingerprint")
            if fp is not None and fp != self.encoder.fingerprint:
                raise ShardMismatchError(f"the shards were built with encoder {fp}, not "
                                         f"{self.encoder.fingerprint}")

    def refresh_stats(self) -> None:
        """Merges the live shards' BM25 statistics and gives them to every shard."""
        parts, errors = self._fan_out(lambda h: h.bm25_stats())
        if errors:
            self._lost(errors, "reading statistics")
        self.stats = merge_stats([parts[n] for n in self.manifest.shards if n in parts])
        n, total, df = self.stats
        _, errors = self._fan_out(lambda h: h.set_global_stats(n, total, df))
        if errors:
            self._lost(errors, "setting statistics")

    def _lost(self, errors: dict[str, BaseException], when: str) -> None:
        names = sorted(errors)
        detail = "; ".join(f"{n}: {errors[n]}" for n in names)
        if self.on_missing == "error":
            raise ShardMissingError(f"{len(names)} of {len(self.manifest.shards)} shards "
                                    f"unavailable when {when} ({detail})")
        for n in names:
            self.handles.pop(n, None)
            if n not in self.missing:
                self.missing.append(n)
        warnings.warn(
            f"results come from {len(self.handles)} of {len(self.manifest.shards)} shards: "
            f"{', '.join(sorted(self.missing))} unavailable when {when} ({detail}); "
            + ("BM25 statistics are those of the shards left" if when == "opening" else
               "BM25 scores still use the statistics of all the shards"),
            ShardMissingWarning, stacklevel=4)

    # ------------------------------------------------------------------ search
    def legs(self) -> tuple[str, ...]:
        ident = self.manifest.identity
        legs = ["bm25"]
        if ident.get("encoder"):
            legs.append("dense")
        if ident.get("sparse"):
            legs.append(str(ident["sparse"]))
        if ident.get("late_chunking"):
            legs.append("late")
        return tuple(legs)

    def search(self, query: str, k: int = 10, *, method: str = "hybrid", depth: int = 100,
               rrf_k: float = 20.0, filter: Mapping[str, Any] | None = None) -> list[Result]:
        """The k best documents over every shard (see `search_batch`)."""
        return self.search_batch([query], k, method=method, depth=depth, rrf_k=rrf_k,
                                 filter=filter)[0]

    def search_batch(self, queries: Sequence[str], k: int = 10, *, method: str = "hybrid",
                     depth: int = 100, rrf_k: float = 20.0,
                     vectors: np.ndarray | None = None,
                     filter: Mapping[str, Any] | None = None) -> list[list[Result]]:
        """One leg by name ("bm25", "dense", ...): each shard's top k, merged (exact).
        "hybrid": the first two legs' top `depth` each merged across shards, then RRF
        (k = `rrf_k`). `filter` is a metadata filter as `Collection.search` takes it, applied
        inside every shard's top-k (so a filtered BM25 search stays exact)."""
        queries = list(queries)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        legs = self.legs()
        if method == "hybrid":
            use = list(legs[:2])
        elif method in LEGS:
            if method not in legs:
                raise ValueError(f"no {method!r} leg in these shards (legs: {', '.join(legs)})")
            use = [method]
        else:
            raise ValueError(f"unknown method {method!r}; use hybrid or one of {', '.join(legs)}")
        if vectors is None and self.encoder is not None and {"dense", "late"} & set(use):
            vectors = self.encoder.encode_queries(queries)
        if not self.handles:
            return [[] for _ in queries]
        depth_ = k if len(use) == 1 else max(k, depth)
        per_leg = {leg: self._leg(queries, depth_, leg, vectors, filter) for leg in use}
        if len(use) == 1:
            return per_leg[use[0]]
        out = []
        for qi in range(len(queries)):
            rankings = [[(r.id, r.score) for r in per_leg[leg][qi]] for leg in use]
            best: dict[str, Result] = {}
            stages: dict[str, dict[str, StageScore]] = {}
            for leg in use:
                for rank, r in enumerate(per_leg[leg][qi], start=1):
                    best.setdefault(r.id, r)
                    stages.setdefault(r.id, {})[leg] = StageScore(r.score, rank)
            results = []
            for rank, (doc, score) in enumerate(rrf(rankings, k=rrf_k)[:k], start=1):
                r = best[doc]
                st = dict(stages[doc])
                st["fusion"] = StageScore(float(score), rank)
                results.append(Result(r.id, float(score), r.text, r.metadata, r.span, st))
            out.append(results)
        return out

    def _leg(self, queries: list[str], k: int, leg: str, vectors: np.ndarray | None,
             filter: Mapping[str, Any] | None = None) -> list[list[Result]]:
        parts, errors = self._fan_out(lambda h: h.search(queries, k, leg, vectors, filter))
        if errors:
            self._lost(errors, "searching")
        names = [n for n in self.manifest.shards if n in parts]
        return [merge_topk([parts[n][qi] for n in names], k) for qi in range(len(queries))]

    def _fan_out(self, call: Callable[[ShardHandle], Any]
                 ) -> tuple[dict[str, Any], dict[str, BaseException]]:
        """call(handle) on every shard; a shard that fails other than on the input is
        reported, not raised. Remote shards (Ray actors) are called at once from threads
        (their waits release the GIL); shards in this process one after the other (threads
        cost more than they save on small shards: measured 2.2 against 1.4 ms per query for
        two shards of 1,000 documents)."""
        items = list(self.handles.items())
        out: dict[str, Any] = {}
        errors: dict[str, BaseException] = {}
        futures = None
        if len(items) > 1 and not all(isinstance(h, LocalShard) for _, h in items):
            pool = self._pool()
            futures = {name: pool.submit(call, h) for name, h in items}
        for name, h in items:
            try:
                out[name] = call(h) if futures is None else futures[name].result()
            except (ValueError, TypeError):
                raise  # the query is wrong, not the shard
            except Exception as e:  # files gone or damaged, an actor died
                errors[name] = e
        return out, errors

    def _pool(self) -> ThreadPoolExecutor:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max_workers=min(32, len(self.manifest.shards)),
                                               thread_name_prefix="fastrag-shard")
        return self._threads

    def close(self) -> None:
        for h in self.handles.values():
            close = getattr(h, "close", None)
            if close is not None:
                close()
        self.handles = {}
        if self._threads is not None:
            self._threads.shutdown()
            self._threads = None
        if self._closer is not None:
            self._closer()
            self._closer = None

    def __enter__(self) -> ShardedCollection:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()
