"""Text analysis for fastrag: tokenizers for English, Japanese and mixed corpora."""

from __future__ import annotations

from .analyzers import (
    Analyzer,
    AutoAnalyzer,
    BaseAnalyzer,
    BigramAnalyzer,
    EmptyDocumentWarning,
    EnglishAnalyzer,
    JapaneseAnalyzer,
    analyze_corpus,
    get_analyzer,
)
from .language import detect_language
from .stopwords import ENGLISH_STOPWORDS

__all__ = [
    "ENGLISH_STOPWORDS",
    "Analyzer",
    "AutoAnalyzer",
    "BaseAnalyzer",
    "BigramAnalyzer",
    "EmptyDocumentWarning",
    "EnglishAnalyzer",
    "JapaneseAnalyzer",
    "analyze_corpus",
    "detect_language",
    "get_analyzer",
]
