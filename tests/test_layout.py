"""The dependency rules of the package's layout, read from the source (lazy imports inside
functions included):

- the floors: the ground floor (errors, config, types, keys, formatting, background, diffs)
  <- inputs <- storage <- calls <- run <- views <- notebook; an import that runs goes to the
  same floor or a lower one. The two ways up that are allowed: the data classes' `__repr__`
  / `_repr_html_` / `_repr_mimebundle_` import `views` when shown (as pandas does), and
  `views` names run data in type hints only (`if TYPE_CHECKING:`);
- `storage` never imports `run` or `views`, not even for type hints;
- no import circle anywhere in the package;
- `notebook/` is the only place IPython, ipywidgets, traitlets and anywidget are imported,
  and `import kura_magic` loads neither them nor litellm;
- `testing/` uses the standard library only; `local/` keeps the launcher (standard library)
  apart from the child server (llama-cpp-python); `calls/gateway` is the one door to litellm.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "kura_magic"
SUBPACKAGES = ("notebook", "testing", "local")
NOTEBOOK_ONLY = {"IPython", "ipywidgets", "traitlets", "anywidget"}
LOCAL_SERVER_ONLY = {"llama_cpp", "uvicorn", "starlette", "fastapi"}
FLOORS = {"inputs": 1, "storage": 2, "calls": 3, "run": 4, "views": 5, "notebook": 6}  # the rest: 0
REPR_METHODS = {"__repr__", "__str__", "_repr_html_", "_repr_mimebundle_"}


@dataclass(frozen=True)
class Import:
    """One import statement's module, and where it sits."""

    module: str
    lazy: bool  # inside a function
    type_only: bool  # under `if TYPE_CHECKING:`
    in_repr: bool  # inside a __repr__ / _repr_html_ / _repr_mimebundle_ method


def imports(path: Path) -> list[Import]:
    """Every absolute import of `path`, anywhere in the file."""
    found: list[Import] = []
    _visit(ast.parse(path.read_text(encoding="utf-8")), found, lazy=False, type_only=False, in_repr=False)
    return found


def _visit(node: ast.AST, found: list[Import], *, lazy: bool, type_only: bool, in_repr: bool) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import):
            found += [Import(alias.name, lazy, type_only, in_repr) for alias in child.names]
        elif isinstance(child, ast.ImportFrom):
            assert child.level == 0, "kura_magic uses absolute imports only"
            found += [Import(f"{child.module}.{alias.name}", lazy, type_only, in_repr) for alias in child.names]
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            _visit(child, found, lazy=True, type_only=type_only, in_repr=in_repr or child.name in REPR_METHODS)
        elif isinstance(child, ast.If) and ast.unparse(child.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            _visit(child, found, lazy=lazy, type_only=True, in_repr=in_repr)
        else:
            _visit(child, found, lazy=lazy, type_only=type_only, in_repr=in_repr)


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name `path` imports (for `from m import x`: `m` and `m.x`)."""
    return {name for found in imports(path) for name in (found.module, found.module.rpartition(".")[0]) if name}


def top_level(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def files(where: str = "") -> list[Path]:
    return sorted((PACKAGE / where).rglob("*.py"))


def module_name(path: Path) -> str:
    """`kura_magic/run/history.py` -> `kura_magic.run.history`; a package's `__init__` is the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in files()}


def resolved(name: str) -> str | None:
    """The package module that importing `name` runs: `kura_magic.run.history.load_run` ->
    `kura_magic.run.history`; None outside the package."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def core_files() -> list[Path]:
    return [path for path in files() if path.relative_to(PACKAGE).parts[0] not in SUBPACKAGES]


def floor(module: str) -> int:
    """0 for the ground floor, then `FLOORS`: `kura_magic.run.history` -> 4."""
    parts = module.split(".")
    return FLOORS.get(parts[1], 0) if len(parts) > 1 else 0


def runtime_edges(module: str) -> Iterator[str]:
    """The package modules `module` imports when it runs: type hints left out, and the
    data classes' lazy imports of `views` when shown (the one way up that is allowed)."""
    for found in imports(MODULES[module]):
        target = resolved(found.module)
        if target is None or target == module or found.type_only:
            continue
        if found.in_repr and target.startswith("kura_magic.views"):
            continue
        yield target


def package_graph() -> dict[str, list[str]]:
    """Each package module and the package modules it imports when it runs."""
    return {module: sorted(set(runtime_edges(module))) for module in MODULES}


def circles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Every import circle of `graph` (Tarjan's strongly connected parts of two or more)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            part = []
            while (top := stack.pop()) != module:
                part.append(top)
            part.append(module)
            if len(part) > 1:
                found.append(sorted(part))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def in_fresh_process(code: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_there_is_no_import_circle_anywhere_in_the_package():
    found = circles(package_graph())
    assert found == [], "import circles: " + "; ".join(" <-> ".join(part) for part in found)


def test_the_circle_finder_names_each_circle_and_only_circles():
    graph = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a", "e"], "e": ["d"], "f": ["a"]}
    assert sorted(circles(graph)) == [["a", "b", "c"], ["d", "e"]]


def test_the_allowed_way_up_is_only_the_data_classes_showing_themselves():
    lazy_views = {(module, found.module) for module, path in MODULES.items() for found in imports(path)
                  if found.in_repr and found.module.startswith("kura_magic.views") and floor(module) < 5}
    assert {module for module, _ in lazy_views} <= {"kura_magic.run.results", "kura_magic.run.compare",
                                                    "kura_magic.run.sweep"}, lazy_views


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.count(".") and m.split(".")[1] not in SUBPACKAGES))
def test_imports_that_run_go_down_the_floors(module):
    uphill = [target for target in runtime_edges(module) if floor(target) > floor(module)]
    assert not uphill, f"{module} (floor {floor(module)}) imports {uphill} from a higher floor"


@pytest.mark.parametrize("path", files("storage"), ids=lambda p: p.name)
def test_storage_never_imports_run_or_views(path):
    above = {name for name in imported_modules(path) if name.startswith(("kura_magic.run", "kura_magic.views"))}
    assert not above, above


@pytest.mark.parametrize("path", files("views"), ids=lambda p: p.name)
def test_views_import_run_data_for_type_hints_only(path):
    at_run_time = [found.module for found in imports(path)
                   if found.module.startswith(("kura_magic.run", "kura_magic.calls")) and not found.type_only]
    assert not at_run_time, at_run_time


def test_importing_every_core_module_loads_neither_ipython_widgets_nor_litellm():
    modules = [module_name(path) for path in core_files()]
    loaded = in_fresh_process(
        f"import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in ('IPython', 'ipywidgets', 'litellm', 'pandas') if m in sys.modules)))"
    )
    assert loaded == []


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_core_never_imports_ipython_or_widgets_even_lazily(path):
    assert not top_level(imported_modules(path)) & NOTEBOOK_ONLY


@pytest.mark.parametrize("path", files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_litellm_is_imported_only_by_the_gateway(path):
    if path.relative_to(PACKAGE) != Path("calls/gateway.py"):
        assert "litellm" not in top_level(imported_modules(path))


def test_notebook_layer_is_where_ipython_is_used_and_views_are_plain():
    used = set().union(*(top_level(imported_modules(path)) for path in files("notebook")))
    assert {"IPython", "anywidget"} <= used
    loaded = in_fresh_process(
        "import json, sys, kura_magic.views.html, kura_magic.views.text, kura_magic.views.history\n"
        "print(json.dumps(sorted(m for m in ('IPython', 'ipywidgets', 'traitlets') if m in sys.modules)))"
    )
    assert loaded == [], "the core's _repr_html_ uses views, so they must not pull IPython in"


def test_the_public_surface_is_small_and_complete():
    import kura_magic

    assert len(kura_magic.__all__) <= 41
    assert all(hasattr(kura_magic, name) for name in kura_magic.__all__)
    from kura_magic import storage

    assert all(hasattr(storage, name) for name in storage.__all__)


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
        kura_modules = {resolved(name) for name in imported_modules(path) if name.startswith("kura_magic")}
        assert kura_modules <= {"kura_magic.config", "kura_magic.errors", "kura_magic.local.launcher",
                                "kura_magic.local.server"}
