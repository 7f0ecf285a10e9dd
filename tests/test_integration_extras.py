"""The adapters stay out of the core install: ``import fastrag`` loads no framework, and an
adapter whose framework is missing says which extra to install, in one line."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

ADAPTERS = {  # module -> (the framework's top package, the extra)
    "fastrag.integrations.langchain": ("langchain_core", "langchain"),
    "fastrag.integrations.llama_index": ("llama_index", "llamaindex"),
    "fastrag.integrations.haystack": ("haystack", "haystack"),
}


def _run(code: str) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_fastrag_loads_no_framework() -> None:
    loaded = _run("""
        import json, sys
        import fastrag
        names = ("langchain_core", "llama_index", "haystack", "fastrag.integrations")
        print(json.dumps({n: n in sys.modules for n in names}))
    """)
    assert not any(loaded.values()), loaded


def test_a_missing_framework_names_its_extra() -> None:
    messages = _run(f"""
        import importlib, json, sys
        adapters = {ADAPTERS!r}

        class Absent:  # the framework packages cannot be found, as without the extra
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {{p for p, _ in adapters.values()}}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}")
                return None

        sys.meta_path.insert(0, Absent())
        out = {{}}
        for module in adapters:
            try:
                importlib.import_module(module)
                out[module] = "imported"
            except ImportError as e:
                out[module] = str(e)
        print(json.dumps(out))
    """)
    for module, (_, extra) in ADAPTERS.items():
        message = messages[module]
        assert f'pip install "fastrag-engine[{extra}]"' in message, message
        assert "\n" not in message
