"""The example notebooks run under nbval against the loopback server, configured only by
the environment variables a user would set; a second run of the quickstart sends nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kura_magic.testing import LoopbackLLM

NOTEBOOKS = Path(__file__).resolve().parent.parent / "example_notebooks"
OURS = ("KURA_MAGIC_", "OPENAI_")


def run_nbval(paths: list[Path], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env",
               "--nbval-cell-timeout=300", "-p", "no:cacheprovider", "-q", *map(str, paths)]
    return subprocess.run(command, env=env, cwd=NOTEBOOKS.parent, capture_output=True, text=True, timeout=1200)


@pytest.fixture
def user_env(tmp_path, llm_server) -> dict[str, str]:
    """What a user would set: the server and key, and a cache directory of their own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(OURS)}
    env.update(OPENAI_API_BASE=llm_server.url, OPENAI_API_KEY="sk-notebook-test",
               KURA_MAGIC_CACHE=str(tmp_path / "cache"), LITELLM_LOCAL_MODEL_COST_MAP="True")
    return env


@pytest.mark.slow
def test_example_notebooks_run_and_a_second_quickstart_is_served_from_the_cache(user_env, llm_server: LoopbackLLM):
    llm_server.reset()
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert {p.name for p in notebooks} >= {"quickstart.ipynb", "structured_summaries.ipynb", "prompt_iteration.ipynb",
                                          "run_history.ipynb", "prompt_matrix.ipynb"}

    first = run_nbval(notebooks, user_env)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    sent = llm_server.request_count
    assert sent > 0

    again = run_nbval([NOTEBOOKS / "quickstart.ipynb"], user_env)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-2000:]
    assert llm_server.request_count == sent, "the quickstart's second run must be wholly cached"


def test_notebooks_are_stored_without_outputs():
    import nbformat

    for path in NOTEBOOKS.glob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        assert notebook.cells[0].cell_type == "markdown", path.name
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), path.name
