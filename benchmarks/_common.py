"""The harness every benchmark script uses: command-line modes, timing, machine facts, results.

Every ``bench_*.py`` and ``quality_*.py`` script:

- builds its parser with :func:`parser` (``--smoke``, ``--quick``, ``--json PATH`` and, for the
  scripts that read the shared collections, ``--data DIR``);
- times with :func:`measure` (warm-up, repeats, best and median) or :func:`time_cases`
  (several cases interleaved in a rotating order);
- imports optional peers with :func:`optional`, so that a missing one is reported as skipped;
- ends with :meth:`Results.finish`, which writes the JSON file (summary, details, machine facts,
  peer versions, skipped parts) and prints exactly one last line
  ``SUMMARY key=value key=value ...`` (numbers only, snake_case keys).

Modes: ``--smoke`` runs the same code on tiny generated data without peers, in seconds (CI runs
it through tests/test_benchmarks_smoke.py); ``--quick`` runs on less data (under 5 minutes on 2
cores); neither flag is the full run.

The scripts pin OMP/OpenBLAS/MKL to one thread themselves, before numpy is first imported; this
module imports nothing heavy at import time (torch only through :func:`optional`).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "DEFAULT_DATA",
    "REPO",
    "Results",
    "Timing",
    "beir_dataset",
    "best_times",
    "cpu_model",
    "dataset_parser",
    "judged_datasets",
    "machine_facts",
    "measure",
    "optional",
    "parse",
    "parser",
    "sample",
    "time_cases",
    "tiny_beir",
    "version",
]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
KEY = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
# the line run_all.py and the smoke test parse: keys snake_case, values numbers
SUMMARY_LINE = re.compile(
    r"^SUMMARY( [a-z][a-z0-9]*(_[a-z0-9]+)*=-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?)*$"
)


# ----------------------------------------------------------------------------- modes
def parser(doc: str | None, *, data: bool = False) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes.

    ``--smoke`` / ``--quick`` pick the mode (``args.mode``: "smoke", "quick" or "full"); ``--json``
    names the results file; with ``data=True``, ``--data`` is the folder of BEIR collections
    (default ``../shared/data`` next to the repository).
    """
    first = (doc or "").strip().split("\n\n")[0].replace("\n", " ")
    ap = argparse.ArgumentParser(
        description=first, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    group = ap.add_mutually_exclusive_group()
    group.add_argument(
        "--quick", action="store_true", help="the same code on less data (under 5 minutes)"
    )
    group.add_argument(
        "--smoke", action="store_true", help="tiny generated data, no peers: a few seconds (CI)"
    )
    ap.add_argument("--json", type=Path, default=None, metavar="PATH", help="write results here")
    if data:
        ap.add_argument(
            "--data",
            type=Path,
            default=DEFAULT_DATA,
            help=f"folder of BEIR collections (default {DEFAULT_DATA})",
        )
    return ap


def parse(ap: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parses, then sets ``args.mode``; in smoke mode ``args.data`` is a tiny generated folder."""
    args = ap.parse_args(argv)
    args.mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    if args.smoke and hasattr(args, "data"):
        tmp = Path(tempfile.mkdtemp(prefix="fastrag-smoke-"))
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        args.data = tiny_beir(tmp)
    return args


def optional(module: str, results: Results | None = None, why: str = "") -> ModuleType | None:
    """The module, or None (reported as skipped) when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        msg = f"{module} not installed ({e.__class__.__name__}): {why or 'its rows'} skipped"
        print(msg, flush=True)
        if results is not None:
            results.skipped.append(msg)
        return None


# ----------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Seconds per call: every sample, their best (minimum) and median."""

    samples: list[float]

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def measure(
    fn: Callable[[], object],
    *,
    warmup: int = 1,
    repeats: int = 5,
    min_s: float = 0.0,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Warm-up calls, then `repeats` samples of seconds per call (gc paused in a sample).

    A sample repeats the call until it lasts at least `min_s` (one call when 0). `clock`: wall
    time by default; `time.process_time` counts the process's CPU time instead.
    """
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(max(1, repeats)):
        gc.collect()
        gc.disable()
        try:
            n, t0 = 0, clock()
            while True:
                fn()
                n += 1
                elapsed = clock() - t0
                if elapsed >= min_s:
                    break
        finally:
            gc.enable()
        samples.append(elapsed / n)
    return Timing(samples)


def sample(fn: Callable[[], object], min_s: float = 0.1) -> float:
    """Seconds per call of fn, repeating it for at least min_s."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_s:
            return elapsed / n


def best_times(
    engines: Mapping[str, Callable[[], object]], rounds: int, min_s: float = 0.1
) -> dict[str, float]:
    """Best seconds per call of every engine over rounds, the engines in a rotating order."""
    best = dict.fromkeys(engines, float("inf"))
    names = list(engines)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotating order
            best[name] = min(best[name], sample(engines[name], min_s))
    return best


def time_cases(
    cases: dict[str, Callable[[], object]], repeat: int, min_sample_s: float = 0.2
) -> dict[str, list[float]]:
    """Seconds per call of each case: warm-up, then `repeat` interleaved samples each.

    The order of the cases rotates between rounds, so that slow drifts of the machine
    spread over all of them. The garbage collector is paused while a sample runs.
    """
    calls = {}
    for name, fn in cases.items():
        t0 = time.perf_counter()
        fn()  # warm-up: JIT compilation, caches, lazy initialisation
        first = time.perf_counter() - t0
        calls[name] = max(1, int(min_sample_s / max(first, 1e-9)))
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeat):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, n = cases[name], calls[name]
            gc.collect()
            gc.disable()
            try:
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                times[name].append((time.perf_counter() - t0) / n)
            finally:
                gc.enable()
    return times


# ----------------------------------------------------------------------------- machine
def version(dist: str) -> str:
    """The installed version of a distribution, or "not installed"."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what the platform module knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cpu_flags() -> list[str]:
    wanted = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "avx512_bf16", "amx_tile")
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in have]
    except OSError:
        pass
    return []


def _git() -> dict[str, Any]:
    try:
        git = ["git", "-C", str(REPO)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "cpp", "python"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        return {"commit": head, "dirty_core": bool(dirty)}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty_core": None}


def _kernels() -> dict[str, str]:
    """The kernel sets fastrag picked on this CPU (or that FASTRAG_KERNELS forced)."""
    out: dict[str, str] = {}
    try:
        from fastrag import _core

        out["dense"] = str(_core.HnswIndex(16).stats()["kernels"])
        out["pooling"] = str(_core.pooling_kernels())
    except Exception as e:  # a broken build still gets its facts written
        out["error"] = f"{type(e).__name__}: {e}"
    forced = os.environ.get("FASTRAG_KERNELS")
    if forced:
        out["forced"] = forced
    return out


BASE_LIBRARIES = ("fastrag", "numpy", "onnxruntime", "tokenizers", "scipy")


def machine_facts(peers: tuple[str, ...] = ()) -> dict[str, Any]:
    """CPU model, cores, CPU flags, fastrag's kernels, git commit and library versions."""
    mem = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            mem = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "cpu_flags": _cpu_flags(),
        "memory_gib": mem,
        "kernels": _kernels(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": _git(),
        "libraries": {d: version(d) for d in (*BASE_LIBRARIES, *peers)},
        "threads_env": {
            v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                          "MKL_NUM_THREADS") if os.environ.get(v)
        },
    }


def describe(facts: Mapping[str, Any]) -> str:
    """One line for the top of a script's output."""
    libs = ", ".join(f"{k} {v}" for k, v in facts["libraries"].items() if v != "not installed")
    kern = ", ".join(f"{k} {v}" for k, v in facts["kernels"].items())
    return (
        f"machine: {facts['cores']} CPUs ({facts['cpu']}), kernels: {kern}; Python "
        f"{facts['python']}, commit {facts['git']['commit']}; {libs}"
    )


# ----------------------------------------------------------------------------- results
def _number(v: Any) -> float | int | None:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    try:
        import numpy as np

        if isinstance(v, np.integer):
            return int(v)
        if isinstance(v, np.floating):
            f = float(v)
            return f if math.isfinite(f) else None
    except ImportError:
        pass
    return None


def _fmt(v: float | int) -> str:
    if isinstance(v, int):
        return str(v)
    return repr(round(v, 6)) if abs(v) >= 1e-4 or v == 0 else f"{v:.6g}"


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    n = _number(x)
    if n is not None:
        return n
    if isinstance(x, float):
        return None  # nan / inf
    if x is None or isinstance(x, str):
        return x
    if hasattr(x, "tolist"):
        return _jsonable(x.tolist())
    return str(x)


@dataclass
class Results:
    """What one run of a script reports: SUMMARY numbers, details for plots, skipped parts."""

    script: str
    args: argparse.Namespace
    peers: tuple[str, ...] = ()
    summary: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.script = Path(self.script).stem
        self.facts = machine_facts(self.peers)
        print(describe(self.facts), flush=True)
        print(f"mode: {self.args.mode}", flush=True)

    def skip(self, what: str) -> None:
        """Reports a part that did not run (missing data, peer or package)."""
        print(f"skipped: {what}", flush=True)
        self.skipped.append(what)

    def finish(self) -> None:
        """Writes the JSON file (if asked) and prints the SUMMARY line, the output's last."""
        numbers: dict[str, float | int] = {}
        dropped = []
        for k, v in self.summary.items():
            n = _number(v)
            if n is None or not KEY.match(k):
                if v is not None:
                    dropped.append(k)
            else:
                numbers[k] = n
        if dropped:
            print(f"(not in SUMMARY, not numbers or not snake_case: {', '.join(dropped)})")
        elapsed = time.perf_counter() - self.started
        if self.args.json is not None:
            self.facts["libraries"].update({p: version(p) for p in self.peers})
            doc = {
                "script": self.script,
                "mode": self.args.mode,
                "argv": sys.argv[1:],
                "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "elapsed_s": round(elapsed, 2),
                "summary": numbers,
                "details": _jsonable(self.details),
                "skipped": self.skipped,
                "machine": _jsonable(self.facts),
            }
            path = Path(self.args.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            tmp.replace(path)
        print(f"(elapsed {elapsed:.1f} s)")
        line = "SUMMARY " + " ".join(f"{k}={_fmt(v)}" for k, v in numbers.items())
        print(line.rstrip(), flush=True)


# ----------------------------------------------------------------------------- smoke data
_EN_TEXT = (
    "boundary layer flow heat transfer shock wave pressure plate wing supersonic laminar "
    "turbulent jet nozzle cylinder cone drag lift stress buckling panel flutter velocity "
    "temperature viscous skin friction mach number slender body separation vortex"
)
_JA_PARAS = [
    "東京は日本の首都です。人口が多い都市です。",
    "富士山は日本で一番高い山です。静岡県と山梨県にまたがります。",
    "梅雨は六月から七月にかけての雨の季節です。湿度が高くなります。",
    "新幹線は日本の高速鉄道です。東京と大阪を結びます。",
    "京都には多くの寺院があります。観光客が訪れます。",
    "北海道は冬に雪が多い地域です。スキー場が有名です。",
]


def dataset_parser(doc: str | None, datasets: tuple[str, ...]) -> argparse.ArgumentParser:
    """`parser` with the options of the scripts that score judged BEIR queries:
    ``--datasets``, ``--limit-queries`` (see `judged_datasets`) and ``--cache-dir``."""
    ap = parser(doc, data=True)
    ap.add_argument("--datasets", default=",".join(datasets),
                    help="comma-separated dataset folders under --data")
    ap.add_argument("--limit-queries", type=int, default=None,
                    help="first N judged queries per dataset")
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="fastrag's export cache for the encoders (default: fastrag's own)")
    return ap


def beir_dataset(root: Path, name: str, results: Results) -> Any:
    """The BEIR folder `name` under `root` (a `fastrag.eval` dataset), or None when it is not
    there (reported as skipped)."""
    from fastrag.eval import load_beir

    folder = root / name
    if not (folder / "corpus.jsonl").is_file():
        results.skip(f"{name}: not found under {root} (BEIR layout expected)")
        return None
    return load_beir(folder)


def judged_datasets(
    args: argparse.Namespace, results: Results, *, others: int = 300
) -> Iterator[tuple[str, list[str], list[str], list[str], list[str], dict[str, dict[str, int]]]]:
    """The BEIR folders of ``--datasets`` under ``args.data`` for the quality scripts, each as
    (name, document ids, texts, query ids, queries, their qrels): the first
    ``args.limit_queries`` judged queries (all when None); in --quick mode only the judged
    documents of those queries and the first `others` others. A missing folder is reported
    as skipped."""
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        data = beir_dataset(args.data, name, results)
        if data is None:
            continue
        ids, texts = data.documents()
        qids, queries = data.judged_queries()
        if args.limit_queries is not None:
            qids, queries = qids[: args.limit_queries], queries[: args.limit_queries]
        qrels = {q: data.qrels[q] for q in qids}
        if args.mode == "quick":
            judged = {d for q in qids for d in qrels[q]}
            keep = [i for i, d in enumerate(ids) if d in judged or i < others]
            ids, texts = [ids[i] for i in keep], [texts[i] for i in keep]
        yield name, ids, texts, qids, queries, qrels


def tiny_beir(root: Path, n_docs: int = 16, n_queries: int = 6, seed: int = 0) -> Path:
    """A tiny generated folder of BEIR collections (an English "cranfield" and a Japanese
    "jsquad-valid" with ``<title>#<k>`` paragraph ids) for smoke runs; returns the folder."""
    import random

    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)

    def write(name: str, docs: list[dict], queries: list[dict], qrels: list[tuple]) -> None:
        d = root / name
        (d / "qrels").mkdir(parents=True, exist_ok=True)
        with open(d / "corpus.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(x, ensure_ascii=False) + "\n" for x in docs)
        with open(d / "queries.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(x, ensure_ascii=False) + "\n" for x in queries)
        with open(d / "qrels" / "test.tsv", "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            f.writelines(f"{q}\t{c}\t{s}\n" for q, c, s in qrels)

    words_en = _EN_TEXT.split(" ")
    docs, queries, qrels = [], [], []
    for i in range(n_docs):
        words = rng.choices(words_en, k=rng.randint(20, 60))
        sents = [" ".join(words[j : j + 10]) + "." for j in range(0, len(words), 10)]
        docs.append({"_id": str(i + 1), "title": " ".join(words[:3]), "text": " ".join(sents)})
    for q in range(n_queries):
        target = docs[rng.randrange(n_docs)]
        words = target["text"].replace(".", "").split()
        queries.append({"_id": str(q + 1), "text": "what is " + " ".join(rng.sample(words, 4))})
        qrels.append((str(q + 1), target["_id"], 2))
    write("cranfield", docs, queries, qrels)

    docs, queries, qrels = [], [], []
    for a in range(3):
        for k in range(4):
            para = _JA_PARAS[(a * 4 + k) % len(_JA_PARAS)]
            docs.append({"_id": f"記事{a}#{k}", "title": f"記事{a}", "text": para})
    for q in range(n_queries):
        d = docs[rng.randrange(len(docs))]
        queries.append({"_id": f"q{q}", "text": d["text"].split("。")[0] + "は何ですか"})
        qrels.append((f"q{q}", d["_id"], 1))
    write("jsquad-valid", docs, queries, qrels)
    return root
