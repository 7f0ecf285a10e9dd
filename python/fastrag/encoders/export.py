"""Export a Hugging Face model to ONNX once, with the outputs fastrag's methods read.

Needs the ``export`` extra (torch, transformers); running the exported model later needs only
onnxruntime and tokenizers. An exported folder holds:

- ``model.onnx``: inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids`` where the
  model takes them); outputs by task:
  - ``embed``: ``last_hidden_state`` (batch, tokens, hidden) and, with ``attentions=True``,
    ``cls_attention`` (batch, tokens): the last layer's attention row of the first token,
    averaged over heads (BM42 weights);
  - ``splade``: ``splade`` (batch, vocab): max over tokens of log(1 + relu(MLM logits)) with
    padding masked, fused into the graph so that the (batch, tokens, vocab) tensor never
    leaves onnxruntime;
  - ``rerank``: ``logits`` (batch, labels) of a sequence-classification head;
- ``tokenizer.json`` (a fast tokenizer) and ``fastrag_model.json`` (the manifest: task,
  pooling, prompts, window, fingerprint, and the export's own check against PyTorch).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fastrag.encoders import stack
from fastrag.encoders.errors import ExportError
from fastrag.encoders.heads import check_loaded
from fastrag.text import ja_wordpiece

log = logging.getLogger(__name__)

EXPORT_VERSION = 3
MANIFEST = "fastrag_model.json"
TASKS = ("embed", "splade", "rerank")
DECODER_TYPES = {
    "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text", "phi",
    "phi3", "gpt2", "gpt_neox", "opt", "bloom", "falcon", "stablelm", "olmo", "olmo2",
}


@contextlib.contextmanager
def _stdout_to_log(what: str) -> Iterator[None]:
    """What `what` prints on stdout goes to this module's logger instead (onnxruntime's
    optimizer prints "failed in shape inference"; stdout is for the caller's output, such as
    the folder `fastrag export` prints)."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            if line.strip():
                log.info("%s: %s", what, line.strip())


def _require_torch() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as e:
        raise ExportError(
            "exporting a model to ONNX needs torch and transformers: "
            "pip install 'fastrag[export]' torch==2.13.0 (or use an already exported folder)"
        ) from e
    return torch, transformers


def weights_digest(folder: Path) -> str:
    """sha256 over the config and weight files of a model folder (names and bytes)."""
    h = hashlib.sha256()
    names = sorted(
        p for p in folder.iterdir()
        if p.is_file() and (p.suffix in (".safetensors", ".bin", ".pt") or p.name == "config.json")
    )
    for p in names:
        h.update(p.name.encode())
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def _wrapper(
    torch: Any, model: Any, task: str, attentions: bool, takes_types: bool,
    layers: list[stack.DenseLayer],
) -> Any:
    """A module whose forward takes plain tensors and returns exactly the task's outputs
    (for embed, token vectors through the sentence-transformers Dense `layers`)."""

    class Exported(torch.nn.Module):  # type: ignore[misc]  # torch: optional, passed in
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
            if takes_types:
                kwargs["token_type_ids"] = token_type_ids
            if task == "embed":
                out = self.model(**kwargs, output_attentions=attentions, use_cache=False)
                hidden = stack.torch_forward(torch, out.last_hidden_state, layers)
                if not attentions:
                    return hidden
                last = out.attentions[-1]  # (batch, heads, tokens, tokens)
                return hidden, last[:, :, 0, :].mean(dim=1)
            if task == "splade":
                logits = self.model(**kwargs).logits
                act = torch.log1p(torch.relu(logits)) * attention_mask.unsqueeze(-1).to(
                    logits.dtype
                )
                return act.max(dim=1).values
            return self.model(**kwargs).logits

    return Exported()


def _load_torch_model(transformers: Any, source: Path, task: str, trust_remote_code: bool) -> Any:
    auto = {
        "embed": transformers.AutoModel,
        "splade": transformers.AutoModelForMaskedLM,
        "rerank": transformers.AutoModelForSequenceClassification,
    }[task]
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "output_loading_info": True}
    try:
        model, info = auto.from_pretrained(source, attn_implementation="eager", **kwargs)
    except (TypeError, ValueError):  # models without a choice of attention implementation
        model, info = auto.from_pretrained(source, **kwargs)
    check_loaded(source, task, info)
    return model.float().eval()


def export_model(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    task: str = "embed",
    attentions: bool = False,
    settings: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
    opset: int = 17,
    tolerance: float = 1e-4,
    dynamo: bool = False,
    exporter: str = "auto",
) -> Path:
    """Exports the Hugging Face model in folder `source` to `out_dir` (written atomically).

    Args:
        task: "embed" (token embeddings, optional [CLS] attentions), "splade" or "rerank".
        attentions: also export the head-averaged last-layer [CLS] attention row (BM42).
        settings: manifest entries that override what the folder says (pooling, prompts,
            normalize, max_length, append_eos, name, revision).
        tolerance: the largest absolute difference to PyTorch accepted on a check batch.
        dynamo: use torch's torch.export-based exporter instead of the TorchScript one.
        exporter: "auto" (optimum's ONNX exporter, from the optimum-onnx package, where it is
            installed and covers the export: task "embed" without attentions or Dense layers;
            torch.onnx otherwise, and when optimum fails), "optimum" (optimum or an error) or
            "torch" (torch.onnx only). Either way the graph is checked against PyTorch.
    Returns:
        `out_dir`, holding model.onnx, tokenizer.json and fastrag_model.json.
    """
    torch, transformers = _require_torch()
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if attentions and task != "embed":
        raise ValueError("attentions=True is for task='embed'")
    src = Path(source)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src} has no config.json: not a Hugging Face model folder")
    out = Path(out_dir)

    config = transformers.AutoConfig.from_pretrained(src, trust_remote_code=trust_remote_code)
    decoder = config.model_type in DECODER_TYPES or bool(getattr(config, "is_decoder", False))
    try:
        ja_wordpiece.check_requirements(src)
    except ImportError as e:
        raise ExportError(f"{src}: {e}") from e
    tokenizer = transformers.AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code)
    backend, word_splitter = _backend_tokenizer(tokenizer, src)
    model = _load_torch_model(transformers, src, task, trust_remote_code)
    import inspect

    takes_types = (
        "token_type_ids" in inspect.signature(model.forward).parameters
        and getattr(config, "type_vocab_size", 0) > 0
    )
    positions = getattr(config, "max_position_embeddings", None) or 512
    tok_max = getattr(tokenizer, "model_max_length", None)
    window = min(positions, tok_max) if isinstance(tok_max, int) and tok_max > 0 else positions
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    manifest = manifest_for(
        src, task, settings or {}, window=window, decoder=decoder, attentions=attentions,
        architecture=config.model_type,
        hidden_size=int(getattr(config, "hidden_size", 0) or 0),
        vocab_size=int(getattr(config, "vocab_size", 0) or 0),
        num_labels=int(getattr(config, "num_labels", 1)) if task == "rerank" else None,
        pad_id=int(pad_id), eos_id=tokenizer.eos_token_id, token_type_ids=takes_types,
        **({"word_splitter": word_splitter} if word_splitter else {}),
    )
    if decoder and task != "embed":
        raise ExportError(f"task {task!r} is for encoder models; {src} is a decoder")
    layers = stack.for_export(src, task, manifest, settings or {})

    ids, mask, types = check_batch(manifest["vocab_size"], manifest["pad_id"])
    wrapper = _wrapper(torch, model, task, attentions, takes_types, layers)
    inputs = (torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types))
    input_names = ["input_ids", "attention_mask"] + (["token_type_ids"] if takes_types else [])
    output_names = {
        "embed": ["last_hidden_state"] + (["cls_attention"] if attentions else []),
        "splade": ["splade"],
        "rerank": ["logits"],
    }[task]
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "tokens"} for n in input_names}
    for name in output_names:
        axes[name] = {0: "batch", 1: "tokens"} if name != "splade" else {0: "batch"}
    axes.get("logits", {}).pop(1, None)

    with staging(out) as tmp:
        why_not = _optimum_unsuitable(exporter, task, attentions, layers, decoder, dynamo)
        if why_not is not None and exporter == "optimum":
            raise ExportError(f"{src.name} cannot be exported through optimum: {why_not}")
        used = "torch.onnx"
        if why_not is None:
            used = _optimum_export(src, tmp, input_names, opset, trust_remote_code, exporter)
        else:
            log.info("exporting %s with torch.onnx: %s", src.name, why_not)
        with torch.no_grad(), warnings.catch_warnings(), _stdout_to_log("torch.onnx"):
            # The TorchScript exporter is deprecated in favour of torch.export; it is still
            # the one that traces Hugging Face encoders and decoders with dynamic batch and
            # length in seconds, into one file. `dynamo=True` picks the new one.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Exporting aten::index operator")
            expected = wrapper(*inputs[: len(input_names)])
            export_options: dict[str, Any] = {"dynamo": dynamo}
            if dynamo:
                export_options["external_data"] = False
            if used == "torch.onnx":
                torch.onnx.export(
                    wrapper,
                    inputs[: len(input_names)],
                    str(tmp / "model.onnx"),
                    input_names=input_names,
                    output_names=output_names,
                    dynamic_axes=axes,
                    opset_version=opset,
                    **export_options,
                )
        expected = expected if isinstance(expected, tuple) else (expected,)
        feeds = dict(zip(input_names, (ids, mask, types), strict=False))
        want = [e.numpy() for e in expected]
        diff = _max_diff(tmp / "model.onnx", feeds, want, output_names, mask)
        if not diff <= tolerance:
            raise ExportError(
                f"the exported {src.name} differs from PyTorch by {diff:.2e} (> {tolerance})"
            )
        manifest["fused"] = _fuse(tmp / "model.onnx", config, feeds, want, output_names, mask,
                                  tolerance)
        manifest["outputs"] = output_names
        manifest["inputs"] = input_names
        manifest["export_max_abs_diff"] = diff
        manifest["exporter"] = used
        backend.save(str(tmp / "tokenizer.json"))
        publish(tmp, out, manifest)
    log.info("exported %s (%s) to %s, max diff to PyTorch %.1e", src, task, out, diff)
    return out


EXPORTERS = ("auto", "optimum", "torch")


def _optimum_unsuitable(
    exporter: str, task: str, attentions: bool, layers: list[stack.DenseLayer], decoder: bool,
    dynamo: bool,
) -> str | None:
    """Why optimum's exporter is not used for this export, or None when it is to be tried.

    optimum exports a model's own outputs; fastrag's embed export is exactly that
    (last_hidden_state) unless it adds the [CLS] attention row or Dense layers, and its
    splade / rerank exports fuse their heads into the graph.
    """
    if exporter == "torch":
        return "exporter='torch'"
    if dynamo:
        return "dynamo=True asks for torch's exporter"
    if task != "embed" or attentions or layers:
        return "optimum exports the model's own outputs; this export adds its own"
    if decoder:
        return "decoders are exported with torch.onnx (last-token pooling, end-of-sequence)"
    try:
        from optimum.exporters.onnx import main_export  # noqa: F401
    except ImportError:
        return "optimum's ONNX exporter is not installed (pip install optimum-onnx)"
    return None


def _optimum_export(
    src: Path, tmp: Path, input_names: list[str], opset: int, trust_remote_code: bool,
    exporter: str,
) -> str:
    """Exports `src` with optimum (feature-extraction) to tmp/model.onnx; returns "optimum",
    or "torch.onnx" when optimum fails or writes another signature and `exporter` is "auto"
    (with exporter="optimum", raises ExportError instead)."""
    import onnx
    from optimum.exporters.onnx import main_export

    work = tmp / "optimum"
    try:
        with warnings.catch_warnings(), _stdout_to_log("optimum"):
            warnings.simplefilter("ignore")
            main_export(
                str(src), str(work), task="feature-extraction", opset=opset, device="cpu",
                do_validation=False, trust_remote_code=trust_remote_code,
            )
        graph = onnx.load(str(work / "model.onnx"), load_external_data=False).graph
        names = ([i.name for i in graph.input], [o.name for o in graph.output])
        if names != (input_names, ["last_hidden_state"]):
            raise ExportError(f"optimum wrote inputs {names[0]} and outputs {names[1]}, "
                              f"fastrag reads {input_names} -> ['last_hidden_state']")
        if any(i.data_location == onnx.TensorProto.EXTERNAL for i in graph.initializer):
            raise ExportError("optimum wrote external weight files")
        os.replace(work / "model.onnx", tmp / "model.onnx")
    except Exception as e:  # optimum raises many kinds of errors: fall back, or say why
        if exporter == "optimum":
            raise ExportError(f"optimum could not export {src.name}: {e}") from e
        log.info("optimum could not export %s (%s): using torch.onnx", src.name, e)
        return "torch.onnx"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return "optimum"


def _backend_tokenizer(tokenizer: Any, src: Path) -> tuple[Any, dict[str, Any] | None]:
    """The `tokenizers.Tokenizer` to save for a transformers tokenizer, and the manifest's
    ``word_splitter`` entry: a fast tokenizer's own, or for a Japanese BERT (MeCab + WordPiece,
    no fast version) one that `fastrag.text.ja_wordpiece` builds and checks."""
    if getattr(tokenizer, "is_fast", False):
        return tokenizer.backend_tokenizer, None
    if not ja_wordpiece.is_japanese_bert(tokenizer):
        raise ExportError(f"{src}: no fast tokenizer (tokenizer.json) could be built")
    try:
        return ja_wordpiece.export_tokenizer(tokenizer)
    except (ValueError, ImportError) as e:
        raise ExportError(f"{src}: {e}") from e


def manifest_for(
    src: Path,
    task: str,
    settings: dict[str, Any],
    *,
    window: int,
    decoder: bool,
    attentions: bool,
    **facts: Any,
) -> dict[str, Any]:
    """The manifest of an export of `src` (before its tokenizer hash and fingerprint).

    `facts` are what the model says of itself (architecture, sizes, pad / eos ids, whether it
    takes token type ids); `settings` (registry entries) override the folder's
    sentence-transformers files, which override the defaults. `window` is the model's own
    limit in tokens: a setting may shorten it, never lengthen it.
    """
    info = {**stack.sentence_transformers_settings(src), **settings}
    return {
        "format": "fastrag-onnx",
        "version": EXPORT_VERSION,
        "task": task,
        "name": info.pop("name", src.name),
        "revision": info.pop("revision", None),
        "decoder": decoder,
        **facts,
        "max_length": min(int(info.pop("max_length", window)), window, 8192),
        "pooling": info.pop("pooling", "last" if decoder else "mean"),
        "normalize": bool(info.pop("normalize", True)),
        "query_prompt": info.pop("query_prompt", ""),
        "document_prompt": info.pop("document_prompt", ""),
        "append_eos": bool(info.pop("append_eos", decoder)),
        "attentions": attentions,
        "weights_sha256": weights_digest(src),
        **info,
    }


def check_batch(vocab_size: int, pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded (input_ids, attention_mask, token_type_ids) of two rows, the second padded, so
    that a check exercises masked positions."""
    rng = np.random.default_rng(0)
    lengths = [12, 7]
    ids = rng.integers(5, max(6, min(vocab_size, 1000)), size=(2, 12))
    mask = np.zeros((2, 12), dtype=np.int64)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    ids = np.where(mask == 1, ids, pad_id).astype(np.int64)
    return ids, mask, np.zeros_like(ids)


@contextlib.contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A temporary folder beside `out` to write an export into; removed if anything fails."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish(tmp: Path, out: Path, manifest: dict[str, Any]) -> None:
    """Completes a staged export (model.onnx and tokenizer.json written): hashes the tokenizer,
    fingerprints, writes the manifest, and renames the folder to `out` (replacing it)."""
    manifest["tokenizer_sha256"] = hashlib.sha256(
        (tmp / "tokenizer.json").read_bytes()
    ).hexdigest()
    manifest["fingerprint"] = fingerprint_of(manifest)
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    if out.exists():
        shutil.rmtree(out)
    _share(tmp)
    os.replace(tmp, out)


FUSIBLE = {"bert", "roberta", "xlm-roberta", "electra", "camembert"}


def _max_diff(
    path: Path,
    feeds: dict[str, np.ndarray],
    expected: list[np.ndarray],
    names: list[str],
    mask: np.ndarray,
) -> float:
    """Largest absolute difference of the ONNX outputs to `expected` (padding ignored)."""
    got = _run_check(path, feeds)
    diff = 0.0
    for name, want, have in zip(names, expected, got, strict=True):
        if name in ("last_hidden_state", "cls_attention"):  # padded positions are free
            keep = mask.astype(bool)
            want, have = want[keep], have[keep]
        diff = max(diff, float(np.max(np.abs(want - have))))
    return diff


def _fuse(
    path: Path,
    config: Any,
    feeds: dict[str, np.ndarray],
    expected: list[np.ndarray],
    names: list[str],
    mask: np.ndarray,
    tolerance: float,
    opt_level: int = 1,
) -> dict[str, int]:
    """Fuses attention, LayerNorm and GELU subgraphs of BERT-like encoders in place.

    onnxruntime's transformer optimizer rewrites them into its contrib ops (Attention,
    SkipLayerNormalization, BiasGelu): about 1.6x faster fp32 on a 2-core AVX-512 CPU, and
    the fused Attention is what int8 quantisation turns into QAttention. Kept only when the
    outputs still match PyTorch; returns the counts of fused operators ({} when not fused).
    `opt_level` 0 skips onnxruntime's basic pass (constant folding of torch's shape
    subgraphs), which imports torch: graphs written without torch have none to fold.
    """
    if config.model_type not in FUSIBLE:
        return {}
    try:
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError:  # needs the onnx package
        return {}
    fused_path = path.with_name("model_fused.onnx")
    try:
        with warnings.catch_warnings(), _stdout_to_log("onnxruntime optimizer"):
            warnings.simplefilter("ignore")
            model = optimize_model(
                str(path),
                model_type="bert",
                num_heads=int(config.num_attention_heads),
                hidden_size=int(config.hidden_size),
                opt_level=opt_level,
            )
        stats = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
        model.save_model_to_file(str(fused_path))
        diff = _max_diff(fused_path, feeds, expected, names, mask)
    except Exception as e:  # an architecture the optimizer does not know: keep the plain graph
        log.info("not fusing %s: %s", path, e)
        fused_path.unlink(missing_ok=True)
        return {}
    if not diff <= tolerance or not stats:
        fused_path.unlink(missing_ok=True)
        return {}
    os.replace(fused_path, path)
    return stats


def _share(path: Path) -> None:
    """Default permissions (as the umask allows) for a folder made by mkdtemp (0700) and its
    files, so that a shared cache stays readable by others."""
    path.chmod(_allowed(0o777))
    for p in path.iterdir():
        p.chmod(_allowed(0o666))


def _allowed(mode: int) -> int:
    """`mode` less the process umask (read without changing it for long)."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def _run_check(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return list(session.run(None, feeds))


def fingerprint_of(manifest: dict[str, Any]) -> str:
    """What makes vectors comparable: weights, tokenizer, task, pooling, prompts and window.

    Quantisation is left out on purpose: an int8 session approximates the same encoder, so
    int8 queries may search an fp32 index.
    """
    keys: tuple[str, ...] = (
        "task", "weights_sha256", "pooling", "normalize", "query_prompt", "document_prompt",
        "append_eos", "max_length", "tokenizer_sha256",
    )
    if manifest.get("word_splitter"):  # MeCab words before WordPiece (Japanese BERTs)
        keys += ("word_splitter",)
    blob = json.dumps({k: manifest.get(k) for k in keys}, sort_keys=True, ensure_ascii=False)
    return f"{manifest.get('name', 'model')}@{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def quantize_int8(model_path: Path, out_path: Path) -> Path:
    """Dynamic int8 quantisation (per-channel weights, activations scaled per batch).

    Per-channel keeps quality (cosine to fp32 ~0.995 on MiniLM) where per-tensor loses it.
    Written to a temporary file, then renamed into place.
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:  # onnxruntime.quantization imports the `onnx` package
        raise ExportError("int8 quantisation needs the onnx package: pip install onnx") from e
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=out_path.parent)
    os.close(fd)
    try:
        import onnx

        quiet = logging.getLogger()  # the quantizer logs advice on the root logger
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with _stdout_to_log("onnxruntime quantizer"):
                quantize_dynamic(
                    str(model_path),
                    tmp,
                    per_channel=True,
                    weight_type=QuantType.QInt8,
                    # fused contrib ops have no inferred output types: say they are float
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                )
        finally:
            quiet.setLevel(level)
        Path(tmp).chmod(_allowed(0o666))
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_path
