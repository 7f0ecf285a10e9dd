"""The fastrag command line: index a folder, search it, evaluate methods on BEIR datasets."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from fastrag.index import BM25

ANALYZERS = ["auto", "english", "japanese", "bigram"]
TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}
MAX_FILE_BYTES = 50 * 1024 * 1024


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fastrag")
def main() -> None:
    """fastrag: local retrieval for RAG."""


NOISE_KINDS = [
    "orthographic",
    "datatype",
    "illegal",
    "semantic",
    "counterfactual",
    "query",
]  # fastrag.eval.noise.KINDS, listed here so that --help needs no import


@main.command("eval")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--method", default="bm25", show_default=True, help="Retrieval method.")
@click.option("--analyzer", type=click.Choice(ANALYZERS), default="auto", show_default=True)
@click.option(
    "--bm25-method",
    default="lucene",
    show_default=True,
    type=click.Choice(["lucene", "robertson", "atire", "bm25l", "bm25+"]),
)
@click.option("--k1", type=float, default=1.5, show_default=True)
@click.option("--b", "b", type=float, default=0.75, show_default=True)
@click.option("--split", default="test", show_default=True, help="qrels/<split>.tsv")
@click.option(
    "--model",
    default="default",
    show_default=True,
    help="Encoder for dense: a registry name, Hugging Face id or folder (default: "
    "all-MiniLM-L6-v2, offline).",
)
@click.option("--dim", type=click.IntRange(min=1), default=None, help="Matryoshka dimension.")
@click.option(
    "--quantize", type=click.Choice(["int8"]), default=None, help="Run the encoder in int8."
)
@click.option(
    "--noise",
    type=click.Choice(NOISE_KINDS),
    default=None,
    help="Also evaluate with this noise injected (see fastrag.eval.noise); prints both.",
)
@click.option(
    "--rate",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="Noise rate; its meaning depends on the kind.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Noise seed.")
@click.option(
    "--noise-target",
    type=click.Choice(["corpus", "queries"]),
    default=None,
    help="Where the noise goes (orthographic: corpus by default, or queries).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def eval_cmd(
    dataset: Path,
    method: str,
    analyzer: str,
    bm25_method: str,
    k1: float,
    b: float,
    split: str,
    model: str,
    dim: int | None,
    quantize: str | None,
    noise: str | None,
    rate: float,
    seed: int,
    noise_target: str | None,
    as_json: bool,
) -> None:
    """Evaluate METHOD on a BEIR-layout DATASET folder (nDCG@10, Recall@100, MRR@10).

    With --noise KIND, the method runs on the clean dataset and on a copy with KIND noise
    injected at --rate (seeded by --seed); both results and their differences are shown,
    and for the kinds that add documents, how often an added document outranks every
    relevant document of a query it was made for.
    """
    from fastrag.encoders import ExportError
    from fastrag.eval import evaluate_method, evaluate_noise, load_beir

    try:
        data = load_beir(dataset, split=split)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    options: dict[str, Any] = {}
    if method == "bm25":
        options = {"analyzer": analyzer, "method": bm25_method, "k1": k1, "b": b}
    elif method == "dense":
        options = {"model": model, "dim": dim, "quantize": quantize}
    try:
        if noise is None:
            result = evaluate_method(data, method, options=options)
        else:
            noisy = evaluate_noise(
                data,
                method,
                kind=noise,
                rate=rate,
                seed=seed,
                target=noise_target,
                options=options,
            )
    except (ValueError, OSError, ImportError, ExportError) as e:
        raise click.ClickException(str(e)) from e
    if noise is not None:
        _echo_noise(noisy, as_json)
        return
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False))
        return
    click.echo(f"{result.method} on {result.dataset} ({result.queries} queries)")
    for name, value in result.metrics.items():
        click.echo(f"  {name:<12} {value:.4f}")


def _echo_noise(result: Any, as_json: bool) -> None:
    """Prints a NoiseEvalResult as one JSON object or as a small table."""
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False))
        return
    clean, noisy = result.clean, result.noisy
    click.echo(
        f"{clean.method} on {clean.dataset} ({clean.queries} queries): {result.kind} noise "
        f"in the {result.target} at rate {result.rate:g} (seed {result.seed})"
    )
    click.echo(f"  {'':<12} {'clean':>8} {'noisy':>8} {'delta':>8}")
    for name, value in clean.metrics.items():
        delta = noisy.metrics[name] - value
        click.echo(f"  {name:<12} {value:8.4f} {noisy.metrics[name]:8.4f} {delta:+8.4f}")
    ch = result.changes
    click.echo(
        f"  changed: {ch['docs_modified']} documents modified, {ch['queries_modified']} "
        f"queries modified, {ch['docs_added']} documents added"
    )
    if result.outranked is not None:
        o = result.outranked
        click.echo(
            f"  an added document ranks above every relevant one for {o['count']} of "
            f"{o['queries']} targeted queries ({100 * o['fraction']:.1f}%)"
        )


@main.command("report")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--methods",
    "-m",
    "methods",
    multiple=True,
    default=("bm25:auto",),
    show_default=True,
    help="Configurations, comma-separated or repeated: METHOD[:VALUE][:KEY=VALUE...], "
    "e.g. bm25:english, bm25:japanese:k1=1.2, dense:dim=256. A bare VALUE is the main "
    "option (bm25: analyzer, one of auto/english/japanese/bigram; dense: model).",
)
@click.option(
    "--noise",
    default="all",
    show_default=True,
    help="'all' or comma-separated KIND[:TARGET] (kinds: " + ", ".join(NOISE_KINDS) + "; "
    "orthographic:queries puts typos into the queries; all includes it).",
)
@click.option("--rates", default="0.1,0.3", show_default=True, help="Comma-separated rates.")
@click.option("--seed", type=int, default=0, show_default=True, help="Noise seed.")
@click.option(
    "--dims",
    default="64,128,256",
    show_default=True,
    help="Matryoshka dimensions for methods with a dim option.",
)
@click.option("--depth", type=click.IntRange(min=10), default=100, show_default=True)
@click.option("--split", default="test", show_default=True, help="qrels/<split>.tsv")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for report.md, results.json and the PNG plots.",
)
def report_cmd(
    dataset: Path,
    methods: tuple[str, ...],
    noise: str,
    rates: str,
    seed: int,
    dims: str,
    depth: int,
    split: str,
    out: Path,
) -> None:
    """Compare configurations on DATASET, clean and under noise; write Markdown and plots.

    Writes OUT/report.md (tables: clean metrics and search latency, nDCG@10 and
    Recall@100 per noise kind and rate, added documents outranking relevant ones),
    OUT/results.json and PNGs: metric against noise rate per configuration, nDCG@10
    against latency, and nDCG@10 against Matryoshka dimension when a configuration's
    method takes a dim option.
    """
    from fastrag.eval import load_beir
    from fastrag.eval.report import (
        parse_method_spec,
        parse_noise_spec,
        run_report,
        write_report,
    )

    specs = [s for item in methods for s in item.split(",") if s.strip()]
    try:
        configs = [parse_method_spec(s) for s in specs]
        noises = parse_noise_spec(noise)
        rate_values = [float(r) for r in rates.split(",") if r.strip()]
        dim_values = [int(d) for d in dims.split(",") if d.strip()]
        if not rate_values or any(not 0 < r <= 1 for r in rate_values):
            raise ValueError(f"--rates must be numbers in (0, 1], got {rates!r}")
        data = load_beir(dataset, split=split)
        report = run_report(
            data,
            configs,
            noises=noises,
            rates=rate_values,
            seed=seed,
            depth=depth,
            dims=dim_values,
            progress=lambda message: click.echo(message, err=True),
        )
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    report.command = (
        f"fastrag report {dataset} --methods {','.join(specs)} --noise {noise} "
        f"--rates {rates} --seed {seed} --out {out}"
    )
    try:
        written = write_report(report, out)
    except ImportError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"wrote {', '.join(str(p) for p in written)}")


def _read_documents(path: Path) -> tuple[list[str], list[str], list[str]]:
    """(ids, texts, skipped reasons) from a text file, a .jsonl file or a folder of them."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    ids: list[str] = []
    texts: list[str] = []
    skipped: list[str] = []
    for f in files:
        rel = str(f.relative_to(path)) if path.is_dir() else f.name
        if any(part.startswith(".") for part in Path(rel).parts):
            continue
        if f.suffix.lower() not in TEXT_SUFFIXES | {".jsonl"}:
            skipped.append(f"{rel}: not a .txt/.md/.rst/.jsonl file")
            continue
        if f.stat().st_size > MAX_FILE_BYTES:
            skipped.append(f"{rel}: larger than {MAX_FILE_BYTES // 2**20} MB")
            continue
        raw = f.read_bytes()
        if b"\x00" in raw[:8192]:
            skipped.append(f"{rel}: binary content")
            continue
        text = raw.decode("utf-8", errors="replace")
        if f.suffix.lower() == ".jsonl":
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    ids.append(str(row.get("_id", row.get("id", f"{rel}:{n}"))))
                    texts.append(f"{row.get('title', '')} {row.get('text', '')}".strip())
                except (json.JSONDecodeError, AttributeError):
                    skipped.append(f"{rel}:{n}: not a JSON object")
        else:
            ids.append(rel)
            texts.append(text)
    return ids, texts, skipped


@main.command("export")
@click.argument("model")
@click.option(
    "--task", type=click.Choice(["embed", "splade", "rerank"]), default="embed", show_default=True
)
@click.option("--attentions", is_flag=True, help="Also export [CLS] attentions (BM42).")
@click.option("--int8", "int8", is_flag=True, help="Also make the dynamic int8 model.")
@click.option("--revision", default=None, help="Hugging Face revision (branch, tag, commit).")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where exports live (default $FASTRAG_CACHE/models or ~/.cache/fastrag/models).",
)
def export_cmd(
    model: str,
    task: str,
    attentions: bool,
    int8: bool,
    revision: str | None,
    cache_dir: Path | None,
) -> None:
    """Export MODEL (a registry name, Hugging Face id or folder) to ONNX once; print its folder.

    Later runs find the export in the cache and need neither torch nor a network.
    """
    from fastrag.encoders import ExportError, OnnxModel, resolve_model

    try:
        folder = resolve_model(
            model, task=task, attentions=attentions, revision=revision, cache_dir=cache_dir
        )
        loaded = OnnxModel(folder, quantize="int8" if int8 else None)
    except (ValueError, OSError, ImportError, ExportError) as e:
        raise click.ClickException(str(e)) from e
    m = loaded.manifest
    click.echo(
        f"{m['name']} ({m['architecture']}, {task}, window {m['max_length']}, "
        f"pooling {m.get('pooling')}, fingerprint {m['fingerprint']})",
        err=True,
    )
    click.echo(str(folder))


@main.command("index")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--collection",
    "-c",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder to write the index to.",
)
@click.option("--analyzer", type=click.Choice(ANALYZERS), default="auto", show_default=True)
@click.option("--verbose", "-v", is_flag=True, help="List every skipped file.")
def index_cmd(path: Path, collection: Path, analyzer: str, verbose: bool) -> None:
    """Index PATH (a .txt/.md/.jsonl file or a folder of them) into a collection folder."""
    ids, texts, skipped = _read_documents(path)
    # Problems with files we were meant to read are always shown; files of other types are
    # summarised unless --verbose.
    others = [r for r in skipped if r.endswith("not a .txt/.md/.rst/.jsonl file")]
    for reason in skipped if verbose else [r for r in skipped if r not in others]:
        click.echo(f"skipped {reason}", err=True)
    if others and not verbose:
        click.echo(f"skipped {len(others)} files of other types (--verbose lists them)", err=True)
    if not texts:
        raise click.ClickException(f"no documents found in {path}")
    index = BM25(analyzer=analyzer)
    index.add(texts, ids=ids)
    collection.mkdir(parents=True, exist_ok=True)
    index.save(collection / "bm25.fridx")
    with (collection / "documents.jsonl.tmp").open("w", encoding="utf-8") as f:
        for doc_id, text in zip(ids, texts, strict=False):
            f.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
    (collection / "documents.jsonl.tmp").replace(collection / "documents.jsonl")
    click.echo(f"indexed {len(texts)} documents into {collection} ({len(skipped)} skipped)")


@main.command("search")
@click.argument("collection", type=click.Path(path_type=Path))
@click.argument("query")
@click.option("--k", "-k", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def search_cmd(collection: Path, query: str, k: int, as_json: bool) -> None:
    """Search a COLLECTION folder made by `fastrag index`."""
    index_file = collection / "bm25.fridx"
    if not index_file.is_file():
        raise click.ClickException(f"{collection} is not a fastrag collection (no bm25.fridx)")
    index = BM25.load(index_file, mmap=True)
    hits = index.search(query, k=k)[0]
    texts: dict[str, str] = {}
    wanted = {str(h.id) for h in hits}
    with (collection / "documents.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["id"] in wanted:
                texts[row["id"]] = row["text"]
    if not hits:
        click.echo("no documents match", err=not as_json)
    for rank, h in enumerate(hits, 1):
        snippet = " ".join(texts.get(str(h.id), "").split())[:100]
        if as_json:
            click.echo(json.dumps({"rank": rank, "id": h.id, "score": h.score}, ensure_ascii=False))
        else:
            click.echo(f"{rank:>3}  {h.score:8.3f}  {h.id}  {snippet}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
