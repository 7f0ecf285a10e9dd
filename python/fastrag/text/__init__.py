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
    ascii_english,
    get_analyzer,
    warn_empty_documents,
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
    "ascii_english",
    "detect_language",
    "get_analyzer",
    "warn_empty_documents",
]
