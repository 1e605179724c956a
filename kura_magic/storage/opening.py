"""The one factory that opens the store the settings select, once per process.

Apart from `base` so the store modules need not import the factory that builds them.
"""

from __future__ import annotations

import threading
from pathlib import Path

from kura_magic.config import Settings, mask_url
from kura_magic.errors import CacheError
from kura_magic.storage.base import MemoryStore, NullStore, Store, StoreScope
from kura_magic.storage.disk import DiskStore

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")  # a KURA_MAGIC_CACHE that selects Redis

_opened: dict[tuple[object, ...], Store] = {}
_opened_lock = threading.Lock()


def open_store(config: Settings, scope: StoreScope = "responses") -> Store:
    """The store `config` selects for `scope`, opened once per process and reused.

    Responses live in the cache location itself, embeddings and the run history beside
    them (subdirectories on disk), embeddings with a size limit of their own.

    Example:
        >>> open_store(Settings(cache="off")).kind
        'off'
        >>> open_store(Settings(cache="memory://"), "embeddings").kind
        'memory'
    """
    if not config.caching_enabled:
        return NullStore()
    limit = config.embedding_size_limit if scope == "embeddings" else config.cache_size_limit
    with _opened_lock:
        slot = (config.cache, scope, limit, config.redis_prefix, config.cache_ttl_s)
        if slot not in _opened:
            _opened[slot] = _make_store(config, scope, limit)
        return _opened[slot]


def _make_store(config: Settings, scope: StoreScope, limit: int) -> Store:
    # Redis is imported only when chosen.
    if config.cache.startswith("memory://"):
        return MemoryStore(size_limit=limit)
    if config.cache.startswith(REDIS_SCHEMES):
        from kura_magic.storage.redis import RedisStore

        return RedisStore(config.cache, prefix=config.redis_prefix, scope=scope, ttl_s=config.cache_ttl_s)
    if "://" in config.cache:
        raise CacheError(
            f"KURA_MAGIC_CACHE={mask_url(config.cache)!r}: give a directory, a redis:// URL, "
            "'memory://' or 'off'"
        )
    directory = Path(config.cache) / scope if scope != "responses" else Path(config.cache)
    return DiskStore(directory, size_limit=limit, tag_index=scope != "embeddings")


def close_all() -> None:
    """Close every store opened by `open_store` (tests call this between cases)."""
    with _opened_lock:
        for store in _opened.values():
            store.close()
        _opened.clear()
