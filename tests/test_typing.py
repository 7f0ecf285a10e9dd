"""Typing (issue 23): the native module's stub names every export with the runtime's parameters,
py.typed ships, and mypy --strict passes on the package (pyproject's [tool.mypy])."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import fastrag
from fastrag import _core

PACKAGE = Path(fastrag.__file__).resolve().parent
STUB = PACKAGE / "_core.pyi"
ROOT = Path(__file__).resolve().parents[1]


def stub_tree() -> dict[str, ast.FunctionDef | ast.ClassDef]:
    """The stub's top-level functions and classes by name."""
    tree = ast.parse(STUB.read_text(encoding="utf-8"))
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}


def runtime_members() -> dict[str, Any]:
    """Everything public that the native module defines."""
    return {n: getattr(_core, n) for n in dir(_core) if not n.startswith("_")}


def runtime_params(obj: Any) -> list[tuple[str, str, object]]:
    """(name, kind, default) of a pybind11 function from the signature line of its docstring,
    `self` left out; kind is 'positional' or 'keyword' (after `*`); default is the literal or
    the string 'required'."""
    first = (obj.__doc__ or "").splitlines()[0]
    head = first.rsplit(" -> ", 1)[0]
    params = head[head.index("(") + 1 : -1]
    args = ast.parse(f"def f({params}): pass").body[0].args  # type: ignore[attr-defined]
    return describe(args, skip_self=True)


def describe(args: ast.arguments, *, skip_self: bool) -> list[tuple[str, str, object]]:
    """(name, kind, default) of a parsed parameter list."""
    out: list[tuple[str, str, object]] = []
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    defaults += list(args.defaults)
    for i, (a, d) in enumerate(zip(positional, defaults, strict=True)):
        if skip_self and i == 0 and a.arg == "self":
            continue
        kind = "positional-only" if a in args.posonlyargs else "positional"
        out.append((a.arg, kind, "required" if d is None else ast.literal_eval(d)))
    for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        out.append((a.arg, "keyword", "required" if d is None else ast.literal_eval(d)))
    return out


def assert_same(where: str, runtime: list[tuple[str, str, object]],
                stub: list[tuple[str, str, object]]) -> None:
    """The stub's parameters are the runtime's: names (a positional-only stub parameter may
    rename pybind11's argN), kinds and defaults."""
    assert len(runtime) == len(stub), f"{where}: runtime {runtime}, stub {stub}"
    for (rn, rk, rd), (sn, sk, sd) in zip(runtime, stub, strict=True):
        if sk == "positional-only":
            assert rk == "positional" and re.fullmatch(r"arg\d+", rn), f"{where}: {rn} vs {sn}"
        else:
            assert (rn, rk) == (sn, sk), f"{where}: runtime {(rn, rk)}, stub {(sn, sk)}"
        assert rd == sd, f"{where}.{sn}: runtime default {rd!r}, stub {sd!r}"


def decorators(fn: ast.FunctionDef) -> set[str]:
    return {d.id for d in fn.decorator_list if isinstance(d, ast.Name)}


def test_stub_names_every_export_of_the_native_module():
    stub = stub_tree()
    runtime = runtime_members()
    assert sorted(stub) == sorted(runtime)


@pytest.mark.parametrize("name", sorted(n for n, o in runtime_members().items()
                                        if not isinstance(o, type)))
def test_stub_functions_match_the_runtime(name):
    fn = stub_tree()[name]
    assert isinstance(fn, ast.FunctionDef)
    assert_same(name, runtime_params(getattr(_core, name)), describe(fn.args, skip_self=False))


@pytest.mark.parametrize("name", sorted(n for n, o in runtime_members().items()
                                        if isinstance(o, type)))
def test_stub_classes_match_the_runtime(name):
    cls = getattr(_core, name)
    node = stub_tree()[name]
    assert isinstance(node, ast.ClassDef)
    methods = {n.name: n for n in node.body if isinstance(n, ast.FunctionDef)}
    public = {n for n in vars(cls) if not n.startswith("_")}
    if "__init__" in vars(cls):
        public.add("__init__")
    assert sorted(public) == sorted(methods), name
    for member in sorted(public):
        raw = vars(cls)[member]
        fn = methods[member]
        if isinstance(raw, property):
            assert "property" in decorators(fn), f"{name}.{member} is a property"
            continue
        static = isinstance(raw, staticmethod)
        assert static == ("staticmethod" in decorators(fn)), f"{name}.{member}"
        assert_same(f"{name}.{member}", runtime_params(getattr(cls, member)),
                    describe(fn.args, skip_self=not static))


def test_package_is_marked_typed():
    assert (PACKAGE / "py.typed").is_file()
    assert STUB.is_file()


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason='mypy is not installed (pip install "fastrag-engine[test]")')
def test_mypy_strict_on_the_package(tmp_path):
    """pyproject's [tool.mypy] (strict) on python/fastrag; its cache under tmp_path (a cold run,
    about 30 s)."""
    if not (ROOT / "python" / "fastrag").is_dir():
        pytest.skip("needs the source checkout (python/fastrag)")
    env = {**os.environ, "MYPY_CACHE_DIR": str(tmp_path / "mypy_cache")}
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
