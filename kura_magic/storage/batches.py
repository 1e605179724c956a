"""Provider batches as part of the cache's state: one record per batch (its id, provider,
model, experiment, the cache keys it carries and the lease token they are held with, when it
was submitted, its last known state), JSON in the "batches" store beside the responses, so
any kernel or machine sharing the cache can find a pending batch, attach to it and collect it.

A record is written as soon as its batch is submitted and rewritten as it is polled; the
keys it carries are leased (in the responses store) to its token until it is collected.
"""

from __future__ import annotations

import warnings
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from kura_magic.config import Settings
from kura_magic.errors import CacheWarning
from kura_magic.storage.base import Store
from kura_magic.storage.opening import open_store

RECORD_FORMAT = 1
# The states a batch ends in (OpenAI's names; litellm maps other providers' onto them).
ENDED = ("completed", "failed", "expired", "cancelled")
KEEP_COLLECTED = 100  # collected batches kept for `km.batches()`; the oldest go first
EMBEDDINGS = "embeddings"  # the kind of a batch of embeddings (the others are chat calls)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class BatchRecord(BaseModel):
    """What the store keeps of one provider batch.

    Example:
        >>> record = BatchRecord(batch_id="batch_1", provider="openai", model="openai/gpt-4o-mini",
        ...                      experiment="default", keys=["k1", "k2"], token="t")
        >>> record.pending, record.progress_text
        (True, 'validating 0/2')
    """

    format: int = RECORD_FORMAT
    batch_id: str
    provider: str
    model: str
    experiment: str
    keys: list[str]
    token: str  # the keys' lease token in the responses store
    kind: str = "chat"  # chat, structured (under a schema) or embeddings
    api_base: str | None = None  # where it was sent (never the key)
    submitted_at: datetime = Field(default_factory=_now)
    state: str = "validating"
    completed: int = 0
    failed: int = 0
    estimated_cost: float | None = None  # at the batch price, when submitted
    cost: float | None = None  # at the batch price, of the lines collected
    collected: bool = False  # its lines are stored and its leases let go
    label: str | None = None

    @property
    def pending(self) -> bool:
        """True until its lines are collected (whatever state the provider reports)."""
        return not self.collected

    @property
    def progress_text(self) -> str:
        """The state as the panel shows it: 'in progress 40/100', 'completed', ..."""
        if self.state in ENDED or self.state == "finalizing":
            return self.state
        return f"{self.state.replace('_', ' ')} {self.completed + self.failed}/{len(self.keys)}"


class BatchBook:
    """The batch records of one store (the settings' cache, "batches" scope), by experiment.

    Example:
        >>> from kura_magic.storage.base import MemoryStore
        >>> book = BatchBook(MemoryStore())
        >>> book.save(BatchRecord(batch_id="b1", provider="openai", model="m", experiment="x",
        ...                       keys=["k"], token="t"))
        True
        >>> [r.batch_id for r in book.records(experiment="x")]
        ['b1']
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    @classmethod
    def of(cls, config: Settings) -> BatchBook:
        """The book of the cache `config` selects."""
        return cls(open_store(config, "batches"))

    def save(self, record: BatchRecord) -> bool:
        """Write (or rewrite) `record`; False if the store could not keep it."""
        data = record.model_dump_json().encode("utf-8")
        return self.store.write_bytes(record.batch_id, data, experiment=record.experiment)

    def records(self, *, experiment: str | None = None) -> list[BatchRecord]:
        """Every batch record (of one experiment, or of all), oldest first."""
        names = [experiment] if experiment is not None else list(self.store.info().experiments)
        found: list[BatchRecord] = []
        for name in names:
            for key, data in self.store.read_many(self.store.keys(experiment=name), experiment=name).items():
                found += _record(key, data)
        return sorted(found, key=lambda record: (record.submitted_at, record.batch_id))

    def pending(self, *, experiment: str) -> list[BatchRecord]:
        """The batches of `experiment` not yet collected."""
        return [record for record in self.records(experiment=experiment) if record.pending]

    def prune(self, *, keep: int = KEEP_COLLECTED) -> int:
        """Forget the oldest collected batches past `keep` (pending ones always stay); how many.

        Example:
            >>> from kura_magic.storage.base import MemoryStore
            >>> book = BatchBook(MemoryStore())
            >>> for n in range(3):
            ...     _ = book.save(BatchRecord(batch_id=f"b{n}", provider="openai", model="m", experiment="x",
            ...                               keys=[], token="t", collected=True))
            >>> book.prune(keep=1), [r.batch_id for r in book.records()]
            (2, ['b2'])
        """
        collected = [record for record in self.records() if record.collected]
        doomed = collected[: max(0, len(collected) - keep)]
        for record in doomed:
            self.store.delete(record.batch_id, experiment=record.experiment)
        return len(doomed)


def _record(key: str, data: bytes) -> list[BatchRecord]:
    try:
        return [BatchRecord.model_validate_json(data)]
    except ValidationError:
        warnings.warn(f"batch record {key} is unreadable; it is left out", CacheWarning, stacklevel=3)
        return []


def as_row(record: BatchRecord) -> dict[str, Any]:
    """One record as a row of a table (`km.batches()`).

    Example:
        >>> as_row(BatchRecord(batch_id="b1", provider="openai", model="m", experiment="x",
        ...                    keys=["k"], token="t"))["state"]
        'validating 0/1'
    """
    return {"batch_id": record.batch_id, "experiment": record.experiment, "model": record.model,
            "state": record.progress_text, "lines": len(record.keys), "completed": record.completed,
            "failed": record.failed, "submitted_at": record.submitted_at,
            "estimated_cost": record.estimated_cost, "cost": record.cost, "collected": record.collected}
