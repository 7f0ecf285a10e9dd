"""BERT-family encoders to ONNX without torch: the graph written from the safetensors weights.

For BERT, RoBERTa, XLM-RoBERTa and CamemBERT checkpoints (absolute position embeddings,
post-LayerNorm blocks) the graph is built node by node with the onnx helper API: embeddings
(word + position + token type, LayerNorm), per layer self-attention (additive padding mask,
softmax), output projection + residual + LayerNorm, feed-forward (GELU or ReLU) + residual +
LayerNorm; then the task's outputs, named as `fastrag.encoders.export` names them:

- ``embed``: ``last_hidden_state`` and, with ``attentions=True``, ``cls_attention`` (the last
  layer's attention row of the first token, averaged over heads: BM42 weights);
- ``splade``: max over tokens of log(1 + relu(MLM logits)) with padding masked (BERT MLM head);
- ``rerank``: ``logits`` of a sequence-classification head (BERT pooler or RoBERTa head).

Needs ``onnx`` and ``safetensors`` (the ``minilm`` extra), not torch or transformers; the
tokenizer is the folder's ``tokenizer.json``. The folder layout, manifest and fingerprint are
those of `export_model`, so both builders' exports of one model are interchangeable. The
tests compare the outputs with PyTorch's to 1e-4 on all-MiniLM-L6-v2 and on tiny random
models; here, without a reference, the build checks that onnxruntime runs the graph, and
keeps onnxruntime's operator fusion only where it matches the plain graph.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from fastrag.encoders import stack
from fastrag.encoders.errors import ExportError
from fastrag.encoders.export import (
    TASKS,
    _fuse,
    _max_diff,
    _run_check,
    check_batch,
    manifest_for,
    publish,
    staging,
)

log = logging.getLogger(__name__)

ARCHITECTURES = ("bert", "roberta", "xlm-roberta", "camembert")
#: position ids count from padding_idx + 1 and skip padding (fairseq's convention)
ROBERTA_STYLE = ("roberta", "xlm-roberta", "camembert")
ACTIVATIONS = ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh")
#: protobuf's limit on one file; larger models need torch's exporter (external data)
MAX_BYTES = 1_800_000_000
EXTRA = 'pip install "fastrag-engine[minilm]"'
#: the opset of torch's exports here; reductions take their axes as attributes up to 17
OPSET = 17


def _config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{folder} has no config.json: not a Hugging Face model folder"
        ) from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{folder / 'config.json'} is not valid JSON ({e})") from e
    if not isinstance(config, dict):
        raise ExportError(f"{folder / 'config.json'} is not a JSON object")
    return config


def _weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def unsupported_reason(folder: str | os.PathLike[str], task: str = "embed") -> str | None:
    """Why the model in `folder` cannot be built without torch, or None when it can."""
    src = Path(folder)
    config = _config(src)
    kind = config.get("model_type")
    sizes = [config.get(k) for k in ("hidden_size", "num_attention_heads", "num_hidden_layers",
                                     "vocab_size", "max_position_embeddings")]
    positive = [v for v in sizes if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    checks = (
        (kind in ARCHITECTURES, f"architecture {kind!r} is not one of {', '.join(ARCHITECTURES)}"),
        (len(positive) == len(sizes) and positive[0] % positive[1] == 0,
         "config.json lacks positive sizes (hidden size a multiple of the heads)"),
        (task in TASKS, f"task {task!r} is not one of {', '.join(TASKS)}"),
        (task != "splade" or kind == "bert", "SPLADE heads are built for BERT only"),
        (config.get("position_embedding_type", "absolute") == "absolute",
         "only absolute position embeddings are built"),
        (not config.get("is_decoder") and not config.get("add_cross_attention"),
         "it is configured as a decoder"),
        ("auto_map" not in config, "it brings its own modelling code (auto_map)"),
        (config.get("hidden_act", "gelu") in ACTIVATIONS,
         f"activation {config.get('hidden_act')!r} is not one of {', '.join(ACTIVATIONS)}"),
        (config.get("embedding_size", config.get("hidden_size")) == config.get("hidden_size"),
         "its embeddings are projected to the hidden size"),
        ((src / "tokenizer.json").is_file(), "it has no tokenizer.json"),
        (bool(_weight_files(src)), "it has no .safetensors weights"),
    )
    for ok, reason in checks:
        if not ok:
            return reason
    size = sum(p.stat().st_size for p in _weight_files(src))
    if size > MAX_BYTES:
        return f"its weights ({size / 1e9:.1f} GB) exceed what one ONNX file holds"
    odd = _dtypes(src) - FLOAT_DTYPES
    if odd:
        return f"its weights are {', '.join(sorted(odd))} (numpy reads F16, F32 and F64)"
    return None


#: the safetensors dtypes numpy holds (bfloat16 it does not)
FLOAT_DTYPES = {"F16", "F32", "F64"}


def _dtypes(folder: Path) -> set[str]:
    """The dtypes of the floating-point tensors in the folder's safetensors files, read from
    their headers (nothing loaded); empty when safetensors is not installed (the build then
    says what to install) or a file cannot be read (the build then says why)."""
    try:
        from safetensors import safe_open
    except ImportError:
        return set()
    found: set[str] = set()
    for path in _weight_files(folder):
        try:
            with safe_open(str(path), framework="np") as f:
                found.update(f.get_slice(k).get_dtype() for k in f.keys())  # noqa: SIM118 (not a dict)
        except Exception:  # a damaged file: _Weights reports it with its path
            continue
    return {d for d in found if d.startswith(("F", "BF"))}


class _Weights:
    """The checkpoint's tensors as float32 arrays, found whatever the prefix (bert., roberta.)
    and whatever the LayerNorm naming (weight / bias, or the old gamma / beta)."""

    def __init__(self, folder: Path) -> None:
        try:
            from safetensors.numpy import load_file
        except ImportError as e:
            raise ExportError(f"reading safetensors weights needs safetensors: {EXTRA}") from e
        self.tensors: dict[str, np.ndarray] = {}
        for path in _weight_files(folder):
            try:
                self.tensors.update(load_file(str(path)))
            except Exception as e:  # bfloat16 (no numpy dtype), damaged file
                raise ExportError(f"{path} could not be read as numpy arrays: {e}") from e

    def _find(self, name: str) -> str | None:
        aliases = [name]
        if name.endswith("LayerNorm.weight"):
            aliases.append(name[: -len("weight")] + "gamma")
        elif name.endswith("LayerNorm.bias"):
            aliases.append(name[: -len("bias")] + "beta")
        for alias in aliases:
            for prefix in ("", "bert.", "roberta.", "model."):
                if prefix + alias in self.tensors:
                    return prefix + alias
        return None

    def has(self, name: str) -> bool:
        return self._find(name) is not None

    def __getitem__(self, name: str) -> np.ndarray:
        key = self._find(name)
        if key is None:
            raise ExportError(f"the checkpoint has no tensor {name!r}")
        return np.ascontiguousarray(self.tensors[key], dtype=np.float32)


class _Graph:
    """Nodes and initializers of one ONNX graph, with unique names."""

    def __init__(self, weights: _Weights, eps: float) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.weights = weights
        self.eps = eps
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0
        self._weights_added: set[str] = set()

    def op(self, op_type: str, *inputs: str, name: str = "", **attrs: Any) -> str:
        self._count += 1
        out = name or f"{op_type.lower()}_{self._count}"
        self.nodes.append(
            self.helper.make_node(op_type, list(inputs), [out], name=f"{op_type}_{self._count}",
                                  **attrs)
        )
        return out

    def const(self, value: Any, dtype: Any = np.float32, name: str = "") -> str:
        self._count += 1
        key = name or f"const_{self._count}"
        self.initializers.append(self.numpy_helper.from_array(np.asarray(value, dtype), key))
        return key

    def weight(self, name: str, transpose: bool = False) -> str:
        """The checkpoint's tensor `name` as an initializer (once; transposed: `name`.T)."""
        key = f"{name}.T" if transpose else name
        if key not in self._weights_added:
            array = self.weights[name]
            self.const(np.ascontiguousarray(array.T) if transpose else array, name=key)
            self._weights_added.add(key)
        return key

    def linear(self, x: str, name: str) -> str:
        """x @ W.T + b of the checkpoint's `name`.weight / `name`.bias (a torch Linear)."""
        y = self.op("MatMul", x, self.weight(f"{name}.weight", transpose=True))
        return self.op("Add", y, self.weight(f"{name}.bias"))

    def layer_norm(self, x: str, name: str) -> str:
        return self.op(
            "LayerNormalization", x, self.weight(f"{name}.weight"), self.weight(f"{name}.bias"),
            axis=-1, epsilon=self.eps,
        )

    def activation(self, x: str, kind: str) -> str:
        if kind == "relu":
            return self.op("Relu", x)
        if kind == "gelu":  # exact: x * 0.5 * (1 + erf(x / sqrt(2)))
            erf = self.op("Erf", self.op("Div", x, self.const(math.sqrt(2.0))))
            return self.op("Mul", self.op("Mul", x, self.op("Add", erf, self.const(1.0))),
                           self.const(0.5))
        # tanh approximation: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
        cube = self.op("Mul", self.op("Pow", x, self.const(3.0)), self.const(0.044715))
        inner = self.op("Mul", self.op("Add", x, cube), self.const(math.sqrt(2.0 / math.pi)))
        gate = self.op("Add", self.op("Tanh", inner), self.const(1.0))
        return self.op("Mul", self.op("Mul", x, gate), self.const(0.5))


def _embeddings(g: _Graph, config: dict[str, Any], takes_types: bool) -> str:
    words = g.op("Gather", g.weight("embeddings.word_embeddings.weight"), "input_ids")
    table = g.weight("embeddings.position_embeddings.weight")
    if config["model_type"] in ROBERTA_STYLE:
        pad = int(config.get("pad_token_id", 1))
        kept = g.op("Cast", g.op("Not", g.op("Equal", "input_ids", g.const(pad, np.int64))),
                    to=7)
        count = g.op("CumSum", kept, g.const(1, np.int64))
        positions = g.op("Add", g.op("Mul", count, kept), g.const(pad, np.int64))
    else:  # 0 .. tokens - 1, the same for every row
        length = g.op("Shape", "input_ids", start=1, end=2)
        positions = g.op("Range", g.const(0, np.int64),
                         g.op("Squeeze", length, g.const([0], np.int64)), g.const(1, np.int64))
    x = g.op("Add", words, g.op("Gather", table, positions))
    if takes_types:
        types = g.op("Gather", g.weight("embeddings.token_type_embeddings.weight"),
                     "token_type_ids")
        x = g.op("Add", x, types)
    return g.layer_norm(x, "embeddings.LayerNorm")


def _mask_bias(g: _Graph) -> str:
    """(batch, 1, 1, tokens): 0 where attended, float32's lowest where padded."""
    # two Unsqueezes, then Cast, Sub, Mul: the pattern onnxruntime's attention fusion matches
    rows = g.op("Unsqueeze", "attention_mask", g.const([1], np.int64))
    mask = g.op("Cast", g.op("Unsqueeze", rows, g.const([2], np.int64)), to=1)
    inverted = g.op("Sub", g.const(1.0), mask)
    return g.op("Mul", inverted, g.const(np.finfo(np.float32).min))


def _attention(
    g: _Graph, x: str, bias: str, prefix: str, heads: int, head_dim: int, fusable: bool
) -> tuple[str, str]:
    """Multi-head self-attention of one layer: (context before the output projection, probs).

    Not `fusable`: the query is scaled before its product with the keys, a form onnxruntime's
    attention fusion does not match, so the probabilities stay in the graph (the fused
    Attention operator does not output them; BM42 reads the last layer's).
    """
    split = g.const([0, 0, heads, head_dim], np.int64)

    def project(name: str, perm: list[int]) -> str:
        y = g.linear(x, f"{prefix}.attention.self.{name}")
        return g.op("Transpose", g.op("Reshape", y, split), perm=perm)

    q = project("query", [0, 2, 1, 3])
    k = project("key", [0, 2, 3, 1])
    v = project("value", [0, 2, 1, 3])
    if fusable:
        scores = g.op("Div", g.op("MatMul", q, k), g.const(math.sqrt(head_dim)))
    else:
        scores = g.op("MatMul", g.op("Mul", q, g.const(1.0 / math.sqrt(head_dim))), k)
    probs = g.op("Softmax", g.op("Add", scores, bias), axis=-1)
    context = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])
    return g.op("Reshape", context, g.const([0, 0, heads * head_dim], np.int64)), probs


def _layer(
    g: _Graph, x: str, bias: str, i: int, config: dict[str, Any], fusable: bool = True
) -> tuple[str, str]:
    """One post-LayerNorm transformer block: (its output, its attention probabilities)."""
    heads = int(config["num_attention_heads"])
    prefix = f"encoder.layer.{i}"
    head_dim = int(config["hidden_size"]) // heads
    context, probs = _attention(g, x, bias, prefix, heads, head_dim, fusable)
    attended = g.linear(context, f"{prefix}.attention.output.dense")
    x = g.layer_norm(g.op("Add", attended, x), f"{prefix}.attention.output.LayerNorm")
    hidden = g.activation(g.linear(x, f"{prefix}.intermediate.dense"),
                          config.get("hidden_act", "gelu"))
    out = g.linear(hidden, f"{prefix}.output.dense")
    return g.layer_norm(g.op("Add", out, x), f"{prefix}.output.LayerNorm"), probs


def _splade(g: _Graph, x: str, config: dict[str, Any]) -> str:
    """BERT's MLM head, then max over tokens of log(1 + relu(logits)), padding masked."""
    t = g.activation(g.linear(x, "cls.predictions.transform.dense"),
                     config.get("hidden_act", "gelu"))
    t = g.layer_norm(t, "cls.predictions.transform.LayerNorm")
    own = "cls.predictions.decoder.weight"
    tied = config.get("tie_word_embeddings", True) or not g.weights.has(own)
    decoder = "embeddings.word_embeddings.weight" if tied else own
    bias = ("cls.predictions.bias" if g.weights.has("cls.predictions.bias")
            else "cls.predictions.decoder.bias")
    logits = g.op("Add", g.op("MatMul", t, g.weight(decoder, transpose=True)), g.weight(bias))
    act = g.op("Log", g.op("Add", g.op("Relu", logits), g.const(1.0)))
    mask = g.op("Cast", g.op("Unsqueeze", "attention_mask", g.const([2], np.int64)), to=1)
    return g.op("ReduceMax", g.op("Mul", act, mask), axes=[1], keepdims=0, name="splade")


def _classifier(g: _Graph, x: str, config: dict[str, Any]) -> str:
    """Sequence-classification logits from the first token (BERT pooler or RoBERTa head)."""
    first = g.op("Gather", x, g.const(0, np.int64), axis=1)
    if config["model_type"] in ROBERTA_STYLE:
        pooled = g.op("Tanh", g.linear(first, "classifier.dense"))
        logits = g.linear(pooled, "classifier.out_proj")
    else:
        pooled = g.op("Tanh", g.linear(first, "pooler.dense"))
        logits = g.linear(pooled, "classifier")
    return g.op("Identity", logits, name="logits")


def num_labels(config: dict[str, Any]) -> int:
    """Labels of a classification head, as transformers counts them."""
    if isinstance(config.get("id2label"), dict):
        return len(config["id2label"])
    return int(config.get("num_labels", 2))


def build_graph(
    config: dict[str, Any],
    weights: _Weights,
    *,
    task: str = "embed",
    attentions: bool = False,
    takes_types: bool = True,
    dense: list[stack.DenseLayer] | None = None,
) -> Any:
    """The onnx.ModelProto of a BERT-family model, with fastrag's inputs and task outputs
    (embed: token vectors through the sentence-transformers `dense` layers, if any)."""
    from onnx import TensorProto, checker, helper

    g = _Graph(weights, float(config.get("layer_norm_eps", 1e-12)))
    x = _embeddings(g, config, takes_types)
    bias = _mask_bias(g)
    probs = ""
    layers = int(config["num_hidden_layers"])
    for i in range(layers):
        x, probs = _layer(g, x, bias, i, config, fusable=not (attentions and i == layers - 1))
    dims = ["batch", "tokens"]
    outputs = []
    if task == "embed":
        g.op("Identity", stack.onnx_forward(g, x, dense or []), name="last_hidden_state")
        dim = dense[-1].out_features if dense else int(config["hidden_size"])
        outputs.append(helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                                     [*dims, dim]))
        if attentions:  # (batch, heads, tokens, tokens) -> first row, mean over heads
            row = g.op("Gather", probs, g.const(0, np.int64), axis=2)
            g.op("ReduceMean", row, axes=[1], keepdims=0, name="cls_attention")
            outputs.append(helper.make_tensor_value_info("cls_attention", TensorProto.FLOAT, dims))
    elif task == "splade":
        _splade(g, x, config)
        outputs.append(helper.make_tensor_value_info(
            "splade", TensorProto.FLOAT, ["batch", int(config["vocab_size"])]))
    else:
        _classifier(g, x, config)
        outputs.append(helper.make_tensor_value_info(
            "logits", TensorProto.FLOAT, ["batch", num_labels(config)]))
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if takes_types else [])
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, dims) for n in names]
    graph = helper.make_graph(g.nodes, config.get("model_type", "bert"), inputs, outputs,
                              initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="fastrag.bert_onnx")
    checker.check_model(model)
    return model


def _special_id(folder: Path, tokenizer: Any, role: str) -> int | None:
    """The id of a special token (pad_token, eos_token) named in the tokenizer's files."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        try:
            entries = json.loads((folder / name).read_text(encoding="utf-8"))
        except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        token = entries.get(role) if isinstance(entries, dict) else None
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str) and tokenizer.token_to_id(token) is not None:
            return int(tokenizer.token_to_id(token))
    return None


def _window(folder: Path, config: dict[str, Any]) -> int:
    """Tokens the model takes: its position table (less RoBERTa's offset), and the
    tokenizer's model_max_length when that is smaller."""
    positions = int(config.get("max_position_embeddings") or 512)
    if config["model_type"] in ROBERTA_STYLE:
        positions -= int(config.get("pad_token_id", 1)) + 1
    try:
        tok = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError):
        tok = {}
    limit = tok.get("model_max_length") if isinstance(tok, dict) else None
    return min(positions, int(limit)) if isinstance(limit, int) and limit > 0 else positions


def build_bert_onnx(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    task: str = "embed",
    attentions: bool = False,
    settings: dict[str, Any] | None = None,
    tolerance: float = 1e-4,
) -> Path:
    """Writes the ONNX export of the BERT-family model in folder `source` to `out_dir`.

    The same folder `export_model` writes (model.onnx, tokenizer.json, fastrag_model.json),
    built from the safetensors weights with no torch. Raises `ExportError` naming the reason
    when the model is not one this builder handles (see `unsupported_reason`).
    """
    try:
        from tokenizers import Tokenizer
    except ImportError as e:  # a core dependency; only a broken install lacks it
        raise ExportError("tokenizers is missing: pip install tokenizers") from e
    if attentions and task != "embed":
        raise ValueError("attentions=True is for task='embed'")
    src, out = Path(source), Path(out_dir)
    reason = unsupported_reason(src, task)
    if reason is not None:
        raise ExportError(f"{src.name} cannot be built without torch: {reason}")
    try:
        import onnx
    except ImportError as e:
        raise ExportError(f"building an ONNX graph without torch needs onnx: {EXTRA}") from e
    config = _config(src)
    try:
        tokenizer = Tokenizer.from_file(str(src / "tokenizer.json"))
    except Exception as e:  # tokenizers raises its own exception type
        raise ExportError(f"{src / 'tokenizer.json'} is not a valid tokenizer: {e}") from e
    takes_types = int(config.get("type_vocab_size", 2) or 0) > 0
    pad_id = _special_id(src, tokenizer, "pad_token")
    eos_id = _special_id(src, tokenizer, "eos_token")
    if pad_id is None:
        pad_id = eos_id if eos_id is not None else int(config.get("pad_token_id") or 0)
    manifest = manifest_for(
        src, task, settings or {}, window=_window(src, config), decoder=False,
        attentions=attentions, architecture=config["model_type"],
        hidden_size=int(config["hidden_size"]), vocab_size=int(config["vocab_size"]),
        num_labels=num_labels(config) if task == "rerank" else None, pad_id=int(pad_id),
        eos_id=eos_id, token_type_ids=takes_types, builder="fastrag.bert_onnx",
    )
    dense = stack.for_export(src, task, manifest, settings or {})
    model = build_graph(config, _Weights(src), task=task, attentions=attentions,
                        takes_types=takes_types, dense=dense)
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    ids, mask, types = check_batch(manifest["vocab_size"], manifest["pad_id"])
    feeds = dict(zip(inputs, (ids, mask, types), strict=False))
    with staging(out) as tmp:
        onnx.save_model(model, str(tmp / "model.onnx"))
        try:  # onnxruntime loads and runs it: weights of the wrong shape fail here
            plain = _run_check(tmp / "model.onnx", feeds)
        except Exception as e:  # onnxruntime raises its own exception types
            raise ExportError(f"the ONNX graph of {src.name} does not run: {e}") from e
        if not all(np.isfinite(a).all() for a in plain):
            raise ExportError(f"the ONNX graph of {src.name} gives non-finite outputs")
        spec = SimpleNamespace(model_type=config["model_type"], hidden_size=config["hidden_size"],
                               num_attention_heads=config["num_attention_heads"])
        # the optimizer warns that the graph's producer is not "pytorch": true, and harmless
        quiet = logging.getLogger("onnxruntime.transformers.optimizer")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            manifest["fused"] = _fuse(tmp / "model.onnx", spec, feeds, plain, outputs, mask,
                                      tolerance, opt_level=0)
        finally:
            quiet.setLevel(level)
        manifest["inputs"], manifest["outputs"] = inputs, outputs
        manifest["fused_max_abs_diff"] = _max_diff(tmp / "model.onnx", feeds, plain, outputs, mask)
        manifest["export_max_abs_diff"] = None  # no PyTorch reference here: see the tests
        tokenizer.save(str(tmp / "tokenizer.json"))
        publish(tmp, out, manifest)
    log.info("built %s (%s) from its safetensors weights into %s", src, task, out)
    return out
