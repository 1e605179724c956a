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

S3_SCHEME = "s3://"  # a KURA_MAGIC_CACHE that selects an object store
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
    ttl_s = None if scope in ("runs", "batches") else config.cache_ttl_s  # the history never expires
    with _opened_lock:
        slot = (config.cache, scope, limit, config.redis_prefix, ttl_s, config.s3_endpoint)
        if slot not in _opened:
            _opened[slot] = _make_store(config, scope, limit, ttl_s)
        return _opened[slot]


def _make_store(config: Settings, scope: StoreScope, limit: int, ttl_s: float | None) -> Store:
    # Redis and S3 are imported only when chosen.
    if config.cache.startswith("memory://"):
        return MemoryStore(size_limit=limit)
    if config.cache.startswith(REDIS_SCHEMES):
        from kura_magic.storage.redis import RedisStore

        return RedisStore(config.cache, prefix=config.redis_prefix, scope=scope, ttl_s=ttl_s)
    if config.cache.startswith(S3_SCHEME):
        from kura_magic.storage.s3 import S3Store

        return S3Store(config.cache, scope=scope, ttl_s=ttl_s, endpoint=config.s3_endpoint)
    if "://" in config.cache:
        raise CacheError(
            f"KURA_MAGIC_CACHE={mask_url(config.cache)!r}: give a directory, a redis:// URL, "
            "an s3://bucket/prefix URL, 'memory://' or 'off'"
        )
    directory = Path(config.cache) / scope if scope != "responses" else Path(config.cache)
    return DiskStore(directory, size_limit=limit, tag_index=scope != "embeddings", ttl_s=ttl_s)


def close_all() -> None:
    """Close every store opened by `open_store` (tests call this between cases)."""
    with _opened_lock:
        for store in _opened.values():
            store.close()
        _opened.clear()
