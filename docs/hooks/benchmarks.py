"""MkDocs hook: the benchmark report of benchmarks/ becomes the site's Benchmarks section.

`benchmarks/README.md` (written by `benchmarks/run_all.py`), `benchmarks/NOTES.md`, the
noise reports and every plot are added to the site under ``benchmarks/`` as they are in the
repository, so their relative links and images work unchanged and the site always shows the
committed report. Nothing is copied into docs/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

SUFFIXES = {".md", ".png", ".json"}
SKIP_DIRS = {"raw", "logs", "__pycache__"}  # per-script JSON and logs: not pages


def report_files(root: Path) -> list[Path]:
    """The report's files under `root` (the benchmarks folder), relative to it, sorted."""
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and path.suffix in SUFFIXES and not SKIP_DIRS & set(rel.parts[:-1]):
            found.append(rel)
    return found


def on_files(files: Files, config: Any) -> Files:
    """Add the benchmark report's pages and plots to the site (MkDocs' `on_files` event)."""
    root = Path(config["config_file_path"]).parent / "benchmarks"
    for rel in report_files(root):
        uri = f"benchmarks/{rel.as_posix()}"
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, abs_src_path=str(root / rel)))
    return files
