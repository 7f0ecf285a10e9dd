"""What every text encoder offers: query / document embeddings, Matryoshka dims, a fingerprint."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Literal, overload

import numpy as np

Kind = Literal["query", "document"]


class TruncationWarning(UserWarning):
    """Some texts were longer than the model's window and were cut (counts in the message)."""


def check_text(text: object, *, name: str = "text") -> str:
    """`check_texts` for one text (its errors name it ``name[0]``)."""
    if type(text) is str and text.isascii() and text and not text.isspace():
        return text  # the common case, as in check_texts
    (out,) = check_texts([text], name=name)  # type: ignore[list-item]
    return out


def check_texts(texts: Sequence[str] | str, *, name: str = "texts") -> list[str]:
    """`texts` as a list of valid, non-empty str; ValueError / TypeError naming the bad item.

    Bytes are decoded as strict UTF-8; a str with lone surrogates (undecodable bytes smuggled
    through ``surrogateescape``) is refused, as are empty and whitespace-only texts.
    """
    if isinstance(texts, (str, bytes)):
        texts = [texts]
    if type(texts) is list and all(type(t) is str and t.isascii() and not t.isspace() and t
                                   for t in texts):
        return texts[:]  # the common case: ASCII holds no surrogates; none is blank
    out: list[str] = []
    for i, text in enumerate(texts):
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{name}[{i}] is not valid UTF-8 ({e.reason} at byte {e.start}); "
                    "decode it yourself with the right codec or errors='replace'"
                ) from e
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] must be str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(
                f"{name}[{i}] holds characters that are not valid Unicode ({e.reason} at "
                f"position {e.start}); it was probably decoded with errors='surrogateescape'"
            ) from e
        if not text.strip():
            raise ValueError(f"{name}[{i}] is empty; drop empty texts before encoding")
        out.append(text)
    return out


def check_dims(dims: Sequence[int], full: int) -> list[int]:
    """Matryoshka dimensions: positive ints no larger than the model's `full` dimension."""
    out = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 0 < int(d) <= full:
            raise ValueError(f"dim must be an int in 1..{full}, got {d!r}")
        out.append(int(d))
    return out


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm in place (zero rows stay zero); returns `vectors`."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.divide(vectors, norms, out=vectors, where=norms > 0)
    return vectors


def matryoshka(vectors: np.ndarray, dim: int, *, renormalize: bool = True) -> np.ndarray:
    """The first `dim` columns as a new C-contiguous float32 array, renormalised to unit length."""
    out = np.ascontiguousarray(vectors[:, :dim], dtype=np.float32)
    return normalize(out) if renormalize else out


class Encoder(ABC):
    """A text embedding model: texts in, float32 rows out (unit length when `normalized`).

    Subclasses implement `_embed` (full-dimension vectors for one kind of text); this class
    adds input checks, Matryoshka truncation and several dimensions from one pass.
    """

    #: full output dimension
    dim: int
    #: whether vectors are L2-normalised (cosine == inner product)
    normalized: bool = True
    #: a short name for tables and messages
    name: str = ""
    #: texts per forward pass (or request) when encode() is not given batch_size
    batch_size: int = 32

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """Identifies the vector space: equal fingerprints mean comparable vectors."""

    @abstractmethod
    def _embed(self, texts: list[str], kind: Kind, batch_size: int) -> np.ndarray:
        """(len(texts), self.dim) float32 vectors for checked, non-empty texts."""

    @overload
    def encode(
        self, texts: Sequence[str] | str, *, kind: Kind = ..., dim: int | None = ...,
        dims: None = ..., batch_size: int | None = ...,
    ) -> np.ndarray: ...

    @overload
    def encode(
        self, texts: Sequence[str] | str, *, kind: Kind = ..., dim: None = ...,
        dims: Sequence[int], batch_size: int | None = ...,
    ) -> dict[int, np.ndarray]: ...

    def encode(
        self,
        texts: Sequence[str] | str,
        *,
        kind: Kind = "document",
        dim: int | None = None,
        dims: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray | dict[int, np.ndarray]:
        """Embeds `texts` as queries or documents (the model's prompt for that kind is added).

        Args:
            kind: "query" or "document"; picks the prompt of models that have one.
            dim: Matryoshka truncation: keep the first `dim` dimensions, then renormalise.
            dims: several dimensions from one forward pass: returns {dim: array}.
            batch_size: texts per forward pass (or request); None: the encoder's default.
        Returns:
            (n, dim) float32, or {d: (n, d) float32} when `dims` is given.
        """
        if kind not in ("query", "document"):
            raise ValueError(f"kind must be 'query' or 'document', got {kind!r}")
        if dim is not None and dims is not None:
            raise ValueError("pass dim= or dims=, not both")
        if batch_size is None:
            batch_size = self.batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        checked = check_texts(texts)
        asked = [dim] if dim is not None else list(dims or [])
        wanted = check_dims(asked, self.dim) if asked else []
        if not wanted:
            return self._embed(checked, kind, batch_size)
        out = self._embed_dims(checked, kind, batch_size, wanted)
        return out if dims is not None else out[wanted[0]]

    def _embed_dims(
        self, texts: list[str], kind: Kind, batch_size: int, dims: list[int]
    ) -> dict[int, np.ndarray]:
        """{d: vectors} for each Matryoshka dimension; by default one pass, then truncation.

        A provider that computes truncated vectors itself (a remote API's `dimensions`)
        overrides this.
        """
        full = self._embed(texts, kind, batch_size)
        return {
            d: full if d == self.dim else matryoshka(full, d, renormalize=self.normalized)
            for d in dims
        }

    def encode_queries(self, queries: Sequence[str] | str, **options: object) -> np.ndarray:
        """`encode(queries, kind="query", ...)`."""
        return self.encode(queries, kind="query", **options)  # type: ignore[call-overload, no-any-return]

    def encode_documents(self, documents: Sequence[str] | str, **options: object) -> np.ndarray:
        """`encode(documents, kind="document", ...)`."""
        return self.encode(documents, kind="document", **options)  # type: ignore[call-overload, no-any-return]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, dim={self.dim})"
