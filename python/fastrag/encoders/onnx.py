"""Running an exported model: an onnxruntime session, a fast tokenizer, length-bucketed batches."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from fastrag.encoders import quantize as static_int8
from fastrag.encoders.base import TruncationWarning
from fastrag.encoders.export import MANIFEST, quantize_int8
from fastrag.text import ja_wordpiece

log = logging.getLogger(__name__)

QUANTIZATIONS = (None, "int8", "static")


class ModelFormatError(ValueError):
    """A model folder is incomplete, or its ONNX file is not what fastrag exported."""


_PACKAGE = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=512)
def _library_file(filename: str) -> bool:
    """Whether `filename` is fastrag's library code, whose frames a warning skips.

    The front ends (``fastrag/cli*.py``, ``fastrag/serve/``) are callers like user code:
    a warning met under ``fastrag index`` names the CLI's line, not click's code that
    called the command.
    """
    try:
        rel = Path(filename).resolve().relative_to(_PACKAGE)
    except (ValueError, OSError):
        return False
    front_end = rel.parts[0] == "serve" or (len(rel.parts) == 1 and rel.name.startswith("cli"))
    return not front_end


def caller_level() -> int:
    """The `stacklevel` that points a warning at the code that called fastrag: the first
    frame outside the library (user code, or fastrag's own command line or service)."""
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and _library_file(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    return level


def load_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of an exported folder, with a clear error for what is missing."""
    missing = [n for n in (MANIFEST, "model.onnx", "tokenizer.json") if not (folder / n).is_file()]
    if missing:
        raise ModelFormatError(
            f"{folder} is not an exported fastrag model: missing {', '.join(missing)}. "
            "Pass a Hugging Face model folder or id and fastrag exports it, or run "
            "fastrag.encoders.export_model()"
        )
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"{folder / MANIFEST} is not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != "fastrag-onnx":
        raise ModelFormatError(f"{folder / MANIFEST} is not a fastrag model manifest")
    return manifest


@dataclass
class Batch:
    """One forward pass: which texts (positions in the caller's list), their lengths, outputs."""

    rows: np.ndarray  # positions of these texts in the input list
    lengths: np.ndarray  # tokens per text (after truncation)
    mask: np.ndarray  # (batch, tokens) int64
    outputs: dict[str, np.ndarray]
    encodings: list[Any]  # tokenizers.Encoding per row (ids, offsets)


def default_providers() -> list[str]:
    """CUDA first when onnxruntime-gpu is installed and a GPU is present, then the CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = [p for p in ("CUDAExecutionProvider",) if p in available]
    return [*wanted, "CPUExecutionProvider"]


class OnnxModel:
    """An exported model folder, loaded: session + tokenizer + manifest.

    Args:
        folder: an exported folder (see `fastrag.encoders.export`).
        quantize: None (fp32), "int8" (dynamic int8; made once from model.onnx and kept
            beside it as model_int8.onnx) or "static" (static int8 calibrated on
            `calibration`, kept beside it as model_static.onnx; see
            `fastrag.encoders.quantize`).
        calibration: for quantize="static", a few hundred in-domain texts (the first
            512 are used). A model_static.onnx calibrated on the same texts is reused; with
            None, the folder's model_static.onnx is used whatever it was calibrated on.
        threads: onnxruntime intra-op threads (0: onnxruntime's default, one per core).
        providers: onnxruntime execution providers (default: CUDA when present, then CPU).
        max_length: a shorter window than the model's.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        quantize: str | None = None,
        threads: int = 0,
        providers: Sequence[str] | None = None,
        max_length: int | None = None,
        calibration: Sequence[Any] | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        if quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize must be None, 'int8' or 'static', got {quantize!r}")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ValueError(f"threads must be an int >= 0, got {threads!r}")
        if calibration is not None and quantize != "static":
            raise ValueError("calibration= is for quantize='static'")
        texts = None if calibration is None else static_int8.check_calibration(calibration)
        self.folder = Path(folder)
        self.manifest = load_manifest(self.folder)
        self.quantize = quantize
        self._threads = threads
        self._providers = list(providers or default_providers())
        path = self.folder / "model.onnx"
        if quantize == "int8":
            q = self.folder / "model_int8.onnx"
            path = q if q.is_file() else quantize_int8(path, q)
        try:
            self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        except Exception as e:
            raise ModelFormatError(f"{self.folder / 'tokenizer.json'} is not valid: {e}") from e
        splitter = self.manifest.get("word_splitter")
        if splitter is not None:  # a Japanese BERT: MeCab words, then the WordPiece model
            try:
                ja_wordpiece.attach(self.tokenizer, splitter)
            except ValueError as e:
                raise ModelFormatError(f"{self.folder / MANIFEST}: {e}") from e
        window = int(self.manifest["max_length"])
        if max_length is not None:
            if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
                raise ValueError(f"max_length must be an int >= 2, got {max_length!r}")
            window = min(window, max_length)
        self.max_length = window
        self.tokenizer.no_padding()
        appends = self.manifest.get("append_eos") and self.manifest.get("eos_id") is not None
        eos_room = 1 if appends else 0
        self.tokenizer.enable_truncation(window - eos_room)
        self.pad_id = int(self.manifest["pad_id"])
        self.static_info: dict[str, Any] | None = None
        if quantize == "static":
            path = self._static_model(path, texts)
        self.session = self._session(path)
        self._check_signature(path)

    def _session(self, path: Path) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            return ort.InferenceSession(str(path), options, providers=self._providers)
        except Exception as e:  # onnxruntime raises its own exception types
            raise ModelFormatError(f"{path} could not be loaded by onnxruntime: {e}") from e

    def _static_model(self, fp32: Path, texts: list[Any] | None) -> Path:
        """The folder's static int8 model, made from `texts` when it is missing or was
        calibrated on other texts."""
        target = self.folder / static_int8.STATIC_FILE
        info = static_int8.read_info(self.folder)
        digest = None if texts is None else static_int8.calibration_digest(texts)
        if target.is_file() and (digest is None or (info or {}).get("calibration") == digest):
            self.static_info = info
            return target
        if texts is None:
            raise ValueError(
                f"{self.folder} has no static int8 model yet: quantize='static' needs "
                "calibration texts the first time (calibration=[...], a few hundred "
                "in-domain texts such as the collection's documents)"
            )
        self._threads, wanted = 0, self._threads
        try:  # calibration runs the float model: all cores
            session = self._session(fp32)
        finally:
            self._threads = wanted
        self.session = session
        self._check_signature(fp32)
        feeds = [feed for _, _, _, feed in self._batches(
            self._rows(texts), batch_size=static_int8.CALIBRATION_BATCH
        )]
        del self.session, session
        self.static_info = static_int8.quantize_static_int8(
            fp32, target, feeds, info={"calibration": digest, "calibration_texts": len(texts)}
        )
        return target

    def _rows(self, texts: Sequence[Any]) -> list[tuple[list[int], Any]]:
        with warnings.catch_warnings():  # calibration texts may be long: truncation is fine
            warnings.simplefilter("ignore", TruncationWarning)
            encodings, token_ids = self.tokenize(texts)
        return [(ids, enc.type_ids) for ids, enc in zip(token_ids, encodings, strict=True)]

    def _check_signature(self, path: Path) -> None:
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        want_in, want_out = self.manifest.get("inputs", []), self.manifest.get("outputs", [])
        if inputs != want_in or outputs != want_out:
            raise ModelFormatError(
                f"{path} has inputs {inputs} and outputs {outputs}, but its manifest says "
                f"{want_in} -> {want_out}: the folder holds a model of another kind; "
                "export it again"
            )
        self.input_names = inputs
        self.output_names = outputs

    @property
    def task(self) -> str:
        return str(self.manifest["task"])

    def tokenize(self, texts: Sequence[Any]) -> tuple[list[Any], list[list[int]]]:
        """(encodings with offsets, token ids per text), truncated to the window.

        Items are str, or (str, str) pairs for cross-encoders. Decoder embedders that pool
        the last token get the end-of-sequence token appended (inside the window). Warns how
        many texts were cut: truncation is never silent.
        """
        encodings = self.tokenizer.encode_batch(list(texts))
        eos = self.manifest.get("eos_id") if self.manifest.get("append_eos") else None
        ids: list[list[int]] = []
        for enc in encodings:
            row = enc.ids
            if eos is not None and (not row or row[-1] != eos):
                row = [*row[: self.max_length - 1], int(eos)]
            ids.append(row)
        cut = sum(1 for enc in encodings if enc.overflowing)
        if cut:
            warnings.warn(
                f"{cut} of {len(encodings)} texts were longer than the model's window of "
                f"{self.max_length} tokens and were truncated",
                TruncationWarning,
                stacklevel=caller_level(),
            )
        return encodings, ids

    def run(
        self,
        texts: Sequence[Any],
        *,
        batch_size: int = 32,
        outputs: Sequence[str] | None = None,
    ) -> Iterator[Batch]:
        """Forward passes over `texts`, shortest first, each batch padded to its longest text.

        Right padding for every architecture: decoders then keep their position ids, and
        last-token pooling reads position length - 1 of each row.
        """
        encodings, token_ids = self.tokenize(texts)
        rows = [(ids, enc.type_ids) for ids, enc in zip(token_ids, encodings, strict=True)]
        for batch, lengths, mask, result in self.run_ids(
            rows, batch_size=batch_size, outputs=outputs
        ):
            yield Batch(
                rows=batch,
                lengths=lengths,
                mask=mask,
                outputs=result,
                encodings=[encodings[r] for r in batch],
            )

    def run_ids(
        self,
        rows: Sequence[tuple[Sequence[int], Sequence[int] | None]],
        *,
        batch_size: int = 32,
        outputs: Sequence[str] | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
        """Forward passes over rows of token ids (with their token type ids, or None), shortest
        first, each batch right-padded to its longest row.

        Yields (row indices, their lengths, the attention mask, outputs by name) per batch.
        """
        names = list(outputs or self.output_names)
        for batch, lengths, mask, feeds in self._batches(rows, batch_size=batch_size):
            result = self.session.run(names, feeds)
            yield batch, lengths, mask, dict(zip(names, result, strict=True))

    def _batches(
        self,
        rows: Sequence[tuple[Sequence[int], Sequence[int] | None]],
        *,
        batch_size: int,
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
        """(row indices, lengths, attention mask, the session's inputs) per batch, shortest
        rows first, each batch right-padded to its longest row."""
        lengths = np.fromiter((len(ids) for ids, _ in rows), dtype=np.int64, count=len(rows))
        order = np.argsort(lengths, kind="stable")
        with_types = "token_type_ids" in self.input_names
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = int(lengths[batch].max())
            ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            types = np.zeros((len(batch), width), dtype=np.int64)
            for j, r in enumerate(batch):
                n = int(lengths[r])
                row_ids, row_types = rows[r]
                ids[j, :n] = row_ids
                mask[j, :n] = 1
                if with_types and row_types is not None:
                    row_types = row_types[:n]  # an appended EOS has no type id of its own
                    types[j, : len(row_types)] = row_types
            feeds = {"input_ids": ids, "attention_mask": mask}
            if with_types:
                feeds["token_type_ids"] = types
            yield batch, lengths[batch], mask, feeds
