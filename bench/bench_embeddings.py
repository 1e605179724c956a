"""Benchmark: `embed`, cached against a floor and fresh against litellm, in this process.

Cached: 10,000 cached texts through `embed` against the least a per-text disk cache can
do (a sha256 key, one diskcache get of the vector's bytes with the same eviction policy,
numpy.frombuffer). Target: within 2x of it per text.

Fresh: 10,000 new texts in batches of 100 to a loopback server (in another process) that
answers after 50 ms, at most `KURA_MAGIC_MAX_CONCURRENCY` (default 20) at once, through
three clients, each with texts it has never seen, rounds alternating (A B C, C B A, ...):

- litellm: `litellm.aembedding` alone under a semaphore;
- floor: the same, plus the least a per-text disk cache must do: look each text up in a
  bare diskcache (sha256 key, the same eviction policy as ours) and store each batch's
  vectors as float32 bytes, one transaction per batch;
- ours: `embed`.

Target: ours <= 1.2x the floor. (Ours against litellm alone is printed too: the floor's
own share is what storing 10,000 vectors in SQLite costs on this machine.)

Run: python bench/bench_embeddings.py [--texts 10000] [--dims 256] [--repeats 3]
         [--fresh-rounds 5] [--latency 0.05] [--batch 100] [--fresh-dims 16]
Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_summarise import interleaved, spread

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of prices

MODEL = "openai/text-embedding-3-small"
TARGET_RATIO = 2.0
TARGET_FRESH = 1.2


def timed(run: Callable[[], object]) -> Callable[[], float]:
    """`run`, made to return how long it took."""

    def one() -> float:
        started = time.perf_counter()
        run()
        return time.perf_counter() - started

    return one


def floor_cache(directory: Path, texts: list[str], vectors: list[bytes], dims: int):
    """A bare diskcache keyed `{model}:{dims}:{sha256(text)}`, holding the same bytes."""
    cache = bare_store(directory)
    for text, data in zip(texts, vectors):
        cache.set(floor_key(text, dims), data)
    return cache


def floor_key(text: str, dims: int) -> str:
    return f"{MODEL}:{dims}:{hashlib.sha256(text.encode('utf-8')).hexdigest()}"


def bare_store(directory: Path):
    """A bare diskcache with our eviction policy, JSON-or-bytes only: the floors' cache."""
    import diskcache

    from kura_magic.storage.disk import _JSONOnlyDisk

    return diskcache.Cache(str(directory), disk=_JSONOnlyDisk, eviction_policy="least-recently-used")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=10_000)
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fresh-rounds", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--fresh-dims", type=int, default=16,
                        help="vector size of the fresh part: small, so that JSON parsing of long "
                             "vectors does not hide the client's own work")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kura_bench_") as tmp:
        os.environ["KURA_MAGIC_CACHE"] = str(Path(tmp) / "cache")
        os.environ["KURA_MAGIC_EMBEDDING_BATCH_SIZE"] = str(args.batch)
        run(args.texts, args.dims, args.repeats, Path(tmp))
        fresh(args.texts, args.fresh_dims, args.fresh_rounds, args.latency, args.batch, Path(tmp))


def fresh(n: int, dims: int, rounds: int, latency_s: float, batch: int, tmp: Path) -> None:
    """Fresh texts through `embed`, against litellm.aembedding alone and with a bare
    per-text disk cache (the floor), interleaved."""
    import asyncio

    import numpy

    import kura_magic
    from bench_fresh import API_KEY, server_process, under_semaphore
    from kura_magic.calls.gateway import litellm

    lib, limit = litellm(), kura_magic.config.settings().max_concurrency  # imported before any timing
    bare = bare_store(tmp / "fresh-floor")

    async def litellm_alone(api_base: str, texts: list[str], store: bool) -> None:
        keys = {text: floor_key(text, dims) for text in texts} if store else {}
        misses = [text for text, key in keys.items() if bare.get(key) is None] if store else texts

        async def send(inputs: list[str]) -> None:
            response = await lib.aembedding(model=MODEL, input=inputs, dimensions=dims, api_base=api_base,
                                            api_key=API_KEY, timeout=600, max_retries=0)
            vectors = [item["embedding"] for item in response.data]
            if store:
                with bare.transact():
                    for text, vector in zip(inputs, vectors):
                        bare.set(keys[text], numpy.asarray(vector, dtype="<f4").tobytes())

        batches = [misses[i : i + batch] for i in range(0, n, batch)]
        await under_semaphore(limit, [lambda b=b: send(b) for b in batches])

    def ours(api_base: str, texts: list[str]) -> None:
        result = kura_magic.embed(texts, model=MODEL, dimensions=dims, api_base=api_base, api_key=API_KEY)
        if result.fresh_count != n:
            raise SystemExit(f"expected {n} fresh texts, got {result!r}")

    with server_process(latency_s) as api_base:
        counter = iter(range(10**9))

        def new_texts() -> list[str]:  # never seen before: every text is a miss
            return [f"round {next(counter)} text {i}: where is order {i * 7}" for i in range(n)]

        times = interleaved({
            "ours": timed(lambda: ours(api_base, new_texts())),
            "floor": timed(lambda: asyncio.run(litellm_alone(api_base, new_texts(), store=True))),
            "litellm": timed(lambda: asyncio.run(litellm_alone(api_base, new_texts(), store=False))),
        }, rounds)
    bare.close()
    report_fresh(times, n, batch, limit, latency_s)


def report_fresh(times: dict[str, list[float]], n: int, batch: int, limit: int, latency_s: float) -> None:
    ideal = -(-n // batch) / limit * latency_s
    print(f"\n{n} fresh texts, batches of {batch}, {limit} at once, latency {latency_s * 1000:.0f} ms "
          f"(ideal: batches / concurrency x latency = {ideal:.2f} s)")
    for name, values in times.items():
        print(f"  {name:8} {spread(values)}  ({statistics.median(values) / ideal:.1f}x ideal)")
    ratios = {anchor: [o / a for o, a in zip(times["ours"], times[anchor])] for anchor in ("floor", "litellm")}
    verdict = "OK" if statistics.median(ratios["floor"]) <= TARGET_FRESH else "OVER"
    print(f"  ours / floor:   {spread(ratios['floor'], unit='x')} (target <= {TARGET_FRESH}x) -> {verdict}")
    print(f"  ours / litellm: {spread(ratios['litellm'], unit='x')} "
          f"(the floor / litellm: {spread([f / a for f, a in zip(times['floor'], times['litellm'])], unit='x')})")


def run(n: int, dims: int, repeats: int, tmp: Path) -> None:
    import numpy

    from kura_magic import storage as store
    from kura_magic.run.embeddings import embed
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

    times = interleaved({"embed": timed(lambda: embed(texts, model=MODEL, dimensions=dims)),
                         "floor": timed(floor_pass)}, repeats)
    ratios = [ours / floor for ours, floor in zip(times["embed"], times["floor"])]
    verdict = "meets" if statistics.median(ratios) <= TARGET_RATIO else "misses"
    print(f"cached embed: {spread(times['embed'], 1e6 / n, 'µs/text')} over {repeats} rounds")
    print(f"floor:        {spread(times['floor'], 1e6 / n, 'µs/text')} "
          "(sha256 key + diskcache get + numpy.frombuffer)")
    print(f"ratio:        {spread(ratios, unit='x')} ({verdict} the {TARGET_RATIO:.0f}x target)")
    floor.close()
    store.close_all()


if __name__ == "__main__":
    sys.exit(main())
