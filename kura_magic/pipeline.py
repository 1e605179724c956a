"""`summarise`: a prompt template over many conversations, paying only for what changed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

from pydantic import BaseModel

from kura_magic import budget, gateway
from kura_magic.cache import CacheEntry, CacheStrategy
from kura_magic.checkpoints import checkpoint_path, load_checkpoint, save_checkpoint
from kura_magic.calls import CacheMode, CallContext
from kura_magic.background import run_sync
from kura_magic.errors import CacheMissError, ConfigError, ModelError
from kura_magic.loaders import ConversationSource, load_conversations
from kura_magic.results import DryRun, RunStats, SummaryResult, SummaryRun
from kura_magic.schemas import resolve_schema
from kura_magic.templates import PromptTemplate
from kura_magic.types import Conversation

ProgressCallback = Callable[[RunStats], None]
UNFINISHED = "interrupted before it finished"


@dataclass
class _Plan:
    """Everything decided before any call: the calls, their keys, who shares which key."""

    conversations: list[Conversation]
    calls: list[gateway.ChatCall]
    keys: list[str]
    context: CallContext
    schema: type[BaseModel] | None
    model: str
    prompt: str
    max_concurrency: int | None
    rows_by_key: dict[str, list[int]] = field(default_factory=dict)


class RunControl:
    """Lets a waiting thread stop a run: finished rows stay, the rest are marked unfinished."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []
        self.stopped = False
        self.fatal: BaseException | None = None

    def stop(self) -> None:
        self.stopped = True
        for task in self.tasks:
            task.cancel()


@overload
def summarise(conversations: ConversationSource, prompt: str, *, dry_run: Literal[True], **options: Any) -> DryRun: ...
@overload
def summarise(conversations: ConversationSource, prompt: str, *, dry_run: Literal[False] = ..., **options: Any) -> SummaryRun: ...


def summarise(
    conversations: ConversationSource, prompt: str, *, dry_run: bool = False, **options: Any
) -> SummaryRun | DryRun:
    """Summarise each conversation with a Jinja2 prompt; cached calls cost nothing.

    Works in a plain script and inside a running event loop (a Jupyter cell).
    Ctrl-C returns the partial run; everything finished is already cached.
    Options are those of `asummarise`.

    Example:
        >>> run = summarise(convs, "Summarise in one line:\\n{{ transcript }}",
        ...                 model="openai/gpt-4o-mini")            # doctest: +SKIP
        >>> run.stats.fresh, run.stats.cached                      # doctest: +SKIP
        (50, 0)
    """
    control = RunControl()
    return run_sync(
        asummarise(conversations, prompt, dry_run=dry_run, _control=control, **options),
        on_interrupt=control.stop,
    )


async def asummarise(
    conversations: ConversationSource,
    prompt: str,
    *,
    model: str | None = None,
    temperature: float = 0.0,
    max_tokens: int | None = None,
    schema: str | type[BaseModel] | None = None,
    experiment: str | None = None,
    max_concurrency: int | None = None,
    max_cost: float | None = None,
    limit: int | None = None,
    cache: CacheStrategy | None = None,
    cache_mode: CacheMode = "read_write",
    variables: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    api_key: str | None = None,
    api_base: str | None = None,
    dry_run: bool = False,
    checkpoint: str | Path | None = None,
    on_progress: ProgressCallback | None = None,
    _control: RunControl | None = None,
) -> SummaryRun | DryRun:
    """The awaitable `summarise`; see it for the meaning of the options.

    Example:
        >>> run = await asummarise(convs, "{{ transcript }}", model="openai/gpt-4o-mini")  # doctest: +SKIP
    """
    context = CallContext.create(experiment=experiment, cache=cache, cache_mode=cache_mode)
    plan = _plan(
        conversations, prompt, context=context, model=model or context.config.model,
        schema=resolve_schema(schema, variables), limit=limit, variables=variables,
        params={"temperature": temperature, "max_tokens": max_tokens, **(params or {})},
        transport=context.config.transport(api_key=api_key, api_base=api_base),
        max_concurrency=max_concurrency,
    )
    stats = RunStats(total=len(plan.conversations))
    started = time.perf_counter()
    saved_at = _checkpoint_path(plan, checkpoint)
    results: list[SummaryResult | None] | None = None
    if saved_at is not None and not dry_run:
        results = _from_checkpoint(plan, saved_at, stats)
    if results is not None:
        return _finish(plan, results, stats, started, on_progress, saved_at=None)
    results = [None] * len(plan.conversations)
    misses = _serve_hits(plan, results, stats)
    _report(on_progress, stats)
    if dry_run:
        return _dry_run(plan, stats, misses)
    if misses:
        await _make_calls(plan, misses, results, stats, started, max_cost, on_progress, _control or RunControl())
    return _finish(plan, results, stats, started, on_progress, saved_at=saved_at)


def _finish(
    plan: _Plan, results: list[SummaryResult | None], stats: RunStats, started: float,
    on_progress: ProgressCallback | None, *, saved_at: Path | None,
) -> SummaryRun:
    stats.elapsed_s = time.perf_counter() - started
    _report(on_progress, stats)
    rows = [r or _unfinished(plan, i) for i, r in enumerate(results)]
    if saved_at is not None and all(r.status in ("ok", "error") for r in rows):
        save_checkpoint(saved_at, rows)
    return SummaryRun(
        rows, stats, model=plan.model, experiment=plan.context.experiment,
        schema_name=plan.schema.__name__ if plan.schema else None, prompt=plan.prompt,
    )


def _checkpoint_path(plan: _Plan, directory: str | Path | None) -> Path | None:
    if directory is None:
        return None
    return checkpoint_path(directory, plan.keys, [c.chat_id for c in plan.conversations])


def _from_checkpoint(plan: _Plan, path: Path, stats: RunStats) -> list[SummaryResult | None] | None:
    """The run's results from its checkpoint, as cached rows, or None if there is none."""
    saved = load_checkpoint(path, plan.schema)
    if saved is None or len(saved) != len(plan.conversations):
        return None
    rows: list[SummaryResult | None] = []
    for conversation, result in zip(plan.conversations, saved):
        row = result.model_copy(update={"cached": True, "cost": 0.0, "latency_s": 0.0,
                                        "metadata": conversation.metadata})
        entry = CacheEntry(model=plan.model, cost=row.fresh_cost, error=row.error)
        rows.append(_count(stats, row, entry))
    return rows


def _plan(
    source: ConversationSource, prompt: str, *, context: CallContext, model: str,
    schema: type[BaseModel] | None, limit: int | None, variables: Mapping[str, Any] | None,
    params: dict[str, Any], transport: dict[str, Any], max_concurrency: int | None,
) -> _Plan:
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    if max_concurrency is not None and max_concurrency < 1:
        raise ConfigError(f"max_concurrency must be at least 1, got {max_concurrency}")
    conversations = load_conversations(source)[:limit]
    template = PromptTemplate.compile(prompt, variables)
    calls = [
        gateway.ChatCall(model, ({"role": "user", "content": template.render(c)},), schema, params, transport)
        for c in conversations
    ]
    keys = [call.key for call in calls]
    plan = _Plan(conversations, calls, keys, context, schema, model, template.source, max_concurrency)
    for row, key in enumerate(keys):
        plan.rows_by_key.setdefault(key, []).append(row)
    return plan


def _serve_hits(plan: _Plan, results: list[SummaryResult | None], stats: RunStats) -> list[str]:
    """Fill every row whose key is cached; return the keys that must be called."""
    misses = []
    for key, rows in plan.rows_by_key.items():
        entry = plan.context.lookup(key)
        if entry is None:
            misses.append(key)
            continue
        for row in rows:
            results[row] = _count(stats, _result(plan, row, entry, cached=True), entry)
    return misses


def _dry_run(plan: _Plan, stats: RunStats, misses: list[str]) -> DryRun:
    fresh_rows = sum(len(plan.rows_by_key[k]) for k in misses)
    estimate = budget.estimate_total([plan.calls[plan.rows_by_key[k][0]] for k in misses]) if misses else 0.0
    return DryRun(
        total=stats.total, cached=stats.total - fresh_rows, fresh=len(misses),
        estimated_cost=estimate, model=plan.model, experiment=plan.context.experiment,
    )


async def _make_calls(
    plan: _Plan, misses: list[str], results: list[SummaryResult | None], stats: RunStats,
    started: float, max_cost: float | None, on_progress: ProgressCallback | None,
    control: RunControl,
) -> None:
    if plan.context.config.offline:
        raise CacheMissError(
            f"offline mode: {len(misses)} of {stats.total} calls are not in the cache of "
            f"experiment {plan.context.experiment!r}; nothing was called. Turn offline off "
            "(%kura offline off) or import the experiment's cache"
        )
    gateway.check_ready(plan.model, plan.calls[0].transport)
    spend = budget.Budget.create(max_cost, plan.model)
    run_limit = asyncio.Semaphore(plan.max_concurrency or len(misses))

    async def call_one(key: str) -> None:
        rows = plan.rows_by_key[key]
        call = plan.calls[rows[0]]
        async with run_limit:
            estimate = spend.reserve(call)
            if estimate is None:
                _fill_skipped(plan, rows, results, stats, spend.limit_text)
                return
            try:
                entry, joined = await plan.context.fetch(call, key)
            finally:
                spend.release(estimate)
        spend.record(entry.cost, entry.usage.completion_tokens)
        for position, row in enumerate(rows):
            result = _result(plan, row, entry, cached=joined or position > 0)
            results[row] = _count(stats, result, entry)
        stats.elapsed_s = time.perf_counter() - started
        _report(on_progress, stats)

    async def guarded(key: str) -> None:
        try:
            await call_one(key)
        except (ModelError, CacheMissError) as exc:
            control.fatal = control.fatal or exc
            control.stop()

    control.tasks = [asyncio.ensure_future(guarded(key)) for key in misses]
    if control.stopped:
        control.stop()
    await asyncio.gather(*control.tasks, return_exceptions=True)
    stats.interrupted = control.stopped
    if control.fatal is not None:
        raise control.fatal


def _result(plan: _Plan, row: int, entry: CacheEntry, *, cached: bool) -> SummaryResult:
    conversation = plan.conversations[row]
    summary: Any = entry.response
    if entry.error is None and plan.schema is not None:
        summary = plan.schema.model_validate_json(entry.response or "")
    return SummaryResult(
        conversation_id=conversation.chat_id,
        summary=summary if entry.error is None else None,
        cached=cached,
        cost=0.0 if cached else entry.cost,
        fresh_cost=entry.cost,
        latency_s=0.0 if cached else entry.latency_s,
        error=None if entry.error is None else f"{entry.error_type}: {entry.error}",
        status="ok" if entry.error is None else "error",
        key=plan.keys[row],
        usage=entry.usage,
        metadata=conversation.metadata,
    )


def _count(stats: RunStats, result: SummaryResult, entry: CacheEntry) -> SummaryResult:
    """Add one result to the run's counts and money; returns it for chaining."""
    stats.record(cached=result.cached, error=result.status == "error", cost=entry.cost)
    return result


def _fill_skipped(
    plan: _Plan, rows: list[int], results: list[SummaryResult | None], stats: RunStats, why: str
) -> None:
    for row in rows:
        results[row] = SummaryResult(
            conversation_id=plan.conversations[row].chat_id, status="skipped",
            error=f"skipped: {why}", key=plan.keys[row], metadata=plan.conversations[row].metadata,
        )
        stats.skipped += 1


def _unfinished(plan: _Plan, row: int) -> SummaryResult:
    return SummaryResult(
        conversation_id=plan.conversations[row].chat_id, status="unfinished", error=UNFINISHED,
        key=plan.keys[row], metadata=plan.conversations[row].metadata,
    )


def _report(on_progress: ProgressCallback | None, stats: RunStats) -> None:
    if on_progress is not None:
        on_progress(stats)
