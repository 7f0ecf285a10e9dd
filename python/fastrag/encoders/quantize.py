"""Static int8 (QDQ) quantisation of an exported model, calibrated on in-domain texts.

Dynamic int8 (`fastrag.encoders.export.quantize_int8`) scales each batch's activations by
that batch's own range: a text embeds slightly differently in another batch, and attention
stays in float. Static quantisation fixes every activation's scale once, from a few hundred
calibration texts run through the float model, and writes QuantizeLinear / DequantizeLinear
pairs around the matrix products; onnxruntime runs them as int8 products (QLinearMatMul).

- Fused attention (onnxruntime's ``Attention`` contrib operator, which static quantisation
  cannot enter) is first written out again as plain operators, so that the query / key / value
  projection and the two products inside attention (queries x keys, probabilities x values)
  run in int8 too. Softmax, LayerNorm and GELU stay in float.
- Down projections (a weight with more rows than columns: the feed-forward output, whose
  input holds the GELU's outliers) stay in float: quantising them costs most of the accuracy.
- Weights are int8 per output channel (symmetric); activations uint8 per tensor.

Every scale is a constant of the graph, so a text's vector does not depend on the batch it is
encoded in (see the tests: a text alone and in a batch give identical vectors).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastrag.encoders.errors import ExportError

log = logging.getLogger(__name__)

#: calibration texts used at most (more cost time and memory for little change)
MAX_CALIBRATION = 512
#: fewer texts than this are refused: the ranges would not be representative
MIN_CALIBRATION = 8
#: texts per calibration batch
CALIBRATION_BATCH = 16
STATIC_FILE = "model_static.onnx"
STATIC_INFO = "model_static.json"


def calibration_digest(texts: Sequence[Any]) -> str:
    """sha256 of the calibration texts (what a cached static model was calibrated on)."""
    h = hashlib.sha256()
    for t in texts:
        blob = json.dumps(t, ensure_ascii=False).encode()
        h.update(len(blob).to_bytes(8, "little"))
        h.update(blob)
    return h.hexdigest()


def check_calibration(texts: Any) -> list[Any]:
    """The calibration texts as a list (at most MAX_CALIBRATION), with a clear error for a
    string, non-string items or too few texts."""
    if isinstance(texts, (str, bytes)):
        raise TypeError("calibration must be a list of texts, not one string")
    try:
        items = list(texts)
    except TypeError as e:
        raise TypeError(f"calibration must be a list of texts, got {type(texts).__name__}") from e
    for t in items:
        pair = isinstance(t, tuple) and len(t) == 2 and all(isinstance(x, str) for x in t)
        if not (isinstance(t, str) or pair):
            raise TypeError(f"calibration texts must be str, got {type(t).__name__}")
    items = [t for t in items if not isinstance(t, str) or t.strip()]
    if len(items) < MIN_CALIBRATION:
        raise ValueError(
            f"static quantisation needs at least {MIN_CALIBRATION} non-empty calibration texts "
            f"(a few hundred in-domain ones are best), got {len(items)}"
        )
    return items[:MAX_CALIBRATION]


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def unfuse_attention(model: Any) -> int:
    """Rewrites onnxruntime's fused ``Attention`` nodes of `model` (an onnx.ModelProto, in
    place) into plain operators; returns how many were rewritten.

    The padding mask is taken from the graph input ``attention_mask`` (right padding, 1 for a
    token): 0 where attended, float32's lowest where padded, added to the scores. Nodes with
    options the rewrite does not reproduce (past state, causal mask, uneven q/k/v sizes) are
    left fused.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    if "attention_mask" not in {i.name for i in graph.input}:
        return 0
    inits = {i.name: i for i in graph.initializer}
    new_nodes: list[Any] = []
    new_inits: list[Any] = []
    bias_name = "fastrag_unfused/mask_bias"
    count = 0

    def const(name: str, value: Any, dtype: Any = np.float32) -> str:
        new_inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    for node in graph.node:
        plain = (
            node.op_type == "Attention"
            and node.domain == "com.microsoft"
            and len(node.input) >= 3
            and len(node.output) == 1
            and node.input[1] in inits
            and not _attr(node, "unidirectional", 0)
            and _attr(node, "qkv_hidden_sizes", None) is None
            and _attr(node, "past_present_share_buffer", 0) == 0
            and all(not name for name in node.input[4:])
        )
        if not plain:
            new_nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        hidden = weight.shape[1] // 3
        heads = int(_attr(node, "num_heads", 0))
        if weight.ndim != 2 or weight.shape[1] != 3 * hidden or heads < 1 or hidden % heads:
            new_nodes.append(node)
            continue
        head_dim = hidden // heads
        scale = float(_attr(node, "scale", 0.0)) or 1.0 / math.sqrt(head_dim)
        p = f"fastrag_unfused/{count}/"
        if count == 0:  # the additive padding mask, shared by every layer
            rows = helper.make_node(
                "Unsqueeze", ["attention_mask", const(p + "axes12", [1, 2], np.int64)],
                [p + "mask4"],
            )
            cast = helper.make_node("Cast", [p + "mask4"], [p + "maskf"], to=TensorProto.FLOAT)
            inv = helper.make_node("Sub", [const(p + "one", 1.0), p + "maskf"], [p + "inv"])
            low = const(p + "low", np.finfo(np.float32).min)
            new_nodes += [rows, cast, inv, helper.make_node("Mul", [p + "inv", low], [bias_name])]
        qkv = [p + "q", p + "k", p + "v"]
        shape = const(p + "heads", [0, 0, heads, head_dim], np.int64)
        new_nodes += [
            helper.make_node("MatMul", [node.input[0], node.input[1]], [p + "qkv_mm"],
                             name=p + "qkv"),
            helper.make_node("Add", [p + "qkv_mm", node.input[2]], [p + "qkv_b"]),
            helper.make_node("Split", [p + "qkv_b", const(p + "sizes", [hidden] * 3, np.int64)],
                             qkv, axis=-1),
        ]
        perms = ([0, 2, 1, 3], [0, 2, 3, 1], [0, 2, 1, 3])
        for name, perm in zip(qkv, perms, strict=True):
            new_nodes += [
                helper.make_node("Reshape", [name, shape], [name + "_r"]),
                helper.make_node("Transpose", [name + "_r"], [name + "_t"], perm=perm),
            ]
        new_nodes += [
            helper.make_node("MatMul", [p + "q_t", p + "k_t"], [p + "scores"], name=p + "qk"),
            helper.make_node("Mul", [p + "scores", const(p + "scale", scale)], [p + "scaled"]),
            helper.make_node("Add", [p + "scaled", bias_name], [p + "masked"]),
            helper.make_node("Softmax", [p + "masked"], [p + "probs"], axis=-1),
            helper.make_node("MatMul", [p + "probs", p + "v_t"], [p + "ctx"], name=p + "pv"),
            helper.make_node("Transpose", [p + "ctx"], [p + "ctx_t"], perm=[0, 2, 1, 3]),
            helper.make_node(
                "Reshape", [p + "ctx_t", const(p + "merge", [0, 0, hidden], np.int64)],
                [node.output[0]],
            ),
        ]
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(new_nodes)
        graph.initializer.extend(new_inits)
    return count


def _typed(model: Any) -> Any:
    """`model` with the types of its intermediate tensors inferred (onnxruntime's symbolic
    inference knows its contrib operators; onnx's does not): the quantizer leaves a tensor
    of unknown type in float."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        return SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception as e:  # an operator it does not know: fall back to onnx's inference
        log.info("symbolic shape inference failed (%s); using onnx's", e)
        from onnx import shape_inference

        return shape_inference.infer_shapes(model)


def _down_projections(model: Any) -> list[str]:
    """Names of the MatMul nodes whose weight has more rows than columns (kept in float)."""
    inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        dims = inits.get(n.input[1]) if n.op_type == "MatMul" and len(n.input) == 2 else None
        if dims is not None and len(dims) == 2 and dims[0] > dims[1]:
            out.append(n.name)
    return out


def _name_nodes(model: Any) -> None:
    """Gives every unnamed node a unique name (the quantizer selects nodes by name)."""
    seen: set[str] = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"fastrag_node_{i}_{n.op_type}"
            while name in seen:
                name += "_"
            n.name = name
            seen.add(name)


def quantize_static_int8(
    model_path: Path,
    out_path: Path,
    feeds: Iterable[dict[str, np.ndarray]],
    *,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Static QDQ int8 quantisation of `model_path`, calibrated on `feeds` (the inputs of a
    few batches of in-domain texts), written atomically to `out_path`.

    `info` (what the calibration was: digest, count) is saved beside it as JSON, with what
    was quantised; that dict is returned.
    """
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
    except ImportError as e:  # onnxruntime.quantization imports the `onnx` package
        raise ExportError("int8 quantisation needs the onnx package: pip install onnx") from e

    batches = list(feeds)
    if not batches:
        raise ValueError("static quantisation needs calibration batches")

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # untyped base class
        def __init__(self) -> None:
            self._it: Iterator[dict[str, np.ndarray]] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = iter(batches)

    model = onnx.load(str(model_path))
    unfused = unfuse_attention(model)
    _name_nodes(model)
    model = _typed(model)
    keep_float = _down_projections(model)
    quantized = sum(1 for n in model.graph.node if n.op_type == "MatMul") - len(keep_float)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".static.") as work:
        plain = Path(work) / "plain.onnx"
        onnx.save_model(model, str(plain))
        del model
        target = Path(work) / "static.onnx"
        quiet = logging.getLogger()  # the quantizer logs advice on the root logger
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            quantize_static(
                str(plain),
                str(target),
                Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["MatMul"],
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=keep_float,
                extra_options={
                    "WeightSymmetric": True,
                    "ActivationSymmetric": False,
                    # fused contrib ops have no inferred output types: say they are float
                    "DefaultTensorType": onnx.TensorProto.FLOAT,
                    # not "CalibMaxIntermediateOutputs": onnxruntime 1.32's MinMax calibrator
                    # drops (does not merge) what it collected at each flush; it keeps only
                    # a min and a max per tensor and batch anyway
                },
            )
        finally:
            quiet.setLevel(level)
        meta = {
            **(info or {}),
            "format": "qdq-int8-static",
            "unfused_attention": unfused,
            "int8_matmuls": quantized,
            "float_matmuls": len(keep_float),
            "calibration_batches": len(batches),
        }
        (Path(work) / "info.json").write_text(json.dumps(meta, indent=2) + "\n")
        mode = 0o666 & ~_umask()
        target.chmod(mode)
        os.replace(target, out_path)
        info_path = out_path.with_name(STATIC_INFO)
        os.replace(Path(work) / "info.json", info_path)
        info_path.chmod(mode)
    log.info("static int8 model written to %s (%s)", out_path, meta)
    return meta


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def read_info(folder: Path) -> dict[str, Any] | None:
    """The saved calibration facts of a folder's static model, or None (absent or unreadable)."""
    try:
        info = json.loads((folder / STATIC_INFO).read_text(encoding="utf-8"))
    except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) else None
