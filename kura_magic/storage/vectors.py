"""The embedding store: vectors as little-endian float32 bytes behind a header that gives
their length, by key (never pickle), over the byte layer of a `Store`. A vector depends on
the model and the text only, so the store holds one experiment. numpy is imported on first use."""

from __future__ import annotations

import struct
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from kura_magic.config import Settings, settings
from kura_magic.errors import CacheWarning
from kura_magic.storage.base import Store, StoreScope
from kura_magic.storage.opening import open_store
from kura_magic.types import ExperimentInfo

if TYPE_CHECKING:
    import numpy

FLOAT32 = "<f4"  # little-endian float32, on disk and in memory
# A stored vector: this header (a tag and the vector's length) then its float32 values, so a
# damaged entry is told by its own length, never guessed from the entries beside it.
_HEADER = struct.Struct("<4sI")
_TAG = b"kmv1"


SCOPE: StoreScope = "embeddings"  # the store's one experiment: a vector depends on model and text


class EmbeddingStore:
    """Vectors as float32 bytes by key, over the byte layer of a `Store`.

    An entry whose length cannot be right (damaged, cut short, or not the `dimensions`
    asked for) is read as a miss, with one `CacheWarning` per read, and dropped.

    Example:
        >>> from kura_magic.storage.base import MemoryStore
        >>> store = EmbeddingStore(MemoryStore())
        >>> store.put_many({"k": [0.5, 1.0]})["k"].dtype
        dtype('float32')
        >>> store.get_many(["k", "other"], dimensions=2)["k"].tolist()
        [0.5, 1.0]
    """

    def __init__(self, backend: Store) -> None:
        self.backend = backend

    def get_many(self, keys: Iterable[str], *, dimensions: int | None, use: bool = True) -> dict[str, numpy.ndarray]:
        """The vectors stored for `keys` (absent keys are left out), read in one batch.
        `use=False`: a plain read that does not count as a use (no write lock on disk), for
        looking again at keys that were misses moments ago."""
        read = self.backend.read_many if use else self.backend.peek_many
        found = read(list(keys), experiment=SCOPE)
        vectors = {key: vector_from_bytes(data, dimensions) for key, data in found.items()}
        damaged = [key for key, vector in vectors.items() if vector is None]
        if damaged:
            warnings.warn(f"{len(damaged)} cached embeddings had the wrong length (first: {damaged[0]}, "
                          f"{len(found[damaged[0]])} bytes); fetching them again", CacheWarning, stacklevel=2)
            for key in damaged:
                self.backend.delete(key, experiment=SCOPE)
        return {key: vector for key, vector in vectors.items() if vector is not None}

    def put_many(self, vectors: Mapping[str, Sequence[float] | numpy.ndarray]) -> dict[str, numpy.ndarray]:
        """Store every vector by key in one batch; returns them as the read-only arrays a
        hit would give (a store that could not keep them warned, and they are returned)."""
        arrays = {key: float32_vector(vector) for key, vector in vectors.items()}
        self.backend.write_many({key: vector_bytes(array) for key, array in arrays.items()}, experiment=SCOPE)
        return arrays

    def info(self) -> ExperimentInfo:
        """Entries and bytes held (on disk: diskcache's volume, its own tables included)."""
        info = self.backend.info()
        return ExperimentInfo(entries=info.entries, bytes=info.bytes)

    def clear(self) -> int:
        """Forget every vector; returns how many there were."""
        return self.backend.clear()


def vector_bytes(vector: numpy.ndarray) -> bytes:
    """A float32 vector as it is stored: the header, then its values.

    Example:
        >>> import numpy
        >>> len(vector_bytes(numpy.zeros(3, dtype=FLOAT32)))
        20
    """
    return _HEADER.pack(_TAG, len(vector)) + vector.tobytes()


def vector_from_bytes(data: bytes, dimensions: int | None) -> numpy.ndarray | None:
    """The stored vector, or None if `data` is not a whole vector (of `dimensions`, if given).

    Example:
        >>> import numpy
        >>> data = vector_bytes(numpy.ones(3, dtype=FLOAT32))
        >>> vector_from_bytes(data, None).tolist(), vector_from_bytes(data, 4), vector_from_bytes(data[:-1], None)
        ([1.0, 1.0, 1.0], None, None)
    """
    import numpy

    if len(data) <= _HEADER.size:
        return None
    tag, length = _HEADER.unpack_from(data)
    whole = tag == _TAG and len(data) == _HEADER.size + 4 * length
    if not whole or (dimensions is not None and length != dimensions):
        return None
    return numpy.frombuffer(data, dtype=FLOAT32, offset=_HEADER.size)


def open_embedding_store(config: Settings | None = None) -> EmbeddingStore:
    """The embedding store `config` selects ('off': stores nothing), opened once per process.

    Example:
        >>> open_embedding_store(Settings(cache="memory://")).info().entries
        0
    """
    return EmbeddingStore(open_store(config or settings(), SCOPE))


def float32_vector(vector: Sequence[float] | numpy.ndarray) -> numpy.ndarray:
    """`vector` as the read-only little-endian float32 array a cache hit gives."""
    import numpy

    return numpy.frombuffer(numpy.asarray(vector, dtype=FLOAT32).tobytes(), dtype=FLOAT32)
