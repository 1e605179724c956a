"""Making calls: the options every entry point shares (`CallOptions`), resolved once per run
(`CallSetup`), and one cached call (`CallContext`: read the cache, join an identical call
in flight, call, write back)."""

from __future__ import annotations

import asyncio
import math
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypedDict

from pydantic import BaseModel

from kura_magic.calls import gateway
from kura_magic.config import Settings, check_experiment_name, parse_duration, settings
from kura_magic.errors import ConfigError
from kura_magic.inputs.schemas import resolve_schema
from kura_magic.keys import KeyRecipe
from kura_magic.storage.base import Store
from kura_magic.storage.opening import open_store
from kura_magic.storage.responses import ResponseStore
from kura_magic.types import CACHE_MODES, CacheEntry, CacheMode, ChatRequest

# A lease lapses this long after its owner stops renewing it (a process that died).
LEASE_S = 10.0
LEASE_POLL_S, LEASE_POLL_MAX_S = 0.02, 0.25  # how often a waiter looks for the entry
# A batched run stores its finished calls (entries, then their leases let go) this often,
# and claims the leases of its next calls this many at a time.
FLUSH_S, CLAIM_AHEAD = 0.05, 50
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


def _checked_sample(sample: Any) -> int:
    """`sample` if it is a whole number of at least 0, else a ConfigError."""
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
        raise ConfigError(f"sample={sample!r}: give a whole number, 0 (the plain call) or more")
    return sample


def _ttl_config(ttl: float | str | None) -> Settings | None:
    """The session's settings with answers served for `ttl` ('7d', '12h', '30m' or seconds);
    None: the settings as they are."""
    if ttl is None:
        return None
    seconds = parse_duration(ttl) if isinstance(ttl, str) else ttl
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ConfigError(f"ttl={ttl!r}: give a positive duration, e.g. '7d', '12h', '30m' or seconds")
    return settings().model_copy(update={"cache_ttl_s": float(seconds)})


@dataclass
class CallContext:
    """Where calls are cached (store, experiment), how (mode), and the settings in force.

    Example:
        >>> ctx = CallContext.create(experiment="demo", cache_mode="off")
        >>> ctx.experiment, ctx.lookup("km2-chat-x") is None
        ('demo', True)
    """

    store: Store
    experiment: str
    mode: CacheMode
    config: Settings
    unsaved: int = 0  # answers the store could not keep (it was down or full)
    retried: gateway.RetryCount = field(default_factory=gateway.RetryCount)  # transient failures retried
    in_flight: int = 0  # provider calls out now
    _batch: _Batch | None = field(default=None, repr=False)  # see `batched`

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
    def responses(self) -> ResponseStore:
        """The store's cache entries (JSON over its bytes)."""
        return ResponseStore(self.store)

    @property
    def reads(self) -> bool:
        return self.mode in ("read_write", "read_only")

    @property
    def writes(self) -> bool:
        return self.mode in ("read_write", "refresh")

    def lookup(self, key: str) -> CacheEntry | None:
        """The cached entry for `key`, unless this mode does not read the cache."""
        return self.responses.get(key, experiment=self.experiment) if self.reads else None

    def lookup_many(self, keys: list[str]) -> dict[str, CacheEntry]:
        """The cached entries of `keys`, fetched in as few trips as the store allows."""
        return self.responses.get_many(keys, experiment=self.experiment) if self.reads else {}

    def lookup_each(self, keys: list[str]) -> Iterator[tuple[str, CacheEntry]]:
        """`lookup_many`'s (key, entry) pairs, each entry decoded when it is reached."""
        return self.responses.each(keys, experiment=self.experiment) if self.reads else iter(())

    async def fetch(self, request: ChatRequest, *, own_limit: bool = False) -> tuple[CacheEntry, bool]:
        """The entry for `request`: joined from the identical call in flight in this process,
        found in the cache meanwhile, or made now. True means this fetch did not make it.

        A call made now waits for a slot of the process-wide limit (`max_concurrency` of the
        settings), unless `own_limit`: the caller bounds its calls itself (a run's own limit).
        """
        table = _in_flight.setdefault(asyncio.get_running_loop(), {})
        slot = (id(self.store), self.experiment, request.key)
        if slot in table:
            self._give_back()
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

    @contextmanager
    def batched(self, keys: Sequence[str] = ()) -> Iterator[None]:
        """Inside, calls share their store work. The leases of `keys` (the calls to come, in
        order) are claimed `CLAIM_AHEAD` at a time in one go; finished calls are stored
        together, their entries in one write then their leases let go in another, every
        FLUSH_S and on leaving (after success, a failure or an interrupt alike). A crash
        before a flush costs a call made again, never a wrong answer; a process waiting
        on a lease finds the entry once the lease is free.

        Example:
            >>> ctx = CallContext.create(cache_mode="off")
            >>> with ctx.batched(["km2-chat-x"]):
            ...     pass
        """
        self._batch = _Batch(self, list(keys))
        try:
            yield
        finally:
            batch, self._batch = self._batch, None
            batch.flush(finishing=True)

    async def _obtain(self, request: ChatRequest, own_limit: bool) -> tuple[CacheEntry, bool]:
        if self.mode == "read_write" and self.store.kind not in PROCESS_LOCAL_STORES:
            return await self._obtain_leased(request, own_limit)
        # Another run may have cached it while this one waited for a slot.
        found = self.lookup(request.key)
        if found is not None:
            return found, False
        entry, keep = await self._call(request, own_limit)
        self._settle(request.key, entry if keep else None, None)
        return entry, True

    async def _obtain_leased(self, request: ChatRequest, own_limit: bool) -> tuple[CacheEntry, bool]:
        """Make the call only while holding its lease in the store, so that processes sharing
        the store make it once; the others wait for the entry (or for a dead owner's lease
        to lapse). Looking again under the lease is a plain read: it was a miss moments ago."""
        ahead = self._batch.take(request.key) if self._batch is not None else None
        lease = ahead if ahead is not None else await self._wait_for_lease(request.key)
        if isinstance(lease, CacheEntry):
            return lease, False
        keep: CacheEntry | None = None
        try:
            # Claimed ahead, it was looked up then; else an owner that stored it and let go is seen.
            found = None if ahead is not None else self._look_again(request.key)
            if found is not None:
                return found, False
            entry, cacheable = await self._call(request, own_limit)
            keep = entry if cacheable else None
            return entry, True
        finally:
            self._settle(request.key, keep, lease)

    async def _wait_for_lease(self, key: str) -> Lease | CacheEntry:
        """The lease of `key`, once no other process holds it, or the entry its holder stored."""
        lease = Lease(self.store, key, self.experiment)
        delay = LEASE_POLL_S
        while not lease.claim():
            self._give_back()
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, LEASE_POLL_MAX_S)
            found = self._look_again(key)
            if found is not None:
                return found
        lease.hold()
        return lease

    def _give_back(self) -> None:
        # About to wait for another run or process, which may wait for a lease this one
        # claimed ahead: letting those go means no two ever wait for each other.
        if self._batch is not None:
            self._batch.give_back()

    def _look_again(self, key: str) -> CacheEntry | None:
        return self.responses.get_many([key], experiment=self.experiment, use=False).get(key)

    async def _call(self, request: ChatRequest, own_limit: bool) -> tuple[CacheEntry, bool]:
        """The call's entry, and whether this mode stores it (an answer, not a hiccup)."""
        slot: AbstractAsyncContextManager[object] = (
            nullcontext() if own_limit else gateway.limiter(self.config.max_concurrency)
        )
        async with slot:
            self.in_flight += 1
            try:
                outcome = await gateway.complete_chat(request, self.config, retried=self.retried)
            finally:
                self.in_flight -= 1
        return outcome.entry, outcome.cacheable and self.writes

    def _settle(self, key: str, entry: CacheEntry | None, lease: Lease | None) -> None:
        """Store `entry` (None: nothing to keep), then let go of `lease`: now, or with the
        batch of finished calls (see `batched`)."""
        if self._batch is not None:
            self._batch.add(key, entry, lease)
            return
        if entry is not None:
            self.unsaved += not self.responses.set(key, entry, experiment=self.experiment)
        if lease is not None:
            lease.let_go()


@dataclass
class _Batch:
    """A batched context's store work (see `CallContext.batched`): leases claimed ahead, and
    finished calls not yet stored."""

    context: CallContext
    keys: list[str]  # the calls to come, in order
    entries: dict[str, CacheEntry] = field(default_factory=dict)
    releases: dict[str, str] = field(default_factory=dict)  # key -> token, let go at the flush
    ahead: dict[str, Lease | CacheEntry] = field(default_factory=dict)  # claimed, not yet taken
    held: dict[str, str] = field(default_factory=dict)  # key -> token: claimed ahead, renewed together
    claimed_to: int = 0  # keys[:claimed_to] have been claimed, or were skipped
    _timer: asyncio.TimerHandle | None = None
    _renewal: asyncio.TimerHandle | None = None

    @cached_property
    def _position(self) -> dict[str, int]:
        return {key: index for index, key in enumerate(self.keys)}

    def take(self, key: str) -> Lease | CacheEntry | None:
        """`key`'s lease claimed ahead (make the call), or the entry found when it was
        claimed; None: claim it on its own (another process held it, or it was not listed)."""
        index = self._position.get(key, -1)
        if index >= self.claimed_to:
            self._claim(self.keys[index : index + CLAIM_AHEAD])
            self.claimed_to = index + CLAIM_AHEAD
        return self.ahead.pop(key, None)

    def _claim(self, keys: list[str]) -> None:
        """Claim `keys` in one go, and look up the claimed ones in one read (an owner that
        stored its entry and let go moments ago)."""
        store, experiment, token = self.context.store, self.context.experiment, uuid.uuid4().hex
        claimed = store.claim_many(keys, experiment=experiment, token=token, ttl_s=LEASE_S)
        responses = self.context.responses
        found = responses.get_many([key for key in keys if key in claimed], experiment=experiment, use=False)
        if found:
            store.release(dict.fromkeys(found, token), experiment=experiment)
        self.ahead.update(found)
        for key in claimed.difference(found):
            self.ahead[key] = Lease(store, key, experiment, token)
            self.held[key] = token
        if self.held and self._renewal is None:
            self._renewal = asyncio.get_running_loop().call_later(LEASE_S / 3, self._renew)

    def _renew(self) -> None:
        """Renew every lease claimed ahead and not yet let go, in one go, every LEASE_S / 3."""
        self._renewal = None
        if self.held:
            self.context.store.renew(self.held, experiment=self.context.experiment, ttl_s=LEASE_S)
            self._renewal = asyncio.get_running_loop().call_later(LEASE_S / 3, self._renew)

    def give_back(self) -> None:
        """Let go (with the next flush) of the leases claimed ahead and not yet taken."""
        for key, lease in list(self.ahead.items()):
            if isinstance(lease, Lease):
                del self.ahead[key]
                self.add(key, None, lease)

    def add(self, key: str, entry: CacheEntry | None, lease: Lease | None) -> None:
        """A finished call: `entry` to store (None: nothing to keep), `lease` to let go, with
        the calls that finish within FLUSH_S (at once if no other call is out)."""
        if entry is not None:
            self.entries[key] = entry
        if lease is not None:
            lease.stop_renewing()  # let go within FLUSH_S, long before the lease would lapse
            self.held.pop(key, None)
            self.releases[key] = lease.token
        if self.context.in_flight == 0:
            self.flush()  # no call out that could join this batch: store it now
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_S, self.flush)

    def flush(self, *, finishing: bool = False) -> None:
        """The entries in one write, then the leases in one release: in that order, so that
        whoever waits on a lease finds the entry once the lease is free. `finishing`: the
        leases claimed ahead and never taken are let go too."""
        if finishing:
            self.give_back()
            self.ahead.clear()
            if self._renewal is not None:
                self._renewal.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        context, entries, releases = self.context, self.entries, self.releases
        self.entries, self.releases = {}, {}
        if entries:
            context.unsaved += len(entries) - context.responses.set_many(entries, experiment=context.experiment)
        if releases:
            context.store.release(releases, experiment=context.experiment)


@dataclass
class Lease:
    """The right, for a few seconds at a time, to make one call for everyone sharing a store.

    Example:
        >>> from kura_magic.storage.base import MemoryStore
        >>> Lease(MemoryStore(), "km2-chat-x", "default").claim()  # one process: always ours
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
        self.store.renew({self.key: self.token}, experiment=self.experiment, ttl_s=LEASE_S)
        self.hold()

    def stop_renewing(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()

    def let_go(self) -> None:
        """Stop renewing and release the lease (the entry is written, or the call failed)."""
        self.stop_renewing()
        self.store.release({self.key: self.token}, experiment=self.experiment)


class SharedOptions(TypedDict, total=False):
    """The `CallOptions` that say how a run is made and where its calls go, not what varies
    between calls: every run of a sweep shares them (see `run.sweep.SweepOptions`)."""

    temperature: float
    max_tokens: int | None
    schema: str | type[BaseModel] | None
    experiment: str | None
    cache_mode: CacheMode
    api_key: str | None
    api_base: str | None
    store: Store | None


class CallOptions(SharedOptions, total=False):
    """The options `summarise`, `estimate` and `complete` share, under one set of names.

    model: litellm's name, e.g. 'openai/gpt-4o-mini' (default: the session's model);
    temperature (default 0.0) and max_tokens; params: any other model parameters
    (seed, top_p, stop, ...); schema: a pydantic model or a built-in schema's name;
    experiment: the cache scope (default: the active one); cache_mode: 'read_write',
    'read_only', 'refresh' or 'off'; api_key / api_base: where calls go (never keyed);
    store: a `Store` to use instead of the one the settings select; sample: which of
    repeated generations this is (0, the default, is the plain call; keyed, never sent);
    ttl: how long the answers written are served ('7d', '12h', '30m' or seconds; default
    `KURA_MAGIC_CACHE_TTL`, else until evicted).
    """

    model: str | None
    params: Mapping[str, Any] | None
    sample: int
    ttl: float | str | None


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
    sample: int = 0  # which of repeated generations: part of the key, never of the request

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
            cache_mode=options.get("cache_mode", "read_write"), config=_ttl_config(options.get("ttl")),
        )
        params = _checked_params({"temperature": options.get("temperature", 0.0),
                                  "max_tokens": options.get("max_tokens"), **(options.get("params") or {})})
        model = options.get("model") or context.config.model
        return cls(
            context, model, resolve_schema(options.get("schema"), variables), params,
            context.config.transport(model, api_key=options.get("api_key"), api_base=options.get("api_base")),
            _checked_sample(options.get("sample", 0)),
        )

    def request(self, prompt: str | tuple[dict[str, Any], ...]) -> ChatRequest:
        """The request for one prompt (a user message) or a conversation of messages."""
        messages = ({"role": "user", "content": prompt},) if isinstance(prompt, str) else prompt
        return ChatRequest(self.model, messages, self.schema, self.params, self.transport, self.recipe)

    def key(self, prompt: str) -> str:
        """The key of `request(prompt)`, without making the request (a cached run's hits).

        Example:
            >>> setup = CallSetup.create({"model": "openai/gpt-4o-mini"})
            >>> setup.key("hi") == setup.request("hi").key
            True
        """
        return self.recipe.key(({"role": "user", "content": prompt},))

    @cached_property
    def recipe(self) -> KeyRecipe:
        """What every request's key shares (model, schema, params), canonicalised once."""
        return KeyRecipe.of(model=self.model, schema=self.schema, params=self.params, sample=self.sample)

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
