"""The session's cache and experiment: what is stored, clearing it, switching experiments,
and moving an experiment between machines as JSONL."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kura_magic.config import check_experiment_name, configure, settings
from kura_magic.errors import CacheWarning, DataError
from kura_magic.inputs.loaders import read_utf8
from kura_magic.run.embeddings import clear_embedding_cache, embedding_cache_info
from kura_magic.storage.base import Pruned, Store
from kura_magic.storage.opening import open_store
from kura_magic.storage.responses import ResponseStore
from kura_magic.storage.runlog import clear_history, export_rows, import_row
from kura_magic.types import CacheEntry, CacheInfo, ExportedEntry, Problem


def _store(store: Store | None) -> Store:
    return store or open_store(settings())


def active_experiment() -> str:
    """The experiment that runs use when none is named.

    Example:
        >>> active_experiment()
        'default'
    """
    return settings().experiment


def set_experiment(name: str) -> str:
    """Make `name` the active experiment for the rest of the session; returns it.

    Example:
        >>> set_experiment("prompt-v2")
        'prompt-v2'
        >>> set_experiment("default")
        'default'
    """
    return configure(experiment=check_experiment_name(name)).experiment


@contextmanager
def experiment(name: str) -> Iterator[str]:
    """Inside the `with` block, `name` is the active experiment; afterwards the previous one is.

    Example:
        >>> with experiment("prompt-v2"):
        ...     active_experiment()
        'prompt-v2'
        >>> active_experiment()
        'default'
    """
    previous = active_experiment()
    try:
        yield set_experiment(name)
    finally:
        set_experiment(previous)


def cache_info(experiment: str | None = None, *, store: Store | None = None) -> CacheInfo:
    """Entries and bytes of the cache, per experiment and in total, and of the embeddings.

    With `experiment`, `experiments` holds just that one (empty counts if it has none).

    Example:
        >>> info = cache_info()
        >>> info.entries >= 0, info.active_experiment
        (True, 'default')
    """
    info = _store(store).info()
    experiments = info.experiments
    if experiment is not None:
        name = check_experiment_name(experiment)
        experiments = {name: info.for_experiment(name)}
    return CacheInfo(
        **{**info.model_dump(), "experiments": experiments},
        active_experiment=active_experiment(),
        embeddings=embedding_cache_info(),
    )


def in_use_elsewhere(*, store: Store | None = None) -> str:
    """'' if no process is making calls on the cache now; else a warning for whoever would
    clear it (the answers of those calls are written when they come back).

    Example:
        >>> in_use_elsewhere()
        ''
    """
    busy = _store(store).calls_in_flight()
    if not busy:
        return ""
    return (f"{busy} calls are in flight on this cache right now (another kernel or process is running): "
            "their answers will be stored again as they come back")


def clear_cache(experiment: str | None = None, *, store: Store | None = None) -> int:
    """Remove one experiment's entries (the active one if None); others stay whole.

    Returns how many entries were removed.

    Example:
        >>> clear_cache("scratch")
        0
    """
    return _store(store).clear(check_experiment_name(experiment or active_experiment()))


def clear_all_caches(*, history: bool = False, store: Store | None = None) -> int:
    """Remove every entry of every experiment and every embedding; returns how many were
    removed. The run history stays (it cannot be rebuilt) unless `history=True`.

    Example:
        >>> from kura_magic import runs, summarise
        >>> _ = summarise(convs, "Summarise:\\n{{ transcript }}", experiment="a")
        >>> _ = summarise(convs, "Summarise:\\n{{ transcript }}", experiment="b")
        >>> clear_all_caches(), cache_info().entries, len(runs())
        (10, 0, 2)
        >>> clear_all_caches(history=True), len(runs())
        (0, 0)
    """
    if history:
        clear_history()
    return _store(store).clear() + clear_embedding_cache()


def clear_model(model: str, experiment: str | None = None, *, store: Store | None = None) -> int:
    """Remove the cached answers of `model`, in one experiment or (None) in all; returns how
    many. Every entry is read to find its model: a scan of the whole cache.

    Example:
        >>> from kura_magic import summarise
        >>> _ = summarise(convs, "Summarise:\\n{{ transcript }}", model="openai/gpt-4o-mini")
        >>> clear_model("openai/gpt-4o-mini"), cache_info().entries
        (5, 0)
    """
    return ResponseStore(_store(store)).clear_model(model, check_experiment_name(experiment) if experiment else None)


def prune(*, store: Store | None = None) -> Pruned:
    """Remove the answers and vectors whose age limit (`KURA_MAGIC_CACHE_TTL`,
    `summarise(..., ttl=...)`) has passed; what was freed. Redis forgets them by itself.

    Example:
        >>> prune()
        Pruned(entries=0, bytes=0)
    """
    return _store(store).prune() + open_store(settings(), "embeddings").prune()


def export_experiment(path: str | Path, experiment: str | None = None, *, store: Store | None = None) -> int:
    """Write one experiment's entries to a JSONL file; returns how many were written.

    One row per entry, `{"key": ..., "entry": ...}`, read from the store in batches, then
    one `{"run": ...}` row per run of the experiment's history, so a replay has it too.

    Example:
        >>> import pathlib, tempfile
        >>> from kura_magic import summarise
        >>> _ = summarise(convs, "Summarise:\\n{{ transcript }}")
        >>> export_experiment(pathlib.Path(tempfile.mkdtemp()) / "default.jsonl")
        5
    """
    name = check_experiment_name(experiment or active_experiment())
    count = 0
    with Path(path).open("w", encoding="utf-8") as out:
        for key, data in ResponseStore(_store(store)).entries(name):
            # The entry's stored JSON, spliced in: the same row as json.dumps of its dump, faster.
            out.write(f'{{"key": {json.dumps(key)}, "entry": {data.decode("utf-8")}}}\n')
            count += 1
        for run in export_rows(name):
            out.write(json.dumps({"run": run}) + "\n")
    return count


def import_experiment(path: str | Path, experiment: str | None = None, *, store: Store | None = None) -> int:
    """Load entries written by `export_experiment` into an experiment, a transaction per
    thousand; returns how many the store kept (a store that cannot keep them warns).

    Example:
        >>> import pathlib, tempfile
        >>> from kura_magic import summarise
        >>> _ = summarise(convs, "Summarise:\\n{{ transcript }}")
        >>> exported = pathlib.Path(tempfile.mkdtemp()) / "default.jsonl"
        >>> export_experiment(exported), import_experiment(exported, "replay")
        (5, 5)
        >>> summarise(convs, "Summarise:\\n{{ transcript }}", experiment="replay").stats.cached
        5
    """
    name = check_experiment_name(experiment or active_experiment())
    target = _store(store)
    entries, runs, others = _read_export(Path(path))
    kept = ResponseStore(target).set_many(entries, experiment=name)
    for number, run in runs:
        try:
            import_row(run, experiment=name)
        except DataError as exc:
            raise DataError(f"{path} line {number}: {exc}") from None
    if others:
        warnings.warn(f"{path}: {others} rows are neither cache entries nor run records and "
                      "were skipped", CacheWarning, stacklevel=2)
    return kept


def _read_export(path: Path) -> tuple[dict[str, CacheEntry], list[tuple[int, Any]], int]:
    """An export's entries by key, its run records (with their line numbers), and how many
    rows were of neither kind; every entry line is checked before anything is written."""
    lines = read_utf8(path).splitlines()
    entries: dict[str, CacheEntry] = {}
    runs: list[tuple[int, Any]] = []
    others = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        found = _exported_entry(path, number, line)
        if isinstance(found, tuple):
            entries[found[0]] = found[1]
        elif "run" in found:
            runs.append((number, found["run"]))
        else:
            others += 1
    return entries, runs, others


def _exported_entry(path: Path, number: int, line: str) -> tuple[str, CacheEntry] | dict[str, Any]:
    """The (key, entry) of one exported line, or the row itself if it is of another kind (a
    run record)."""
    try:
        row = ExportedEntry.model_validate_json(line)  # parsed and checked in one pass
    except ValidationError as exc:
        other = _another_kind(line)
        if other is not None:
            return other
        problem = Problem.of(exc)
        why = f"{problem.where}: {problem.message}" if problem.where else problem.message
        raise DataError(f"{path} line {number} is not an exported cache entry: {why}") from None
    return row.key, row.entry


def _another_kind(line: str) -> dict[str, Any] | None:
    """`line` as a JSON object, if it is of another kind than a cache entry (no "entry")."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and "entry" not in row else None
