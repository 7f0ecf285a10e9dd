"""The package's layers import only downwards, and no two sub-packages import each other.

_core -> text -> index -> encoders -> search -> collection -> eval, distributed -> cli / serve /
integrations:
a module may import its own layer and the layers below, never above, at any depth (lazy imports
inside functions count too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "fastrag"
LAYERS = {
    "_core": 0, "_dist": 0, "_sync": 0, "_http": 0, "text": 1, "index": 2, "encoders": 3,
    "rerank": 3, "search": 4, "collection": 5, "eval": 6, "distributed": 6, "cli": 7,
    "cli_index": 7, "cli_shards": 7, "serve": 7, "cli_static": 7, "cli_prepare": 7,
    "integrations": 7,
}


def unit_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def imports_of(path: Path, source: str | None = None) -> set[str]:
    """The fastrag sub-packages a module imports (absolute or relative), at any depth."""
    rel = path.relative_to(PACKAGE).with_suffix("").parts
    package = ["fastrag", *rel[:-1]]
    found = set()
    source = path.read_text(encoding="utf-8") if source is None else source
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                names = [".".join([*base, node.module] if node.module else base)]
                if not node.module:
                    names = [f"{names[0]}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
        for name in names:
            parts = name.split(".")
            if parts[0] == "fastrag" and len(parts) > 1:
                found.add(parts[1])
    return found


def edges() -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = unit_of(path)
        if unit == "__init__":
            continue  # the top-level package re-exports every layer
        for target in imports_of(path) - {unit, "__init__"}:
            out.setdefault((unit, target), []).append(str(path.relative_to(PACKAGE)))
    return out


def test_every_sub_package_has_a_layer() -> None:
    units = {unit_of(p) for p in PACKAGE.rglob("*.py")} - {"__init__", "py"}
    assert units <= set(LAYERS), f"give these a layer: {sorted(units - set(LAYERS))}"


def test_imports_go_downwards_only() -> None:
    upward = [
        f"{a} -> {b} ({', '.join(files)})"
        for (a, b), files in edges().items()
        if LAYERS[b] > LAYERS[a]
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_two_sub_packages_import_each_other() -> None:
    graph: dict[str, set[str]] = {}
    for a, b in edges():
        graph.setdefault(a, set()).add(b)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            for nxt in graph.get(node, ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    cycles = sorted({tuple(sorted(e)) for e in edges() if reaches(e[1], e[0])})
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("source, expected", [
    ("from fastrag.search import Pipeline", {"search"}),
    ("import fastrag.collection.store", {"collection"}),
    ("def f():\n    from fastrag.eval import runner", {"eval"}),
    ("from ..search import corpus", {"search"}),
    ("from . import dense", {"index"}),
])
def test_the_walker_sees_every_kind_of_import(source: str, expected: set[str]) -> None:
    assert imports_of(PACKAGE / "index" / "probe.py", source) == expected
