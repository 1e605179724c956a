"""Benchmark: 10,000 cached texts through `embed` against a floor measured in this process.

The floor is the least a per-text disk cache can do: a sha256 key, one
diskcache get of the vector's bytes (same eviction policy, so the same
access-time update) and numpy.frombuffer. Target: `embed` within 2x of it per text.

Run: python bench/bench_embeddings.py [--texts 10000] [--dims 256] [--repeats 3]
It uses a temporary cache directory and starts its own loopback server for the
first (fresh) pass; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of prices

MODEL = "openai/text-embedding-3-small"
TARGET_RATIO = 2.0


def best_per_text(run: Callable[[], object], n: int, repeats: int) -> float:
    """The fastest of `repeats` runs, in microseconds per text."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times) / n * 1e6


def floor_cache(directory: Path, texts: list[str], vectors: list[bytes], dims: int):
    """A bare diskcache keyed `{model}:{dims}:{sha256(text)}`, holding the same bytes."""
    import diskcache

    from kura_magic.disk_store import _JSONOnlyDisk

    cache = diskcache.Cache(
        str(directory), disk=_JSONOnlyDisk, eviction_policy="least-recently-used"
    )
    for text, data in zip(texts, vectors):
        cache.set(floor_key(text, dims), data)
    return cache


def floor_key(text: str, dims: int) -> str:
    return f"{MODEL}:{dims}:{hashlib.sha256(text.encode('utf-8')).hexdigest()}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=10_000)
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kura_bench_") as tmp:
        os.environ["KURA_MAGIC_CACHE"] = str(Path(tmp) / "cache")
        run(args.texts, args.dims, args.repeats, Path(tmp))


def run(n: int, dims: int, repeats: int, tmp: Path) -> None:
    import numpy

    from kura_magic import store
    from kura_magic.embeddings import embed
    from kura_magic.testing import LoopbackLLM

    texts = [f"summary {i}: the user asked where order {i * 7} is" for i in range(n)]
    with LoopbackLLM() as server:
        os.environ["OPENAI_API_BASE"], os.environ["OPENAI_API_KEY"] = server.url, "sk-bench-0000"
        started = time.perf_counter()
        fresh = embed(texts, model=MODEL, dimensions=dims)
        fresh_s = time.perf_counter() - started
        requests = len(server.embedding_requests)
    print(f"fresh pass: {fresh.fresh_count} fresh texts, {requests} requests, {fresh_s:.2f} s")

    if embed(texts, model=MODEL, dimensions=dims).cached_count != n:  # the server is gone
        raise SystemExit("the second pass was not served wholly from the cache")
    floor = floor_cache(tmp / "floor", texts, [item.vector.tobytes() for item in fresh], dims)

    def floor_pass() -> list[numpy.ndarray]:
        return [numpy.frombuffer(floor.get(floor_key(t, dims)), dtype="<f4") for t in texts]

    embed_us = best_per_text(lambda: embed(texts, model=MODEL, dimensions=dims), n, repeats)
    floor_us = best_per_text(floor_pass, n, repeats)
    ratio = embed_us / floor_us
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(f"cached embed: {embed_us:.1f} µs/text (best of {repeats})")
    print(f"floor:        {floor_us:.1f} µs/text (sha256 key + diskcache get + numpy.frombuffer)")
    print(f"ratio:        {ratio:.2f}x ({verdict} the {TARGET_RATIO:.0f}x target)")
    floor.close()
    store.close_all()


if __name__ == "__main__":
    sys.exit(main())
