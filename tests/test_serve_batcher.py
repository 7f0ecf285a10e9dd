"""The micro-batcher of `fastrag serve`: concurrent requests share encoder runs, within the
caps, and one bad request does not fail the others. No timing: a gate holds the first run
while the next requests queue up behind it."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest

from fake_encoder import FakeEncoder
from fastrag.serve.batcher import MicroBatcher


class Gated:
    """encode() that blocks its first run until `open()`, recording every run's texts."""

    def __init__(self) -> None:
        self.encoder = FakeEncoder(dim=16)
        self.runs: list[tuple[str, list[str]]] = []
        self.started = threading.Event()
        self.gate = threading.Event()

    def __call__(self, texts: list[str], kind: str) -> np.ndarray:
        self.runs.append((kind, list(texts)))
        self.started.set()
        self.gate.wait(30)
        if any("bad" in t for t in texts):
            raise ValueError("a bad text")
        return self.encoder.encode(texts, kind=kind)  # type: ignore[arg-type]


def held(max_batch: int = 64, **kw: object) -> tuple[Gated, MicroBatcher, Future]:
    """A batcher whose first run ("first") is in progress and blocked."""
    enc = Gated()
    mb = MicroBatcher(enc, max_batch=max_batch, max_wait_ms=0, **kw)  # type: ignore[arg-type]
    first = mb.submit(["first"], "query")
    assert enc.started.wait(30)
    return enc, mb, first


def test_requests_queued_during_a_run_share_the_next_one() -> None:
    enc, mb, first = held()
    texts = [[f"text {i}", f"more {i}"] for i in range(6)]
    futures = [mb.submit(t, "query") for t in texts]
    enc.gate.set()
    for t, f in zip(texts, futures, strict=True):
        np.testing.assert_allclose(f.result(30), enc.encoder.encode_queries(t), atol=1e-6)
    first.result(30)
    mb.close()
    assert [len(r) for _, r in enc.runs] == [1, 12]


def test_batches_are_capped_and_requests_never_split() -> None:
    enc, mb, first = held(max_batch=5)
    futures = [mb.submit([f"a{i}", f"b{i}"], "query") for i in range(4)]
    big = mb.submit([f"c{i}" for i in range(7)], "query")  # larger than the cap: alone
    enc.gate.set()
    for f in [first, *futures, big]:
        f.result(30)
    mb.close()
    assert [len(r) for _, r in enc.runs] == [1, 4, 4, 7]


def test_kinds_never_share_a_run() -> None:
    enc, mb, first = held()
    q = mb.submit(["q1"], "query")
    d = mb.submit(["d1"], "document")
    q2 = mb.submit(["q2"], "query")
    enc.gate.set()
    for f in (first, q, d, q2):
        f.result(30)
    mb.close()
    assert [k for k, _ in enc.runs] == ["query", "query", "document", "query"]
    np.testing.assert_allclose(d.result(), enc.encoder.encode_documents(["d1"]), atol=1e-6)


def test_a_bad_request_fails_alone() -> None:
    enc, mb, _ = held()
    good = mb.submit(["good one"], "query")
    bad = mb.submit(["bad one"], "query")
    other = mb.submit(["fine too"], "query")
    enc.gate.set()
    np.testing.assert_allclose(good.result(30), enc.encoder.encode_queries(["good one"]),
                               atol=1e-6)
    other.result(30)
    with pytest.raises(ValueError, match="bad text"):
        bad.result(30)
    mb.close()


def test_close_answers_every_queued_request() -> None:
    enc, mb, first = held()
    futures = [mb.submit([f"t{i}"], "query") for i in range(3)]
    closer = threading.Thread(target=mb.close)
    closer.start()
    enc.gate.set()
    closer.join(30)
    assert all(f.done() and f.exception() is None for f in [first, *futures])
    with pytest.raises(RuntimeError, match="closed"):
        mb.submit(["late"], "query")


def test_disabled_runs_every_request_on_its_own() -> None:
    enc = Gated()
    enc.gate.set()
    mb = MicroBatcher(enc, enabled=False, threads=2)  # type: ignore[arg-type]
    futures = [mb.submit([f"x{i}", f"y{i}"], "query") for i in range(5)]
    for f in futures:
        assert f.result(30).shape == (2, 16)
    mb.close()
    assert sorted(len(r) for _, r in enc.runs) == [2] * 5


def test_batch_hook_sees_every_run() -> None:
    seen: list[tuple[int, int]] = []
    enc = Gated()
    mb = MicroBatcher(enc, max_wait_ms=0, on_batch=lambda r, t, s: seen.append((r, t)))
    first = mb.submit(["a"], "query")
    assert enc.started.wait(30)
    rest = [mb.submit(["b", "c"], "query"), mb.submit(["d"], "query")]
    enc.gate.set()
    for f in [first, *rest]:
        f.result(30)
    mb.close()
    assert seen == [(1, 1), (2, 3)]


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(FakeEncoder().encode, max_batch=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_wait_ms"):
        MicroBatcher(FakeEncoder().encode, max_wait_ms=-1)  # type: ignore[arg-type]


def test_several_runners_answer_every_request() -> None:
    enc = Gated()
    mb = MicroBatcher(enc, max_batch=4, max_wait_ms=0, runners=3)  # type: ignore[arg-type]
    texts = [[f"t{i}"] for i in range(20)]
    futures = [mb.submit(t, "query") for t in texts]
    enc.gate.set()
    for t, f in zip(texts, futures, strict=True):
        np.testing.assert_allclose(f.result(30), enc.encoder.encode_queries(t), atol=1e-6)
    mb.close()
    assert sorted(t for _, run in enc.runs for t in run) == sorted(t[0] for t in texts)
    assert all(len(run) <= 4 for _, run in enc.runs)


def test_a_request_of_the_other_kind_is_not_stranded_by_an_idle_runner() -> None:
    enc = Gated()
    enc.gate.set()
    mb = MicroBatcher(enc, max_wait_ms=50, runners=2)  # type: ignore[arg-type]
    for _ in range(20):  # a query and documents at once, as /rerank sends them
        q = mb.submit(["query"], "query")
        d = mb.submit(["doc one", "doc two"], "document")
        assert q.result(30).shape == (1, 16) and d.result(30).shape == (2, 16)
    mb.close()


def test_a_batch_keeps_growing_while_every_other_runner_is_busy() -> None:
    enc = Gated()
    mb = MicroBatcher(enc, max_wait_ms=1, runners=2)  # type: ignore[arg-type]
    first = mb.submit(["first"], "query")
    assert enc.started.wait(30)  # runner 1 is busy (held by the gate)
    x1 = mb.submit(["x1"], "query")
    time.sleep(0.05)  # well past max_wait: runner 2 must still be gathering
    x2 = mb.submit(["x2"], "query")
    enc.gate.set()
    for f in (first, x1, x2):
        f.result(30)
    mb.close()
    assert [r for _, r in enc.runs] == [["first"], ["x1", "x2"]]
