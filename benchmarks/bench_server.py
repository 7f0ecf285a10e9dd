"""`fastrag serve` under concurrent load on loopback: micro-batching, search throughput, latency.

    python benchmarks/bench_server.py            # full: all cranfield documents, 3 rounds
    python benchmarks/bench_server.py --quick    # 200 documents, 2 rounds (3 to 5 minutes)
    python benchmarks/bench_server.py --smoke    # 40 generated documents, a few requests
    # options: --json PATH, --data DIR, --docs N, --rounds R, --cache-dir DIR

Two server processes (``python -m fastrag.cli serve``) on 127.0.0.1 serve one collection of
cranfield documents (document = title + " " + text; generated sentences in --smoke) built with
all-MiniLM-L6-v2: one with micro-batching of encoder calls (the default, 64 texts and 2 ms at
most), one with ``--no-batching``. Both use the default threads (one per core). The load
generator is this process: asyncio streams speaking HTTP/1.1 with one keep-alive connection per
simulated client, each client sending its next request as soon as the previous answer arrives
(closed loop); httpx only checks that the servers are up.
Every request's status is checked; `errors` counts non-2xx answers and failed requests.

- embed_batching_gain_c32: ``POST /v1/embeddings`` with 32 concurrent clients, each sending one
  short text (the first six words of a cranfield query) per request; requests per second of
  the batching server over the non-batching one. The two servers run alternately, `--rounds`
  times, best round each. embed_cpu_gain_c32: the same comparison in the servers' CPU time
  per request (from /proc), which other processes on a shared machine disturb much less than
  throughput.
- search_qps_c8_ratio_vs_inprocess: ``POST /search`` (hybrid BM25 + dense, k 10) at 8 clients
  against a single-thread loop of `Collection.search` in this process on the same queries
  (the same collection and model, opened with the same defaults), best of `--rounds` each.
- p50_ms_c32, p99_ms_c32: latency of ``/search`` at 32 clients (every request of one run);
  embed_p50_ms_c32 / embed_p99_ms_c32 the same for ``/v1/embeddings`` with batching.
- rss_growth_pct_10k: resident memory of the batching server (VmRSS from /proc) after 10,000
  requests (embeddings, hybrid and BM25 searches in turn, 16 clients) against after a warm-up
  of 1,000;
  200 requests in --smoke.

The client runs on the same cores as the servers (2 vCPUs here): its own cost lowers every
HTTP figure, not the in-process one. The last line is a SUMMARY.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import Results, optional, parse, parser

API_KEY = "bench-key-0123456789"
_VOCABULARY = ("boundary layer flow heat transfer shock wave pressure plate wing supersonic "
               "laminar turbulent jet nozzle cylinder cone drag lift stress buckling panel")
WORDS = _VOCABULARY.split()


def load_texts(args: Any, res: Results) -> tuple[list[str], list[str]]:
    """(documents, queries): cranfield's, or generated ones in --smoke / without the data."""
    from fastrag.eval import load_beir

    folder = args.data / "cranfield"
    if args.mode != "smoke" and (folder / "corpus.jsonl").is_file():
        data = load_beir(folder)
        docs = [f"{d.get('title', '')} {d['text']}".strip() for d in data.corpus.values()]
        docs = [d for d in docs if d][: args.docs]
        return docs, [q for q in data.queries.values() if q.strip()]
    if args.mode != "smoke":
        res.skip(f"cranfield not found at {folder}: generated texts instead")
    rng = random.Random(0)
    docs = [" ".join(rng.choices(WORDS, k=rng.randint(20, 60))) + "." for _ in range(args.docs)]
    queries = [" ".join(rng.sample(WORDS, 3)) for _ in range(50)]
    return docs, queries


def build(folder: Path, docs: list[str]) -> None:
    from fastrag.collection import Collection

    col = Collection.create(folder, encoder="default")
    col.add(docs, ids=[f"d{i}" for i in range(len(docs))])
    col.commit()
    col.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One `fastrag serve` child process."""

    def __init__(self, folder: Path, log: Path, *flags: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "FASTRAG_API_KEY": API_KEY}
        self.log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastrag.cli", "serve", str(folder), "--port",
             str(self.port), *flags], stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait(self, httpx: Any, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited with {self.proc.returncode}; see its log")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit("the server did not start")

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise SystemExit("no VmRSS in /proc")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        return code


class Load:
    """Closed-loop clients on raw HTTP/1.1 keep-alive connections (asyncio streams: a few
    microseconds of client CPU per request, so that the load generator, which shares the
    cores with the servers, costs them little). Counts errors over every run."""

    def __init__(self) -> None:
        self.errors = 0
        self.requests = 0

    @staticmethod
    def encode(host: str, path: str, body: dict) -> bytes:
        data = json.dumps(body).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {API_KEY}"
                f"\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n")
        return head.encode() + data

    async def _client(self, port: int, requests: list[bytes], counter: list[int], total: int,
                      latencies: list[float]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while counter[0] < total:
                raw = requests[counter[0] % len(requests)]
                counter[0] += 1
                t0 = time.perf_counter()
                ok = False
                try:
                    writer.write(raw)
                    status = await reader.readline()
                    length = 0
                    while True:
                        line = await reader.readline()
                        if line in (b"\r\n", b""):
                            break
                        name, _, value = line.partition(b":")
                        if name.lower() == b"content-length":
                            length = int(value)
                    await reader.readexactly(length)
                    ok = status.split(b" ", 2)[1] == b"200"
                except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                latencies.append(time.perf_counter() - t0)
                self.errors += not ok
                self.requests += 1
        finally:
            writer.close()

    async def _run(self, port: int, requests: list[bytes], clients: int,
                   total: int) -> tuple[float, list[float]]:
        latencies: list[float] = []
        counter = [0]
        t0 = time.perf_counter()
        await asyncio.gather(*(self._client(port, requests, counter, total, latencies)
                               for _ in range(clients)))
        return time.perf_counter() - t0, latencies

    def run(self, srv: Server, bodies: list[tuple[str, dict]], clients: int,
            total: int) -> tuple[float, list[float]]:
        """(requests per second, latencies in seconds) of `total` requests."""
        requests = [self.encode(f"127.0.0.1:{srv.port}", p, b) for p, b in bodies]
        elapsed, lat = asyncio.run(self._run(srv.port, requests, clients, total))
        return total / elapsed, lat


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0


def inprocess_qps(folder: Path, queries: list[str], total: int, rounds: int) -> float:
    """Best queries per second of a single-thread `Collection.search` loop."""
    from fastrag.collection import Collection
    from fastrag.encoders import TextEncoder

    # one thread, as the server's query encoder (serve --encoder-threads 1)
    col = Collection.open(folder, encoder=TextEncoder("default", threads=1), mmap=True)
    try:
        for q in queries[:20]:
            col.search(q, k=10)
        best = 0.0
        for _ in range(rounds):
            t0 = time.perf_counter()
            for i in range(total):
                col.search(queries[i % len(queries)], k=10)
            best = max(best, total / (time.perf_counter() - t0))
        return best
    finally:
        col.close()


def main() -> None:
    ap = parser(__doc__, data=True)
    ap.add_argument("--docs", type=int, default=None, help="documents in the collection")
    ap.add_argument("--rounds", type=int, default=None, help="rounds of each comparison")
    ap.add_argument("--cache-dir", type=Path, default=None, help="fastrag model cache")
    args = parse(ap)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    res = Results(__file__, args, peers=("fastapi", "uvicorn", "httpx"))
    httpx = optional("httpx", res, "the load generator")
    if httpx is None or optional("fastapi", res, "the server extra") is None:
        raise SystemExit('bench_server needs pip install "fastrag-engine[server]" httpx')
    sizes = {"smoke": (40, 1, 64, 64, 200), "quick": (200, 2, 640, 320, 10_000)}
    docs_n, rounds, n_embed, n_search, n_rss = sizes.get(args.mode, (1_400, 3, 1280, 800,
                                                                     10_000))
    args.docs = args.docs or docs_n
    rounds = args.rounds or rounds
    if args.cache_dir is not None:
        os.environ["FASTRAG_CACHE"] = str(args.cache_dir)
    docs, queries = load_texts(args, res)
    work = Path(tempfile.mkdtemp(prefix="fastrag-bench-server-"))
    folder = work / "col"
    t0 = time.perf_counter()
    build(folder, docs)
    print(f"collection: {len(docs)} documents, {len(queries)} queries "
          f"({time.perf_counter() - t0:.1f} s to build)", flush=True)

    batched = Server(folder, work / "batched.log")
    unbatched = Server(folder, work / "unbatched.log", "--no-batching")
    load = Load()
    try:
        batched.wait(httpx)
        unbatched.wait(httpx)
        short = [" ".join(q.split()[:6]) for q in queries]
        embed = [("/v1/embeddings", {"model": "m", "input": t}) for t in short]
        search = [("/search", {"query": q, "k": 10}) for q in queries]
        for srv in (batched, unbatched):  # warm-up: sessions, readers, caches
            load.run(srv, embed, 8, 64)
            load.run(srv, search, 8, 64)

        rps = {"on": 0.0, "off": 0.0}
        cpu_ms = {"on": float("inf"), "off": float("inf")}
        embed_lat: list[float] = []
        for r in range(rounds):
            order = [("on", batched), ("off", unbatched)]
            for name, srv in order if r % 2 == 0 else order[::-1]:
                c0 = srv.cpu_s()
                got, lat = load.run(srv, embed, 32, n_embed)
                cpu_ms[name] = min(cpu_ms[name], (srv.cpu_s() - c0) * 1000 / n_embed)
                print(f"embeddings c32 batching {name}: {got:,.0f} requests/s, server CPU "
                      f"{(srv.cpu_s() - c0) * 1000 / n_embed:.2f} ms per request", flush=True)
                if got > rps[name]:
                    rps[name] = got
                    if name == "on":
                        embed_lat = lat

        search_qps, local_qps = 0.0, 0.0
        for _ in range(rounds):
            got, _ = load.run(batched, search, 8, n_search)
            search_qps = max(search_qps, got)
            local = inprocess_qps(folder, queries, max(50, n_search // 4), 1)
            local_qps = max(local_qps, local)
            print(f"search c8: {got:,.1f} q/s over HTTP, in-process loop {local:,.1f} q/s",
                  flush=True)
        c32_qps, c32_lat = load.run(batched, search, 32, n_search)
        print(f"search c32: {c32_qps:,.1f} q/s, p50 {pct(c32_lat, 0.5):.1f} ms, "
              f"p99 {pct(c32_lat, 0.99):.1f} ms", flush=True)

        bm25 = [("/search", {"query": q, "k": 10, "method": "bm25"}) for q in queries]
        mixed = [b for four in zip(embed, search, embed, bm25, strict=True) for b in four]
        load.run(batched, mixed, 16, min(1_000, n_rss))
        rss0 = batched.rss_kib()
        load.run(batched, mixed, 16, n_rss)
        rss1 = batched.rss_kib()
        growth = (rss1 - rss0) / rss0 * 100.0
        print(f"RSS {rss0 / 1024:.1f} MiB -> {rss1 / 1024:.1f} MiB after {n_rss:,} requests "
              f"({growth:+.2f} %)", flush=True)
    finally:
        codes = [batched.stop(), unbatched.stop()]
    if any(codes):
        print(f"a server exited with {codes}; logs in {work}")
        load.errors += 1

    res.details.update(embed_rps_c32={"batching": rps["on"], "no_batching": rps["off"]},
                       search_qps_c8=search_qps, inprocess_qps=local_qps,
                       search_c32_ms=sorted(x * 1000 for x in c32_lat),
                       documents=len(docs), queries=len(queries), requests=load.requests)
    res.summary.update(
        errors=load.errors,
        embed_batching_gain_c32=rps["on"] / rps["off"],
        embed_cpu_gain_c32=cpu_ms["off"] / cpu_ms["on"],
        embed_server_cpu_ms_c32=cpu_ms["on"],
        embed_server_cpu_ms_c32_no_batching=cpu_ms["off"],
        search_qps_c8_ratio_vs_inprocess=search_qps / local_qps,
        p50_ms_c32=pct(c32_lat, 0.5),
        p99_ms_c32=pct(c32_lat, 0.99),
        embed_p50_ms_c32=pct(embed_lat, 0.5),
        embed_p99_ms_c32=pct(embed_lat, 0.99),
        rss_growth_pct_10k=growth,
        embed_rps_c32=rps["on"],
        embed_rps_c32_no_batching=rps["off"],
        search_qps_c8=search_qps,
        inprocess_qps=local_qps,
        requests=load.requests,
    )
    res.finish()


if __name__ == "__main__":
    main()
