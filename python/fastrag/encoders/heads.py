"""Checkpoints without the head a task needs: refused before anything is exported.

transformers loads a checkpoint into the task's model class (AutoModelForMaskedLM for SPLADE,
AutoModelForSequenceClassification for a reranker) and initialises what the checkpoint lacks at
random, with only a log line ("newly initialized"). An export of that model would run, pass its
own check against PyTorch (the same random weights on both sides) and be cached: a reranker or
SPLADE model of noise. `check_loaded` reads transformers' loading report instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastrag.encoders.errors import ExportError

#: what each task needs beyond the encoder, for the error message
HEADS = {"embed": "encoder", "splade": "masked-LM head", "rerank": "sequence-classification head"}
#: weights an embed export never reads (it outputs the last hidden state)
UNUSED_BY_EMBED = ("pooler",)


def check_loaded(source: Path, task: str, info: dict[str, Any]) -> None:
    """Raises ExportError naming the weights transformers initialised at random.

    `info` is the report of ``from_pretrained(..., output_loading_info=True)``: its
    ``missing_keys`` (absent from the checkpoint) and ``mismatched_keys`` (present with
    another shape) are both initialised at random. A missing BERT pooler is fine for embed.
    """
    missing = [str(k) for k in info.get("missing_keys") or ()]
    if task == "embed":
        missing = [k for k in missing if not set(k.split(".")) & set(UNUSED_BY_EMBED)]
    missing += [str(m[0] if isinstance(m, tuple | list) else m)
                for m in info.get("mismatched_keys") or ()]
    if missing:
        shown = ", ".join(sorted(missing)[:8]) + (" ..." if len(missing) > 8 else "")
        raise ExportError(
            f"{source.name} has no trained {HEADS.get(task, task)} for task {task!r}: "
            f"transformers would initialise {len(missing)} weights at random ({shown}); "
            "pass a checkpoint trained for this task"
        )
