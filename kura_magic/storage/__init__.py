"""Where answers, vectors and run records are kept: bytes by key, scoped by experiment.

`base` (the `Store` of bytes, with leases; in memory, off), `disk` (diskcache), `redis`,
`opening` (`open_store`, the one factory), and the three clients that give the bytes a
meaning: `responses` (`CacheEntry`), `vectors` (float32 embeddings), `runlog` (run records).
Redis is imported only when a store uses it: `kura_magic.storage.redis.RedisStore`.

Example:
    >>> from kura_magic import storage
    >>> storage.open_store(storage.Settings(cache="memory://")).kind
    'memory'
"""

from kura_magic.config import Settings
from kura_magic.storage.base import MemoryStore, NullStore, Pruned, Store, StoreScope
from kura_magic.storage.disk import DiskStore
from kura_magic.storage.opening import close_all, open_store
from kura_magic.storage.responses import ResponseStore
from kura_magic.storage.vectors import EmbeddingStore

__all__ = [
    "DiskStore", "EmbeddingStore", "MemoryStore", "NullStore", "Pruned", "ResponseStore", "Settings", "Store", "StoreScope",
    "close_all", "open_store",
]
