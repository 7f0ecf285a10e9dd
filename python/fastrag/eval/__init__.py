"""Evaluation: BEIR-layout datasets, ranx metrics, a method runner, noise and reports."""

from fastrag.eval import late as _late  # noqa: F401  (registers late)
from fastrag.eval import learned as _learned  # noqa: F401  (registers splade and bm42)
from fastrag.eval.datasets import Dataset, load_beir
from fastrag.eval.metrics import DEFAULT_METRICS, evaluate
from fastrag.eval.noise import KINDS, NoisyDataset, inject
from fastrag.eval.runner import (
    MATRYOSHKA_METHODS,
    METHODS,
    EvalResult,
    NoiseEvalResult,
    evaluate_method,
    evaluate_noise,
    outranking,
    register_method,
    run_method,
)

__all__ = [
    "DEFAULT_METRICS",
    "KINDS",
    "MATRYOSHKA_METHODS",
    "METHODS",
    "Dataset",
    "EvalResult",
    "NoiseEvalResult",
    "NoisyDataset",
    "evaluate",
    "evaluate_method",
    "evaluate_noise",
    "inject",
    "load_beir",
    "outranking",
    "register_method",
    "run_method",
]
