"""Batch mode: a run's cache misses sent as one provider batch (split where the provider's
limits require) at the batch price, its state kept in the store so that any kernel or
machine sharing the cache attaches to it and collects it.

A batch's keys are leased to it in the responses store (`SUBMIT_LEASE_S` while it is being
submitted, `PENDING_LEASE_S` once its record is written), so no other run pays for them
while it is pending. Polling it (a run again, `km.batches()`) stores every finished line
under the key a normal call would have used, then lets its leases go: a line that failed
for good is cached as an error, one that failed for now (or that an expired or cancelled
batch never ran) is not, and is made again by the next run.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kura_magic.background import blocking
from kura_magic.calls import batch_calls
from kura_magic.calls.batch_calls import Answer, Provider
from kura_magic.calls.calls import CallContext, CallSetup
from kura_magic.calls.gateway import DEFAULT_COMPLETION_TOKENS, litellm
from kura_magic.config import Settings, settings
from kura_magic.errors import BatchError
from kura_magic.run.results import SummaryRun
from kura_magic.storage.batches import ENDED, BatchBook, BatchRecord
from kura_magic.types import CacheEntry, ChatRequest, Usage

SUBMIT_LEASE_S = 300.0  # a process that dies while submitting lets its keys go this soon
PENDING_LEASE_S = 25 * 3600.0  # a submitted batch: its 24-hour window, and an hour to collect it
ATTACH_WAIT_S, ATTACH_POLL_S = 30.0, 0.2  # waiting for another process's batch record to appear
PENDING = "pending in batch"


@dataclass
class Settled:
    """What batch mode made of a run's misses: answers collected now (fresh, errors included),
    answers another process stored meanwhile, and the keys still in a batch (key -> why). A
    key an expired or cancelled batch never ran is in none of them: it is made again."""

    entries: dict[str, CacheEntry] = field(default_factory=dict)
    found: dict[str, CacheEntry] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)
    batches: list[BatchRecord] = field(default_factory=list)

    def resolved(self, key: str) -> bool:
        return any(key in part for part in (self.entries, self.found, self.pending))


@dataclass
class _Collector:
    """Polls and collects batches for one run's context (its store, experiment and schema)."""

    context: CallContext
    book: BatchBook
    check: Callable[[Any], Callable[[str], str | None]]  # record -> the reply check of its schema
    settled: Settled = field(default_factory=Settled)

    async def poll(self, record: BatchRecord) -> None:
        """Ask the provider how `record`'s batch is; collect it if it has ended."""
        provider = _provider(record, self.context.config)
        batch = await batch_calls.retrieve(provider, record.batch_id)
        counts = batch.request_counts
        record.state, record.completed, record.failed = batch.status, counts.completed, counts.failed
        if batch.status in ENDED:
            await self._collect(record, provider, batch)
        else:
            self.book.save(record)
            why = f"{PENDING} {record.batch_id} ({record.progress_text})"
            self.settled.pending.update(dict.fromkeys(record.keys, why))
        if record not in self.settled.batches:
            self.settled.batches.append(record)

    async def _collect(self, record: BatchRecord, provider: Provider, batch: Any) -> None:
        """Store every line of an ended batch, then let all its leases go."""
        lines = [*await batch_calls.file_lines(provider, batch.output_file_id),
                 *await batch_calls.file_lines(provider, batch.error_file_id)]
        transport = self.context.config.transport(record.model, api_base=record.api_base)
        check = self.check(record)
        answers: dict[str, Answer] = {
            line["custom_id"]: batch_calls.chat_answer(line, model=record.model, provider=provider,
                                                       transport=transport, check=check)
            for line in lines if line.get("custom_id") in set(record.keys)
        }
        keep = {key: answer.entry for key, answer in answers.items() if answer.cacheable}
        if keep:
            stored = self.context.responses.set_many(keep, experiment=record.experiment)
            self.context.unsaved += len(keep) - stored
        self.context.store.release(dict.fromkeys(record.keys, record.token), experiment=record.experiment)
        record.collected = True
        record.cost = sum(answer.entry.cost or 0.0 for answer in answers.values())
        self.book.save(record)
        for key, answer in answers.items():
            if answer.entry.error_type not in _NEVER_RAN:
                self.settled.entries[key] = answer.entry


_NEVER_RAN = ("batch_expired", "batch_cancelled", "batch_unfinished")


def _provider(record: BatchRecord, config: Settings) -> Provider:
    return batch_calls.provider_of(record.model, config.transport(record.model, api_base=record.api_base))


async def settle(setup: CallSetup, requests: Mapping[str, ChatRequest], *, submit: bool,
                 label: str | None = None) -> Settled:
    """Batch mode for a run's misses (`requests`, by key): poll the pending batches that carry
    any of them, then (if `submit`) send the rest as new batches, or attach to the batch another
    process is submitting. Without `submit` (a normal run) only the polling is done, and only
    if some pending batch carries one of the keys. Raises `BatchError` before anything is sent
    if the model's provider has no batch API or the cache cannot hold a batch.

    Example:
        >>> setup = CallSetup.create({"model": "openai/gpt-4o-mini"})
        >>> asyncio.run(settle(setup, {}, submit=False)).pending
        {}
    """
    context = setup.context
    if submit:
        _check_can_batch(setup)
    book = BatchBook.of(context.config)
    carrying = [record for record in book.pending(experiment=context.experiment)
                if not set(record.keys).isdisjoint(requests)]
    if not carrying and not (submit and requests):
        return Settled()
    await setup.aready(f"{len(requests)} calls are not in the cache of experiment {context.experiment!r}",
                       while_loading=lambda: None)
    collector = _Collector(context, book, lambda record: _reply_check(setup, record))
    for record in carrying:
        await collector.poll(record)
    rest = {key: request for key, request in requests.items() if not collector.settled.resolved(key)}
    if submit and rest:
        await _submit(setup, rest, collector, label=label)
    return collector.settled


def _check_can_batch(setup: CallSetup) -> Provider:
    """The run's batch provider; a `BatchError` if batch mode cannot be used for it."""
    context = setup.context
    if context.mode != "read_write" or context.store.kind == "off":
        raise BatchError(f"batch mode stores what its batches bring back: it needs cache_mode 'read_write' "
                         f"and a cache, not cache_mode {context.mode!r} on a {context.store.kind!r} store")
    return batch_calls.provider_of(setup.model, setup.transport)


def _reply_check(setup: CallSetup, record: BatchRecord) -> Callable[[str], str | None]:
    same_schema = record.model == setup.model
    return batch_calls.schema_check(setup.schema if same_schema else None, structured=record.kind == "structured")


async def _submit(setup: CallSetup, requests: Mapping[str, ChatRequest], collector: _Collector,
                  *, label: str | None) -> None:
    """Lease the keys no one holds and send them as batches; wait for the batch of those
    another process holds (it is submitting them) and attach to it."""
    context, provider = setup.context, _check_can_batch(setup)
    token = uuid.uuid4().hex
    claimed = context.store.claim_many(list(requests), experiment=context.experiment, token=token,
                                       ttl_s=SUBMIT_LEASE_S)
    found = context.responses.get_many(list(claimed), experiment=context.experiment, use=False)
    collector.settled.found.update(found)
    ours = [key for key in requests if key in claimed and key not in found]
    context.store.release(dict.fromkeys(found, token), experiment=context.experiment)
    if ours:
        await _send(setup, provider, {key: requests[key] for key in ours}, token, collector, label=label)
    held = [key for key in requests if key not in claimed]
    if held:
        await _attach(held, collector)


async def _send(setup: CallSetup, provider: Provider, requests: Mapping[str, ChatRequest], token: str,
                collector: _Collector, *, label: str | None) -> None:
    """Submit `requests` (leased to `token`) in as many batches as the limits need; each
    batch's record is written, and its leases lengthened, as soon as it is created."""
    context = setup.context
    lines = [batch_calls.chat_line(key, request, provider) for key, request in requests.items()]
    left = dict.fromkeys(requests, token)
    try:
        for part in batch_calls.split(lines):
            batch = await batch_calls.submit(provider, batch_calls.jsonl(part))
            keys = [line["custom_id"] for line in part]
            record = BatchRecord(
                batch_id=batch.id, provider=provider.name, model=setup.model, experiment=context.experiment,
                keys=keys, token=token, api_base=provider.api_base, state=batch.status, label=label,
                kind="structured" if setup.schema is not None else "chat",
                estimated_cost=estimate_batch_cost([requests[key] for key in keys], provider, setup.transport),
            )
            collector.book.save(record)
            context.store.renew(dict.fromkeys(keys, token), experiment=context.experiment, ttl_s=PENDING_LEASE_S)
            for key in keys:
                del left[key]
            await collector.poll(record)
    except Exception as exc:  # litellm raises many classes: the unsent keys are let go, one error says why
        raise BatchError(f"the provider did not take the batch ({type(exc).__name__}: {str(exc)[:200]}); "
                         f"{len(left)} calls were not sent and nothing of them was spent") from None
    finally:
        context.store.release(left, experiment=context.experiment)


async def _attach(keys: list[str], collector: _Collector) -> None:
    """Keys another process holds: wait (up to ATTACH_WAIT_S) for the batch record that carries
    them, or for their answers, and attach; what is still held then is shown as pending."""
    context, waiting = collector.context, set(keys)
    deadline = time.monotonic() + ATTACH_WAIT_S
    while waiting and time.monotonic() < deadline:
        found = context.responses.get_many(sorted(waiting), experiment=context.experiment, use=False)
        collector.settled.found.update(found)
        waiting -= set(found)
        for record in collector.book.pending(experiment=context.experiment):
            if not waiting.isdisjoint(record.keys):
                await collector.poll(record)
                waiting -= set(record.keys)
        if waiting:
            await asyncio.sleep(ATTACH_POLL_S)
    collector.settled.pending.update(dict.fromkeys(waiting, "another run holds this call; run again to collect it"))


def estimate_batch_cost(requests: list[ChatRequest], provider: Provider, transport: dict[str, Any]) -> float | None:
    """What `requests` will cost at the batch price: litellm's count of each prompt, and a
    reply of `max_tokens` (else a guess); None where litellm knows no price."""
    lib, total = litellm(), 0.0
    for request in requests:
        usage = Usage(prompt_tokens=lib.token_counter(model=request.model, messages=list(request.messages)),
                      completion_tokens=request.params.get("max_tokens") or DEFAULT_COMPLETION_TOKENS)
        cost = batch_calls.batch_price(provider, usage, transport)
        if cost is None:
            return None
        total += cost
    return total


async def apoll_batches(*, experiment: str | None = None, cancel: str | None = None) -> list[BatchRecord]:
    """Poll every pending batch (of one experiment, or all) and collect those that ended;
    `cancel`: a batch id to cancel first. Every batch record, oldest first.

    Example:
        >>> poll_batches()
        []
    """
    config = settings()
    book = BatchBook.of(config)
    if cancel is not None:
        await _cancel(book, cancel, config)
    pending = [record for record in book.records(experiment=experiment) if record.pending]
    for name in sorted({record.experiment for record in pending}):
        collector = _Collector(CallContext.create(experiment=name), book,
                               lambda record: batch_calls.schema_check(None, structured=record.kind == "structured"))
        for record in pending:
            if record.experiment == name:
                await collector.poll(record)
    return book.records(experiment=experiment)


async def _cancel(book: BatchBook, batch_id: str, config: Settings) -> None:
    record = next((r for r in book.records() if r.batch_id == batch_id), None)
    if record is None:
        raise BatchError(f"no batch {batch_id!r} in this cache: km.batches() lists them")
    if record.pending:
        await batch_calls.cancel(_provider(record, config), batch_id)


poll_batches = blocking(apoll_batches)


def batches_of(run: SummaryRun) -> list[BatchRecord]:
    """The batch records that carry some of `run`'s rows (as the run left them: not polled).

    Example:
        >>> from kura_magic import summarise
        >>> batches_of(summarise(convs[:1], "{{ transcript }}"))
        []
    """
    keys = {result.key for result in run}
    return [record for record in BatchBook.of(settings()).records(experiment=run.experiment)
            if not keys.isdisjoint(record.keys)]
