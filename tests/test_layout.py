"""The dependency rules, one per directory: the flat core imports neither IPython, ipywidgets
nor litellm at import time; `notebook/` is the only place IPython and ipywidgets are
imported; `testing/` uses the standard library only; `local/` keeps the launcher (standard
library) apart from the child server (llama-cpp-python); `gateway` is the one door to litellm.

Imports are read from the source, lazy ones inside functions included."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "kura_magic"
SUBPACKAGES = ("notebook", "testing", "local")
NOTEBOOK_ONLY = {"IPython", "ipywidgets", "traitlets"}
LOCAL_SERVER_ONLY = {"llama_cpp", "uvicorn", "starlette", "fastapi"}


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name `path` imports, anywhere in the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def top_level(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def files(where: str = "") -> list[Path]:
    return sorted((PACKAGE / where).rglob("*.py"))


def module_name(path: Path) -> str:
    """`kura_magic/run/history.py` -> `kura_magic.run.history`; a package's `__init__` is the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def core_files() -> list[Path]:
    return [path for path in files() if path.relative_to(PACKAGE).parts[0] not in SUBPACKAGES]


def in_fresh_process(code: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_every_core_module_loads_neither_ipython_widgets_nor_litellm():
    modules = [module_name(path) for path in core_files()]
    loaded = in_fresh_process(
        f"import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in ('IPython', 'ipywidgets', 'litellm', 'pandas') if m in sys.modules)))"
    )
    assert loaded == []


@pytest.mark.parametrize("path", core_files(), ids=lambda p: p.name)
def test_the_core_never_imports_ipython_or_widgets_even_lazily(path):
    assert not top_level(imported_modules(path)) & NOTEBOOK_ONLY


@pytest.mark.parametrize("path", files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_litellm_is_imported_only_by_the_gateway(path):
    if path.name != "gateway.py":
        assert "litellm" not in top_level(imported_modules(path))


def test_notebook_layer_is_where_ipython_is_used_and_its_views_are_plain_html():
    used = set().union(*(top_level(imported_modules(path)) for path in files("notebook")))
    assert {"IPython", "ipywidgets"} <= used
    loaded = in_fresh_process(
        "import json, sys, kura_magic.views.html\n"
        "print(json.dumps(sorted(m for m in ('IPython', 'ipywidgets') if m in sys.modules)))"
    )
    assert loaded == [], "the core's _repr_html_ uses views, so they must not pull IPython in"


@pytest.mark.parametrize("path", files("testing"), ids=lambda p: p.name)
def test_testing_uses_the_standard_library_only(path):
    outside = {
        name for name in imported_modules(path)
        if name.split(".")[0] not in sys.stdlib_module_names and not name.startswith("kura_magic.testing")
    }
    assert not outside, outside


@pytest.mark.parametrize("path", files("local"), ids=lambda p: p.name)
def test_only_the_local_server_process_imports_llama_cpp(path):
    heavy = top_level(imported_modules(path)) & LOCAL_SERVER_ONLY
    if path.name == "server.py":
        assert "llama_cpp" in heavy
    else:
        assert not heavy
        kura_modules = {name for name in imported_modules(path) if name.startswith("kura_magic")}
        assert kura_modules <= {"kura_magic.config", "kura_magic.errors", "kura_magic.local.launcher",
                                "kura_magic.local.server"}
