"""A collection's dense storage: "auto" (the default) keeps float32 vectors until the leg holds
`legs.AUTO_INT8_MIN`, then walks int8 codes (ranges trained on every vector so far) and keeps
the float32 vectors to rescore; explicit storages stay as given; a failed add loses nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fake_encoder import FakeEncoder
from fastrag.collection import Collection, legs
from fastrag.index import DenseIndex

MIN = legs.AUTO_INT8_MIN


def _docs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(4000)]
    return [" ".join(rng.choice(words, 25)) for _ in range(n)], [f"d{i}" for i in range(n)]


def test_auto_turns_int8_at_the_threshold_and_keeps_its_results(tmp_path: Path) -> None:
    texts, ids = _docs(MIN + 200)
    col = Collection.create(tmp_path / "c", encoder=FakeEncoder(dim=32))
    assert col.settings["storage"] == "auto"
    first = MIN - 300
    col.add(texts[:first], ids=ids[:first])
    assert (col.dense.storage, len(col.dense)) == ("float32", first)
    assert col.info()["dense_storage"] == "float32"
    col.commit()
    before = [r.id for r in col.search(texts[5], k=5, method="dense")]
    col.add(texts[first : MIN + 100], ids=ids[first : MIN + 100])  # crosses the threshold
    assert (col.dense.storage, col.dense.rescore, len(col.dense)) == ("int8", True, MIN + 100)
    col.commit()
    col.add(texts[MIN + 100 :], ids=ids[MIN + 100 :])
    col.commit()
    col.close()
    with Collection.open(tmp_path / "c", encoder=FakeEncoder(dim=32)) as col:
        assert (col.dense.storage, len(col.dense)) == ("int8", MIN + 200)
        assert (col.info()["storage"], col.info()["dense_storage"]) == ("auto", "int8")
        # every chunk's own text finds it first, old (re-added) and new alike
        for i in (0, 5, first + 1, MIN + 150):
            assert col.search(texts[i], k=1, method="dense")[0].id == ids[i]
        # float32 rescoring: the scores are exact cosines, so the top hits stay as before
        assert [r.id for r in col.search(texts[5], k=5, method="dense")][:1] == before[:1]
        exact = FakeEncoder(dim=32).encode_documents([texts[5], texts[7]])
        hit = col.search(texts[5], k=2, method="dense")
        assert hit[0].score == pytest.approx(1.0, abs=1e-5)
        if hit[1].id == "d7":
            assert hit[1].score == pytest.approx(float(exact[0] @ exact[1]), abs=1e-5)


def test_explicit_storage_stays_and_bad_storage_is_refused(tmp_path: Path) -> None:
    texts, ids = _docs(MIN + 10)
    col = Collection.create(tmp_path / "f", encoder=FakeEncoder(dim=16), storage="float32")
    col.add(texts, ids=ids)
    assert col.dense.storage == "float32"
    col.close()
    with pytest.raises(ValueError, match="storage must be one of auto, float32, int8"):
        Collection.create(tmp_path / "bad", encoder=FakeEncoder(dim=16), storage="int9")
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def test_a_failed_add_at_the_threshold_keeps_the_float_index(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    texts, ids = _docs(MIN + 50)
    col = Collection.create(tmp_path / "c", encoder=FakeEncoder(dim=16))
    col.add(texts[:100], ids=ids[:100])
    col.commit()
    old = col.dense
    real = legs.add_vectors

    def grows_then_fails(*args: object, **kwargs: object) -> DenseIndex:
        real(*args, **kwargs)  # type: ignore[arg-type]
        raise RuntimeError("disk full")

    monkeypatch.setattr(legs, "add_vectors", grows_then_fails)
    with pytest.raises(RuntimeError, match="disk full"):
        col.add(texts[100:], ids=ids[100:])
    assert col.dense is old and (old.storage, len(old)) == ("float32", 100)
    assert len(col) == 100 and col.search(texts[3], k=1, method="dense")[0].id == "d3"
    monkeypatch.setattr(legs, "add_vectors", real)
    col.add(texts[100:], ids=ids[100:])
    col.commit()
    assert (col.dense.storage, len(col.dense), len(col)) == ("int8", MIN + 50, MIN + 50)
    col.close()


def test_set_index_under_auto(tmp_path: Path) -> None:
    texts, ids = _docs(MIN + 5)
    enc = FakeEncoder(dim=16)
    col = Collection.create(tmp_path / "c", encoder=enc)
    vecs = enc.encode_documents(texts)
    col.add(texts, ids=ids, vectors=vecs, skip_legs="dense")
    with pytest.raises(ValueError, match="storage='float16'"):
        col.set_index("dense", DenseIndex(encoder=enc, storage="float16"))
    plain = DenseIndex(encoder=enc)  # a float32 graph past the threshold: made int8
    plain.add(vecs, ids=list(range(len(texts))))
    col.set_index("dense", plain)
    assert (col.dense.storage, col.dense.rescore, len(col.dense)) == ("int8", True, MIN + 5)
    col.commit()
    assert col.search(texts[9], k=1, method="dense")[0].id == "d9"
    col.close()


def test_empty_like_keeps_settings_and_fingerprint() -> None:
    enc = FakeEncoder(dim=8)
    ix = DenseIndex(encoder=enc, metric="ip", M=8, ef_construction=50, ef_search=33)
    for storage, rescore in ((None, False), ("int8", True), ("int4", False)):
        new = ix.empty_like(storage=storage)
        assert (new.dim, new.metric, new.M, new.ef_construction, new.ef_search) == (
            8, "ip", 8, 50, 33)
        assert (new.storage, new.rescore, new.fingerprint, len(new)) == (
            storage or "float32", rescore, ix.fingerprint, 0)
        assert new.encoder is enc


@pytest.mark.parametrize(("sizes", "method"), [((MIN + 100, 300), "insert"),
                                               ((700, 600), "insert")])
def test_merged_shards_follow_auto(tmp_path: Path, sizes: tuple[int, int], method: str) -> None:
    """A merge inserts into the largest shard's graph, int8 or float32 alike (both are what
    "auto" makes), and the merged graph is int8 once it holds MIN vectors."""
    from fastrag.distributed.merge import merge_shards

    texts, ids = _docs(sum(sizes), seed=1)
    folders, at = [], 0
    for i, n in enumerate(sizes):
        with Collection.create(tmp_path / f"s{i}", encoder=FakeEncoder(dim=16)) as shard:
            shard.add(texts[at : at + n], ids=ids[at : at + n])
            shard.commit()
            assert shard.dense.storage == ("int8" if n >= MIN else "float32")
        folders.append(tmp_path / f"s{i}")
        at += n
    out = merge_shards(folders, tmp_path / "m", encoder=FakeEncoder(dim=16))
    assert out["dense"] == method
    with Collection.open(tmp_path / "m", encoder=FakeEncoder(dim=16)) as merged:
        assert (merged.dense.storage, merged.dense.rescore, len(merged.dense)) == (
            "int8", True, sum(sizes))
        for i in (0, sizes[0] + 3, sum(sizes) - 1):
            assert merged.search(texts[i], k=1, method="dense")[0].id == ids[i]
