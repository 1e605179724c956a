"""Deterministic provider errors are cached as errors, whatever shape the provider sends
them in: OpenAI's and Azure's content-policy bodies, a reply stopped by the output filter,
Anthropic's refusal, and each provider's context-too-long error. The loopback server answers
with each body exactly as that provider does; every test asserts that a re-run sends nothing."""

from __future__ import annotations

import pytest

import kura_magic as km
from helpers import PROMPT, make_conversations
from kura_magic.testing.provider_shapes import AZURE_REFUSE, FILTERED, REFUSE, TOO_LONG

ANTHROPIC_MODEL = "anthropic/claude-3-haiku-20240307"


def conversations_with(marker: str) -> list[dict]:
    """Three conversations; the middle one carries the provider-answer `marker`."""
    conversations = make_conversations(3)
    conversations[1]["messages"][0]["content"] += f" {marker}"
    return conversations


@pytest.fixture
def anthropic(llm, monkeypatch) -> dict:
    """Options that send calls to the loopback server's Anthropic Messages endpoint."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-loopback-0123456789")
    return {"model": ANTHROPIC_MODEL, "api_base": llm.url.removesuffix("/v1"), "max_tokens": 64}


@pytest.mark.parametrize(("marker", "error_type", "message"), [
    (REFUSE, "content_policy", "safety system"),
    (AZURE_REFUSE, "content_policy", "content management policy"),
    (FILTERED, "content_policy", "content filter stopped the reply"),
    (TOO_LONG, "context_window", "maximum context length"),
], ids=["openai-content-policy", "azure-content-filter", "output-filter", "openai-context-length"])
def test_an_openai_shaped_deterministic_error_is_cached(llm, marker, error_type, message):
    first = km.summarise(conversations_with(marker), PROMPT)
    sent = llm.request_count

    again = km.summarise(conversations_with(marker), PROMPT)

    assert sent == 3 and llm.request_count == sent, "the re-run sent nothing"
    assert first[1].status == "error" and first[1].error.startswith(f"{error_type}: ")
    assert message in first[1].error
    assert again[1].cached and again[1].error == first[1].error
    assert [r.status for r in again] == ["ok", "error", "ok"]


@pytest.mark.parametrize(("marker", "error_type"), [
    (REFUSE, "content_policy"), (TOO_LONG, "context_window"),
], ids=["anthropic-refusal", "anthropic-prompt-too-long"])
def test_an_anthropic_deterministic_error_is_cached(llm, anthropic, marker, error_type):
    first = km.summarise(conversations_with(marker), PROMPT, **anthropic)
    calls = [r.path for r in llm.requests]

    again = km.summarise(conversations_with(marker), PROMPT, **anthropic)

    assert calls == ["/v1/messages"] * 3 and llm.request_count == 3, "the re-run sent nothing"
    assert first[0].summary.startswith("Summary: ") and first[1].error.startswith(f"{error_type}: ")
    assert again.stats.cached == 3 and again[1].error == first[1].error


def test_an_anthropic_overload_is_retried_not_cached(llm, anthropic):
    llm.fail_next(1, status=529)

    run = km.summarise(make_conversations(2), PROMPT, **anthropic)

    assert run.stats.errors == 0 and llm.request_count == 3, "one 529, retried once"


def test_a_plain_bad_request_is_reported_and_sent_again(llm):
    """A 400 whose body names no deterministic cause is reported, and not cached."""
    llm.fail_next(1, status=400)
    first = km.summarise(make_conversations(1), PROMPT)

    again = km.summarise(make_conversations(1), PROMPT)

    assert first[0].error.startswith("bad_request: ") and llm.request_count == 2
    assert again[0].status == "ok" and not again[0].cached
