"""sentence-transformers stacks with Dense layers: exported whole, or refused by name.

Tiny seeded BERTs (tests/encoder_models.py) are wrapped in sentence-transformers stacks that
have Dense projections after pooling (one identity layer like GTR, two layers with Tanh like
LaBSE, a GELU layer with a residual, one stack without Normalize) and saved; both builders
(torch's `export_model` and the torch-free `build_bert_onnx`) must give the vectors of
`SentenceTransformer.encode`, with its dimension. What fastrag cannot reproduce is refused
with an ExportError naming the module and the model, and nothing is written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encoder_models import HIDDEN, build
from fastrag.encoders import TextEncoder, export_model
from fastrag.encoders.bert_onnx import build_bert_onnx
from fastrag.encoders.export import ExportError, weights_digest
from fastrag.encoders.onnx import load_manifest
from test_encoders import cosines, needs_minilm, needs_torch, offline  # noqa: F401 (autouse)

pytest.importorskip("sentence_transformers")
pytest.importorskip("onnx")

SENTENCES = [
    "Lift.",
    "the boundary layer in simple shear flow past a flat plate",
    "an experimental study of a wing in a propeller slipstream was made in order to determine "
    "the spanwise distribution of the lift increase due to slipstream",
    "heat transfer at hypersonic speeds",
]

#: name -> (pooling, [(out_features, activation, bias, residual)], Normalize at the end)
STACKS: dict[str, tuple[str, list[tuple[int, str, bool, bool]], bool]] = {
    "gtr-like": ("mean", [(16, "Identity", False, False)], True),
    "labse-like": ("cls", [(24, "Tanh", True, False), (8, "Identity", True, False)], True),
    "no-normalize": ("mean", [(12, "Identity", True, False)], False),
    "gelu-residual": ("lasttoken", [(HIDDEN, "GELU", True, True), (20, "ReLU", True, False)],
                      True),
}
BUILDERS = ("torch", "bert_onnx")


def save_stack(base: Path, out: Path, pooling: str, dense: list[tuple[int, str, bool, bool]],
               normalize: bool, seed: int = 0) -> Path:
    """A sentence-transformers folder: the tiny BERT `base`, Pooling, Dense layers, Normalize."""
    torch, _ = needs_torch()
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # sentence-transformers before 6
        from sentence_transformers import models  # type: ignore[no-redef]

    torch.manual_seed(seed)
    modules: list[Any] = [models.Transformer(str(base)), models.Pooling(HIDDEN, pooling)]
    size = HIDDEN
    for out_features, activation, bias, residual in dense:
        modules.append(models.Dense(
            size, out_features, bias=bias, activation_function=getattr(torch.nn, activation)(),
            use_residual=residual,
        ))
        size = out_features
    if normalize:
        modules.append(models.Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(out))
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    needs_torch()
    needs_minilm()
    return build("bert", tmp_path_factory.mktemp("base") / "bert")


@pytest.fixture(scope="module")
def stacks(base, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stacks")
    return {name: save_stack(base, root / name, *spec) for name, spec in STACKS.items()}


def reference(folder: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    return np.asarray(model.encode(texts, convert_to_numpy=True), dtype=np.float64)


def export(builder: str, source: Path, out: Path) -> Path:
    if builder == "torch":
        return export_model(source, out)
    return build_bert_onnx(source, out)


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("name", list(STACKS))
def test_stack_matches_sentence_transformers(name, builder, stacks, tmp_path):
    pooling, dense, normalize = STACKS[name]
    folder = export(builder, stacks[name], tmp_path / "out")
    manifest = load_manifest(folder)
    assert manifest["hidden_size"] == dense[-1][0]  # the last Dense layer's out_features
    assert manifest["transformer_hidden_size"] == HIDDEN
    assert [layer["out_features"] for layer in manifest["dense"]] == [d[0] for d in dense]
    assert manifest["normalize"] is normalize
    assert manifest["pooling"] == {"lasttoken": "last"}.get(pooling, pooling)
    encoder = TextEncoder(folder)
    got = encoder.encode(SENTENCES, batch_size=3)
    want = reference(stacks[name], SENTENCES)
    assert encoder.dim == want.shape[1] == dense[-1][0]
    assert got.shape == want.shape
    assert cosines(got, want).min() >= 0.9999
    # the same lengths too: unit vectors with Normalize, the model's own norms without it
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.linalg.norm(want, axis=1),
                               rtol=1e-4)
    if not normalize:
        assert np.ptp(np.linalg.norm(want, axis=1)) > 1e-3  # the test could see a normalising


def test_resolve_exports_the_stack(stacks, tmp_path):
    """The path users take: a sentence-transformers folder given to TextEncoder."""
    encoder = TextEncoder(stacks["labse-like"], cache_dir=tmp_path)
    want = reference(stacks["labse-like"], SENTENCES)
    assert encoder.dim == 8
    assert cosines(encoder.encode(SENTENCES), want).min() >= 0.9999


def test_builders_agree_on_the_fingerprint(stacks, tmp_path):
    a = load_manifest(export("torch", stacks["gtr-like"], tmp_path / "a"))
    b = load_manifest(export("bert_onnx", stacks["gtr-like"], tmp_path / "b"))
    assert a["fingerprint"] == b["fingerprint"]


def test_fingerprint_covers_dense_weights(base, stacks, tmp_path):
    """Other Dense weights, same transformer: other vectors, so another fingerprint; and a
    model without Dense layers keeps the digest of its transformer's files alone."""
    pooling, dense, normalize = STACKS["gtr-like"]
    other = save_stack(base, tmp_path / "other", pooling, dense, normalize, seed=1)
    one = load_manifest(export("bert_onnx", stacks["gtr-like"], tmp_path / "one"))
    two = load_manifest(export("bert_onnx", other, tmp_path / "two"))
    assert weights_digest(stacks["gtr-like"]) == weights_digest(other)
    assert one["weights_sha256"] != two["weights_sha256"]
    assert one["fingerprint"] != two["fingerprint"]
    plain = load_manifest(export("bert_onnx", base, tmp_path / "plain"))
    assert plain["weights_sha256"] == weights_digest(base)
    assert "dense" not in plain


def copy_with(source: Path, out: Path, edit: Any) -> Path:
    """A copy of `source` with edit(folder) applied to its files."""
    shutil.copytree(source, out)
    edit(out)
    return out


def edit_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def add_module(folder: Path, kind: str) -> None:
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(2, {"idx": 9, "name": "9", "path": "9_Extra", "type": kind})
    (folder / "9_Extra").mkdir()
    (folder / "9_Extra" / "config.json").write_text("{}")
    (folder / "modules.json").write_text(json.dumps(modules))


def swap_last_two(folder: Path) -> None:
    modules = json.loads((folder / "modules.json").read_text())
    modules[-2], modules[-1] = modules[-1], modules[-2]
    (folder / "modules.json").write_text(json.dumps(modules))


REFUSED = {
    "tanh after mean pooling": (
        "gtr-like",
        lambda f: edit_json(f / "2_Dense" / "config.json",
                            activation_function="torch.nn.modules.activation.Tanh"),
        r"Dense'.*\(2_Dense\) applies tanh after mean pooling",
    ),
    "unknown module": (
        "gtr-like",
        lambda f: add_module(f, "sentence_transformers.models.LayerNorm"),
        r"module 'sentence_transformers.models.LayerNorm' \(9_Extra\) is not supported",
    ),
    "max pooling": (
        "labse-like",
        lambda f: edit_json(f / "1_Pooling" / "config.json", pooling_mode="max"),
        r"Pooling'.*pools with max",
    ),
    "two poolings concatenated": (
        "labse-like",
        lambda f: edit_json(f / "1_Pooling" / "config.json", pooling_mode=["cls", "mean"]),
        "pools with cls\\+mean",
    ),
    "legacy max flag": (
        "labse-like",
        lambda f: (f / "1_Pooling" / "config.json").write_text(json.dumps(
            {"word_embedding_dimension": HIDDEN, "pooling_mode_max_tokens": True})),
        "pools with max",
    ),
    "Dense after Normalize": ("gtr-like", swap_last_two, r"comes after Normalize"),
    "untrusted activation": (
        "labse-like",
        lambda f: edit_json(f / "2_Dense" / "config.json", activation_function="my.Swish"),
        r"has activation 'my.Swish'",
    ),
    "sizes that do not chain": (
        "labse-like",
        lambda f: edit_json(f / "2_Dense" / "config.json", in_features=HIDDEN + 1),
        r"no linear.weight of shape \(24, 33\)",
    ),
}


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_by_name_and_nothing_written(case, builder, stacks, tmp_path):
    name, edit, message = REFUSED[case]
    source = copy_with(stacks[name], tmp_path / "src" / "model-x", edit)
    cache = tmp_path / "cache"
    with pytest.raises(ExportError, match=message) as error:
        export(builder, source, cache / "out")
    assert str(error.value).startswith("model-x: sentence-transformers module")
    assert not cache.exists() or not any(cache.iterdir())


def test_legacy_pooling_flags_are_read(stacks, tmp_path):
    """Pooling/config.json from sentence-transformers before 5 (pooling_mode_* flags)."""
    def legacy(folder: Path) -> None:
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(
            {"word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": True,
             "pooling_mode_mean_tokens": False}))

    source = copy_with(stacks["labse-like"], tmp_path / "legacy", legacy)
    folder = build_bert_onnx(source, tmp_path / "out")
    assert load_manifest(folder)["pooling"] == "cls"
    got = TextEncoder(folder).encode(SENTENCES)
    assert cosines(got, reference(stacks["labse-like"], SENTENCES)).min() >= 0.9999


def test_dense_weights_in_a_bin_file(stacks, tmp_path):
    """Older sentence-transformers folders keep Dense weights in pytorch_model.bin."""
    torch, _ = needs_torch()
    from safetensors.torch import load_file

    def to_bin(folder: Path) -> None:
        for dense in ("2_Dense", "3_Dense"):
            tensors = load_file(str(folder / dense / "model.safetensors"))
            torch.save(tensors, folder / dense / "pytorch_model.bin")
            (folder / dense / "model.safetensors").unlink()

    source = copy_with(stacks["labse-like"], tmp_path / "bin", to_bin)
    got = TextEncoder(export_model(source, tmp_path / "out")).encode(SENTENCES)
    assert cosines(got, reference(stacks["labse-like"], SENTENCES)).min() >= 0.9999
