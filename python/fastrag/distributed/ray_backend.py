"""Ray execution of the same code: shard builds in a Ray Data pipeline of builder actors
(vocabulary alignment as Ray tasks), shards served by Ray actors.

Needs ``pip install "fastrag-engine[distributed]"`` (Ray with Ray Data). With an `address`
the work joins that cluster (``ray start --head`` elsewhere; Ray 2.60 turns token
authentication on by default, so a joining node needs the head's auth mode). Without one,
a private local Ray instance is started for the call and stopped after it, by this process
(`ray.shutdown()` ends the processes this driver started, by their handles; `ray stop`,
which ends every Ray process of the user, is never used): its node address is 127.0.0.1,
with no dashboard, and usage statistics are off (RAY_USAGE_STATS_ENABLED=0).
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fastrag.distributed.manifest import Manifest, ShardError
from fastrag.search.pipeline import Result

Stats = tuple[int, float, dict[str, int]]


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError('Ray mode needs Ray: pip install "fastrag-engine[distributed]"') from None
    return ray


def start(address: str | None, num_cpus: int) -> tuple[Any, bool]:
    """(ray, whether this call started it): joins `address`, reuses a running instance, or
    starts a private local one."""
    ray = _ray()
    if ray.is_initialized():
        return ray, False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False)
    return ray, True


def run_tasks(fn: Callable[[Any], Any], tasks: list[Any], *, workers: int, retries: int,
              address: str | None, say: Callable[[str], None],
              name: Callable[[Any], str]) -> list[Any]:
    """fn over tasks as Ray tasks (one CPU per onnxruntime thread of a task); Ray runs a
    failed one again, up to `retries` times (that shard only), then ShardError."""
    ray, started = start(address, workers)
    try:
        cpus = max(1, int(getattr(tasks[0], "threads", 1) or 1)) if tasks else 1
        remote = ray.remote(num_cpus=cpus, max_retries=retries, retry_exceptions=True)(fn)
        refs = {remote.remote(t): t for t in tasks}
        results = []
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            t = refs.pop(done[0])
            try:
                results.append(ray.get(done[0]))
            except Exception as e:
                raise ShardError(f"{name(t)} failed after {retries + 1} attempts: {e}") from e
            say(f"{name(t)} done")
        return results
    finally:
        if started:
            ray.shutdown()


class _ShardBuilder:
    """A Ray Data actor of the build pool: loads the encoder once (one onnxruntime session
    per actor, `threads` intra-op threads = the actor's CPUs) and builds every shard it is
    given with it; a shard that fails is built again by the same actor, up to `retries`
    times, before the job fails."""

    def __init__(self, encoder: Any, quantize: str | None, threads: int, retries: int) -> None:
        from fastrag.distributed.build import make_encoder

        self.encoder = make_encoder(encoder, threads=threads, quantize=quantize)
        self.retries = retries

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from fastrag.distributed.build import build_shard

        reports = []
        for blob in batch["task"]:
            task = pickle.loads(blob)
            for attempt in range(self.retries + 1):
                try:
                    reports.append(pickle.dumps(build_shard(task, self.encoder)))
                    break
                except Exception as e:
                    if attempt >= self.retries:
                        raise ShardError(f"shard {task.index} failed after {attempt + 1} "
                                         f"attempts: {e}") from e
        return {"report": reports}


def build_with_ray_data(tasks: list[Any], *, workers: int, retries: int, address: str | None,
                        say: Callable[[str], None]) -> list[Any]:
    """Builds the shards with a Ray Data pipeline: the shard tasks flow through a pool of
    `workers` builder actors (`_ShardBuilder`), each with its own encoder session."""
    ray, started = start(address, workers)
    try:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        threads = max(1, int(tasks[0].threads)) if tasks else 1
        first = tasks[0] if tasks else None
        ds = ray.data.from_items([{"task": pickle.dumps(t)} for t in tasks],
                                 override_num_blocks=len(tasks))
        ds = ds.map_batches(
            _ShardBuilder, batch_size=1, concurrency=min(workers, len(tasks)),
            num_cpus=threads,
            fn_constructor_kwargs={"encoder": first.encoder if first else None,
                                   "quantize": first.quantize if first else None,
                                   "threads": threads, "retries": retries},
        )  # an actor that dies is restarted by Ray Data (its default) and its shard rerun
        reports = []
        try:
            for row in ds.iter_rows():
                report = pickle.loads(row["report"])
                say(f"shard {report.index} done ({report.seconds:.1f} s)")
                reports.append(report)
        except Exception as e:
            raise ShardError(f"the Ray Data build failed: {e}") from e
        return reports
    finally:
        if started:
            ray.shutdown()


class ShardActor:
    """Holds one shard (a `LocalShard`) in a Ray actor."""

    def __init__(self, path: str, encoder: Any, quantize: str | None, mmap: bool) -> None:
        from fastrag.distributed.build import make_encoder
        from fastrag.distributed.shards import LocalShard

        enc = make_encoder(encoder, threads=1,
                           quantize=quantize if isinstance(encoder, str) else None)
        self.shard = LocalShard(path, enc, mmap)

    def identity(self) -> dict[str, Any]:
        return self.shard.identity()

    def bm25_stats(self) -> Stats:
        return self.shard.bm25_stats()

    def fingerprint(self) -> dict[str, Any]:
        return self.shard.fingerprint()

    def set_global_stats(self, n_docs: int, total_len: float, df: dict[str, int]) -> None:
        self.shard.set_global_stats(n_docs, total_len, df)

    def search(self, queries: list[str], k: int, leg: str, vectors: np.ndarray | None,
               filter: Mapping[str, Any] | None = None) -> list[list[Result]]:
        return self.shard.search(queries, k, leg, vectors, filter)

    def profile(self) -> dict[str, Any]:
        return self.shard.profile()

    def leg_search(self, leg: str, query: Any, k: int, filter: Mapping[str, Any] | None,
                   options: dict[str, Any]) -> list[Any]:
        return self.shard.leg_search(leg, query, k, filter, options)

    def documents(self, doc_ids: list[str]) -> dict[str, Any]:
        return self.shard.documents(doc_ids)

    def pid(self) -> int:
        return os.getpid()


class RayShard:
    """The router's handle of a shard actor: each call waits for the actor's answer."""

    def __init__(self, ray: Any, actor: Any) -> None:
        self._ray, self.actor = ray, actor

    def identity(self) -> dict[str, Any]:
        return dict(self._ray.get(self.actor.identity.remote()))

    def bm25_stats(self) -> Stats:
        return tuple(self._ray.get(self.actor.bm25_stats.remote()))

    def fingerprint(self) -> dict[str, Any]:
        return dict(self._ray.get(self.actor.fingerprint.remote()))

    def set_global_stats(self, n_docs: int, total_len: float, df: dict[str, int]) -> None:
        self._ray.get(self.actor.set_global_stats.remote(n_docs, total_len, df))

    def search(self, queries: list[str], k: int, leg: str, vectors: np.ndarray | None,
               filter: Mapping[str, Any] | None = None) -> list[list[Result]]:
        return list(self._ray.get(self.actor.search.remote(queries, k, leg, vectors, filter)))

    def profile(self) -> dict[str, Any]:
        return dict(self._ray.get(self.actor.profile.remote()))

    def leg_search(self, leg: str, query: Any, k: int, filter: Mapping[str, Any] | None,
                   options: dict[str, Any]) -> list[Any]:
        return list(self._ray.get(self.actor.leg_search.remote(leg, query, k, filter,
                                                               options)))

    def documents(self, doc_ids: list[str]) -> dict[str, Any]:
        return dict(self._ray.get(self.actor.documents.remote(doc_ids)))


def open_actors(folder: Path, manifest: Manifest, encoder: Any, quantize: str | None,
                address: str | None, mmap: bool
                ) -> tuple[dict[str, Any], dict[str, BaseException], Callable[[], None]]:
    """One actor per shard (shared storage: every node sees `folder`); the shards that fail
    to open are returned as errors, with a closer that ends the actors (and Ray if started
    here)."""
    ray, started = start(address, max(1, len(manifest.shards)))
    actor_cls = ray.remote(num_cpus=0)(ShardActor)
    actors = {n: actor_cls.remote(str(folder / n), encoder, quantize, mmap)
              for n in manifest.shards}
    handles: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}
    for n, a in actors.items():
        try:
            ray.get(a.pid.remote())
            handles[n] = RayShard(ray, a)
        except Exception as e:  # the actor failed to open its shard
            errors[n] = e

    def close() -> None:
        for a in actors.values():
            with contextlib.suppress(Exception):  # already gone
                ray.kill(a)
        if started:
            ray.shutdown()

    return handles, errors, close
