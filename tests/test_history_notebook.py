"""The run history across a kernel restart, in real Jupyter kernels (nbclient): two runs with
different prompts; after a restart `%kura runs` lists both and `%kura compare -2 -1` shows
the prompt diff and the changed rows, and the model server receives nothing."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

import kura_magic as km
from kura_magic import formatting
from kura_magic.run.history import prompt_hash
from kura_magic.testing import LoopbackLLM

SETUP = "from kura_magic.inputs.samples import sample_conversations\nconvs = sample_conversations(6)\n%load_ext kura_magic"
FIRST = "Summarise this support chat in one line:\n{{ transcript }}"
SECOND = "Summarise this support chat in two short lines:\n{{ transcript }}"


def run_kernel(cells: list[str], env: dict[str, str]) -> list[nbformat.NotebookNode]:
    """Execute `cells` in a new kernel (a restart: nothing survives from an earlier one)."""
    notebook = new_notebook(cells=[new_code_cell(source) for source in cells])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(notebook, timeout=180, kernel_name="python3").execute(env=env)
    return [cell.outputs for cell in notebook.cells]


def shown(outputs: list[nbformat.NotebookNode], kind: str = "text/html") -> str:
    return "".join(out.get("data", {}).get(kind, "") for out in outputs if out.output_type == "execute_result")


@pytest.fixture
def kernel_env(tmp_path, llm_server: LoopbackLLM) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KURA_MAGIC_", "OPENAI_"))}
    env.update(OPENAI_API_BASE=llm_server.url, OPENAI_API_KEY="sk-history-test",
               KURA_MAGIC_CACHE=str(tmp_path / "cache"), LITELLM_LOCAL_MODEL_COST_MAP="True",
               JPY_SESSION_NAME=str(tmp_path / "history.ipynb"))
    return env


@pytest.mark.slow
def test_runs_and_compare_after_a_restart_send_nothing(kernel_env, llm_server: LoopbackLLM, monkeypatch):
    llm_server.reset()
    run_kernel([SETUP, f"%%summarise convs --out v1\n{FIRST}", f"%%summarise convs --out v2\n{SECOND}"], kernel_env)
    assert llm_server.request_count == 12

    outputs = run_kernel(["%load_ext kura_magic", "%kura runs", "%kura compare -2 -1", "%kura compare -2 -1 --changed"],
                         kernel_env)

    assert llm_server.request_count == 12, "nothing is sent after the restart"
    monkeypatch.setenv("KURA_MAGIC_CACHE", kernel_env["KURA_MAGIC_CACHE"])
    recorded = km.runs()
    table = shown(outputs[1])
    assert recorded["label"].tolist() == ["v1", "v2"]
    for prompt, spent in zip((FIRST, SECOND), recorded["spent"]):
        assert prompt_hash(prompt) in table and formatting.money(spent) in table
    assert "history.ipynb In [2]" in table and "history.ipynb In [3]" in table
    assert "2 recorded runs" in shown(outputs[1], "text/plain")

    comparison = shown(outputs[2])
    assert "prompt: 3 words changed" in comparison
    assert '<del class="kura-removed">one line:</del> <ins class="kura-added">two short lines:</ins>' in comparison
    assert "6 of 6 conversations differ" in comparison and comparison.count('class="kura-differs"') == 6
    assert "prompt: 3 words changed: Summarise this support chat in [-one line:-]{+two short lines:+}" in shown(
        outputs[2], "text/plain")
    assert "(only those shown)" in shown(outputs[3])
