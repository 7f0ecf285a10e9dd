"""A scriptable JSON server on 127.0.0.1 for the HTTP clients' tests (no other network).

Subclass `ScriptedServer`, write `respond`, and use it as a context manager: it serves from a
background thread between ``__enter__`` and ``__exit__``::

    with MyFake() as fake:
        client = Client(base_url=fake.root + "/v1")
        fake.script = [("status", 503, b"{}", {})]  # the next request gets a 503

or let `fixture` make a pytest fixture that serves a fresh one per test::

    server = fixture(MyFake)  # tests take `server: MyFake`
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest

Fake = TypeVar("Fake", bound="ScriptedServer")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ScriptedServer

    def do_POST(self) -> None:
        self.server.answer(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ScriptedServer(ThreadingHTTPServer):
    """Records every POST (path, headers, JSON body); `script` holds actions for the next ones.

    Each request takes the next action of `script` (``("ok",)`` when it is empty) and the next
    pause of `delays` (none when empty), counts towards `inflight` / `max_inflight`, then goes
    to `respond`. `scripted` carries out the actions every fake knows:
    ``("status", code, body_bytes, headers)``, ``("non_json",)``, ``("raw", json_value)``
    (answered 200) and ``("sleep", seconds)`` (a pause before the normal answer).
    """

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[Any, ...]] = []
        self.delays: list[float] = []  # per-request sleeps, taken in turn (for concurrency)
        self.inflight = 0
        self.max_inflight = 0
        self._thread: threading.Thread | None = None

    @property
    def root(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def bodies(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests]

    def __enter__(self: Fake) -> Fake:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out and leave are part of the tests

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length", 0))
        body = json.loads(handler.rfile.read(length))
        with self.lock:
            self.requests.append(
                {"path": handler.path, "headers": dict(handler.headers), "body": body}
            )
            action = self.script.pop(0) if self.script else ("ok",)
            delay = self.delays.pop(0) if self.delays else 0.0
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            if delay:
                time.sleep(delay)
        finally:
            # counted out before answering: once the client has its answer it may send the
            # next request before this thread would get back to a counter decremented later
            with self.lock:
                self.inflight -= 1
        self.respond(handler, body, action)

    def respond(
        self, handler: BaseHTTPRequestHandler, body: Any, action: tuple[Any, ...]
    ) -> None:
        """Answer one request (after its delay) as `action` says."""
        raise NotImplementedError

    def scripted(self, handler: BaseHTTPRequestHandler, action: tuple[Any, ...]) -> bool:
        """Carry out a common action; True when that answered the request."""
        kind = action[0]
        if kind == "status":
            _, code, payload, headers = action
            self.send(handler, code, payload, headers)
            return True
        if kind == "non_json":
            self.send(handler, 200, b"<html>Bad Gateway</html>")
            return True
        if kind == "raw":
            self.send(handler, 200, json.dumps(action[1]).encode())
            return True
        if kind == "sleep":
            time.sleep(action[1])
        return False

    @staticmethod
    def send(
        handler: BaseHTTPRequestHandler, code: int, payload: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        try:
            handler.send_response(code)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left


def fixture(cls: type[Fake], name: str = "server") -> Any:
    """A pytest fixture named `name` that serves a fresh `cls` for each test."""

    def serve() -> Iterator[Fake]:
        with cls() as fake:
            yield fake

    return pytest.fixture(serve, name=name)
