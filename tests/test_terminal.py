"""Terminal IPython in a pseudo-terminal (pexpect), against the loopback server: a run shows a
live one-line progress while it goes, then its results as a text table with the
`.to_pandas()` hint, and never a widget repr; a mistake is a card, not a traceback."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from kura_magic.testing import LoopbackLLM

pexpect = pytest.importorskip("pexpect")

N = 8
PROMPT_RE = r"In \[\d+\]: "


@pytest.fixture
def terminal(tmp_path, llm: LoopbackLLM):
    """`ipython` in a pty, configured like a user would: environment variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KURA_MAGIC_")}
    env.update(KURA_MAGIC_CACHE=str(tmp_path / "cache"), LITELLM_LOCAL_MODEL_COST_MAP="True",
               IPYTHONDIR=str(tmp_path / "ipython"), COLUMNS="120", LINES="40", TERM="dumb")
    ipython = Path(sys.executable).with_name("ipython")
    child = pexpect.spawn(str(ipython), ["--simple-prompt", "--no-banner", "--colors=NoColor"],
                          env=env, encoding="utf-8", timeout=60, dimensions=(40, 120))
    child.expect(PROMPT_RE)
    yield child
    child.sendline("exit")
    child.expect(pexpect.EOF)


def send(child, code: str) -> None:
    """Type one line of `code` at the prompt."""
    child.sendline(code)


@pytest.mark.slow
def test_a_terminal_run_shows_live_progress_then_a_text_table(terminal, llm: LoopbackLLM):
    llm.latency_s = 0.3  # one call at a time: the run takes a few seconds
    send(terminal, f"from kura_magic.inputs.samples import sample_conversations; convs = sample_conversations({N})")
    terminal.expect(PROMPT_RE)
    send(terminal, "%load_ext kura_magic")
    terminal.expect(PROMPT_RE)

    # %%summarise typed as one line (the simple prompt has no multi-line cells)
    send(terminal, 'get_ipython().run_cell_magic("summarise", "convs --out s --max-concurrency 1", '
                   '"Summarise in one line:\\n{{ transcript }}")')
    terminal.expect(rf"\r\s*\d+%\|[█▏▎▍▌▋▊▉ ]+\| [2-5]/{N} done")
    seen_mid_run = llm.request_count
    terminal.expect(rf"{N}/{N} done · {N} fresh · 0 cached · 0 errors")
    terminal.expect(r"id\s+status\s+cost\s+summary\r\n")
    terminal.expect(r"conv-\d+\s+fresh\s+\$\S+\s+Summary: ")
    terminal.expect(rf"all {N} rows: s\.to_pandas\(\)")
    terminal.expect(PROMPT_RE)
    printed = terminal.before

    assert seen_mid_run < N, "the progress line showed while calls were still to be made"
    assert llm.request_count == N
    for widget_repr in ("VBox", "IntProgress", "model_id"):
        assert widget_repr not in printed

    send(terminal, 'get_ipython().run_cell_magic("summarise", "convs --out b", "Summarise {{ transcript")')
    terminal.expect(r"✖ template error\r\n│ the prompt does not parse")
    terminal.expect(PROMPT_RE)
    failed = terminal.before
    assert "Traceback" not in failed and "UsageError" not in failed and "\x1b[" not in failed, (
        "a card, without colour under --colors=NoColor")
