"""The response cache's entries: `CacheEntry` by key over the byte layer of a `Store`,
as JSON (never pickle), with a corrupt entry read as a miss and dropped so the next write
replaces it."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence

from pydantic import ValidationError

from kura_magic.errors import CacheWarning
from kura_magic.storage.base import BATCH, Store, chunks
from kura_magic.types import CacheEntry


class ResponseStore:
    """The cached answers of calls, by key, in one experiment each.

    Example:
        >>> from kura_magic.storage.base import MemoryStore
        >>> responses = ResponseStore(MemoryStore())
        >>> responses.set("k", CacheEntry(model="m", response="hi"), experiment="a")
        True
        >>> responses.get("k", experiment="b") is None
        True
    """

    def __init__(self, backend: Store) -> None:
        self.backend = backend

    def get(self, key: str, *, experiment: str) -> CacheEntry | None:
        """The entry stored for `key` in `experiment`, or None."""
        return self._entry(key, self.backend.read_bytes(key, experiment=experiment), experiment)

    def get_many(self, keys: Sequence[str], *, experiment: str, use: bool = True) -> dict[str, CacheEntry]:
        """The entries stored for `keys` (absent ones left out), in as few trips as the
        backend allows. `use=False`: a plain read that does not count as a use (on disk no
        write lock), for looking again at keys that were misses moments ago.

        Example:
            >>> from kura_magic.storage.base import MemoryStore
            >>> store = ResponseStore(MemoryStore())
            >>> store.set("a", CacheEntry(model="m", response="hi"), experiment="x")
            True
            >>> list(store.get_many(["a", "b"], experiment="x"))
            ['a']
        """
        return dict(self.each(keys, experiment=experiment, use=use))

    def each(self, keys: Sequence[str], *, experiment: str, use: bool = True) -> Iterator[tuple[str, CacheEntry]]:
        """`get_many`'s (key, entry) pairs, each entry decoded only when it is reached: a run
        serving its hits holds one entry at a time, not a batch of them.

        Example:
            >>> from kura_magic.storage.base import MemoryStore
            >>> store = ResponseStore(MemoryStore())
            >>> store.set("a", CacheEntry(model="m", response="hi"), experiment="x")
            True
            >>> [(key, entry.response) for key, entry in store.each(["a", "b"], experiment="x")]
            [('a', 'hi')]
        """
        read = self.backend.read_many if use else self.backend.peek_many
        return self._decoded(read(keys, experiment=experiment), experiment)

    def _decoded(self, found: Mapping[str, bytes], experiment: str) -> Iterator[tuple[str, CacheEntry]]:
        """`found`'s entries decoded straight from their JSON bytes; an unreadable one is a
        miss, dropped."""
        for key, data in found.items():
            try:
                entry = CacheEntry.model_validate_json(data)
            except ValidationError:
                warnings.warn(f"cache entry {key} was unreadable; treating it as a miss", CacheWarning)
                self.backend.delete(key, experiment=experiment)
                continue
            yield key, entry

    def _entry(self, key: str, data: bytes | None, experiment: str) -> CacheEntry | None:
        return None if data is None else dict(self._decoded({key: data}, experiment)).get(key)

    def set(self, key: str, entry: CacheEntry, *, experiment: str) -> bool:
        """Store `entry` under `key` in `experiment`, replacing any older one; False if the
        store could not keep it (the call's answer is still returned)."""
        return self.backend.write_bytes(key, entry.model_dump_json().encode("utf-8"), experiment=experiment)

    def set_many(self, entries: Mapping[str, CacheEntry], *, experiment: str) -> int:
        """Store every (key, entry) of `entries` in as few transactions as the backend allows;
        returns how many were kept.

        Example:
            >>> from kura_magic.storage.base import MemoryStore
            >>> ResponseStore(MemoryStore()).set_many({"a": CacheEntry(model="m"), "b": CacheEntry(model="m")},
            ...                                       experiment="x")
            2
        """
        encoded = {key: entry.model_dump_json().encode("utf-8") for key, entry in entries.items()}
        return self.backend.write_many(encoded, experiment=experiment)

    def clear_model(self, model: str, experiment: str | None = None) -> int:
        """Remove the entries `model` made, of one experiment or of all; how many. Keys do not
        carry the model, so every entry is read (`entries`: BATCH at a time, not a use).

        Example:
            >>> from kura_magic.storage.base import MemoryStore
            >>> store = ResponseStore(MemoryStore())
            >>> store.set_many({"a": CacheEntry(model="m1"), "b": CacheEntry(model="m2")}, experiment="x")
            2
            >>> store.clear_model("m1"), store.backend.keys(experiment="x")
            (1, ['b'])
        """
        names = [experiment] if experiment is not None else list(self.backend.info().experiments)
        removed = 0
        for name in names:
            doomed = [key for key, data in self.entries(name) if CacheEntry.model_validate_json(data).model == model]
            for key in doomed:
                self.backend.delete(key, experiment=name)
            removed += len(doomed)
        return removed

    def entries(self, experiment: str) -> Iterator[tuple[str, bytes]]:
        """Every readable entry of one experiment as (key, its stored JSON), for export: read
        `BATCH` at a time without refreshing them, each checked (an unreadable one is dropped)
        but written out as it is stored, not serialised again.

        Example:
            >>> from kura_magic.storage.base import MemoryStore
            >>> store = ResponseStore(MemoryStore())
            >>> store.set("a", CacheEntry(model="m", response="hi"), experiment="x")
            True
            >>> [key for key, _ in store.entries("x")]
            ['a']
        """
        for batch in chunks(self.backend.keys(experiment=experiment), BATCH):
            found = self.backend.peek_many(batch, experiment=experiment)
            yield from ((key, found[key]) for key, _ in self._decoded(found, experiment))
