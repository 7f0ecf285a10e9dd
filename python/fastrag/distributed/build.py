"""Building a sharded collection: the documents cut into N contiguous parts, one collection
per part, built by worker processes (a local process pool, or the actors of a Ray Data
pipeline on a cluster: the same `build_shard` function runs in both).

Two phases. First every shard is built on its own (chunked, embedded, indexed, committed).
Then the vocabularies are aligned: the term ids of each shard's BM25 index are renumbered in
the order in which one index over all the documents would have met them (shards are in
document order), so that every shard adds up a query's terms in the same order as that index
and scores agree to the last bit (`fastrag.distributed.router`). The second phase re-reads
each shard's chunks and rebuilds its BM25 index only (no encoder), in parallel too.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastrag.collection import Collection, store
from fastrag.collection.legs import file_name, new_index
from fastrag.distributed.manifest import (
    Manifest,
    ShardError,
    check_same,
    read_identity,
    shard_name,
)
from fastrag.encoders.base import Encoder
from fastrag.encoders.models import TextEncoder
from fastrag.encoders.static import StaticEncoder, is_static_model
from fastrag.index import BM25

log = logging.getLogger(__name__)

EXECUTORS = ("process", "inline", "ray")


@dataclass
class ShardTask:
    """One shard's build: its documents and the collection's settings (picklable)."""

    index: int
    path: str
    texts: list[str]
    ids: list[str]
    metadata: list[dict[str, Any] | None]
    encoder: Encoder | str | None
    quantize: str | None = None
    threads: int = 1  # onnxruntime threads of the worker's encoder
    batch_size: int = 32
    options: dict[str, Any] = field(default_factory=dict)  # Collection.create's other options


@dataclass
class ShardReport:
    index: int
    path: str
    documents: int
    chunks: int
    seconds: float
    terms: list[str]  # the BM25 vocabulary in term-id order


def split_contiguous(n: int, shards: int) -> list[tuple[int, int]]:
    """[start, end) of each shard: n documents in `shards` contiguous, near-equal parts."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    base, extra = divmod(n, shards)
    out, start = [], 0
    for i in range(shards):
        end = start + base + (1 if i < extra else 0)
        out.append((start, end))
        start = end
    return out


def make_encoder(spec: Encoder | str | None, *, threads: int = 0,
                 quantize: str | None = None) -> Encoder | None:
    """The encoder of a worker: a model name is loaded with `threads` onnxruntime threads."""
    if spec is None or isinstance(spec, Encoder):
        return spec
    if is_static_model(spec):
        return StaticEncoder(spec)
    return TextEncoder(spec, threads=threads, quantize=quantize)


def build_shard(task: ShardTask, enc: Encoder | str | None = "load") -> ShardReport:
    """Builds one shard collection from scratch (a retry starts over) and commits it, with
    `enc` (an encoder already loaded by the worker) or the task's encoder loaded here."""
    t0 = time.perf_counter()
    folder = Path(task.path)
    if folder.exists():
        shutil.rmtree(folder)  # a failed attempt's leftovers
    if isinstance(enc, str):
        enc = make_encoder(task.encoder, threads=task.threads, quantize=task.quantize)
    col = Collection.create(folder, encoder=enc, **task.options)
    try:
        if task.texts:
            col.add(task.texts, ids=task.ids, metadata=task.metadata,
                    batch_size=task.batch_size)
        col.commit()
        bm25 = col.bm25
        terms = list(bm25.vocabulary) if bm25 is not None else []
        chunks = len(bm25) if bm25 is not None else 0
    finally:
        col.close()
    if isinstance(task.encoder, str):
        record_model(folder, task.encoder, task.quantize)
    return ShardReport(task.index, task.path, len(task.texts), chunks,
                       time.perf_counter() - t0, terms)


def record_model(folder: Path, model: str, quantize: str | None) -> None:
    """Names the model in the shard's settings (it was built with an encoder object, to set
    its threads), so that the shard opens on its own like any collection."""
    db = store.connect(folder / store.DB)
    try:
        with db:
            settings = store.get_meta(db, "settings")
            settings["encoder"]["model"] = model
            settings["encoder"]["quantize"] = quantize
            store.set_meta(db, "settings", settings)
    finally:
        db.close()


def align_shard(path: str, terms: list[str]) -> int:
    """Rebuilds a shard's BM25 index with its terms numbered in `terms` order (the global
    order); returns the chunks indexed. The file is replaced atomically."""
    folder = Path(path)
    db, settings = store.open_db(folder)
    try:
        gen = store.meta_int(db, "generation")
        docs = dict(db.execute("SELECT id, text FROM documents"))
        rows = db.execute("SELECT chunk, doc, start, end FROM chunks ORDER BY chunk").fetchall()
    finally:
        db.close()
    if gen == 0:
        return 0
    bm25: BM25 = new_index("bm25", settings, None, None)
    bm25.reserve_terms(terms)
    if rows:
        with warnings.catch_warnings():  # empty chunks were reported by the build
            warnings.simplefilter("ignore")
            bm25.add([docs[d][s:e] for _, d, s, e in rows], ids=[int(r[0]) for r in rows])
    bm25.save(folder / file_name("bm25", gen))
    return len(rows)


def global_term_order(vocabularies: Sequence[Sequence[str]]) -> dict[str, int]:
    """Term -> id in the order one index over the shards' documents (in shard order) meets
    them: each shard's terms in its own order, the new ones appended."""
    order: dict[str, int] = {}
    for terms in vocabularies:
        for t in terms:
            order.setdefault(t, len(order))
    return order


def build_shards(
    out: str | os.PathLike[str],
    texts: Sequence[str],
    ids: Sequence[str] | None = None,
    metadata: Sequence[dict[str, Any] | None] | None = None,
    *,
    shards: int = 2,
    workers: int | None = None,
    executor: str = "process",
    ray_address: str | None = None,
    encoder: Encoder | str | None = "default",
    quantize: str | None = None,
    threads: int = 1,
    retries: int = 1,
    batch_size: int = 32,
    progress: Callable[[str], None] | None = None,
    **options: Any,
) -> Manifest:
    """Builds a sharded collection in folder `out` (which must not hold one): `shards`
    collections of contiguous slices of the documents, then ``shards.json``.

    Args:
        executor: "process" (a local process pool of `workers`), "inline" (this process,
            one shard after another) or "ray" (a Ray Data pipeline of `workers` builder
            actors, one encoder session each; `ray_address` to join a cluster, else a
            private local Ray of `workers` CPUs). The same `build_shard` builds each shard.
        encoder: a model name (loaded in every worker with `threads` onnxruntime threads),
            an Encoder object (pickled to the workers) or None (BM25 only).
        retries: how often a failed shard is built again (only that shard).
        options: the other `Collection.create` options (analyzer, chunk_chars, ...).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ValueError(f"shards must be an integer >= 1, got {shards!r}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    texts = list(texts)
    if ids is None:
        ids = [str(i) for i in range(len(texts))]
    ids = [store.check_id(d, f"ids[{i}]") for i, d in enumerate(ids)]
    if len(ids) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(ids)} ids")
    if len(set(ids)) != len(ids):
        raise ValueError("ids repeat: every document id must be unique across shards")
    metas: list[dict[str, Any] | None] = (list(metadata) if metadata is not None
                                          else [None] * len(texts))
    if len(metas) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(metas)} metadata entries")
    folder = Path(out)
    if (folder / "shards.json").exists() or (folder / store.DB).exists():
        raise ShardError(f"{folder} already holds a collection")
    folder.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(workers or os.cpu_count() or 1, shards))
    tasks = [
        ShardTask(i, str(folder / shard_name(i)), texts[a:b], ids[a:b], metas[a:b],
                  encoder, quantize, threads, batch_size, dict(options))
        for i, (a, b) in enumerate(split_contiguous(len(texts), shards))
    ]
    say = progress or (lambda msg: log.info("%s", msg))
    ray_started = None
    if executor == "ray":  # one Ray for both phases (each call below reuses it)
        from fastrag.distributed.ray_backend import start

        ray_mod, started = start(ray_address, workers)
        ray_started = ray_mod if started else None
    try:
        return _build(folder, tasks, encoder, quantize, threads, executor, workers, retries,
                      ray_address, say)
    finally:
        if ray_started is not None:
            ray_started.shutdown()


def _build(folder: Path, tasks: list[ShardTask], encoder: Encoder | str | None,
           quantize: str | None, threads: int, executor: str, workers: int, retries: int,
           ray_address: str | None, say: Callable[[str], None]) -> Manifest:
    if executor == "ray":
        from fastrag.distributed.ray_backend import build_with_ray_data

        reports = build_with_ray_data(tasks, workers=workers, retries=retries,
                                      address=ray_address, say=say)
    elif executor == "inline" or workers == 1 or len(tasks) == 1:
        loaded = make_encoder(encoder, threads=threads, quantize=quantize)  # once for all

        def build_here(t: ShardTask) -> ShardReport:
            return build_shard(t, loaded)

        reports = _run(build_here, tasks, "inline", 1, retries, None, say,
                       lambda t: f"shard {t.index}")
    else:
        reports = _run(build_shard, tasks, executor, workers, retries, ray_address, say,
                       lambda t: f"shard {t.index}")
    reports.sort(key=lambda r: r.index)
    order = global_term_order([r.terms for r in reports])
    align = []
    for r in reports:
        wanted = sorted(r.terms, key=order.__getitem__)
        if wanted != r.terms:
            align.append(_AlignTask(r.index, r.path, wanted))
    if align:
        say(f"aligning the BM25 vocabularies of {len(align)} shards")
        _run(_align, align, executor, workers, retries, ray_address, say,
             lambda t: f"shard {t.index} (vocabulary)")
    identities = [(shard_name(r.index), read_identity(r.path)) for r in reports]
    check_same(identities)
    manifest = Manifest(
        shards=[shard_name(r.index) for r in reports],
        identity=identities[0][1],
        encoder=None if encoder is None else {
            "model": encoder if isinstance(encoder, str) else None, "quantize": quantize},
        documents=[r.documents for r in reports],
    )
    manifest.save(folder)
    return manifest


@dataclass
class _AlignTask:
    index: int
    path: str
    terms: list[str]


def _align(task: _AlignTask) -> int:
    return align_shard(task.path, task.terms)


def _run(fn: Callable[[Any], Any], tasks: list[Any], executor: str, workers: int,
         retries: int, ray_address: str | None, say: Callable[[str], None],
         name: Callable[[Any], str]) -> list[Any]:
    """fn over tasks; a failed task is run again up to `retries` times, then ShardError."""
    if executor == "ray":
        from fastrag.distributed.ray_backend import run_tasks

        return list(run_tasks(fn, tasks, workers=workers, retries=retries,
                              address=ray_address, say=say, name=name))
    results: list[Any] = []
    if executor == "inline" or workers == 1 or len(tasks) == 1:
        for t in tasks:
            results.append(_attempts(fn, t, retries, name(t), say))
        return results
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding threads
    todo = list(tasks)
    for attempt in range(retries + 1):
        failed: list[tuple[Any, BaseException]] = []
        # a fresh pool per round: a worker that died (killed, out of memory) breaks its pool
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx) as pool:
            futures = [(t, pool.submit(fn, t)) for t in todo]
            for t, fut in futures:
                try:
                    results.append(fut.result())
                    say(f"{name(t)} done")
                except Exception as e:
                    failed.append((t, e))
        if not failed:
            return results
        if attempt == retries:
            bad, err = failed[0]
            raise ShardError(f"{name(bad)} failed after {attempt + 1} attempts: {err}") from err
        for bad, err in failed:
            say(f"{name(bad)} failed ({err}); retrying")
        todo = [bad for bad, _ in failed]
    return results


def _attempts(fn: Callable[[Any], Any], task: Any, retries: int, what: str,
              say: Callable[[str], None]) -> Any:
    for attempt in range(retries + 1):
        try:
            out = fn(task)
        except Exception as e:
            if attempt >= retries:
                raise ShardError(f"{what} failed after {attempt + 1} attempts: {e}") from e
            say(f"{what} failed ({e}); retrying")
            continue
        say(f"{what} done")
        return out
    raise AssertionError("unreachable")  # pragma: no cover
