"""`complete`: one cached chat call, for text or a pydantic schema."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from typing_extensions import Unpack

from kura_magic.background import blocking
from kura_magic.calls.calls import CallOptions, CallSetup
from kura_magic.errors import DataError, ResponseError
from kura_magic.run.results import Completion, result_from_entry
from kura_magic.types import CacheEntry, ChatRequest, lone_surrogate

MessagesOrText = str | Sequence[Mapping[str, Any]]


async def acomplete(messages_or_text: MessagesOrText, **options: Unpack[CallOptions]) -> Completion:
    """One chat call through the cache; `complete` is the same, blocking (it works inside a
    running event loop too). `options` are the `CallOptions`, as for `summarise`: the same
    prompt and options give the same key through both.

    Raises `ResponseError` when the model cannot answer (a content-policy refusal
    is cached, so asking again raises again without a request).

    Example:
        >>> reply = complete("Say hi", model="openai/gpt-4o-mini")
        >>> reply.cached, complete("Say hi", model="openai/gpt-4o-mini").cached
        (False, True)
    """
    setup = CallSetup.create(options)
    request = setup.request(_messages(messages_or_text))
    entry = setup.context.lookup(request.key)
    cached = entry is not None
    if entry is None:
        await setup.aready(
            f"call {request.key} is not in the cache of experiment {setup.context.experiment!r}",
            while_loading=lambda: None,
        )
        entry, cached = await setup.context.fetch(request)
    return _completion(request, entry, cached=cached)


complete = blocking(acomplete)


def _completion(request: ChatRequest, entry: CacheEntry, *, cached: bool) -> Completion:
    if entry.error is not None:
        raise ResponseError(
            f"{request.model} could not answer ({entry.error_type}): {entry.error}",
            error_type=entry.error_type or "error", cached=cached,
        )
    schema = request.schema
    result = result_from_entry(entry, conversation_id="", key=request.key, cached=cached,
                               parse=schema.model_validate_json if schema is not None else None)
    return Completion(
        text=entry.response or "",
        parsed=result.summary if schema is not None else None,
        cached=cached,
        cost=result.cost,
        latency_s=result.latency_s,
        saved_cost=result.fresh_cost if cached else 0.0,
        usage=result.usage,
        model=request.model,
        key=request.key,
    )


def _messages(value: MessagesOrText) -> tuple[dict[str, Any], ...]:
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    if not isinstance(value, Iterable) or isinstance(value, (bytes, Mapping)):
        raise DataError(
            f"cannot send a {type(value).__name__}: give a text or a list of "
            "{'role', 'content'} dicts"
        )
    messages = tuple(_message(index, message) for index, message in enumerate(value))
    if not messages:
        raise DataError("no messages: give a text or a list of {'role', 'content'} dicts")
    return messages


def _message(index: int, message: Any) -> dict[str, Any]:
    """One message as a dict, refused (naming its index) unless it can be sent as it is."""
    if not isinstance(message, Mapping):
        raise DataError(
            f"message {index} is a {type(message).__name__}: give a {{'role', 'content'}} dict"
        )
    if "role" not in message or "content" not in message:
        raise DataError(f"message {index} needs 'role' and 'content', got keys {sorted(message)}")
    for name, part in message.items():
        problem = lone_surrogate(part) if isinstance(part, str) else None
        if problem is not None:
            raise DataError(f"message {index}, field {name!r}: {problem}")
    return dict(message)
