"""Dynamic micro-batching: encoder calls of concurrent requests share one ONNX run.

A request hands its texts to `MicroBatcher.submit` and gets a future. A runner thread takes
the first waiting request, every request queued behind it, then waits up to `max_wait_ms` for
more while the batch holds fewer than `max_batch` texts, and runs the encoder once on all of
them. While a run is going on, new requests queue up and form the next batch, so under load
the batches grow by themselves and an idle service adds at most `max_wait_ms` of latency.
With several runners (one per core), one gathers while the others run; when all the others
are busy, the gathering one keeps adding requests past `max_wait_ms` until one is free (there
is no core to run its batch on before), so that batches stay large under load.

A request is never split across runs, and requests of different kinds (query / document)
never share one. When a shared run fails (one text the checks let through, say), every
request of the batch is run on its own, so that only the bad one gets the error.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from fastrag.encoders.base import Kind

log = logging.getLogger(__name__)

EncodeFn = Callable[[list[str], Kind], np.ndarray]
BatchHook = Callable[[int, int, float], None]  # (requests, texts, seconds) of one run


@dataclass
class _Item:
    texts: list[str]
    kind: Kind
    future: Future[np.ndarray] = field(default_factory=Future)


_STOP = object()


class MicroBatcher:
    """Runs `encode(texts, kind)` on batches of concurrently submitted texts.

    Args:
        encode: returns (len(texts), dim) float32 rows for checked, non-empty texts.
        max_batch: texts in one run at most (a larger request runs alone).
        max_wait_ms: how long a batch waits for more requests once the queue is empty.
        enabled: False runs every request on its own, `threads` at a time (for comparison).
        threads: concurrent runs when disabled.
        runners: batches run at once (each gathers the next batch while the others run;
            one per core keeps every core busy).
        on_batch: called after every run with (requests, texts, seconds).
    """

    def __init__(
        self,
        encode: EncodeFn,
        *,
        max_batch: int = 64,
        max_wait_ms: float = 2.0,
        enabled: bool = True,
        threads: int = 2,
        runners: int = 1,
        on_batch: BatchHook | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self._encode = encode
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.enabled = enabled
        self._on_batch = on_batch
        self._queue: queue.Queue[object] = queue.Queue()
        self._closed = False
        self._pool: ThreadPoolExecutor | None = None
        self._runners: list[threading.Thread] = []
        self._gathering = threading.Lock()
        self._pending: deque[_Item] = deque()  # taken from the queue, not fitting a batch
        self._busy = 0  # runners running a batch
        self._busy_lock = threading.Lock()
        if enabled:
            for i in range(max(1, runners)):
                t = threading.Thread(target=self._loop, name=f"fastrag-batcher-{i}", daemon=True)
                t.start()
                self._runners.append(t)
        else:
            self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="fastrag-encode")

    def submit(self, texts: list[str], kind: Kind = "query") -> Future[np.ndarray]:
        """A future of the texts' vectors, (len(texts), dim) float32."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        if not texts:
            raise ValueError("no texts to encode")
        item = _Item(list(texts), kind)
        if self._pool is not None:
            return self._pool.submit(self._run_alone, item)
        self._queue.put(item)
        return item.future

    def encode(self, texts: list[str], kind: Kind = "query") -> np.ndarray:
        """`submit` and wait for the vectors."""
        return self.submit(texts, kind).result()

    def close(self) -> None:
        """Finishes the queued requests, then stops the worker."""
        if self._closed:
            return
        self._closed = True
        for _ in self._runners:
            self._queue.put(_STOP)
        for t in self._runners:
            t.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    # ------------------------------------------------------------------ the worker
    def _run_alone(self, item: _Item) -> np.ndarray:
        t0 = time.perf_counter()
        out = self._encode(item.texts, item.kind)
        self._report(1, len(item.texts), time.perf_counter() - t0)
        return out

    def _report(self, requests: int, texts: int, seconds: float) -> None:
        if self._on_batch is not None:
            try:
                self._on_batch(requests, texts, seconds)
            except Exception:  # metrics must never break encoding
                log.exception("the batch hook failed")

    def _gather(self, first: _Item) -> tuple[list[_Item], bool]:
        """The batch that starts with `first`, and True when a stop mark was met. A request
        that does not fit waits in `_pending` for the next batch. Called under `_gathering`."""
        batch, size = [first], len(first.texts)
        deadline = time.perf_counter() + self.max_wait
        while size < self.max_batch:
            if self._pending:
                nxt: object = self._pending.popleft()
            else:
                left = deadline - time.perf_counter()
                # every other runner busy: no core to run this batch on yet, so it keeps
                # growing until one is free (or it is full)
                hold = left <= 0 and self._others_busy()
                try:
                    if left > 0:
                        nxt = self._queue.get(timeout=left)
                    elif hold:
                        nxt = self._queue.get(timeout=0.0005)
                    else:
                        nxt = self._queue.get_nowait()
                except queue.Empty:
                    if left > 0 or hold:
                        continue
                    break
            if nxt is _STOP:
                return batch, True
            assert isinstance(nxt, _Item)  # only items and stop marks are queued
            if nxt.kind != first.kind or size + len(nxt.texts) > self.max_batch:
                self._pending.appendleft(nxt)
                break
            batch.append(nxt)
            size += len(nxt.texts)
        return batch, False

    def _loop(self) -> None:
        """One runner: batches until its stop mark, then what is still waiting."""
        while True:
            with self._gathering:  # one runner gathers at a time; the others run
                first = self._pending.popleft() if self._pending else self._queue.get()
                if first is _STOP:
                    break
                assert isinstance(first, _Item)
                batch, stop = self._gather(first)
            self._run(batch)
            if stop:
                break
        while True:  # requests still waiting behind the stop marks get an answer
            with self._gathering:
                if self._pending:
                    left: object = self._pending.popleft()
                else:
                    try:
                        left = self._queue.get_nowait()
                    except queue.Empty:
                        return
                if left is _STOP:  # another runner's: leave it to that one
                    self._queue.put(left)
                    return
            assert isinstance(left, _Item)
            self._run([left])

    def _others_busy(self) -> bool:
        """Whether every runner but the gathering one is running a batch."""
        return len(self._runners) > 1 and self._busy >= len(self._runners) - 1

    def _run(self, batch: list[_Item]) -> None:
        with self._busy_lock:
            self._busy += 1
        try:
            self._run_batch(batch)
        finally:
            with self._busy_lock:
                self._busy -= 1

    def _run_batch(self, batch: list[_Item]) -> None:
        texts = [t for item in batch for t in item.texts]
        t0 = time.perf_counter()
        try:
            vectors = self._encode(texts, batch[0].kind)
        except BaseException as e:
            if len(batch) == 1:
                batch[0].future.set_exception(e)
                return
            for item in batch:  # find the culprit: each request on its own
                try:
                    item.future.set_result(self._run_alone(item))
                except BaseException as alone:
                    item.future.set_exception(alone)
            return
        self._report(len(batch), len(texts), time.perf_counter() - t0)
        start = 0
        for item in batch:
            item.future.set_result(vectors[start : start + len(item.texts)])
            start += len(item.texts)
