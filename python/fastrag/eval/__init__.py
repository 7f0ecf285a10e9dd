"""Evaluation: BEIR-layout datasets, ranx metrics and a method runner."""

from fastrag.eval.datasets import Dataset, load_beir
from fastrag.eval.metrics import DEFAULT_METRICS, evaluate
from fastrag.eval.runner import METHODS, EvalResult, evaluate_method, register_method

__all__ = [
    "DEFAULT_METRICS",
    "METHODS",
    "Dataset",
    "EvalResult",
    "evaluate",
    "evaluate_method",
    "load_beir",
    "register_method",
]
