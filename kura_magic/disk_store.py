"""The disk store: diskcache under one directory, JSON bytes only, least-recently-used
eviction, leases on calls in flight for processes that share the directory, and a damaged
database file survived: warned about once, then moved aside by a full clear."""

from __future__ import annotations

import sqlite3
import time
import warnings
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import diskcache

from kura_magic.errors import CacheError, CacheWarning
from kura_magic.store import STORAGE_TIMEOUT_S, Store, storage_key, warn_storage
from kura_magic.types import ExperimentInfo, StoreInfo

T = TypeVar("T")
LEASES_DIRECTORY = "leases"  # beside the entries: claims on calls in flight, across processes
DATABASE_FILES = ("cache.db", "cache.db-wal", "cache.db-shm")
# A storage hiccup: the operation is skipped with a warning. (A damaged file is another matter.)
PASSING_TROUBLE = (diskcache.Timeout, sqlite3.OperationalError, OSError)


class _JSONOnlyDisk(diskcache.Disk):
    """A diskcache Disk that stores only str/bytes and refuses to unpickle anything."""

    def put(self, key: Any) -> tuple[Any, bool]:
        if type(key) is not str:
            raise TypeError("cache keys are strings")
        return super().put(key)

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise _PickledData("a key stored as pickle")
        return super().get(key, raw)

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> Any:
        if type(value) is not bytes:
            raise TypeError("cache values are JSON bytes")
        return super().store(value, read, key=key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == diskcache.core.MODE_PICKLE:
            raise _PickledData("a value stored as pickle")
        return super().fetch(mode, filename, value, read)


class _PickledData(Exception):
    """Someone else's pickle in our cache; we read it as a miss, never load it."""


class DiskStore(Store):
    """diskcache under `directory`, least-recently-used eviction past `size_limit` bytes.

    Example:
        >>> import tempfile
        >>> from kura_magic.types import CacheEntry
        >>> store = DiskStore(tempfile.mkdtemp(), size_limit=10**6)
        >>> store.set("k", CacheEntry(model="m", response="hi"), experiment="default")
        True
        >>> store.get("k", experiment="default").response
        'hi'
    """

    kind = "disk"

    def __init__(self, directory: str | Path, *, size_limit: int = 5 * 1024**3) -> None:
        self.directory = Path(directory).expanduser()
        self.size_limit = size_limit
        self.damage: str | None = None  # what is wrong with the database file, once found
        self._cache: diskcache.Cache | None = None
        self._open()

    def _open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._cache = diskcache.Cache(
                str(self.directory), disk=_JSONOnlyDisk, size_limit=self.size_limit,
                eviction_policy="least-recently-used", tag_index=True, timeout=STORAGE_TIMEOUT_S,
            )
        except (OSError, sqlite3.OperationalError) as exc:
            raise CacheError(
                f"cannot open the cache directory {self.directory}: {exc}. "
                "Point KURA_MAGIC_CACHE at a writable directory, or set it to 'off'."
            ) from None
        except sqlite3.DatabaseError as exc:
            self._note_damage(exc)

    def _note_damage(self, exc: sqlite3.DatabaseError) -> None:
        """Stop using a damaged database file, and say so once: what, where, and the way out."""
        database = self.directory / DATABASE_FILES[0]
        self.damage = (
            f"the cache file {database} is damaged ({exc}); runs go on without the cache. "
            "`%kura clear --all` (or kura_magic.clear_all_caches()) moves it aside and starts "
            "an empty cache"
        )
        warnings.warn(self.damage, CacheWarning, stacklevel=2)

    def _attempt(self, action: str, key: str, work: Callable[[diskcache.Cache], T], default: T) -> T:
        """One storage operation; trouble gives `default`: a hiccup with a warning, a damaged
        file by marking the store damaged (after which it is left alone)."""
        if self.damage is not None or self._cache is None:
            return default
        try:
            return work(self._cache)
        except (*PASSING_TROUBLE, _PickledData) as exc:
            warn_storage(action, key, exc)
        except sqlite3.DatabaseError as exc:
            self._note_damage(exc)
        return default

    def read_bytes(self, key: str, *, experiment: str) -> bytes | None:
        return self._attempt("read", key, lambda cache: cache.get(storage_key(key, experiment)), None)

    def write_bytes(self, key: str, data: bytes, *, experiment: str) -> bool:
        slot = storage_key(key, experiment)
        return self._attempt("write", key, lambda cache: cache.set(slot, data, tag=experiment), False)

    def delete(self, key: str, *, experiment: str) -> None:
        self._attempt("delete", key, lambda cache: cache.delete(storage_key(key, experiment)), None)

    def keys(self, *, experiment: str) -> list[str]:
        rows = self._attempt("list", experiment, lambda cache: cache._sql(
            "SELECT key FROM Cache WHERE tag = ? AND raw = 1", (experiment,)
        ).fetchall(), [])
        prefix = storage_key("", experiment)
        return [key[len(prefix) :] for (key,) in rows if key.startswith(prefix)]

    def clear(self, experiment: str | None = None) -> int:
        """Remove one experiment, or everything; a full clear of a damaged file moves it
        aside (`cache.db.damaged-<time>`) and starts empty."""
        if self.damage is None and self._cache is not None:
            try:
                return self._cache.clear(retry=True) if experiment is None else self._cache.evict(experiment, retry=True)
            except (diskcache.Timeout, sqlite3.OperationalError) as exc:
                raise CacheError(f"cannot clear the cache in {self.directory} now ({exc}): "
                                 "another process may be using it; try again") from None
            except sqlite3.DatabaseError as exc:
                self._note_damage(exc)
        if experiment is not None:
            raise CacheError(f"cannot clear experiment {experiment!r}: {self.damage}")
        return self._move_damaged_aside()

    def _move_damaged_aside(self) -> int:
        self.close()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for name in DATABASE_FILES:
            path = self.directory / name
            if path.exists():
                path.rename(path.with_name(f"{name}.damaged-{stamp}"))
        self.damage, self._cache = None, None
        self._open()
        return 0

    def info(self) -> StoreInfo:
        # diskcache keeps no per-tag totals; one GROUP BY over its table gives them.
        rows = self._attempt("size", "(all)", lambda cache: cache._sql(
            "SELECT tag, COUNT(*), SUM(size + COALESCE(LENGTH(value), 0) + LENGTH(key))"
            " FROM Cache GROUP BY tag"
        ).fetchall(), [])
        experiments = {
            str(tag): ExperimentInfo(entries=count, bytes=int(size or 0)) for tag, count, size in rows
        }
        return StoreInfo(
            entries=sum(e.entries for e in experiments.values()),
            bytes=self._attempt("size", "(all)", lambda cache: cache.volume(), 0),
            experiments=experiments, directory=str(self.directory), size_limit=self.size_limit,
            problem=self.damage,
        )

    @cached_property
    def _leases(self) -> diskcache.Cache:
        """Claims on calls in flight, shared by every process that uses this directory."""
        return diskcache.Cache(
            str(self.directory / LEASES_DIRECTORY), disk=_JSONOnlyDisk, timeout=STORAGE_TIMEOUT_S
        )

    def claim(self, key: str, *, experiment: str, token: str, ttl_s: float) -> bool:
        try:  # diskcache's add is atomic across processes, and an expired claim counts as absent
            return bool(self._leases.add(storage_key(key, experiment), token.encode(), expire=ttl_s))
        except (*PASSING_TROUBLE, sqlite3.Error) as exc:
            warn_storage("claim", key, exc)
            return True  # no coordination possible: make the call (the cache is an optimisation)

    def renew(self, key: str, *, experiment: str, token: str, ttl_s: float) -> None:
        self._if_claimed(key, experiment, token, lambda slot: self._leases.touch(slot, expire=ttl_s))

    def release(self, key: str, *, experiment: str, token: str) -> None:
        self._if_claimed(key, experiment, token, self._leases.delete)

    def _if_claimed(self, key: str, experiment: str, token: str, act: Callable[[str], Any]) -> None:
        slot = storage_key(key, experiment)
        try:
            with self._leases.transact():
                if self._leases.get(slot) == token.encode():
                    act(slot)
        except (*PASSING_TROUBLE, sqlite3.Error) as exc:
            warn_storage("lease", key, exc)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
        if "_leases" in self.__dict__:
            self._leases.close()
