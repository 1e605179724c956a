"""The run history, seen from runs: recording a `summarise` run (with what changed since the
last run of its name), finding a recorded run by its name, rebuilding it from its record
and the response cache with no call made, comparing two runs, and the history as a table.
The records themselves are kept by `storage.runlog`; the table is shown by `views.history`.
The history is an aid, like the cache: a store that cannot keep a record costs one
warning, never a run.
"""

from __future__ import annotations

import re
import uuid
import warnings
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from kura_magic.config import settings
from kura_magic.diffs import changed_words
from kura_magic.errors import CacheError, CacheWarning, ConfigError
from kura_magic.formatting import counted
from kura_magic.run.compare import Comparison, run_settings, setting_changes
from kura_magic.run.results import SummaryResult, SummaryRun, result_from_entry
from kura_magic.storage.base import Store
from kura_magic.storage.opening import open_store
from kura_magic.storage.responses import ResponseStore
from kura_magic.storage.runlog import (
    AnswerStore,
    RecordedRow,
    RunRecord,
    encode_rows,
    prompt_hash,
    prune,
    read_row_keys,
    read_rows,
    records,
    rewrite_record,
    run_store,
    write_record,
)
from kura_magic.types import CacheEntry

if TYPE_CHECKING:
    import pandas

MISSING = "no longer in the cache (cleared or evicted): run it again to get it back"
_RELATIVE = re.compile(r"-\d+")


class RecordedSummary(BaseModel):
    """A structured answer read back without its schema class: the fields as they were."""

    model_config = ConfigDict(extra="allow")


def record_run(run: SummaryRun, *, json_schema: dict[str, Any] | None = None, cell: str | None = None,
               answers: Store | None = None) -> None:
    """Record `run` in the history, giving it its `run_id` and its `changes` (what changed
    since the previous run of the same label); `answers` is the store its answers went to, if
    not the settings' cache. A history store that cannot keep the record is one warning.

    Example:
        >>> from kura_magic import summarise
        >>> run = summarise(convs, "Summarise:\\n{{ transcript }}")   # summarise records it
        >>> load_run(-1).run_id == run.run_id
        True
    """
    if not settings().caching_enabled:
        return
    try:
        saved = _save(run, run_store(), json_schema=json_schema, cell=cell, answers=answers)
        why = "the store could not write it; its cache warning says why"
    except CacheError as exc:  # the history store cannot be opened: nothing has said why yet
        saved, why = False, str(exc)
    if not saved:
        warnings.warn(f"this run was not recorded in the run history ({why}); its results are complete, "
                      "only `km.runs()` will not list it", CacheWarning, stacklevel=4)


def _save(run: SummaryRun, store: Store, *, json_schema: dict[str, Any] | None, cell: str | None,
          answers: Store | None) -> bool:
    history = records(store=store)
    record = RunRecord(
        run_id=uuid.uuid4().hex[:8], created_at=datetime.now(timezone.utc), label=run.label, cell=cell,
        experiment=run.experiment, model=run.model, params=run.params, prompt=run.prompt,
        prompt_hash=prompt_hash(run.prompt), schema_name=run.schema_name, json_schema=json_schema,
        cache_mode=run.cache_mode, stats=run.stats, answers=answer_store(answers),
    )
    record.keys_digest = run.table.keys_digest()  # as `keys_digest` of the rows, without making them
    if history and _repeats(history[-1], record):
        return _fold_into(history[-1], run, record, store)
    table = run.table
    previous = next((r for r in reversed(history) if run.label and r.label == run.label), None)
    if previous is not None:
        try:
            keys_before = read_row_keys(previous, store)
            reused = sum(hit and key in keys_before for key, hit in zip(table.key, table.cached))
            record.changes = change_note(previous, record, reused)
        except CacheError:  # the previous run's rows are gone: no note, the run is still recorded
            pass
    rows = encode_rows(table.conversation_id, table.key, table.status, table.cached, table.error)
    if not write_record(record, rows, store):
        return False
    run.run_id, run.changes = record.run_id, record.changes
    if answers is not None and record.answers is not None:
        _answer_stores[record.run_id] = answers
    prune([*history, record], settings().history_limit, store)
    return True


# What must match for a run to be the latest one made again (besides its rows' keys).
_SAME_RUN = ("label", "cell", "experiment", "model", "params", "prompt_hash", "schema_name", "cache_mode", "answers")


def _repeats(latest: RunRecord, record: RunRecord) -> bool:
    """True if `record` is `latest` made again (the same calls, `keys_digest`) and wholly
    served from the cache: folded into it, so re-running a cell a hundred times does not push
    real runs out of the history."""
    stats = record.stats
    if stats.fresh or stats.cached != stats.total or not latest.keys_digest:
        return False
    return all(getattr(latest, name) == getattr(record, name) for name in (*_SAME_RUN, "keys_digest"))


def _fold_into(latest: RunRecord, run: SummaryRun, record: RunRecord, store: Store) -> bool:
    """Count `record` as one more repeat of `latest`; the run takes `latest`'s id."""
    folded = latest.model_copy(update={"repeats": latest.repeats + 1, "repeated_at": record.created_at})
    if not rewrite_record(folded, store):
        return False
    run.run_id, run.changes = folded.run_id, f"the same as run {folded.run_id}, all cached (made {folded.repeats + 1} times)"
    return True


# The stores runs made with `store=` answered into, while this process holds them: a memory
# store, or a Redis one whose password the record does not keep, is found again here.
_answer_stores: weakref.WeakValueDictionary[str, Store] = weakref.WeakValueDictionary()


def answer_store(store: Store | None) -> AnswerStore | None:
    """How a record names the store a run's answers went to: None for the settings' cache.

    Example:
        >>> from kura_magic.storage.base import MemoryStore
        >>> answer_store(MemoryStore())
        AnswerStore(kind='memory', location=None)
    """
    if store is None or store is open_store(settings()):
        return None
    return AnswerStore(kind=store.kind, location=store.location)


def change_note(before: RunRecord, after: RunRecord, reused: int) -> str:
    """What changed from run `before` to run `after` of the same cell, in one line; `reused`:
    the rows of `after` served from the cache with a key `before` had too.

    Example:
        >>> from kura_magic.types import RunStats
        >>> stats = RunStats(total=2, fresh=1, cached=1)
        >>> old = RunRecord(run_id="a1", created_at=datetime.now(timezone.utc), experiment="e", model="m",
        ...                 prompt="In one line: {{ transcript }}", prompt_hash="x", stats=stats)
        >>> new = old.model_copy(update={"run_id": "b2", "prompt": "In two lines: {{ transcript }}"})
        >>> change_note(old, new, reused=1)
        'since run a1: prompt changed (2 words) · 1 fresh · 1 unchanged answer reused'
    """
    parts = []
    words = changed_words(before.prompt, after.prompt)
    if words:
        parts.append(f"prompt changed ({counted(words, 'word')})")
    settings_then, settings_now = (run_settings(_shell_run(r)) for r in (before, after))
    parts += [f"{name} {a} → {b}" for name, (a, b) in setting_changes(settings_then, settings_now).items()]
    if not parts:
        parts.append("nothing changed" if before.prompt == after.prompt else "only white space changed")
    texts = after.stats.texts()
    parts.append(texts["kura-fresh"])
    if after.stats.errors:
        parts.append(texts["kura-errors"])
    parts.append(f"{counted(reused, 'unchanged answer')} reused")
    return f"since run {before.run_id}: " + " · ".join(parts)


def find_record(ref: str | int, *, store: Store | None = None) -> RunRecord:
    """The recorded run `ref` names: -1 (the latest), -2 (the one before), ...; an `--out`
    name (its latest run); or a run id (a unique start of one is enough).

    Example:
        >>> from kura_magic import summarise
        >>> run = summarise(convs, "Summarise:\\n{{ transcript }}", label="v1")
        >>> find_record("v1").run_id == find_record(-1).run_id == find_record(run.run_id[:5]).run_id
        True
    """
    history = records(store=store)
    text = str(ref).strip()
    if not history:
        raise ConfigError(f"no run {text!r}: no runs are recorded yet; run %%summarise (or summarise()) first")
    if _RELATIVE.fullmatch(text):
        back = -int(text)
        if back > len(history):
            raise ConfigError(f"no run {text}: only {len(history)} runs are recorded")
        return history[-back]
    named = [r for r in history if r.label == text]
    if named:
        return named[-1]
    by_id = [r for r in history if r.run_id.startswith(text.lower())]
    if len({r.run_id for r in by_id}) == 1:  # one run, perhaps imported into several experiments
        return max(by_id, key=lambda r: r.experiment == settings().experiment)
    if by_id:
        raise ConfigError(f"run id {text!r} is ambiguous ({', '.join(r.run_id for r in by_id)}): give more of it")
    raise ConfigError(f"no recorded run {text!r}: give an --out name, a run id from km.runs() "
                      f"(the latest is {history[-1].run_id}), or -1 for the latest")


def load_run(ref: str | int, *, store: Store | None = None, answers: Store | None = None) -> SummaryRun:
    """A recorded run rebuilt from its record and the response cache, calling nothing.
    Answers that left the cache are rows with an error, and listed in `.missing`; rows that were
    pending in a provider batch show its answer once collected. A run made
    with its own `store=` is read from that store: reopened from the record (a directory), or
    still open in this process; else pass it as `answers`.

    Example:
        >>> from kura_magic import summarise
        >>> run = summarise(convs, "Summarise:\\n{{ transcript }}", label="v1")
        >>> loaded = load_run("v1")
        >>> [r.summary for r in loaded] == [r.summary for r in run], loaded.missing
        (True, [])
    """
    store = store or run_store()
    record = find_record(ref, store=store)
    rows = read_rows(record, store)
    keys = list(dict.fromkeys(row.key for row in rows if row.error is None or row.status == "pending"))
    found, why = (answers, MISSING) if answers is not None else _answers_of(record)
    entries = ResponseStore(found).get_many(keys, experiment=record.experiment) if found is not None else {}
    run = _shell_run(record)
    run.results = [_result(row, entries.get(row.key), structured=record.json_schema is not None, missing=why)
                   for row in rows]
    run.run_id, run.changes = record.run_id, record.changes
    run.missing = [r.conversation_id for r in run.results if r.error == why]
    return run


def _answers_of(record: RunRecord) -> tuple[Store | None, str]:
    """The store holding a recorded run's answers (None: it cannot be reopened), and what a
    row whose answer is not found there says."""
    where = record.answers
    if where is None:
        return open_store(settings()), MISSING
    live = _answer_stores.get(record.run_id)
    if live is not None:
        return live, MISSING
    if where.kind == "disk" and where.location and Path(where.location).is_dir():
        return open_store(settings().model_copy(update={"cache": where.location})), MISSING
    place = f"the {where.kind} store" + (f" at {where.location}" if where.location else "")
    return None, (f"answered into {place} given as store=, which cannot be reopened from the run's record "
                  "(its password or memory is not kept): load it with load_run(ref, answers=that_store)")


def _shell_run(record: RunRecord) -> SummaryRun:
    """A run with the record's facts and no results yet."""
    return SummaryRun([], record.stats, model=record.model, experiment=record.experiment,
                      schema_name=record.schema_name, prompt=record.prompt, cache_mode=record.cache_mode,
                      params=record.params, label=record.label)


def _result(row: RecordedRow, entry: CacheEntry | None, *, structured: bool, missing: str) -> SummaryResult:
    if row.error is not None and not (row.status == "pending" and entry is not None):  # a batch since collected
        return SummaryResult(conversation_id=row.conversation_id, key=row.key, cached=row.cached,
                             status=row.status, error=row.error)
    if entry is None:
        return SummaryResult(conversation_id=row.conversation_id, key=row.key, cached=row.cached,
                             status="error", error=missing)
    return result_from_entry(entry, conversation_id=row.conversation_id, key=row.key, cached=row.cached,
                             parse=_recorded_summary if structured else None)


def _recorded_summary(text: str) -> Any:
    """A structured answer as its fields, without its schema class; unparseable, the text it was."""
    try:
        return RecordedSummary.model_validate_json(text)
    except ValidationError:
        return text


def _run_of(ref: str | int | SummaryRun, store: Store) -> SummaryRun:
    return ref if isinstance(ref, SummaryRun) else load_run(ref, store=store)


def compare(a: str | int | SummaryRun, b: str | int | SummaryRun, *, changed_only: bool = False) -> Comparison:
    """Two runs compared: the prompt's word diff, the settings that differ, then each
    conversation's two outputs. `a` and `b` are runs or refs to recorded ones (see
    `find_record`); `changed_only` shows only the conversations whose output changed.

    Example:
        >>> from kura_magic import summarise
        >>> _ = summarise(convs, "In one line:\\n{{ transcript }}", label="short")
        >>> _ = summarise(convs, "In two lines:\\n{{ transcript }}", label="long")
        >>> print(compare("short", "long", changed_only=True))   # doctest: +ELLIPSIS
        prompt: 2 words changed: In [-one line:-]{+two lines:+}
        {{ transcript }}
        short ... vs long ...: 5 of 5 conversations differ (only those shown)
        ...
    """
    store = run_store()
    runs = [_run_of(ref, store) for ref in (a, b)]
    labels = [_label(run, fallback) for run, fallback in zip(runs, ("a", "b"))]
    if labels[0] == labels[1]:
        labels = [f"{labels[0]} (a)", f"{labels[1]} (b)"]
    return Comparison.of(runs[0], runs[1], labels=(labels[0], labels[1]), changed_only=changed_only)


def _label(run: SummaryRun, fallback: str) -> str:
    """How a run is named in a comparison: its --out name and id, as far as known."""
    return " ".join(part for part in (run.label, run.run_id) if part) or fallback


# The history table's columns, one per fact of a record (their titles: `views.history`).
COLUMNS = ("run_id", "created_at", "label", "cell", "experiment", "model", "prompt_hash", "conversations",
           "fresh", "cached", "errors", "spent", "saved", "repeats")


def runs(*, experiment: str | None = None, prompt: str | None = None, last: int | None = None) -> pandas.DataFrame:
    """The run history as a table, oldest first: one row per run, with its id, when and where it
    ran, its prompt's hash, model, counts and money. Filter by experiment, by prompt hash
    (a start of one is enough), and keep the `last` N.

    Example:
        >>> from kura_magic import summarise
        >>> _ = summarise(convs, "Summarise:\\n{{ transcript }}")
        >>> runs(last=1)[["prompt_hash", "conversations", "fresh"]].values.tolist()
        [['5452f652', 5, 5]]
    """
    import pandas

    chosen = [r for r in records(experiment=experiment) if prompt is None or r.prompt_hash.startswith(prompt)]
    chosen = chosen[-last:] if last else chosen
    return pandas.DataFrame([_row(r) for r in chosen], columns=list(COLUMNS))


def _row(record: RunRecord) -> dict[str, Any]:
    stats = record.stats
    return {"run_id": record.run_id, "created_at": record.created_at, "label": record.label,
            "cell": record.cell, "experiment": record.experiment, "model": record.model,
            "prompt_hash": record.prompt_hash, "conversations": stats.total, "fresh": stats.fresh,
            "cached": stats.cached, "errors": stats.errors, "spent": stats.cost, "saved": stats.saved_cost,
            "repeats": record.repeats}
