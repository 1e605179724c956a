"""The one door to model providers: litellm, imported lazily, every setting passed per call.

litellm's exceptions are sorted here into three kinds:
transient (429, 5xx, timeouts, connection: retried with backoff, never cached),
deterministic (content policy, context too long, schema mismatch: cached as errors),
and fatal (bad key, unknown model: the run stops, nothing more is spent).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from kura_magic.cache import CacheEntry
from kura_magic.errors import AuthenticationError, MissingAPIKeyError, ModelError, UnknownModelError
from kura_magic.keys import cache_key, output_params
from kura_magic.types import Usage

if TYPE_CHECKING:
    from types import ModuleType

SCHEMA_RETRIES = 2
MAX_RETRY_DELAY_S = 60.0

ErrorKind = Literal["transient", "deterministic", "fatal", "other"]

# litellm exception class name -> (kind, short error type). Looked up along the
# exception's MRO, so the most specific class wins.
_ERROR_TABLE: dict[str, tuple[ErrorKind, str]] = {
    "ContentPolicyViolationError": ("deterministic", "content_policy"),
    "ContextWindowExceededError": ("deterministic", "context_window"),
    "RateLimitError": ("transient", "rate_limit"),
    "Timeout": ("transient", "timeout"),
    "APIConnectionError": ("transient", "connection"),
    "InternalServerError": ("transient", "server_error"),
    "ServiceUnavailableError": ("transient", "server_error"),
    "BadGatewayError": ("transient", "server_error"),
    "AuthenticationError": ("fatal", "authentication"),
    "PermissionDeniedError": ("fatal", "authentication"),
    "NotFoundError": ("fatal", "unknown_model"),
    "BadRequestError": ("other", "bad_request"),
}


def litellm() -> ModuleType:
    """Import litellm on first use (loading the extension or a cached run never pays for it)."""
    import litellm as module

    # The only global we touch, and it changes no call: without it litellm prints a
    # "Give Feedback / Get Help" banner into the notebook on every retried 429.
    module.suppress_debug_info = True
    return module


@dataclass(frozen=True)
class ChatCall:
    """One chat completion as plain data: what is keyed, and how it travels.

    Example:
        >>> call = ChatCall(model="openai/gpt-4o-mini", messages=({"role": "user", "content": "hi"},))
        >>> call.key.startswith("km1-chat-")
        True
    """

    model: str
    messages: tuple[dict[str, Any], ...]
    schema: type[BaseModel] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    transport: dict[str, Any] = field(default_factory=dict, repr=False)  # holds the API key

    @property
    def key(self) -> str:
        return cache_key(
            model=self.model, messages=self.messages, schema=self.schema, params=self.params
        )


@dataclass
class Outcome:
    """What a call produced: an entry to report, and whether it may be cached."""

    entry: CacheEntry
    cacheable: bool


@dataclass
class Failure:
    """A failed provider call, sorted by `classify()`."""

    kind: ErrorKind
    error_type: str
    message: str
    retry_after_s: float | None = None


def classify(exc: BaseException) -> Failure:
    """Sort a provider exception into transient / deterministic / fatal / other."""
    kind, error_type = "other", type(exc).__name__
    for cls in type(exc).__mro__:
        if cls.__name__ in _ERROR_TABLE:
            kind, error_type = _ERROR_TABLE[cls.__name__]
            break
    status = getattr(exc, "status_code", None)
    if kind == "other" and isinstance(status, int) and status >= 500:
        kind, error_type = "transient", "server_error"
    return Failure(kind, error_type, _short_message(exc), _retry_after(exc))


_SECRET_PATTERN = re.compile(r"\b(sk|key|token)-[A-Za-z0-9_*\-]{4,}", re.IGNORECASE)


def _short_message(exc: BaseException) -> str:
    """One line of the provider's message, with anything shaped like a key removed."""
    text = " ".join(str(exc).split())
    for prefix in ("litellm.", "OpenAIException - "):
        text = text.replace(prefix, "")
    return _SECRET_PATTERN.sub(r"\1-<redacted>", text)[:300]


def _retry_after(exc: BaseException) -> float | None:
    """Seconds the provider asked us to wait (retry-after-ms or Retry-After), if any."""
    response = getattr(exc, "response", None)
    headers = dict(getattr(response, "headers", None) or {})
    headers.update(getattr(exc, "litellm_response_headers", None) or {})
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    if "retry-after-ms" in lowered:
        return _as_seconds(lowered["retry-after-ms"], scale=0.001)
    if "retry-after" in lowered:
        return _as_seconds(lowered["retry-after"], scale=1.0)
    return None


def _as_seconds(value: str, *, scale: float) -> float | None:
    try:
        return max(0.0, float(value) * scale)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def backoff_delay(attempt: int, *, base_s: float, retry_after_s: float | None) -> float:
    """How long to wait before retry number `attempt` (1-based).

    Example:
        >>> backoff_delay(1, base_s=0.5, retry_after_s=2.0)
        2.0
        >>> 0.5 <= backoff_delay(1, base_s=0.5, retry_after_s=None) <= 1.0
        True
    """
    if retry_after_s is not None:
        return min(retry_after_s, MAX_RETRY_DELAY_S)
    exponential = base_s * 2 ** (attempt - 1)
    return min(exponential * (1 + random.random()), MAX_RETRY_DELAY_S)


def check_ready(model: str, transport: dict[str, Any]) -> None:
    """Fail before anything is spent if litellm does not know `model` or its key is missing."""
    lib = litellm()
    try:
        lib.get_llm_provider(model, api_base=transport.get("api_base"))
    except Exception as exc:
        raise UnknownModelError(
            f"litellm does not know the model {model!r}: name it as 'provider/model', "
            "e.g. 'openai/gpt-4o-mini' (see https://docs.litellm.ai/docs/providers)"
        ) from exc
    if transport.get("api_key"):
        return
    missing = lib.validate_environment(model=model, api_base=transport.get("api_base"))
    if missing.get("missing_keys"):
        names = " and ".join(missing["missing_keys"])
        raise MissingAPIKeyError(
            f"no API key for {model!r}: set {names} in the environment (nothing was spent)"
        )


_semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Semaphore]]
_semaphores = weakref.WeakKeyDictionary()


def limiter(limit: int) -> asyncio.Semaphore:
    """The process-wide limit of calls in flight on the running loop.

    Example:
        >>> async def same():
        ...     return limiter(3) is limiter(3)
        >>> asyncio.run(same())
        True
    """
    per_loop = _semaphores.setdefault(asyncio.get_running_loop(), {})
    if limit not in per_loop:
        per_loop[limit] = asyncio.Semaphore(limit)
    return per_loop[limit]


async def complete_call(
    call: ChatCall, *, timeout_s: float, max_retries: int, retry_base_s: float
) -> Outcome:
    """Make one chat call with retries and schema checks; fatal errors raise `ModelError`."""
    started = time.perf_counter()
    messages = list(call.messages)
    cost: float | None = 0.0
    usage = Usage()
    for schema_attempt in range(SCHEMA_RETRIES + 1):
        response = await with_retries(
            lambda: litellm().acompletion(**_request(call, messages, timeout_s)),
            model=call.model, max_retries=max_retries, retry_base_s=retry_base_s,
        )
        if isinstance(response, Failure):
            return _failed(call, response, started, usage, cost)
        text, step_usage, step_cost = _read_response(response)
        usage = _add_usage(usage, step_usage)
        cost = None if cost is None or step_cost is None else cost + step_cost
        problem = _schema_problem(call.schema, text)
        if problem is None:
            entry = _entry(call, started, usage, cost, response=text)
            return Outcome(entry, cacheable=True)
        messages += [
            {"role": "assistant", "content": text},
            {"role": "user", "content": f"That reply did not match the JSON schema: {problem}. "
             "Reply again with JSON only, valid under the schema."},
        ]
    error = f"the reply did not match schema {call.schema.__name__} after {SCHEMA_RETRIES + 1} tries: {problem}"  # type: ignore[union-attr]
    entry = _entry(call, started, usage, cost, error=error, error_type="schema_mismatch")
    return Outcome(entry, cacheable=True)


async def with_retries(
    send: Callable[[], Awaitable[Any]], *, model: str, max_retries: int, retry_base_s: float
) -> Any:
    """`await send()` with transient errors retried: the response, or the `Failure` that
    ended the attempts; fatal errors raise `ModelError`."""
    for attempt in range(max_retries + 1):
        try:
            return await send()
        except Exception as exc:  # litellm raises many classes; classify() sorts them
            failure = classify(exc)
            if failure.kind == "fatal":
                raise _fatal_error(model, failure) from exc
            if failure.kind != "transient" or attempt == max_retries:
                return failure
            await asyncio.sleep(
                backoff_delay(attempt + 1, base_s=retry_base_s, retry_after_s=failure.retry_after_s)
            )
    raise AssertionError("unreachable")  # pragma: no cover


def _request(call: ChatCall, messages: list[dict[str, Any]], timeout_s: float) -> dict[str, Any]:
    request: dict[str, Any] = {
        "model": call.model,
        "messages": messages,
        "timeout": timeout_s,
        "max_retries": 0,  # retries are ours, so Retry-After and caching rules hold
        **output_params(call.params),
        **call.transport,
    }
    if call.schema is not None and "response_format" not in request:
        request["response_format"] = response_format(call.schema)
    return request


def response_format(schema: type[BaseModel]) -> dict[str, Any]:
    """OpenAI's JSON-schema response format for a pydantic model."""
    return {
        "type": "json_schema",
        "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
    }


def _read_response(response: Any) -> tuple[str, Usage, float | None]:
    text = response.choices[0].message.content or ""
    raw_usage = getattr(response, "usage", None)
    usage = Usage(
        prompt_tokens=getattr(raw_usage, "prompt_tokens", 0) or 0,
        completion_tokens=getattr(raw_usage, "completion_tokens", 0) or 0,
    )
    return text, usage, price(response)


def price(response: Any) -> float | None:
    """What litellm prices a response at, or None where it knows no price."""
    try:
        return float(litellm().completion_cost(completion_response=response))
    except Exception:  # litellm raises a bare Exception for unmapped models
        return None


def _schema_problem(schema: type[BaseModel] | None, text: str) -> str | None:
    if schema is None:
        return None
    try:
        schema.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the reply"
        return f"{where}: {first['msg']}"
    return None


def _add_usage(a: Usage, b: Usage) -> Usage:
    return Usage(
        prompt_tokens=a.prompt_tokens + b.prompt_tokens,
        completion_tokens=a.completion_tokens + b.completion_tokens,
    )


def _entry(
    call: ChatCall, started: float, usage: Usage, cost: float | None, **fields: Any
) -> CacheEntry:
    latency = time.perf_counter() - started
    return CacheEntry(model=call.model, usage=usage, cost=cost, latency_s=latency, **fields)


def _failed(
    call: ChatCall, failure: Failure, started: float, usage: Usage, cost: float | None
) -> Outcome:
    entry = _entry(
        call, started, usage, cost, error=failure.message, error_type=failure.error_type
    )
    return Outcome(entry, cacheable=failure.kind == "deterministic")


def _fatal_error(model: str, failure: Failure) -> ModelError:
    if failure.error_type == "unknown_model":
        return UnknownModelError(f"the provider does not know model {model!r}: {failure.message}")
    return AuthenticationError(
        f"the provider rejected the API key for {model!r}: {failure.message}. "
        "Check the key in the environment; finished results are kept in the cache."
    )
