"""The disk store: diskcache under one directory, JSON bytes only, least-recently-used
eviction (a read refreshes an entry's access time at most once a period, so a re-run of
recently used entries is a pure read), leases on calls in flight for processes that share
the directory, and a damaged database file survived: warned about once, then moved aside
by a full clear."""

from __future__ import annotations

import sqlite3
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property, partial
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import diskcache

from kura_magic.errors import CacheError, CacheWarning
from kura_magic.storage.base import BATCH, STORAGE_TIMEOUT_S, Pruned, Store, chunks, storage_key, warn_storage
from kura_magic.types import ExperimentInfo, StoreInfo

T = TypeVar("T")
LEASES_DIRECTORY = "leases"  # beside the entries: claims on calls in flight, across processes
DATABASE_FILES = ("cache.db", "cache.db-wal", "cache.db-shm")
# A storage hiccup: the operation is skipped with a warning. (A damaged file is another matter.)
PASSING_TROUBLE = (diskcache.Timeout, sqlite3.OperationalError, OSError)
# What a pickled value reads as: bytes no entry or vector can be, so a miss that is dropped.
UNREADABLE = b""
REFRESH_S = 24 * 3600.0  # a hit refreshes its entry's access time at most this often
# One entry as a read sees it; diskcache's own `get` under least-recently-used eviction
# writes the access time on every hit, so reads go through this instead.
_SELECT = (
    "SELECT rowid, access_time, mode, filename, value FROM Cache"
    " WHERE key = ? AND raw = 1 AND (expire_time IS NULL OR expire_time > ?)"
)


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
            return UNREADABLE
        return super().fetch(mode, filename, value, read)


class _PickledData(Exception):
    """A pickled key in our cache (someone else's); it is never loaded."""


class DiskStore(Store):
    """diskcache under `directory`, least-recently-used eviction past `size_limit` bytes.

    `refresh_s`: the granularity of that eviction order. A hit writes its entry's access
    time only if the last one is older than this (default a day): a re-run of entries used
    within the period writes nothing, and eviction still takes the least recently used
    first, to within a period.

    `tag_index`: index entries by experiment, for clearing or listing one experiment without
    a full scan. A store that only ever holds one (the embedding store) goes without: the
    index is one more B-tree to update on every write.

    Example:
        >>> import tempfile
        >>> store = DiskStore(tempfile.mkdtemp(), size_limit=10**6)
        >>> store.write_bytes("k", b'{"model": "m"}', experiment="default")
        True
        >>> store.read_bytes("k", experiment="default")
        b'{"model": "m"}'
    """

    kind = "disk"

    def __init__(
        self, directory: str | Path, *, size_limit: int = 5 * 1024**3, tag_index: bool = True,
        ttl_s: float | None = None, refresh_s: float = REFRESH_S,
    ) -> None:
        self.directory = Path(directory).expanduser()
        self.size_limit = size_limit
        self.refresh_s = refresh_s
        self.ttl_s = ttl_s  # each entry written is served this long (diskcache's `expire`)
        self.tag_index = tag_index
        self.damage: str | None = None  # what is wrong with the database file, once found
        self._cache: diskcache.Cache | None = None
        self._open()

    @property
    def location(self) -> str:
        return str(self.directory)

    def _open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._cache = diskcache.Cache(
                str(self.directory), disk=_JSONOnlyDisk, size_limit=self.size_limit,
                eviction_policy="least-recently-used", tag_index=self.tag_index,
                timeout=STORAGE_TIMEOUT_S,
            )
            # Inside a transaction diskcache's size estimate does not shrink, so its per-set
            # eviction would empty the store during one large batch: we evict after each
            # write instead (this instance only; the stored setting is left alone).
            self._cache.reset("cull_limit", 0, update=False)
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
        return self.read_many([key], experiment=experiment).get(key)

    def read_many(self, keys: Sequence[str], *, experiment: str) -> dict[str, bytes]:
        """Plain reads, `BATCH` keys at a time; the entries last used more than `refresh_s`
        ago are then marked used now, in one write per batch (none at all on a re-run)."""
        return self._read_batches(keys, experiment, refresh_s=self.refresh_s)

    def peek_many(self, keys: Sequence[str], *, experiment: str) -> dict[str, bytes]:
        """Plain reads that never count as a use: no access-time update, no write lock."""
        return self._read_batches(keys, experiment, refresh_s=None)

    def _read_batches(self, keys: Sequence[str], experiment: str, *, refresh_s: float | None) -> dict[str, bytes]:
        """The keys read `BATCH` at a time; after a failed batch the rest are misses too,
        with the one warning. A refresh that fails loses no hit (it is bookkeeping)."""
        found: dict[str, bytes] = {}
        for batch in chunks(keys, BATCH):
            got = self._attempt("read", batch[0], partial(_read, keys=batch, experiment=experiment,
                                                          refresh_s=refresh_s), None)
            if got is None:
                break
            found.update(got.found)
            if got.stale:
                self._attempt("access-time update", batch[0], partial(_mark_used, rows=got.stale), None)
        return found

    def write_bytes(self, key: str, data: bytes, *, experiment: str) -> bool:
        return self.write_many({key: data}, experiment=experiment) == 1

    def write_many(self, items: Mapping[str, bytes], *, experiment: str) -> int:
        """One transaction per `BATCH` items, each kept whole or not at all, then eviction
        past the size limit; after a failed batch the rest are not tried (one warning)."""
        kept = 0
        for batch in chunks(list(items.items()), BATCH):
            write = partial(_write_batch, items=batch, experiment=experiment, expire=self.ttl_s)
            if not self._attempt("write", batch[0][0], write, False):
                break
            kept += len(batch)
        if kept:
            self._attempt("eviction", "(all)", _evict_past_limit, None)
        return kept

    def delete(self, key: str, *, experiment: str) -> None:
        self._attempt("delete", key, lambda cache: cache.delete(storage_key(key, experiment)), None)

    def keys(self, *, experiment: str) -> list[str]:
        rows: list[tuple[str]] = self._attempt("list", experiment, lambda cache: cache._sql(
            "SELECT key FROM Cache WHERE tag = ? AND raw = 1", (experiment,)
        ).fetchall(), [])
        prefix = storage_key("", experiment)
        return [key[len(prefix) :] for (key,) in rows if key.startswith(prefix)]

    def clear(self, experiment: str | None = None) -> int:
        """Remove one experiment, or everything; a full clear of a damaged file moves it
        aside (`cache.db.damaged-<time>`) and starts empty."""
        if self.damage is None and self._cache is not None:
            try:
                if experiment is None:
                    return self._cache.clear(retry=True)
                return self._cache.evict(experiment, retry=True)
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

    def prune(self) -> Pruned:
        return self._attempt("prune", "(all)", _prune, Pruned())

    def info(self) -> StoreInfo:
        # diskcache keeps no per-tag totals; one GROUP BY over its table gives them.
        rows: list[tuple[str, int, int | None]] = self._attempt("size", "(all)", lambda cache: cache._sql(
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
        """Claims on calls in flight, shared by every process that uses this directory.

        No eviction bookkeeping: a claim is deleted when its call ends, and an expired one
        (its process died) is replaced by the next claim of the same call.
        """
        return diskcache.Cache(
            str(self.directory / LEASES_DIRECTORY), disk=_JSONOnlyDisk, timeout=STORAGE_TIMEOUT_S,
            cull_limit=0, eviction_policy="none",
        )

    def claim_many(self, keys: Sequence[str], *, experiment: str, token: str, ttl_s: float) -> frozenset[str]:
        try:  # diskcache's add is atomic across processes, and an expired claim counts as absent
            with self._leases.transact():
                return frozenset(key for key in keys if self._leases.add(
                    storage_key(key, experiment), token.encode(), expire=ttl_s))
        except (*PASSING_TROUBLE, sqlite3.Error) as exc:
            warn_storage("claim", keys[0] if keys else "(none)", exc)
            return frozenset(keys)  # no coordination possible: make the calls (an optimisation)

    def calls_in_flight(self) -> int:
        """Unexpired claims, from every process using this directory."""
        try:
            self._leases.expire()
            return len(self._leases)
        except (*PASSING_TROUBLE, sqlite3.Error) as exc:
            warn_storage("lease count", "(all)", exc)
            return 0

    def renew(self, claims: Mapping[str, str], *, experiment: str, ttl_s: float) -> None:
        self._if_claimed(claims, experiment, lambda slot: self._leases.touch(slot, expire=ttl_s))

    def release(self, claims: Mapping[str, str], *, experiment: str) -> None:
        self._if_claimed(claims, experiment, self._leases.delete)

    def _if_claimed(self, claims: Mapping[str, str], experiment: str, act: Callable[[str], Any]) -> None:
        """`act` on each slot of `claims` still held by its token, in one transaction."""
        try:
            with self._leases.transact():
                for key, token in claims.items():
                    slot = storage_key(key, experiment)
                    if self._leases.get(slot) == token.encode():
                        act(slot)
        except (*PASSING_TROUBLE, sqlite3.Error) as exc:
            warn_storage("lease", next(iter(claims), "(none)"), exc)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
        if "_leases" in self.__dict__:
            self._leases.close()


class _Read(NamedTuple):
    found: dict[str, bytes]  # by key
    stale: list[tuple[float, int]]  # (now, rowid) of the found entries due an access-time update


def _read(cache: diskcache.Cache, *, keys: Sequence[str], experiment: str, refresh_s: float | None) -> _Read:
    """The stored bytes of `keys` (absent or expired ones left out), read outside any
    transaction; with `refresh_s`, which of them were last used longer ago than that."""
    now, read = time.time(), _Read({}, [])
    for key in keys:
        rows = cache._sql(_SELECT, (storage_key(key, experiment), now)).fetchall()
        if not rows:
            continue
        ((rowid, access_time, mode, filename, value),) = rows
        try:
            read.found[key] = cache._disk.fetch(mode, filename, value, False)
        except OSError:  # its file went with an eviction meanwhile: a miss
            continue
        if refresh_s is not None and access_time < now - refresh_s:
            read.stale.append((now, rowid))
    return read


def _mark_used(cache: diskcache.Cache, *, rows: list[tuple[float, int]]) -> None:
    with cache.transact():
        cache._con.executemany("UPDATE Cache SET access_time = ? WHERE rowid = ?", rows)


def _write_batch(cache: diskcache.Cache, items: Sequence[tuple[str, bytes]], experiment: str,
                 expire: float | None) -> bool:
    with cache.transact():
        for key, data in items:
            cache.set(storage_key(key, experiment), data, tag=experiment, expire=expire)
    return True


def _prune(cache: diskcache.Cache) -> Pruned:
    """Count, then delete, the entries whose `expire` time has passed."""
    count, size = cache._sql(
        "SELECT COUNT(*), SUM(size + COALESCE(LENGTH(value), 0) + LENGTH(key)) FROM Cache"
        " WHERE expire_time IS NOT NULL AND expire_time < ?", (time.time(),)
    ).fetchone()
    cache.expire(retry=True)
    return Pruned(entries=count, bytes=int(size or 0))


def _evict_past_limit(cache: diskcache.Cache) -> None:
    if cache.volume() > cache.size_limit:
        cache.cull()
