"""The distribution behind ``import fastrag`` and the check for the unrelated project of that name.

fastrag is published on the package index as ``fastrag-engine``: the name ``fastrag`` belongs
to an unrelated project (a Haystack-based RAG framework) whose package also imports as
``fastrag``. Both cannot live in one environment: whichever was installed last overwrote the
other's ``fastrag/__init__.py``, and uninstalling either removes files the other needs. The
import of fastrag calls :func:`native_module_error` when the native module will not load and
:func:`warn_on_conflict` once it has loaded; both name the fix.
"""

from __future__ import annotations

import importlib.metadata as md
import warnings
from pathlib import Path

DIST_NAME = "fastrag-engine"
"""The name to ``pip install`` (``import fastrag`` all the same)."""

FOREIGN_NAME = "fastrag"
"""The unrelated project's distribution name on the package index."""

FIX = (
    f"pip uninstall -y {FOREIGN_NAME} {DIST_NAME} && pip install {DIST_NAME} "
    f"(keep the other project in a virtual environment of its own)"
)


class DistributionConflictWarning(UserWarning):
    """The unrelated ``fastrag`` distribution is installed in the same environment."""


def _is_ours(dist: md.Distribution) -> bool:
    """True for a build of this project installed under the old name (its files list the native
    module ``fastrag/_core``), which the unrelated project never ships."""
    for f in dist.files or ():
        parts = Path(str(f)).parts
        if len(parts) == 2 and parts[0] == "fastrag" and parts[1].startswith("_core"):
            return True
    return False


def foreign_distributions() -> list[md.Distribution]:
    """Installed distributions named ``fastrag`` that are not this project, one per path entry."""
    found: list[md.Distribution] = []
    seen: set[str] = set()
    for dist in md.distributions(name=FOREIGN_NAME):
        where = str(dist.locate_file(""))
        if where not in seen and not _is_ours(dist):
            seen.add(where)
            found.append(dist)
    return found


def _describe(dists: list[md.Distribution], package_dir: Path) -> str:
    """Which foreign distributions there are, and whether they share our folder."""
    items = []
    for dist in dists:
        site = Path(str(dist.locate_file(""))).resolve()
        place = "in the same folder" if site == package_dir.parent.resolve() else f"in {site}"
        items.append(f"{dist.metadata['Name']} {dist.version} {place}")
    return (
        f"the unrelated package '{FOREIGN_NAME}' ({'; '.join(items)}) also imports as "
        f"`fastrag` and clashes with {DIST_NAME} ({package_dir})"
    )


def native_module_error(error: ImportError, package_dir: Path) -> ImportError:
    """The error to raise when ``fastrag._core`` does not import: a clash with the unrelated
    ``fastrag`` package when one is installed, otherwise an install that is not built."""
    foreign = foreign_distributions()
    if foreign:
        return ImportError(
            f"fastrag's native module fastrag._core did not load ({error}): "
            f"{_describe(foreign, package_dir)}. Fix: {FIX}"
        )
    return ImportError(
        f"fastrag's native module fastrag._core did not load ({error}); a source checkout "
        f"must be built and installed: pip install {DIST_NAME} (or pip install . in the checkout)"
    )


def warn_on_conflict(package_dir: Path) -> None:
    """Warn (DistributionConflictWarning) when the unrelated ``fastrag`` is installed: it works
    now, but a reinstall or uninstall of either breaks the other."""
    foreign = foreign_distributions()
    if foreign:
        warnings.warn(
            f"{_describe(foreign, package_dir)}: the next install or uninstall of either "
            f"breaks the other. Fix: {FIX}",
            DistributionConflictWarning,
            stacklevel=3,
        )
