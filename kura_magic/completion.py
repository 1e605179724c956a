"""`complete`: one cached chat call, for text or a pydantic schema."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from kura_magic import gateway
from kura_magic.background import run_sync
from kura_magic.cache import CacheStrategy
from kura_magic.calls import CacheMode, CallContext
from kura_magic.errors import DataError, ResponseError
from kura_magic.results import Completion
from kura_magic.schemas import resolve_schema

MessagesOrText = str | Sequence[Mapping[str, Any]]


def complete(messages_or_text: MessagesOrText, **options: Any) -> Completion:
    """One chat call through the cache; works inside a running event loop too.

    Example:
        >>> reply = complete("Say hi", model="openai/gpt-4o-mini")   # doctest: +SKIP
        >>> reply.text, reply.cached                                  # doctest: +SKIP
        ('Hi!', False)
    """
    return run_sync(acomplete(messages_or_text, **options))


async def acomplete(
    messages_or_text: MessagesOrText,
    *,
    model: str | None = None,
    schema: str | type[BaseModel] | None = None,
    experiment: str | None = None,
    cache: CacheStrategy | None = None,
    cache_mode: CacheMode = "read_write",
    api_key: str | None = None,
    api_base: str | None = None,
    **params: Any,
) -> Completion:
    """The awaitable `complete`; `params` (temperature, max_tokens, seed, ...) go to the model.

    Raises `ResponseError` when the model cannot answer (a content-policy refusal
    is cached, so asking again raises again without a request).

    Example:
        >>> reply = await acomplete([{"role": "user", "content": "hi"}], model="openai/gpt-4o-mini")  # doctest: +SKIP
    """
    context = CallContext.create(experiment=experiment, cache=cache, cache_mode=cache_mode)
    model = model or context.config.model
    transport = context.config.transport(api_key=api_key, api_base=api_base)
    call = gateway.ChatCall(model, _messages(messages_or_text), resolve_schema(schema), params, transport)
    key = call.key
    entry = context.lookup(key)
    cached = entry is not None
    if entry is None:
        gateway.check_ready(model, transport)
        entry, cached = await context.fetch(call, key)
    if entry.error is not None:
        raise ResponseError(
            f"{model} could not answer ({entry.error_type}): {entry.error}",
            error_type=entry.error_type or "error", cached=cached,
        )
    text = entry.response or ""
    return Completion(
        text=text,
        parsed=call.schema.model_validate_json(text) if call.schema else None,
        cached=cached,
        cost=0.0 if cached else entry.cost,
        saved_cost=entry.cost if cached else 0.0,
        usage=entry.usage,
        latency_s=0.0 if cached else entry.latency_s,
        model=model,
        key=key,
    )


def _messages(value: MessagesOrText) -> tuple[dict[str, Any], ...]:
    if isinstance(value, str):
        return ({"role": "user", "content": value},)
    messages = tuple(dict(m) for m in value)
    for index, message in enumerate(messages):
        if "role" not in message or "content" not in message:
            raise DataError(f"message {index} needs 'role' and 'content', got keys {sorted(message)}")
    if not messages:
        raise DataError("no messages: give a text or a list of {'role', 'content'} dicts")
    return messages
