"""Fan-out search over a sharded collection.

A router holds one handle per shard: a `LocalShard` (the shard's collection opened in this
process) or, in Ray mode, an actor holding one (`fastrag.distributed.ray_backend`). Opening
merges every shard's BM25 statistics (live documents, summed lengths, document frequency by
term string) and hands them back to each shard, so that a shard scores exactly as one index
over all the shards would: same ids, same scores, bit for bit.

A query is embedded once by the router (shards get the vector) and sent to every shard. One
leg by name: each shard's top-k documents, merged. Several legs ("hybrid", `retrievers=`, a
`fastrag.search.Pipeline`): the same pipeline as a single collection runs over a corpus whose
legs fan out (`FanOutCorpus`): each leg's top-depth chunks are merged across shards, then
fused, grouped into documents and deepened exactly as in one collection. Per leg the merge is
exact for BM25 and SPLADE (no statistics but BM25's, which are global), and for dense as
exact as each shard's HNSW search (recall measured in benchmarks/bench_distributed.py); BM42
weighs query words by each shard's own idf, so its leg is close, not exact. Documents never
span shards (shards split the documents, not their chunks), so a merge loses nothing.

A shard that is missing when opened, or fails during a search, gives partial results and a
`ShardMissingWarning` naming it (``on_missing="warn"``, the default), or a
`ShardMissingError` (``on_missing="error"``): never a silent loss.
"""

from __future__ import annotations

import heapq
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import numpy as np

from fastrag.distributed.build import make_encoder
from fastrag.distributed.manifest import (
    Manifest,
    ShardMismatchError,
    ShardMissingError,
    ShardMissingWarning,
    check_same,
    load_stats,
    save_stats,
)
from fastrag.distributed.shards import (
    LocalShard,
    ShardHandle,
    Stats,
    merge_stats,
    merge_topk,
)
from fastrag.encoders.base import Encoder
from fastrag.encoders.models import SpladeEncoder
from fastrag.search.corpus import ChunkHit, Corpus, Document
from fastrag.search.pipeline import Pipeline, Result, default_pipeline, fused_pipeline

log = logging.getLogger(__name__)

LEGS = ("bm25", "dense", "splade", "bm42", "late")
MISSING = ("warn", "error")

SHARD_BITS = 40  # chunk ids of the router: shard position << 40 | the shard's chunk id


class ShardedCollection:
    """A sharded collection (``shards.json`` + one collection per shard) searched by fan-out.

    >>> sc = ShardedCollection.open("corpus.frs")
    >>> sc.search("which text?", k=5, method="bm25")

    Args of `open`:
        encoder: the encoder object (default: the model named in the manifest, loaded once
            here; in Ray mode once per actor too).
        on_missing: "warn" (partial results and a ShardMissingWarning) or "error".
        mode: "local" (shards opened in this process) or "ray" (one actor per shard).
        splade: the SPLADE model of shards with a SPLADE leg, when they were built with a
            model object (by default each shard loads the model it names).
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
        self.profiles: dict[str, dict[str, Any]] = {}  # per shard, see LocalShard.profile
        self.positions = {name: i for i, name in enumerate(manifest.shards)}

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
        splade: SpladeEncoder | str | None = None,
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
                    handles[name] = LocalShard(folder / name, enc, mmap, splade)
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
        """Merges the live shards' BM25 statistics and gives them to every shard. The merged
        statistics are cached in the folder (``bm25-stats.json``) under the shards' names
        and fingerprints (`LocalShard.fingerprint`): the next open of the same shards in the
        same states reads them instead of asking every shard; any commit to a shard, a
        shard built again or a shard missing is another key, and they are merged again."""
        prints, errors = self._fan_out(lambda h: h.fingerprint())
        if errors:
            self._lost(errors, "reading statistics")
        key = {n: prints[n] for n in self.manifest.shards if n in prints}
        cached = load_stats(self.path, key)
        if cached is None:
            parts, errors = self._fan_out(lambda h: h.bm25_stats())
            if errors:
                self._lost(errors, "reading statistics")
            self.stats = merge_stats([parts[n] for n in self.manifest.shards if n in parts])
            if set(parts) == set(key) and not save_stats(self.path, key, self.stats):
                log.debug("%s cannot be written: no cache of the BM25 statistics", self.path)
        else:
            self.stats = cached
        n, total, df = self.stats
        _, errors = self._fan_out(lambda h: h.set_global_stats(n, total, df))
        if errors:
            self._lost(errors, "setting statistics")
        self.profiles, errors = self._fan_out(lambda h: h.profile())
        if errors:
            self._lost(errors, "reading leg sizes")

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

    def search(self, query: str, k: int = 10, *, method: str | Pipeline = "hybrid",
               retrievers: Sequence[str] | None = None,
               filter: Mapping[str, Any] | None = None, explain: bool = False,
               vector: np.ndarray | None = None) -> list[Result]:
        """The k best documents over every shard (see `search_batch`)."""
        vectors = None if vector is None else np.asarray(vector, dtype=np.float32)[None, :]
        return self.search_batch([query], k, method=method, retrievers=retrievers,
                                 filter=filter, explain=explain, vectors=vectors)[0]

    def search_batch(self, queries: Sequence[str], k: int = 10, *,
                     method: str | Pipeline = "hybrid",
                     retrievers: Sequence[str] | None = None,
                     filter: Mapping[str, Any] | None = None, explain: bool = False,
                     vectors: np.ndarray | None = None) -> list[list[Result]]:
        """As `Collection.search_batch`, over every shard.

        `method`: one leg by name ("bm25", "dense", ...): each shard's top k documents,
        merged (exact for BM25 and SPLADE). "hybrid" (BM25 + dense, RRF k 20: a single
        collection's built-in default), a `fastrag.search.Pipeline` without rerank stages,
        or `retrievers` (leg names fused with RRF, as ``fastrag search --retrievers``): the
        same pipeline as one collection runs, each leg's top-depth chunks merged across
        shards before the fusion. `filter` is a metadata filter as `Collection.search`
        takes it, applied inside every shard (so a filtered BM25 search stays exact)."""
        queries = list(queries)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        legs = self.legs()
        corpus = FanOutCorpus(self)
        if retrievers is not None:
            names = [r.strip() for r in retrievers if r.strip()]
            self._check_legs(names)
            pipeline = fused_pipeline(names)
        elif isinstance(method, Pipeline):
            pipeline = method
        elif method == "hybrid":
            pipeline = default_pipeline(cast(Corpus, corpus), "hybrid")
        elif method in LEGS:
            self._check_legs([method])
            if vectors is None and self.encoder is not None and method in ("dense", "late"):
                vectors = self.encoder.encode_queries(queries)
            if not self.handles:
                return [[] for _ in queries]
            return self._leg(queries, k, method, vectors, filter)
        else:
            raise ValueError(f"unknown method {method!r}; use hybrid, one of {', '.join(legs)} "
                             "or a Pipeline")
        if pipeline.rerankers:
            raise ValueError("rerank stages are not run over shards: search with the legs and "
                             "rerank the results, or merge the shards (fastrag merge)")
        self._check_legs([r.method for r in pipeline.retrievers])
        if not self.handles:
            return [[] for _ in queries]
        # a pipeline without rerank stages, in Python (corpus.native is False), reads only
        # what FanOutCorpus answers: legs, languages, index(leg).search, allowed_chunks,
        # chunks_of and texts_of (no chunk table, no stored vectors)
        return pipeline.search_batch(cast(Corpus, corpus), queries, k=k, filter=filter,
                                     explain=explain, vectors=vectors, threads=1)

    def _check_legs(self, names: Sequence[str]) -> None:
        legs = self.legs()
        if not names:
            raise ValueError(f"give at least one leg (legs: {', '.join(legs)})")
        for name in names:
            if name not in legs:
                raise ValueError(f"no {name!r} leg in these shards (legs: {', '.join(legs)})")

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

    def leg_search(self, leg: str, query: Any, k: int, filter: Mapping[str, Any] | None,
                   options: dict[str, Any]) -> list[tuple[int, float, ChunkHit]]:
        """One leg's best k chunks over every shard for one query: each shard's best k,
        merged by score, then shard order, then rank (one index's order of ties), with the
        router's chunk ids (`SHARD_BITS`)."""
        parts, errors = self._fan_out(lambda h: h.leg_search(leg, query, k, filter, options))
        if errors:
            self._lost(errors, "searching")
        keyed = []
        for name, rows in parts.items():
            pos = self.positions[name]
            keyed += [(-row[1], pos, rank, row) for rank, row in enumerate(rows)]
        out = []
        for _, pos, _, (chunk, score, doc, start, end) in heapq.nsmallest(k, keyed,
                                                                          key=lambda t: t[:3]):
            gid = pos << SHARD_BITS | chunk
            out.append((gid, score, ChunkHit(gid, doc, start, end)))
        return out

    def documents(self, doc_ids: Sequence[str], shards: Mapping[str, int]
                  ) -> dict[str, Document]:
        """The documents `doc_ids`, each read from the shard (position) `shards` names."""
        wanted: dict[str, list[str]] = {}
        names = self.manifest.shards
        for d in doc_ids:
            if d in shards:
                wanted.setdefault(names[shards[d]], []).append(d)
        out: dict[str, Document] = {}
        for name, ids in wanted.items():
            handle = self.handles.get(name)
            if handle is None:
                continue
            try:
                out.update(handle.documents(ids))
            except (ValueError, TypeError):
                raise
            except Exception as e:  # files gone or damaged, an actor died
                self._lost({name: e}, "reading documents")
        return out

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


class _Hit:
    __slots__ = ("id", "score")

    def __init__(self, id: int, score: float) -> None:
        self.id, self.score = id, score


class _FanOutLeg:
    """A leg of a `FanOutCorpus`: ``search`` asks every shard and merges (see
    `ShardedCollection.leg_search`)."""

    def __init__(self, corpus: FanOutCorpus, leg: str) -> None:
        self.corpus, self.leg = corpus, leg

    def __len__(self) -> int:
        return sum(p["legs"].get(self.leg, 0) for p in self.corpus.router.profiles.values())

    def search(self, query: Any, k: int, *, filter: Any = None,
               **options: Any) -> list[list[_Hit]]:
        spec = filter.spec if isinstance(filter, _Allowed) else None
        if filter is not None and spec is None:
            raise TypeError("a sharded corpus filters by metadata (Collection.search's filter)")
        return [self.corpus.keep(self.corpus.router.leg_search(self.leg, query, k, spec,
                                                               options))]


class _Allowed:
    """What `FanOutCorpus.allowed_chunks` gives a pipeline: the metadata filter itself, which
    every shard applies (the chunk ids it allows stay in the shards)."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = spec


class FanOutCorpus:
    """The `Corpus` a pipeline searches over a sharded collection: each leg's search fans out
    to the shards (chunk ids: shard position << `SHARD_BITS` | the shard's chunk id), the
    chunks found are remembered for `chunks_of`, documents are read from their shard.
    Searched in Python (``native = False``); made for one search call."""

    native = False

    def __init__(self, router: ShardedCollection) -> None:
        self.router = router
        self._chunks: dict[int, ChunkHit] = {}
        self._where: dict[str, int] = {}  # document -> shard position

    @property
    def encoder(self) -> Encoder | None:
        return self.router.encoder

    def _profile(self) -> dict[str, Any]:
        profiles = self.router.profiles
        if not profiles:
            return {"legs": {}, "leg_languages": {}, "encoder_languages": ["en"]}
        return profiles[min(profiles, key=self.router.positions.__getitem__)]

    @property
    def encoder_languages(self) -> frozenset[str]:
        return frozenset(self._profile()["encoder_languages"])

    def legs(self) -> tuple[str, ...]:
        return self.router.legs()

    def leg_languages(self, leg: str) -> frozenset[str]:
        return frozenset(self._profile()["leg_languages"].get(leg, ["en"]))

    def languages(self) -> dict[str, float]:
        """Share of chunks per language over the shards (each shard's shares by its chunks)."""
        total = sum(p["chunks"] for p in self.router.profiles.values())
        out: dict[str, float] = {}
        for p in self.router.profiles.values():
            for lang, share in p["languages"].items():
                out[lang] = out.get(lang, 0.0) + share * p["chunks"] / max(total, 1)
        return out

    def index(self, leg: str) -> _FanOutLeg:
        self.router._check_legs([leg])
        return _FanOutLeg(self, leg)

    def allowed_chunks(self, spec: Mapping[str, Any]) -> _Allowed:
        return _Allowed(spec)

    def keep(self, found: list[tuple[int, float, ChunkHit]]) -> list[_Hit]:
        for gid, _, hit in found:
            self._chunks[gid] = hit
            self._where[hit.doc] = gid >> SHARD_BITS
        return [_Hit(gid, score) for gid, score, _ in found]

    def chunks_of(self, chunk_ids: Iterable[int]) -> dict[int, ChunkHit]:
        return {c: self._chunks[c] for c in chunk_ids if c in self._chunks}

    def texts_of(self, doc_ids: Iterable[str]) -> dict[str, Document]:
        return self.router.documents(list(doc_ids), self._where)
