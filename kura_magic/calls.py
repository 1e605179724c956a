"""One cached model call: read the cache, join an identical call in flight, call, write back."""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import Literal

from kura_magic import gateway
from kura_magic.cache import CacheEntry, CacheStrategy, open_cache
from kura_magic.config import Settings, check_experiment_name, settings
from kura_magic.errors import CacheMissError, ConfigError

CacheMode = Literal["read_write", "read_only", "refresh", "off"]
CACHE_MODES: tuple[CacheMode, ...] = ("read_write", "read_only", "refresh", "off")

_InFlight = dict[tuple[int, str, str], "asyncio.Future[gateway.Outcome]"]
_in_flight: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _InFlight]
_in_flight = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class CallContext:
    """Where calls are cached (store, experiment), how (mode), and the settings in force.

    Example:
        >>> ctx = CallContext.create(experiment="demo", cache_mode="off")
        >>> ctx.experiment, ctx.lookup("km1-chat-x") is None
        ('demo', True)
    """

    store: CacheStrategy
    experiment: str
    mode: CacheMode
    config: Settings

    @classmethod
    def create(
        cls,
        *,
        experiment: str | None = None,
        cache: CacheStrategy | None = None,
        cache_mode: CacheMode = "read_write",
        config: Settings | None = None,
    ) -> CallContext:
        """The context for one run: explicit arguments, else the session's settings."""
        config = config or settings()
        if cache_mode not in CACHE_MODES:
            raise ConfigError(f"cache_mode {cache_mode!r} is not one of {', '.join(CACHE_MODES)}")
        name = check_experiment_name(experiment) if experiment is not None else config.experiment
        return cls(cache or open_cache(config), name, cache_mode, config)

    @property
    def reads(self) -> bool:
        return self.mode in ("read_write", "read_only")

    @property
    def writes(self) -> bool:
        return self.mode in ("read_write", "refresh")

    def lookup(self, key: str) -> CacheEntry | None:
        """The cached entry for `key`, unless this mode does not read the cache."""
        return self.store.get(key, experiment=self.experiment) if self.reads else None

    async def fetch(self, call: gateway.ChatCall, key: str) -> tuple[CacheEntry, bool]:
        """Make `call` (or join the identical one in flight); True means it was joined."""
        if self.config.offline:
            raise CacheMissError(
                f"offline mode: call {key} is not in the cache of experiment "
                f"{self.experiment!r}; turn offline off (%kura offline off) to make it"
            )
        table = _in_flight.setdefault(asyncio.get_running_loop(), {})
        slot = (id(self.store), self.experiment, key)
        if slot in table:
            outcome = await asyncio.shield(table[slot])
            return outcome.entry, True
        future: asyncio.Future[gateway.Outcome] = asyncio.get_running_loop().create_future()
        table[slot] = future
        try:
            outcome = await self._call(call, key)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # marks it retrieved: nobody else may be waiting
            raise
        finally:
            del table[slot]
        future.set_result(outcome)
        return outcome.entry, False

    async def _call(self, call: gateway.ChatCall, key: str) -> gateway.Outcome:
        config = self.config
        async with gateway.limiter(config.max_concurrency):
            outcome = await gateway.complete_call(
                call,
                timeout_s=config.timeout_s,
                max_retries=config.max_retries,
                retry_base_s=config.retry_base_s,
            )
        if outcome.cacheable and self.writes:
            self.store.set(key, outcome.entry, experiment=self.experiment)
        return outcome
