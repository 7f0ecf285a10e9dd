"""Late chunking: one forward pass over a whole document, then token vectors mean-pooled per chunk.

Every chunk vector then carries its neighbours' context (the seed: Günther et al., "Late
Chunking: Contextual Chunk Embeddings Using Long-Context Embedding Models", 2024, whose
``chunk_by_sentences`` gives token spans that count the leading [CLS]).

>>> late = LateChunker(TextEncoder(), "sentence")
>>> for chunk, vector in late.encode(document)[0]:
...     print(chunk.start, chunk.end, vector.shape)      # (384,) float32, unit length

Documents longer than the model's window are encoded in overlapping macro-windows ("long late
chunking"): every token is encoded with context on both sides, and each token's vector is
taken from the window where it sits most centrally (see `LateChunker`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastrag.encoders.base import check_texts
from fastrag.encoders.models import TextEncoder, TokenVectors
from fastrag.encoders.onnx import caller_level
from fastrag.encoders.pooling import mean_pool_spans
from fastrag.text.chunking import (
    Chunk,
    check_spans,
    merge_short,
    paragraphs,
    sentences,
    token_spans,
    token_windows,
    untruncated,
)

ChunkerFn = Callable[[str], Sequence[Chunk]]
CHUNKERS = ("sentence", "paragraph", "window")


class SkippedChunkWarning(UserWarning):
    """Some chunks had no token to pool (blank, or past the model's window): counts inside."""


def _numpy_mean_pool(
    tokens: np.ndarray, spans: np.ndarray, *, threads: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The reference of `fastrag.encoders.pooling.mean_pool_spans`, in numpy.

    tokens (n, dim) float32 / float16, spans (m, 2) int [start, end) -> (pooled (m, dim)
    float32, valid (m,) bool). Ends past the document are clipped to n; a span empty after
    clipping (start == end, or start >= n) is skipped: its row is zeros and valid is False.
    A negative start or an end before its start raises ValueError. `threads` is ignored.
    """
    del threads
    tokens = np.asarray(tokens)
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    n, dim = tokens.shape
    bad = np.flatnonzero((spans[:, 0] < 0) | (spans[:, 1] < spans[:, 0]))
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"span {i} ({spans[i, 0]}, {spans[i, 1]}) is not a [start, end) range")
    starts = np.minimum(spans[:, 0], n)
    ends = np.minimum(spans[:, 1], n)
    valid = ends > starts
    pooled = np.zeros((len(spans), dim), dtype=np.float32)
    for row in np.flatnonzero(valid):
        pooled[row] = tokens[starts[row] : ends[row]].astype(np.float32).mean(axis=0)
    return pooled, valid




def make_chunker(
    name: str,
    tokenizer: Any,
    *,
    max_tokens: int | None = None,
    overlap: int = 0,
    language: str = "auto",
) -> ChunkerFn:
    """A chunker by name, counting tokens with `tokenizer` (a `tokenizers.Tokenizer`).

    - "sentence": `sentences`; with `max_tokens`, consecutive sentences merged up to that many
      tokens (`merge_short`, never across a blank line);
    - "paragraph": `paragraphs`; with `max_tokens`, consecutive paragraphs merged up to it;
    - "window": `token_windows` of `max_tokens` (default 128) tokens, `overlap` shared.
    """
    if name == "sentence":
        if max_tokens is None:
            return lambda text: sentences(text, language=language)
        return lambda text: merge_short(
            sentences(text, language=language), text, budget=max_tokens, tokenizer=tokenizer
        )
    if name == "paragraph":
        if max_tokens is None:
            return paragraphs
        return lambda text: merge_short(
            paragraphs(text), text, budget=max_tokens, tokenizer=tokenizer,
            cross_paragraphs=True,
        )
    if name == "window":
        size = 128 if max_tokens is None else max_tokens
        return lambda text: token_windows(text, tokenizer, size=size, overlap=overlap)
    raise ValueError(f"chunker must be one of {', '.join(CHUNKERS)} or a function, got {name!r}")


@dataclass
class DocumentTokens:
    """A document's token vectors, as late chunking pools them.

    Attributes:
        ids: (tokens,) int64 ids of the whole document, untruncated (special tokens and the
            prompt included; an appended end-of-sequence token is not listed).
        offsets: (tokens, 2) character spans in the prompted text (special tokens (0, 0)).
        vectors: (covered, dim) float32 token vectors; covered == tokens, or fewer when the
            document was truncated (``long=False``): rows for ids[:covered].
        windows: (windows, 2) int64: the document tokens [start, end) each macro-window held
            (positions in `ids`; the special tokens and the prompt were added around them).
        owner: (covered,) int64: the window each row of `vectors` was taken from.
        prompt_chars: length of the prompt put before the text.
    """

    ids: np.ndarray
    offsets: np.ndarray
    vectors: np.ndarray
    windows: np.ndarray
    owner: np.ndarray
    prompt_chars: int


@dataclass
class _Layout:
    """Where a tokenized document's parts are: positions in the full encoding."""

    ids: np.ndarray
    types: np.ndarray
    offsets: np.ndarray
    head: np.ndarray  # leading special tokens and the prompt's tokens
    body: np.ndarray  # the document's tokens
    tail: np.ndarray  # trailing special tokens


def window_starts(n: int, capacity: int, overlap: int) -> np.ndarray:
    """Starts of windows of `capacity` tokens over `n` tokens, `overlap` shared (at least).

    Stride capacity - overlap; the last window is moved back to end at n, so that every
    window is full (a document within `capacity` is one window, starting at 0).
    """
    if n <= capacity:
        return np.zeros(1, dtype=np.int64)
    stride = capacity - overlap
    starts = list(range(0, n - capacity, stride))
    starts.append(n - capacity)
    return np.array(starts, dtype=np.int64)


def owners(n: int, starts: np.ndarray, capacity: int) -> np.ndarray:
    """For each of `n` tokens, the window (of `capacity` from `starts`) where it is most central.

    Token t is taken from the window whose centre start + (capacity - 1) / 2 is nearest, among
    the windows that hold it; on a tie the earlier window. With equal-length, increasing
    windows, window k owns the tokens up to floor((start_k + start_k+1 + capacity - 1) / 2).
    """
    owner = np.zeros(n, dtype=np.int64)
    for k in range(len(starts) - 1):
        last = (int(starts[k]) + int(starts[k + 1]) + capacity - 1) // 2
        owner[last + 1 :] = k + 1
    return owner


class LateChunker:
    """Chunk vectors from one forward pass per document (late chunking), or per chunk (naive).

    Args:
        encoder: a `TextEncoder` (its tokenizer, ONNX session and document prompt are used).
        chunker: "sentence", "paragraph", "window" (see `make_chunker`) or a function
            text -> chunks (`fastrag.text.chunking.Chunk`: text, start, end).
        max_chunk_tokens: for named chunkers: merge sentences / paragraphs up to this many
            tokens; the window size of "window".
        naive: encode each chunk's text on its own (the usual chunking) instead.
        long: documents longer than the model's window are encoded in overlapping
            macro-windows (default): each window holds the special tokens, the prompt and
            as many document tokens as fit (`window_starts`; the last window ends at the
            document's end), and each token's vector is taken from the window where it is
            most central (`owners`), so every token is encoded with context on both sides.
            False: truncate at the window as the seed does; chunk spans past it are
            clipped, chunks wholly past it skipped (and counted).
        overlap: tokens shared by consecutive macro-windows: a float in [0, 1) is a fraction
            of the window's document tokens (default 0.5: every token but those near the
            ends of the document gets at least a quarter window of context on each side);
            an int is a count.
        language: for the sentence chunker ("auto", "en", "ja").
        batch_size: windows per forward pass (default 8), or chunks when naive (default
            32).
        threads: threads of the pooling kernel (0: one per core).

    Chunk vectors are the mean of the chunk's token vectors (whatever the encoder's pooling),
    L2-normalised. A chunk's tokens are those whose characters lie inside its span
    (`fastrag.text.chunking.token_spans`); a chunk without any (blank, or a span between two
    tokens' characters) is skipped, and a `SkippedChunkWarning` says how many. Chunk spans
    outside the text raise ValueError; overlapping chunks are pooled independently.
    `last_stats` holds the counts of the last `encode`.
    """

    def __init__(
        self,
        encoder: TextEncoder,
        chunker: str | ChunkerFn = "sentence",
        *,
        max_chunk_tokens: int | None = None,
        naive: bool = False,
        long: bool = True,
        overlap: float | int = 0.5,
        language: str = "auto",
        batch_size: int | None = None,
        threads: int = 0,
    ) -> None:
        if not isinstance(encoder, TextEncoder):
            raise TypeError(f"encoder must be a TextEncoder, got {type(encoder).__name__}")
        self.encoder = encoder
        model = encoder.model
        self._tokenizer = untruncated(model.tokenizer)
        if isinstance(chunker, str):
            self.chunker = make_chunker(
                chunker, model.tokenizer, max_tokens=max_chunk_tokens, language=language
            )
        elif callable(chunker):
            self.chunker = chunker
        else:
            raise TypeError(f"chunker must be a name or a function, got {type(chunker).__name__}")
        if isinstance(overlap, bool) or not (
            (isinstance(overlap, float) and 0 <= overlap < 1)
            or (isinstance(overlap, int) and overlap >= 0)
        ):
            raise ValueError(f"overlap must be a float in [0, 1) or an int >= 0, got {overlap!r}")
        if batch_size is None:
            batch_size = 32 if naive else 8
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.naive = bool(naive)
        self.long = bool(long)
        self.overlap = overlap
        self.batch_size = batch_size
        self.threads = int(threads)
        self.last_stats: dict[str, int] = {}
        m = model.manifest
        appends = m.get("append_eos") and m.get("eos_id") is not None
        self._eos = int(m["eos_id"]) if appends else None

    @property
    def dim(self) -> int:
        """The chunk vectors' dimension (the encoder's)."""
        return self.encoder.dim

    # ------------------------------------------------------------------ encoding
    def chunk(self, text: str) -> list[Chunk]:
        """The chunker's chunks of `text`, checked to lie inside it."""
        chunks = list(self.chunker(text))
        check_spans(chunks, text)
        return chunks

    def encode(
        self,
        texts: Sequence[str] | str,
        *,
        chunks: Sequence[Sequence[Chunk]] | None = None,
    ) -> list[list[tuple[Chunk, np.ndarray]]]:
        """Per document, its chunks and their (dim,) float32 unit vectors, in chunk order.

        Args:
            texts: documents (a str is one document). A blank document has no chunks: [].
            chunks: chunks to use instead of the chunker's, one sequence per document.
        """
        docs = [texts] if isinstance(texts, str) else list(texts)
        if chunks is not None and len(chunks) != len(docs):
            raise ValueError(f"{len(docs)} texts but {len(chunks)} lists of chunks")
        for i, doc in enumerate(docs):
            if not isinstance(doc, str):
                raise TypeError(f"texts[{i}] must be str, got {type(doc).__name__}")
        filled = [i for i, d in enumerate(docs) if d.strip()]
        if filled:
            check_texts([docs[i] for i in filled])  # valid Unicode
        per_doc: list[list[Chunk]] = [[] for _ in docs]
        for i in filled:
            given = None if chunks is None else list(chunks[i])
            per_doc[i] = self.chunk(docs[i]) if given is None else given
            if given is not None:
                check_spans(given, docs[i])
        stats = {"documents": len(docs), "chunks": sum(len(c) for c in per_doc), "skipped": 0,
                 "beyond_window": 0, "windows": 0, "truncated": 0}
        if self.naive:
            out = self._encode_naive(docs, per_doc, stats)
        else:
            out = self._encode_late(docs, per_doc, stats)
        self.last_stats = stats
        if stats["skipped"]:
            beyond = stats["beyond_window"]
            warnings.warn(
                f"{stats['skipped']} of {stats['chunks']} chunks had no tokens to pool and were "
                f"skipped ({beyond} past the model's window of {self.encoder.max_length}, "
                f"{stats['skipped'] - beyond} blank or between tokens)",
                SkippedChunkWarning,
                stacklevel=caller_level(),
            )
        return out

    def _encode_naive(
        self, docs: list[str], per_doc: list[list[Chunk]], stats: dict[str, int]
    ) -> list[list[tuple[Chunk, np.ndarray]]]:
        flat = [(i, c) for i, cs in enumerate(per_doc) for c in cs]
        kept = [(i, c) for i, c in flat if docs[i][c.start : c.end].strip()]
        stats["skipped"] = len(flat) - len(kept)
        out: list[list[tuple[Chunk, np.ndarray]]] = [[] for _ in docs]
        if not kept:
            return out
        texts = [docs[i][c.start : c.end] for i, c in kept]
        vectors = self.encoder.encode_documents(texts, batch_size=self.batch_size)
        if not self.encoder.normalized:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            np.divide(vectors, norms, out=vectors, where=norms > 0)
        for (i, c), v in zip(kept, vectors, strict=True):
            out[i].append((c, v))
        return out

    def _encode_late(
        self, docs: list[str], per_doc: list[list[Chunk]], stats: dict[str, int]
    ) -> list[list[tuple[Chunk, np.ndarray]]]:
        out: list[list[tuple[Chunk, np.ndarray]]] = [[] for _ in docs]
        todo = [i for i, cs in enumerate(per_doc) if cs]
        # documents in groups of about 4 batches of windows, so that memory stays bounded
        group: list[int] = []
        for i in [*todo, None]:
            if i is not None:
                group.append(i)
            if group and (i is None or len(group) >= 4 * self.batch_size):
                tokens = self.token_embeddings([docs[j] for j in group])
                for j, doc_tokens in zip(group, tokens, strict=True):
                    stats["windows"] += len(doc_tokens.windows)
                    stats["truncated"] += len(doc_tokens.vectors) < len(doc_tokens.ids)
                    out[j] = self._pool(per_doc[j], doc_tokens, stats)
                group = []
        return out

    def pool(
        self, chunks: Sequence[Chunk], doc: DocumentTokens
    ) -> list[tuple[Chunk, np.ndarray]]:
        """Chunk vectors from a document's token vectors (`token_embeddings`): several
        chunkings of one forward pass. Chunks without tokens are left out (no warning)."""
        return self._pool(list(chunks), doc, {"skipped": 0, "beyond_window": 0})

    def _pool(
        self, chunks: list[Chunk], doc: DocumentTokens, stats: dict[str, int]
    ) -> list[tuple[Chunk, np.ndarray]]:
        spans = token_spans(chunks, doc.offsets, prompt_chars=doc.prompt_chars)
        pooled, valid = mean_pool_spans(doc.vectors, spans, threads=self.threads)
        pooled = np.array(pooled, dtype=np.float32)  # ours to normalise in place
        valid = np.asarray(valid, dtype=bool)
        has_tokens = spans[:, 1] > spans[:, 0]
        stats["skipped"] += int((~valid).sum())
        stats["beyond_window"] += int((has_tokens & ~valid).sum())
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        np.divide(pooled, norms, out=pooled, where=norms > 0)
        return [(c, pooled[k]) for k, c in enumerate(chunks) if valid[k]]

    def pool_whole(self, tokens: TokenVectors, text: str) -> np.ndarray | None:
        """The late-chunking vector of a document that is one chunk, `text`, from a pass of
        the encoder over that text alone (`TextEncoder.token_vectors`, as a collection's
        token legs run it): the same input as the document's own pass, so the same tokens
        pooled the same way. None when that pass did not hold the whole text (truncated at
        the model's window) or no token of it: the document then needs its own pass."""
        offsets, at = tokens.offsets, tokens.prompt_chars
        real = (offsets[:, 1] > offsets[:, 0]) & (offsets[:, 0] >= at)
        if not real.any() or int(offsets[real, 1].max()) - at != len(text.rstrip()):
            return None
        n = len(tokens.ids)
        doc = DocumentTokens(ids=np.asarray(tokens.ids, dtype=np.int64), offsets=offsets,
                             vectors=tokens.vectors, windows=np.array([[0, n]], dtype=np.int64),
                             owner=np.zeros(n, dtype=np.int64), prompt_chars=at)
        found = self.pool([Chunk(text, 0, len(text))], doc)
        return found[0][1] if found else None

    # ------------------------------------------------------------------ token vectors
    def _layout(self, text: str) -> _Layout:
        prompt = self.encoder.prompts["document"]
        enc = self._tokenizer.encode(prompt + text)
        ids = np.asarray(enc.ids, dtype=np.int64)
        types = np.asarray(enc.type_ids, dtype=np.int64)
        offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
        special = np.asarray(enc.special_tokens_mask, dtype=bool)
        n = len(ids)
        lead = 0
        while lead < n and special[lead]:
            lead += 1
        trail = n
        while trail > lead and special[trail - 1]:
            trail -= 1
        body_start = lead
        if prompt:  # the prompt's tokens end within its characters
            while body_start < trail and offsets[body_start, 1] <= len(prompt):
                body_start += 1
        pos = np.arange(n, dtype=np.int64)
        return _Layout(ids, types, offsets, pos[:body_start], pos[body_start:trail], pos[trail:])

    def _capacity(self, layout: _Layout) -> int:
        room = self.encoder.max_length - len(layout.head) - len(layout.tail)
        if self._eos is not None and not (len(layout.tail) and layout.ids[-1] == self._eos):
            room -= 1
        if room < 1:
            raise ValueError(
                f"the model's window of {self.encoder.max_length} tokens has no room for the "
                f"document after {len(layout.head) + len(layout.tail)} special and prompt tokens"
            )
        return room

    def _overlap_tokens(self, capacity: int) -> int:
        if isinstance(self.overlap, float):
            return int(self.overlap * capacity)
        if self.overlap >= capacity:
            raise ValueError(
                f"overlap ({self.overlap}) must be smaller than the window's {capacity} "
                "document tokens"
            )
        return self.overlap

    def token_embeddings(self, texts: Sequence[str] | str) -> list[DocumentTokens]:
        """The stitched token vectors late chunking pools, one per (non-blank) document.

        The windows of all `texts` run in length-sorted batches; each window's output is
        written into its document's rows as soon as its batch is done (only the rows the
        window owns), so memory holds the documents' token vectors and one batch.
        """
        docs = check_texts(texts)
        out: list[DocumentTokens] = []
        windows: list[tuple[int, int, _Layout, np.ndarray]] = []  # doc, window, layout, positions
        for d, text in enumerate(docs):
            layout = self._layout(text)
            capacity = self._capacity(layout)
            n_body = len(layout.body)
            h = len(layout.head)
            if self.long:
                starts = window_starts(n_body, capacity, self._overlap_tokens(capacity))
            else:
                starts = np.zeros(1, dtype=np.int64)
            covered = len(layout.ids)
            if not self.long and n_body > capacity:  # truncated: the rest is not covered
                covered = h + capacity
            owner = np.zeros(covered, dtype=np.int64)
            if self.long:
                owner[h : h + n_body] = owners(n_body, starts, capacity)
                owner[h + n_body :] = len(starts) - 1
            for k, s in enumerate(starts):
                body = layout.body[s : s + capacity]
                windows.append((d, k, layout, np.concatenate([layout.head, body, layout.tail])))
            out.append(DocumentTokens(
                ids=layout.ids,
                offsets=layout.offsets,
                vectors=np.empty((covered, self.dim), dtype=np.float32),
                windows=np.stack([starts, np.minimum(starts + capacity, n_body)], axis=1) + h,
                owner=owner,
                prompt_chars=len(self.encoder.prompts["document"]),
            ))
        for w, hidden in self._run_windows([(layout, pos) for _, _, layout, pos in windows]):
            d, k, _, positions = windows[w]
            doc = out[d]
            inside = positions < len(doc.owner)
            mine = np.zeros(len(positions), dtype=bool)
            mine[inside] = doc.owner[positions[inside]] == k
            doc.vectors[positions[mine]] = hidden[: len(positions)][mine]
        return out

    def _run_windows(
        self, windows: list[tuple[_Layout, np.ndarray]]
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(window index, last hidden states (rows, dim)) of windows given as token positions
        of a layout, in length-sorted batches."""
        model = self.encoder.model
        rows_ids = []
        for layout, positions in windows:
            ids, types = layout.ids[positions], layout.types[positions]
            if self._eos is not None and (not len(ids) or ids[-1] != self._eos):
                ids, types = np.append(ids, self._eos), np.append(types, 0)
            rows_ids.append((ids, types))
        for batch, lengths, _, outputs in model.run_ids(
            rows_ids, batch_size=self.batch_size, outputs=["last_hidden_state"]
        ):
            hidden = outputs["last_hidden_state"]
            for j, r in enumerate(batch):
                yield int(r), hidden[j, : int(lengths[j])]


__all__ = [
    "CHUNKERS",
    "DocumentTokens",
    "LateChunker",
    "SkippedChunkWarning",
    "make_chunker",
    "mean_pool_spans",
    "owners",
    "window_starts",
]
