"""`fastrag index --shards N [--ray [ADDRESS]]` and `fastrag merge`: sharded collections."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from fastrag.collection.ingest import Found
    from fastrag.search.pipeline import Result


def index_sharded(found: Found, path: Path, collection: Path, opts: dict[str, Any]) -> None:
    """Builds a sharded collection in `collection` from the documents read from `path`."""
    from fastrag.distributed import ShardError, build_shards

    if not found.texts:
        raise click.ClickException(f"no documents found in {path}")
    model = None if opts["model"] == "none" else opts["model"]
    ray = opts.get("ray")
    options: dict[str, Any] = {
        "analyzer": opts["analyzer"], "chunk_chars": opts["chunk_chars"],
        "sparse": opts["sparse"], "late_chunking": opts["late_chunking"],
        "token_vectors": opts["token_vectors"],
    }
    chunk_tokens = opts["chunk_tokens"]
    if chunk_tokens != "auto":
        options["chunk_tokens"] = None if chunk_tokens == "none" else int(chunk_tokens)
    t0 = time.perf_counter()
    try:
        manifest = build_shards(
            collection, found.texts, found.ids, found.metadata, shards=opts["shards"],
            workers=opts["workers"], executor="ray" if ray is not None else "process",
            ray_address=ray or None, encoder=model, quantize=opts["quantize"],
            threads=opts["threads"], batch_size=opts["batch_size"],
            progress=lambda msg: click.echo(msg, err=True), **options,
        )
    except (ShardError, ValueError, ImportError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"indexed {len(found.texts)} documents into {len(manifest.shards)} shards in "
               f"{collection} ({time.perf_counter() - t0:.1f} s)")


@click.command("merge")
@click.argument("shards", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--collection", "-c", type=click.Path(path_type=Path), required=True,
              help="The new collection folder.")
@click.option("--dense-merge", type=click.Choice(["insert", "rebuild"]), default="insert",
              show_default=True,
              help="HNSW graph: the other shards' vectors inserted into the largest shard's "
                   "graph (faster at equal recall, see benchmarks/NOTES.md), or a new graph.")
def merge_cmd(shards: tuple[Path, ...], collection: Path, dense_merge: str) -> None:
    """Compact SHARDS (shard collections, or sharded folders made by `fastrag index --shards`)
    into one collection: documents, chunks and stored vectors copied (no encoder run for the
    dense leg), BM25 rebuilt, HNSW by insertion into the largest shard's graph."""
    from fastrag.collection import CollectionError
    from fastrag.distributed import ShardError, merge_shards

    try:
        out = merge_shards(list(shards), collection, dense=dense_merge,
                           progress=lambda msg: click.echo(msg, err=True))
    except (ShardError, CollectionError, ValueError, OSError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"merged {out['shards']} shards into {collection}: {out['documents']} documents, "
               f"{out['chunks']} chunks ({out['seconds']:.1f} s)")


class ShardedSearch:
    """`fastrag search` on a sharded folder: the router behind Collection's search call."""

    def __init__(self, folder: Path, retrievers: list[str] | None) -> None:
        from fastrag.distributed import ShardedCollection

        self.router = ShardedCollection.open(folder, mmap=True)
        self.retrievers = retrievers

    def search(self, query: str, k: int, *, method: str = "hybrid",
               filter: dict[str, Any] | None = None, explain: bool = False,
               **_: Any) -> list[Result]:
        return self.router.search(query, k, method=method, retrievers=self.retrievers,
                                  filter=filter, explain=explain)

    def close(self) -> None:
        self.router.close()
