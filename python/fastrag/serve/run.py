"""Running the service with uvicorn, and stopping it gracefully.

On the first SIGTERM or SIGINT the server drains: new requests get 503 (with
``Connection: close``) while the requests in flight finish, for at most `drain_seconds`;
then uvicorn stops, the lifespan closes the service (queued encoder work finished, every
collection closed) and the process exits with status 0. A second signal stops at once.
"""

from __future__ import annotations

import logging
import threading
import time
from types import FrameType

try:
    import uvicorn
    from fastapi import FastAPI
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f'fastrag serve needs the server extra: pip install "fastrag-engine[server]" ({e})'
    ) from e

from fastrag.serve.app import Guard, create_app
from fastrag.serve.config import ServeConfig
from fastrag.serve.metrics import Metrics
from fastrag.serve.service import Service

log = logging.getLogger("fastrag.serve")


class DrainingServer(uvicorn.Server):
    """uvicorn's server, with a drain phase before it stops."""

    def __init__(self, config: uvicorn.Config, guard: Guard, drain_seconds: float) -> None:
        super().__init__(config)
        self.guard = guard
        self.drain_seconds = drain_seconds
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining:  # a second signal: stop now
            self.should_exit = True
            self.force_exit = True
            return
        self._draining = True
        self.guard.draining = True
        log.info("draining: %d requests in flight", self.guard.in_flight)
        threading.Thread(target=self._drain, name="fastrag-drain", daemon=True).start()

    def _drain(self) -> None:
        deadline = time.monotonic() + self.drain_seconds
        while self.guard.in_flight > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.guard.in_flight:
            log.warning("%d requests still in flight after %.0f s; stopping",
                        self.guard.in_flight, self.drain_seconds)
        self.should_exit = True


def build(config: ServeConfig) -> tuple[FastAPI, Guard]:
    """The ASGI app for `config` and its guard (the service is opened here)."""
    metrics = Metrics()
    service = Service(config, on_batch=metrics.on_batch)
    app = create_app(service, config, metrics)
    return app, app.state.guard


def serve(config: ServeConfig, *, log_level: str = "info") -> None:
    """Serves the collection until SIGTERM / SIGINT (see the module's doc)."""
    if not config.loopback and config.api_key is None:
        log.warning("listening on %s without an API key: anyone who reaches this address can "
                    "read and change the collection (set --api-key or FASTRAG_API_KEY)",
                    config.host)
    app, guard = build(config)
    uv = uvicorn.Config(app, host=config.host, port=config.port, log_level=log_level,
                        access_log=False,
                        # uvicorn annotates an int; it is asyncio.timeout's delay (any number)
                        timeout_graceful_shutdown=config.drain_seconds,  # type: ignore[arg-type]
                        lifespan="on")
    DrainingServer(uv, guard, config.drain_seconds).run()
