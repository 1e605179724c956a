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
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy

from kura_magic.background import blocking
from kura_magic.calls import batch_calls, gateway
from kura_magic.calls.batch_calls import Answer, Provider
from kura_magic.calls.calls import CallContext, CallSetup
from kura_magic.calls.gateway import DEFAULT_COMPLETION_TOKENS, litellm
from kura_magic.calls.provider_errors import classify
from kura_magic.config import Settings, settings
from kura_magic.errors import BatchError, CacheWarning
from kura_magic.storage.batches import EMBEDDINGS, ENDED, BatchBook, BatchRecord
from kura_magic.storage.opening import open_store
from kura_magic.storage.vectors import SCOPE, EmbeddingStore
from kura_magic.types import CacheEntry, ChatRequest, Usage

if TYPE_CHECKING:
    from kura_magic.run.results import SummaryRun

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
    found: dict[str, Any] = field(default_factory=dict)  # cache entries, or vectors
    pending: dict[str, str] = field(default_factory=dict)
    batches: list[BatchRecord] = field(default_factory=list)
    vectors: dict[str, numpy.ndarray] = field(default_factory=dict)  # an embeddings batch's, collected now
    cost: float | None = 0.0  # of the embeddings collected now (None: some had no price)

    def resolved(self, key: str) -> bool:
        return any(key in part for part in (self.entries, self.found, self.pending, self.vectors))


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
        if record.kind == EMBEDDINGS:
            self._store_vectors(record, provider, transport, lines)
        else:
            self._store_answers(record, provider, transport, lines)
        self.context.store.release(dict.fromkeys(record.keys, record.token), experiment=record.experiment)
        record.collected = True
        self.book.save(record)
        self.book.prune()

    def _store_vectors(self, record: BatchRecord, provider: Provider, transport: dict[str, Any],
                       lines: list[dict[str, Any]]) -> None:
        """An embeddings batch's vectors, stored by key; a failed line is made again."""
        carried, vectors, costs = set(record.keys), {}, []
        for line in lines:
            body = (line.get("response") or {}).get("body") or {}
            if line.get("custom_id") in carried and (line.get("response") or {}).get("status_code") == 200:
                vectors[line["custom_id"]] = body["data"][0]["embedding"]
                usage = Usage(prompt_tokens=(body.get("usage") or {}).get("prompt_tokens", 0) or 0)
                costs.append(batch_calls.batch_price(provider, usage, transport))
        record.cost = _total(costs)
        self.settled.vectors.update(EmbeddingStore(self.context.store).put_many(vectors))
        self.settled.cost = _total([self.settled.cost, record.cost])

    def _store_answers(self, record: BatchRecord, provider: Provider, transport: dict[str, Any],
                       lines: list[dict[str, Any]]) -> None:
        """A chat batch's lines, stored under their keys by the rules of a normal call."""
        check, carried = self.check(record), set(record.keys)
        answers: dict[str, Answer] = {
            line["custom_id"]: batch_calls.chat_answer(line, model=record.model, provider=provider,
                                                       transport=transport, check=check)
            for line in lines if line.get("custom_id") in carried
        }
        keep = {key: answer.entry for key, answer in answers.items() if answer.cacheable}
        if keep:
            stored = self.context.responses.set_many(keep, experiment=record.experiment)
            self.context.unsaved += len(keep) - stored
        record.cost = _total([answer.entry.cost for answer in answers.values()])
        for key, answer in answers.items():
            if answer.entry.error_type not in _NEVER_RAN:
                self.settled.entries[key] = answer.entry


_NEVER_RAN = ("batch_expired", "batch_cancelled", "batch_unfinished")


def _total(costs: list[float | None]) -> float | None:
    """The sum of `costs`; None (unknown) if any is.

    Example:
        >>> _total([0.5, 0.25]), _total([0.5, None])
        (0.75, None)
    """
    return None if None in costs else sum(cost or 0.0 for cost in costs)


def _provider(record: BatchRecord, config: Settings) -> Provider:
    return batch_calls.provider_of(record.model, config.transport(record.model, api_base=record.api_base))


@dataclass(frozen=True)
class _Job:
    """What one batch-mode call sends: where its keys are leased and stored (`context`), the
    model and where it goes, each key's request line, and what each line is expected to use."""

    context: CallContext
    model: str
    transport: dict[str, Any] = field(repr=False)  # holds the API key
    kind: str  # chat, structured or embeddings
    lines: Mapping[str, dict[str, Any]]  # key -> its request line
    expected: Callable[[str], Usage]  # key -> the usage its line is expected to have
    look: Callable[[list[str]], Mapping[str, Any]]  # the answers already stored for these keys

    @property
    def provider(self) -> Provider:
        return batch_calls.provider_of(self.model, self.transport)

    def estimate(self, keys: list[str]) -> float | None:
        """What `keys` will cost at the batch price; None where litellm knows no price."""
        usages = [self.expected(key) for key in keys]
        expected = Usage(prompt_tokens=sum(u.prompt_tokens for u in usages),
                         completion_tokens=sum(u.completion_tokens for u in usages))
        return batch_calls.batch_price(self.provider, expected, self.transport)


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
        _check_can_batch(context, setup.model, setup.transport)
    elif context.mode != "read_write":  # a run that does not write the cache collects nothing into it
        return Settled()
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
    rest = [key for key in requests if not collector.settled.resolved(key)]
    if submit and rest:
        await _submit(_chat_job(setup, {key: requests[key] for key in rest}), collector, label=label)
    return collector.settled


def _chat_job(setup: CallSetup, requests: Mapping[str, ChatRequest]) -> _Job:
    provider, context = batch_calls.provider_of(setup.model, setup.transport), setup.context
    count = litellm().token_counter

    def expected(key: str) -> Usage:  # the prompt as litellm counts it, a reply of max_tokens (else a guess)
        request = requests[key]
        return Usage(prompt_tokens=count(model=request.model, messages=list(request.messages)),
                     completion_tokens=request.params.get("max_tokens") or DEFAULT_COMPLETION_TOKENS)

    return _Job(context, setup.model, setup.transport, "structured" if setup.schema is not None else "chat",
                {key: batch_calls.chat_line(key, request, provider) for key, request in requests.items()},
                expected, lambda keys: context.responses.get_many(keys, experiment=context.experiment, use=False))


def _check_can_batch(context: CallContext, model: str, transport: dict[str, Any]) -> Provider:
    """The batch provider of `model`; a `BatchError` if batch mode cannot be used for it."""
    if context.mode != "read_write" or context.store.kind == "off":
        raise BatchError(f"batch mode stores what its batches bring back: it needs cache_mode 'read_write' "
                         f"and a cache, not cache_mode {context.mode!r} on a {context.store.kind!r} store")
    return batch_calls.provider_of(model, transport)


def _reply_check(setup: CallSetup, record: BatchRecord) -> Callable[[str], str | None]:
    same_schema = record.model == setup.model
    return batch_calls.schema_check(setup.schema if same_schema else None, structured=record.kind == "structured")


async def _submit(job: _Job, collector: _Collector, *, label: str | None) -> None:
    """Lease the keys no one holds and send them as batches; wait for the batch of those
    another process holds (it is submitting them) and attach to it."""
    context, token = job.context, uuid.uuid4().hex
    claimed = context.store.claim_many(list(job.lines), experiment=context.experiment, token=token,
                                       ttl_s=SUBMIT_LEASE_S)
    found = job.look(list(claimed))
    collector.settled.found.update(found)
    context.store.release(dict.fromkeys(found, token), experiment=context.experiment)
    ours = [key for key in job.lines if key in claimed and key not in found]
    if ours:
        await _send(job, ours, token, collector, label=label)
    held = [key for key in job.lines if key not in claimed]
    if held:
        await _attach(job, held, collector)


async def _send(job: _Job, keys: list[str], token: str, collector: _Collector, *, label: str | None) -> None:
    """Submit `keys` (leased to `token`) in as many batches as the limits need; each batch's
    record is written, and its leases lengthened, as soon as it is created. A part the
    provider refuses is one `BatchError`; its keys and the rest are let go."""
    context, provider = job.context, job.provider
    left, records, failure = dict.fromkeys(keys, token), [], None
    try:
        for part in batch_calls.split([job.lines[key] for key in keys]):
            batch = await batch_calls.submit(provider, batch_calls.jsonl(part), endpoint=part[0]["url"])
            records.append(_recorded(job, batch, [line["custom_id"] for line in part], token, collector.book, label))
            for line in part:
                del left[line["custom_id"]]
    except Exception as exc:  # litellm raises many classes; raised below, outside `except`, so that
        failure = classify(exc)  # no chained exception keeps the provider's text (it may repeat a key)
    finally:
        context.store.release(left, experiment=context.experiment)
    if failure is not None:
        raise BatchError(f"the provider did not take the batch ({failure.error_type}: {failure.message}); "
                         f"{len(left)} calls were not sent and nothing of them was spent")
    for record in records:
        await collector.poll(record)


def _recorded(job: _Job, batch: Any, keys: list[str], token: str, book: BatchBook, label: str | None) -> BatchRecord:
    """The record of a batch just created, written to the store, its keys' leases lengthened."""
    context, provider = job.context, job.provider
    record = BatchRecord(batch_id=batch.id, provider=provider.name, model=job.model, experiment=context.experiment,
                         keys=keys, token=token, api_base=provider.api_base, state=batch.status, label=label,
                         kind=job.kind, estimated_cost=job.estimate(keys))
    if book.save(record):
        context.store.renew(dict.fromkeys(keys, token), experiment=context.experiment, ttl_s=PENDING_LEASE_S)
    else:  # its leases lapse soon, as if this process had died while submitting
        warnings.warn(f"batch {batch.id} could not be recorded in the cache's store: only this kernel knows it, "
                      "and another run may pay for its calls again", CacheWarning, stacklevel=3)
    return record


async def _attach(job: _Job, keys: list[str], collector: _Collector) -> None:
    """Keys another process holds: wait (up to ATTACH_WAIT_S) for the batch record that carries
    them, or for their answers, and attach; what is still held then is shown as pending."""
    waiting = set(keys)
    deadline = time.monotonic() + ATTACH_WAIT_S
    while waiting and time.monotonic() < deadline:
        found = job.look(sorted(waiting))
        collector.settled.found.update(found)
        waiting -= set(found)
        for record in collector.book.pending(experiment=job.context.experiment):
            if not waiting.isdisjoint(record.keys):
                await collector.poll(record)
                waiting -= set(record.keys)
        if waiting:
            await asyncio.sleep(ATTACH_POLL_S)
    collector.settled.pending.update(dict.fromkeys(waiting, "another run holds this call; run again to collect it"))


async def settle_embeddings(texts: Mapping[str, str], *, model: str, dimensions: int | None,
                            transport: dict[str, Any], config: Settings) -> Settled:
    """`embed(..., batch=True)`'s misses (key -> text) through provider batches: the pending
    ones that carry them polled, the rest sent as new ones; the vectors collected now are
    stored in the embedding cache (`Settled.vectors`), the rest are `Settled.pending`.

    Example:
        >>> asyncio.run(settle_embeddings({}, model="openai/text-embedding-3-small", dimensions=None,
        ...                               transport={}, config=settings())).pending
        {}
    """
    context = _embedding_context(config)
    provider = _check_can_batch(context, model, transport)
    book = BatchBook.of(config)
    collector = _Collector(context, book, lambda record: batch_calls.schema_check(None, structured=False))
    if not texts:
        return collector.settled
    await gateway.load(while_loading=lambda: None)
    gateway.check_may_call(config, model, transport, missing=f"{len(texts)} texts are not in the embedding cache")
    for record in book.pending(experiment=SCOPE):
        if not set(record.keys).isdisjoint(texts):
            await collector.poll(record)
    rest = {key: text for key, text in texts.items() if not collector.settled.resolved(key)}
    if rest:
        lines = {key: batch_calls.embedding_line(key, text, provider, dimensions=dimensions) for key, text in rest.items()}
        count = litellm().token_counter
        job = _Job(context, model, transport, EMBEDDINGS, lines,
                   lambda key: Usage(prompt_tokens=count(model=model, text=rest[key])),
                   lambda keys: EmbeddingStore(context.store).get_many(keys, dimensions=dimensions, use=False))
        await _submit(job, collector, label=None)
    return collector.settled


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
    for record in [record for record in book.records(experiment=experiment) if record.pending]:
        collector = _Collector(_context_of(record, config), book,
                               lambda record: batch_calls.schema_check(None, structured=record.kind == "structured"))
        await collector.poll(record)
    return book.records(experiment=experiment)


def _context_of(record: BatchRecord, config: Settings) -> CallContext:
    """Where `record`'s keys are leased and its answers stored: its experiment's responses, or
    the embedding cache."""
    if record.kind == EMBEDDINGS:
        return _embedding_context(config)
    return CallContext.create(experiment=record.experiment, config=config)


def _embedding_context(config: Settings) -> CallContext:
    """The embedding cache as a call context: its leases and vectors are in its one experiment."""
    return CallContext(open_store(config, SCOPE), SCOPE, "read_write", config)


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
