"""JSON over HTTP with retries, shared by the remote encoder and the remote reranker (stdlib only).

`JsonClient` is a mixin for a client class that POSTs JSON to one URL: it checks the retry
options, sends the auth header, retries transient failures and runs batches concurrently.
The client class names the exception it raises (a subclass of `HttpClientError`, so each
client keeps its own public error class) and what its requests are called in log messages.

Rate limits (429), server errors (500, 502, 503, 504), dropped connections and timeouts are
retried with exponential backoff and jitter (a ``Retry-After`` header wins); any other error
status fails at once with the server's message.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import random
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np

#: HTTP statuses that are worth another try (rate limit, transient server trouble)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: the longest pause between two attempts computed from `backoff` (Retry-After may ask more)
MAX_BACKOFF_S = 30.0

Job = TypeVar("Job", bound=Hashable)
Result = TypeVar("Result")


class HttpClientError(RuntimeError):
    """The server could not be reached, refused the request or answered nonsense.

    Attributes:
        status: the HTTP status of the last answer, or None (no answer, or a malformed one).
        attempts: how many requests were sent for the failing batch, or None.
    """

    def __init__(
        self, message: str, *, status: int | None = None, attempts: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts


class Cancelled(Exception):
    """Another batch of the same call failed; this one stops retrying."""


def positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def server_message(body: bytes, fallback: str) -> str:
    """The human part of an error body: OpenAI's {"error": {"message": ...}} and kin.

    Also Cohere's {"message": ...}, Jina's {"detail": ...} and TEI's {"error": "..."}.
    """
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data.get("message")))
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str) and error:
            return error
        if error is not None:
            return json.dumps(error)[:500]
    if text:
        return text[:500] + ("..." if len(text) > 500 else "")
    return fallback


class Headers(Protocol):
    """Response headers looked up by name: a Mapping, or urllib's email.message.Message."""

    def get(self, name: str, /) -> str | None: ...


def retry_after(headers: Headers | None) -> float | None:
    """Seconds asked for by a Retry-After header (delta-seconds or an HTTP date), or None."""
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


class JsonClient:
    """Mixin: retrying JSON POSTs to ``self.url`` and a worker pool for batches of a call.

    The class sets `_error` (raised for every HTTP failure), `_label` (what a request is
    called in log messages, e.g. ``"embeddings"``), `_user_agent` and `_logger`; `__init__`
    sets `url` and `name` and calls `_init_http` (which checks and keeps the options).
    """

    _error: ClassVar[type[HttpClientError]]
    _label: ClassVar[str]
    _user_agent: ClassVar[str]
    _logger: ClassVar[logging.Logger]

    url: str
    name: str
    concurrency: int
    max_retries: int
    timeout: float
    backoff: float
    _api_key: str | None
    _connected: bool

    def _init_http(
        self, *, api_key: str | None, max_retries: int, timeout: float, backoff: float
    ) -> None:
        """Checks and keeps the retry options (ValueError naming a bad one) and the key."""
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not backoff >= 0:
            raise ValueError(f"backoff must be a number of seconds >= 0, got {backoff!r}")
        self._api_key = api_key
        self.max_retries = max_retries
        self.timeout = float(timeout)
        self.backoff = float(backoff)
        self._connected = False  # set once any request got an HTTP answer

    def _headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": self._user_agent,
        }
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _run_batches(
        self,
        jobs: Sequence[Job],
        work: Callable[[Job, threading.Event], Result],
        thread_name_prefix: str,
    ) -> dict[Job, Result]:
        """{job: work(job, stop)} with up to `concurrency` jobs in flight.

        The first failure is raised (a real error rather than a sibling's `Cancelled`) once
        `stop` is set, so that running jobs give up instead of retrying.
        """
        stop = threading.Event()
        if len(jobs) <= 1 or self.concurrency == 1:
            return {job: work(job, stop) for job in jobs}
        pool = ThreadPoolExecutor(
            max_workers=min(self.concurrency, len(jobs)), thread_name_prefix=thread_name_prefix
        )
        futures: dict[Future[Result], Job] = {}
        try:
            for job in jobs:
                futures[pool.submit(work, job, stop)] = job
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                stop.set()  # running batches give up instead of retrying
                # the first real error, not a Cancelled of a sibling
                real = [f for f in failed if not isinstance(f.exception(), Cancelled)]
                (real or failed)[0].result()
            return {job: future.result() for future, job in futures.items()}
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)

    def _post(self, payload: dict[str, Any], stop: threading.Event) -> Any:
        """The decoded JSON answer to one POST, retrying transient failures.

        Raises `Cancelled` once `stop` is set (between attempts, or while waiting to retry).
        """
        error = self._error
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        attempts = self.max_retries + 1
        last = ""
        last_status: int | None = None
        for attempt in range(1, attempts + 1):
            if stop.is_set():
                raise Cancelled
            request = urllib.request.Request(
                self.url, data=body, headers=self._headers(), method="POST"
            )
            wait_s: float | None = None
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as e:
                self._connected = True
                try:
                    error_body = e.read()
                except (OSError, http.client.HTTPException):
                    error_body = b""
                message = server_message(error_body, e.reason or "")
                if e.code not in RETRY_STATUSES:
                    raise error(
                        f"{self.url} answered HTTP {e.code} for model {self.name!r}: {message}",
                        status=e.code, attempts=attempt,
                    ) from None
                last, last_status = f"HTTP {e.code}: {message}", e.code
                wait_s = retry_after(e.headers)
            except urllib.error.URLError as e:
                reason = e.reason
                if isinstance(reason, ssl.SSLCertVerificationError):
                    raise error(
                        f"TLS certificate of {self.url} not accepted: {reason}", attempts=attempt
                    ) from e
                if isinstance(reason, ConnectionRefusedError) and not self._connected:
                    raise error(
                        f"could not connect to {self.url}: connection refused; is the server "
                        "running and base_url right?", attempts=attempt,
                    ) from e
                last, last_status = f"{type(reason).__name__}: {reason}", None
            except (OSError, http.client.HTTPException) as e:  # timeouts, resets while reading
                last, last_status = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__, None
            else:
                self._connected = True
                try:
                    return json.loads(raw)
                except ValueError:
                    text = raw.decode("utf-8", errors="replace")
                    raise error(
                        f"{self.url} answered with something that is not JSON: {text[:200]!r}",
                        attempts=attempt,
                    ) from None
            if attempt == attempts:
                break
            if wait_s is not None:
                delay = wait_s
            else:
                delay = min(MAX_BACKOFF_S, self.backoff * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.5)
            self._logger.warning(
                "%s request to %s failed (%s); retry %d of %d in %.2f s",
                self._label, self.url, last, attempt, self.max_retries, delay,
            )
            if stop.wait(delay):
                raise Cancelled
        raise error(
            f"{self._label} request to {self.url} failed after {attempts} attempt(s); "
            f"last error: {last}",
            status=last_status, attempts=attempts,
        )
