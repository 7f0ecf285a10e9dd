"""Griffe extension: interactive examples in docstrings render as code blocks.

fastrag's docstrings show usage as doctest runs (``>>>`` lines, ``...`` continuations and the
output under them) in their text, not in an ``Examples:`` section. Markdown would read ``>>>``
as nested block quotes and ``[Hit(...)]`` as a link; this extension fences each run as a
``pycon`` block before the docstring is parsed. The docstrings in the package are unchanged.
"""

from __future__ import annotations

from typing import Any

import griffe

PROMPTS = (">>>", "...")


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


class DoctestFences(griffe.Extension):
    """Fences the doctest runs of every docstring griffe loads (see `fence_doctests`)."""

    def on_instance(self, *, node: Any, obj: griffe.Object, agent: Any, **kwargs: Any) -> None:
        """Rewrite `obj`'s docstring when it holds a ``>>>`` line."""
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
