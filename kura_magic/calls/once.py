"""Work done once per key, for work made in batches (embeddings): a key already being made
in this process is joined, not made again; across processes sharing a store, each key is
made by whoever holds its lease, and the others wait for what it stores.

The leases are the chat calls' own (`calls.Lease`'s store claims, `LEASE_S`, the same
polling), taken many at a time: a batch of keys is claimed in one go, renewed together
while its work runs, and let go once its results are stored.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Generic, TypeVar

from kura_magic.calls.calls import LEASE_POLL_MAX_S, LEASE_POLL_S, LEASE_S, PROCESS_LOCAL_STORES
from kura_magic.storage.base import Store

V = TypeVar("V")
Make = Callable[[list[str]], Awaitable[Mapping[str, V]]]  # make (and store) these keys' values
Look = Callable[[list[str]], Mapping[str, V]]  # the values stored for these keys, if any

_Table = dict[tuple[int, str, str], "asyncio.Future[object]"]
_in_flight: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Table] = weakref.WeakKeyDictionary()


class Once(Generic[V]):
    """Make the values of keys in `store`'s `scope` once: `make` makes and stores a list of
    keys' values; `look` reads stored ones. `leased`: coordinate with other processes.

    Example:
        >>> from kura_magic.storage.base import MemoryStore
        >>> async def make(keys):
        ...     return {key: key.upper() for key in keys}
        >>> once = Once(MemoryStore(), "embeddings", make=make, look=lambda keys: {}, leased=False)
        >>> asyncio.run(once.values(["a", "b"]))
        {'a': 'A', 'b': 'B'}
    """

    def __init__(self, store: Store, scope: str, *, make: Make[V], look: Look[V], leased: bool) -> None:
        self.store, self.scope, self.make, self.look = store, scope, make, look
        self.leased = leased and store.kind not in PROCESS_LOCAL_STORES

    async def values(self, keys: Sequence[str]) -> dict[str, V]:
        """Every key's value: joined, waited for, or made here."""
        table = _in_flight.setdefault(asyncio.get_running_loop(), {})
        slots = {key: (id(self.store), self.scope, key) for key in keys}
        joined = {key: table[slot] for key, slot in slots.items() if slot in table}
        own = [key for key in keys if key not in joined]
        futures = {key: asyncio.get_running_loop().create_future() for key in own}
        table.update({slots[key]: future for key, future in futures.items()})
        try:
            made = await self._obtain(own)
        except BaseException as exc:
            for future in futures.values():
                future.set_exception(exc)
                future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            for key in own:
                del table[slots[key]]
        for key, future in futures.items():
            future.set_result(made[key])
        found = dict(made)
        for key, future in joined.items():
            found[key] = await asyncio.shield(future)  # type: ignore[arg-type]  # the table holds every V
        return found

    async def _obtain(self, keys: list[str]) -> dict[str, V]:
        """Make `keys` (holding their leases, if leased); wait for those another process holds."""
        if not keys:
            return {}
        if not self.leased:
            return dict(await self.make(keys))
        found: dict[str, V] = {}
        delay, waiting = LEASE_POLL_S, keys
        while waiting:
            token = uuid.uuid4().hex
            mine = self.store.claim_many(waiting, experiment=self.scope, token=token, ttl_s=LEASE_S)
            stored_meanwhile = self.look([key for key in waiting if key in mine]) if mine else {}
            if stored_meanwhile:  # an owner stored these and let go just before the claim
                self.store.release(dict.fromkeys(stored_meanwhile, token), experiment=self.scope)
                found.update(stored_meanwhile)
            to_make = [key for key in waiting if key in mine and key not in stored_meanwhile]
            if to_make:
                found.update(await self._make_holding(to_make, token))
            waiting = [key for key in waiting if key not in mine]
            if waiting:
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, LEASE_POLL_MAX_S)
                found.update(stored := self.look(waiting))
                waiting = [key for key in waiting if key not in stored]
        return found

    async def _make_holding(self, keys: list[str], token: str) -> Mapping[str, V]:
        """Make `keys` under their leases, renewed every LEASE_S / 3, let go at the end."""
        claims = dict.fromkeys(keys, token)
        loop = asyncio.get_running_loop()
        renewal: list[asyncio.TimerHandle] = []

        def renew() -> None:
            self.store.renew(claims, experiment=self.scope, ttl_s=LEASE_S)
            renewal[:] = [loop.call_later(LEASE_S / 3, renew)]

        renewal.append(loop.call_later(LEASE_S / 3, renew))
        try:
            return await self.make(keys)
        finally:
            renewal[0].cancel()
            self.store.release(claims, experiment=self.scope)
