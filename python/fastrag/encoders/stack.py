"""sentence-transformers module stacks: the modules after the transformer, read and checked.

A sentence-transformers folder lists its modules in ``modules.json``: a Transformer, a Pooling,
then possibly ``Dense`` projections (LaBSE, GTR, sentence-T5, distiluse...) and a ``Normalize``.
An export that kept only the transformer would give vectors of the wrong size and direction,
silently; so the embed exports (`export_model` and the torch-free `bert_onnx` builder) bake
the Dense layers into the graph, and refuse, naming the module and the model, what they
cannot reproduce exactly.

The layers are applied to every token's vector, before fastrag's pooling, so that the graph's
``last_hidden_state`` keeps its (batch, tokens, dim) contract (pooling, late chunking and token
stores work unchanged, with dim the last layer's ``out_features``). sentence-transformers
applies them after pooling; the two agree when the pooling picks one token (cls, last token)
or when every layer is affine (Identity activation: the mean of W h + b over tokens is W times
the mean plus b). Mean pooling followed by a non-linear Dense layer is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastrag.encoders.errors import ExportError

#: sentence-transformers' pooling modes -> fastrag's poolings (the others are refused)
POOLING_MODES = {"cls": "cls", "mean": "mean", "lasttoken": "last"}
#: the legacy pooling_mode_* flags of Pooling/config.json
LEGACY_POOLING = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
#: torch activation classes of Dense layers -> the names used here
ACTIVATIONS = {"Identity": "identity", "Tanh": "tanh", "ReLU": "relu", "GELU": "gelu",
               "Sigmoid": "sigmoid"}
SUPPORTED = ("Transformer", "Pooling", "Dense", "Normalize", "Dropout")
TOKENS, SENTENCE = "token_embeddings", "sentence_embedding"


@dataclass(frozen=True)
class DenseLayer:
    """One sentence-transformers Dense module: act(x W^T + b), plus x (or x R^T) when residual.

    Attributes:
        path: the module's folder inside the model folder.
        weight: (out_features, in_features) float32.
        bias: (out_features,) float32, or None.
        activation: one of ``ACTIVATIONS``' values.
        residual: whether the input is added to the output.
        residual_weight: (out_features, in_features) projection of that input, or None (the
            input is added as it is: in_features == out_features).
    """

    path: str
    weight: np.ndarray
    bias: np.ndarray | None
    activation: str
    residual: bool = False
    residual_weight: np.ndarray | None = None

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    @property
    def affine(self) -> bool:
        """Whether the layer commutes with mean pooling (x -> A x + c)."""
        return self.activation == "identity"

    def describe(self) -> dict[str, Any]:
        """The manifest entry of the layer (no weights)."""
        return {"path": self.path, "in_features": self.in_features,
                "out_features": self.out_features, "bias": self.bias is not None,
                "activation": self.activation, "residual": self.residual}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{path} is not valid JSON ({e})") from e


def class_name(module: dict[str, Any]) -> str:
    """The class of a modules.json entry, without its module path ("Dense")."""
    return str(module.get("type", "")).rsplit(".", 1)[-1]


def pooling_modes(config: dict[str, Any]) -> tuple[str, ...]:
    """sentence-transformers' pooling modes of a Pooling/config.json, old or new format."""
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        return (mode,)
    if isinstance(mode, list | tuple):
        return tuple(str(m) for m in mode)
    legacy = tuple(m for key, m in LEGACY_POOLING.items() if config.get(key))
    return legacy or ("mean",)


def pooling_of(config: dict[str, Any]) -> str | None:
    """fastrag's pooling for a Pooling/config.json, or None when fastrag has no equivalent."""
    modes = pooling_modes(config)
    return POOLING_MODES.get(modes[0]) if len(modes) == 1 else None


def modules_of(folder: Path) -> list[dict[str, Any]]:
    """The entries of the folder's modules.json ([] when it has none)."""
    modules = _read_json(folder / "modules.json")
    if modules is None:
        return []
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ExportError(f"{folder / 'modules.json'} is not a list of modules")
    return modules


def sentence_transformers_settings(folder: Path) -> dict[str, Any]:
    """Pooling, normalisation, prompts and window from a sentence-transformers folder, if any.

    Lenient (any task's export reads it): a pooling without a fastrag equivalent is left out
    here and refused by `embedding_stack`.
    """
    out: dict[str, Any] = {}
    modules = modules_of(folder)
    for module in modules:
        kind = class_name(module)
        if kind == "Pooling":
            pooling = pooling_of(_read_json(folder / module.get("path", "") / "config.json") or {})
            if pooling is not None:
                out["pooling"] = pooling
        elif kind == "Normalize":
            out["normalize"] = True
    if modules and "normalize" not in out:
        out["normalize"] = False
    st = _read_json(folder / "config_sentence_transformers.json") or {}
    prompts = st.get("prompts") or {}
    if isinstance(prompts, dict):
        if "query" in prompts:
            out["query_prompt"] = prompts["query"]
        for key in ("document", "passage", "corpus"):
            if key in prompts:
                out["document_prompt"] = prompts[key]
                break
    bert = _read_json(folder / "sentence_bert_config.json") or {}
    if isinstance(bert.get("max_seq_length"), int):
        out["max_length"] = bert["max_seq_length"]
    return out


def embedding_stack(
    folder: Path, *, hidden_size: int, pooling: str, pooling_fixed: bool = False
) -> list[DenseLayer]:
    """The Dense layers of the sentence-transformers stack in `folder`, checked, in order.

    `pooling` is the pooling the export will record (the model's own, or a registry entry's
    when `pooling_fixed`). Raises ExportError naming the module and the model for what the
    export cannot reproduce: module types other than ``SUPPORTED``, a stack that does not
    start with its Transformer, pooling modes without a fastrag equivalent (max, several
    concatenated...), a Normalize before other modules, Dense layers whose sizes do not chain,
    and a non-linear Dense layer after mean pooling.
    """
    name = folder.name
    layers: list[DenseLayer] = []
    pooled = normalized = False
    for i, module in enumerate(modules_of(folder)):
        kind, path = class_name(module), str(module.get("path", ""))
        where = f"{name}: sentence-transformers module {module.get('type')!r} ({path or '.'})"
        if kind not in SUPPORTED:
            raise ExportError(
                f"{where} is not supported by fastrag's export (it handles "
                f"{', '.join(SUPPORTED)}): its vectors would differ from the model's"
            )
        if (kind == "Transformer") != (i == 0):
            raise ExportError(f"{where}: the stack must start with its one Transformer")
        if normalized and kind != "Dropout":
            raise ExportError(f"{where} comes after Normalize: not supported")
        config = _read_json(folder / path / "config.json") or {}
        if kind == "Pooling":
            _check_pooling(where, config, pooled, pooling_fixed)
            pooled = True
        elif kind == "Normalize":
            if config.get("module_input_name", SENTENCE) != SENTENCE or not pooled:
                raise ExportError(f"{where} normalises token vectors: not supported")
            normalized = True
        elif kind == "Dense":
            dim = layers[-1].out_features if layers else hidden_size
            layer = _dense(folder, path, config, where, dim, pooled)
            if pooled and pooling == "mean" and not layer.affine:
                raise ExportError(
                    f"{where} applies {layer.activation} after mean pooling: fastrag applies "
                    "Dense layers to every token before pooling, which equals the model only "
                    "for cls / last-token pooling or Identity activations; not supported"
                )
            layers.append(layer)
    return layers


def _check_pooling(where: str, config: dict[str, Any], pooled: bool, fixed: bool) -> None:
    if pooled:
        raise ExportError(f"{where}: a second Pooling module is not supported")
    if not fixed and pooling_of(config) is None:
        raise ExportError(
            f"{where} pools with {'+'.join(pooling_modes(config))}: fastrag pools with "
            f"{', '.join(POOLING_MODES)} only; not supported"
        )


def _dense(
    folder: Path, path: str, config: dict[str, Any], where: str, dim: int, pooled: bool
) -> DenseLayer:
    """One Dense module, its configuration checked against the stack and its weights read."""
    source = config.get("module_input_name", SENTENCE)
    if source != (SENTENCE if pooled else TOKENS) or config.get("module_output_name",
                                                                  source) != source:
        raise ExportError(
            f"{where} reads {source!r} and writes {config.get('module_output_name', source)!r}"
            f"{' after' if pooled else ' before'} pooling: not supported"
        )
    activation = str(config.get("activation_function", "torch.nn.modules.activation.Tanh"))
    short = activation.rsplit(".", 1)[-1]
    if not activation.startswith("torch.") or short not in ACTIVATIONS:
        raise ExportError(
            f"{where} has activation {activation!r}: supported are torch.nn "
            f"{', '.join(ACTIVATIONS)}"
        )
    tensors = _dense_weights(folder / path, where)
    weight = tensors.get("linear.weight")
    ins, outs = config.get("in_features"), config.get("out_features")
    if weight is None or weight.shape != (outs, ins):
        raise ExportError(
            f"{where}: no linear.weight of shape ({outs}, {ins}) in its weights"
        )
    if ins != dim:
        raise ExportError(f"{where} takes {ins} dimensions, but receives {dim}")
    bias = tensors.get("linear.bias") if config.get("bias", True) else None
    if config.get("bias", True) and (bias is None or bias.shape != (outs,)):
        raise ExportError(f"{where}: no linear.bias of shape ({outs},) in its weights")
    residual = bool(config.get("use_residual", False))
    projection = tensors.get("residual.weight") if residual and ins != outs else None
    if residual and ins != outs and (projection is None or projection.shape != (outs, ins)):
        raise ExportError(f"{where}: no residual.weight of shape ({outs}, {ins})")
    return DenseLayer(path=path, weight=weight, bias=bias, activation=ACTIVATIONS[short],
                      residual=residual, residual_weight=projection)


def _dense_weights(folder: Path, where: str) -> dict[str, np.ndarray]:
    """A Dense module's tensors as float32 arrays: model.safetensors, else pytorch_model.bin
    (which needs torch to read)."""
    if (folder / "model.safetensors").is_file():
        try:
            from safetensors.numpy import load_file
        except ImportError as e:
            raise ExportError(
                f'{where}: reading its weights needs safetensors: pip install "fastrag[minilm]"'
            ) from e
        try:
            loaded = load_file(str(folder / "model.safetensors"))
        except Exception as e:  # bfloat16 (no numpy dtype), damaged file
            raise ExportError(f"{where}: {folder / 'model.safetensors'} unreadable: {e}") from e
    elif (folder / "pytorch_model.bin").is_file():
        try:
            import torch
        except ImportError as e:
            raise ExportError(
                f"{where}: its weights are a pytorch_model.bin, which needs torch: "
                'pip install "fastrag[export]" torch==2.13.0'
            ) from e
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        loaded = {k: v.float().numpy() for k, v in state.items()}
    else:
        raise ExportError(f"{where}: no model.safetensors or pytorch_model.bin in {folder}")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in loaded.items()}


def for_export(
    folder: Path, task: str, manifest: dict[str, Any], settings: dict[str, Any]
) -> list[DenseLayer]:
    """The Dense layers an export of `folder` for `task` applies (none but for embed), checked
    (see `embedding_stack`) and recorded in its `manifest` (see `record`)."""
    if task != "embed":
        return []
    layers = embedding_stack(folder, hidden_size=int(manifest["hidden_size"]),
                             pooling=str(manifest["pooling"]), pooling_fixed="pooling" in settings)
    record(manifest, layers)
    return layers


def stack_digest(base: str, layers: list[DenseLayer]) -> str:
    """`base` (the transformer's weights digest) when there are no layers, else a sha256 over
    it and every layer's description and weights: what the fingerprint must cover."""
    if not layers:
        return base
    h = hashlib.sha256(base.encode())
    for layer in layers:
        h.update(json.dumps(layer.describe(), sort_keys=True).encode())
        for array in (layer.weight, layer.bias, layer.residual_weight):
            if array is not None:
                h.update(np.ascontiguousarray(array, dtype="<f4").tobytes())
    return h.hexdigest()


def record(manifest: dict[str, Any], layers: list[DenseLayer]) -> None:
    """Puts the layers into an export's manifest: the vectors' size (``hidden_size``, what
    the encoders read as their dimension) becomes the last layer's out_features, and the
    weights digest (so the fingerprint) covers the layers' weights."""
    if not layers:
        return
    manifest["transformer_hidden_size"] = manifest["hidden_size"]
    manifest["hidden_size"] = layers[-1].out_features
    manifest["dense"] = [layer.describe() for layer in layers]
    manifest["weights_sha256"] = stack_digest(manifest["weights_sha256"], layers)


def torch_forward(torch: Any, x: Any, layers: list[DenseLayer]) -> Any:
    """The layers applied to the last axis of the torch tensor `x` (for the traced export)."""
    functions = {"identity": lambda t: t, "tanh": torch.tanh, "relu": torch.relu,
                 "gelu": torch.nn.functional.gelu, "sigmoid": torch.sigmoid}
    for layer in layers:
        bias = None if layer.bias is None else torch.from_numpy(layer.bias)
        y = functions[layer.activation](
            torch.nn.functional.linear(x, torch.from_numpy(layer.weight), bias)
        )
        if layer.residual:
            proj = layer.residual_weight
            y = y + (x if proj is None else torch.nn.functional.linear(x, torch.from_numpy(proj)))
        x = y
    return x


def onnx_forward(graph: Any, x: str, layers: list[DenseLayer]) -> str:
    """The layers appended to an ONNX graph built node by node (`fastrag.encoders.bert_onnx`'s
    ``_Graph``: ``op(type, *inputs)`` and ``const(array)``); returns the output's name."""
    for layer in layers:
        y = graph.op("MatMul", x, graph.const(np.ascontiguousarray(layer.weight.T)))
        if layer.bias is not None:
            y = graph.op("Add", y, graph.const(layer.bias))
        if layer.activation in ("relu", "gelu"):
            y = graph.activation(y, layer.activation)
        elif layer.activation != "identity":
            y = graph.op({"tanh": "Tanh", "sigmoid": "Sigmoid"}[layer.activation], y)
        if layer.residual:
            proj = layer.residual_weight
            skip = x if proj is None else graph.op(
                "MatMul", x, graph.const(np.ascontiguousarray(proj.T)))
            y = graph.op("Add", y, skip)
        x = y
    return x
