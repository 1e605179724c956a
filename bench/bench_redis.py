"""Benchmark: a fully cached `summarise` of 10,000 conversations, Redis store against disk store.

Each cache is filled once over the loopback LLM server, one with the disk store
(a temporary directory) and one with the Redis store (`KURA_MAGIC_CACHE=redis://...`
on a private redis-server, `kura_magic.testing.RedisServer`). Then fully cached
runs alternate between the two, the order swapped every round (A B, B A, ...), and
the medians are compared. Between configurations the environment variable is set
and every open store closed, so each run opens its store as a fresh process would.
Target: Redis <= 2.0x disk per item.

    python bench/bench_redis.py [--items 10000] [--rounds 5]

Needs redis-server (bash scripts/install_redis.sh); nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable
from functools import partial

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of prices

from bench_summarise import (  # noqa: E402 - the same workload and timings as the disk bench
    conversations,
    fill_cache,
    interleaved,
    time_summarise,
)

TARGET_RATIO = 2.0


def use_cache(location: str) -> None:
    """Point the cache at `location` with no store left open from the previous configuration."""
    from kura_magic import storage as store

    os.environ["KURA_MAGIC_CACHE"] = location
    store.close_all()


def cached_runs(data: list[dict], caches: dict[str, str]) -> dict[str, Callable[[], float]]:
    """A fully cached run's time, per configuration."""

    def run(location: str) -> float:
        use_cache(location)
        return time_summarise(data)

    return {name: partial(run, location) for name, location in caches.items()}


def report(times: dict[str, list[float]], items: int, *, store: str = "redis", target: float = TARGET_RATIO) -> None:
    """Median per-item times and the `store`/disk ratio against the target."""
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        spread = ", ".join(f"{t:.3f}" for t in times[name])
        print(f"cached summarise, {name}: {median:.3f} s median ({median / items * 1e6:.0f} us/item; "
              f"runs {spread} s)")
    ratio = medians[store] / medians["disk"]
    verdict = "OK" if ratio <= target else "OVER"
    print(f"ratio {store}/disk: {ratio:.2f}x (target <= {target}x) -> {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from kura_magic.testing import RedisServer

    data = conversations(args.items)
    directory = tempfile.mkdtemp(prefix="kura-bench-")
    try:
        with RedisServer() as redis:
            caches = {"disk": directory, "redis": redis.url}
            for name, location in caches.items():
                use_cache(location)
                fill = fill_cache(data)
                print(f"fresh run into the {name} cache: {fill:.1f} s ({args.items / fill:.0f} items/s)")
            report(interleaved(cached_runs(data, caches), args.rounds), args.items)
            use_cache(directory)  # close the Redis connections before the server goes
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
