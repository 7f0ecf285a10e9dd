"""BM42 on the impact index: each document word weighted by the [CLS] attention of a
`fastrag.TextEncoder` exported with attentions (Qdrant's recipe); query words weigh their idf.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from fastrag._core import IndexFormatError
from fastrag.encoders.models import TextEncoder, TokenVectors
from fastrag.index.base import as_batch, check_int
from fastrag.index.csr import pairs_csr, special_ids, text_list, warn_empty
from fastrag.index.impact import ImpactIndex
from fastrag.index.results import DocId, SearchResults


class BM42Index(ImpactIndex):
    """BM42 (Qdrant): BM25's term frequency replaced by a transformer's attention.

    A document word weighs the attention that the [CLS] token pays to it in the last layer
    (averaged over heads; `TextEncoder(attentions=True).token_vectors`): WordPiece continuation
    pieces ("##...") are merged into their word with their attention summed; special tokens,
    stopwords and punctuation-only words are dropped; words are lowercased and stemmed; a word
    that occurs twice keeps its largest weight. A query is tokenized the same way (no model
    run); each distinct word weighs its idf over the indexed documents,
    ln((N - df + 0.5) / (df + 0.5) + 1), computed at query time.

    >>> index = BM42Index()                  # all-MiniLM-L6-v2 with attentions
    >>> index.add(["The cat sat.", "Dogs bark."], ids=["a", "b"])
    >>> index.search("cats", k=1)

    Args:
        encoder: a `fastrag.TextEncoder` made with ``attentions=True`` (a WordPiece model), or a
            model name for one (default "default": all-MiniLM-L6-v2).
        stopwords: "english" (the English analyzer's list), a list of words, or None.
        stemmer: a PyStemmer algorithm (default "english", as the English analyzer) or None.
        alpha: fastembed's rescoring, each weight becomes log(1 + w) ** alpha (default 0.5,
            fastembed's default: 0.350 nDCG@10 on cranfield against 0.263 for the raw sums),
            or None to keep the summed attention as above.
        quantize: see `ImpactIndex`.
        max_weight: see `ImpactIndex`.
        batch_size: encoder batch size.
    """

    _FORMAT = "fastrag.bm42"

    def __init__(
        self,
        encoder: TextEncoder | str | os.PathLike[str] | None = None,
        *,
        stopwords: str | Sequence[str] | None = "english",
        stemmer: str | None = "english",
        alpha: float | None = 0.5,
        quantize: str | None = None,
        max_weight: float | None = None,
        batch_size: int = 16,
    ) -> None:
        super().__init__(None, quantize=quantize, max_weight=max_weight)
        self._set_words(stopwords, stemmer, alpha)
        self.batch_size = check_int(batch_size, "batch_size")
        self._vocab: dict[str, int] = {}
        self._encoder: TextEncoder | None = None
        self._fingerprint: str | None = None
        self._attach(_bm42_encoder(encoder))

    def _set_words(self, stopwords: Any, stemmer: str | None, alpha: float | None) -> None:
        from fastrag.text import EnglishAnalyzer

        # the English analyzer validates both and knows the built-in stopword list
        analyzer = EnglishAnalyzer(stopwords=stopwords, stemmer=stemmer)
        self.stopwords = analyzer.stopwords
        self._stopword_set = analyzer.stopword_set
        self.stemmer = analyzer.stemmer
        if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
                                  or not (math.isfinite(alpha) and alpha > 0)):
            raise ValueError(f"alpha must be a finite number > 0 or None, got {alpha!r}")
        self.alpha = None if alpha is None else float(alpha)

    def _attach(self, encoder: TextEncoder) -> None:
        if "cls_attention" not in encoder.model.output_names:
            raise ValueError("BM42 needs a TextEncoder made with attentions=True")
        if self._fingerprint is not None and encoder.fingerprint != self._fingerprint:
            raise ValueError(
                f"this index was built with encoder {self._fingerprint}, not "
                f"{encoder.fingerprint}: its attentions give other weights; re-index, or load "
                "the index with the encoder it was built with"
            )
        tokenizer = encoder.model.tokenizer
        vocab = tokenizer.get_vocab()
        tokens = [""] * (max(vocab.values()) + 1)
        for tok, i in vocab.items():
            tokens[i] = tok
        self._tokens, self._special = tokens, special_ids(tokenizer)
        self._encoder, self._fingerprint = encoder, encoder.fingerprint

    @property
    def encoder(self) -> TextEncoder | None:
        """The encoder whose [CLS] attentions give the weights (None until one is set)."""
        return self._encoder

    @property
    def fingerprint(self) -> str | None:
        """The fingerprint of the encoder the index was built with (None before any)."""
        return self._fingerprint

    @property
    def vocabulary(self) -> dict[str, int]:
        """Word -> term id (a copy)."""
        return dict(self._vocab)

    # ------------------------------------------------------------------ words
    def _merge(
        self, ids: np.ndarray, offsets: np.ndarray | None, prompt: int
    ) -> list[tuple[str, list[int]]]:
        """Words of a token sequence: (word, positions of its pieces), special tokens and the
        tokens of a prompt (those starting before character `prompt`) left out."""
        words: list[tuple[str, list[int]]] = []
        acc, pos = "", []
        starts = offsets[:, 0].tolist() if offsets is not None and prompt > 0 else None
        for j, tid in enumerate(ids.tolist()):
            if tid in self._special or (starts is not None and starts[j] < prompt):
                continue
            tok = self._tokens[tid] if 0 <= tid < len(self._tokens) else ""
            if tok.startswith("##"):
                acc += tok[2:]
                pos.append(j)
                continue
            if acc:
                words.append((acc, pos))
            acc, pos = tok, [j]
        if acc:
            words.append((acc, pos))
        return words

    def _clean(self, words: list[str]) -> tuple[list[int], list[str]]:
        """Positions and stems of the words kept (not stopwords, not punctuation only)."""
        keep, kept = [], []
        for i, w in enumerate(words):
            w = w.lower()
            if w in self._stopword_set or not any(c.isalnum() for c in w):
                continue
            keep.append(i)
            kept.append(w)
        if self.stemmer is not None and kept:
            import Stemmer

            kept = Stemmer.Stemmer(self.stemmer).stemWords(kept)
        return keep, kept

    def document_words(self, tokens: TokenVectors) -> dict[str, float]:
        """The word weights of one document's token output (before any `alpha` rescoring)."""
        if tokens.attention is None:
            raise ValueError("BM42 needs token attentions: a TextEncoder with attentions=True")
        merged = self._merge(tokens.ids, tokens.offsets, tokens.prompt_chars)
        keep, stems = self._clean([w for w, _ in merged])
        att = tokens.attention.astype(np.float64)
        out: dict[str, float] = {}
        for i, stem in zip(keep, stems, strict=True):
            w = float(att[merged[i][1]].sum())
            if w > out.get(stem, -1.0):
                out[stem] = w
        return out

    def query_words(self, query: str) -> list[str]:
        """The distinct words (stems) of a query, in order of first occurrence."""
        if self._encoder is None:
            raise TypeError("this index has no encoder to tokenize queries (load it with "
                            "encoder=...)")
        enc = self._encoder.model.tokenizer.encode(query)
        merged = self._merge(np.asarray(enc.ids), None, 0)
        _, stems = self._clean([w for w, _ in merged])
        return list(dict.fromkeys(stems))

    # ------------------------------------------------------------------ building / searching
    def add(self, docs: Sequence[str] | str, ids: Iterable[DocId] | DocId | None = None) -> None:
        """Adds texts; ids as in `BM25.add` (upsert, defaults). Blank texts are indexed as
        empty documents (they never match)."""
        docs, ids = as_batch(docs, ids)
        texts = text_list(docs, "documents")
        self._ids.new_ids(ids, len(texts))
        if self._encoder is None:
            raise TypeError("this index has no encoder (load it with encoder=...)")
        outputs: list[TokenVectors | None] = [None] * len(texts)
        kept = [i for i, t in enumerate(texts) if t.strip()]
        if kept:
            found = self._encoder.token_vectors(
                [texts[i] for i in kept], kind="document", batch_size=self.batch_size
            )
            for i, tv in zip(kept, found, strict=True):
                outputs[i] = tv
        self.add_token_vectors(outputs, ids)

    def add_token_vectors(self, tokens: Sequence[TokenVectors | None],
                          ids: Iterable[DocId] | None = None) -> None:
        """Adds documents from their encoder outputs (`TextEncoder.token_vectors` with
        attentions), for a caller that ran the encoder already; None is an empty document."""
        tokens = list(tokens)
        self._ids.new_ids(ids, len(tokens))
        words = [{} if tv is None else self.document_words(tv) for tv in tokens]
        warn_empty(tokens, [i for i, tv in enumerate(tokens) if tv is not None and not words[i]],
                   "words")
        with self._write_lock:  # the vocabulary grows with the words of new documents
            vocab = self._vocab
            pairs = []
            for doc in words:
                terms = np.fromiter(
                    (vocab.setdefault(w, len(vocab)) for w in doc), dtype=np.uint32, count=len(doc)
                )
                weights = np.fromiter(doc.values(), dtype=np.float64, count=len(doc))
                if self.alpha is not None:
                    weights = np.log1p(weights) ** self.alpha
                pairs.append((terms, weights.astype(np.float32)))
        self._add_csr(pairs_csr(pairs), ids)

    def encode_queries(self, queries: Sequence[str] | str) -> list[tuple[np.ndarray, np.ndarray]]:
        """(term ids, idf weights) of each query; words no document holds are left out."""
        queries = text_list(queries, "queries")
        out = []
        for q in queries:
            ids = [self._vocab.get(w) for w in self.query_words(q)] if q.strip() else []
            terms = np.array([i for i in ids if i is not None], dtype=np.uint32)
            out.append((terms, self.idf(terms)))
        return out

    def search(
        self,
        queries: Sequence[str] | str,
        k: int = 10,
        *,
        threads: int = 0,
        filter: Iterable[DocId] | DocId | None = None,
        algorithm: str = "auto",
        query_terms: int | None = None,
    ) -> SearchResults:
        """Top-k documents for query texts; options as in `ImpactIndex.search`."""
        return self._search_encoded(
            k,
            lambda: pairs_csr(self.encode_queries(queries)),
            threads=threads, filter=filter, algorithm=algorithm, query_terms=query_terms,
        )

    def __repr__(self) -> str:
        return (
            f"BM42Index(encoder={self._fingerprint!r}, alpha={self.alpha}, docs={len(self)}, "
            f"words={len(self._vocab)})"
        )

    # ------------------------------------------------------------------ persistence
    def _meta(self) -> dict[str, Any]:
        words = [""] * len(self._vocab)
        for w, i in list(self._vocab.items()):
            words[i] = w
        return {
            **super()._meta(),
            "encoder": self._fingerprint,
            "stopwords": self.stopwords,
            "stemmer": self.stemmer,
            "alpha": self.alpha,
            "batch_size": self.batch_size,
            "words": words,
        }

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        encoder: TextEncoder | str | os.PathLike[str] | None = None,
        mmap: bool = False,
    ) -> BM42Index:
        """Loads a saved index. `encoder` (needed to add documents and to search) must be the
        one the index was built with (same fingerprint), else ValueError."""
        index, meta = cls._open(path, mmap)
        words, fp = meta.get("words"), meta.get("encoder")
        if (
            not isinstance(words, list)
            or len(words) < index._core.stats()["n_terms"]
            or not isinstance(fp, str)
        ):
            raise IndexFormatError(f"{path} has a vocabulary that does not match its postings")
        try:
            index._set_words(meta.get("stopwords"), meta.get("stemmer"), meta.get("alpha"))
        except (TypeError, ValueError) as e:
            raise IndexFormatError(f"{path} has invalid BM42 settings ({e})") from e
        index._vocab = {w: i for i, w in enumerate(words)}
        index._restore_encoder(meta, fp, 16)
        if encoder is not None:
            index._attach(_bm42_encoder(encoder))
        return index


def _bm42_encoder(encoder: Any) -> TextEncoder:
    if encoder is None:
        return TextEncoder("default", attentions=True)
    if isinstance(encoder, (str, os.PathLike)):
        return TextEncoder(encoder, attentions=True)
    if not isinstance(encoder, TextEncoder):
        raise TypeError(f"encoder must be a TextEncoder or a model name, got {encoder!r}")
    return encoder
