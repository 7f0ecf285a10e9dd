"""Noise injectors: deterministic for a seed; each kind changes what it says and nothing else."""

from __future__ import annotations

import copy
import json
import random
import re
import unicodedata
from pathlib import Path

import pytest
from click.testing import CliRunner

import fastrag.eval.noise as noise_module
from fastrag.cli import NOISE_KINDS, main
from fastrag.eval import Dataset, evaluate_noise, inject, load_beir, outranking
from fastrag.eval.noise import (
    KINDS,
    NoisyDataset,
    fullwidth,
    halfwidth_katakana,
    typo_english,
    typo_japanese,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ALL = [(k, t) for k, spec in KINDS.items() for t in spec.targets]
WORD = re.compile(r"\S+")

EN_DOCS = {
    "e1": (
        "Boundary layers",
        "The boundary layer on a flat plate thickens downstream. "
        "Measurements by Prandtl at Mach 2.5 agree with theory within 3 percent. "
        "Transition occurs near a Reynolds number of 500000.",
    ),
    "e2": (
        "Heat transfer",
        "Heat transfer to a blunt body at hypersonic speed was measured. "
        "The stagnation point heating rate rises with the square root of density. "
        "Tests in the Langley tunnel used 12 models.",
    ),
    "e3": (
        "Shell buckling",
        "Buckling of thin cylindrical shells under axial load is studied. "
        "Imperfections reduce the critical load by 40 percent. "
        "Donnell equations give the classical buckling stress.",
    ),
    "e4": (
        "Flutter",
        "Flutter of a swept wing was observed in the wind tunnel. "
        "The flutter speed depends on the torsional stiffness and the mass ratio. "
        "Theodorsen functions describe the unsteady aerodynamic forces.",
    ),
    "e5": (
        "Supersonic inlets",
        "Supersonic inlets decelerate the flow through oblique shocks. "
        "The pressure recovery was 0.92 at Mach 3. "
        "Boundary layer bleed improves the inlet stability.",
    ),
    "e6": (
        "Laminar flow",
        "Laminar flow control delays transition on the wing. "
        "Suction through porous surfaces stabilises the boundary layer. "
        "Drag falls by 15 percent in flight tests over Edwards.",
    ),
}
EN_QUERIES = {
    "q1": "boundary layer on a flat plate",
    "q2": "hypersonic heat transfer to blunt bodies",
    "q3": "buckling of cylindrical shells",
    "q4": "wing flutter speed",
    "q5": "unjudged question about nothing",
}
EN_QRELS = {"q1": {"e1": 2, "e6": 1}, "q2": {"e2": 1}, "q3": {"e3": 1}, "q4": {"e4": 1}}

JA_DOCS = {
    "j1": (
        "梅雨",
        "梅雨は東アジアの広範囲でみられる特有の気象現象で、5月から7月にかけて来る雨の多い期間のこと。"
        "雨季の一種である。",
    ),
    "j2": (
        "東京",
        "東京は日本の首都であり、人口は約1400万人である。政治と経済の中心地として機能している。",
    ),
    "j3": (
        "ラオス",
        "ラオスは東南アジアの内陸国で、首都はビエンチャンである。メコン川が国土を流れている。",
    ),
    "j4": (
        "コンピュータ",
        "コンピュータはプログラムに従って計算を行う機械である。1946年にエニアックが完成した。",
    ),
}
JA_QUERIES = {
    "a1": "日本で梅雨がないのはどこか",
    "a2": "日本の首都はどこですか",
    "a3": "ラオスの首都は?",
    "a4": "エニアックが完成した年は",
}
JA_QRELS = {"a1": {"j1": 1}, "a2": {"j2": 1}, "a3": {"j3": 1}, "a4": {"j4": 1}}


def make(docs: dict, queries: dict, qrels: dict, name: str = "toy") -> Dataset:
    corpus = {i: {"title": t, "text": x} for i, (t, x) in docs.items()}
    return Dataset(name, corpus, dict(queries), copy.deepcopy(qrels))


@pytest.fixture
def en() -> Dataset:
    return make(EN_DOCS, EN_QUERIES, EN_QRELS, "toy-en")


@pytest.fixture
def ja() -> Dataset:
    return make(JA_DOCS, JA_QUERIES, JA_QRELS, "toy-ja")


@pytest.fixture
def mixed() -> Dataset:
    return make({**EN_DOCS, **JA_DOCS}, {**EN_QUERIES, **JA_QUERIES}, {**EN_QRELS, **JA_QRELS})


def state(noisy: NoisyDataset) -> tuple:
    d = noisy.dataset
    return (
        d.corpus,
        d.queries,
        d.qrels,
        noisy.modified_docs,
        noisy.modified_queries,
        noisy.added_docs,
        noisy.targets,
    )


def is_subsequence(small: list | str, big: list | str) -> bool:
    it = iter(big)
    return all(x in it for x in small)


def one_edit(a: str, b: str) -> bool:
    """b is a with one letter swapped with its neighbour, dropped or substituted."""
    if len(b) == len(a) - 1:
        return any(a[:i] + a[i + 1 :] == b for i in range(len(a)))
    if len(a) != len(b):
        return False
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    if len(diff) == 1:
        return True
    return (
        len(diff) == 2
        and diff[1] == diff[0] + 1
        and a[diff[0]] == b[diff[1]]
        and a[diff[1]] == b[diff[0]]
    )


# ---------------------------------------------------------------------------- determinism


@pytest.mark.parametrize(("kind", "target"), ALL)
def test_same_seed_same_dataset_other_seed_other(mixed: Dataset, kind: str, target: str) -> None:
    before = copy.deepcopy((mixed.corpus, mixed.queries, mixed.qrels))
    a = inject(mixed, kind, 0.5, seed=7, target=target)
    b = inject(mixed, kind, 0.5, seed=7, target=target)
    assert state(a) == state(b)
    assert any(state(inject(mixed, kind, 0.5, seed=s, target=target)) != state(a) for s in (8, 9))
    assert (mixed.corpus, mixed.queries, mixed.qrels) == before  # input never mutated
    assert a.dataset.corpus is not mixed.corpus and a.dataset.qrels is not mixed.qrels


@pytest.mark.parametrize(("kind", "target"), ALL)
def test_rate_zero_changes_nothing(mixed: Dataset, kind: str, target: str) -> None:
    noisy = inject(mixed, kind, 0.0, seed=1, target=target)
    assert (noisy.dataset.corpus, noisy.dataset.queries, noisy.dataset.qrels) == (
        mixed.corpus,
        mixed.queries,
        mixed.qrels,
    )
    assert noisy.summary() == dict.fromkeys(
        ("docs_modified", "queries_modified", "docs_added", "queries_targeted"), 0
    )


def test_invalid_arguments(en: Dataset) -> None:
    with pytest.raises(ValueError, match="unknown noise kind"):
        inject(en, "prior", 0.1)
    with pytest.raises(ValueError, match="goes into corpus"):
        inject(en, "datatype", 0.1, target="queries")
    for rate in (-0.1, 1.5, True, "0.1"):
        with pytest.raises(ValueError, match="rate must be"):
            inject(en, "orthographic", rate)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed must be"):
        inject(en, "orthographic", 0.1, seed=1.5)  # type: ignore[arg-type]
    assert list(KINDS) == NOISE_KINDS  # the CLI's --noise choices


# ---------------------------------------------------------------------------- typos


def test_typo_english_is_one_edit() -> None:
    rng = random.Random(0)
    for word in ["boundary", "Flutter", "aab", "eee", "supersonic", "xyz"] * 40:
        new = typo_english(word, rng)
        assert new != word and one_edit(word, new), (word, new)


def test_width_variants_round_trip_through_nfkc() -> None:
    assert fullwidth("Mach 2.5") == "Ｍａｃｈ ２．５"
    assert halfwidth_katakana("ガイドブック・パン") == "ｶﾞｲﾄﾞﾌﾞｯｸ・ﾊﾟﾝ"
    for text in ("Mach 2.5", "ガイドブック・パン", "ヴァイオリンとピアノ"):
        assert unicodedata.normalize("NFKC", fullwidth(halfwidth_katakana(text))) == text


def test_typo_japanese_per_script() -> None:
    rng = random.Random(3)
    seen: dict[str, set[str]] = {}
    for unit in ["機械", "気象", "がっこう", "コンピュータ", "ABC", "1946", "梅雨"] * 30:
        new = typo_japanese(unit, rng)
        assert new != unit
        seen.setdefault(unit, set()).add(new)
    assert "機会" in seen["機械"] or "機階" in seen["機械"] or "器械" in seen["機械"]
    assert seen["梅雨"] <= {"梅", "雨"}  # no homophone listed: only a dropped character
    assert any(unicodedata.normalize("NFKC", s) == "コンピュータ" for s in seen["コンピュータ"])
    assert "ＡＢＣ" in seen["ABC"] and seen["1946"] == {"１９４６"}
    assert any(s in seen["がっこう"] for s in ("かっこう", "がつこう", "ガっこう"))
    with pytest.raises(ValueError, match="no perturbation"):
        typo_japanese("梅", rng)


# ---------------------------------------------------------------------------- what changes


def test_orthographic_corpus_changes_only_words(en: Dataset) -> None:
    noisy = inject(en, "orthographic", 0.3, seed=0)
    out = noisy.dataset
    assert list(out.corpus) == list(en.corpus) and out.queries == en.queries
    assert out.qrels == en.qrels and not noisy.added_docs and not noisy.modified_queries
    changed = eligible = 0
    for did, doc in en.corpus.items():
        for key in ("title", "text"):
            old, new = WORD.findall(doc[key]), WORD.findall(out.corpus[did][key])
            assert len(old) == len(new)  # a typo never splits or joins words
            for a, b in zip(old, new, strict=True):
                eligible += len(re.findall(r"[^\W\d_]{3,}", a))
                if a != b:
                    changed += 1
                    assert one_edit(a, b), (a, b)
    assert sorted(noisy.modified_docs) == sorted(
        d for d in en.corpus if en.corpus[d] != out.corpus[d]
    )
    assert 0.2 < changed / eligible < 0.4


def test_orthographic_japanese_changes_only_word_characters(ja: Dataset) -> None:
    noisy = inject(ja, "orthographic", 1.0, seed=0)
    word_chars = re.compile(r"[\u3005\u3041-\u30ff\u4e00-\u9fff\uff10-\uff9fA-Za-z0-9]")
    for did, doc in ja.corpus.items():
        new = noisy.dataset.corpus[did]
        assert new["text"] != doc["text"]
        # Punctuation and symbols stay where they were, in order.
        assert word_chars.sub("", new["text"]) == word_chars.sub("", doc["text"])
    assert noisy.dataset.queries == ja.queries and noisy.dataset.qrels == ja.qrels


@pytest.mark.parametrize("kind", ["orthographic", "query"])
def test_query_noise_changes_only_queries(mixed: Dataset, kind: str) -> None:
    noisy = inject(mixed, kind, 0.5, seed=2, target="queries")
    out = noisy.dataset
    assert out.corpus == mixed.corpus and out.qrels == mixed.qrels
    assert list(out.queries) == list(mixed.queries) and not noisy.modified_docs
    assert noisy.modified_queries and set(noisy.modified_queries) == {
        q for q in mixed.queries if out.queries[q] != mixed.queries[q]
    }
    if kind == "orthographic":
        for q in EN_QUERIES:
            assert len(WORD.findall(out.queries[q])) == len(WORD.findall(mixed.queries[q]))
    else:
        text = " ".join(out.queries.values())
        assert any(f in text for f in noise_module._FILLERS["ja"])  # in Japanese queries
        assert re.search(r"\b(um|uh|like|basically|actually|well|so|please|just)\b", text)


@pytest.mark.parametrize("kind", ["datatype", "illegal"])
def test_insertions_keep_every_original_token(mixed: Dataset, kind: str) -> None:
    noisy = inject(mixed, kind, 0.3, seed=4)
    out = noisy.dataset
    assert out.queries == mixed.queries and out.qrels == mixed.qrels
    assert list(out.corpus) == list(mixed.corpus) and not noisy.added_docs
    inserted = total = 0
    for did, doc in mixed.corpus.items():
        new = out.corpus[did]
        assert new["title"] == doc["title"]
        assert is_subsequence(doc["text"], new["text"])
        # Every sentence stays whole (insertions go between sentences), in order.
        at = 0
        for sentence in re.split(r"(?<=[.!?])\s+|(?<=[。！？])", doc["text"]):
            at = new["text"].index(sentence, at) + len(sentence)
        inserted += len(new["text"]) - len(doc["text"])
        total += len(doc["text"])
    assert noisy.modified_docs and 0.1 < inserted / total < 0.6
    extra = " ".join(out.corpus[d]["text"] for d in noisy.modified_docs)
    if kind == "datatype":
        assert re.search(r"https://|def \w+\(|\|---\||<div|\{\"", extra)
    else:
        assert not re.search(r"https://|def \w+\(|\|---\|", extra)


@pytest.mark.parametrize("kind", ["semantic", "counterfactual"])
def test_added_documents_leave_the_rest_alone(mixed: Dataset, kind: str) -> None:
    noisy = inject(mixed, kind, 0.5, seed=5)
    out = noisy.dataset
    assert out.queries == mixed.queries and out.qrels == mixed.qrels
    assert {d: out.corpus[d] for d in mixed.corpus} == mixed.corpus
    added = [d for d in out.corpus if d not in mixed.corpus]
    assert added == list(noisy.added_docs) and len(added) == 5  # 0.5 x 10 documents
    assert all(d.startswith(f"noise:{kind}:") for d in added)
    assert not noisy.modified_docs and not noisy.modified_queries
    for new_id, source in noisy.added_docs.items():
        assert any(source in rel for rel in mixed.qrels.values())
        new = out.corpus[new_id]
        assert new != mixed.corpus[source]
        if kind == "counterfactual":
            assert new["title"] == mixed.corpus[source]["title"]
        else:
            # Sentences of other documents, none relevant to the targeted queries.
            sentences = re.findall(r"[^.。]+[.。]", new["text"])
            assert sentences
            queries = [q for q, rel in mixed.qrels.items() if source in rel]
            banned = {d for q in queries for d in mixed.qrels[q]}
            allowed = " ".join(mixed.corpus[d]["text"] for d in mixed.corpus if d not in banned)
            assert all(s.strip() in allowed for s in sentences)
    for qid, ids in noisy.targets.items():
        assert any(noisy.added_docs[a] in mixed.qrels[qid] for a in ids)


def test_counterfactual_changes_numbers_and_entities(en: Dataset, ja: Dataset) -> None:
    for data in (en, ja):
        noisy = inject(data, "counterfactual", 1.0, seed=0)
        relevant = {d for rel in data.qrels.values() for d in rel}
        assert sorted(noisy.added_docs.values()) == sorted(relevant)  # one copy each
        for new_id, source in noisy.added_docs.items():
            old, new = data.corpus[source]["text"], noisy.dataset.corpus[new_id]["text"]
            old_numbers, new_numbers = re.findall(r"\d+", old), re.findall(r"\d+", new)
            assert len(old_numbers) == len(new_numbers)
            assert all(a != b for a, b in zip(old_numbers, new_numbers, strict=True))
            if data is en:
                assert len(WORD.findall(old)) == len(WORD.findall(new))
                words = [
                    (a, b)
                    for a, b in zip(old.split(), new.split(), strict=True)
                    if not re.search(r"\d", a)
                ]
                assert any(a != b for a, b in words)  # an entity changed, not only numbers


def test_added_ids_never_collide(en: Dataset) -> None:
    en.corpus["noise:semantic:0"] = {"title": "taken", "text": "An existing document."}
    noisy = inject(en, "semantic", 0.5, seed=0)
    assert "noise:semantic:0" not in noisy.added_docs
    assert noisy.dataset.corpus["noise:semantic:0"]["title"] == "taken"
    assert len(noisy.dataset.corpus) == len(en.corpus) + len(noisy.added_docs)


# ---------------------------------------------------------------------------- evaluation


def test_outranking_counts_added_documents_above_relevant(en: Dataset) -> None:
    noisy = NoisyDataset(
        en,
        "semantic",
        "corpus",
        0.1,
        0,
        added_docs={"noise:a": "e1", "noise:b": "e2"},
        targets={"q1": ["noise:a"], "q2": ["noise:b"], "q3": ["noise:a"]},
    )
    run = {
        "q1": {"noise:a": 3.0, "e1": 2.0},  # added above relevant: counts
        "q2": {"e2": 3.0, "noise:b": 2.0},  # relevant first: does not
        "q3": {"noise:b": 1.0},  # no relevant retrieved, an added one is: counts
        "q4": {"noise:a": 5.0},  # not a targeted query
    }
    assert outranking(run, noisy) == {"queries": 3, "count": 2, "fraction": pytest.approx(2 / 3)}


def test_evaluate_noise_reports_clean_noisy_and_outranking(en: Dataset) -> None:
    result = evaluate_noise(
        en, "bm25", kind="counterfactual", rate=0.5, seed=0, options={"analyzer": "english"}
    )
    row = result.to_json()
    assert {
        "method",
        "queries",
        "ndcg@10",
        "recall@100",
        "mrr@10",
        "noise",
        "rate",
        "seed",
        "noisy",
        "delta_ndcg@10",
        "outranked",
    } <= set(row)
    assert row["noise"] == "counterfactual" and row["queries"] == 4
    assert row["delta_ndcg@10"] == pytest.approx(row["noisy"]["ndcg@10"] - row["ndcg@10"])
    assert row["outranked"]["queries"] == len(inject(en, "counterfactual", 0.5, 0).targets)
    plain = evaluate_noise(
        en, "bm25", kind="query", rate=0.3, options={"analyzer": "english"}, clean=result.clean
    )
    assert plain.outranked is None and "outranked" not in plain.to_json()
    assert plain.clean is result.clean


def write_beir(root: Path, data: Dataset) -> Path:
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for i, d in data.corpus.items():
            f.write(json.dumps({"_id": i, **d}, ensure_ascii=False) + "\n")
    with (root / "queries.jsonl").open("w", encoding="utf-8") as f:
        for i, q in data.queries.items():
            f.write(json.dumps({"_id": i, "text": q}, ensure_ascii=False) + "\n")
    lines = [f"{q}\t{d}\t{g}" for q, rel in data.qrels.items() for d, g in rel.items()]
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(lines))
    return root


def test_cli_eval_with_noise(tmp_path: Path, mixed: Dataset) -> None:
    root = write_beir(tmp_path / "toy", mixed)
    runner = CliRunner()
    args = ["eval", str(root), "--noise", "semantic", "--rate", "0.3", "--seed", "1"]
    out = runner.invoke(main, [*args, "--json"])
    assert out.exit_code == 0, out.output
    row = json.loads(out.output)
    assert row["noise"] == "semantic" and row["rate"] == 0.3 and row["seed"] == 1
    assert {"ndcg@10", "recall@100", "mrr@10"} <= set(row["noisy"]) and "outranked" in row
    again = json.loads(runner.invoke(main, [*args, "--json"]).output)
    timing = ("index_seconds", "search_seconds")
    for r in (row, again, row["noisy"], again["noisy"]):
        for key in timing:
            r.pop(key)
    assert row == again  # the same seed gives the same numbers
    text = runner.invoke(main, args)
    assert text.exit_code == 0 and "clean" in text.output and "ranks above" in text.output
    typo = runner.invoke(
        main, ["eval", str(root), "--noise", "orthographic", "--noise-target", "queries", "--json"]
    )
    assert json.loads(typo.output)["target"] == "queries"
    bad = runner.invoke(
        main, ["eval", str(root), "--noise", "datatype", "--noise-target", "queries"]
    )
    assert bad.exit_code != 0 and "goes into corpus" in bad.output
    assert runner.invoke(main, ["eval", str(root), "--noise", "query", "--rate", "2"]).exit_code


# ---------------------------------------------------------------------------- real data


@pytest.mark.skipif(not (SHARED / "cranfield").is_dir(), reason="../shared/data/cranfield absent")
def test_cranfield_typo_rate_is_the_word_fraction() -> None:
    data = load_beir(SHARED / "cranfield")
    noisy = inject(data, "orthographic", 0.1, seed=0)
    changed = eligible = 0
    for did, doc in data.corpus.items():
        old, new = WORD.findall(doc["text"]), WORD.findall(noisy.dataset.corpus[did]["text"])
        eligible += len(re.findall(r"[^\W\d_]{3,}", doc["text"]))
        changed += sum(a != b for a, b in zip(old, new, strict=True))
    assert changed / eligible == pytest.approx(0.1, abs=0.005)


@pytest.mark.skipif(
    not (SHARED / "jsquad-valid").is_dir(), reason="../shared/data/jsquad-valid absent"
)
def test_jsquad_added_documents_scale_with_the_corpus() -> None:
    data = load_beir(SHARED / "jsquad-valid")
    for kind in ("semantic", "counterfactual"):
        noisy = inject(data, kind, 0.1, seed=0)
        assert abs(len(noisy.added_docs) - 0.1 * len(data.corpus)) <= 2
        assert len(noisy.dataset.corpus) == len(data.corpus) + len(noisy.added_docs)
