"""Stores: bytes by key, scoped by experiment, with leases on calls in flight; in memory or
off here (on disk: `disk`, in Redis: `redis`; the one factory that opens the store the
settings select: `opening`).

The cache is only an optimisation: a storage timeout or an unreadable entry is
a miss with a warning, never a crash. Nothing is ever pickled, in either
direction, so a shared cache directory cannot be made to run code.
"""

from __future__ import annotations

import threading
import warnings
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from kura_magic.errors import CacheWarning
from kura_magic.types import ExperimentInfo, StoreInfo

StoreScope = Literal["responses", "embeddings", "runs", "batches"]
T = TypeVar("T")

STORAGE_TIMEOUT_S = 5.0
BATCH = 1000  # keys per transaction or round trip: a long run never holds the store for long


@dataclass(frozen=True)
class Pruned:
    """What `Store.prune` removed: entries whose age limit had passed, and their bytes.

    Example:
        >>> Pruned(entries=2, bytes=300) + Pruned(entries=1, bytes=100)
        Pruned(entries=3, bytes=400)
    """

    entries: int = 0
    bytes: int = 0

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(self.entries + other.entries, self.bytes + other.bytes)


class Store(ABC):
    """Bytes by key, every entry in one experiment, with leases on calls in flight.

    Subclasses move bytes; what the bytes mean is their clients' business: cache entries
    (`responses.ResponseStore`), vectors (`vectors.EmbeddingStore`), run records (`runlog`).
    """

    kind: Literal["disk", "memory", "off", "redis", "s3"]

    @property
    def location(self) -> str | None:
        """Where the entries are, as it may be shown (no password): a directory, a Redis URL
        and key prefix; None for a store inside this process.

        Example:
            >>> MemoryStore().location is None
            True
        """
        return None

    def read_many(self, keys: Sequence[str], *, experiment: str) -> dict[str, bytes]:
        """The stored bytes of `keys` that are present (one by one unless a backend batches)."""
        found = {key: self.read_bytes(key, experiment=experiment) for key in keys}
        return {key: data for key, data in found.items() if data is not None}

    def write_many(self, items: Mapping[str, bytes], *, experiment: str) -> int:
        """Store every (key, bytes) of `items`; returns how many were kept (one by one unless
        a backend batches: a transaction or a round trip per `BATCH` keys)."""
        return sum(self.write_bytes(key, data, experiment=experiment) for key, data in items.items())

    def peek_many(self, keys: Sequence[str], *, experiment: str) -> dict[str, bytes]:
        """`read_many` that does not count as a use of the entries (for export): a backend
        that evicts the least recently used may read them without refreshing them."""
        return self.read_many(keys, experiment=experiment)

    @abstractmethod
    def read_bytes(self, key: str, *, experiment: str) -> bytes | None:
        """The stored bytes, or None (a storage failure is a miss with a warning)."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes, *, experiment: str) -> bool:
        """Store bytes as they are (the embedding store keeps raw float32 vectors); False if
        they could not be stored."""

    @abstractmethod
    def keys(self, *, experiment: str) -> list[str]:
        """Every key stored in one experiment."""

    @abstractmethod
    def delete(self, key: str, *, experiment: str) -> None:
        """Forget one entry."""

    @abstractmethod
    def clear(self, experiment: str | None = None) -> int:
        """Remove one experiment's entries, or all entries if `experiment` is None."""

    def prune(self) -> Pruned:
        """Remove the entries whose age limit (`KURA_MAGIC_CACHE_TTL`) has passed; what was
        freed. A store that forgets them by itself (Redis, memory) has nothing to remove.

        Example:
            >>> MemoryStore().prune()
            Pruned(entries=0, bytes=0)
        """
        return Pruned()

    def claim(self, key: str, *, experiment: str, token: str, ttl_s: float) -> bool:
        """Claim the right to make call `key` for `ttl_s` seconds; True if `token` now holds
        it. A store that only this process uses needs no claims: always True."""
        return key in self.claim_many([key], experiment=experiment, token=token, ttl_s=ttl_s)

    def claim_many(self, keys: Sequence[str], *, experiment: str, token: str, ttl_s: float) -> frozenset[str]:
        """`claim` each of `keys`, in one transaction or round trip; the keys `token` now holds.

        Example:
            >>> sorted(MemoryStore().claim_many(["a", "b"], experiment="x", token="t", ttl_s=1))
            ['a', 'b']
        """
        return frozenset(keys)

    def renew(self, claims: Mapping[str, str], *, experiment: str, ttl_s: float) -> None:
        """Extend the claims of `claims` (key -> token) still held by their token to `ttl_s`
        seconds from now, in one transaction or round trip."""

    def release(self, claims: Mapping[str, str], *, experiment: str) -> None:
        """Give up the claims of `claims` (key -> token) that are still held by their token,
        in one transaction or round trip (their entries are written, or their calls failed)."""

    def calls_in_flight(self) -> int:
        """Calls being made right now on this store by any process (the leases held): what a
        clear would pull from under them. 0 for a store no other process shares.

        Example:
            >>> MemoryStore().calls_in_flight()
            0
        """
        return 0

    @abstractmethod
    def info(self) -> StoreInfo:
        """Entries and bytes, per experiment and in total."""

    def close(self) -> None:
        """Release files and connections."""


def storage_key(key: str, experiment: str) -> str:
    """Where an entry of `experiment` is stored in a backend shared by all experiments."""
    return f"{experiment}::{key}"


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """`items` in consecutive slices of at most `size`.

    Example:
        >>> [list(c) for c in chunks([1, 2, 3, 4, 5], 2)]
        [[1, 2], [3, 4], [5]]
    """
    for start in range(0, len(items), size):
        yield items[start : start + size]


class MemoryStore(Store):
    """An in-process cache with the disk cache's semantics (JSON bytes, LRU by size).

    Example:
        >>> store = MemoryStore()
        >>> store.write_bytes("k", b'{"model": "m"}', experiment="a")
        True
        >>> store.read_bytes("k", experiment="b") is None
        True
    """

    kind = "memory"

    def __init__(self, *, size_limit: int = 5 * 1024**3) -> None:
        self.size_limit = size_limit
        self._data: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def read_bytes(self, key: str, *, experiment: str) -> bytes | None:
        return self.read_many([key], experiment=experiment).get(key)

    def read_many(self, keys: Sequence[str], *, experiment: str) -> dict[str, bytes]:
        found = {}
        with self._lock:
            for key in keys:
                data = self._data.get((experiment, key))
                if data is not None:
                    self._data.move_to_end((experiment, key))
                    found[key] = data
        return found

    def write_bytes(self, key: str, data: bytes, *, experiment: str) -> bool:
        return self.write_many({key: data}, experiment=experiment) == 1

    def write_many(self, items: Mapping[str, bytes], *, experiment: str) -> int:
        with self._lock:
            for key, data in items.items():
                self._pop((experiment, key))
                self._data[(experiment, key)] = data
                self._bytes += len(data)
            while self._bytes > self.size_limit and self._data:
                self._pop(next(iter(self._data)))
        return len(items)

    def _pop(self, slot: tuple[str, str]) -> None:
        data = self._data.pop(slot, None)
        if data is not None:
            self._bytes -= len(data)

    def keys(self, *, experiment: str) -> list[str]:
        with self._lock:
            return [key for exp, key in self._data if exp == experiment]

    def delete(self, key: str, *, experiment: str) -> None:
        with self._lock:
            self._pop((experiment, key))

    def clear(self, experiment: str | None = None) -> int:
        with self._lock:
            doomed = [slot for slot in self._data if experiment in (None, slot[0])]
            for slot in doomed:
                self._pop(slot)
            return len(doomed)

    def info(self) -> StoreInfo:
        experiments: dict[str, ExperimentInfo] = {}
        with self._lock:
            for (experiment, _), data in self._data.items():
                stats = experiments.setdefault(experiment, ExperimentInfo())
                stats.entries += 1
                stats.bytes += len(data)
        return StoreInfo(
            entries=len(self._data),
            bytes=self._bytes,
            experiments=experiments,
            size_limit=self.size_limit,
        )


class NullStore(Store):
    """Caching switched off (`KURA_MAGIC_CACHE=off`): every read misses, writes vanish."""

    kind = "off"

    def read_bytes(self, key: str, *, experiment: str) -> bytes | None:
        return None

    def write_bytes(self, key: str, data: bytes, *, experiment: str) -> bool:
        return False

    def keys(self, *, experiment: str) -> list[str]:
        return []

    def delete(self, key: str, *, experiment: str) -> None:
        return None

    def clear(self, experiment: str | None = None) -> int:
        return 0

    def info(self) -> StoreInfo:
        return StoreInfo(entries=0, bytes=0, enabled=False)


def warn_storage(action: str, key: str, exc: BaseException) -> None:
    """A storage operation failed: say so, and go on without it."""
    warnings.warn(
        f"cache {action} of {key} failed ({type(exc).__name__}: {exc}); going on without it",
        CacheWarning,
        stacklevel=3,
    )
