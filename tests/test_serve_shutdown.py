"""Graceful shutdown of `fastrag serve`: on SIGTERM the write in flight finishes and is kept,
new requests get a 503 JSON error meanwhile, and the process exits with status 0."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from serve_helpers import DOCS, Server, build_collection, model_cache, needs_server_stack

pytestmark = pytest.mark.slow


def in_flight(http: Any) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("fastrag_requests_in_flight "):
            return float(line.split()[-1])
    raise AssertionError("no in-flight gauge")


def test_sigterm_drains_requests_in_flight(tmp_path: Path,
                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    needs_server_stack()
    import httpx

    from fastrag.collection import Collection

    cache = model_cache(tmp_path_factory)
    folder = build_collection(tmp_path / "col", cache)
    srv = Server(folder, cache, tmp_path / "server.log", "--drain-seconds", "120")
    srv.wait_ready()
    words = "boundary layer shock wave heat transfer panel flutter shell buckling nozzle jet "
    docs = [{"id": f"bulk{i}", "text": f"Document {i}: " + words * 4} for i in range(150)]
    outcome: dict[str, Any] = {}

    def write() -> None:
        with srv.client(timeout=600) as c:
            outcome["add"] = c.post("/documents", json={"documents": docs})

    writer = threading.Thread(target=write)
    writer.start()
    try:
        with srv.client() as http:
            deadline = time.monotonic() + 60
            while in_flight(http) < 2 and time.monotonic() < deadline:  # the add and this one
                time.sleep(0.02)
            assert "add" not in outcome, "the add finished before the test could stop the server"
            srv.proc.send_signal(signal.SIGTERM)
            refused = None
            for _ in range(200):
                refused = http.post("/search", json={"query": "x"})
                if refused.status_code == 503:
                    break
                time.sleep(0.01)
            assert refused is not None and refused.status_code == 503, refused.text
            assert "shutting down" in refused.json()["error"]["message"]
    except httpx.HTTPError:
        pass  # the add may finish and the server stop first: checked below
    finally:
        writer.join(300)
    assert outcome["add"].status_code == 200, outcome["add"].text
    assert srv.stop() == 0, srv.log
    col = Collection.open(folder, encoder=None)
    assert len(col) == len(DOCS) + len(docs)
    col.close()
