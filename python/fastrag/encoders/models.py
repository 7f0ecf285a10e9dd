"""The local encoders: dense embeddings (and token vectors, BM42 attentions), SPLADE, rerankers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastrag.encoders.base import Encoder, Kind, check_texts, normalize
from fastrag.encoders.onnx import Batch, ModelFormatError, OnnxModel
from fastrag.encoders.resolve import resolve_model

POOLINGS = ("mean", "cls", "last")


def pool(hidden: np.ndarray, lengths: np.ndarray, how: str) -> np.ndarray:
    """(batch, dim) float32 from right-padded (batch, tokens, dim) token vectors.

    mean: average over each row's first `lengths[i]` tokens; cls: the first token;
    last: the token at lengths[i] - 1 (decoder embedders).
    """
    rows = np.arange(len(lengths))
    if how == "cls":
        return np.array(hidden[:, 0, :], dtype=np.float32)
    if how == "last":
        return np.array(hidden[rows, lengths - 1, :], dtype=np.float32)
    valid = (np.arange(hidden.shape[1])[None, :] < lengths[:, None]).astype(hidden.dtype)
    sums = np.einsum("btd,bt->bd", hidden, valid)
    pooled: np.ndarray = (sums / lengths[:, None]).astype(np.float32)
    return pooled


@dataclass
class TokenVectors:
    """One text's token-level output (special tokens and the prompt included).

    Attributes:
        ids: token ids, (tokens,) int32.
        offsets: (tokens, 2) character spans in the text given to the tokenizer (the prompt
            included; special tokens have (0, 0)).
        vectors: (tokens, dim) float32 last hidden states.
        attention: (tokens,) float32 head-averaged last-layer attention of the first token,
            when the model was exported with attentions.
        prompt_chars: length of the prompt put before the text (subtract from offsets).
    """

    ids: np.ndarray
    offsets: np.ndarray
    vectors: np.ndarray
    attention: np.ndarray | None
    prompt_chars: int


class _Local:
    """Shared set-up of the onnxruntime-backed encoders.

    Args:
        model: a registry name, Hugging Face id, Hugging Face model folder or exported folder
            (see `TextEncoder`).
        quantize: None (fp32) or "int8".
        threads: onnxruntime threads (0: one per core).
        providers: onnxruntime execution providers (default: CUDA when present, then CPU).
        max_length: a shorter window than the model's.
        revision, cache_dir: Hugging Face revision; where exports are cached.
    """

    task = "embed"
    default_model: str | None = None

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        quantize: str | None = None,
        threads: int = 0,
        providers: Sequence[str] | None = None,
        max_length: int | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if model is None:
            if self.default_model is None:
                raise TypeError(f"{type(self).__name__} needs a model")
            model = self.default_model
        self._open(
            model, quantize=quantize, threads=threads, providers=providers,
            max_length=max_length, revision=revision, cache_dir=cache_dir,
        )

    def _open(
        self,
        model: str | os.PathLike[str],
        *,
        quantize: str | None,
        threads: int,
        providers: Sequence[str] | None,
        max_length: int | None,
        revision: str | None,
        cache_dir: str | os.PathLike[str] | None,
        attentions: bool = False,
        calibration: Sequence[Any] | None = None,
    ) -> None:
        folder = resolve_model(
            model, task=self.task, attentions=attentions, revision=revision, cache_dir=cache_dir
        )
        self.model = OnnxModel(
            folder, quantize=quantize, threads=threads, providers=providers,
            max_length=max_length, calibration=calibration,
        )
        self.manifest = self.model.manifest
        self.name = str(self.manifest.get("name", folder.name))

    @property
    def fingerprint(self) -> str:
        """The exported model's fingerprint (weights, pooling, prompts, window)."""
        return str(self.manifest["fingerprint"])


class TextEncoder(_Local, Encoder):
    """Dense text embeddings from an ONNX export of a Hugging Face model (no torch needed).

    >>> enc = TextEncoder()                      # all-MiniLM-L6-v2, offline
    >>> docs = enc.encode_documents(texts)       # (n, 384) float32, unit length
    >>> q = enc.encode_queries(["what is bm25"], dim=128)

    Args:
        model: "default" (all-MiniLM-L6-v2), a registry name or Hugging Face id (exported
            once and cached; downloading needs a network and the ``export`` extra), a Hugging
            Face model folder, or an exported folder. Without torch, BERT-family models
            (the default included) are built from their safetensors weights
            (`fastrag.encoders.bert_onnx`, the ``minilm`` extra); others need torch.
        quantize: None (fp32), "int8" (dynamic quantisation, per-channel weights: faster,
            especially per query; on MiniLM the cosine to fp32 is 0.994 on average and 0.98
            at worst; activations are scaled per batch, so the same text can embed slightly
            differently in another batch) or "static" (static int8 calibrated on
            `calibration`, attention products included; a text's vector does not depend on
            its batch; see `fastrag.encoders.quantize`).
        calibration: quantize="static" only: a few hundred in-domain texts (documents of the
            collection, say) whose activation ranges fix the int8 scales. Needed the first
            time; the static model is kept in the exported folder and reused (made again
            when other calibration texts are given).
        threads: onnxruntime threads (0: one per core).
        pooling: "mean", "cls" or "last"; default from the model (registry or its files).
        query_prompt: overrides the model's query prompt.
        document_prompt: overrides the model's document prompt.
        attentions: export and return the [CLS] attention row too (BM42); costs a re-export.
        max_length: a shorter window than the model's (tokens, special tokens included).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = "default",
        *,
        quantize: str | None = None,
        threads: int = 0,
        providers: Sequence[str] | None = None,
        pooling: str | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        attentions: bool = False,
        max_length: int | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        calibration: Sequence[str] | None = None,
    ) -> None:
        self._open(
            model, quantize=quantize, threads=threads, providers=providers,
            max_length=max_length, revision=revision, cache_dir=cache_dir, attentions=attentions,
            calibration=calibration,
        )
        if attentions and "cls_attention" not in self.model.output_names:
            raise ModelFormatError(
                f"{self.model.folder} was exported without attentions; export with "
                "attentions=True (pass the source model, not the exported folder)"
            )
        m = self.manifest
        self.pooling = pooling or str(m.get("pooling", "mean"))
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.prompts = {
            "query": m.get("query_prompt", "") if query_prompt is None else query_prompt,
            "document": (
                m.get("document_prompt", "") if document_prompt is None else document_prompt
            ),
        }
        self.normalized = bool(m.get("normalize", True))
        self.dim = int(m["hidden_size"])
        self._overrides = (pooling, query_prompt, document_prompt, max_length)

    @property
    def fingerprint(self) -> str:
        """Identifies the vector space: the export's fingerprint, plus any override of it."""
        base = str(self.manifest["fingerprint"])
        pooling, qp, dp, window = self._overrides
        extra = [
            f"{k}={v}" for k, v in
            (("pooling", pooling), ("query_prompt", qp), ("document_prompt", dp),
             ("max_length", window)) if v is not None
        ]
        return base if not extra else f"{base}+{','.join(extra)}"

    @property
    def max_length(self) -> int:
        """The model's window in tokens, special tokens included."""
        return self.model.max_length

    def _prompted(self, texts: list[str], kind: Kind) -> list[str]:
        prompt = self.prompts[kind]
        return [prompt + t for t in texts] if prompt else texts

    def _embed(self, texts: list[str], kind: Kind, batch_size: int) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for batch in self.model.run(
            self._prompted(texts, kind), batch_size=batch_size, outputs=["last_hidden_state"]
        ):
            out[batch.rows] = pool(batch.outputs["last_hidden_state"], batch.lengths, self.pooling)
        return normalize(out) if self.normalized else out

    def token_vectors(
        self, texts: Sequence[str] | str, *, kind: Kind = "document", batch_size: int = 8
    ) -> list[TokenVectors]:
        """Per-token last hidden states (and [CLS] attentions when exported), one per text.

        What late chunking pools over spans, ColBERT scores with MaxSim, and BM42 weighs.
        """
        checked = check_texts(texts)
        out: list[TokenVectors | None] = [None] * len(checked)
        prompt = len(self.prompts[kind])
        for batch in self.model.run(self._prompted(checked, kind), batch_size=batch_size):
            for j, row in enumerate(batch.rows):
                out[row] = self._tokens_of(batch, j, prompt)
        return out  # type: ignore[return-value]

    def _tokens_of(self, batch: Batch, j: int, prompt: int) -> TokenVectors:
        n = int(batch.lengths[j])
        enc = batch.encodings[j]
        ids = np.zeros(n, dtype=np.int32)
        offsets = np.zeros((n, 2), dtype=np.int64)
        m = min(n, len(enc.ids))
        ids[:m], offsets[:m] = enc.ids[:m], enc.offsets[:m]
        if m < n:  # an appended end-of-sequence token
            ids[m:] = int(self.manifest["eos_id"])
        att = batch.outputs.get("cls_attention")
        return TokenVectors(
            ids=ids,
            offsets=offsets,
            vectors=np.ascontiguousarray(batch.outputs["last_hidden_state"][j, :n]),
            attention=None if att is None else np.ascontiguousarray(att[j, :n]),
            prompt_chars=prompt,
        )

    @property
    def vocabulary(self) -> dict[str, int]:
        """token -> id of the model's tokenizer."""
        return dict(self.model.tokenizer.get_vocab())


class SpladeEncoder(_Local):
    """SPLADE term weights: max over tokens of log(1 + relu(MLM logits)), fused in the graph.

    >>> enc = SpladeEncoder("splade-tiny")
    >>> terms, weights = enc.encode(["a query"], top_k=64)[0]
    """

    task = "splade"
    default_model = "splade-tiny"

    @property
    def vocab_size(self) -> int:
        """Size of the model's vocabulary: term ids lie in [0, vocab_size)."""
        return int(self.manifest["vocab_size"])

    def encode_dense(self, texts: Sequence[str] | str, *, batch_size: int = 32) -> np.ndarray:
        """(n, vocab) float32 weights (mostly zeros)."""
        checked = check_texts(texts)
        out = np.empty((len(checked), self.vocab_size), dtype=np.float32)
        for batch in self.model.run(checked, batch_size=batch_size):
            out[batch.rows] = batch.outputs["splade"]
        return out

    def encode(
        self, texts: Sequence[str] | str, *, top_k: int | None = None, batch_size: int = 32
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per text: (term ids int32 ascending, weights float32 > 0), at most `top_k` terms."""
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                                  or top_k < 1):
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
        checked = check_texts(texts)
        out: list[Any] = [None] * len(checked)
        for batch in self.model.run(checked, batch_size=batch_size):
            weights = batch.outputs["splade"]
            for j, row in enumerate(batch.rows):
                w = weights[j]
                terms = np.flatnonzero(w > 0)
                if top_k is not None and len(terms) > top_k:
                    keep = np.argpartition(-w[terms], top_k - 1)[:top_k]
                    terms = np.sort(terms[keep])
                out[row] = (terms.astype(np.int32), w[terms].astype(np.float32))
        return out

    def decode(self, terms: np.ndarray) -> list[str]:
        """Token strings of term ids."""
        return [self.model.tokenizer.id_to_token(int(t)) or "" for t in terms]


class CrossEncoder(_Local):
    """Scores (query, passage) pairs with a sequence-classification model (a reranker).

    >>> ce = CrossEncoder("cross-encoder/ms-marco-MiniLM-L6-v2")
    >>> scores = ce.score("what is bm25", passages)   # (len(passages),) float32 logits
    """

    task = "rerank"

    def score(
        self, query: str, passages: Sequence[str], *, batch_size: int = 32
    ) -> np.ndarray:
        """Relevance logits, one per passage (the last label's logit for multi-label heads)."""
        (q,) = check_texts([query], name="query")
        checked = check_texts(passages, name="passages")
        out = np.empty(len(checked), dtype=np.float32)
        for batch in self.model.run([(q, p) for p in checked], batch_size=batch_size):
            out[batch.rows] = batch.outputs["logits"][:, -1]
        return out
