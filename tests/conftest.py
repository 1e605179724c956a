"""Fixtures of the test suite: `llm` is the loopback OpenAI-compatible server that litellm
talks to over real HTTP; `shell` is IPython with the extension loaded. (Cache isolation
is the repository's root conftest, so doctests get it too.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from IPython.core.interactiveshell import InteractiveShell

from helpers import API_KEY, MODEL
from kura_magic.testing import LoopbackLLM


@pytest.fixture(scope="session")
def llm_server() -> Iterator[LoopbackLLM]:
    with LoopbackLLM() as server:
        yield server


@pytest.fixture
def llm(llm_server: LoopbackLLM, monkeypatch) -> LoopbackLLM:
    """The loopback server, reset, configured the way a user would: environment variables."""
    llm_server.reset()
    llm_server.latency_s = 0.0
    monkeypatch.setenv("OPENAI_API_BASE", llm_server.url)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("KURA_MAGIC_MODEL", MODEL)
    return llm_server


@pytest.fixture
def shell() -> Iterator[InteractiveShell]:
    """IPython with the extension loaded; the namespace and the panel mode are reset after."""
    ip = InteractiveShell.instance()
    ip.extension_manager.load_extension("kura_magic")
    yield ip
    ip.run_line_magic("config", "KuraMagics.panel = 'auto'")
    ip.reset(new_session=False)
