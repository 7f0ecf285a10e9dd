"""The legs of a collection: which indexes it holds over its chunks, their files, and the
encoder passes that feed them.

- ``bm25``: always; the analyzer's tokens.
- ``dense``: with an encoder; one vector per chunk. Its storage ``"auto"`` (the default) is
  float32 while the leg holds fewer than `AUTO_INT8_MIN` vectors, then int8 codes walked with
  the float32 vectors kept to rescore the beam (the ranges trained on every vector so far).
- ``splade`` or ``bm42`` (``sparse=``): learned term weights per chunk. SPLADE runs its own
  model; BM42 weighs words by the [CLS] attentions of the collection's encoder.
- ``late`` (``late_chunking=True``): late-chunking vectors: each document runs through the
  encoder whole (in windows when long) and each chunk's vector is the mean of its tokens.
- token vectors (``token_vectors=True``, in the database): MaxSim reranking.

One encoder pass per chunk batch feeds the dense vectors, the BM42 attentions and the token
vectors (the [CLS] attentions and every token's vector come out of the same forward pass);
SPLADE's model and late chunking's whole-document pass come on top when asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastrag.encoders.base import Encoder, normalize
from fastrag.encoders.bm42_index import BM42Index
from fastrag.encoders.late import LateChunker
from fastrag.encoders.splade_index import SpladeIndex
from fastrag.index import BM25, DenseIndex
from fastrag.index.dense import STORAGES, as_matrix
from fastrag.text.chunking import Chunk

__all__ = [
    "AUTO_INT8_MIN",
    "EXTENSIONS",
    "SPARSE",
    "STORAGE_SETTINGS",
    "Encoded",
    "add_vectors",
    "encode",
    "file_name",
    "legs_of",
    "load_index",
    "new_index",
    "settled",
    "storage_allows",
]

EXTENSIONS = {"bm25": "fridx", "dense": "frdx", "splade": "fridx", "bm42": "fridx",
              "late": "frdx"}
SPARSE = ("splade", "bm42")
STORAGE_SETTINGS = ("auto", *STORAGES)
#: storage "auto": int8 codes from this many vectors on (the ranges are trained on all of
#: them; fewer would fit the ranges to a sample and clip later vectors for good)
AUTO_INT8_MIN = 1024


def legs_of(settings: dict[str, Any]) -> tuple[str, ...]:
    """The legs a collection's settings ask for, in a fixed order."""
    legs = ["bm25"]
    if settings.get("encoder"):
        legs.append("dense")
    if settings.get("sparse"):
        legs.append(settings["sparse"])
    if settings.get("late_chunking"):
        legs.append("late")
    return tuple(legs)


def file_name(leg: str, generation: int) -> str:
    return f"{leg}.{generation}.{EXTENSIONS[leg]}"


def new_index(leg: str, settings: dict[str, Any], encoder: Encoder | None,
              splade: Any) -> Any:
    """An empty index of a leg."""
    if leg == "bm25":
        return BM25(analyzer=settings["analyzer"])
    if leg in ("dense", "late"):
        storage = settings["storage"]
        return DenseIndex(encoder=encoder, storage="float32" if storage == "auto" else storage)
    if leg == "splade":
        return SpladeIndex(splade)
    if leg == "bm42":
        return BM42Index(encoder, alpha=settings.get("bm42_alpha", 0.5))  # type: ignore[arg-type]
    raise ValueError(f"unknown leg {leg!r}")


def storage_allows(settings: dict[str, Any], index: DenseIndex) -> bool:
    """Whether a dense index has a storage the collection's setting allows (under "auto":
    float32, or int8 with the float32 vectors kept for rescoring)."""
    storage = settings["storage"]
    if storage == "auto":
        return (index.storage, index.rescore) in {("float32", False), ("int8", True)}
    return bool(index.storage == storage)


def _int8_due(settings: dict[str, Any], index: DenseIndex, adding: int) -> bool:
    return (settings["storage"] == "auto" and index.storage == "float32"
            and len(index) + adding >= AUTO_INT8_MIN)


def add_vectors(settings: dict[str, Any], index: DenseIndex, vectors: np.ndarray,
                ids: list[int]) -> DenseIndex:
    """Adds a batch of chunk vectors to a dense leg; returns the leg's index: `index`, or
    (storage "auto") a new int8 one when the batch brings a float32 index to
    `AUTO_INT8_MIN` vectors: its vectors and the batch's, the ranges trained on them all
    (`index` itself is left as it was, so that a failed add can be undone)."""
    if not _int8_due(settings, index, len(ids)):
        index.add(vectors, ids=ids)
        return index
    new = set(ids)
    old = [d for d in index.ids if d not in new]
    grown = index.empty_like(storage="int8")
    grown.add(np.concatenate([index.get_vectors(old), as_matrix(vectors, index.dim)]),
              ids=old + list(ids))
    return grown


def settled(settings: dict[str, Any], index: DenseIndex) -> DenseIndex:
    """`index`, or (storage "auto") its int8 form when it holds `AUTO_INT8_MIN` vectors or
    more in float32 (an index built elsewhere: a merged graph, `set_index`)."""
    return add_vectors(settings, index, np.zeros((0, index.dim), np.float32), [])


def load_index(leg: str, path: Path, encoder: Encoder | None, splade: Any, mmap: bool) -> Any:
    """A leg's index from its file."""
    if leg == "bm25":
        return BM25.load(path, mmap=mmap)
    if leg in ("dense", "late"):
        return DenseIndex.load(path, mmap=mmap, encoder=encoder)
    if leg == "splade":
        return SpladeIndex.load(path, encoder=splade, mmap=mmap)
    if leg == "bm42":
        return BM42Index.load(path, encoder=encoder, mmap=mmap)  # type: ignore[arg-type]
    raise ValueError(f"unknown leg {leg!r}")


@dataclass
class Encoded:
    """What the encoder passes made of a batch of chunks, per leg (None: no such leg)."""

    dense: np.ndarray | None = None
    tokens: list[np.ndarray] = field(default_factory=list)  # float16 rows per chunk
    bm42: list[Any] | None = None  # TokenVectors per chunk
    splade: list[tuple[np.ndarray, np.ndarray]] | None = None
    late: np.ndarray | None = None


def encode(
    settings: dict[str, Any],
    encoder: Encoder | None,
    splade: SpladeIndex | None,
    texts: Sequence[str],
    spans: Sequence[Sequence[tuple[int, int]]],
    vectors: np.ndarray | None,
    batch_size: int,
) -> Encoded:
    """Runs the encoder passes the collection's legs need over documents `texts` split at
    `spans` (character spans per document); `vectors` are the caller's dense vectors (one
    per chunk), if given; `splade` is the collection's SPLADE index (it encodes with its
    model and term limit)."""
    legs = legs_of(settings)
    chunk_texts = [t[s:e] for t, sp in zip(texts, spans, strict=True) for s, e in sp]
    out = Encoded()
    if not chunk_texts:
        return out
    token_pass = bool(settings.get("token_vectors")) or "bm42" in legs
    if token_pass:
        # one forward pass: token vectors, [CLS] attentions, and the mean-pooled vector
        tvs = encoder.token_vectors(  # type: ignore[union-attr]
            chunk_texts, kind="document", batch_size=min(batch_size, 16)
        )
        if settings.get("token_vectors"):
            out.tokens = [normalize(np.array(t.vectors, dtype=np.float32)).astype(np.float16)
                          for t in tvs]
        if "bm42" in legs:
            out.bm42 = tvs
        if vectors is None and _pools_tokens(encoder):
            pooled = np.stack([t.vectors.mean(axis=0) for t in tvs]).astype(np.float32)
            vectors = normalize(pooled) if encoder.normalized else pooled  # type: ignore[union-attr]
    if "dense" in legs:
        if vectors is None:
            vectors = encoder.encode_documents(  # type: ignore[union-attr]
                chunk_texts, batch_size=batch_size
            )
        out.dense = as_matrix(vectors, encoder.dim, name="encoder output")  # type: ignore[union-attr]
    if splade is not None:
        out.splade = splade.encode_documents(chunk_texts)
    if "late" in legs:
        out.late = _late_vectors(encoder, texts, spans, out.dense, tvs if token_pass else None)
    return out


def _pools_tokens(encoder: Any) -> bool:
    """Whether the encoder's document vector is the mean of its token vectors (so the token
    pass gives it too): mean pooling and no document prompt."""
    return getattr(encoder, "pooling", None) == "mean" and not encoder.prompts.get("document")


def _late_vectors(encoder: Any, texts: Sequence[str],
                  spans: Sequence[Sequence[tuple[int, int]]],
                  dense: np.ndarray | None, tokens: Sequence[Any] | None = None) -> np.ndarray:
    """Late-chunking vectors of every chunk: each document through the encoder whole (in
    windows when long), each chunk the mean of its tokens. A chunk with no token in the
    document's pass (it can happen to a chunk of only spaces or symbols) takes its own
    dense vector. `tokens`: the token pass over the chunks (`TokenVectors` per chunk), when
    the collection ran one: a document that is one chunk seen whole by that pass takes its
    vector from it (the same input as the document's own pass, so the same numbers), and
    only the other documents are encoded again."""
    late = LateChunker(encoder)
    whole: dict[int, np.ndarray] = {}  # document -> its one chunk's vector from the token pass
    if tokens is not None:
        n = 0
        for i, (text, sp) in enumerate(zip(texts, spans, strict=True)):
            if len(sp) == 1 and not text[: sp[0][0]].strip() and not text[sp[0][1]:].strip():
                vec = late.pool_whole(tokens[n], text[sp[0][0] : sp[0][1]])
                if vec is not None:
                    whole[i] = vec
            n += len(sp)
    rest = [i for i in range(len(texts)) if i not in whole]
    passes = (dict(zip(rest, late.token_embeddings([texts[i] for i in rest]), strict=True))
              if rest else {})
    rows = []
    n = 0
    for i, (text, sp) in enumerate(zip(texts, spans, strict=True)):
        if i in whole:
            rows.append(whole[i])
            n += 1
            continue
        doc = passes[i]
        chunks = [Chunk(text[s:e], s, e) for s, e in sp]
        pooled = {(c.start, c.end): v for c, v in late.pool(chunks, doc)}
        for s, e in sp:
            vec = pooled.get((s, e))
            if vec is None:
                if dense is None:
                    vec = np.asarray(encoder.encode_documents([text[s:e]])[0], np.float32)
                else:
                    vec = dense[n]
            rows.append(vec)
            n += 1
    return np.ascontiguousarray(np.stack(rows), dtype=np.float32)
