"""Writes the seed corpus of the fuzzers: tiny valid files of each index format and sample
texts for the analyzers, under tests/fuzz/seeds/<kind>/ (a few KB each).

    python tests/fuzz/make_seeds.py          # keeps existing files
    python tests/fuzz/make_seeds.py --force  # rewrites them

The golden files of tests/golden/ are copied in as well. SPLADE and BM42 seeds are impact
indexes given those classes' settings without loading a model (the files are what the model
classes save: the same core file with their metadata).
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np

import fastrag
from fastrag.encoders import BM42Index, SpladeIndex
from fastrag.index import ImpactIndex

HERE = Path(__file__).resolve().parent
SEEDS = HERE / "seeds"
GOLDEN = HERE.parent / "golden"

TEXTS = [
    "The boundary layer of a flat plate.",
    "Heat transfer in hypersonic flow.",
    "東京は日本の首都です。",
    "Pythonの本を読みました",
    "",
]


def _bm25_files(tmp: Path) -> dict[str, Path]:
    out = {}
    index = fastrag.BM25(analyzer="english")
    index.add(TEXTS[:2], ids=["a", "b"])
    index.add(["A third text on flow.", "and one more"], ids=["c", 7])
    index.delete(["b"])
    out["english_deleted.fridx"] = tmp / "1"
    index.save(out["english_deleted.fridx"])
    index = fastrag.BM25(analyzer="bigram", method="bm25l")
    index.add(TEXTS, ids=["a", "b", "c", "d", "e"])
    out["bigram_bm25l.fridx"] = tmp / "2"
    index.save(out["bigram_bm25l.fridx"])
    index = fastrag.BM25(method="atire")
    out["empty.fridx"] = tmp / "3"
    index.save(out["empty.fridx"])
    return out


def _impact(vocab_size: int | None = 16, **options) -> ImpactIndex:
    index = ImpactIndex(vocab_size=vocab_size, **options)
    index.add([{1: 0.5, 3: 1.25}, {3: 2.0}, {}, {0: 0.1, 1: 0.2, 2: 0.3}], ids=["a", "b", "c", 4])
    index.delete(["b"])
    return index


def _impact_files(tmp: Path) -> dict[str, Path]:
    out = {}
    for name, index in {
        "plain.fridx": _impact(),
        "uint8.fridx": _impact(None, quantize="uint8", doc_terms=2),
        "empty.fridx": ImpactIndex(),
    }.items():
        out[name] = tmp / name
        index.save(out[name])
    return out


def _splade_files(tmp: Path) -> dict[str, Path]:
    index = _impact(16)
    index.__class__ = SpladeIndex
    index.query_mode, index.batch_size = "idf", 32
    index._fingerprint, index._encoder = "fuzz-seed-model", None
    path = tmp / "splade.fridx"
    index.save(path)
    return {"splade.fridx": path}


def _bm42_files(tmp: Path) -> dict[str, Path]:
    index = _impact(None)
    index.__class__ = BM42Index
    index._set_words("english", "english", 0.5)
    index.batch_size = 16
    index._vocab = {"flow": 0, "plate": 1, "heat": 2, "layer": 3}
    index._fingerprint, index._encoder = "fuzz-seed-model", None
    path = tmp / "bm42.fridx"
    index.save(path)
    return {"bm42.fridx": path}


def _dense_files(tmp: Path) -> dict[str, Path]:
    out = {}
    rng = np.random.default_rng(0)
    for name, options in {
        "cosine_f16.frdx": {"metric": "cosine", "storage": "float16"},
        "l2_int8_norescore.frdx": {"metric": "l2", "storage": "int8", "rescore": False},
        "ip_f32.frdx": {"metric": "ip"},
    }.items():
        index = fastrag.DenseIndex(8, M=4, ef_construction=16, seed=1, **options)
        index.add(rng.standard_normal((12, 8)).astype(np.float32), threads=1)
        index.delete([3, 5])
        out[name] = tmp / name
        index.save(out[name])
    out["empty.frdx"] = tmp / "empty.frdx"
    fastrag.DenseIndex(16).save(out["empty.frdx"])
    return out


def _docs_files(tmp: Path) -> dict[str, Path]:
    from fastrag.collection.docstore import DocStore
    from fastrag.collection.store import doc_crc

    rows = [("a", "river stone flows", '{"lang": "en"}'), ("b", "東京の川", "{}"),
            ("c", "x" * 300, '{"year": 3}')]
    store = DocStore.from_rows([(d, t, m, doc_crc(d, t, m)) for d, t, m in rows])
    store.save(tmp / "small.frds")
    DocStore().save(tmp / "empty.frds")
    return {"small.frds": tmp / "small.frds", "empty.frds": tmp / "empty.frds"}


def _collection_files(tmp: Path) -> dict[str, Path]:
    """A BM25-only collection after two commits: its database is the seed, its index file
    (bm25.2.fridx) goes to seeds/collection_files, copied next to every fuzzed database."""
    col = fastrag.Collection.create(tmp / "col", encoder=None, analyzer="english")
    col.add(["river stone flows", "cloud lamp", "東京の川"], ids=["a", "b", "c"],
            metadata=[{"lang": "en", "year": 3}, None, {"lang": "ja"}])
    col.commit()
    col.delete(["b"])
    col.add(["paper harbor river"], ids=["d"])
    col.commit()
    col.close()
    return {"small.sqlite": tmp / "col" / "collection.sqlite",
            "bm25.2.fridx": tmp / "col" / "bm25.2.fridx"}


def _analyzer_seeds() -> dict[str, bytes]:
    # the first byte picks the decoding in harnesses.decode: 0 utf-8, 1 surrogateescape,
    # 2 utf-16-le (lone surrogates), 3 latin-1, 4 raw code points
    return {
        "english.txt": b"\x00The Boundary-Layer's flows, running quickly (2024)!",
        "japanese.txt": b"\x00" + "東京は日本の首都です。ｶﾀｶﾅと全角ＡＢＣ、行きました".encode(),
        "mixed.txt": b"\x00" + "Pythonの本 and 中文 text, émigré naïve ﬁ ligature".encode(),
        "surrogates.txt": b"\x02" + "a\ud800b\udfffc 日本".encode("utf-16-le", "surrogatepass"),
        "escape.txt": b"\x01abc \xff\xfe \xe6\x97\xa5",
        "latin1.txt": b"\x03caf\xe9 na\xefve \xa0 \xad",
        "codepoints.txt": b"\x04" + b"".join(
            c.to_bytes(3, "little") for c in (0x41, 0x3042, 0xD800, 0x10FFFF, 0x200B, 0x0301)
        ),
        "blank.txt": b"\x00 \t\n" + "\u3000\u00a0".encode(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="rewrite existing seed files")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    written = 0

    def put(kind: str, name: str, data: bytes) -> None:
        nonlocal written
        path = SEEDS / kind / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and not args.force:
            return
        path.write_bytes(data)
        written += 1

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for kind, make in {
            "bm25": _bm25_files, "impact": _impact_files, "splade": _splade_files,
            "bm42": _bm42_files, "dense": _dense_files, "collection": _collection_files,
            "docs": _docs_files,
        }.items():
            sub = tmp / kind
            sub.mkdir()
            for name, path in make(sub).items():
                # a collection's index files are not inputs: they sit next to each input
                beside = kind == "collection" and name.endswith(".fridx")
                put("collection_files" if beside else kind, name, path.read_bytes())
    for golden, kind in {
        "sparse_v1.fridx": "bm25", "sparse_v1_bm25plus.fridx": "bm25",
        "sparse_v1_impact.fridx": "impact", "dense_v1.frdx": "dense",
        "dense_v1_int8.frdx": "dense",
    }.items():
        put(kind, f"golden_{golden}", (GOLDEN / golden).read_bytes())
    # the approximate index's golden file is a whole index (ids included): a loadable seed
    put("approx", "approx_v2.frax", (GOLDEN / "approx_v2.frax").read_bytes())
    for name, data in _analyzer_seeds().items():
        put("analyzer", name, data)
    print(f"{written} seed files written under {SEEDS}")


if __name__ == "__main__":
    main()
