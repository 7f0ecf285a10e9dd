"""The distribution name and the clash with the unrelated `fastrag` package (issue 23).

The collision is simulated with a fake `fastrag` distribution (dist-info + files) in a tmp folder
put on the path of a child interpreter; nothing is installed or downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fastrag
from fastrag import _dist

PACKAGE = Path(fastrag.__file__).resolve().parent
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def fake_distribution(site: Path, name: str = "fastrag", version: str = "3.1.2",
                      files: tuple[str, ...] = ("fastrag/__init__.py",
                                                "fastrag/agents/__init__.py")) -> None:
    """A minimal installed distribution in `site`: METADATA, RECORD and the files it lists."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    record = [*files, f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]
    (info / "RECORD").write_text("\n".join(f if f.endswith(",,") else f + ",,"
                                           for f in record) + "\n", encoding="utf-8")
    for f in files:
        path = site / f
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("", encoding="utf-8")


def run(code: str, *, cwd: Path, isolated: bool = False,
        pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`code` in a child interpreter; `isolated` drops site-packages (-S) so only `pythonpath`
    and the standard library can be imported."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    args = [sys.executable, *(["-S"] if isolated else []), "-c", code]
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def copy_without_core(site: Path) -> None:
    """Our pure-Python entry files in `site/fastrag`, without the native module: what is left
    when the other package's install or uninstall removed or replaced files of ours."""
    (site / "fastrag").mkdir(parents=True, exist_ok=True)
    for name in ("__init__.py", "_dist.py"):
        shutil.copy(PACKAGE / name, site / "fastrag" / name)


def test_distribution_name_is_ours_and_extras_refer_to_it():
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11's tomllib reads pyproject.toml")
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    assert project["name"] == _dist.DIST_NAME == "fastrag-engine"
    for extra, requirements in project["optional-dependencies"].items():
        for req in requirements:
            assert not req.startswith("fastrag["), (
                f"extra {extra!r} names {req!r}: that is the unrelated package on the index")


def test_missing_native_module_beside_the_other_package_names_the_fix(tmp_path):
    site = tmp_path / "site"
    copy_without_core(site)
    fake_distribution(site)
    done = run("import fastrag", cwd=tmp_path, isolated=True, pythonpath=site)
    assert done.returncode != 0
    err = done.stderr.strip().splitlines()[-1]
    assert err.startswith("ImportError: fastrag's native module fastrag._core did not load")
    assert "the unrelated package 'fastrag' (fastrag 3.1.2 in the same folder)" in err
    assert "pip uninstall -y fastrag fastrag-engine && pip install fastrag-engine" in err


def test_missing_native_module_alone_says_to_build(tmp_path):
    site = tmp_path / "site"
    copy_without_core(site)
    done = run("import fastrag", cwd=tmp_path, isolated=True, pythonpath=site)
    assert done.returncode != 0
    err = done.stderr.strip().splitlines()[-1]
    assert "fastrag._core did not load" in err and "pip install fastrag-engine" in err
    assert "unrelated" not in err


WARNINGS = """
import sys, warnings
sys.path.append({site!r})
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import fastrag
    fastrag.BM25  # the package works all the same
for w in caught:
    print(w.category.__name__, "|", w.message)
"""


def test_other_package_beside_ours_warns_with_the_fix(tmp_path):
    site = tmp_path / "other"
    fake_distribution(site)
    done = run(WARNINGS.format(site=str(site)), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stdout.splitlines()
             if ln.startswith("DistributionConflictWarning")]
    assert len(lines) == 1, done.stdout
    assert f"fastrag 3.1.2 in {site.resolve()}" in lines[0]
    assert "pip uninstall -y fastrag fastrag-engine && pip install fastrag-engine" in lines[0]


def test_our_build_under_the_old_name_is_not_taken_for_the_other_package(tmp_path):
    site = tmp_path / "old"
    fake_distribution(site, version="0.1.0",
                      files=("fastrag/_core.cpython-311-x86_64-linux-gnu.so",))
    done = run(WARNINGS.format(site=str(site)), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "DistributionConflictWarning" not in done.stdout


def test_no_other_package_in_this_environment():
    assert _dist.foreign_distributions() == []
