"""`embed`: per-text cached embeddings, where only the misses are sent, in batches.

Each text has its own key (model, dimensions, sha256 of the text). Vectors are
kept as little-endian float32 bytes behind a header that gives their length, never JSON
lists or pickle, in a store of their own (`storage.vectors`: `<cache directory>/embeddings`, least-recently-used past
`KURA_MAGIC_EMBEDDING_SIZE_LIMIT`) that every experiment shares: an embedding
depends on the model and the text, nothing else. numpy is imported on first use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, overload

from kura_magic import formatting
from kura_magic.background import blocking
from kura_magic.calls import gateway
from kura_magic.calls.calls import check_cache_mode
from kura_magic.calls.once import Once
from kura_magic.config import Settings, settings
from kura_magic.errors import BatchError, BatchPendingError, DataError
from kura_magic.keys import KeyRecipe
from kura_magic.run import batch_mode
from kura_magic.storage.vectors import SCOPE, EmbeddingStore, float32_vector, open_embedding_store
from kura_magic.types import CacheMode, ExperimentInfo, lone_surrogate

if TYPE_CHECKING:
    import numpy


def embedding_key(text: str, *, model: str, dimensions: int | None = None) -> str:
    """The cache key of one text's embedding.

    Example:
        >>> embedding_key("hi", model="openai/text-embedding-3-small").startswith("km2-embedding-")
        True
    """
    return _recipe(model, dimensions).key([{"role": "input", "content": text}])


@lru_cache(maxsize=64, typed=True)  # typed: 8 and 8.0 are different keys
def _recipe(model: str, dimensions: int | None) -> KeyRecipe:
    return KeyRecipe.of(kind="embedding", model=model, params={"dimensions": dimensions})


@dataclass(frozen=True, eq=False)
class Embedding:
    """One text's vector: a read-only 1-D numpy float32 array; `cached` if no request made it."""

    text: str
    vector: numpy.ndarray = field(repr=False)
    cached: bool


class Embeddings(Sequence[Embedding]):
    """The embeddings of one `embed` call, in input order.

    `total_cost` is what the fresh requests cost (0.0 when all were cached), or
    None when litellm knows no price for the model: unknown, not free.
    `dimensions` is the vectors' length; `requested_dimensions` what was asked for.

    Example:
        >>> result = embed(["a", "b"], model="openai/text-embedding-3-small", dimensions=256)
        >>> result.to_numpy().shape, result.dimensions, result.cached_count
        ((2, 256), 256, 0)
    """

    def __init__(
        self, items: Iterable[Embedding], *, model: str, dimensions: int | None,
        total_cost: float | None,
    ) -> None:
        self._items = tuple(items)
        self.model = model
        self.requested_dimensions = dimensions
        self.total_cost = total_cost

    @property
    def dimensions(self) -> int | None:
        """The length of each vector (the requested size when there are none)."""
        return len(self._items[0].vector) if self._items else self.requested_dimensions

    @property
    def cached_count(self) -> int:
        return sum(item.cached for item in self._items)

    @property
    def fresh_count(self) -> int:
        return len(self._items) - self.cached_count

    def to_numpy(self) -> numpy.ndarray:
        """The vectors as one (n, d) float32 array."""
        import numpy

        if not self._items:
            return numpy.empty((0, self.requested_dimensions or 0), dtype=numpy.float32)
        return numpy.stack([item.vector for item in self._items])

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> Embedding: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Embedding, ...]: ...

    def __getitem__(self, index: int | slice) -> Embedding | tuple[Embedding, ...]:
        return self._items[index]

    def __iter__(self) -> Iterator[Embedding]:
        return iter(self._items)

    def __repr__(self) -> str:
        return (
            f"<Embeddings {self.model}: {len(self)} texts, {self.cached_count} cached, "
            f"{self.fresh_count} fresh, cost {formatting.money(self.total_cost)}>"
        )


def embedding_cache_info() -> ExperimentInfo:
    """Entries and bytes in the embedding store.

    Example:
        >>> _ = embed(["hi", "yo"], model="openai/text-embedding-3-small", dimensions=8)
        >>> embedding_cache_info().entries
        2
    """
    return open_embedding_store().info()


def clear_embedding_cache() -> int:
    """Empty the embedding store; returns how many vectors it held.

    Example:
        >>> _ = embed(["hi", "yo"], model="openai/text-embedding-3-small", dimensions=8)
        >>> clear_embedding_cache(), embedding_cache_info().entries
        (2, 0)
    """
    return open_embedding_store().clear()


async def aembed(
    texts: Sequence[str],
    *,
    model: str,
    dimensions: int | None = None,
    cache_mode: CacheMode = "read_write",
    api_key: str | None = None,
    api_base: str | None = None,
    batch: bool = False,
) -> Embeddings:
    """Embed `texts` through the cache; `embed` is the same, blocking (it works inside a
    running event loop, e.g. a Jupyter cell). Only texts missing from the cache are sent,
    each once, in batches of `KURA_MAGIC_EMBEDDING_BATCH_SIZE`; a repeat inside one call
    counts as cached. `cache_mode` is as for `summarise` (read_write, read_only, refresh, off).
    `batch=True` sends the misses as a provider batch at the batch price (`run.batch_mode`):
    while it is out, a `BatchPendingError` says so; calling again collects it.

    Example:
        >>> result = embed(["hi", "yo", "hi"], model="openai/text-embedding-3-small")
        >>> [e.cached for e in result], result.total_cost is not None
        ([False, False, True], True)
        >>> embed(["yo"], model="openai/text-embedding-3-small").cached_count
        1
    """
    texts = _checked(texts, dimensions, cache_mode)
    config = settings()
    calls = _Batches(model, dimensions, config, config.transport(model, api_key=api_key, api_base=api_base))
    keys = {text: calls.key(text) for text in dict.fromkeys(texts)}
    store = open_embedding_store(config)
    reads, writes = cache_mode in ("read_write", "read_only"), cache_mode in ("read_write", "refresh")
    hits = store.get_many(keys.values(), dimensions=dimensions) if reads else {}
    missing = {text: key for text, key in keys.items() if key not in hits}
    fetched = await (_from_provider_batches(calls, missing, cache_mode) if batch else
                     calls.fetch(missing, store, writes=writes, leased=cache_mode == "read_write"))
    made = {text for text, key in missing.items() if key in fetched.made}
    return Embeddings(
        _in_order(texts, keys, {**hits, **fetched.vectors}, fresh=made),
        model=model, dimensions=dimensions, total_cost=fetched.cost,
    )


embed = blocking(aembed)


async def _from_provider_batches(calls: _Batches, missing: dict[str, str], cache_mode: CacheMode) -> _Fetched:
    """The `missing` texts' vectors (text -> key) through provider batches; a
    `BatchPendingError` while some are still out."""
    if not missing:
        return _Fetched()
    if cache_mode != "read_write":
        raise BatchError(f"batch mode stores what its batches bring back: it needs cache_mode 'read_write', "
                         f"not {cache_mode!r}")
    settled = await batch_mode.settle_embeddings({key: text for text, key in missing.items()}, model=calls.model,
                                                 dimensions=calls.dimensions, transport=calls.transport,
                                                 config=calls.config)
    pending = [settled.pending[key] for key in missing.values() if key in settled.pending]
    if pending:
        raise BatchPendingError(f"{len(pending)} of {len(missing)} texts are in a provider batch ({pending[0]}); "
                                "nothing is lost: call embed again, or km.batches(), to collect them")
    return _Fetched({**settled.found, **settled.vectors}, made=set(settled.vectors), cost=settled.cost)


def _checked(texts: Sequence[str], dimensions: int | None, cache_mode: CacheMode) -> list[str]:
    if dimensions is not None and (type(dimensions) is not int or dimensions < 1):
        raise DataError(f"dimensions={dimensions!r}: give a positive whole number, or None")
    check_cache_mode(cache_mode)
    if isinstance(texts, str):
        raise DataError("embed() takes a list of texts, not one string: wrap it as [text]")
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text:
            raise DataError(f"text {index} is {text!r}: every text must be a non-empty string")
        problem = lone_surrogate(text)
        if problem is not None:
            raise DataError(f"text {index} {problem}")
    return texts


def _in_order(
    texts: list[str], keys: dict[str, str], vectors: dict[str, numpy.ndarray], *, fresh: set[str]
) -> Iterator[Embedding]:
    """One Embedding per input; the first use of a fetched text is fresh, repeats are cached."""
    for text in texts:
        yield Embedding(text, vectors[keys[text]], cached=text not in fresh)
        fresh.discard(text)


@dataclass
class _Fetched:
    """What fetching the misses of one `embed` gave: every vector, the keys this call made
    (the others it joined or waited for), and what the made ones cost (None: unknown)."""

    vectors: dict[str, numpy.ndarray] = field(default_factory=dict)
    made: set[str] = field(default_factory=set)
    cost: float | None = 0.0


@dataclass(frozen=True)
class _Batches:
    """What every batch of one `embed` call shares, and sending them."""

    model: str
    dimensions: int | None
    config: Settings
    transport: dict[str, Any] = field(repr=False)  # holds the API key

    def key(self, text: str) -> str:
        return embedding_key(text, model=self.model, dimensions=self.dimensions)

    async def fetch(self, missing: dict[str, str], store: EmbeddingStore, *, writes: bool,
                    leased: bool) -> _Fetched:
        """The vectors of the `missing` texts (text -> key), each made once: a text another
        `embed` in this process is fetching is joined, one another process holds the lease
        of is waited for (`leased`), the rest are sent in concurrent batches and stored if
        `writes`. One failed batch cancels the others; the finished ones are already stored.
        """
        fetched = _Fetched()
        if not missing:
            return fetched
        await gateway.load(while_loading=lambda: None)  # litellm imported off the loop
        gateway.check_may_call(
            self.config, self.model, self.transport,
            missing=f"{len(missing)} texts are not in the embedding cache for {self.model!r}",
        )
        texts = {key: text for text, key in missing.items()}

        async def make(keys: list[str]) -> dict[str, numpy.ndarray]:
            return await self._send_all([texts[key] for key in keys], missing, store if writes else None, fetched)

        once = Once(store.backend, SCOPE, make=make, leased=leased,
                    look=lambda keys: store.get_many(keys, dimensions=self.dimensions, use=False))
        fetched.vectors = await once.values(list(texts))
        return fetched

    async def _send_all(self, texts: list[str], keys: dict[str, str], store: EmbeddingStore | None,
                        fetched: _Fetched) -> dict[str, numpy.ndarray]:
        """Send `texts` in concurrent batches of `embedding_batch_size`; their vectors by key."""
        size = self.config.embedding_batch_size
        batches = [texts[start : start + size] for start in range(0, len(texts), size)]
        tasks = [asyncio.ensure_future(self._send(batch, keys, store)) for batch in batches]
        try:
            results = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        vectors = {key: vector for found, _ in results for key, vector in found.items()}
        for _, cost in results:
            fetched.cost = None if fetched.cost is None or cost is None else fetched.cost + cost
        fetched.made.update(vectors)
        return vectors

    async def _send(
        self, batch: list[str], keys: dict[str, str], store: EmbeddingStore | None
    ) -> tuple[dict[str, numpy.ndarray], float | None]:
        """One request under the global limit; its vectors are stored, in one write, before
        it returns (unless `store` is None: modes that do not write)."""
        async with gateway.limiter(self.config.max_concurrency):
            rows, cost = await gateway.embed_texts(
                self.model, batch, dimensions=self.dimensions, transport=self.transport,
                config=self.config,
            )
        vectors = {keys[text]: row for text, row in zip(batch, rows)}
        if store is None:
            return {key: float32_vector(row) for key, row in vectors.items()}, cost
        return store.put_many(vectors), cost
