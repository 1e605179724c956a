"""The session's cache and experiment: what is stored, clearing it, switching experiments,
and moving an experiment between machines as JSONL."""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType

from kura_magic.cache import CacheEntry, CacheStrategy, open_cache
from kura_magic.config import check_experiment_name, configure, settings
from kura_magic.embeddings import clear_embedding_cache, embedding_cache_info
from kura_magic.errors import DataError
from kura_magic.types import CacheInfo


def _store(cache: CacheStrategy | None) -> CacheStrategy:
    return cache or open_cache(settings())


def active_experiment() -> str:
    """The experiment that runs use when none is named.

    Example:
        >>> active_experiment()
        'default'
    """
    return settings().experiment


def cache_info(experiment: str | None = None, *, cache: CacheStrategy | None = None) -> CacheInfo:
    """Entries and bytes of the cache, per experiment and in total.

    With `experiment`, `experiments` holds just that one (empty counts if it has none).

    Example:
        >>> info = cache_info()
        >>> info.entries >= 0
        True
    """
    info = _store(cache).info()
    updates: dict[str, object] = {
        "active_experiment": active_experiment(),
        "embeddings": embedding_cache_info(),
    }
    if experiment is not None:
        name = check_experiment_name(experiment)
        updates["experiments"] = {name: info.for_experiment(name)}
    return info.model_copy(update=updates)


def clear_cache(
    experiment: str | None = None,
    *,
    all: bool = False,
    embeddings: bool = False,
    cache: CacheStrategy | None = None,
) -> int:
    """Remove one experiment's entries (the active one if None), everything with `all=True`
    (embeddings included), or only the embedding store with `embeddings=True`.

    Returns how many entries were removed.

    Example:
        >>> clear_cache("scratch")
        0
    """
    if embeddings:
        return clear_embedding_cache()
    store = _store(cache)
    if all:
        return store.clear() + clear_embedding_cache()
    return store.clear(check_experiment_name(experiment or active_experiment()))


class experiment:  # noqa: N801 - reads as a function: experiment("v2")
    """Switch the active experiment; as a context manager, switch back afterwards.

    Example:
        >>> with experiment("prompt-v2"):
        ...     active_experiment()
        'prompt-v2'
        >>> active_experiment()
        'default'
    """

    def __init__(self, name: str) -> None:
        self.previous = active_experiment()
        self.name = check_experiment_name(name)
        configure(experiment=self.name)

    def __enter__(self) -> experiment:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        configure(experiment=self.previous)

    def __repr__(self) -> str:
        return f"experiment({self.name!r})"


def export_experiment(path: str | Path, experiment: str | None = None, *, cache: CacheStrategy | None = None) -> int:
    """Write one experiment's entries to a JSONL file; returns how many were written.

    Example:
        >>> export_experiment("/tmp/default.jsonl")   # doctest: +SKIP
        120
    """
    name = check_experiment_name(experiment or active_experiment())
    count = 0
    with Path(path).open("w", encoding="utf-8") as out:
        for key, entry in _store(cache).entries(name):
            out.write(json.dumps({"key": key, "entry": entry.model_dump(mode="json")}) + "\n")
            count += 1
    return count


def import_experiment(path: str | Path, experiment: str | None = None, *, cache: CacheStrategy | None = None) -> int:
    """Load entries written by `export_experiment` into an experiment; returns how many.

    Example:
        >>> import_experiment("/tmp/default.jsonl", "replay")   # doctest: +SKIP
        120
    """
    name = check_experiment_name(experiment or active_experiment())
    store = _store(cache)
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    rows = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    for number, line in rows:
        try:
            row = json.loads(line)
            store.set(str(row["key"]), CacheEntry.model_validate(row["entry"]), experiment=name)
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path} line {number} is not an exported cache entry: {exc}") from None
    return len(rows)
