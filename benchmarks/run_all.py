"""Runs every benchmark script and writes results.json, report.md and PNG plots.

    python benchmarks/run_all.py --quick --out benchmarks/results    # 30-60 min on 2 cores
    python benchmarks/run_all.py --smoke --out /tmp/bench-smoke       # about a minute
    python benchmarks/run_all.py --out DIR                            # full runs (hours)
    python benchmarks/run_all.py --render DIR --readme benchmarks/README.md   # no runs: redraw
    # options: --only NAME ..., --skip NAME ..., --timeout S, --data DIR

Every ``benchmarks/bench_*.py`` and ``benchmarks/quality_*.py`` runs in its own process with the
same mode flag and ``--json DIR/raw/<script>.json``; its output goes to ``DIR/logs/<script>.log``.
``results.json`` holds, per script, the exit code, the wall time, the SUMMARY numbers, the
details each script keeps for plots, the parts it skipped and the machine facts it recorded
(CPU, cores, fastrag's kernels, library versions, commit). It is rewritten after every script,
so an interrupted run keeps what finished.

Plots (matplotlib, Agg): recall@10 against queries/s for the ANN indexes with each engine's
Pareto frontier (as ann-benchmarks draws them), latency distributions of the pipelines (and of
one-query encoding), encoder throughput against batch size, and one bar chart of every
fastrag / peer ratio in the SUMMARY lines (> 1: fastrag is better).

``--readme PATH`` writes the benchmarks README from results.json: the scripts' own descriptions
(their docstrings) and the numbers of this run; nothing in it is copied by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import REPO, SUMMARY_LINE, machine_facts  # noqa: E402

RATIO = re.compile(r"_ratio_vs_")
DEFAULT_TIMEOUT = {"smoke": 300, "quick": 1200, "full": 4 * 3600}


def scripts() -> list[Path]:
    return sorted(HERE.glob("bench_*.py")) + sorted(HERE.glob("quality_*.py"))


def parse_summary(stdout: str) -> tuple[dict[str, float], str | None]:
    """The SUMMARY numbers of a script's output, and an error when its last line is not one."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return {}, "no output"
    last = lines[-1].rstrip()
    if not SUMMARY_LINE.match(last):
        return {}, f"last line is not a SUMMARY line: {last[:200]!r}"
    out: dict[str, float] = {}
    for item in last.split()[1:]:
        k, v = item.split("=", 1)
        out[k] = float(v) if any(c in v for c in ".eE") else int(v)
    return out, None


# ----------------------------------------------------------------------------- running
def run_one(script: Path, mode: str, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    name = script.stem
    raw = out / "raw" / f"{name}.json"
    log = out / "logs" / f"{name}.log"
    raw.unlink(missing_ok=True)
    cmd = [sys.executable, str(script), "--json", str(raw)]
    if mode != "full":
        cmd.append(f"--{mode}")
    if args.data is not None and "--data" in script.read_text(encoding="utf-8"):
        cmd += ["--data", str(args.data)]
    print(f"[run_all] {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        # stdout is copied to the log line by line (a long run can be followed with tail -f)
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=f, text=True, cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        timer = threading.Timer(args.timeout, proc.kill)
        timer.start()
        chunks = []
        try:
            for line in proc.stdout:
                chunks.append(line)
                f.write(line)
                f.flush()
            rc = proc.wait()
        finally:
            timed_out = not timer.is_alive() and proc.returncode not in (0, None)
            timer.cancel()
        stdout = "".join(chunks)
        if timed_out:
            f.write(f"\n[run_all] killed after the {args.timeout:.0f} s timeout\n")
    elapsed = time.perf_counter() - t0
    summary, error = parse_summary(stdout)
    entry: dict[str, Any] = {
        "script": name,
        "command": " ".join(
            ["python", f"benchmarks/{script.name}",
             *(c for c in cmd[4:] if c not in (str(args.data), "--data"))]
            + (["--data", "DIR"] if "--data" in cmd else [])
        ),
        "json": str(raw.relative_to(out)),
        "returncode": rc,
        "wall_s": round(elapsed, 1),
        "summary": summary,
        "summary_error": error,
        "log": str(log.relative_to(out)),
    }
    if raw.is_file():
        doc = json.loads(raw.read_text(encoding="utf-8"))
        entry.update(
            details=doc.get("details", {}),
            skipped=doc.get("skipped", []),
            machine=doc.get("machine", {}),
            elapsed_s=doc.get("elapsed_s"),
        )
    status = "ok" if rc == 0 and error is None else f"FAILED (exit {rc}; {error or 'see log'})"
    print(f"[run_all] {name}: {status}, {elapsed:.0f} s", flush=True)
    return entry


def save(out: Path, doc: dict[str, Any]) -> None:
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out / "results.json")


# ----------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 8, "figure.dpi": 90, "savefig.dpi": 90})
    return plt


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (recall, qps) points no other point beats on both axes, by recall ascending."""
    front: list[tuple[float, float]] = []
    for r, q in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not front or q > front[-1][1]:
            front.append((r, q))
    return sorted(front)


def plot_ann(results: dict[str, Any], out: Path) -> list[str]:
    ann = results.get("bench_dense", {}).get("details", {}).get("ann", {})
    if not ann:
        return []
    plt = _plt()
    files = []
    for tag, data in ann.items():
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for name, eng in data["engines"].items():
            pts = [(p["recall"], p["qps"]) for p in eng["curve"]]
            front = pareto(pts)
            style = "-" if name.startswith("fastrag") else "--"
            line = ax.plot(*zip(*front, strict=True), style, marker="o", ms=3, label=name)[0]
            ax.scatter(*zip(*pts, strict=True), s=6, color=line.get_color(), alpha=0.4)
        ax.set_yscale("log")
        ax.set_xlabel("recall@10")
        ax.set_ylabel("queries per second (1 thread, log)")
        ax.set_title(f"{data['title']}: {data['queries']:,} queries, k=10 (up and right is better)")
        ax.axvline(0.95, color="grey", lw=0.5, ls=":")
        ax.grid(True, which="both", lw=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        f = f"ann_recall_vs_qps_{tag}.png"
        fig.savefig(out / f)
        plt.close(fig)
        files.append(f)
    return files


def _box(pcts: list[float], label: str) -> dict[str, Any]:
    """matplotlib bxp statistics from latency percentiles 0..100."""
    return {"label": label, "whislo": pcts[1], "q1": pcts[25], "med": pcts[50], "q3": pcts[75],
            "whishi": pcts[99], "fliers": []}


def plot_latency(results: dict[str, Any], out: Path) -> list[str]:
    plt = _plt()
    files = []
    dist = results.get("bench_pipeline", {}).get("details", {}).get("latency_ms_percentiles", {})
    for label, pipes in dist.items():
        modes = ("enc", "noenc")
        fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.6))
        for ax, mode in zip(axes, modes, strict=True):
            stats, colors = [], []
            for pipe, sides in pipes.items():
                for side, by_mode in sides.items():
                    stats.append(_box(by_mode[mode], f"{pipe}\n{side}"))
                    colors.append("tab:blue" if side == "fastrag" else "tab:orange")
            bp = ax.bxp(stats, showfliers=False, patch_artist=True)
            for patch, c in zip(bp["boxes"], colors, strict=True):
                patch.set_facecolor(c)
                patch.set_alpha(0.5)
            ax.set_yscale("log")
            ax.set_ylabel("ms per query (log)")
            what = "query encoding included" if mode == "enc" else "query encoding excluded"
            ax.set_title(f"{label}: {what}")
            ax.tick_params(axis="x", labelsize=6, rotation=90)
            ax.grid(True, axis="y", which="both", lw=0.3)
        fig.suptitle("pipeline latency, one query at a time (box p25-p75, whiskers p1-p99; "
                     "blue fastrag, orange peer)", fontsize=8)
        fig.tight_layout()
        f = f"latency_pipelines_{label}.png"
        fig.savefig(out / f)
        plt.close(fig)
        files.append(f)
    enc = results.get("bench_encode", {}).get("details", {}).get("latency_ms_b1", {})
    if enc:
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        ax.bxp([_box(p, n) for n, p in enc.items()], showfliers=False)
        ax.set_yscale("log")
        ax.set_ylabel("ms per query (log)")
        ax.set_title("query encoding at batch 1 (box p25-p75, whiskers p1-p99)")
        ax.grid(True, axis="y", which="both", lw=0.3)
        fig.tight_layout()
        fig.savefig(out / "latency_encode_b1.png")
        plt.close(fig)
        files.append("latency_encode_b1.png")
    return files


def plot_batch(results: dict[str, Any], out: Path) -> list[str]:
    sweep = results.get("bench_encode", {}).get("details", {}).get("throughput_vs_batch")
    if not sweep:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, by_batch in sweep["methods"].items():
        xs = sorted(int(b) for b in by_batch)
        ax.plot(xs, [by_batch[str(b)] for b in xs], marker="o", ms=3, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("documents per second")
    ax.set_title(f"encoder throughput against batch size ({sweep['docs']} cranfield documents)")
    ax.grid(True, which="both", lw=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "encode_throughput_vs_batch.png")
    plt.close(fig)
    return ["encode_throughput_vs_batch.png"]


def ratios(results: dict[str, Any]) -> list[tuple[str, str, float]]:
    return [
        (name, k, float(v))
        for name, r in results.items()
        for k, v in r.get("summary", {}).items()
        if RATIO.search(k) and v > 0
    ]


def plot_ratios(results: dict[str, Any], out: Path) -> list[str]:
    rows = ratios(results)
    if not rows:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.5, 1.0 + 0.15 * len(rows)))
    labels = [f"{s.removeprefix('bench_').removeprefix('quality_')}: {k}" for s, k, _ in rows]
    values = [v for _, _, v in rows]
    colors = ["tab:green" if v >= 1 else "tab:red" for v in values]
    y = range(len(rows))
    ax.barh(list(y), values, color=colors, alpha=0.7)
    ax.set_yticks(list(y), labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", lw=0.8)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=5)
    ax.set_xlabel("fastrag / peer (log; > 1: fastrag is better)")
    ax.set_title("every fastrag / peer ratio of this run (same process, same machine)")
    ax.grid(True, axis="x", which="both", lw=0.3)
    fig.tight_layout()
    fig.savefig(out / "ratios.png")
    plt.close(fig)
    return ["ratios.png"]


# ----------------------------------------------------------------------------- report
def _machine_lines(doc: dict[str, Any]) -> list[str]:
    m = doc.get("machine", {})
    if not m:
        return []
    libs = ", ".join(f"{k} {v}" for k, v in m.get("libraries", {}).items() if v != "not installed")
    kern = ", ".join(f"{k} {v}" for k, v in m.get("kernels", {}).items())
    git = m.get("git", {})
    return [
        f"- CPU: {m.get('cpu')}, {m.get('cores')} cores, flags {', '.join(m.get('cpu_flags', []))};"
        f" {m.get('memory_gib')} GiB",
        f"- fastrag kernels picked: {kern}",
        f"- commit {git.get('commit')}"
        + (" (with uncommitted changes in cpp/ or python/)" if git.get("dirty_core") else ""),
        f"- Python {m.get('python')}; {libs}",
        f"- load average at the start: {m.get('load_average')} (a shared machine: absolute "
        "figures move between runs, ratios are measured in the same process)",
    ]


def _summary_table(summary: dict[str, Any]) -> list[str]:
    if not summary:
        return ["(no SUMMARY numbers)"]
    out = ["| key | value |", "|---|---:|"]
    for k, v in summary.items():
        out.append(f"| `{k}` | {_num(v)} |")
    return out


def _num(v: float | int) -> str:
    if isinstance(v, int) or abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def _status(r: dict[str, Any]) -> str:
    if r.get("returncode") == 0 and not r.get("summary_error"):
        return "ok"
    return f"failed (exit {r.get('returncode')})"


def write_report(doc: dict[str, Any], out: Path, plots: dict[str, list[str]]) -> None:
    res = doc["results"]
    lines = [
        f"# fastrag benchmarks: {doc['mode']} run",
        "",
        f"Run {doc['started_utc']} to {doc.get('finished_utc', '?')} by "
        f"`python benchmarks/run_all.py{'' if doc['mode'] == 'full' else ' --' + doc['mode']} "
        f"--out {doc['out']}`. Machine:",
        "",
        *_machine_lines(doc),
        "",
        "| script | status | wall s | skipped |",
        "|---|---|---:|---|",
    ]
    for name, r in res.items():
        skipped = "; ".join(r.get("skipped", [])) or "-"
        lines.append(f"| {name} | {_status(r)} | {r.get('wall_s', 0):.0f} | {skipped} |")
    lines += ["", "## Every fastrag / peer ratio", ""]
    lines += [f"![ratios]({f})" for f in plots.get("ratios", [])]
    lines += ["", "| script | key | ratio |", "|---|---|---:|"]
    lines += [f"| {s} | `{k}` | {v:.3f} |" for s, k, v in ratios(res)]
    for title, key in (("ANN indexes: recall@10 against QPS", "ann"),
                       ("Latency distributions", "latency"),
                       ("Encoder throughput against batch size", "batch")):
        if plots.get(key):
            lines += ["", f"## {title}", ""] + [f"![{f}]({f})" for f in plots[key]]
    lines += ["", "## SUMMARY lines", ""]
    for name, r in res.items():
        lines += [f"### {name}", "", f"`{r.get('command')}` ({_status(r)}, {r.get('wall_s')} s)",
                  ""]
        if r.get("summary_error"):
            lines += [f"Error: {r['summary_error']} (log: `{r.get('log')}`)", ""]
        lines += [*_summary_table(r.get("summary", {})), ""]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def render(out: Path) -> dict[str, list[str]]:
    doc = json.loads((out / "results.json").read_text(encoding="utf-8"))
    res = doc["results"]
    plots = {
        "ann": plot_ann(res, out),
        "latency": plot_latency(res, out),
        "batch": plot_batch(res, out),
        "ratios": plot_ratios(res, out),
    }
    doc["plots"] = plots
    save(out, doc)
    write_report(doc, out, plots)
    return plots


# ----------------------------------------------------------------------------- README
README_HEAD = """# Benchmarks

<!-- Generated by `python benchmarks/run_all.py --render {out} --readme benchmarks/README.md`
from {out}/results.json: edit the scripts' docstrings or run_all.py, not this file. -->

Every script here compares fastrag with a peer library in the same process on the same data,
so that the ratios hold on a noisy shared machine where absolute figures move by a third.
Dated findings of earlier full runs (what was tried, what changed) are in [NOTES.md](NOTES.md).

## How to run

```bash
pip install -e ".[bench]"                              # the peers: bm25s, numba, hnswlib, faiss...
python benchmarks/run_all.py --quick --out benchmarks/results   # every script, report + plots
python benchmarks/bench_dense.py --quick --json /tmp/dense.json # one script
python benchmarks/bench_dense.py --smoke                        # seconds, no peers (CI)
pytest benchmarks/ --benchmark-only                             # kernel microbenchmarks
```

Conventions (all scripts, through `benchmarks/_common.py`):

- `--quick` runs the same code on less data (under 5 minutes each on 2 cores); no flag is the
  full run; `--smoke` runs on tiny generated data without peers in seconds (CI runs every script
  this way in `tests/test_benchmarks_smoke.py`).
- `--json PATH` writes the summary, the details behind the plots, the skipped parts and the
  machine facts (CPU model, cores, CPU flags, the kernels fastrag picked, library and peer
  versions, commit, load average).
- `--data DIR` (scripts that read the shared collections; default `../shared/data`): a missing
  dataset is skipped with a message, and so is a missing optional peer.
- The last line of the output is `SUMMARY key=value ...`: numbers only, snake_case keys; ratios
  are named `<measure>_ratio_vs_<peer>[_<dataset>]` and are > 1 when fastrag is better.
- Timing: a warm-up call, then repeated samples; cases interleaved in a rotating order; tables
  give the best and the median (see each script's description).

## Kernel microbenchmarks (pytest-benchmark)

`benchmarks/test_kernels.py` and `benchmarks/test_micro_sparse.py`: distance kernels per ISA
(exact scans and graph walks with `FASTRAG_KERNELS=generic|avx2|avx512`), top-k, posting-list
scoring (BM25 and impact), span pooling and MaxSim per ISA. They are not collected by the
default `python -m pytest` (testpaths is `tests`).

```bash
pytest benchmarks/ --benchmark-only --benchmark-autosave          # saves .benchmarks/...
# later, on another commit: fail when a median is more than 10% slower
pytest benchmarks/ --benchmark-only --benchmark-compare --benchmark-compare-fail=median:10%
```
"""


def write_readme(out: Path, path: Path) -> None:
    doc = json.loads((out / "results.json").read_text(encoding="utf-8"))
    res = doc["results"]
    rel = os.path.relpath(out, path.parent)
    try:
        shown_out = str(out.resolve().relative_to(REPO))
    except ValueError:
        shown_out = str(out)
    lines = [README_HEAD.format(out=shown_out)]
    lines += [
        f"## Latest results ({doc['mode']} run, {doc['started_utc'][:10]})",
        "",
        f"From `{shown_out}/results.json`; the full report with every SUMMARY line is "
        f"[{rel}/report.md]({rel}/report.md). Machine:",
        "",
        *_machine_lines(doc),
        "",
        "| script | status | wall s (this run) |",
        "|---|---|---:|",
    ]
    lines += [f"| [{n}](#{n}) | {_status(r)} | {r.get('wall_s', 0):.0f} |"
              for n, r in res.items()]
    plots = doc.get("plots", {})
    if plots.get("ratios"):
        lines += ["", "Every fastrag / peer ratio of the run:", "",
                  f"![ratios]({rel}/{plots['ratios'][0]})"]
    for script in scripts():
        name = script.stem
        r = res.get(name)
        text = script.read_text(encoding="utf-8")
        m = re.search(r'^"""(.*?)"""', text, re.S | re.M)
        lines += ["", f"## {name}", ""]
        lines += [m.group(1).strip() if m else "(no description)", ""]
        if r is None:
            lines += ["(not in this run)"]
            continue
        lines += [f"This run: `{r.get('command')}`, {_status(r)}, {r.get('wall_s')} s.", ""]
        if r.get("skipped"):
            lines += ["Skipped: " + "; ".join(r["skipped"]), ""]
        summary = r.get("summary", {})
        rat = {k: v for k, v in summary.items() if RATIO.search(k)}
        if rat:
            lines += ["Ratios (> 1: fastrag is better):", "", "| key | ratio |", "|---|---:|"]
            lines += [f"| `{k}` | {v:.3f} |" for k, v in rat.items()]
            lines += [""]
        rest = {k: v for k, v in summary.items() if k not in rat}
        if rest:
            lines += ["<details><summary>Other SUMMARY numbers</summary>", ""]
            lines += [*_summary_table(rest), "", "</details>"]
        for key, owner in (("ann", "bench_dense"), ("latency", "bench_pipeline"),
                           ("batch", "bench_encode")):
            if owner == name:
                shown = [f for f in plots.get(key, []) if f != "latency_encode_b1.png"]
                lines += [""] + [f"![{f}]({rel}/{f})" for f in shown]
        if name == "bench_encode":
            lines += [f"![latency_encode_b1.png]({rel}/latency_encode_b1.png)"
                      for f in plots.get("latency", []) if f == "latency_encode_b1.png"]
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    print(f"[run_all] wrote {path}")


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="every script with --quick")
    mode.add_argument("--smoke", action="store_true", help="every script with --smoke")
    ap.add_argument("--out", type=Path, help="results folder (results.json, report.md, PNGs)")
    ap.add_argument("--render", type=Path, metavar="DIR",
                    help="no runs: redraw the report and plots of DIR/results.json")
    ap.add_argument("--readme", type=Path, help="also write this README from results.json")
    ap.add_argument("--only", nargs="*", default=None,
                    help="script names to run (the others' results in --out are kept)")
    ap.add_argument("--skip", nargs="*", default=[], help="script names not to run")
    ap.add_argument("--data", type=Path, default=None, help="passed on to the scripts")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per script")
    args = ap.parse_args()
    if args.render:
        render(args.render)
        if args.readme:
            write_readme(args.render, args.readme)
        return
    if args.out is None:
        ap.error("--out DIR is required (or --render DIR)")
    run_mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    args.timeout = args.timeout or DEFAULT_TIMEOUT[run_mode]
    out = args.out
    (out / "raw").mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    todo = [s for s in scripts()
            if (args.only is None or s.stem in args.only) and s.stem not in args.skip]
    doc: dict[str, Any] = {
        "mode": run_mode,
        "out": str(out),
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_facts(("bm25s", "numba", "hnswlib", "faiss-cpu", "usearch", "torch",
                                  "sentence-transformers", "ranx", "matplotlib")),
        "results": {},
    }
    previous = out / "results.json"
    if args.only and previous.is_file():  # rerun some scripts, keep the others' results
        doc["results"] = json.loads(previous.read_text(encoding="utf-8")).get("results", {})
    failed = []
    for script in todo:
        entry = run_one(script, run_mode, out, args)
        doc["results"][script.stem] = entry
        if entry["returncode"] != 0 or entry["summary_error"]:
            failed.append(script.stem)
        doc["finished_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        save(out, doc)
    render(out)
    if args.readme:
        write_readme(out, args.readme)
    print(f"[run_all] wrote {out / 'results.json'}, {out / 'report.md'} and the plots")
    if failed:
        print(f"[run_all] failed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
