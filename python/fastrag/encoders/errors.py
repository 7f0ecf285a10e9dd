"""The error of the export modules (`export`, `bert_onnx`, `stack`), in a module of its own so
that each of them can raise it without importing the others."""

from __future__ import annotations


class ExportError(RuntimeError):
    """A model could not be exported (missing extra, unsupported architecture, failed check)."""
