"""`complete`: one cached chat call, for text or a pydantic schema."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from kura_magic import gateway
from kura_magic.background import blocking
from kura_magic.calls import CallContext, model_params
from kura_magic.errors import DataError, ResponseError
from kura_magic.results import Completion
from kura_magic.schemas import resolve_schema
from kura_magic.store import Store
from kura_magic.types import CacheEntry, CacheMode, ChatRequest

MessagesOrText = str | Sequence[Mapping[str, Any]]


async def acomplete(
    messages_or_text: MessagesOrText,
    *,
    model: str | None = None,
    temperature: float = 0.0,
    max_tokens: int | None = None,
    params: Mapping[str, Any] | None = None,
    schema: str | type[BaseModel] | None = None,
    experiment: str | None = None,
    cache_mode: CacheMode = "read_write",
    api_key: str | None = None,
    api_base: str | None = None,
    store: Store | None = None,
) -> Completion:
    """One chat call through the cache; `complete` is the same, blocking (it works inside a
    running event loop too). The same prompt and options give the same key as `summarise`.

    Raises `ResponseError` when the model cannot answer (a content-policy refusal
    is cached, so asking again raises again without a request).

    Example:
        >>> reply = complete("Say hi", model="openai/gpt-4o-mini")   # doctest: +SKIP
        >>> reply.text, reply.cached                                  # doctest: +SKIP
        ('Hi!', False)
    """
    context = CallContext.create(experiment=experiment, store=store, cache_mode=cache_mode)
    request = ChatRequest(
        model or context.config.model, _messages(messages_or_text), resolve_schema(schema),
        model_params(temperature, max_tokens, params),
        context.config.transport(api_key=api_key, api_base=api_base),
    )
    entry = context.lookup(request.key)
    cached = entry is not None
    if entry is None:
        gateway.check_may_call(
            context.config, request.model, request.transport,
            missing=f"call {request.key} is not in the cache of experiment {context.experiment!r}",
        )
        entry, cached = await context.fetch(request)
    return _completion(request, entry, cached=cached)


complete = blocking(acomplete)


def _completion(request: ChatRequest, entry: CacheEntry, *, cached: bool) -> Completion:
    if entry.error is not None:
        raise ResponseError(
            f"{request.model} could not answer ({entry.error_type}): {entry.error}",
            error_type=entry.error_type or "error", cached=cached,
        )
    text = entry.response or ""
    return Completion(
        text=text,
        parsed=request.schema.model_validate_json(text) if request.schema else None,
        cached=cached,
        cost=0.0 if cached else entry.cost,
        saved_cost=entry.cost if cached else 0.0,
        usage=entry.usage,
        latency_s=0.0 if cached else entry.latency_s,
        model=request.model,
        key=request.key,
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
