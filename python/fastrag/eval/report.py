"""Evaluation reports: several methods, clean and under noise, as Markdown tables and plots.

>>> configs = [parse_method_spec("bm25:japanese"), parse_method_spec("bm25:bigram")]
>>> report = run_report(load_beir("jsquad-valid"), configs, noises=parse_noise_spec("all"),
...                     rates=(0.1, 0.3))                                  # doctest: +SKIP
>>> write_report(report, "benchmarks/noise/jsquad-valid")                 # doctest: +SKIP

Method configurations are written ``METHOD[:VALUE][:KEY=VALUE...]``: ``bm25:english``,
``bm25:japanese:k1=1.2:b=0.5``, ``dense:dim=256``. A bare VALUE sets the method's main
option (:data:`PRIMARY_OPTION`: ``analyzer`` for bm25, ``model`` for dense); numbers are
parsed as numbers. The report runs BM25 on one thread (:data:`REPORT_DEFAULTS`), so that
its search time per query is a latency, not a throughput share.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastrag.eval.datasets import Dataset
from fastrag.eval.metrics import DEFAULT_METRICS
from fastrag.eval.noise import KINDS, inject
from fastrag.eval.runner import (
    MATRYOSHKA_METHODS,
    METHODS,
    EvalResult,
    NoiseEvalResult,
    evaluate_method,
    evaluate_noise,
)

__all__ = [
    "PRIMARY_OPTION",
    "REPORT_DEFAULTS",
    "MethodConfig",
    "Report",
    "parse_method_spec",
    "parse_noise_spec",
    "run_report",
    "write_report",
]

logger = logging.getLogger(__name__)

PRIMARY_OPTION = {"bm25": "analyzer", "dense": "model"}
REPORT_DEFAULTS: dict[str, dict[str, Any]] = {"bm25": {"threads": 1}}
NoiseSpec = tuple[str, str]  # (kind, target)


@dataclass(frozen=True)
class MethodConfig:
    """One configuration to compare: a label, a method name in METHODS and its options."""

    label: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def parse_method_spec(spec: str) -> MethodConfig:
    """``METHOD[:VALUE][:KEY=VALUE...]`` -> MethodConfig (see the module docstring)."""
    method, *parts = spec.strip().split(":")
    if method not in METHODS:
        raise ValueError(
            f"unknown method {method!r} in {spec!r}; available: {', '.join(sorted(METHODS))}"
        )
    options: dict[str, Any] = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq:
            if method not in PRIMARY_OPTION:
                raise ValueError(f"{spec!r}: {method} takes KEY=VALUE options, not {part!r}")
            key, value = PRIMARY_OPTION[method], part
        if not key or not value:
            raise ValueError(f"{spec!r}: empty option in {part!r}")
        options[key] = _value(value)
    return MethodConfig(spec.strip(), method, options)


def parse_noise_spec(spec: str) -> list[NoiseSpec]:
    """``all`` or a comma-separated list of ``KIND[:TARGET]`` -> [(kind, target)].

    ``all`` is every kind at every target it allows (orthographic twice: corpus, queries).
    """
    out: list[NoiseSpec] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item == "all":
            out += [(k.name, t) for k in KINDS.values() for t in k.targets]
            continue
        kind, _, target = item.partition(":")
        if kind not in KINDS:
            raise ValueError(f"unknown noise kind {kind!r}; choose from all, {', '.join(KINDS)}")
        target = target or KINDS[kind].default_target
        if target not in KINDS[kind].targets:
            raise ValueError(f"{kind} noise goes into {' or '.join(KINDS[kind].targets)}")
        out.append((kind, target))
    if not out:
        raise ValueError("no noise kind given")
    return list(dict.fromkeys(out))


def _noise_label(noise: NoiseSpec) -> str:
    kind, target = noise
    return kind if target == KINDS[kind].default_target else f"{kind}:{target}"


def _latency_ms(result: EvalResult) -> float | None:
    seconds = result.timings.get("search_seconds")
    return None if seconds is None or not result.queries else 1000 * seconds / result.queries


@dataclass
class Report:
    """Everything a report shows; ``write_report`` renders it."""

    dataset: str
    documents: int
    queries: int
    configs: list[MethodConfig]
    noises: list[NoiseSpec]
    rates: list[float]
    seed: int
    depth: int
    clean: dict[str, EvalResult] = field(default_factory=dict)
    noisy: dict[tuple[str, str, str, float], NoiseEvalResult] = field(default_factory=dict)
    matryoshka: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    dims: list[int] = field(default_factory=list)
    command: str | None = None

    def result(self, label: str, noise: NoiseSpec, rate: float) -> NoiseEvalResult:
        key = (label, *noise, rate)  # a subscript's own tuple may not star-unpack (mypy)
        return self.noisy[key]

    def to_json(self) -> dict[str, Any]:
        """Plain numbers for results.json."""
        return {
            "dataset": self.dataset,
            "documents": self.documents,
            "queries": self.queries,
            "seed": self.seed,
            "depth": self.depth,
            "rates": self.rates,
            "command": self.command,
            "clean": {label: r.to_json() for label, r in self.clean.items()},
            "noisy": [{"config": label, **r.to_json()} for (label, *_), r in self.noisy.items()],
            "matryoshka": {label: dict(points) for label, points in self.matryoshka.items()},
        }


def run_report(
    dataset: Dataset,
    configs: Sequence[MethodConfig],
    *,
    noises: Sequence[NoiseSpec],
    rates: Sequence[float],
    seed: int = 0,
    depth: int = 100,
    dims: Sequence[int] = (64, 128, 256),
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Evaluates each configuration clean and under each noise kind and rate.

    Each noisy dataset is made once and shared by all configurations; each clean result
    is computed once. Configurations whose method takes a Matryoshka ``dim`` option
    (``register_method(..., matryoshka=True)``) are also evaluated at each of ``dims``.
    """
    if not configs:
        raise ValueError("no method configuration given")
    if len({c.label for c in configs}) != len(configs):
        raise ValueError("method configurations must be distinct")

    def say(message: str) -> None:
        logger.info(message)
        if progress is not None:
            progress(message)

    _, judged = dataset.judged_queries()
    report = Report(
        dataset.name,
        len(dataset.corpus),
        len(judged),
        list(configs),
        list(noises),
        [float(r) for r in rates],
        seed,
        depth,
        dims=[int(d) for d in dims],
    )
    options = {c.label: {**REPORT_DEFAULTS.get(c.method, {}), **c.options} for c in configs}
    for c in configs:
        say(f"clean: {c.label}")
        report.clean[c.label] = evaluate_method(
            dataset, c.method, depth=depth, options=options[c.label]
        )
    for noise in noises:
        for rate in report.rates:
            noisy = inject(dataset, noise[0], rate, seed, target=noise[1])
            for c in configs:
                say(f"{_noise_label(noise)} @ {rate:g}: {c.label}")
                key = (c.label, *noise, rate)
                report.noisy[key] = evaluate_noise(
                    dataset,
                    c.method,
                    kind=noise[0],
                    rate=rate,
                    seed=seed,
                    depth=depth,
                    options=options[c.label],
                    clean=report.clean[c.label],
                    noisy=noisy,
                )
    for c in configs:
        if c.method in MATRYOSHKA_METHODS:
            for dim in report.dims:
                say(f"matryoshka dim {dim}: {c.label}")
                result = evaluate_method(
                    dataset, c.method, depth=depth, options={**options[c.label], "dim": dim}
                )
                report.matryoshka.setdefault(c.label, []).append((dim, result.metrics["ndcg@10"]))
    return report


# ---------------------------------------------------------------------------- Markdown

_NAMES = {"ndcg@10": "nDCG@10", "recall@100": "Recall@100", "mrr@10": "MRR@10"}


def _name(metric: str) -> str:
    return _NAMES.get(metric, metric)


def _file_stem(metric: str) -> str:
    return metric.replace("@", "")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right_from: int = 1) -> str:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _markdown(report: Report, images: dict[str, str]) -> str:
    rates = report.rates
    labels = [c.label for c in report.configs]
    md = [f"# Robustness to noise: {report.dataset}", ""]
    md.append(
        f"{report.documents:,} documents, {report.queries:,} judged queries; seed "
        f"{report.seed}; run depth {report.depth}; noise rates {', '.join(map(str, rates))}. "
        "Metrics by ranx; the noisy runs use the same method and options as the clean ones."
    )
    if report.command:
        md += ["", "```bash", report.command, "```"]

    md += ["", "## Clean", ""]
    rows = []
    for label in labels:
        r = report.clean[label]
        index_s = r.timings.get("index_seconds")
        rows.append(
            [
                f"`{label}`",
                *(_fmt(r.metrics.get(m)) for m in DEFAULT_METRICS),
                _fmt(index_s, 2),
                _fmt(_latency_ms(r), 3),
            ]
        )
    header = ["configuration", *map(_name, DEFAULT_METRICS), "index s", "search ms/query"]
    md += [_table(header, rows)]
    md += [
        "",
        "Search time: all judged queries searched in one batch on one thread (query analysis "
        "included), divided by the number of queries.",
    ]

    for metric in ("ndcg@10", "recall@100"):
        md += ["", f"## {_name(metric)} under noise (value, change from clean)", ""]
        rows = []
        for noise in report.noises:
            for label in labels:
                cells = [
                    _noise_label(noise),
                    f"`{label}`",
                    _fmt(report.clean[label].metrics[metric]),
                ]
                for rate in rates:
                    res = report.result(label, noise, rate)
                    cells.append(f"{_fmt(res.noisy.metrics[metric])} ({res.deltas()[metric]:+.3f})")
                rows.append(cells)
        md += [_table(["noise", "configuration", "clean", *map(str, rates)], rows, right_from=2)]
        stem = _file_stem(metric)
        if f"{stem}_vs_rate" in images:
            md += ["", f"![{_name(metric)} against noise rate]({images[f'{stem}_vs_rate']})"]

    adding = [n for n in report.noises if KINDS[n[0]].adds_documents]
    if adding:
        md += ["", "## Added documents ranked above every relevant one", ""]
        md.append(
            "Over the judged queries with an added document made for one of their relevant "
            "documents: how many have an added document ranked above their best-ranked "
            "relevant document (within the top "
            f"{report.depth})."
        )
        md.append("")
        rows = []
        for noise in adding:
            for label in labels:
                cells = [_noise_label(noise), f"`{label}`"]
                for rate in rates:
                    o = report.result(label, noise, rate).outranked or {}
                    cells.append(
                        f"{o.get('count', 0)} / {o.get('queries', 0)} "
                        f"({100 * o.get('fraction', 0.0):.1f}%)"
                    )
                rows.append(cells)
        md += [_table(["noise", "configuration", *map(str, rates)], rows, right_from=2)]

    md += ["", "## Speed against quality", ""]
    rows = []
    for label in labels:
        r = report.clean[label]
        measured = [
            _latency_ms(report.result(label, n, rate).noisy)
            for n in report.noises
            for rate in rates
        ]
        noisy_lat = [x for x in measured if x is not None]
        rows.append(
            [
                f"`{label}`",
                _fmt(r.metrics["ndcg@10"]),
                _fmt(_latency_ms(r), 3),
                _fmt(min(noisy_lat), 3) if noisy_lat else "-",
                _fmt(max(noisy_lat), 3) if noisy_lat else "-",
            ]
        )
    header = ["configuration", "nDCG@10", "ms/query clean", "min noisy", "max noisy"]
    md += [_table(header, rows)]
    if "ndcg10_vs_latency" in images:
        md += ["", f"![nDCG@10 against search latency]({images['ndcg10_vs_latency']})"]

    md += ["", "## Matryoshka dimension", ""]
    if report.matryoshka:
        dims = sorted({d for pts in report.matryoshka.values() for d, _ in pts})
        rows = []
        for label, points in report.matryoshka.items():
            by_dim = dict(points)
            rows.append([f"`{label}`", *(_fmt(by_dim.get(d)) for d in dims)])
        md += [_table(["configuration (nDCG@10)", *map(str, dims)], rows)]
        if "ndcg10_vs_dim" in images:
            md += ["", f"![nDCG@10 against Matryoshka dimension]({images['ndcg10_vs_dim']})"]
    else:
        registered = sorted(MATRYOSHKA_METHODS) or ["none"]
        md.append(
            "Skipped: no configuration uses a method with a Matryoshka `dim` option "
            f"(registered: {', '.join(registered)}; methods available: "
            f"{', '.join(sorted(METHODS))})."
        )

    md += ["", "## What the injectors changed", ""]
    rows = []
    first = labels[0]
    for noise in report.noises:
        for rate in rates:
            ch = report.result(first, noise, rate).changes
            rows.append(
                [
                    _noise_label(noise),
                    str(rate),
                    f"{ch['docs_modified']:,}",
                    f"{ch['queries_modified']:,}",
                    f"{ch['docs_added']:,}",
                    f"{ch['queries_targeted']:,}",
                ]
            )
    header = [
        "noise",
        "rate",
        "docs modified",
        "queries modified",
        "docs added",
        "queries targeted",
    ]
    md += [_table(header, rows, right_from=1)]
    md += ["", "Rate, per kind (details in `fastrag.eval.noise`):", ""]
    for kind in dict.fromkeys(n[0] for n in report.noises):
        md.append(f"- `{kind}` ({', '.join(KINDS[kind].targets)}): {KINDS[kind].rate_meaning}.")
    return "\n".join(md) + "\n"


# ---------------------------------------------------------------------------- plots

DPI = 90


def _plots(report: Report, out: Path) -> dict[str, str]:
    """Writes the PNGs; returns {name: file name}."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reports need matplotlib: pip install 'fastrag-engine[report]'") from e

    images: dict[str, str] = {}
    labels = [c.label for c in report.configs]
    xs = [0.0, *report.rates]
    markers = "osD^vP*X"

    def save(fig: Any, name: str) -> None:
        fig.savefig(out / f"{name}.png", dpi=DPI)
        plt.close(fig)
        images[name] = f"{name}.png"

    with plt.rc_context({"font.size": 8, "axes.titlesize": 9, "legend.fontsize": 8}):
        for metric in ("ndcg@10", "recall@100"):
            n = len(report.noises)
            cols = min(4, n)
            rows = math.ceil(n / cols)
            fig, axes = plt.subplots(
                rows, cols, figsize=(3.2 * cols, 2.5 * rows + 0.5), sharey=True, squeeze=False
            )
            for ax, noise in zip(axes.flat, report.noises, strict=False):
                for i, label in enumerate(labels):
                    ys = [report.clean[label].metrics[metric]] + [
                        report.result(label, noise, rate).noisy.metrics[metric]
                        for rate in report.rates
                    ]
                    ax.plot(xs, ys, marker=markers[i % len(markers)], label=label)
                ax.set_title(_noise_label(noise))
                ax.set_xticks(xs)
                ax.grid(alpha=0.3)
            for i, ax in enumerate(axes.flat):
                if i >= n:
                    ax.set_visible(False)
                elif i + cols >= n:  # nothing drawn below this one
                    ax.set_xlabel("noise rate")
            for ax in axes[:, 0]:
                ax.set_ylabel(_name(metric))
            handles, names = axes.flat[0].get_legend_handles_labels()
            fig.legend(handles, names, loc="lower center", ncol=min(4, len(labels)), frameon=False)
            fig.suptitle(f"{report.dataset}: {_name(metric)} against noise rate")
            fig.tight_layout(rect=(0, 0.08 if rows == 1 else 0.05, 1, 1))
            save(fig, f"{_file_stem(metric)}_vs_rate")

        measured = [(lbl, _latency_ms(report.clean[lbl]), report.clean[lbl]) for lbl in labels]
        points = [(lbl, x, r) for lbl, x, r in measured if x is not None]
        if points:
            fig, ax = plt.subplots(figsize=(5, 3.4))
            for i, (label, x, r) in enumerate(points):
                ax.scatter([x], [r.metrics["ndcg@10"]], marker=markers[i % len(markers)], s=40)
                ax.annotate(
                    label, (x, r.metrics["ndcg@10"]), textcoords="offset points", xytext=(5, 4)
                )
            lat = [x for _, x, _ in points]
            if min(lat) > 0 and max(lat) / min(lat) > 20:
                ax.set_xscale("log")
            ax.set_xlabel("search latency, ms per query (one thread)")
            ax.set_ylabel("nDCG@10 (clean)")
            ax.set_title(f"{report.dataset}: quality against latency")
            ax.grid(alpha=0.3)
            ax.margins(x=0.3, y=0.2)
            fig.tight_layout()
            save(fig, "ndcg10_vs_latency")

        if report.matryoshka:
            fig, ax = plt.subplots(figsize=(5, 3.4))
            for i, (label, pts) in enumerate(report.matryoshka.items()):
                dims, quality = zip(*sorted(pts), strict=True)
                ax.plot(dims, quality, marker=markers[i % len(markers)], label=label)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("Matryoshka dimension")
            ax.set_ylabel("nDCG@10")
            ax.set_title(f"{report.dataset}: nDCG@10 against dimension")
            ax.grid(alpha=0.3)
            ax.legend()
            fig.tight_layout()
            save(fig, "ndcg10_vs_dim")
    return images


def write_report(report: Report, out: str | os.PathLike[str]) -> list[Path]:
    """Writes report.md, results.json and the PNG plots into the folder ``out``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    images = _plots(report, folder)
    written = [folder / name for name in images.values()]
    for name, text in (
        ("report.md", _markdown(report, images)),
        ("results.json", json.dumps(report.to_json(), indent=1, ensure_ascii=False) + "\n"),
    ):
        tmp = folder / f"{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(folder / name)
        written.append(folder / name)
    return written
