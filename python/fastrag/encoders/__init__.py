"""Text encoders: ONNX exports of Hugging Face models run with onnxruntime, or a remote API."""

from __future__ import annotations

from fastrag.encoders.base import Encoder, TruncationWarning, matryoshka, normalize
from fastrag.encoders.bm42_index import BM42Index
from fastrag.encoders.export import ExportError, export_model
from fastrag.encoders.late import LateChunker, SkippedChunkWarning
from fastrag.encoders.models import CrossEncoder, SpladeEncoder, TextEncoder, TokenVectors, pool
from fastrag.encoders.onnx import ModelFormatError, OnnxModel
from fastrag.encoders.registry import MODELS, ModelSpec, find_spec, known_models
from fastrag.encoders.remote import RemoteEncoder, RemoteEncoderError
from fastrag.encoders.resolve import cache_root, resolve_model
from fastrag.encoders.splade_index import SpladeIndex

__all__ = [
    "MODELS",
    "BM42Index",
    "CrossEncoder",
    "Encoder",
    "ExportError",
    "LateChunker",
    "ModelFormatError",
    "ModelSpec",
    "OnnxModel",
    "RemoteEncoder",
    "RemoteEncoderError",
    "SkippedChunkWarning",
    "SpladeEncoder",
    "SpladeIndex",
    "TextEncoder",
    "TokenVectors",
    "TruncationWarning",
    "cache_root",
    "export_model",
    "find_spec",
    "known_models",
    "matryoshka",
    "normalize",
    "pool",
    "resolve_model",
]
