"""A small readers-writer lock: many searches at once, or one operation that renumbers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadWriteLock:
    """Readers share the lock; a writer waits for them to leave and keeps new ones out."""

    def __init__(self) -> None:
        # the condition's own lock, taken directly where nobody waits (a C call, where the
        # condition's context manager is Python code: the query path takes this twice)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._readers = 0
        self._writer = False

    def acquire_read(self) -> None:
        """Enters as a reader (`release_read` leaves); `read` is the block form."""
        with self._lock:
            while self._writer:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._lock:
            self._readers -= 1
            if self._readers == 0 and self._writer:  # a writer waits for the last one
                self._cond.notify_all()

    @contextmanager
    def read(self) -> Iterator[None]:
        self.acquire_read()
        try:
            yield
        finally:
            self.release_read()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._writer = True  # new readers wait from here on
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
