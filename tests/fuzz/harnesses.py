"""Fuzz targets for fastrag's file loaders and text analyzers, shared by the atheris driver
(`fuzz_one.py`, `run.py`) and the deterministic replay in `tests/test_fuzz.py`.

A loader target writes the bytes to a fresh temporary file and loads it. The only acceptable
outcomes are a successful load, after which the index must answer searches (and take an
add, a delete and a compaction) without an error, or `fastrag.IndexFormatError` / ValueError.
When the raw bytes are refused and start with the magic bytes, the target also loads them
re-sealed (`fileformat.reseal`: file size and checksum set to match), so that mutations reach
the structural checks behind the checksum. Anything else raises `Finding` (a crash of the
process is a finding too, seen by the driver).

The collection target writes the bytes as a collection's ``collection.sqlite`` next to the
index file of the seed collection, opens it and uses it (list, get, search, verify, add,
delete, commit): the only acceptable errors are CollectionError and IndexFormatError.

An analyzer target decodes the bytes to text in one of several ways (lone surrogates
included) and analyzes it: it must not raise, and must give non-empty, whitespace-free,
UTF-8-encodable str tokens, the same on a second call.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fileformat import reseal

import fastrag
from fastrag.collection.docstore import DocStore
from fastrag.collection.store import doc_crc
from fastrag.encoders import BM42Index, SpladeIndex
from fastrag.index import ApproxImpactIndex, ImpactIndex

warnings.simplefilter("ignore")  # EmptyDocumentWarning etc. are not findings


class Finding(Exception):
    """An outcome the target does not accept: an unexpected exception or a wrong result."""


_TMP: Path | None = None
_COUNTER = itertools.count()


def _tmpdir() -> Path:
    global _TMP
    if _TMP is None:
        # run.py points FASTRAG_FUZZ_TMP into its own temporary folder, removed at its end
        # (libFuzzer leaves the process with exit(), past any cleanup here)
        parent = os.environ.get("FASTRAG_FUZZ_TMP")
        _TMP = Path(tempfile.mkdtemp(prefix="fastrag-fuzz-", dir=parent))
    return _TMP


def cleanup() -> None:
    """Removes the temporary folder of this process."""
    global _TMP
    if _TMP is not None:
        for p in _TMP.iterdir():
            p.unlink(missing_ok=True)
        _TMP.rmdir()
        _TMP = None


# ---------------------------------------------------------------------------- loaders
def _exercise_bm25(index: fastrag.BM25) -> None:
    terms = list(index.vocabulary)[:4]
    ids = index.ids
    len(index)
    for algorithm in ("auto", "exhaustive", "maxscore"):
        index.search([terms, terms[:1], ["zz-unknown"]], k=3, algorithm=algorithm, threads=1)
    index.search("alpha beta", k=2, threads=1)
    if ids:
        index.search([terms], k=2, filter=ids[:1], threads=1)
        index.delete(ids[:1])
    index.add([["fuzz", *terms[:1]]], ids=["fuzz-new"])
    index.compact()
    index.search([terms], k=2, threads=1)


def _probe_query(index: ImpactIndex | ApproxImpactIndex) -> dict[int, float]:
    """A query of the index's first terms (within its vocabulary)."""
    n_terms = int(index.stats()["n_terms"])
    limit = index.vocab_size or max(n_terms, 1)
    return {t: 1.0 for t in range(min(n_terms, limit, 5))} or {0: 1.0}


def _exercise_impact(index: ImpactIndex) -> None:
    # ImpactIndex's own methods: a loaded BM42 index has no encoder to take texts
    n_terms = int(index.stats()["n_terms"])
    query = _probe_query(index)
    ids = index.ids
    len(index)
    index.idf(np.arange(n_terms + 2))
    for algorithm in ("auto", "exhaustive", "maxscore"):
        ImpactIndex.search(index, [query, {0: 2.0}], k=3, algorithm=algorithm, threads=1)
    ImpactIndex.search(index, query, k=2, threads=1, query_terms=2)
    if ids:
        ImpactIndex.search(index, query, k=2, filter=ids[:1], threads=1)
        index.delete(ids[:1])
    ImpactIndex.add(index, [{0: 0.5}], ids=["fuzz-new"])
    index.compact()
    ImpactIndex.search(index, query, k=2, threads=1)


def _exercise_dense(index: fastrag.DenseIndex) -> None:
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, index.dim)).astype(np.float32)
    ids = index.ids
    len(index)
    index.search(q, k=3, threads=1)
    index.search(q, k=3, exact=True, threads=1)
    if ids:
        index.get_vector(ids[0])
        index.search(q, k=2, filter=ids[:1], threads=1)
        index.delete(ids[:1])
    index.add(rng.standard_normal((1, index.dim)).astype(np.float32), ids=["fuzz-new"], threads=1)
    index.compact(threads=1)
    index.search(q, k=3, threads=1)


def _load_approx(path: Path, mmap: bool) -> ApproxImpactIndex:
    return ApproxImpactIndex.load(path)  # no memory-mapped mode: always read whole


def _exercise_approx(index: ApproxImpactIndex) -> None:
    query = _probe_query(index)
    ids = index.ids
    len(index)
    index.search([query, {0: 2.0}], k=3, threads=1)
    index.search(query, k=2, threads=1, query_cut=1, heap_factor=0.5)
    if ids:
        index.search(query, k=2, filter=ids[:1], threads=1)
        index.delete(ids[:1])
    path = _tmpdir() / f"approx{next(_COUNTER)}.frax"
    index.save(path)
    ApproxImpactIndex.load(path).search(query, k=2, threads=1)
    os.unlink(path)


def _load_docs(path: Path, mmap: bool) -> DocStore:
    return DocStore.load(path)


def _exercise_docs(store: DocStore) -> None:
    ids = list(store.crcs())
    assert len(store) == len(ids), (len(store), len(ids))
    try:
        found = store.get_many(ids)
    except ValueError:  # a record that fails its checksum: refused when read, by design
        found = None
    if found is not None:
        assert list(found) == ids
    store.remove(ids[:1])
    store.put([("fuzz-new", "text", "{}", doc_crc("fuzz-new", "text", "{}"))])
    path = _tmpdir() / f"docs{next(_COUNTER)}.frds"
    store.save(path)
    again = DocStore.load(path)
    assert again.get_many(["fuzz-new"])["fuzz-new"].text == "text"
    again.close()
    os.unlink(path)


LOADERS: dict[str, tuple[Callable[..., object], Callable[[object], None], str]] = {
    "docs": (_load_docs, _exercise_docs, ".frds"),
    "bm25": (fastrag.BM25.load, _exercise_bm25, ".fridx"),
    "impact": (ImpactIndex.load, _exercise_impact, ".fridx"),
    "splade": (SpladeIndex.load, _exercise_impact, ".fridx"),
    "bm42": (BM42Index.load, _exercise_impact, ".fridx"),
    "dense": (fastrag.DenseIndex.load, _exercise_dense, ".frdx"),
    "approx": (_load_approx, _exercise_approx, ".frax"),
}


def load_file(kind: str, data: bytes, mmap: bool) -> bool:
    """Loads `data` as a `kind` file; True when loaded (and exercised), False when refused."""
    load, exercise, suffix = LOADERS[kind]
    path = _tmpdir() / f"in{next(_COUNTER)}{suffix}"
    path.write_bytes(data)
    try:
        try:
            index = load(path, mmap=mmap)
        except ValueError:  # IndexFormatError is a ValueError
            return False
        except Exception as e:
            raise Finding(f"{kind} load (mmap={mmap}) raised {type(e).__name__}: {e}") from e
        try:
            exercise(index)
        except Exception as e:
            raise Finding(
                f"{kind} index loaded (mmap={mmap}) but failed: {type(e).__name__}: {e}"
            ) from e
        finally:
            del index
        return True
    finally:
        # a fresh name for every input: a mapped file is never rewritten in place
        os.unlink(path)
        for p in _tmpdir().glob(f"{path.name}.tmp-*"):
            p.unlink()


def load_target(kind: str, mmap: bool) -> Callable[[bytes], None]:
    """The fuzz target of one loader."""

    def target(data: bytes) -> None:
        if not load_file(kind, data, mmap):
            sealed = reseal(data)
            if sealed != data:
                load_file(kind, sealed, mmap)

    target.__name__ = f"load_{kind}{'_mmap' if mmap else ''}"
    return target


# ---------------------------------------------------------------------------- collections
COLLECTION_FILES = Path(__file__).resolve().parent / "seeds" / "collection_files"


def _exercise_collection(col: fastrag.Collection) -> None:
    col.verify()  # damage it does not report must not show later
    ids = [d.id for d in col.documents()]
    assert len(col) == len(ids), (len(col), len(ids))
    for d in ids[:3]:
        assert d in col and col.get(d).id == d, d
    col.search("river stone", k=3, method="bm25")
    col.info()
    col.add(["fuzz river text"], ids=["fuzz-new"])
    col.delete(ids[:1])
    col.commit()
    col.search("river", k=3, method="bm25")


def open_collection(data: bytes) -> bool:
    """Opens a collection folder whose collection.sqlite holds `data` (next to the index files
    of the seed collection); True when it opened (and was exercised), False when refused with
    CollectionError / IndexFormatError (both ValueErrors), also in a later step."""
    folder = _tmpdir() / f"col{next(_COUNTER)}"
    folder.mkdir()
    try:
        (folder / "collection.sqlite").write_bytes(data)
        for f in COLLECTION_FILES.iterdir():
            shutil.copy(f, folder / f.name)
        try:
            col = fastrag.Collection.open(folder)
        except ValueError:
            return False
        except Exception as e:
            raise Finding(f"collection open raised {type(e).__name__}: {e}") from e
        try:
            _exercise_collection(col)
        except ValueError:  # damage found on reading rows: refused, as on open
            return False
        except Exception as e:
            raise Finding(
                f"collection opened but failed: {type(e).__name__}: {e}"
            ) from e
        finally:
            try:
                col.close()
            except Exception as e:
                raise Finding(f"collection close raised {type(e).__name__}: {e}") from e
        return True
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def mutate_pages(data: bytes, seed: int, page: int = 4096) -> bytes:
    """A length-preserving mutation for database files (a custom mutator for libFuzzer, whose
    insertions and deletions shift every page and only test "not a database"): flipped bits,
    overwritten bytes (often near a page's end, where SQLite keeps cell contents), or a small
    integer written at a random place."""
    import random

    rng = random.Random(seed)
    d = bytearray(data)
    if not d:
        return bytes(d)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(3)
        if op == 0:
            i = rng.randrange(len(d))
            d[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            base = rng.randrange(max(1, len(d) // page)) * page
            i = min(len(d) - 1, base + page - 1 - int(rng.expovariate(1 / 600)) % page)
            d[i] = rng.randrange(256)
        else:
            i = rng.randrange(len(d))
            d[i] = rng.choice([0, 1, 2, 0x7F, 0x80, 0xFF])
    return bytes(d)


# ---------------------------------------------------------------------------- analyzers
def decode(data: bytes) -> str:
    """Text from bytes; the first byte picks the decoding (lone surrogates possible)."""
    if not data:
        return ""
    mode, rest = data[0] % 5, data[1:]
    if mode == 0:
        return rest.decode("utf-8", errors="replace")
    if mode == 1:
        return rest.decode("utf-8", errors="surrogateescape")  # U+DC80..U+DCFF
    if mode == 2:
        return rest[: len(rest) // 2 * 2].decode("utf-16-le", errors="surrogatepass")
    if mode == 3:
        return rest.decode("latin-1")
    # code points from 3 bytes each, any value below 0x110000 (surrogates, controls)
    return "".join(
        chr(int.from_bytes(rest[i : i + 3], "little") % 0x110000)
        for i in range(0, len(rest) - 2, 3)
    )


_ANALYZERS: dict[str, object] = {}


def _analyzer(name: str):
    if name not in _ANALYZERS:
        _ANALYZERS[name] = fastrag.get_analyzer(name)
    return _ANALYZERS[name]


def _check_tokens(name: str, text: str, tokens: object) -> None:
    if not isinstance(tokens, list):
        raise Finding(f"{name} analyzer returned {type(tokens).__name__}, not a list")
    for t in tokens:
        if not isinstance(t, str) or not t or t.isspace():
            raise Finding(f"{name} analyzer gave a bad token {t!r} for {text!r}")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            raise Finding(f"{name} analyzer gave a token {t!r} that is not UTF-8") from e


def analyzer_target(name: str) -> Callable[[bytes], None]:
    """The fuzz target of one analyzer ("english", "japanese", "bigram", "auto")."""

    def target(data: bytes) -> None:
        text = decode(data)
        analyzer = _analyzer(name)
        try:
            tokens = analyzer(text)
            again = analyzer.analyze_many([text, text[: len(text) // 2]])
            if name == "auto":
                fastrag.text.detect_language(text)
        except Exception as e:
            raise Finding(f"{name} analyzer raised {type(e).__name__}: {e} on {text!r}") from e
        _check_tokens(name, text, tokens)
        _check_tokens(name, text, again[1])
        if again[0] != tokens:
            raise Finding(f"{name} analyzer is not deterministic on {text!r}")

    target.__name__ = f"analyze_{name}"
    return target


_FAST_ANALYZERS: dict[int, fastrag.EnglishAnalyzer] = {}


def ascii_words_target(data: bytes) -> None:
    """BM25.add's fast path for ASCII text (`_core.AsciiWordCache`) against the English
    analyzer: the same term ids in the same order, for the text, its ASCII letters only, its
    halves and its upper case, with the options the second byte picks (min_length, lowercase,
    stemmer, stopwords); a second pass over the same texts meets a full cache."""
    text = decode(data)
    key = data[1] % 16 if len(data) > 1 else 0
    if key not in _FAST_ANALYZERS:
        _FAST_ANALYZERS[key] = fastrag.EnglishAnalyzer(
            min_length=key % 3 + 1,
            lowercase=not key & 4,
            stemmer=None if key & 8 else "english",
            stopwords=["Flows", "b", "x_y", "é"] if key % 3 == 2 else "english",
        )
    analyzer = _FAST_ANALYZERS[key]
    plain = text.encode("ascii", "ignore").decode("ascii")
    docs = [text, plain, plain[: len(plain) // 2], plain[len(plain) // 2 :], plain.upper(), ""]
    index = fastrag.BM25(analyzer=analyzer)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fastrag.EmptyDocumentWarning)
            fast = [index._encode_texts(docs, analyzer) for _ in range(2)]
        ref = fastrag.BM25(analyzer=analyzer)
        expect = ref._term_ids(analyzer.analyze_many(docs))
    except Exception as e:
        raise Finding(f"the ASCII fast path raised {type(e).__name__}: {e} on {docs!r}") from e
    for indptr, ids in fast:
        if not (np.array_equal(indptr, expect[0]) and np.array_equal(ids, expect[1])):
            raise Finding(f"the ASCII fast path gave other term ids than the analyzer on {docs!r}")
    if list(index._vocab.items()) != list(ref._vocab.items()):
        raise Finding(f"the ASCII fast path numbered the terms otherwise on {docs!r}")


# ---------------------------------------------------------------------------- registry
def _targets() -> dict[str, Callable[[bytes], None]]:
    out: dict[str, Callable[[bytes], None]] = {}
    for kind in LOADERS:
        out[kind] = load_target(kind, mmap=False)
        if kind not in ("docs", "approx"):  # docs: always memory-mapped; approx: never
            out[f"{kind}_mmap"] = load_target(kind, mmap=True)
    out["collection"] = open_collection
    for name in ("english", "japanese", "bigram", "auto"):
        out[f"analyzer_{name}"] = analyzer_target(name)
    out["analyzer_ascii_words"] = ascii_words_target
    return out


TARGETS = _targets()
#: custom libFuzzer mutators: (data, max_size, seed) -> data
MUTATORS = {"collection": lambda data, max_size, seed: mutate_pages(data, seed)[:max_size]}
SEEDS = Path(__file__).resolve().parent / "seeds"


def seed_dir(kind: str) -> Path:
    """Seeds of a target: the mmap variant of a loader shares the loader's seeds."""
    base = kind.removesuffix("_mmap")
    return SEEDS / ("analyzer" if base.startswith("analyzer_") else base)
