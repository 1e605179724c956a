"""Provider Batch APIs, through litellm's files and batches functions (`acreate_file`,
`acreate_batch`, `aretrieve_batch`, `afile_content`, `acancel_batch`): the request lines a
batch carries (the same request a normal call would send), submitting them, polling and
cancelling a batch, and reading its output and error files back into cache entries priced
at the batch price.

Batch prices are litellm's (`cost_calculator.batch_cost_calculator`: a model's
`*_cost_per_token_batches`, else half its normal price, the discount OpenAI, Azure and
Anthropic document); a model priced in `model_prices` is charged half of that price.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ValidationError

from kura_magic.calls import gateway
from kura_magic.calls.provider_errors import CONTENT_POLICY, Failure, classify_reply
from kura_magic.errors import BatchError
from kura_magic.keys import output_params
from kura_magic.types import CacheEntry, ChatRequest, Usage

# litellm's providers whose files and batches take OpenAI's JSONL lines as they are.
SUPPORTED_PROVIDERS = ("openai", "azure", "hosted_vllm", "litellm_proxy")
CHAT_ENDPOINT, EMBEDDINGS_ENDPOINT = "/v1/chat/completions", "/v1/embeddings"
MAX_LINES = 50_000  # OpenAI's and Azure's limit of requests per batch
MAX_BYTES = 190 * 1024**2  # under their 200 MB limit of an input file
BATCH_DISCOUNT = 0.5  # the documented discount, for a price litellm has no batch rate of
_WHERE = ("api_base", "api_key", "api_version")  # what of a transport says where batches go


@dataclass(frozen=True)
class Provider:
    """Where one model's batches go: litellm's provider name, the model's name there, and
    the keyword arguments litellm's files and batches functions take for it."""

    name: str
    model: str
    where: dict[str, Any]

    @property
    def api_base(self) -> str | None:
        return self.where.get("api_base")


def provider_of(model: str, transport: dict[str, Any]) -> Provider:
    """The batch provider of `model`; a `BatchError` before anything is sent if litellm has
    no batch API for it (or does not know the model).

    Example:
        >>> provider_of("openai/gpt-4o-mini", {"api_key": "sk-x"}).model
        'gpt-4o-mini'
    """
    try:
        name, provider, _, _ = gateway.litellm().get_llm_provider(model, api_base=transport.get("api_base"))
    except Exception:  # litellm raises a bare Exception for a model it does not know
        raise BatchError(f"litellm does not know the model {model!r}: batch mode cannot send it; "
                         "name it as 'provider/model', e.g. 'openai/gpt-4o-mini'") from None
    if provider not in SUPPORTED_PROVIDERS:
        raise BatchError(
            f"batch mode has no batch API for {model!r} (provider {provider!r}); it supports "
            f"{', '.join(SUPPORTED_PROVIDERS)}. Nothing was sent: run it without batch=True"
        )
    where = {"custom_llm_provider": provider, **{k: transport[k] for k in _WHERE if transport.get(k)}}
    return Provider(provider, name, where)


def chat_line(key: str, request: ChatRequest, provider: Provider) -> dict[str, Any]:
    """One line of a chat batch: the body a normal call of `request` sends, named by its key.

    Example:
        >>> from kura_magic.calls.calls import CallSetup
        >>> request = CallSetup.create({"model": "openai/gpt-4o-mini"}).request("hi")
        >>> chat_line("k", request, Provider("openai", "gpt-4o-mini", {}))["body"]["model"]
        'gpt-4o-mini'
    """
    body: dict[str, Any] = {"model": provider.model, "messages": list(request.messages),
                            **output_params(request.params)}
    if request.schema is not None and "response_format" not in body:
        body["response_format"] = gateway.response_format(request.schema)
    return {"custom_id": key, "method": "POST", "url": CHAT_ENDPOINT, "body": body}


def embedding_line(key: str, text: str, provider: Provider, *, dimensions: int | None) -> dict[str, Any]:
    """One line of an embeddings batch: the text a normal request would send, named by its key.

    Example:
        >>> embedding_line("k", "hi", Provider("openai", "text-embedding-3-small", {}), dimensions=8)["body"]
        {'model': 'text-embedding-3-small', 'input': 'hi', 'dimensions': 8}
    """
    body: dict[str, Any] = {"model": provider.model, "input": text}
    if dimensions is not None:
        body["dimensions"] = dimensions
    return {"custom_id": key, "method": "POST", "url": EMBEDDINGS_ENDPOINT, "body": body}


def split(lines: Sequence[dict[str, Any]], *, max_lines: int | None = None,
          max_bytes: int | None = None) -> Iterator[list[dict[str, Any]]]:
    """`lines` in parts, each within the provider's limits of lines and of JSONL bytes
    (default: `MAX_LINES` and `MAX_BYTES`).

    Example:
        >>> [len(part) for part in split([{"a": 1}] * 5, max_lines=2)]
        [2, 2, 1]
    """
    max_lines, max_bytes = max_lines or MAX_LINES, max_bytes or MAX_BYTES
    part: list[dict[str, Any]] = []
    size = 0
    for line in lines:
        length = len(jsonl([line]))
        if part and (len(part) == max_lines or size + length > max_bytes):
            yield part
            part, size = [], 0
        part.append(line)
        size += length
    if part:
        yield part


def jsonl(lines: Sequence[dict[str, Any]]) -> bytes:
    """`lines` as a JSONL file.

    Example:
        >>> jsonl([{"a": 1}, {"b": 2}])
        b'{"a": 1}\\n{"b": 2}\\n'
    """
    return "".join(json.dumps(line) + "\n" for line in lines).encode("utf-8")


async def submit(provider: Provider, data: bytes, *, endpoint: str = CHAT_ENDPOINT) -> Any:
    """Upload one JSONL file and create a batch of it; litellm's batch object.

    Example:
        >>> import asyncio
        >>> from kura_magic.calls.calls import CallSetup
        >>> provider = provider_of("openai/gpt-4o-mini", {})
        >>> line = chat_line("k1", CallSetup.create({"model": "openai/gpt-4o-mini"}).request("hi"), provider)
        >>> batch = asyncio.run(submit(provider, jsonl([line])))
        >>> batch.request_counts.total, asyncio.run(retrieve(provider, batch.id)).status
        (1, 'completed')
    """
    lib = gateway.litellm()
    uploaded = await lib.acreate_file(file=("kura_magic_batch.jsonl", data), purpose="batch", **provider.where)
    return await lib.acreate_batch(completion_window="24h", endpoint=endpoint, input_file_id=uploaded.id,
                                   metadata={"made_by": "kura_magic"}, **provider.where)


async def retrieve(provider: Provider, batch_id: str) -> Any:
    """The batch object as the provider reports it now (see `submit`'s example)."""
    return await gateway.litellm().aretrieve_batch(batch_id=batch_id, **provider.where)


async def cancel(provider: Provider, batch_id: str) -> Any:
    """Ask the provider to cancel a batch; the batch object (its state says whether it was
    still running: a batch that has ended stays as it ended)."""
    return await gateway.litellm().acancel_batch(batch_id=batch_id, **provider.where)


async def file_lines(provider: Provider, file_id: str | None) -> list[dict[str, Any]]:
    """The lines of an output or error file (none if the batch has no such file).

    Example:
        >>> import asyncio
        >>> asyncio.run(file_lines(provider_of("openai/gpt-4o-mini", {}), None))
        []
    """
    if not file_id:
        return []
    content = await gateway.litellm().afile_content(file_id=file_id, **provider.where)
    return [json.loads(row) for row in content.content.splitlines() if row.strip()]


@dataclass(frozen=True)
class Answer:
    """One batch line read back: the entry to report, and whether it may be cached."""

    entry: CacheEntry
    cacheable: bool


def chat_answer(line: dict[str, Any], *, model: str, provider: Provider, transport: dict[str, Any],
                check: Callable[[str], str | None]) -> Answer:
    """A chat batch's output or error line as a normal call's outcome would be: an answer, a
    deterministic error (cached), or a transient or unknown one (not cached); `check` says
    what is wrong with a reply under the run's schema (None: nothing).

    Example:
        >>> line = {"custom_id": "k", "response": {"status_code": 200, "body": {
        ...     "choices": [{"message": {"content": "Refund issued."}, "finish_reason": "stop"}],
        ...     "usage": {"prompt_tokens": 10, "completion_tokens": 3}}}}
        >>> answer = chat_answer(line, model="openai/gpt-4o-mini", provider=provider_of("openai/gpt-4o-mini", {}),
        ...                      transport={}, check=lambda text: None)
        >>> answer.entry.response, answer.cacheable, round(answer.entry.cost, 9)  # 10 x 7.5e-8 + 3 x 3e-7
        ('Refund issued.', True, 1.65e-06)
    """
    response = line.get("response") or {}
    body = response.get("body") or {}
    if line.get("error") or response.get("status_code") != 200:
        failure = line_failure(line)
        entry = CacheEntry(model=model, error=failure.message, error_type=failure.error_type, cost=0.0)
        return Answer(entry, cacheable=failure.kind == "deterministic")
    usage = Usage(prompt_tokens=body.get("usage", {}).get("prompt_tokens", 0) or 0,
                  completion_tokens=body.get("usage", {}).get("completion_tokens", 0) or 0)
    cost = batch_price(provider, usage, transport)
    choice = (body.get("choices") or [{}])[0]
    if choice.get("finish_reason") == "content_filter":
        entry = CacheEntry(model=model, usage=usage, cost=cost, error=gateway.FILTERED, error_type=CONTENT_POLICY[1])
        return Answer(entry, cacheable=True)
    text = (choice.get("message") or {}).get("content") or ""
    problem = check(text)
    if problem is not None:  # a normal call would ask again: this one is made again instead
        entry = CacheEntry(model=model, usage=usage, cost=cost, error=problem, error_type="schema_mismatch")
        return Answer(entry, cacheable=False)
    return Answer(CacheEntry(model=model, response=text, usage=usage, cost=cost), cacheable=True)


def line_failure(line: dict[str, Any]) -> Failure:
    """A failed line sorted as a failed call would be (`provider_errors`): by its status and
    error body; a line the batch never ran (expired, cancelled) is transient.

    Example:
        >>> line_failure({"error": {"code": "batch_expired", "message": "too late"}}).kind
        'transient'
    """
    response = line.get("response")
    if not response:
        error = line.get("error") or {}
        return Failure("transient", str(error.get("code") or "batch_unfinished"),
                       str(error.get("message") or "the batch never ran this line"))
    status = response.get("status_code")
    return classify_reply(status if isinstance(status, int) else None, response.get("body") or {})


def batch_price(provider: Provider, usage: Usage, transport: dict[str, Any]) -> float | None:
    """What a line (or lines) of `usage` cost at the batch price; None where litellm knows no price.

    Example:
        >>> batch_price(Provider("openai", "mine", {}), Usage(prompt_tokens=10, completion_tokens=2),
        ...             {"input_cost_per_token": 1.0, "output_cost_per_token": 2.0})
        7.0
    """
    if "input_cost_per_token" in transport:  # priced by `model_prices`: the documented discount
        rates: tuple[float, float] | None = (BATCH_DISCOUNT * transport["input_cost_per_token"],
                                             BATCH_DISCOUNT * transport["output_cost_per_token"])
    else:
        rates = _litellm_batch_rates(provider.name, provider.model)
    if rates is None:
        return None
    return usage.prompt_tokens * rates[0] + usage.completion_tokens * rates[1]


@lru_cache(maxsize=64)
def _litellm_batch_rates(provider: str, model: str) -> tuple[float, float] | None:
    """litellm's batch price of a prompt token and of a reply token (`batch_cost_calculator`
    on a million of each: per token, it costs a line what pricing the line would), or None."""
    lib, million = gateway.litellm(), 1_000_000
    try:
        lib.get_model_info(model=model, custom_llm_provider=provider)
        prices = [lib.cost_calculator.batch_cost_calculator(
            usage=lib.Usage(prompt_tokens=prompt, completion_tokens=reply, total_tokens=prompt + reply),
            model=model, custom_llm_provider=provider) for prompt, reply in ((million, 0), (0, million))]
    except Exception:  # litellm raises a bare Exception for unmapped models
        return None
    return float(sum(prices[0])) / million, float(sum(prices[1])) / million


def schema_check(schema: type[BaseModel] | None, *, structured: bool) -> Callable[[str], str | None]:
    """What is wrong with a reply under `schema` (None: nothing); without the schema's class
    (a batch collected by another process) a `structured` reply must at least be JSON.

    Example:
        >>> check = schema_check(None, structured=True)
        >>> check('{"summary": "ok"}') is None, check("not JSON")[:30]
        (True, 'the reply did not match the sc')
    """
    def check(text: str) -> str | None:
        try:
            if schema is not None:
                schema.model_validate_json(text)
            elif structured:
                json.loads(text)
        except (ValidationError, ValueError) as exc:
            return f"the reply did not match the schema: {str(exc).splitlines()[0]}"
        return None
    return check
