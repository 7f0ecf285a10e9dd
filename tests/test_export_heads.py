"""Checkpoints without the head a task needs are refused, and nothing reaches the cache.

transformers fills what a checkpoint lacks with random weights ("newly initialized"): a
cross-encoder export of a plain encoder, or a SPLADE export of a classifier, would be noise
that passes the export's own check and is cached. Tiny seeded BERTs saved with and without
their heads (tests/encoder_models.py) show that both builders refuse, naming the weights.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from encoder_models import build
from fastrag.encoders import CrossEncoder, SpladeEncoder, TextEncoder, export_model
from fastrag.encoders.bert_onnx import build_bert_onnx
from fastrag.encoders.export import ExportError
from fastrag.encoders.heads import check_loaded
from fastrag.encoders.onnx import load_manifest
from test_encoders import needs_minilm, needs_torch, offline  # noqa: F401 (autouse)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """head -> a tiny BERT saved with that head only ("base": no head at all)."""
    needs_torch()
    needs_minilm()
    root = tmp_path_factory.mktemp("heads")
    return {head: build("bert", root / head, head=head) for head in ("base", "mlm", "classifier")}


def nothing_written(cache: Path) -> bool:
    return not cache.exists() or not any(cache.rglob("*"))


#: (checkpoint, task, weights the message must name)
MISSING = [
    ("base", "rerank", ["classifier.bias", "classifier.weight"]),
    ("mlm", "rerank", ["bert.pooler.dense.weight", "classifier.weight"]),
    ("base", "splade", ["cls.predictions.transform.dense.weight", "cls.predictions.bias"]),
    ("classifier", "splade", ["cls.predictions.transform.LayerNorm.weight"]),
]


@pytest.mark.parametrize(("head", "task", "names"), MISSING)
def test_torch_export_refuses_missing_head(head, task, names, checkpoints, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(ExportError, match=f"has no trained .* for task '{task}'") as error:
        export_model(checkpoints[head], cache / "out", task=task)
    for name in names:
        assert name in str(error.value)
    assert nothing_written(cache)


def test_encoders_refuse_before_caching(checkpoints, tmp_path):
    """The path users take: CrossEncoder / SpladeEncoder on a plain encoder's folder."""
    with pytest.raises(ExportError, match=r"sequence-classification head.*classifier\.weight"):
        CrossEncoder(checkpoints["base"], cache_dir=tmp_path)
    with pytest.raises(ExportError, match=r"masked-LM head.*cls\.predictions"):
        SpladeEncoder(checkpoints["base"], cache_dir=tmp_path)
    assert nothing_written(tmp_path)


def test_trained_heads_still_export(checkpoints, tmp_path):
    """Not refused: each head for its own task, and embed of any checkpoint (a missing BERT
    pooler is not used by the token vectors)."""
    assert load_manifest(export_model(checkpoints["classifier"], tmp_path / "r", task="rerank"))
    assert load_manifest(export_model(checkpoints["mlm"], tmp_path / "s", task="splade"))
    encoder = TextEncoder(export_model(checkpoints["mlm"], tmp_path / "e"))
    assert encoder.encode(["lift"]).shape == (1, 32)


@pytest.mark.parametrize(("head", "task", "name"), [
    ("base", "rerank", "classifier.weight"),
    ("mlm", "rerank", "pooler.dense.weight"),
    ("base", "splade", "cls.predictions.transform.dense.weight"),
    ("classifier", "splade", "cls.predictions.transform.dense.weight"),
])
def test_torch_free_builder_refuses_missing_head(head, task, name, checkpoints, tmp_path):
    pytest.importorskip("onnx")
    cache = tmp_path / "cache"
    with pytest.raises(ExportError, match=f"no tensor '{name}'"):
        build_bert_onnx(checkpoints[head], cache / "out", task=task)
    assert nothing_written(cache)


def test_mismatched_shapes_are_refused_too(tmp_path):
    """transformers' mismatched_keys (a head of another shape, re-initialised) count too."""
    info = {"missing_keys": [], "mismatched_keys": [("classifier.weight", (2, 32), (1, 32))]}
    with pytest.raises(ExportError, match=r"1 weights at random \(classifier.weight\)"):
        check_loaded(tmp_path / "m", "rerank", info)
    check_loaded(tmp_path / "m", "embed", {"missing_keys": ["pooler.dense.bias"]})
    with pytest.raises(ExportError, match=re.escape("encoder.layer.0.output.dense.weight")):
        check_loaded(tmp_path / "m", "embed",
                     {"missing_keys": ["encoder.layer.0.output.dense.weight"]})
