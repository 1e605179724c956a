"""The embedding store: vectors as little-endian float32 bytes by key (never pickle), over
the byte layer of a `Store`. A vector depends on the model and the text only, so the store
holds one experiment. numpy is imported on first use."""

from __future__ import annotations

import warnings
from collections import Counter
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


SCOPE: StoreScope = "embeddings"  # the store's one experiment: a vector depends on model and text


class EmbeddingStore:
    """Vectors as float32 bytes by key, over the byte layer of a `Store`.

    An entry of the wrong length is read as a miss (with a `CacheWarning`) and dropped.

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

    def get_many(self, keys: Iterable[str], *, dimensions: int | None) -> dict[str, numpy.ndarray]:
        """The vectors stored for `keys` (absent keys are left out), read in one batch."""
        import numpy

        found = self.backend.read_many(list(keys), experiment=SCOPE)
        size = _expected_size(found.values(), dimensions)
        for key in [key for key, data in found.items() if len(data) != size]:
            warnings.warn(f"embedding {key} has {len(found[key])} bytes, not {size}; "
                          "treating it as a miss", CacheWarning, stacklevel=2)
            self.backend.delete(key, experiment=SCOPE)
            del found[key]
        return {key: numpy.frombuffer(data, dtype=FLOAT32) for key, data in found.items()}

    def put_many(self, vectors: Mapping[str, Sequence[float] | numpy.ndarray]) -> dict[str, numpy.ndarray]:
        """Store every vector by key in one batch; returns them as the read-only arrays a
        hit would give (a store that could not keep them warned, and they are returned)."""
        arrays = {key: float32_vector(vector) for key, vector in vectors.items()}
        self.backend.write_many({key: array.tobytes() for key, array in arrays.items()}, experiment=SCOPE)
        return arrays

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
    return EmbeddingStore(open_store(config or settings(), SCOPE))


def float32_vector(vector: Sequence[float] | numpy.ndarray) -> numpy.ndarray:
    """`vector` as the read-only little-endian float32 array a cache hit gives."""
    import numpy

    return numpy.frombuffer(numpy.asarray(vector, dtype=FLOAT32).tobytes(), dtype=FLOAT32)
