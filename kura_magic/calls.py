"""One cached model call: read the cache, join an identical call in flight, call, write back."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kura_magic import gateway
from kura_magic.config import Settings, check_experiment_name, settings
from kura_magic.errors import ConfigError
from kura_magic.store import Store, open_store
from kura_magic.types import CACHE_MODES, CacheEntry, CacheMode, ChatRequest

_InFlight = dict[tuple[int, str, str], "asyncio.Future[gateway.Outcome]"]
_in_flight: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _InFlight]
_in_flight = weakref.WeakKeyDictionary()


def model_params(
    temperature: float, max_tokens: int | None, params: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The parameters sent to the model, under the names every entry point shares:
    temperature and max_tokens, then any others (seed, top_p, stop, ...).

    Example:
        >>> model_params(0.0, None, {"seed": 1})
        {'temperature': 0.0, 'max_tokens': None, 'seed': 1}
    """
    return {"temperature": temperature, "max_tokens": max_tokens, **(params or {})}


@dataclass(frozen=True)
class CallContext:
    """Where calls are cached (store, experiment), how (mode), and the settings in force.

    Example:
        >>> ctx = CallContext.create(experiment="demo", cache_mode="off")
        >>> ctx.experiment, ctx.lookup("km1-chat-x") is None
        ('demo', True)
    """

    store: Store
    experiment: str
    mode: CacheMode
    config: Settings

    @classmethod
    def create(
        cls,
        *,
        experiment: str | None = None,
        store: Store | None = None,
        cache_mode: CacheMode = "read_write",
        config: Settings | None = None,
    ) -> CallContext:
        """The context for one run: explicit arguments, else the session's settings."""
        config = config or settings()
        if cache_mode not in CACHE_MODES:
            raise ConfigError(f"cache_mode {cache_mode!r} is not one of {', '.join(CACHE_MODES)}")
        name = check_experiment_name(experiment) if experiment is not None else config.experiment
        return cls(store or open_store(config), name, cache_mode, config)

    @property
    def reads(self) -> bool:
        return self.mode in ("read_write", "read_only")

    @property
    def writes(self) -> bool:
        return self.mode in ("read_write", "refresh")

    def lookup(self, key: str) -> CacheEntry | None:
        """The cached entry for `key`, unless this mode does not read the cache."""
        return self.store.get(key, experiment=self.experiment) if self.reads else None

    async def fetch(self, request: ChatRequest) -> tuple[CacheEntry, bool]:
        """Make `request` (or join the identical one in flight); True means it was joined."""
        table = _in_flight.setdefault(asyncio.get_running_loop(), {})
        slot = (id(self.store), self.experiment, request.key)
        if slot in table:
            outcome = await asyncio.shield(table[slot])
            return outcome.entry, True
        future: asyncio.Future[gateway.Outcome] = asyncio.get_running_loop().create_future()
        table[slot] = future
        try:
            outcome = await self._call(request)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # marks it retrieved: nobody else may be waiting
            raise
        finally:
            del table[slot]
        future.set_result(outcome)
        return outcome.entry, False

    async def _call(self, request: ChatRequest) -> gateway.Outcome:
        async with gateway.limiter(self.config.max_concurrency):
            outcome = await gateway.complete_chat(request, self.config)
        if outcome.cacheable and self.writes:
            self.store.set(request.key, outcome.entry, experiment=self.experiment)
        return outcome
