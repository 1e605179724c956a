"""Isolation for every test and doctest: a fresh cache directory, clean session settings,
litellm's bundled price map (no network), and no stray provider configuration."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from _pytest.doctest import DoctestItem

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from kura_magic import storage as store  # noqa: E402
from kura_magic.config import reset_overrides  # noqa: E402

RESET_VARIABLES = ("KURA_MAGIC_OFFLINE", "KURA_MAGIC_EXPERIMENT", "KURA_MAGIC_MAX_CONCURRENCY",
                   "KURA_MAGIC_MODEL")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch) -> Iterator[None]:
    """Point the cache at a fresh directory and forget session overrides."""
    monkeypatch.setenv("KURA_MAGIC_CACHE", str(tmp_path / "cache"))
    for variable in RESET_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("KURA_MAGIC_RETRY_BASE", "0.01")
    monkeypatch.setenv("KURA_MAGIC_TIMEOUT", "10")
    reset_overrides()
    yield
    reset_overrides()
    store.close_all()


@pytest.fixture(scope="session")
def doctest_llm() -> Iterator[object]:
    """The loopback OpenAI-compatible server that the docstrings' examples call."""
    from kura_magic.testing import LoopbackLLM

    with LoopbackLLM() as server:
        yield server


@pytest.fixture(autouse=True)
def doctest_setting(request, monkeypatch, doctest_namespace) -> None:
    """Docstring examples run for real: a model on loopback and five sample conversations."""
    if not isinstance(request.node, DoctestItem):
        return
    from kura_magic.inputs.samples import sample_conversations

    monkeypatch.setenv("OPENAI_API_BASE", request.getfixturevalue("doctest_llm").url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-doctest-0000")
    doctest_namespace["convs"] = sample_conversations(5)
