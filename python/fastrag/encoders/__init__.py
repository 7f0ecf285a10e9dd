"""Text encoders: ONNX exports of Hugging Face models run with onnxruntime, static (model2vec)
models run in numpy, or a remote API."""

from __future__ import annotations

from fastrag.encoders.base import Encoder, TruncationWarning, matryoshka, normalize
from fastrag.encoders.bm42_index import BM42Index
from fastrag.encoders.errors import ExportError
from fastrag.encoders.export import export_model
from fastrag.encoders.late import LateChunker, SkippedChunkWarning
from fastrag.encoders.models import CrossEncoder, SpladeEncoder, TextEncoder, TokenVectors, pool
from fastrag.encoders.onnx import ModelFormatError, OnnxModel
from fastrag.encoders.registry import MODELS, ModelSpec, find_spec, known_models
from fastrag.encoders.remote import RemoteEncoder, RemoteEncoderError
from fastrag.encoders.resolve import cache_root, resolve_model
from fastrag.encoders.splade_index import SpladeIndex
from fastrag.encoders.static import StaticEncoder, distill_static, is_static_model

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
    "StaticEncoder",
    "TextEncoder",
    "TokenVectors",
    "TruncationWarning",
    "cache_root",
    "distill_static",
    "export_model",
    "find_spec",
    "is_static_model",
    "known_models",
    "matryoshka",
    "normalize",
    "pool",
    "resolve_model",
]
