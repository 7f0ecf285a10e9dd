"""How a collection cuts documents into passages, and encodes them in batches with progress.

A collection with a local encoder cuts passages by the encoder's window in tokens (the
``chunk_tokens`` setting, "auto" at creation): every passage then fits the window whole and
nothing is truncated. Collections without an encoder (BM25 only), or with an encoder that
has no tokenizer, cut by characters alone (``chunk_chars``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from fastrag.collection import legs as legs_mod
from fastrag.encoders.base import Encoder
from fastrag.text.chunking import split_passages, untruncated

__all__ = ["Progress", "chunk_settings", "encode_batches", "passage_spans", "token_budget"]

#: progress(done, total): chunks encoded so far in this call, and the call's chunk count
Progress = Callable[[int, int], None]

DEFAULT_CHARS = 1000  # passages of collections without a token budget
CHARS_PER_TOKEN_CAP = 8  # with a token budget, characters are capped at 8 per token


def _tokenizer_of(encoder: Encoder | None) -> Any:
    return getattr(getattr(encoder, "model", None), "tokenizer", None)


def token_budget(encoder: Encoder | None) -> int | None:
    """The most tokens of text a passage may hold so that `encoder` never truncates it: its
    window less the special tokens ([CLS], [SEP], an appended end-of-sequence token), the
    document prompt's tokens and one token of margin where the prompt meets the text. None
    for an encoder without a tokenizer and window (a remote or custom encoder)."""
    tokenizer = _tokenizer_of(encoder)
    window = getattr(getattr(encoder, "model", None), "max_length", None)
    if tokenizer is None or not isinstance(window, int):
        return None
    tok = untruncated(tokenizer)
    special = len(tok.encode("", add_special_tokens=True).ids)
    manifest = getattr(encoder, "manifest", {}) or {}
    eos = 1 if manifest.get("append_eos") else 0
    prompt = (getattr(encoder, "prompts", None) or {}).get("document") or ""
    prompt_tokens = len(tok.encode(prompt, add_special_tokens=False).ids) + 1 if prompt else 0
    budget = window - special - eos - prompt_tokens
    if budget < 4:
        raise ValueError(f"the encoder's window of {window} tokens leaves {budget} for text")
    return budget


def chunk_settings(
    chunk_chars: int | None, chunk_tokens: int | str | None, encoder: Encoder | None
) -> tuple[int, int | None]:
    """(chunk_chars, chunk_tokens) of a new collection.

    `chunk_tokens` "auto" is the encoder's `token_budget` (None without a local encoder); an
    int must fit that budget. `chunk_chars` None is 1000 without a token budget, else a
    generous cap of 8 characters per token (tokens are then the limit that binds).
    """
    budget = token_budget(encoder)
    if chunk_tokens == "auto":
        tokens = budget
    elif chunk_tokens is None:
        tokens = None
    elif isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < 4:
        raise ValueError(f"chunk_tokens must be 'auto', None or an int >= 4, got {chunk_tokens!r}")
    elif budget is None:
        raise ValueError("chunk_tokens needs a local encoder with a tokenizer (a TextEncoder)")
    elif chunk_tokens > budget:
        raise ValueError(
            f"chunk_tokens={chunk_tokens} does not fit the encoder's window: at most {budget} "
            "tokens of text (the window less its special tokens and prompt)"
        )
    else:
        tokens = chunk_tokens
    if chunk_chars is None:
        chunk_chars = DEFAULT_CHARS if tokens is None else CHARS_PER_TOKEN_CAP * tokens
    split_passages("x" * 16, max_chars=chunk_chars)  # validates chunk_chars
    return chunk_chars, tokens


def passage_spans(
    texts: Sequence[str], settings: dict[str, Any], encoder: Encoder | None
) -> list[list[tuple[int, int]]]:
    """Character spans of every text's passages, by the collection's settings."""
    chars, tokens = settings["chunk_chars"], settings.get("chunk_tokens")
    if tokens is None:
        return [split_passages(t, max_chars=chars) for t in texts]
    tokenizer = _tokenizer_of(encoder)
    if tokenizer is None:
        raise ValueError(
            f"this collection cuts passages at {tokens} tokens of its encoder, but the encoder "
            "given has no tokenizer; open it with its model (a TextEncoder)"
        )
    return [split_passages(t, max_chars=chars, max_tokens=tokens, tokenizer=tokenizer)
            for t in texts]


def _groups(
    spans: Sequence[Sequence[tuple[int, int]]], size: int, whole_documents: bool
) -> list[list[tuple[int, list[tuple[int, int]]]]]:
    """Groups of about `size` chunks: lists of (document index, its spans in this group).
    A document with more chunks than `size` is split across groups unless
    `whole_documents` (late chunking runs each document whole)."""
    groups: list[list[tuple[int, list[tuple[int, int]]]]] = [[]]
    count = 0
    for i, sp in enumerate(spans):
        parts = [list(sp)] if whole_documents else [
            list(sp[k : k + size]) for k in range(0, max(len(sp), 1), size)]
        for part in parts:
            if count and count + len(part) > size:
                groups.append([])
                count = 0
            groups[-1].append((i, part))
            count += len(part)
    return [g for g in groups if g]


def _concat(parts: list[legs_mod.Encoded]) -> legs_mod.Encoded:
    out = legs_mod.Encoded()
    for name in ("dense", "late"):
        rows = [getattr(p, name) for p in parts if getattr(p, name) is not None]
        setattr(out, name, np.concatenate(rows) if rows else None)
    for name in ("bm42", "splade"):
        lists = [getattr(p, name) for p in parts if getattr(p, name) is not None]
        setattr(out, name, [x for lst in lists for x in lst] if lists else None)
    out.tokens = [t for p in parts for t in p.tokens]
    return out


def encode_batches(
    settings: dict[str, Any],
    encoder: Encoder | None,
    splade: Any,
    texts: Sequence[str],
    spans: Sequence[Sequence[tuple[int, int]]],
    vectors: np.ndarray | None,
    batch_size: int,
    show_progress: bool | Progress = False,
) -> legs_mod.Encoded:
    """`legs.encode` over the chunks, reporting progress per group of chunk batches.

    `show_progress`: False (one pass, no report), True (a tqdm bar on stderr) or a callable
    taking (chunks done, chunks in this call).
    """
    if not show_progress:
        return legs_mod.encode(settings, encoder, splade, texts, spans, vectors, batch_size)
    total = sum(len(sp) for sp in spans)
    bar = None
    if callable(show_progress):
        report: Progress = show_progress
    else:
        bar = tqdm(total=total, unit="chunk", desc="encoding", file=sys.stderr, leave=False)

        def report(done: int, _total: int) -> None:
            bar.update(done - bar.n)

    size = max(4 * batch_size, 64)
    whole = bool(settings.get("late_chunking"))
    parts, done, first = [], 0, 0
    try:
        report(0, total)
        for group in _groups(spans, size, whole):
            n = sum(len(sp) for _, sp in group)
            part_vectors = None if vectors is None else vectors[first : first + n]
            parts.append(legs_mod.encode(
                settings, encoder, splade, [texts[i] for i, _ in group],
                [sp for _, sp in group], part_vectors, batch_size))
            first += n
            done += n
            report(done, total)
    finally:
        if bar is not None:
            bar.close()
    return _concat(parts)
