"""`embed`: per-text cached embeddings, where only the misses are sent, in batches.

Each text has its own key (model, dimensions, sha256 of the text). Vectors are
kept as little-endian float32 bytes, never JSON lists or pickle, in a store of
their own (`<cache directory>/embeddings`, least-recently-used past
`KURA_MAGIC_EMBEDDING_SIZE_LIMIT`) that every experiment shares: an embedding
depends on the model and the text, nothing else. numpy is imported on first use.
"""

from __future__ import annotations

import asyncio
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from kura_magic import formatting, gateway
from kura_magic.background import run_sync
from kura_magic.cache import (
    CacheStrategy,
    CacheWarning,
    DiskCacheStrategy,
    MemoryCacheStrategy,
    NullCacheStrategy,
    open_once,
)
from kura_magic.config import Settings, settings
from kura_magic.errors import CacheError, CacheMissError, DataError, ResponseError
from kura_magic.keys import cache_key
from kura_magic.types import ExperimentInfo

if TYPE_CHECKING:
    import numpy

FLOAT32 = "<f4"  # little-endian float32, on disk and in memory
_SCOPE = "embeddings"  # the one "experiment" of the store's backend


def embedding_key(text: str, *, model: str, dimensions: int | None = None) -> str:
    """The cache key of one text's embedding.

    Example:
        >>> embedding_key("hi", model="openai/text-embedding-3-small").startswith("km1-embedding-")
        True
    """
    messages = [{"role": "input", "content": text}]
    params = {"dimensions": dimensions}
    return cache_key(kind="embedding", model=model, messages=messages, params=params)


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

    Example:
        >>> result = embed(["a", "b"], model="openai/text-embedding-3-small")  # doctest: +SKIP
        >>> result.to_numpy().shape, result.cached_count                      # doctest: +SKIP
        ((2, 1536), 0)
    """

    def __init__(
        self, items: Iterable[Embedding], *, model: str, dimensions: int | None,
        total_cost: float | None,
    ) -> None:
        self._items = tuple(items)
        self.model = model
        self.dimensions = dimensions
        self.total_cost = total_cost

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
            return numpy.empty((0, self.dimensions or 0), dtype=numpy.float32)
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


class EmbeddingStore:
    """Vectors as float32 bytes by key, over the byte layer of a `CacheStrategy`.

    An entry of the wrong length is read as a miss (with a `CacheWarning`) and dropped.

    Example:
        >>> store = EmbeddingStore(MemoryCacheStrategy())
        >>> store.put("k", [0.5, 1.0]).dtype
        dtype('float32')
        >>> store.get_many(["k", "other"], dimensions=2)["k"].tolist()
        [0.5, 1.0]
    """

    def __init__(self, backend: CacheStrategy) -> None:
        self.backend = backend

    def get_many(self, keys: Iterable[str], *, dimensions: int | None) -> dict[str, numpy.ndarray]:
        """The vectors stored for `keys` (absent keys are left out)."""
        import numpy

        found = {key: data for key in keys if (data := self.backend.read_bytes(key, _SCOPE))}
        size = _expected_size(found.values(), dimensions)
        for key in [key for key, data in found.items() if len(data) != size]:
            warnings.warn(f"embedding {key} has {len(found[key])} bytes, not {size}; "
                          "treating it as a miss", CacheWarning, stacklevel=2)
            self.backend.delete(key, experiment=_SCOPE)
            del found[key]
        return {key: numpy.frombuffer(data, dtype=FLOAT32) for key, data in found.items()}

    def put(self, key: str, vector: Sequence[float] | numpy.ndarray) -> numpy.ndarray:
        """Store `vector` under `key`; returns it as the read-only array a hit would give."""
        import numpy

        data = numpy.asarray(vector, dtype=FLOAT32).tobytes()
        self.backend.write_bytes(key, _SCOPE, data)
        return numpy.frombuffer(data, dtype=FLOAT32)

    def info(self) -> ExperimentInfo:
        """Entries and bytes held (on disk: diskcache's volume, its own tables included)."""
        info = self.backend.info()
        return ExperimentInfo(entries=info.entries, bytes=info.bytes)

    def clear(self) -> int:
        """Forget every vector; returns how many there were."""
        return self.backend.clear()


def _expected_size(sizes: Iterable[bytes], dimensions: int | None) -> int:
    """Bytes per vector: 4 x dimensions, else the commonest size found (one model, one size)."""
    if dimensions is not None:
        return 4 * dimensions
    counts = Counter(len(data) for data in sizes if len(data) % 4 == 0)
    return counts.most_common(1)[0][0] if counts else 0


def open_embedding_store(config: Settings | None = None) -> EmbeddingStore:
    """The embedding store `config` selects ('off': stores nothing), opened once per process.

    Example:
        >>> open_embedding_store(Settings(cache="memory://")).info().entries
        0
    """
    config = config or settings()
    limit = config.embedding_size_limit
    if not config.caching_enabled:
        return EmbeddingStore(NullCacheStrategy())
    if config.cache.startswith("memory://"):
        slot = (f"{config.cache}#{_SCOPE}", limit)
        return EmbeddingStore(open_once(slot, lambda: MemoryCacheStrategy(size_limit=limit)))
    if "://" in config.cache:
        raise CacheError(f"KURA_MAGIC_CACHE={config.cache!r}: embeddings need a directory, "
                         "'memory://' or 'off'")
    directory = Path(config.cache) / _SCOPE
    return EmbeddingStore(
        open_once((str(directory), limit), lambda: DiskCacheStrategy(directory, size_limit=limit))
    )


def embedding_cache_info() -> ExperimentInfo:
    """Entries and bytes in the embedding store.

    Example:
        >>> embedding_cache_info()  # doctest: +SKIP
        ExperimentInfo(entries=15, bytes=126976)
    """
    return open_embedding_store().info()


def clear_embedding_cache() -> int:
    """Empty the embedding store; returns how many vectors it held.

    Example:
        >>> clear_embedding_cache()  # doctest: +SKIP
        15
    """
    return open_embedding_store().clear()


def embed(
    texts: Sequence[str], *, model: str, dimensions: int | None = None,
    api_key: str | None = None, api_base: str | None = None,
) -> Embeddings:
    """Embed `texts` through the cache; works inside a running event loop (a Jupyter cell).

    Example:
        >>> result = embed(["hi", "yo"], model="openai/text-embedding-3-small")  # doctest: +SKIP
        >>> [e.cached for e in result], result.total_cost  # doctest: +SKIP
        ([False, False], 4e-08)
    """
    return run_sync(
        aembed(texts, model=model, dimensions=dimensions, api_key=api_key, api_base=api_base)
    )


async def aembed(
    texts: Sequence[str], *, model: str, dimensions: int | None = None,
    api_key: str | None = None, api_base: str | None = None,
) -> Embeddings:
    """The awaitable `embed`. Only texts missing from the cache are sent, each once, in
    batches of `KURA_MAGIC_EMBEDDING_BATCH_SIZE`; a repeat inside one call counts as cached.

    Example:
        >>> result = await aembed(["hi"], model="openai/text-embedding-3-small")  # doctest: +SKIP
    """
    texts = _checked(texts, dimensions)
    config = settings()
    transport = config.transport(api_key=api_key, api_base=api_base)
    call = _EmbeddingCall(model, dimensions, config, transport)
    keys = {text: call.key(text) for text in dict.fromkeys(texts)}
    store = open_embedding_store(config)
    hits = store.get_many(keys.values(), dimensions=dimensions)
    missing = [text for text, key in keys.items() if key not in hits]
    vectors, cost = await _fetch(call, store, {text: keys[text] for text in missing})
    vectors.update(hits)
    return Embeddings(
        _in_order(texts, keys, vectors, fresh=set(missing)),
        model=model, dimensions=dimensions, total_cost=cost,
    )


def _checked(texts: Sequence[str], dimensions: int | None) -> list[str]:
    if dimensions is not None and (type(dimensions) is not int or dimensions < 1):
        raise DataError(f"dimensions={dimensions!r}: give a positive whole number, or None")
    if isinstance(texts, str):
        raise DataError("embed() takes a list of texts, not one string: wrap it as [text]")
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text:
            raise DataError(f"text {index} is {text!r}: every text must be a non-empty string")
    return texts


def _in_order(
    texts: list[str], keys: dict[str, str], vectors: dict[str, numpy.ndarray], *, fresh: set[str]
) -> Iterator[Embedding]:
    """One Embedding per input; the first use of a fetched text is fresh, repeats are cached."""
    for text in texts:
        yield Embedding(text, vectors[keys[text]], cached=text not in fresh)
        fresh.discard(text)


@dataclass(frozen=True)
class _EmbeddingCall:
    """What every batch of one `embed` call shares."""

    model: str
    dimensions: int | None
    config: Settings
    transport: dict[str, Any] = field(repr=False)  # holds the API key

    def key(self, text: str) -> str:
        return embedding_key(text, model=self.model, dimensions=self.dimensions)

    def request(self, batch: list[str]) -> dict[str, Any]:
        optional = {"dimensions": self.dimensions} if self.dimensions is not None else {}
        return {
            "model": self.model,
            "input": batch,
            "timeout": self.config.timeout_s,
            # Retries are gateway.with_retries'. (litellm's OpenAI embedding handler reads 0
            # as "its default", so the OpenAI SDK may also retry up to twice by itself.)
            "max_retries": 0,
            **optional,
            **self.transport,
        }


async def _fetch(
    call: _EmbeddingCall, store: EmbeddingStore, missing: dict[str, str]
) -> tuple[dict[str, numpy.ndarray], float | None]:
    """Send the `missing` texts (text -> key) in concurrent batches; (vectors by key, cost)."""
    if not missing:
        return {}, 0.0
    if call.config.offline:
        raise CacheMissError(
            f"offline mode: {len(missing)} texts are not in the embedding cache for "
            f"{call.model!r}; turn offline off (%kura offline off) to embed them"
        )
    gateway.check_ready(call.model, call.transport)
    texts, size = list(missing), call.config.embedding_batch_size
    batches = [texts[start : start + size] for start in range(0, len(texts), size)]
    tasks = [asyncio.ensure_future(_send(call, store, batch, missing)) for batch in batches]
    try:
        results = await asyncio.gather(*tasks)
    finally:
        for task in tasks:  # one batch failed: stop the others (finished ones are stored)
            task.cancel()
    vectors = {key: vector for batch_vectors, _ in results for key, vector in batch_vectors.items()}
    costs = [cost for _, cost in results]
    return vectors, None if None in costs else sum(costs)  # type: ignore[arg-type]


async def _send(
    call: _EmbeddingCall, store: EmbeddingStore, batch: list[str], keys: dict[str, str]
) -> tuple[dict[str, numpy.ndarray], float | None]:
    """One request under the global limit; its vectors are stored before it returns."""
    config = call.config
    async with gateway.limiter(config.max_concurrency):
        response = await gateway.with_retries(
            lambda: gateway.litellm().aembedding(**call.request(batch)),
            model=call.model, max_retries=config.max_retries, retry_base_s=config.retry_base_s,
        )
    if isinstance(response, gateway.Failure):
        raise ResponseError(
            f"{call.model} could not embed a batch of {len(batch)} texts "
            f"({response.error_type}): {response.message}",
            error_type=response.error_type, cached=False,
        )
    rows = _rows(response, call, len(batch))
    vectors = {keys[text]: store.put(keys[text], row) for text, row in zip(batch, rows)}
    return vectors, gateway.price(response)


def _rows(response: Any, call: _EmbeddingCall, expected: int) -> list[list[float]]:
    """The response's vectors in input order, checked for count and length."""
    rows = [item["embedding"] for item in sorted(response.data, key=lambda item: item["index"])]
    lengths = {len(row) for row in rows}
    wrong_size = call.dimensions is not None and lengths != {call.dimensions}
    if len(rows) != expected or len(lengths) != 1 or wrong_size:
        raise ResponseError(
            f"{call.model} returned {len(rows)} vectors of lengths {sorted(lengths)} for "
            f"{expected} texts (dimensions={call.dimensions}); nothing was cached",
            error_type="bad_response", cached=False,
        )
    return rows
