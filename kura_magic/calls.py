"""Making calls: the options every entry point shares (`CallOptions`), resolved once per run
(`CallSetup`), and one cached call (`CallContext`: read the cache, join an identical call
in flight, call, write back)."""

from __future__ import annotations

import asyncio
import math
import uuid
import weakref
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypedDict

from pydantic import BaseModel

from kura_magic import gateway
from kura_magic.config import Settings, check_experiment_name, settings
from kura_magic.errors import ConfigError
from kura_magic.keys import KeyRecipe
from kura_magic.schemas import resolve_schema
from kura_magic.store import Store, open_store
from kura_magic.types import CACHE_MODES, CacheEntry, CacheMode, ChatRequest

# A lease lapses this long after its owner stops renewing it (a process that died).
LEASE_S = 10.0
LEASE_POLL_S, LEASE_POLL_MAX_S = 0.02, 0.25  # how often a waiter looks for the entry
# Stores no other process sees: the in-flight table alone makes each call once, no lease needed.
PROCESS_LOCAL_STORES = ("memory", "off")

_InFlight = dict[tuple[int, str, str], "asyncio.Future[CacheEntry]"]
_in_flight: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _InFlight]
_in_flight = weakref.WeakKeyDictionary()


def check_cache_mode(mode: str) -> CacheMode:
    """`mode` if it is a cache mode, else a ConfigError naming the choices.

    Example:
        >>> check_cache_mode("read_only")
        'read_only'
    """
    if mode not in CACHE_MODES:
        raise ConfigError(f"cache_mode {mode!r} is not one of {', '.join(CACHE_MODES)}")
    return mode  # type: ignore[return-value]


def _checked_params(params: dict[str, Any]) -> dict[str, Any]:
    """`params` if a provider could take them; else a ConfigError naming the parameter (a NaN
    would otherwise be sent, refused, and retried as if the server were at fault)."""
    for name, value in params.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}={value} is not a number a model can take: give a finite value")
    temperature = params["temperature"]
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0:
        raise ConfigError(f"temperature={temperature!r}: give a number, 0 (most repeatable) or more")
    max_tokens = params["max_tokens"]
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise ConfigError(f"max_tokens={max_tokens!r}: give a whole number of at least 1, or None")
    return params


@dataclass
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
    unsaved: int = 0  # answers the store could not keep (it was down or full)
    in_flight: int = 0  # provider calls out now

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
        name = check_experiment_name(experiment) if experiment is not None else config.experiment
        return cls(store or open_store(config), name, check_cache_mode(cache_mode), config)

    @property
    def reads(self) -> bool:
        return self.mode in ("read_write", "read_only")

    @property
    def writes(self) -> bool:
        return self.mode in ("read_write", "refresh")

    def lookup(self, key: str) -> CacheEntry | None:
        """The cached entry for `key`, unless this mode does not read the cache."""
        return self.store.get(key, experiment=self.experiment) if self.reads else None

    def lookup_many(self, keys: list[str]) -> dict[str, CacheEntry]:
        """The cached entries of `keys`, fetched in as few trips as the store allows."""
        return self.store.get_many(keys, experiment=self.experiment) if self.reads else {}

    async def fetch(self, request: ChatRequest, *, own_limit: bool = False) -> tuple[CacheEntry, bool]:
        """The entry for `request`: joined from the identical call in flight in this process,
        found in the cache meanwhile, or made now. True means this fetch did not make it.

        A call made now waits for a slot of the process-wide limit (`max_concurrency` of the
        settings), unless `own_limit`: the caller bounds its calls itself (a run's own limit).
        """
        table = _in_flight.setdefault(asyncio.get_running_loop(), {})
        slot = (id(self.store), self.experiment, request.key)
        if slot in table:
            return await asyncio.shield(table[slot]), True
        future: asyncio.Future[CacheEntry] = asyncio.get_running_loop().create_future()
        table[slot] = future
        try:
            entry, made = await self._obtain(request, own_limit)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # marks it retrieved: nobody else may be waiting
            raise
        finally:
            del table[slot]
        future.set_result(entry)
        return entry, not made

    async def _obtain(self, request: ChatRequest, own_limit: bool) -> tuple[CacheEntry, bool]:
        if self.mode == "read_write" and self.store.kind not in PROCESS_LOCAL_STORES:
            return await self._obtain_leased(request, own_limit)
        # Another run may have cached it while this one waited for a slot.
        found = self.lookup(request.key)
        if found is not None:
            return found, False
        return await self._call(request, own_limit), True

    async def _obtain_leased(self, request: ChatRequest, own_limit: bool) -> tuple[CacheEntry, bool]:
        """Make the call only while holding its lease in the store, so that processes sharing
        the store make it once; the others wait for the entry (or for a dead owner's lease
        to lapse)."""
        lease = Lease(self.store, request.key, self.experiment)
        delay = LEASE_POLL_S
        while not lease.claim():
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, LEASE_POLL_MAX_S)
            found = self.lookup(request.key)
            if found is not None:
                return found, False
        lease.hold()
        try:
            # Looked up under the lease: an owner that stored the entry and let go is seen.
            found = self.lookup(request.key)
            if found is not None:
                return found, False
            return await self._call(request, own_limit), True
        finally:
            lease.let_go()

    async def _call(self, request: ChatRequest, own_limit: bool) -> CacheEntry:
        slot: AbstractAsyncContextManager[object] = (
            nullcontext() if own_limit else gateway.limiter(self.config.max_concurrency)
        )
        async with slot:
            self.in_flight += 1
            try:
                outcome = await gateway.complete_chat(request, self.config)
            finally:
                self.in_flight -= 1
        if outcome.cacheable and self.writes:
            self.unsaved += not self.store.set(request.key, outcome.entry, experiment=self.experiment)
        return outcome.entry


@dataclass
class Lease:
    """The right, for a few seconds at a time, to make one call for everyone sharing a store.

    Example:
        >>> from kura_magic.store import MemoryStore
        >>> Lease(MemoryStore(), "km1-chat-x", "default").claim()  # one process: always ours
        True
    """

    store: Store
    key: str
    experiment: str
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    _renewal: asyncio.TimerHandle | None = field(default=None, repr=False)

    def claim(self) -> bool:
        return self.store.claim(self.key, experiment=self.experiment, token=self.token, ttl_s=LEASE_S)

    def hold(self) -> None:
        """Keep the claimed lease, renewing it every LEASE_S / 3 on the running loop, until
        `let_go` (a timer, not a task per call: most calls end before the first renewal)."""
        self._renewal = asyncio.get_running_loop().call_later(LEASE_S / 3, self._renew)

    def _renew(self) -> None:
        self.store.renew(self.key, experiment=self.experiment, token=self.token, ttl_s=LEASE_S)
        self.hold()

    def let_go(self) -> None:
        """Stop renewing and release the lease (the entry is written, or the call failed)."""
        if self._renewal is not None:
            self._renewal.cancel()
        self.store.release(self.key, experiment=self.experiment, token=self.token)


class CallOptions(TypedDict, total=False):
    """The options `summarise`, `estimate` and `complete` share, under one set of names.

    model: litellm's name, e.g. 'openai/gpt-4o-mini' (default: the session's model);
    temperature (default 0.0) and max_tokens; params: any other model parameters
    (seed, top_p, stop, ...); schema: a pydantic model or a built-in schema's name;
    experiment: the cache scope (default: the active one); cache_mode: 'read_write',
    'read_only', 'refresh' or 'off'; api_key / api_base: where calls go (never keyed);
    store: a `Store` to use instead of the one the settings select.
    """

    model: str | None
    temperature: float
    max_tokens: int | None
    params: Mapping[str, Any] | None
    schema: str | type[BaseModel] | None
    experiment: str | None
    cache_mode: CacheMode
    api_key: str | None
    api_base: str | None
    store: Store | None


@dataclass(frozen=True)
class CallSetup:
    """`CallOptions` resolved against the session: where calls are cached, and what every
    request of one run or call shares.

    Example:
        >>> setup = CallSetup.create({"model": "openai/gpt-4o-mini", "params": {"seed": 1}})
        >>> setup.request("hi").params
        {'temperature': 0.0, 'max_tokens': None, 'seed': 1}
    """

    context: CallContext
    model: str
    schema: type[BaseModel] | None
    params: dict[str, Any]
    transport: dict[str, Any]

    @classmethod
    def create(cls, options: CallOptions, variables: Mapping[str, Any] | None = None) -> CallSetup:
        """Check the options' names and values; a schema name is looked up in `variables`."""
        unknown = sorted(set(options) - set(CallOptions.__annotations__))
        if unknown:
            raise ConfigError(
                f"unknown option {unknown[0]!r}: the options are {', '.join(CallOptions.__annotations__)}; "
                "other model parameters go in params={...}"
            )
        context = CallContext.create(
            experiment=options.get("experiment"), store=options.get("store"),
            cache_mode=options.get("cache_mode", "read_write"),
        )
        params = _checked_params({"temperature": options.get("temperature", 0.0),
                                  "max_tokens": options.get("max_tokens"), **(options.get("params") or {})})
        return cls(
            context, options.get("model") or context.config.model,
            resolve_schema(options.get("schema"), variables), params,
            context.config.transport(api_key=options.get("api_key"), api_base=options.get("api_base")),
        )

    def request(self, prompt: str | tuple[dict[str, Any], ...]) -> ChatRequest:
        """The request for one prompt (a user message) or a conversation of messages."""
        messages = ({"role": "user", "content": prompt},) if isinstance(prompt, str) else prompt
        return ChatRequest(self.model, messages, self.schema, self.params, self.transport, self.recipe)

    @cached_property
    def recipe(self) -> KeyRecipe:
        """What every request's key shares (model, schema, params), canonicalised once."""
        return KeyRecipe.of(model=self.model, schema=self.schema, params=self.params)

    def check_may_call(self, missing: str) -> None:
        """Raise before anything is spent (offline, unknown model, no key); see the gateway."""
        gateway.check_may_call(self.context.config, self.model, self.transport, missing=missing)

    async def aready(self, missing: str, *, while_loading: Callable[[], None]) -> None:
        """`check_may_call`, with litellm imported on a thread rather than on the loop;
        `while_loading` is called if the import keeps the calls waiting (see `gateway.load`).

        Example:
            >>> setup = CallSetup.create({"model": "openai/gpt-4o-mini"})
            >>> asyncio.run(setup.aready("1 call", while_loading=lambda: None))
        """
        gateway.check_online(self.context.config, missing=missing)
        await gateway.load(while_loading=while_loading)
        self.check_may_call(missing)
