"""The one door to model providers: every litellm call (chat, embeddings, token counts,
prices, readiness) is made here, with litellm imported lazily and every setting passed
per call.

litellm's exceptions are sorted by `provider_errors.classify` (from what the provider sent)
into transient (retried with backoff, never cached), deterministic (cached as errors) and
fatal (the run stops, nothing more is spent); a reply the provider's content filter stopped
is a deterministic error too, and so is one that fails its schema after re-asks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from kura_magic.calls.provider_errors import CONTENT_POLICY, Failure, classify
from kura_magic.config import Settings
from kura_magic.errors import (
    AuthenticationError,
    CacheMissError,
    MissingAPIKeyError,
    ModelError,
    ResponseError,
    UnknownModelError,
)
from kura_magic.keys import output_params
from kura_magic.types import CacheEntry, ChatRequest, Problem, Usage

if TYPE_CHECKING:
    from types import ModuleType

SCHEMA_RETRIES = 2
MAX_RETRY_DELAY_S = 60.0
# A guess at the reply length when a call sets no max_tokens.
DEFAULT_COMPLETION_TOKENS = 200

# A provider library that loads within this long is not worth a "loading" state.
QUIET_IMPORT_S = 0.1


def litellm() -> ModuleType:
    """Import litellm on first use (loading the extension or a cached run never pays for it)."""
    import litellm as module

    # The only global we touch, and it changes no call: without it litellm prints a
    # "Give Feedback / Get Help" banner into the notebook on every retried 429.
    module.suppress_debug_info = True
    return module


_import: concurrent.futures.Future[ModuleType] | None = None
_import_lock = threading.Lock()


def start_import() -> concurrent.futures.Future[ModuleType]:
    """Start importing litellm on a daemon thread (once per process); its future.

    Example:
        >>> start_import() is start_import()
        True
    """
    global _import
    with _import_lock:
        if _import is None:
            _import = concurrent.futures.Future()
            threading.Thread(target=_import_into, args=(_import,), name="kura_magic-litellm-import",
                             daemon=True).start()
        return _import


def _import_into(future: concurrent.futures.Future[ModuleType]) -> None:
    try:
        future.set_result(litellm())
    except BaseException as exc:  # an ImportError is raised where the import is awaited
        future.set_exception(exc)


async def load(*, while_loading: Callable[[], None]) -> None:
    """Have litellm imported without blocking the loop; `while_loading` is called first if that
    takes a while (seconds, for the first fresh call in a new kernel).

    Example:
        >>> asyncio.run(load(while_loading=lambda: None))
    """
    imported = asyncio.wrap_future(start_import())
    done, _ = await asyncio.wait({imported}, timeout=QUIET_IMPORT_S)
    if not done:
        while_loading()
    await imported


@dataclass
class Outcome:
    """What a call produced: an entry to report, and whether it may be cached."""

    entry: CacheEntry
    cacheable: bool


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


def check_may_call(config: Settings, model: str, transport: dict[str, Any], *, missing: str) -> None:
    """The one check before anything is spent: not offline, a model litellm knows, a key.

    `missing` says what the cache lacks, for the offline error.
    """
    check_online(config, missing=missing)
    _check_model(model, transport)
    _check_key(model, transport)


def check_online(config: Settings, *, missing: str) -> None:
    """Raise `CacheMissError` in offline mode (checked before litellm is even imported).

    Example:
        >>> check_online(Settings(offline=False), missing="1 call")
    """
    if config.offline:
        raise CacheMissError(
            f"offline mode: {missing}; nothing was called. Turn offline off "
            "(%kura offline off) or import the experiment's cache"
        )


def _check_model(model: str, transport: dict[str, Any]) -> None:
    try:
        litellm().get_llm_provider(model, api_base=transport.get("api_base"))
    except Exception:
        raise UnknownModelError(
            f"litellm does not know the model {model!r}: name it as 'provider/model', "
            "e.g. 'openai/gpt-4o-mini' (see https://docs.litellm.ai/docs/providers)"
        ) from None


def _check_key(model: str, transport: dict[str, Any]) -> None:
    if transport.get("api_key"):
        return
    missing = litellm().validate_environment(model=model, api_base=transport.get("api_base"))
    if missing.get("missing_keys"):
        names = " and ".join(missing["missing_keys"])
        raise MissingAPIKeyError(
            f"no API key for {model!r}: set {names} in the environment (nothing was spent)"
        )


_semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Semaphore]]
_semaphores = weakref.WeakKeyDictionary()


def limiter(limit: int) -> asyncio.Semaphore:
    """The process-wide limit of calls in flight on the running loop, shared by every call
    that has no limit of its own (`complete`, `embed`, runs without `max_concurrency`).

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


async def complete_chat(request: ChatRequest, config: Settings, *, retried: RetryCount | None = None) -> Outcome:
    """Make one chat call with retries (counted in `retried`) and schema re-asks; fatal
    errors raise `ModelError`."""
    started = time.perf_counter()
    messages = list(request.messages)
    spent = _Spent()
    for _ in range(SCHEMA_RETRIES + 1):
        response = await _with_retries(
            lambda: litellm().acompletion(**_chat_request(request, messages, config)),
            model=request.model, config=config, retried=retried,
        )
        if isinstance(response, Failure):
            return _failed(request, response, started, spent)
        text = spent.add(response)
        if _filtered(response):
            entry = _entry(request, started, spent, error=FILTERED, error_type=CONTENT_POLICY[1])
            return Outcome(entry, cacheable=True)
        problem = _schema_problem(request.schema, text)
        if problem is None:
            return Outcome(_entry(request, started, spent, response=text), cacheable=True)
        messages += _ask_again(text, problem)
    error = (
        f"the reply did not match schema {request.schema.__name__} "  # type: ignore[union-attr]
        f"after {SCHEMA_RETRIES + 1} tries: {problem}"
    )
    entry = _entry(request, started, spent, error=error, error_type="schema_mismatch")
    return Outcome(entry, cacheable=True)


@dataclass
class _Spent:
    """Usage and cost summed over the attempts of one call (None: some had no price)."""

    usage: Usage = field(default_factory=Usage)
    cost: float | None = 0.0

    def add(self, response: Any) -> str:
        """Count one response; returns its text."""
        raw = getattr(response, "usage", None)
        self.usage = Usage(
            prompt_tokens=self.usage.prompt_tokens + (getattr(raw, "prompt_tokens", 0) or 0),
            completion_tokens=self.usage.completion_tokens + (getattr(raw, "completion_tokens", 0) or 0),
        )
        cost = price(response)
        self.cost = None if self.cost is None or cost is None else self.cost + cost
        return response.choices[0].message.content or ""


FILTERED = "the provider's content filter stopped the reply (finish_reason content_filter)"


def _filtered(response: Any) -> bool:
    """True if the provider's content filter stopped the reply: OpenAI's and Azure's output
    filter, and Anthropic's refusal (which litellm reports as the same finish reason)."""
    return bool(response.choices) and response.choices[0].finish_reason == "content_filter"


def _ask_again(text: str, problem: str) -> list[dict[str, Any]]:
    return [
        {"role": "assistant", "content": text},
        {"role": "user", "content": f"That reply did not match the JSON schema: {problem}. "
         "Reply again with JSON only, valid under the schema."},
    ]


async def embed_texts(
    model: str, texts: Sequence[str], *, dimensions: int | None, transport: dict[str, Any],
    config: Settings,
) -> tuple[list[list[float]], float | None]:
    """One embedding request: the vectors in input order and litellm's price (None: unknown).

    Raises `ResponseError` if the provider kept failing or sent the wrong vectors.
    """
    request = {
        "model": model, "input": list(texts), "timeout": config.timeout_s,
        # Retries are ours. (litellm's OpenAI embedding handler reads 0 as "its default",
        # so the OpenAI SDK may also retry up to twice by itself.)
        "max_retries": 0,
        **({"dimensions": dimensions} if dimensions is not None else {}),
        **transport,
    }
    response = await _with_retries(
        lambda: litellm().aembedding(**request), model=model, config=config
    )
    if isinstance(response, Failure):
        raise ResponseError(
            f"{model} could not embed a batch of {len(texts)} texts "
            f"({response.error_type}): {response.message}",
            error_type=response.error_type, cached=False,
        )
    return _vectors(response, model, len(texts), dimensions), price(response)


def _vectors(response: Any, model: str, expected: int, dimensions: int | None) -> list[list[float]]:
    """The response's vectors in input order, checked for count and length."""
    rows = [item["embedding"] for item in sorted(response.data, key=lambda item: item["index"])]
    lengths = {len(row) for row in rows}
    wrong_size = dimensions is not None and lengths != {dimensions}
    if len(rows) != expected or len(lengths) != 1 or wrong_size:
        raise ResponseError(
            f"{model} returned {len(rows)} vectors of lengths {sorted(lengths)} for "
            f"{expected} texts (dimensions={dimensions}); nothing was cached",
            error_type="bad_response", cached=False,
        )
    return rows


# The per-call prices `Settings.model_prices` puts in a call's transport.
_PRICE_PARAMS = ("input_cost_per_token", "output_cost_per_token")


def estimate_cost(request: ChatRequest, *, reply_tokens: float | None = None) -> float | None:
    """litellm's price for the request's prompt and an expected reply; None if no price is known.

    The reply is `max_tokens` long if the request sets it, else `reply_tokens`, else a guess.
    """
    lib = litellm()
    prompt_tokens = lib.token_counter(model=request.model, messages=list(request.messages))
    completion_tokens = (
        request.params.get("max_tokens") or reply_tokens or DEFAULT_COMPLETION_TOKENS
    )
    own_price = {name: request.transport[name] for name in _PRICE_PARAMS if name in request.transport}
    try:
        prompt_cost, completion_cost = lib.cost_per_token(
            model=request.model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            custom_cost_per_token=own_price or None,
        )
    except Exception:  # litellm raises a bare Exception for unmapped models
        return None
    return float(prompt_cost + completion_cost)


def price(response: Any) -> float | None:
    """What litellm prices a response at, or None where it knows no price.

    litellm prices every response it returns (`_hidden_params["response_cost"]`, None where
    it knows no price); pricing it again costs as much as the rest of our per-call work.

    Example:
        >>> from types import SimpleNamespace
        >>> price(SimpleNamespace(_hidden_params={"response_cost": 2e-06}))
        2e-06
    """
    hidden = getattr(response, "_hidden_params", None) or {}
    if "response_cost" in hidden:
        cost = hidden["response_cost"]
        return None if cost is None else float(cost)
    try:
        return float(litellm().completion_cost(completion_response=response))
    except Exception:  # litellm raises a bare Exception for unmapped models
        return None


@dataclass
class RetryCount:
    """Transient failures that were retried (and how many of them were 429s), counted for a
    run's panel and stats.

    Example:
        >>> count = RetryCount()
        >>> count.note(Failure("transient", "rate_limit", "slow down"))
        >>> count.retries, count.rate_limited
        (1, 1)
    """

    retries: int = 0
    rate_limited: int = 0

    def note(self, failure: Failure) -> None:
        self.retries += 1
        self.rate_limited += failure.error_type == "rate_limit"


async def _with_retries(send: Callable[[], Awaitable[Any]], *, model: str, config: Settings,
                        retried: RetryCount | None = None) -> Any:
    """`await send()` with transient errors retried (each counted in `retried`): the response,
    or the `Failure` that ended the attempts; fatal errors raise `ModelError`."""
    for attempt in range(config.max_retries + 1):
        try:
            return await send()
        except Exception as exc:  # litellm raises many classes; classify() sorts them
            failure = classify(exc)
        if failure.kind == "fatal":
            # Raised outside `except`, so no chained exception keeps the provider's text:
            # a provider may repeat the API key in it, and tracebacks land in notebooks.
            raise _fatal_error(model, failure)
        if failure.kind != "transient" or attempt == config.max_retries:
            return failure
        if retried is not None:
            retried.note(failure)
        await asyncio.sleep(backoff_delay(
            attempt + 1, base_s=config.retry_base_s, retry_after_s=failure.retry_after_s
        ))
    raise AssertionError("unreachable")  # pragma: no cover


def _chat_request(
    request: ChatRequest, messages: list[dict[str, Any]], config: Settings
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "timeout": config.timeout_s,
        "max_retries": 0,  # retries are ours, so Retry-After and caching rules hold
        **output_params(request.params),
        **request.transport,
    }
    if request.schema is not None and "response_format" not in body:
        body["response_format"] = response_format(request.schema)
    return body


def response_format(schema: type[BaseModel]) -> dict[str, Any]:
    """OpenAI's JSON-schema response format for a pydantic model."""
    return {
        "type": "json_schema",
        "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
    }


def _schema_problem(schema: type[BaseModel] | None, text: str) -> str | None:
    if schema is None:
        return None
    try:
        schema.model_validate_json(text)
    except ValidationError as exc:
        problem = Problem.of(exc)
        return f"{problem.where or 'the reply'}: {problem.message}"
    return None


def _entry(request: ChatRequest, started: float, spent: _Spent, **fields: Any) -> CacheEntry:
    latency = time.perf_counter() - started
    return CacheEntry(
        model=request.model, usage=spent.usage, cost=spent.cost, latency_s=latency, **fields
    )


def _failed(request: ChatRequest, failure: Failure, started: float, spent: _Spent) -> Outcome:
    entry = _entry(request, started, spent, error=failure.message, error_type=failure.error_type)
    return Outcome(entry, cacheable=failure.kind == "deterministic")


def _fatal_error(model: str, failure: Failure) -> ModelError:
    if failure.error_type == "unknown_model":
        return UnknownModelError(f"the provider does not know model {model!r}: {failure.message}")
    return AuthenticationError(
        f"the provider rejected the API key for {model!r}: {failure.message}. "
        "Check the key in the environment; finished results are kept in the cache."
    )
