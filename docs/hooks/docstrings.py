"""Griffe extension: fastrag's docstrings rendered as Markdown by mkdocstrings.

Two habits of the package's docstrings are not Markdown, and this extension rewrites them
before a docstring is parsed (the docstrings in the package are unchanged):

- usage shown as doctest runs (``>>>`` lines, ``...`` continuations and the output under
  them) in the text, not in an ``Examples:`` section: Markdown would read ``>>>`` as nested
  block quotes and ``[Hit(...)]`` as a link, so each run is fenced as a ``pycon`` block;
- Sphinx roles (``:func:`rrf```, ``:data:`KINDS```) become inline code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|data|class|meth|attr|mod|exc|obj|const):`~?([^`]+)`")


def fence_doctests(text: str) -> str:
    """`text` with every doctest run (prompts and their output) inside a ``pycon`` fence."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        stripped = lines[i].lstrip()
        if not stripped.startswith(">>>"):
            out.append(lines[i])
            i += 1
            continue
        indent = lines[i][: len(lines[i]) - len(stripped)]
        block = []
        # A run goes on to the first blank line (doctest's rule for the end of an output).
        while i < len(lines) and lines[i].strip() and lines[i].startswith(indent):
            block.append(lines[i][len(indent):])
            i += 1
        if out and out[-1].strip():
            out.append("")  # a fence must start a new block
        out += [f"{indent}```pycon", *(indent + b for b in block), f"{indent}```"]
        if i < len(lines) and lines[i].strip():
            out.append("")  # text right after the run starts a new paragraph
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def plain_roles(text: str) -> str:
    """`text` with every Sphinx role (``:func:`name```) as inline code (`` `name` ``)."""
    return ROLE.sub(r"`\1`", text)


class MarkdownDocstrings(griffe.Extension):
    """Rewrites every docstring griffe loads (`fence_doctests`, then `plain_roles`)."""

    def on_instance(self, *, node: Any, obj: griffe.Object, agent: Any, **kwargs: Any) -> None:
        """Rewrite `obj`'s docstring when it holds a doctest run or a Sphinx role."""
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(fence_doctests(obj.docstring.value))
