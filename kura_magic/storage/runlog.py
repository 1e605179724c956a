"""The run history's records in the store: what a record holds, and writing, listing,
reading, pruning, exporting and importing them (JSON, never pickle). Finding a run by its
name and rebuilding it from the response cache is `run.history`.

A record is two entries of the "runs" store, in the run's experiment: `<run_id>` (when,
where, prompt, model, parameters, schema, stats, and the store its answers are in when it
is not the settings' cache) and `<run_id>.rows` (each conversation's id and cache key), so
listing the history reads only the small halves.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import weakref
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from kura_magic.config import settings
from kura_magic.errors import CacheError, CacheWarning, DataError
from kura_magic.storage.base import Store
from kura_magic.storage.opening import open_store
from kura_magic.types import UNANSWERED, CacheMode, ResultStatus, RunStats

RECORD_FORMAT = 1


ROWS = ".rows"  # the suffix of a record's second entry


class RecordedRow(BaseModel):
    """One conversation of a recorded run: where its answer is cached, and how it went."""

    conversation_id: str
    key: str
    status: ResultStatus = "ok"
    cached: bool = False
    error: str | None = None  # only for rows that never got an answer (skipped, unfinished, pending)


class AnswerStore(BaseModel):
    """Where a run made with its own `store=` keeps its answers; never a secret (a Redis URL
    is kept with its password masked, so such a store cannot be reopened from the record)."""

    kind: str
    location: str | None = None  # Store.location: a directory, or a masked Redis URL and prefix


class RunRecord(BaseModel):
    """What the history keeps of one run, besides its rows."""

    format: int = RECORD_FORMAT
    run_id: str
    created_at: datetime
    label: str | None = None  # the name it was bound to (`--out`)
    cell: str | None = None  # where it ran: notebook and cell, if known
    experiment: str
    model: str
    params: dict[str, Any] = {}
    prompt: str
    prompt_hash: str
    schema_name: str | None = None
    json_schema: dict[str, Any] | None = None
    cache_mode: CacheMode = "read_write"
    stats: RunStats
    changes: str = ""
    answers: AnswerStore | None = None  # None: the settings' cache
    keys_digest: str = ""  # sha256 of its rows' cache keys, in order: the same calls, the same digest
    repeats: int = 0  # times the same run was made again since, all of it from the cache
    repeated_at: datetime | None = None  # the last of those


class RecordedRows(BaseModel):
    rows: list[RecordedRow]


def keys_digest(rows: list[RecordedRow]) -> str:
    """One digest of the rows' cache keys, in order.

    Example:
        >>> keys_digest([RecordedRow(conversation_id="c", key="k")]) == keys_digest([RecordedRow(conversation_id="d", key="k")])
        True
    """
    return hashlib.sha256("\n".join(row.key for row in rows).encode("utf-8")).hexdigest()


def prompt_hash(prompt: str) -> str:
    """The short hash that names a prompt template in the history.

    Example:
        >>> prompt_hash("Summarise:\\n{{ transcript }}")
        '5452f652'
    """
    return hashlib.sha256(prompt.strip().encode("utf-8")).hexdigest()[:8]


def run_store() -> Store:
    return open_store(settings(), "runs")


def records(*, experiment: str | None = None, store: Store | None = None) -> list[RunRecord]:
    """Every recorded run (of one experiment, or of all), oldest first.

    Example:
        >>> from kura_magic import summarise
        >>> _ = summarise(convs, "Summarise:\\n{{ transcript }}", experiment="history-demo")
        >>> [r.experiment for r in records(experiment="history-demo")]
        ['history-demo']
    """
    store = store or run_store()
    seen = _seen.setdefault(store, {})
    names = [experiment] if experiment is not None else list(store.info().experiments)
    found = []
    for name in names:
        keys = [key for key in store.keys(experiment=name) if not key.endswith(ROWS)]
        unread = [key for key in keys if (name, key) not in seen]
        for key, data in store.read_many(unread, experiment=name).items():
            try:
                seen[(name, key)] = RunRecord.model_validate_json(data)
            except ValidationError:
                warnings.warn(f"run record {key} is unreadable; it is left out", CacheWarning, stacklevel=2)
        found += [seen[(name, key)] for key in keys if (name, key) in seen]
    return sorted(found, key=lambda record: (record.created_at, record.run_id))


# A record is read once per store and process (only its count of repeats ever changes, and
# `rewrite_record` keeps that here); listing the history is then one listing of keys (a new
# kernel reads them all once).
_seen: weakref.WeakKeyDictionary[Store, dict[tuple[str, str], RunRecord]] = weakref.WeakKeyDictionary()


def read_rows(record: RunRecord, store: Store) -> list[RecordedRow]:
    """The rows of a recorded run; a CacheError if they are gone or unreadable."""
    data = store.read_bytes(record.run_id + ROWS, experiment=record.experiment)
    try:
        return RecordedRows.model_validate_json(data or b"").rows
    except ValidationError:
        raise CacheError(f"the rows of run {record.run_id} are missing or unreadable: "
                         "it cannot be loaded; run it again") from None


def prune(history: list[RunRecord], limit: int, store: Store) -> int:
    """Forget the oldest records past `limit`; returns how many."""
    doomed = history[: max(0, len(history) - limit)]
    for record in doomed:
        store.delete(record.run_id, experiment=record.experiment)
        store.delete(record.run_id + ROWS, experiment=record.experiment)
    return len(doomed)


def clear_history() -> int:
    """Forget every recorded run; returns how many there were.

    Example:
        >>> from kura_magic import summarise
        >>> _ = summarise(convs, "Summarise:\\n{{ transcript }}")
        >>> clear_history(), len(records())
        (1, 0)
    """
    store = run_store()
    count = len(records(store=store))
    store.clear()
    return count


def export_rows(experiment: str) -> list[dict[str, Any]]:
    """The run records of one experiment as JSON data, for `export_experiment`.

    Example:
        >>> from kura_magic import summarise
        >>> _ = summarise(convs, "Summarise:\\n{{ transcript }}", experiment="shared")
        >>> [sorted(row) for row in export_rows("shared")]
        [['record', 'rows']]
    """
    store = run_store()
    return [{"record": r.model_dump(mode="json"), "rows": RecordedRows(rows=read_rows(r, store)).model_dump(mode="json")}
            for r in records(experiment=experiment, store=store)]


def import_row(row: dict[str, Any], *, experiment: str) -> str:
    """Store one run record written by `export_rows` in `experiment`; returns its run id.

    Example:
        >>> from kura_magic import load_run, summarise
        >>> _ = summarise(convs, "Summarise:\\n{{ transcript }}", experiment="shared")
        >>> [import_row(row, experiment="replay") for row in export_rows("shared")] == [load_run(-1).run_id]
        True
    """
    try:
        # an import brings the answers into the settings' cache, whatever store they were made in
        record = RunRecord.model_validate(row["record"]).model_copy(update={"experiment": experiment, "answers": None})
        rows = RecordedRows.model_validate(row["rows"])
    except (KeyError, TypeError, ValidationError) as exc:
        raise DataError(f"not an exported run record: {exc}") from None
    write_record(record, rows.rows, run_store())
    return record.run_id


def read_row_keys(record: RunRecord, store: Store) -> set[str]:
    """The cache keys of a recorded run's rows (read without making a row object each);
    a CacheError if they are gone or unreadable."""
    data = store.read_bytes(record.run_id + ROWS, experiment=record.experiment)
    try:
        return {row["key"] for row in _ROW_KEYS.validate_json(data or b"")["rows"]}
    except ValidationError:
        raise CacheError(f"the rows of run {record.run_id} are missing or unreadable") from None


class _RowKey(TypedDict):
    key: str


class _RowKeys(TypedDict):
    rows: list[_RowKey]


_ROW_KEYS = TypeAdapter(_RowKeys)


def encode_rows(ids: Sequence[str], keys: Sequence[str], statuses: Sequence[str], cached: Sequence[bool],
                errors: Sequence[str | None]) -> bytes:
    """A run's `.rows` entry (as `RecordedRows` reads it) from its columns, written a row at a
    time: a million rows make no million objects. Only rows that never got an answer keep
    their error.

    Example:
        >>> RecordedRows.model_validate_json(encode_rows(["c"], ["k"], ["ok"], [True], [None])).rows[0].key
        'k'
    """
    out = io.StringIO()
    out.write('{"rows":[')
    for index, (conversation_id, key, status, hit, error) in enumerate(zip(ids, keys, statuses, cached, errors)):
        kept = error if status in UNANSWERED else None
        out.write(("," if index else "") + _ROW.encode(
            {"conversation_id": conversation_id, "key": key, "status": status, "cached": hit, "error": kept}))
    out.write("]}")
    return out.getvalue().encode("utf-8")


_ROW = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def write_record(record: RunRecord, rows: list[RecordedRow] | bytes, store: Store) -> bool:
    """Store a run's rows (or their `encode_rows`), then its record (so a listed record always
    has its rows); False if the store could not keep them (its cache warning says why)."""
    data = rows if isinstance(rows, bytes) else RecordedRows(rows=rows).model_dump_json().encode("utf-8")
    if not store.write_bytes(record.run_id + ROWS, data, experiment=record.experiment):
        return False
    return store.write_bytes(record.run_id, record.model_dump_json().encode("utf-8"), experiment=record.experiment)


def rewrite_record(record: RunRecord, store: Store) -> bool:
    """Store a changed record (its rows stay as they are); False if the store could not."""
    if not store.write_bytes(record.run_id, record.model_dump_json().encode("utf-8"), experiment=record.experiment):
        return False
    _seen.setdefault(store, {})[(record.experiment, record.run_id)] = record
    return True
