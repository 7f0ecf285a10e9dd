"""`fastrag prepare`: LLM-written metadata, synthetic questions and cluster summaries for a
collection (Meta Knowledge Summary; see `fastrag.collection.prepare`).

Registered on the command group in `fastrag.cli`. ``fastrag search DIR "q" --augment mk``
then rewrites queries with the same LLM.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click


@click.command("prepare")
@click.argument("collection", type=click.Path(path_type=Path))
@click.option("--model", "-m", default="gpt-4o-mini", show_default=True,
              help="The chat model (e.g. qwen2.5:7b for Ollama).")
@click.option("--base-url", default=None,
              help="OpenAI-compatible API root (default $OPENAI_BASE_URL), e.g. "
                   "http://localhost:11434/v1.")
@click.option("--api-key", default=None, help="API key (default $OPENAI_API_KEY).")
@click.option("--questions", type=click.IntRange(1, 10), default=3, show_default=True,
              help="Synthetic question-answer pairs per document.")
@click.option("--clusters", type=click.IntRange(min=1), default=16, show_default=True,
              help="The most clusters of documents (one summary each).")
@click.option("--language", type=click.Choice(["auto", "en", "ja"]), default="auto",
              show_default=True, help="Prompt language (auto: the collection's).")
@click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True,
              help="LLM requests in flight.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=120.0, show_default=True,
              help="Seconds per LLM request.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def prepare_cmd(collection: Path, model: str, base_url: str | None, api_key: str | None,
                questions: int, clusters: int, language: str, concurrency: int,
                timeout: float, as_json: bool) -> None:
    """Write metadata, synthetic questions and Meta Knowledge Summaries for a COLLECTION.

    Resumable: a second run (or one after Ctrl-C or a crash) asks only about documents that
    are new or changed; answers are cached in COLLECTION/mk/cache.
    """
    from fastrag.collection import Collection, CollectionError
    from fastrag.collection.prepare import prepare
    from fastrag.search.llm import ChatClient, LLMError

    try:
        client = ChatClient(model, base_url=base_url, api_key=api_key,
                            concurrency=concurrency, timeout=timeout)
        col = Collection.open(collection, mmap=True)
    except (ValueError, OSError, CollectionError) as e:
        raise click.ClickException(str(e)) from e
    bars: dict[str, Any] = {}

    def progress(step: str, done: int, total: int) -> None:
        if as_json or total == 0:
            return
        if step not in bars:
            bars[step] = click.progressbar(length=total, label=step, file=sys.stderr)
        bar = bars[step]
        bar.update(done - bar.pos)
        if done >= total:
            bar.render_finish()

    try:
        report = prepare(col, client, n_questions=questions, max_clusters=clusters,
                         language=None if language == "auto" else language,
                         progress=progress)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: the answers so far are kept; run the same command again "
                   "to resume", err=True)
        raise SystemExit(130) from None
    except (LLMError, ValueError, CollectionError) as e:
        raise click.ClickException(f"{e} (what was done is kept: run again to resume)") from e
    finally:
        col.close()
    data = report.as_dict()
    if as_json:
        click.echo(json.dumps(data))
        return
    u = data["usage"]
    click.echo(f"{data['documents']} documents: {data['asked']} asked, {data['reused']} "
               f"reused, {data['failed']} without usable answer; {data['questions']} "
               f"synthetic questions; {data['clusters']} clusters ({data['summaries']} "
               "summaries written)")
    click.echo(f"LLM: {u['requests']} requests, {u['cached']} cached, "
               f"{u['prompt_tokens']} prompt + {u['completion_tokens']} completion tokens, "
               f"{u['seconds']:.1f} s")
