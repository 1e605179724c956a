"""The Redis store: a cache a team shares across notebooks and machines
(`KURA_MAGIC_CACHE=redis://[user:password@]host:port/db`, or `rediss://` for TLS).

Same behaviour as the disk store: entries scoped by experiment, JSON (or raw float32)
bytes and never pickle, per-experiment sizes, leases so a call in flight anywhere is made
once. Keys live under a prefix (`KURA_MAGIC_REDIS_PREFIX`) so a shared Redis can hold other
data, optionally with a time to live (`KURA_MAGIC_CACHE_TTL`); eviction is Redis's own
(`maxmemory-policy`). A Redis that is down or goes away is a warning and a run without the
cache, retried after a pause; a bad URL or a refused password is a `CacheError` at once.
This module (and so redis-py) is imported only when such a store is opened.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, cast

import redis

from kura_magic.config import mask_url
from kura_magic.errors import CacheError, CacheWarning
from kura_magic.storage.base import BATCH, STORAGE_TIMEOUT_S, Store, StoreScope, chunks, warn_storage
from kura_magic.types import ExperimentInfo, StoreInfo

T = TypeVar("T")
RETRY_AFTER_S = 30.0  # how long a store that lost its Redis waits before trying again
SCOPES: dict[StoreScope, str] = {"responses": "r", "embeddings": "v", "runs": "h", "batches": "b"}
# Renew or release a lease only if it is still ours: one round trip, atomic in Redis.
_IF_OURS = {
    "renew": "if redis.call('get', KEYS[1]) == ARGV[1] then "
             "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end",
    "release": "if redis.call('get', KEYS[1]) == ARGV[1] then "
               "return redis.call('del', KEYS[1]) else return 0 end",
}


class RedisStore(Store):
    """Entries in Redis under `{prefix}:{scope}:{key}:{experiment}`.

    Example:
        >>> from kura_magic.testing import RedisServer
        >>> with RedisServer() as server:
        ...     store = RedisStore(server.url, prefix="demo")
        ...     store.write_bytes("k", b'{"model": "m"}', experiment="a")
        ...     store.read_bytes("k", experiment="a"), store.read_bytes("k", experiment="b")
        True
        (b'{"model": "m"}', None)
    """

    kind = "redis"

    def __init__(self, url: str, *, prefix: str, scope: StoreScope = "responses",
                 ttl_s: float | None = None) -> None:
        self.url = mask_url(url)  # what may be shown; the password stays in the client only
        self.ttl_s = ttl_s
        self._namespace = f"{prefix}:{SCOPES[scope]}:"
        self._leases = f"{prefix}:lease:"
        self._client = _connect(url, self.url)
        self._scripts = {name: self._client.register_script(code) for name, code in _IF_OURS.items()}
        self.down: str | None = None
        self._retry_at = 0.0
        self._attempt("connect", "", lambda client: client.ping(), None)

    @property
    def location(self) -> str:
        return f"{self.url} {self._namespace}"

    def _slot(self, key: str, experiment: str) -> str:
        return f"{self._namespace}{key}:{experiment}"

    def _attempt(self, action: str, key: str, work: Callable[[redis.Redis], T], default: T) -> T:
        """One round trip; an unreachable Redis is one warning, then `default` until
        RETRY_AFTER_S has passed; any other Redis error is a warning and `default`."""
        if self.down is not None and time.monotonic() < self._retry_at:
            return default
        try:
            result = work(self._client)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._went_down(exc)
            return default
        except redis.RedisError as exc:
            warn_storage(action, key, exc)
            return default
        self.down = None
        return result

    def _went_down(self, exc: Exception) -> None:
        if self.down is None:
            self.down = (f"the Redis cache at {self.url} cannot be reached ({exc}); runs go on "
                         f"without it and try it again after {RETRY_AFTER_S:g} s")
            _warn_once_per_outage(self.url, self.down)
        self._retry_at = time.monotonic() + RETRY_AFTER_S

    def read_bytes(self, key: str, *, experiment: str) -> bytes | None:
        slot = self._slot(key, experiment)
        return self._attempt("read", key, lambda client: _stored(client.get(slot)), None)

    def read_many(self, keys: Sequence[str], *, experiment: str) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for batch in chunks(keys, BATCH):
            slots = [self._slot(key, experiment) for key in batch]
            values: list[bytes | str | None] = self._attempt(
                "read", batch[0], lambda client: client.mget(slots), [None] * len(batch))
            found.update((key, value) for key, value in zip(batch, map(_stored, values)) if value is not None)
        return found

    def write_bytes(self, key: str, data: bytes, *, experiment: str) -> bool:
        return self._attempt("write", key, lambda client: bool(client.set(
            self._slot(key, experiment), data, px=self._expire_ms)), False)

    def write_many(self, items: Mapping[str, bytes], *, experiment: str) -> int:
        """One round trip per `BATCH` items, as MULTI/EXEC: a batch is kept whole or not at all."""
        kept = 0
        for batch in chunks(list(items.items()), BATCH):

            def send(client: redis.Redis, batch: Sequence[tuple[str, bytes]] = batch) -> list[Any]:
                pipe = client.pipeline(transaction=True)
                for key, data in batch:
                    pipe.set(self._slot(key, experiment), data, px=self._expire_ms)
                return pipe.execute()

            kept += sum(map(bool, self._attempt("write", batch[0][0], send, [])))
        return kept

    @property
    def _expire_ms(self) -> int | None:
        return None if self.ttl_s is None else max(1, round(self.ttl_s * 1000))

    def delete(self, key: str, *, experiment: str) -> None:
        self._attempt("delete", key, lambda client: client.delete(self._slot(key, experiment)), 0)

    def _names(self, experiment: str | None = None) -> Iterator[str]:
        pattern = f"{_glob_escape(self._namespace)}*"
        if experiment is not None:
            pattern += f":{_glob_escape(experiment)}"
        names: list[bytes] = self._attempt("list", experiment or "(all)", lambda client: list(
            client.scan_iter(match=pattern, count=BATCH)), [])
        for name in names:
            rest = name.decode("utf-8", "replace")[len(self._namespace):]
            if experiment is None or rest.partition(":")[2] == experiment:  # not "a:b" for "b"
                yield rest

    def keys(self, *, experiment: str) -> list[str]:
        return [rest[: -len(experiment) - 1] for rest in self._names(experiment)]

    def clear(self, experiment: str | None = None) -> int:
        names = [f"{self._namespace}{rest}" for rest in self._names(experiment)]
        for batch in chunks(names, BATCH):
            self._attempt("clear", batch[0], lambda client: client.unlink(*batch), 0)
        return len(names)

    def info(self) -> StoreInfo:
        rests = list(self._names())
        sizes = self._sizes([f"{self._namespace}{rest}" for rest in rests])
        experiments: dict[str, ExperimentInfo] = {}
        for rest, size in zip(rests, sizes):
            counts = experiments.setdefault(rest.partition(":")[2], ExperimentInfo())
            counts.entries += 1
            counts.bytes += size + len(self._namespace) + len(rest)
        return StoreInfo(
            entries=len(rests), bytes=sum(e.bytes for e in experiments.values()),
            experiments=experiments, url=self.url, problem=self.down,
        )

    def _sizes(self, names: list[str]) -> list[int]:
        sizes: list[int] = []
        for batch in chunks(names, BATCH):

            def lengths(client: redis.Redis, batch: Sequence[str] = batch) -> list[int]:
                pipe = client.pipeline(transaction=False)
                for name in batch:
                    pipe.strlen(name)
                return pipe.execute()

            sizes += self._attempt("size", batch[0], lengths, [0] * len(batch))
        return sizes

    def claim_many(self, keys: Sequence[str], *, experiment: str, token: str, ttl_s: float) -> frozenset[str]:
        def send(client: redis.Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.set(f"{self._leases}{key}:{experiment}", token, nx=True, px=round(ttl_s * 1000))
            return pipe.execute()

        claimed = self._attempt("claim", keys[0] if keys else "(none)", send, None)
        if claimed is None:
            return frozenset(keys)  # no Redis: make the calls anyway
        return frozenset(key for key, done in zip(keys, claimed) if done)

    def renew(self, claims: Mapping[str, str], *, experiment: str, ttl_s: float) -> None:
        self._if_ours("renew", claims, experiment, round(ttl_s * 1000))

    def calls_in_flight(self) -> int:
        """Leases held now, by any process or machine (they expire by themselves)."""
        def count(client: redis.Redis) -> int:
            return sum(1 for _ in client.scan_iter(match=f"{self._leases}*", count=1000))

        return self._attempt("lease count", "(all)", count, 0)

    def release(self, claims: Mapping[str, str], *, experiment: str) -> None:
        self._if_ours("release", claims, experiment)

    def _if_ours(self, script: str, claims: Mapping[str, str], experiment: str, *args: Any) -> None:
        """Run `script` on each lease of `claims` (key -> token), in one round trip."""

        def send(client: redis.Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for key, token in claims.items():
                self._scripts[script](keys=[f"{self._leases}{key}:{experiment}"], args=[token, *args],
                                      client=pipe)
            return pipe.execute()

        self._attempt("lease", next(iter(claims), "(none)"), send, [])

    def close(self) -> None:
        self._client.close()


def _connect(url: str, shown: str) -> redis.Redis:
    """A client for `url`; a URL it cannot use or a refused password is a CacheError now."""
    try:
        client = redis.Redis.from_url(
            url, socket_timeout=STORAGE_TIMEOUT_S, socket_connect_timeout=STORAGE_TIMEOUT_S,
        )
        client.ping()
    except (redis.AuthenticationError, redis.ResponseError) as exc:
        raise CacheError(f"the Redis cache at {shown} refused the connection: {exc}. "
                         "Check the user and password in KURA_MAGIC_CACHE") from None
    except (ValueError, redis.DataError) as exc:
        raise CacheError(f"KURA_MAGIC_CACHE={shown} is not a Redis URL this client can use: "
                         f"{exc}. Write it as redis://[user:password@]host:port/db") from None
    except (redis.ConnectionError, redis.TimeoutError):
        pass  # down is not wrong: the store warns and runs go on without it
    return client


_warned_at: dict[str, float] = {}  # URL -> when its outage was last reported


def _warn_once_per_outage(url: str, message: str) -> None:
    """One warning per Redis and outage, however many stores (responses, embeddings) see it."""
    now = time.monotonic()
    if now - _warned_at.get(url, -RETRY_AFTER_S) >= RETRY_AFTER_S:
        _warned_at[url] = now
        warnings.warn(message, CacheWarning, stacklevel=5)


def _stored(value: bytes | str | None) -> bytes | None:
    """A value as Redis gives it back: bytes, or None for a key that is not there."""
    # The client never decodes replies (no decode_responses=True), which redis-py's types
    # cannot know, so they also allow str.
    return cast("bytes | None", value)


def _glob_escape(text: str) -> str:
    """`text` as a literal inside a Redis glob pattern."""
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)
