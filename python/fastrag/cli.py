"""The fastrag command line: index a folder, search it, evaluate methods on BEIR datasets."""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from fastrag import __version__
from fastrag.cli_index import delete_cmd, index_cmd
from fastrag.cli_prepare import prepare_cmd
from fastrag.cli_shards import merge_cmd
from fastrag.cli_static import distill_cmd

ANALYZERS = ["auto", "english", "japanese", "bigram"]
# folders of build outputs and installed packages, never documents (hidden ones are skipped too)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
# The version from the package itself, not from the "fastrag" distribution's metadata: that name
# is an unrelated project's (ours is fastrag-engine, see fastrag._dist).
@click.version_option(version=__version__, prog_name="fastrag")
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
    help="Encoder for dense and hybrid: a registry name, Hugging Face id or folder (default: "
    "all-MiniLM-L6-v2, offline).",
)
@click.option("--dim", type=click.IntRange(min=1), default=None, help="Matryoshka dimension.")
@click.option(
    "--quantize", type=click.Choice(["int8"]), default=None, help="Run the encoder in int8."
)
@click.option(
    "--chunker",
    type=click.Choice(["sentence", "paragraph", "window"]),
    default="sentence",
    show_default=True,
    help="Chunks for --method late.",
)
@click.option("--naive", is_flag=True, help="--method late: encode each chunk on its own.")
@click.option(
    "--alpha",
    callback=lambda ctx, param, value: _bm42_alpha(value),
    default=None,
    help="--method bm42: weights become log(1 + w) ** ALPHA (default 0.5, as fastembed); "
    "'none' keeps the raw attention sums.",
)
@click.option(
    "--retrievers",
    default=None,
    help="--method hybrid: legs to fuse, e.g. bm25,splade,dense (also bm42, late); "
    "default bm25,dense.",
)
@click.option(
    "--rerank",
    default=None,
    help="--method hybrid: a rerank stage: maxsim, dense, or a cross-encoder model.",
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
    chunker: str,
    naive: bool,
    alpha: float | str | None,
    retrievers: str | None,
    rerank: str | None,
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
    elif method == "hybrid":
        options = {"model": model, "analyzer": analyzer}
        if retrievers:
            options["retrievers"] = retrievers
        if rerank:
            options["rerank"] = rerank
    elif method == "late":
        options = {"model": model, "chunker": chunker, "naive": naive, "quantize": quantize}
    elif method in ("splade", "bm42") and model != "default":
        options = {"model": model}
    if alpha is not None:
        if method != "bm42":
            raise click.UsageError("--alpha is an option of --method bm42")
        options["alpha"] = None if alpha == "none" else alpha
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


def _bm42_alpha(value: str | None) -> float | str | None:
    """--alpha: a finite number > 0, or "none" (the raw attention sums)."""
    if value is None or value.strip().lower() == "none":
        return None if value is None else "none"
    try:
        alpha = float(value)
    except ValueError:
        alpha = math.nan
    if not (math.isfinite(alpha) and alpha > 0):
        raise click.BadParameter(f"{value!r} is not a number > 0 or 'none'")
    return alpha


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


main.add_command(index_cmd)
main.add_command(delete_cmd)
main.add_command(distill_cmd)
main.add_command(prepare_cmd)
main.add_command(merge_cmd)


@main.command("search")
@click.argument("collection", type=click.Path(path_type=Path))
@click.argument("query")
@click.option("--k", "-k", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--method", type=click.Choice(["hybrid", "bm25", "dense", "splade", "bm42", "late"]),
    default="hybrid", show_default=True,
)
@click.option(
    "--retrievers", default=None,
    help="Legs to fuse with RRF instead of --method, e.g. bm25,splade,dense.",
)
@click.option("--filter", "filter_json", default=None,
              help='Metadata filter as JSON, e.g. \'{"lang": "en", "year": {"$gte": 2020}}\'.')
@click.option("--explain", is_flag=True, help="Show every stage's score and rank.")
@click.option("--augment", type=click.Choice(["mk"]), default=None,
              help="mk: an LLM rewrites the query into sub-questions (after `fastrag prepare`).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def search_cmd(
    collection: Path, query: str, k: int, method: str, retrievers: str | None,
    filter_json: str | None, explain: bool, augment: str | None, as_json: bool,
) -> None:
    """Search a COLLECTION folder made by `fastrag index`."""
    from fastrag.cli_shards import ShardedSearch
    from fastrag.collection import Collection, CollectionError
    from fastrag.encoders import ExportError
    from fastrag.search import fused_pipeline

    try:
        spec = None if filter_json is None else json.loads(filter_json)
        if (collection / "shards.json").is_file():
            if augment is not None:
                raise ValueError("a sharded collection is searched without --augment")
            # the router checks the leg names against the shards' legs
            pipeline: Any = method
            col: Collection | ShardedSearch = ShardedSearch(
                collection, None if retrievers is None else retrievers.split(","))
        else:
            pipeline = method if retrievers is None else fused_pipeline(retrievers.split(","))
            col = Collection.open(collection, mmap=True)
    except json.JSONDecodeError as e:
        raise click.ClickException(f"--filter is not valid JSON: {e}") from e
    except (ValueError, OSError, ImportError, ExportError) as e:
        raise click.ClickException(str(e)) from e
    try:
        with warnings.catch_warnings(record=True) as caught:  # said below, in one line each
            warnings.simplefilter("always")
            warnings.filterwarnings("ignore", message="the .* leg was left out")
            # explain always: it also says which legs were left out (one note below)
            results = col.search(query, k=k, method=pipeline, filter=spec, explain=True,
                                 augment=augment)
    except (ValueError, TypeError, CollectionError) as e:
        raise click.ClickException(str(e)) from e
    finally:
        col.close()
    for caught_warning in caught:  # e.g. augment="mk" falling back to the plain query
        click.echo(f"warning: {caught_warning.message}", err=True)
    if not results:
        click.echo("no documents match", err=True)
    for leg, why in (results[0].skipped if results else {}).items():
        click.echo(f"note: the {leg} leg was left out: {why}", err=True)
    subquestions = getattr(results[0], "subquestions", []) if results else []
    if explain and subquestions and not as_json:
        click.echo("sub-questions: " + " | ".join(f"q{i} {q}" for i, q in
                                                   enumerate(subquestions, 1)))
    for rank, r in enumerate(results, 1):
        stages = {name: {"score": st.score, "rank": st.rank} for name, st in r.stages.items()}
        if as_json:
            click.echo(json.dumps(
                {"rank": rank, "id": r.id, "score": r.score, "span": list(r.span),
                 "passage": r.passage, "metadata": r.metadata, "stages": stages,
                 "skipped": r.skipped, **_augmented(r)},
                ensure_ascii=False,
            ))
            continue
        snippet = " ".join(r.passage.split())
        snippet = snippet if len(snippet) <= 90 else snippet[:87] + "..."
        click.echo(f"{rank:>3}  {r.score:8.4f}  {r.id}  {snippet}")
        if explain:
            parts = [f"{n} {st['score']:.4f} (#{st['rank']})" for n, st in stages.items()]
            click.echo(f"{'':15}{' · '.join(parts)}")
            if getattr(r, "found_by", None):
                click.echo(f"{'':15}found by: {' | '.join(r.found_by)}")  # type: ignore[attr-defined]


def _augmented(r: Any) -> dict[str, Any]:
    """The augment="mk" fields of a result for --json (none for a plain result)."""
    return {name: getattr(r, name) for name in ("subquestions", "found_by",
                                                "matched_questions") if hasattr(r, name)}


@main.command("tune")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--collection", "-c", type=click.Path(path_type=Path), required=True,
              help="Collection to tune; a folder that does not exist yet is built from "
                   "DATASET's corpus (default encoder).")
@click.option("--split", default="test", show_default=True, help="qrels/<split>.tsv")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True)
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="Pipelines to try, a seeded sample of the grid (default: all of it).")
@click.option("--seed", type=int, default=0, show_default=True, help="Folds and sample seed.")
@click.option("--dry-run", is_flag=True, help="Report only; store nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def tune_cmd(dataset: Path, collection: Path, split: str, folds: int, trials: int | None,
             seed: int, dry_run: bool, as_json: bool) -> None:
    """Fit the hybrid pipeline of a COLLECTION (RRF k, leg weights, depths, aggregation) on
    DATASET's judged queries (BEIR layout) with k-fold cross-validation; report held-out
    nDCG@10 against the default and store the fitted pipeline in the collection (its
    default from then on) when it is at least as good."""
    from fastrag.collection import Collection
    from fastrag.encoders import ExportError
    from fastrag.eval import load_beir
    from fastrag.eval.tune import tune_collection

    try:
        data = load_beir(dataset, split=split)
        if (collection / "collection.sqlite").exists():
            col = Collection.open(collection)
        else:
            click.echo(f"building {collection} from {dataset.name}'s corpus", err=True)
            col = Collection.create(collection)
            ids, texts = data.documents()
            kept = [i for i, t in enumerate(texts) if t.strip()]
            col.add([texts[i] for i in kept], ids=[ids[i] for i in kept])
            col.commit()
    except (FileNotFoundError, ValueError, OSError, ImportError, ExportError) as e:
        raise click.ClickException(str(e)) from e
    try:
        with warnings.catch_warnings():  # legs left out by language are part of the default
            warnings.filterwarnings("ignore", message="the .* leg was left out")
            result = tune_collection(col, data, folds=folds, trials=trials, seed=seed,
                                     save=not dry_run)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    finally:
        col.close()
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False))
        return
    click.echo(f"{result.queries} judged queries, {folds} folds, {result.configs} pipelines")
    click.echo(f"  nDCG@10 default          {result.default_ndcg:.4f}")
    click.echo(f"  nDCG@10 tuned (held-out) {result.tuned_ndcg:.4f}")
    click.echo(f"  fitted on all queries: {json.dumps(result.spec)}")
    click.echo("stored as the collection's default pipeline" if result.saved else
               "not stored (" + ("--dry-run" if dry_run else "no better than the default") + ")")


@main.command("info")
@click.argument("collection", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info_cmd(collection: Path, as_json: bool) -> None:
    """Describe a COLLECTION folder: counts, encoder, languages, files."""
    from fastrag.collection import CollectionError, read_info

    try:
        info = read_info(collection)
    except (CollectionError, OSError) as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps(info, ensure_ascii=False))
        return
    for key, value in info.items():
        if key == "files":
            for name, size in value.items():
                click.echo(f"  {name:<28} {size:>14,} bytes")
        else:
            click.echo(f"{key:<20} {value}")


@main.command("serve")
@click.argument("collection", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--api-key", default=None, help="Bearer key for every API request "
              "(default: $FASTRAG_API_KEY; none: no key).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Search threads (0: one per core).")
@click.option("--encoder-threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="onnxruntime threads per query encoder run (0: one per core).")
@click.option("--no-batching", is_flag=True, help="Run every encoder call on its own.")
@click.option("--max-batch", type=click.IntRange(min=1), default=64, show_default=True,
              help="Texts per micro-batched encoder run.")
@click.option("--max-wait-ms", type=click.FloatRange(0, 1000), default=2.0, show_default=True,
              help="How long a micro-batch waits for more requests.")
@click.option("--max-body-mb", type=click.FloatRange(min=0.001), default=8.0, show_default=True)
@click.option("--max-k", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--cors-origin", "cors", multiple=True, help="Allow this origin (CORS is off "
              "by default); repeat for several.")
@click.option("--rerank-model", default=None,
              help="Cross-encoder for /rerank (default: cosine of the collection's encoder).")
@click.option("--drain-seconds", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="On SIGTERM, how long requests in flight may take to finish.")
def serve_cmd(
    collection: Path, host: str, port: int, api_key: str | None, workers: int,
    encoder_threads: int, no_batching: bool, max_batch: int, max_wait_ms: float,
    max_body_mb: float, max_k: int, cors: tuple[str, ...], rerank_model: str | None,
    drain_seconds: float,
) -> None:
    """Serve a COLLECTION folder over HTTP (needs pip install "fastrag-engine[server]")."""
    from fastrag.serve import Limits, ServeConfig, key_from_env

    try:
        from fastrag.serve.run import serve
    except ImportError as e:
        raise click.ClickException(str(e)) from e
    try:
        config = ServeConfig(
            collection, host=host, port=port, api_key=key_from_env(api_key), workers=workers,
            encoder_threads=encoder_threads, batching=not no_batching,
            max_batch_texts=max_batch, max_wait_ms=max_wait_ms,
            cors_origins=cors, drain_seconds=drain_seconds, rerank_model=rerank_model,
            limits=Limits(max_body_bytes=int(max_body_mb * 2**20), max_k=max_k),
        )
        serve(config)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from e


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
