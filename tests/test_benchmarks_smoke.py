"""Every benchmark script runs in --smoke mode (tiny generated data, no peers) and ends with a
well-formed SUMMARY line, so that no benchmark can rot. This is how CI runs the smoke mode.

Each script runs in its own process from the repository root, in a few seconds (ranx's first
evaluation and the encoders' sessions are most of it).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
SCRIPTS = sorted(BENCH.glob("bench_*.py")) + sorted(BENCH.glob("quality_*.py"))
KEY = r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*"
NUMBER = r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
SUMMARY = re.compile(rf"^SUMMARY(?: {KEY}={NUMBER})*$")


def run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_the_scripts_are_found():
    assert len(SCRIPTS) >= 10, [s.name for s in SCRIPTS]


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_smoke(script: Path, tmp_path: Path):
    out = tmp_path / "result.json"
    proc = run([str(script), "--smoke", "--json", str(out)])
    assert proc.returncode == 0, (
        f"{script.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, f"{script.name} printed nothing"
    last = lines[-1]
    assert SUMMARY.match(last), f"{script.name}: last line is not a SUMMARY line: {last!r}"
    assert sum(line.startswith("SUMMARY") for line in lines) == 1
    pairs = dict(item.split("=", 1) for item in last.split()[1:])
    assert pairs, f"{script.name}: empty SUMMARY"
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["mode"] == "smoke"
    assert set(doc["summary"]) == set(pairs)
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["kernels"]


def test_run_all_writes_report_and_plots(tmp_path: Path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "results"
    proc = run(
        [str(BENCH / "run_all.py"), "--smoke", "--out", str(out),
         "--only", "bench_maxsim", "bench_pooling", "--readme", str(tmp_path / "README.md")]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert set(doc["results"]) == {"bench_maxsim", "bench_pooling"}
    assert doc["results"]["bench_maxsim"]["summary"]["maxsim_ratio_vs_numpy"] > 0
    assert (out / "report.md").is_file() and (out / "ratios.png").is_file()
    assert "bench_maxsim" in (tmp_path / "README.md").read_text(encoding="utf-8")
