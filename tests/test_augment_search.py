"""`prepare` and ``Collection.search(q, augment="mk")`` against a scripted chat server on
127.0.0.1: metadata, synthetic questions and summaries stored and resumed; sub-questions
retrieved, fused and explained; every failure of the LLM degrading to the plain search with
one warning; the command line."""

from __future__ import annotations

import json
import socket
import sqlite3
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from fastrag.cli import main
from fastrag.collection import Collection, CollectionError
from fastrag.collection.prepare import prepare
from fastrag.search.augment import AugmentedResult, Leg, fuse_legs
from fastrag.search.corpus import Document
from fastrag.search.llm import ChatClient, LLMError
from fastrag.search.pipeline import StageScore
from http_fake import fixture
from llm_fake import ChatFake

server = fixture(ChatFake)

DOCS = {
    "lift": "Lift of a wing grows with the angle of attack until the wing stalls.",
    "shock": "Wave drag at supersonic speed comes from shock waves on the body.",
    "heat": "Heat transfer in a boundary layer depends on the Reynolds number.",
    "plate": "The boundary layer of a flat plate becomes turbulent downstream.",
    "stall": "Stall: flow separation on a wing at a high angle of attack.",
    "nozzle": "A convergent nozzle chokes when the flow reaches sonic speed.",
}
QUERY = "why do wings stall and where does wave drag come from"
SUBQ = "Here are the questions:\n1. why does a wing stall?\n2. what causes wave drag?\n"


@pytest.fixture
def col(tmp_path: Path) -> Iterator[Collection]:
    c = Collection.create(tmp_path / "c", encoder=None)
    c.add(list(DOCS.values()), ids=list(DOCS))
    c.commit()
    yield c
    c.close()


def llm(fake: ChatFake, **options: object) -> ChatClient:
    return ChatClient("tiny", base_url=fake.url, backoff=0.0, **options)  # type: ignore[arg-type]


def state_rows(col: Collection, table: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(col.path / "mk" / "state.sqlite") as db:
        return list(db.execute(f"SELECT * FROM {table}"))


def test_prepare_stores_metadata_questions_and_summaries(col: Collection,
                                                         server: ChatFake) -> None:
    report = prepare(col, llm(server), n_questions=2)
    assert (report.documents, report.asked, report.reused, report.failed) == (6, 6, 0, [])
    assert report.questions == 12 and report.clusters >= 1
    assert report.summaries == report.clusters
    assert report.usage.requests == 6 + report.clusters and report.usage.prompt_tokens > 0
    docs = {row[0]: row for row in state_rows(col, "docs")}
    assert set(docs) == set(DOCS)
    assert json.loads(str(docs["lift"][3]))[:2] == ["lift", "wing"]  # tags
    clusters = state_rows(col, "clusters")
    assert all(str(row[4]).startswith("These documents are about") for row in clusters)
    assert sorted(d for row in clusters for d in json.loads(str(row[3]))) == sorted(DOCS)
    # the questions: one entry each, naming its document
    with Collection.open(col.path / "mk" / "questions", encoder=None) as qcol:
        entries = list(qcol.documents())
    assert len(entries) == 12
    assert {e.metadata["doc"] for e in entries} == set(DOCS)
    assert all(e.id.startswith(e.metadata["doc"] + "#q") for e in entries)


def test_prepare_resumes_and_follows_changes(col: Collection, server: ChatFake) -> None:
    prepare(col, llm(server))
    asked = len(server.requests)
    again = prepare(col, llm(server, cache_dir=None))
    assert (again.asked, again.reused, again.summaries) == (0, 6, 0)
    assert len(server.requests) == asked  # nothing asked: every answer was kept
    col.add("A nozzle of a rocket expands the flow to supersonic speed.", ids="nozzle")
    col.delete("heat")
    col.commit()
    changed = prepare(col, llm(server))
    assert (changed.documents, changed.asked, changed.reused) == (5, 1, 4)
    assert {row[0] for row in state_rows(col, "docs")} == set(DOCS) - {"heat"}
    with Collection.open(col.path / "mk" / "questions", encoder=None) as qcol:
        docs = {e.metadata["doc"] for e in qcol.documents()}
    assert docs == set(DOCS) - {"heat"}


def test_prepare_stopped_midway_resumes(col: Collection, server: ChatFake) -> None:
    def stop(step: str, done: int, total: int) -> None:
        if step == "documents" and done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare(col, llm(server), batch_size=2, progress=stop)
    assert len(state_rows(col, "docs")) == 2  # the first round is kept
    report = prepare(col, llm(server), batch_size=2)
    assert (report.asked, report.reused) == (4, 2)
    assert report.questions == 18


def test_unusable_answers_are_asked_again_next_run(col: Collection, server: ChatFake) -> None:
    server.script = [("text", "I cannot read this document.")]
    report = prepare(col, llm(server), batch_size=1)
    assert len(report.failed) == 1 and report.asked == 5
    retry = prepare(col, llm(server))
    assert (retry.asked, retry.failed) == (1, [])  # not read back from the cache


def test_prepare_fails_clearly_and_keeps_what_was_done(col: Collection,
                                                       server: ChatFake) -> None:
    server.script = [("ok",), ("ok",), ("status", 400, b'{"error": {"message": "no"}}', {})]
    with pytest.raises(LLMError, match="no"):
        prepare(col, llm(server, concurrency=1), batch_size=2)
    assert len(state_rows(col, "docs")) == 2
    for bad in [{"n_questions": 0}, {"max_clusters": 0}, {"batch_size": 0},
                {"language": "fr"}]:
        with pytest.raises(ValueError):
            prepare(col, llm(server), **bad)  # type: ignore[arg-type]
    col.add("pending", ids="x")
    with pytest.raises(ValueError, match="commit"):
        prepare(col, llm(server))


def test_augmented_search_retrieves_fuses_and_explains(col: Collection,
                                                       server: ChatFake) -> None:
    client = llm(server)
    prepare(col, client)
    server.rewrites[QUERY] = SUBQ
    results = col.search(QUERY, k=4, augment="mk", llm=client, explain=True)
    assert all(isinstance(r, AugmentedResult) for r in results)
    assert results[0].subquestions == ["why does a wing stall?", "what causes wave drag?"]
    ids = [r.id for r in results]
    assert len(set(ids)) == len(ids)  # a document once, whichever questions found it
    assert {"shock", "stall", "lift"} <= set(ids)
    by_id = {r.id: r for r in results}
    shock = by_id["shock"]
    assert isinstance(shock, AugmentedResult)
    assert "what causes wave drag?" in shock.found_by
    assert "why does a wing stall?" not in shock.found_by
    assert {"q2", "fusion"} <= set(shock.stages) and "q1" not in shock.stages
    assert shock.matched_questions  # a synthetic question of it matched
    assert shock.passage == DOCS["shock"]
    # the rewrite prompt carried the summary of a cluster
    prompt = server.bodies()[-1]["messages"][0]["content"]
    assert QUERY in prompt and "These documents are about" in prompt
    # a document found by more sub-questions ranks above one found by fewer
    fused = [r.stages["fusion"].rank for r in results]
    assert fused == sorted(fused)


def test_a_synthetic_question_hit_returns_its_document(col: Collection,
                                                       server: ChatFake) -> None:
    # the first document asked about ("lift") gets a question in words no document holds
    server.script = [("text", json.dumps({"topic": "lift", "tags": ["wing"], "qa": [
        {"q": "what makes an aeroplane climb?", "a": "lift"},
        {"q": "can an aeroplane climb forever?", "a": "no"}]}))]
    prepare(col, llm(server), batch_size=1)
    server.rewrites["aeroplane climb"] = "1. how does an aeroplane climb?"
    plain = col.search("aeroplane climb", k=3)
    assert plain == []  # no document has these words
    results = col.search("aeroplane climb", k=3, augment="mk", llm=llm(server), explain=True)
    assert [r.id for r in results] == ["lift"]  # once, though two of its questions matched
    top = results[0]
    assert isinstance(top, AugmentedResult)
    assert set(top.stages) == {"q0:synthetic", "q1:synthetic", "fusion"}
    assert top.matched_questions[0] in {"what makes an aeroplane climb?",
                                        "can an aeroplane climb forever?"}
    assert top.found_by == ["aeroplane climb", "how does an aeroplane climb?"] or (
        top.found_by == ["how does an aeroplane climb?", "aeroplane climb"])
    assert top.passage == DOCS["lift"]


@pytest.mark.parametrize("failure", ["down", "timeout", "malformed", "garbage", "empty",
                                     "echo"])
def test_every_llm_failure_falls_back_to_plain_search(col: Collection, server: ChatFake,
                                                      failure: str) -> None:
    prepare(col, llm(server))
    client = llm(server, timeout=0.3, max_retries=0)
    if failure == "down":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        client = ChatClient("tiny", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    server.script = {
        "timeout": [("sleep", 1.0)], "malformed": [("non_json",)],
        "garbage": [("raw", {"choices": "nope"})], "empty": [("text", "")],
        "echo": [("text", f"1. {QUERY}")], "down": [],
    }[failure]
    plain = col.search(QUERY, k=4, explain=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = col.search(QUERY, k=4, augment="mk", llm=client, explain=True)
    assert [(r.id, r.score) for r in got] == [(r.id, r.score) for r in plain]
    assert not any(isinstance(r, AugmentedResult) for r in got)
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert "fell back to the plain query" in str(caught[0].message)
    assert caught[0].filename == __file__  # said at the caller's line


def test_bad_use_is_a_clear_error(col: Collection, server: ChatFake) -> None:
    with pytest.raises(CollectionError, match="fastrag prepare"):
        col.search("q", augment="mk", llm=llm(server))
    prepare(col, llm(server))
    with pytest.raises(ValueError, match="augment must be"):
        col.search("q", augment="hyde", llm=llm(server))
    with pytest.raises(ValueError, match="vector"):
        col.search("q", augment="mk", vector=[0.0, 1.0])
    with pytest.raises(ValueError, match="k must be"):
        col.search("q", k=0, augment="mk", llm=llm(server))


def test_filter_applies_to_sub_questions_and_synthetic_hits(tmp_path: Path,
                                                            server: ChatFake) -> None:
    with Collection.create(tmp_path / "f", encoder=None) as c:
        c.add(list(DOCS.values()), ids=list(DOCS),
              metadata=[{"keep": d != "shock"} for d in DOCS])
    with Collection.open(tmp_path / "f") as c:
        prepare(c, llm(server))
        server.rewrites[QUERY] = SUBQ
        results = c.search(QUERY, k=6, augment="mk", llm=llm(server),
                           filter={"keep": True})
        assert results and "shock" not in {r.id for r in results}


def test_cli_prepare_and_search_augment(tmp_path: Path, server: ChatFake,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    runner = CliRunner()
    out = runner.invoke(main, ["index", str(folder), "-c", str(tmp_path / "col"),
                               "--model", "none"])
    assert out.exit_code == 0, out.output
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    done = runner.invoke(main, ["prepare", str(tmp_path / "col"), "--model", "tiny", "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.output.strip().splitlines()[-1])
    assert report["asked"] == 6 and report["usage"]["requests"] >= 7
    server.rewrites[QUERY] = SUBQ
    found = runner.invoke(main, ["search", str(tmp_path / "col"), QUERY, "--augment", "mk",
                                 "--explain", "-k", "3"])
    assert found.exit_code == 0, found.output
    assert "sub-questions: q1 why does a wing stall? | q2 what causes wave drag?" in found.output
    assert "found by:" in found.output
    as_json = runner.invoke(main, ["search", str(tmp_path / "col"), QUERY, "--augment", "mk",
                                   "--json"])
    row = json.loads(as_json.output.strip().splitlines()[0])
    assert row["subquestions"] == ["why does a wing stall?", "what causes wave drag?"]
    again = runner.invoke(main, ["prepare", str(tmp_path / "col"), "--model", "tiny"])
    assert again.exit_code == 0 and "0 asked, 6 reused" in again.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    cached = runner.invoke(main, ["search", str(tmp_path / "col"), QUERY, "--augment", "mk"])
    assert "warning" not in cached.output  # its rewrite was cached in mk/cache
    down = runner.invoke(main, ["search", str(tmp_path / "col"), "wing stall", "--augment",
                                "mk"])
    assert down.exit_code == 0
    assert down.output.count("warning: augment=\"mk\" fell back to the plain query") == 1
    assert "connection refused" in down.output
    monkeypatch.delenv("OPENAI_BASE_URL")
    unprepared = runner.invoke(main, ["prepare", str(tmp_path / "col"), "--base-url", "x"])
    assert unprepared.exit_code != 0 and "http://" in unprepared.output


def test_a_japanese_collection_gets_the_japanese_prompts(tmp_path: Path,
                                                          server: ChatFake) -> None:
    pytest.importorskip("sudachipy")
    texts = {"fuji": "富士山は日本で一番高い山です。", "tokyo": "東京は日本の首都です。",
             "kyoto": "京都には多くの寺院があります。"}
    with Collection.create(tmp_path / "ja", encoder=None) as c:
        c.add(list(texts.values()), ids=list(texts))
    with Collection.open(tmp_path / "ja") as c:
        prepare(c, llm(server))
        asked = [b["messages"][0]["content"] for b in server.bodies()]
        assert all("文書:" in a for a in asked[:3]) and "キーワード:" in asked[-1]
        server.rewrites["日本の山と首都"] = "1. 日本で一番高い山は？\n2. 日本の首都は？"
        results = c.search("日本の山と首都", k=3, augment="mk", llm=llm(server), explain=True)
        rewrite_prompt = server.bodies()[-1]["messages"][0]["content"]
        assert "最大5つ" in rewrite_prompt and "日本の山と首都" in rewrite_prompt
        assert results[0].subquestions == ["日本で一番高い山は？", "日本の首都は？"]  # type: ignore[attr-defined]
        assert {"fuji", "tokyo"} <= {r.id for r in results}


def test_documents_deleted_after_prepare_are_not_returned(col: Collection,
                                                          server: ChatFake) -> None:
    client = llm(server)
    prepare(col, client)
    col.delete(["stall", "lift"])
    col.commit()
    server.rewrites[QUERY] = SUBQ
    results = col.search(QUERY, k=4, augment="mk", llm=client, explain=True)
    ids = [r.id for r in results]
    assert "stall" not in ids and "lift" not in ids  # their synthetic questions still match
    assert ids and len(set(ids)) == len(ids)


def test_fusion_moves_the_next_documents_up_for_missing_ones() -> None:
    legs = [Leg("q0", "a b", [("d1", 3.0), ("d2", 2.0), ("d3", 1.0)], spans={"d2": (0, 2)}),
            Leg("q1", "b", [("d2", 5.0), ("d4", 1.0)], spans={"d2": (1, 3)}),
            Leg("q1:synthetic", "b", [("d1", 9.0), ("d5", 1.0)],
                matched={"d1": "b?", "d5": "bb?"})]
    live = {d: Document(d, f"text of {d}") for d in ("d2", "d3", "d4", "d5")}
    asked: list[list[str]] = []

    def texts_of(ids: list[str]) -> dict[str, Document]:
        asked.append(ids)
        return {d: live[d] for d in ids if d in live}

    got = fuse_legs(legs, 2, texts_of, subquestions=["b"], explain=True)
    assert [r.id for r in got] == ["d2", "d4"]  # d1 (fused first) is gone
    assert asked == [["d1", "d2"], ["d4", "d5"]]
    d2 = got[0]
    assert d2.span == (0, 2) and d2.found_by == ["b", "a b"] and d2.matched_questions == []
    assert d2.stages["q1"] == StageScore(5.0, 1) and d2.stages["fusion"].rank == 2
    assert got[1].stages["fusion"].rank == 3 and got[1].subquestions == ["b"]
    assert fuse_legs([Leg("q0", "x", [])], 3, texts_of) == []
