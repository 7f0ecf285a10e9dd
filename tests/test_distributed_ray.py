"""Ray mode of fastrag.distributed: shard builds as Ray tasks, shards in Ray actors.

One private local Ray instance for the module: 2 CPUs (2 worker processes), started by
`ray.init` with a temporary HOME, TMPDIR and Ray temp dir (Ray's token-authentication file
lands in that HOME), RAY_USAGE_STATS_ENABLED=0, no dashboard and node address 127.0.0.1.
Kept private: Ray 2.60 still puts its gRPC servers (GCS, raylet, workers) on all interfaces
and advertises the machine's address, so the guard is its token authentication (on by
default in 2.60; the token is created in the temporary HOME and never leaves it) and the
cluster's life: it is stopped at the end of the module by `ray.shutdown()`, which ends the
processes this driver started, and any of their pids still alive is then killed by pid.
`ray stop` (which would end every Ray process of the user) is never called.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from fake_encoder import FakeEncoder  # noqa: E402
from fastrag.distributed import (  # noqa: E402
    ShardedCollection,
    ShardMissingWarning,
    build_shards,
)
from fastrag.distributed.build import _run  # noqa: E402

pytestmark = pytest.mark.slow  # starting Ray alone takes 10-20 s here

TESTS = Path(__file__).resolve().parent


def _ray_pids() -> list[int]:
    node = getattr(ray._private.worker, "_global_node", None)
    pids = []
    for infos in (getattr(node, "all_processes", None) or {}).values():
        for info in infos:
            pids.append(info.process.pid)
    return pids


@pytest.fixture(scope="module")
def cluster() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="frray"))  # short: Ray's socket paths are limited
    with pytest.MonkeyPatch.context() as mp:
        (root / "home").mkdir()
        (root / "tmp").mkdir()
        mp.setenv("HOME", str(root / "home"))
        mp.setenv("TMPDIR", str(root / "tmp"))
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.delenv("RAY_AUTH_MODE", raising=False)  # token authentication stays on
        mp.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                 _temp_dir=str(root / "r"), log_to_driver=False)
        pids = _ray_pids()
        try:
            yield root
        finally:
            ray.shutdown()
            deadline = time.monotonic() + 10
            for pid in pids:
                while time.monotonic() < deadline:
                    try:
                        os.kill(pid, 0)
                    except ProcessLookupError:
                        break
                    time.sleep(0.1)
                else:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            shutil.rmtree(root, ignore_errors=True)


def _corpus() -> tuple[list[str], list[str]]:
    from test_distributed import corpus

    return corpus(160)


def test_ray_build_and_actors_equal_the_local_ones(cluster: Path) -> None:
    texts, ids = _corpus()
    build_shards(cluster / "ray", texts, ids, shards=2, workers=2, executor="ray",
                 encoder=FakeEncoder(), chunk_chars=300)
    build_shards(cluster / "local", texts, ids, shards=2, executor="inline",
                 encoder=FakeEncoder(), chunk_chars=300)
    qs = ["wing shock", "heat transfer plate", "mach number flow theory"]
    with ShardedCollection.open(cluster / "local", encoder=FakeEncoder()) as local, \
            ShardedCollection.open(cluster / "ray", encoder=FakeEncoder(), mode="ray") as remote:
        assert remote.stats == local.stats
        a = local.search_batch(qs, 10, method="bm25")
        b = remote.search_batch(qs, 10, method="bm25")
        assert [[(r.id, r.score) for r in x] for x in a] == [[(r.id, r.score) for r in x]
                                                             for x in b]
        assert len(remote.search("wing", k=5)) == 5  # hybrid: vectors from the router
        # any legs fused: the same pipeline over actors as over local shards
        fa = local.search_batch(qs, 10, retrievers=["bm25", "dense"], explain=True)
        fb = remote.search_batch(qs, 10, retrievers=["bm25", "dense"], explain=True)
        assert [[(r.id, r.score, r.text) for r in x] for x in fa] == [
            [(r.id, r.score, r.text) for r in x] for x in fb]
        assert fb[0][0].stages.keys() >= {"fusion"}

        # an actor that dies: partial results with a warning naming its shard
        actor = remote.handles["shard-0001"].actor  # type: ignore[attr-defined]
        ray.kill(actor)
        _wait_dead(actor)  # the kill is asynchronous: a call right after it can still succeed
        with pytest.warns(ShardMissingWarning, match="shard-0001 unavailable when searching"):
            got = remote.search("wing", k=200, method="bm25")
        assert got and {r.id for r in got} <= set(ids[:80])


def test_ray_a_missing_shard_and_a_retried_task(cluster: Path) -> None:
    texts, ids = _corpus()
    build_shards(cluster / "m", texts, ids, shards=2, workers=2, executor="ray",
                 encoder=FakeEncoder(), chunk_chars=300)
    shutil.rmtree(cluster / "m" / "shard-0000")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sc = ShardedCollection.open(cluster / "m", encoder=FakeEncoder(), mode="ray")
    with sc:
        assert sc.missing == ["shard-0000"]
        assert any(issubclass(w.category, ShardMissingWarning) for w in caught)
        assert {r.id for r in sc.search("wing", k=200, method="bm25")} <= set(ids[80:])

    marker = cluster / "flaky-marker"
    said: list[str] = []
    out = _run(_flaky, [(str(marker), 1), (str(marker), 2)], "ray", 2, 1, None, said.append,
               lambda t: f"task {t[1]}")
    assert sorted(out) == [10, 20] and marker.exists()


def _wait_dead(actor: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=10)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.05)
    raise AssertionError(f"the actor was still alive {timeout:.0f} s after ray.kill")


def _flaky(task: Any) -> int:
    """Fails on its first run in the whole cluster (a marker file says it ran)."""
    path, value = task
    if value == 2 and not Path(path).exists():
        Path(path).write_text("ran")
        raise OSError("worker lost")
    return int(value) * 10
