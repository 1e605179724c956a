"""Shared fixtures: every test gets its own cache directory and clean session settings;
`llm` is the loopback OpenAI-compatible server that litellm talks to over real HTTP."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of prices

from kura_magic import cache as cache_module  # noqa: E402
from kura_magic.config import reset_overrides  # noqa: E402
from kura_magic.testing import LoopbackLLM  # noqa: E402

MODEL = "openai/gpt-4o-mini"  # litellm knows its price, so costs are real numbers
UNPRICED_MODEL = "openai/loopback-unpriced"
API_KEY = "sk-loopback-test-key-0123456789"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch) -> Iterator[None]:
    """Point the cache at a fresh directory and forget session overrides."""
    monkeypatch.setenv("KURA_MAGIC_CACHE", str(tmp_path / "cache"))
    for var in ("KURA_MAGIC_OFFLINE", "KURA_MAGIC_EXPERIMENT", "KURA_MAGIC_MAX_CONCURRENCY",
                "KURA_MAGIC_MODEL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KURA_MAGIC_RETRY_BASE", "0.01")
    monkeypatch.setenv("KURA_MAGIC_TIMEOUT", "10")
    reset_overrides()
    yield
    reset_overrides()
    cache_module.close_all()


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


def make_conversations(n: int, *, prefix: str = "c", text: str = "help me with order") -> list[dict]:
    """`n` Kura-shaped conversations with distinct messages."""
    return [
        {
            "chat_id": f"{prefix}{i}",
            "created_at": "2026-01-01T00:00:00",
            "messages": [
                {"role": "user", "content": f"{text} {i}"},
                {"role": "assistant", "content": f"Sure, looking at order {i}."},
            ],
            "metadata": {"row": i},
        }
        for i in range(n)
    ]
