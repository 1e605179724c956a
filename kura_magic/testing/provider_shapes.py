"""Refusals and too-long errors shaped exactly as each provider sends them, and the
Anthropic Messages API reply, so the loopback LLM can stand in for OpenAI, Azure OpenAI
and Anthropic alike.

A text carrying one of the markers below gets that provider's answer:

| marker | endpoint | what comes back |
|---|---|---|
| ``[[refuse]]`` | chat, embeddings | OpenAI's 400 ``content_policy_violation`` |
| ``[[refuse:azure]]`` | chat | Azure's 400 ``content_filter`` with its ``innererror`` |
| ``[[filtered]]`` | chat | a 200 whose reply the output filter stopped (``finish_reason: content_filter``) |
| ``[[too-long]]`` | chat, embeddings | OpenAI's 400 ``context_length_exceeded`` |
| ``[[refuse]]`` | messages | Anthropic's 200 with ``stop_reason: refusal`` |
| ``[[too-long]]`` | messages | Anthropic's 400 ``invalid_request_error``, "prompt is too long" |

Pure functions, standard library only.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from kura_magic.testing.replies import Reply, chat_completion_body, context_too_long, refusal

__all__ = [
    "AZURE_REFUSE", "FILTERED", "REFUSE", "TOO_LONG", "anthropic_message", "anthropic_too_long",
    "azure_content_filter", "chat_marker_reply", "filtered_completion", "messages_marker_reply",
]

REFUSE, AZURE_REFUSE, FILTERED, TOO_LONG = "[[refuse]]", "[[refuse:azure]]", "[[filtered]]", "[[too-long]]"

_AZURE_FILTERED = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management "
    "policy. Please modify your prompt and retry. To learn more about our content filtering "
    "policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766"
)


def azure_content_filter() -> Reply:
    """Azure OpenAI's 400 for a prompt its content filter stopped.

    >>> azure_content_filter().body["error"]["innererror"]["code"]
    'ResponsibleAIPolicyViolation'
    """
    categories = ("hate", "jailbreak", "self_harm", "sexual", "violence")
    result = {name: {"filtered": name == "violence", "severity": "medium" if name == "violence" else "safe"}
              for name in categories if name != "jailbreak"}
    result["jailbreak"] = {"filtered": False, "detected": False}
    body = {"error": {
        "message": _AZURE_FILTERED, "type": None, "param": "prompt", "code": "content_filter", "status": 400,
        "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": result},
    }}
    return Reply(400, body, {})


def filtered_completion(body: dict[str, Any], prompt_tokens: int) -> Reply:
    """A 200 whose reply the provider's output filter stopped: no content, finish_reason
    ``content_filter`` (OpenAI and Azure)."""
    reply = chat_completion_body(body, "", prompt_tokens)
    for choice in reply["choices"]:
        choice["message"]["content"] = None
        choice["finish_reason"] = "content_filter"
    return Reply(200, reply)


def anthropic_message(body: dict[str, Any], text: str, input_tokens: int, *,
                      stop_reason: str = "end_turn") -> Reply:
    """Anthropic's Messages API reply carrying `text` (none when `stop_reason` is refusal).

    >>> anthropic_message({"model": "claude"}, "hi there", 3).body["usage"]
    {'input_tokens': 3, 'output_tokens': 2}
    """
    content = [] if stop_reason == "refusal" else [{"type": "text", "text": text}]
    output_tokens = len(text.split()) if content else 0
    return Reply(200, {
        "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
        "model": body.get("model"), "content": content, "stop_reason": stop_reason, "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    })


def anthropic_error(status: int, kind: str, message: str) -> Reply:
    """An error in Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``."""
    body = {"type": "error", "error": {"type": kind, "message": message},
            "request_id": f"req_{uuid.uuid4().hex[:24]}"}
    return Reply(status, body, {})


def anthropic_too_long() -> Reply:
    """Anthropic's 400 for a prompt over the model's context window."""
    return anthropic_error(400, "invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum")


_CHAT_MARKERS: dict[str, Callable[[dict[str, Any], int], Reply]] = {
    AZURE_REFUSE: lambda body, tokens: azure_content_filter(),
    REFUSE: lambda body, tokens: refusal("messages"),
    FILTERED: filtered_completion,
    TOO_LONG: lambda body, tokens: context_too_long("messages"),
}
_MESSAGES_MARKERS: dict[str, Callable[[dict[str, Any], int], Reply]] = {
    REFUSE: lambda body, tokens: anthropic_message(body, "", tokens, stop_reason="refusal"),
    TOO_LONG: lambda body, tokens: anthropic_too_long(),
}


def chat_marker_reply(text: str, body: dict[str, Any], prompt_tokens: int) -> Reply | None:
    """The chat completions answer a marker in `text` asks for, or None.

    >>> chat_marker_reply("please [[refuse:azure]]", {}, 1).body["error"]["code"]
    'content_filter'
    """
    return _marked(_CHAT_MARKERS, text, body, prompt_tokens)


def messages_marker_reply(text: str, body: dict[str, Any], input_tokens: int) -> Reply | None:
    """The Anthropic Messages answer a marker in `text` asks for, or None."""
    return _marked(_MESSAGES_MARKERS, text, body, input_tokens)


def _marked(table: dict[str, Callable[[dict[str, Any], int], Reply]], text: str,
            body: dict[str, Any], tokens: int) -> Reply | None:
    return next((make(body, tokens) for marker, make in table.items() if marker in text), None)

