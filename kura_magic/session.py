"""The session's cache and experiment: what is stored, clearing it, switching experiments,
and moving an experiment between machines as JSONL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kura_magic.config import check_experiment_name, configure, settings
from kura_magic.embeddings import clear_embedding_cache, embedding_cache_info
from kura_magic.errors import DataError
from kura_magic.loaders import read_utf8
from kura_magic.store import Store, open_store
from kura_magic.types import CacheEntry, CacheInfo


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


def clear_cache(experiment: str | None = None, *, store: Store | None = None) -> int:
    """Remove one experiment's entries (the active one if None); others stay whole.

    Returns how many entries were removed.

    Example:
        >>> clear_cache("scratch")
        0
    """
    return _store(store).clear(check_experiment_name(experiment or active_experiment()))


def clear_all_caches(*, store: Store | None = None) -> int:
    """Remove every entry of every experiment, and every embedding; returns how many.

    Example:
        >>> from kura_magic import summarise
        >>> _ = summarise(convs, "Summarise:\\n{{ transcript }}", experiment="a")
        >>> _ = summarise(convs, "Summarise:\\n{{ transcript }}", experiment="b")
        >>> clear_all_caches(), cache_info().entries
        (10, 0)
    """
    return _store(store).clear() + clear_embedding_cache()


def export_experiment(path: str | Path, experiment: str | None = None, *, store: Store | None = None) -> int:
    """Write one experiment's entries to a JSONL file; returns how many were written.

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
        for key, entry in _store(store).entries(name):
            out.write(json.dumps({"key": key, "entry": entry.model_dump(mode="json")}) + "\n")
            count += 1
    return count


def import_experiment(path: str | Path, experiment: str | None = None, *, store: Store | None = None) -> int:
    """Load entries written by `export_experiment` into an experiment; returns how many.

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
    lines = read_utf8(Path(path)).splitlines()
    rows = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    for number, line in rows:
        try:
            row = json.loads(line)
            target.set(str(row["key"]), CacheEntry.model_validate(row["entry"]), experiment=name)
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path} line {number} is not an exported cache entry: {exc}") from None
    return len(rows)
