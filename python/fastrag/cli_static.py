"""`fastrag distill`: a static (model2vec) model made from a sentence encoder, once, cached.

Registered on the command group in `fastrag.cli`. The printed folder is what
``fastrag index --model static:<folder>`` and ``StaticEncoder(folder)`` take.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("distill")
@click.argument("model", default="default")
@click.option("--pca-dims", type=click.IntRange(min=2), default=256, show_default=True,
              help="Dimensions of the static vectors (PCA of the encoder's token vectors).")
@click.option("--revision", default=None, help="Hugging Face revision (branch, tag, commit).")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where models live (default $FASTRAG_CACHE/models or ~/.cache/fastrag/models).",
)
def distill_cmd(model: str, pca_dims: int, revision: str | None, cache_dir: Path | None) -> None:
    """Distil a static model from MODEL (a sentence encoder: registry name, Hugging Face id or
    folder; default all-MiniLM-L6-v2, offline) with model2vec; print its folder.

    Runs the encoder over its vocabulary once (needs torch and model2vec); later runs find
    the model in the cache.
    """
    from fastrag.encoders import StaticEncoder, distill_static

    try:
        folder = distill_static(model, pca_dims=pca_dims, cache_dir=cache_dir, revision=revision)
        static = StaticEncoder(folder)
    except (ValueError, OSError, ImportError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(
        f"{static.config.get('distilled_from', model)}: static, {static.vocab_size} tokens x "
        f"{static.dim} dims, fingerprint {static.fingerprint}",
        err=True,
    )
    click.echo(str(folder))
