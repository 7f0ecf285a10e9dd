"""A deterministic, fast fake `fastrag.Encoder` for collection and pipeline tests.

Bag of words hashed into `dim` dimensions, L2-normalised: texts sharing words are close.
`salt` changes both the hashing and the fingerprint (another salt = another vector space).
Importable from a subprocess once the tests folder is on ``sys.path``.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from fastrag.encoders.base import Encoder, Kind, normalize

_WORD = re.compile(r"\w+")


class FakeEncoder(Encoder):
    """Hashed bag-of-words vectors; records every call in `calls`."""

    def __init__(self, dim: int = 64, salt: str = "a") -> None:
        self.dim, self.salt, self.name = dim, salt, f"fake-{salt}"
        self.calls: list[tuple[Kind, list[str]]] = []

    @property
    def fingerprint(self) -> str:
        return f"fake-{self.salt}-{self.dim}"

    def _embed(self, texts: list[str], kind: Kind, batch_size: int) -> np.ndarray:
        self.calls.append((kind, list(texts)))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                h = hashlib.sha256((self.salt + word).encode()).digest()
                out[i, h[0] % self.dim] += 1.0
                out[i, h[1] % self.dim] += 0.5
        out += 1e-3  # no zero rows (text without word characters)
        return normalize(out)
