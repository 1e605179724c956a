"""What kura_magic relies on from litellm, pinned one fact a test, so that the next litellm
release that moves something fails here, by name, instead of silently changing what is
cached or what a run costs.

Every call goes over HTTP to the loopback server, as a user's would go to a provider."""

from __future__ import annotations

import pytest

from helpers import API_KEY, EMBEDDING_MODEL, MODEL, UNPRICED_MODEL
from kura_magic.calls.gateway import litellm
from kura_magic.calls.provider_errors import ProviderError, classify
from kura_magic.testing.provider_shapes import AZURE_REFUSE, REFUSE, TOO_LONG

ANTHROPIC_MODEL = "anthropic/claude-3-haiku-20240307"


def chat(llm, text: str, *, model: str = MODEL, **extra):
    """One litellm chat call to the loopback server, with litellm's own retries off."""
    return litellm().completion(**{"api_base": llm.url, **extra}, model=model, api_key=API_KEY,
                                messages=[{"role": "user", "content": text}], max_retries=0)


def anthropic(llm) -> dict:
    """Where litellm's Anthropic provider finds the loopback's Messages API."""
    return {"model": ANTHROPIC_MODEL, "api_base": llm.url.removesuffix("/v1"), "max_tokens": 16}


def chat_error(llm, text: str, **extra) -> Exception:
    with pytest.raises(Exception) as raised:
        chat(llm, text, **extra)
    return raised.value


@pytest.mark.parametrize(("marker", "status", "code"), [
    (REFUSE, 400, "content_policy_violation"),
    (AZURE_REFUSE, 400, "content_filter"),
    (TOO_LONG, 400, "context_length_exceeded"),
])
def test_an_error_carries_the_providers_status_and_body(llm, marker, status, code):
    """The classifier reads the status and the body's code; litellm must hand both on (as
    `.status_code` and in `.body` or the reply's text)."""
    sent = ProviderError.of(chat_error(llm, marker))
    assert (sent.status, sent.code) == (status, code)


def test_an_anthropic_error_body_is_quoted_in_the_message(llm):
    exc = chat_error(llm, TOO_LONG, **anthropic(llm))
    sent = ProviderError.of(exc)
    assert (sent.status, sent.type) == (400, "invalid_request_error")
    assert sent.message.startswith("prompt is too long")


def test_an_anthropic_refusal_is_finish_reason_content_filter(llm):
    response = chat(llm, REFUSE, **anthropic(llm))
    assert response.choices[0].finish_reason == "content_filter"


def test_a_429_carries_retry_after_and_is_transient(llm):
    llm.fail_next(1, status=429, retry_after_s=1.5)
    failure = classify(chat_error(llm, "hi"))
    assert (failure.kind, failure.error_type, failure.retry_after_s) == ("transient", "rate_limit", 1.5)


@pytest.mark.parametrize(("status", "kind", "error_type"), [
    (500, "transient", "server_error"), (503, "transient", "server_error"),
    (401, "fatal", "authentication"), (404, "fatal", "unknown_model"),
])
def test_statuses_sort_as_we_expect(llm, status, kind, error_type):
    llm.fail_next(1, status=status)
    failure = classify(chat_error(llm, "hi"))
    assert (failure.kind, failure.error_type) == (kind, error_type)


def test_a_timeout_is_transient(llm):
    llm.hang_next(1, seconds=5)
    failure = classify(chat_error(llm, "hi", timeout=0.3))
    assert (failure.kind, failure.error_type) == ("transient", "timeout")


def test_a_response_has_usage_and_litellms_price(llm):
    response = chat(llm, "hello there")
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
    assert response._hidden_params["response_cost"] > 0


def test_an_unpriced_model_has_no_price_not_zero(llm):
    response = chat(llm, "hello there", model=UNPRICED_MODEL)
    assert response._hidden_params.get("response_cost") is None
    with pytest.raises(Exception, match="isn't mapped yet"):  # we catch Exception: it is a bare one's subclass
        litellm().cost_per_token(model=UNPRICED_MODEL, prompt_tokens=10, completion_tokens=10)


def test_per_call_prices_price_a_model_litellm_does_not_know(llm):
    """How the bundled local model is priced at $0: prices passed with the call."""
    response = chat(llm, "hello", model=UNPRICED_MODEL, input_cost_per_token=0.0, output_cost_per_token=0.0)
    assert response._hidden_params["response_cost"] == 0.0


def test_an_unknown_provider_is_refused_by_get_llm_provider():
    with pytest.raises(litellm().BadRequestError, match="LLM Provider NOT provided"):
        litellm().get_llm_provider("no-such-provider-model")
    assert litellm().get_llm_provider(MODEL)[1] == "openai"


def test_a_missing_key_is_named_by_validate_environment(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert litellm().validate_environment(model=MODEL)["missing_keys"] == ["OPENAI_API_KEY"]


def test_an_embedding_response_has_indexed_vectors_and_a_price(llm):
    response = litellm().embedding(model=EMBEDDING_MODEL, input=["a", "b"], api_base=llm.url,
                                   api_key=API_KEY, max_retries=0)
    assert [item["index"] for item in response.data] == [0, 1]
    assert len(response.data[0]["embedding"]) == llm.embedding_dims
    assert response._hidden_params["response_cost"] > 0
