"""Fuzzes every target (or one) with atheris for a while and reports what it found.

    python tests/fuzz/run.py [--seconds 60] [--kind bm25] [--keep DIR]

Each target runs in its own process (`fuzz_one.py`) for --seconds, starting from a copy of its
seed corpus in a temporary folder; a process that crashes or times out on an input is
restarted for the time left (at most 5 times). Prints per target the executions and the
distinct findings (files kept under --keep, else listed and removed), then one line
``SUMMARY runs=... findings=...``; exits 1 when anything was found, 2 when atheris is missing
or a harness could not start (e.g. the package does not import while it is being rebuilt).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

KINDS = [
    "bm25", "bm25_mmap", "impact", "impact_mmap", "splade", "splade_mmap", "bm42", "bm42_mmap",
    "dense", "dense_mmap", "collection", "analyzer_english", "analyzer_japanese", "analyzer_bigram",
    "analyzer_auto", "analyzer_ascii_words", "docs", "approx",
]
MAX_RESTARTS = 5


def seed_dir(kind: str) -> Path:
    base = kind.removesuffix("_mmap")
    return HERE / "seeds" / ("analyzer" if base.startswith("analyzer_") else base)


def fuzz(kind: str, seconds: float, work: Path) -> tuple[int, int, int, list[str], list[str]]:
    """Fuzzes one target; (executions, coverage features, corpus size at the end,
    descriptions of the distinct findings, errors of a harness that could not start, e.g.
    the package failing to import, or fuzzing without coverage feedback)."""
    corpus, found, tmp = work / "corpus" / kind, work / "findings" / kind, work / "tmp"
    shutil.copytree(seed_dir(kind), corpus)
    found.mkdir(parents=True)
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "FASTRAG_FUZZ_TMP": str(tmp), "PYTHONHASHSEED": "0"}
    # room to grow past the largest seed (libFuzzer would cut longer inputs)
    max_len = max(16384, 2 * max(p.stat().st_size for p in corpus.iterdir()))
    deadline = time.monotonic() + seconds
    log_runs = cov = 0
    crashes: list[str] = []
    start_errors: list[str] = []
    for _ in range(MAX_RESTARTS + 1):
        left = int(deadline - time.monotonic())
        if left < 1:
            break
        cmd = [
            sys.executable, str(HERE / "fuzz_one.py"), "--kind", kind, "--findings", str(found),
            str(corpus), f"-max_total_time={left}", "-timeout=20", "-rss_limit_mb=3072",
            f"-max_len={max_len}", f"-artifact_prefix={found}/", "-print_final_stats=1",
        ]
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        done = re.findall(r"Done (\d+) runs", p.stderr)
        statuses = re.findall(r"^#(\d+)\s", p.stderr, re.M)
        log_runs += int(done[-1]) if done else int(statuses[-1]) if statuses else 0
        cov = max([cov, *map(int, re.findall(r" cov: (\d+) ", p.stderr))])
        if "no interesting inputs were found" in p.stderr and not cov:
            # no Python coverage reaches libFuzzer: it would mutate a 1-byte input only
            start_errors.append("no coverage feedback (is fastrag instrumented?)")
            break
        if p.returncode == 0:
            break
        tail = [ln for ln in p.stderr.splitlines() if ln.strip()][-12:]
        if "ERROR: libFuzzer" not in p.stderr:  # no input ran into it: it never started
            start_errors.append(f"exit {p.returncode}: " + " | ".join(tail[-3:])[-600:])
            break
        kinds = re.findall(r"==\d+== ERROR: libFuzzer: ([\w-]+)", p.stderr) or ["exit"]
        crashes.append(f"{kinds[0]} (exit {p.returncode}): " + " | ".join(tail)[-800:])
    counted = sum(int(f.read_text() or 0) for f in found.glob("execs-*"))
    findings = [f.read_text().split("\n")[1] for f in sorted(found.glob("finding-*.txt"))]
    findings += crashes
    corpus_size = sum(1 for _ in corpus.iterdir())
    return max(counted, log_runs), cov, corpus_size, findings, start_errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="fuzzing time per target")
    ap.add_argument("--kind", choices=KINDS, action="append", help="target(s); default all")
    ap.add_argument("--keep", type=Path, help="copy findings and crash inputs to this folder")
    args = ap.parse_args()
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed: pip install atheris", file=sys.stderr)
        sys.exit(2)
    total_runs = total_findings = total_errors = 0
    with tempfile.TemporaryDirectory(prefix="fastrag-fuzz-run-") as d:
        work = Path(d)
        for kind in args.kind or KINDS:
            runs, cov, n_corpus, findings, errors = fuzz(kind, args.seconds, work)
            total_runs += runs
            total_findings += len(findings)
            total_errors += len(errors)
            print(f"{kind:20s} runs={runs:<8d} cov={cov:<5d} corpus={n_corpus:<5d} "
                  f"findings={len(findings)}"
                  + (f" start_errors={len(errors)}" if errors else ""), flush=True)
            for f in findings:
                print(f"    - {f[:400]}", flush=True)
            for f in errors:
                print(f"    ! could not start: {f[:400]}", flush=True)
        if args.keep and total_findings:
            args.keep.mkdir(parents=True, exist_ok=True)
            for f in (work / "findings").rglob("*"):
                if f.is_file() and not f.name.startswith("execs-"):
                    shutil.copy(f, args.keep / f.name)
    print(f"SUMMARY runs={total_runs} findings={total_findings}"
          + (f" start_errors={total_errors}" if total_errors else ""))
    sys.exit(1 if total_findings else 2 if total_errors else 0)


if __name__ == "__main__":
    main()
