"""`summarise`: a prompt template over many conversations, paying only for what changed;
`estimate`: what such a run would call and cost, calling nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from typing_extensions import Unpack

from kura_magic.background import blocking, on_interrupt
from kura_magic.calls import budget
from kura_magic.calls.calls import CallContext, CallOptions, CallSetup
from kura_magic.calls.provider_errors import is_transient
from kura_magic.errors import ConfigError
from kura_magic.inputs.loaders import ConversationSource, iter_conversations
from kura_magic.inputs.templates import PromptTemplate
from kura_magic.keys import schema_json
from kura_magic.run import batch_mode, history
from kura_magic.run.checkpoints import checkpoint_path, load_checkpoint, save_checkpoint
from kura_magic.run.results import Estimate, ResultTable, SummaryRun
from kura_magic.storage.base import BATCH
from kura_magic.types import UNANSWERED, CacheEntry, ChatRequest, Conversation, RunStats

ProgressCallback = Callable[[RunStats], None]
UNFINISHED = "interrupted before it finished"
API_LABEL = "summarise()"  # what the run history calls a run that was given no label (--out)


@dataclass
class _Plan:
    """Everything decided before any call: the conversations to read (a stream), the
    template, and how calls are made. `_Run.serve_hits` reads the stream once."""

    conversations: Iterator[Conversation]
    template: PromptTemplate
    setup: CallSetup

    @property
    def prompt(self) -> str:
        return self.template.source

    @property
    def context(self) -> CallContext:
        return self.setup.context

    def reply_length(self) -> budget.ReplyLength:
        """The reply length this plan's estimates assume (see `budget.ReplyLength`)."""
        return budget.ReplyLength.of(
            max_tokens=self.setup.params.get("max_tokens"), store=self.context.responses,
            experiment=self.context.experiment, model=self.setup.model,
        )

    def parse(self) -> Callable[[str], Any] | None:
        """How an answer becomes the schema's object (None: it stays text)."""
        return self.setup.schema.model_validate_json if self.setup.schema is not None else None


def _plan(
    source: ConversationSource, prompt: str, setup: CallSetup, *, limit: int | None,
    variables: Mapping[str, Any] | None,
) -> _Plan:
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    template = PromptTemplate.compile(prompt, variables)
    return _Plan(islice(iter_conversations(source), limit), template, setup)


def _checkpoint_path(directory: str | Path | None, rows: ResultTable) -> Path | None:
    """Where the checkpoint of these rows lives in `directory` (None: no checkpoint)."""
    return None if directory is None else checkpoint_path(directory, rows.key, rows.conversation_id)


@dataclass
class _Run:
    """One run in progress: its plan, its rows (columns, filled as answers come), the calls
    still to make, counts, budget and tasks."""

    plan: _Plan
    on_progress: ProgressCallback | None = None
    stats: RunStats = field(default_factory=RunStats)
    rows: ResultTable = field(default_factory=ResultTable)
    # The calls to make: each missing key's request, and the rows that share it.
    requests: dict[str, ChatRequest] = field(default_factory=dict)
    rows_by_key: dict[str, list[int]] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    spend: budget.Budget = field(default_factory=lambda: budget.Budget(None))
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stopped: bool = False
    failure: BaseException | None = None
    own_limit: bool = False  # the run has its own max_concurrency, apart from the process-wide one

    def __post_init__(self) -> None:
        self.stats.model = self.plan.setup.model

    def serve_hits(self) -> list[str]:
        """Read the conversations `BATCH` at a time: each becomes a row (id, key, metadata),
        filled at once if its key is cached; the rest keep their request. Returns the keys
        that must be called. Only the missing calls' requests outlive their batch. Stopped
        (an interrupt), it reads no further: the run holds the rows read so far."""
        while self._serve_batch(islice(self.plan.conversations, BATCH)):
            self.report()
            if self.stopped:
                self.stats.interrupted = True
                break
        return list(self.rows_by_key)

    def _serve_batch(self, conversations: Iterator[Conversation]) -> int:
        """Serve the hits of up to `BATCH` conversations; how many were read. A conversation
        and an entry live only while their row is made (a batch of them alive at once would
        outlast the collector's youngest generation and make it sweep every object there is)."""
        setup, template, table = self.plan.setup, self.plan.template, self.rows
        # Each new key's first row and prompt; its repeats in this batch. A prompt becomes a
        # request only if its key is missing.
        firsts: dict[str, int] = {}
        prompts: dict[str, str] = {}
        repeats: dict[str, list[int]] = {}
        start = len(table)
        for conversation in conversations:
            prompt = template.render(conversation)
            key = setup.key(prompt)
            row = table.add(conversation.chat_id, key, conversation.metadata)
            if key in self.rows_by_key:  # a repeat of a call already waiting: joined
                self.rows_by_key[key].append(row)
            elif key in firsts:
                repeats.setdefault(key, []).append(row)
            else:
                firsts[key], prompts[key] = row, prompt
        read = len(table) - start
        self.stats.total += read
        served: list[tuple[bool, bool, float | None, bool]] = []
        for key, entry in self.plan.context.lookup_each(list(firsts)):
            served += self._give([firsts.pop(key), *repeats.get(key, ())], entry, joined=True)
        for key, first in firsts.items():
            self.requests[key], self.rows_by_key[key] = setup.request(prompts[key]), [first, *repeats.get(key, ())]
        self.stats.record_many(served)
        return read

    def fill(self, rows: list[int], entry: CacheEntry, *, joined: bool) -> None:
        """Give `entry` to `rows`: the first is fresh unless `joined`, repeats are cached."""
        self.stats.record_many(self._give(rows, entry, joined=joined))

    def _give(self, rows: list[int], entry: CacheEntry, *, joined: bool) -> list[tuple[bool, bool, float | None, bool]]:
        """`fill` without the counting: what `RunStats.record_many` is to count."""
        parse, error, retryable = self.plan.parse(), entry.error is not None, is_transient(entry.error_type)
        for position, row in enumerate(rows):
            self.rows.fill(row, entry, cached=joined or position > 0, parse=parse)
        return [(joined or position > 0, error, entry.cost, retryable) for position in range(len(rows))]

    def skip(self, rows: list[int]) -> None:
        """Rows whose call the budget refused; the stats say the budget and the estimate."""
        for row in rows:
            self.rows.settle(row, "skipped", f"skipped: {self.spend.limit_text}")
            self.stats.skipped += 1
        self.stats.max_cost = self.spend.max_cost
        self.stats.skip_estimate = self.spend.refused_each

    def stop(self) -> None:
        """Stop starting and cancel what is in flight; finished rows stay."""
        self.stopped = True
        for task in self.tasks:
            task.cancel()

    def report(self, phase: str | None = None) -> None:
        """Send the stats to `on_progress`; `phase`: what the run now waits on, if that changed."""
        self.stats.phase = self.stats.phase if phase is None else phase
        self.stats.elapsed_s = time.perf_counter() - self.started
        self.stats.unsaved = self.plan.context.unsaved
        self.stats.retries = self.plan.context.retried.retries
        self.stats.rate_limited = self.plan.context.retried.rate_limited
        self.stats.in_flight = self.plan.context.in_flight
        if self.on_progress is not None:
            self.on_progress(self.stats)

    async def call_all(self, misses: list[str], *, max_concurrency: int | None,
                       max_cost: float | None) -> None:
        """Make the missing calls; the first failure of any kind cancels the rest and escapes.

        A run with its own `max_concurrency` has that many calls in flight, whatever else runs.
        A run without one works on as many rows at once as the process-wide setting
        (`KURA_MAGIC_MAX_CONCURRENCY`, default 20), and its calls share that many slots with
        every other run, `complete` and `embed` that name no limit either.
        """
        try:
            await self.plan.setup.aready(
                f"{len(misses)} of {self.stats.total} calls are not in the cache of "
                f"experiment {self.plan.context.experiment!r}",
                while_loading=lambda: self.report(RunStats.LOADING),
            )
            reply = self.plan.reply_length() if max_cost is not None else None
            self.spend = budget.Budget.create(max_cost, self.plan.setup.model, reply)
            self.own_limit = max_concurrency is not None
            slots = asyncio.Semaphore(max_concurrency or self.plan.context.config.max_concurrency)
            self.report(RunStats.CALLING)
            with self.plan.context.batched(misses):  # stored together, all of it by the end
                self.tasks = [asyncio.ensure_future(self._call_one(key, slots)) for key in misses]
                if self.stopped:
                    self.stop()
                await asyncio.sleep(0)  # the first calls go out: the panel shows them in flight
                self.report()
                await asyncio.gather(*self.tasks, return_exceptions=True)
        finally:
            self.stats.phase = ""
        self.stats.interrupted = self.stopped and self.failure is None  # a failure says its own why
        if self.failure is not None:
            raise self.failure

    async def _call_one(self, key: str, slots: asyncio.Semaphore) -> None:
        try:
            await self._call_rows(self.rows_by_key[key], slots)
        except Exception as exc:  # ours or a bug, anywhere in the row: the run stops, it escapes
            self.failure = self.failure or exc
            self.stop()
            raise

    async def _call_rows(self, rows: list[int], slots: asyncio.Semaphore) -> None:
        request = self.requests[self.rows.key[rows[0]]]
        async with slots:
            estimate = self.spend.reserve(request)
            if estimate is None:
                self.skip(rows)
                return
            try:
                entry, joined = await self.plan.context.fetch(request, own_limit=self.own_limit)
            finally:
                self.spend.release(estimate)
        self.spend.record(entry.cost)
        self.fill(rows, entry, joined=joined)
        self.report()

    def finish(self, checkpoint_at: Path | None, *, label: str | None = None, cell: str | None = None) -> SummaryRun:
        """The run as it ended, checkpointed if whole, and recorded in the run history."""
        self.report()
        self.requests.clear()  # the calls are made (or never will be): their prompts are not kept
        for row, status in enumerate(self.rows.status):
            if status == "unfinished":
                self.rows.settle(row, "unfinished", UNFINISHED)
        run = self._summary_run(label)
        if checkpoint_at is not None and not any(status in UNANSWERED for status in self.rows.status):
            save_checkpoint(checkpoint_at, run.results)
        setup = self.plan.setup
        history.record_run(run, json_schema=schema_json(setup.schema) if setup.schema else None, cell=cell,
                           answers=setup.context.store)
        return run

    def _summary_run(self, label: str | None) -> SummaryRun:
        setup = self.plan.setup
        return SummaryRun(
            self.rows, self.stats, model=setup.model, experiment=setup.context.experiment,
            schema_name=setup.schema.__name__ if setup.schema else None, prompt=self.plan.prompt,
            cache_mode=setup.context.mode, params=setup.params, label=label or API_LABEL,
        )

    def from_checkpoint(self, path: Path) -> bool:
        """Every row from the run's checkpoint instead, as cached rows; False if there is none."""
        saved = load_checkpoint(path, self.plan.setup.schema)
        if saved is None or len(saved) != len(self.rows):
            return False
        self.stats = RunStats(total=len(self.rows), model=self.plan.setup.model)
        self.requests.clear()
        self.rows_by_key.clear()
        for row, result in enumerate(saved):
            self.rows.put(row, result.model_copy(update={"cached": True, "cost": 0.0, "latency_s": 0.0}))
            self.stats.record(cached=True, error=result.status == "error", cost=result.fresh_cost)
        return True


async def asummarise(
    conversations: ConversationSource,
    prompt: str,
    *,
    max_concurrency: int | None = None,
    max_cost: float | None = None,
    limit: int | None = None,
    variables: Mapping[str, Any] | None = None,
    checkpoint: str | Path | None = None,
    on_progress: ProgressCallback | None = None,
    label: str | None = None, cell: str | None = None,
    batch: bool = False,
    **options: Unpack[CallOptions],
) -> SummaryRun:
    """Summarise each conversation with a Jinja2 prompt; cached calls cost nothing.

    `summarise` is the same, blocking: it works in a script and inside a running event
    loop (a Jupyter cell), and Ctrl-C returns the partial run (everything finished is
    already cached). An exception in any call stops the run and is raised. `options`
    are the `CallOptions`. Each run is recorded in the run history (`km.runs()`): `label`
    names it there (the magic's `--out`), `cell` says where it ran. `batch=True` sends the
    misses as a provider batch at the batch price instead (`run.batch_mode`): rows still in
    it are 'pending', and running it again collects them.

    Example:
        >>> run = summarise(convs, "In one line:\\n{{ transcript }}", model="openai/gpt-4o-mini")
        >>> run.stats.fresh, run.stats.cached
        (5, 0)
        >>> summarise(convs, "In one line:\\n{{ transcript }}", model="openai/gpt-4o-mini").stats.cached
        5
    """
    if max_concurrency is not None and max_concurrency < 1:
        raise ConfigError(f"max_concurrency must be at least 1, got {max_concurrency}")
    plan = _plan(conversations, prompt, CallSetup.create(options, variables), limit=limit, variables=variables)
    run = _Run(plan, on_progress)
    on_interrupt(run.stop)
    misses = run.serve_hits()
    saved_at = _checkpoint_path(checkpoint, run.rows)
    if saved_at is not None and run.from_checkpoint(saved_at):
        return run.finish(checkpoint_at=None, label=label, cell=cell)
    if misses and not run.stopped:
        misses = await _through_batches(run, misses, submit=batch, label=label)
    if misses and not run.stopped:
        await run.call_all(misses, max_concurrency=max_concurrency, max_cost=max_cost)
    return run.finish(checkpoint_at=saved_at, label=label, cell=cell)


summarise = blocking(asummarise)


async def _through_batches(run: _Run, misses: list[str], *, submit: bool, label: str | None) -> list[str]:
    """Fill the rows a provider batch answered or still holds (see `batch_mode.settle`); the
    misses left to call now (none when `submit`: they went into a batch)."""
    settled = await batch_mode.settle(run.plan.setup, {key: run.requests[key] for key in misses},
                                      submit=submit, label=label)
    if not (settled.entries or settled.found or settled.pending):  # no batch has any of them
        return [] if submit else misses
    for key in misses:  # a batch may carry other runs' keys too
        rows, entry = run.rows_by_key[key], settled.entries.get(key) or settled.found.get(key)
        if entry is not None:
            run.fill(rows, entry, joined=key in settled.found)
        elif key in settled.pending:
            for row in rows:
                run.rows.settle(row, "pending", settled.pending[key])
    run.report()
    return [] if submit else [key for key in misses if not settled.resolved(key)]


def estimate(
    conversations: ConversationSource,
    prompt: str,
    *,
    limit: int | None = None,
    variables: Mapping[str, Any] | None = None,
    **options: Unpack[CallOptions],
) -> Estimate:
    """What `summarise` with the same arguments would do: how many calls are cached and
    fresh, and what the fresh ones would cost. Calls nothing.

    Example:
        >>> _ = summarise(convs[:3], "{{ transcript }}", model="openai/gpt-4o-mini")
        >>> estimate(convs, "{{ transcript }}", model="openai/gpt-4o-mini")  # doctest: +ELLIPSIS
        estimate: 5 conversations, 3 cached, 2 fresh calls, about $0.0000... (openai/gpt-4o-mini, experiment default; replies at the 14-token mean of 3 cached replies)
    """
    plan = _plan(conversations, prompt, CallSetup.create(options, variables), limit=limit, variables=variables)
    run = _Run(plan)
    misses = run.serve_hits()
    reply = plan.reply_length()
    return Estimate(
        total=run.stats.total, cached=run.stats.cached, fresh=len(misses),
        estimated_cost=budget.estimate_total([run.requests[key] for key in misses], reply),
        model=plan.setup.model, experiment=plan.context.experiment, reply_basis=reply.basis,
    )
