"""Benchmark: a fully cached `summarise` of 10,000 conversations against a floor.

The floor is the least any cache must do per item, measured in the same process
on the same cache directory: sha256 of the item's messages, one diskcache get,
one pydantic validation of the stored JSON. Target: summarise <= 2.5x the floor.

    python bench/bench_summarise.py [--items 10000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

TARGET_RATIO = 2.5
PROMPT = "Summarise this support conversation in one line:\n{{ transcript }}"


def conversations(n: int) -> list[dict]:
    return [
        {
            "chat_id": f"chat-{i}",
            "messages": [
                {"role": "user", "content": f"My order {i} has not arrived, can you check it?"},
                {"role": "assistant", "content": f"Order {i} ships tomorrow; sorry for the wait."},
            ],
        }
        for i in range(n)
    ]


def import_time() -> float:
    code = "import time; t = time.perf_counter(); import kura_magic; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def fill_cache(data: list[dict]) -> float:
    import kura_magic
    from kura_magic.testing import LoopbackLLM

    with LoopbackLLM() as server:
        started = time.perf_counter()
        run = kura_magic.summarise(
            data, PROMPT, model="openai/gpt-4o-mini", api_base=server.url, api_key="sk-bench",
            max_concurrency=50,
        )
        elapsed = time.perf_counter() - started
    if run.stats.fresh != len(data):
        raise SystemExit(f"fill failed: {run.stats.summary_line()}")
    return elapsed


def time_summarise(data: list[dict]) -> float:
    import kura_magic

    started = time.perf_counter()
    run = kura_magic.summarise(data, PROMPT, model="openai/gpt-4o-mini")
    elapsed = time.perf_counter() - started
    if run.stats.cached != len(data):
        raise SystemExit(f"expected a fully cached run, got {run.stats.summary_line()}")
    return elapsed


def time_floor(data: list[dict], directory: str, keys: list[str]) -> float:
    import diskcache

    from kura_magic.types import CacheEntry

    store = diskcache.Cache(directory)
    started = time.perf_counter()
    for row, key in zip(data, keys):
        hashlib.sha256(json.dumps(row["messages"], sort_keys=True).encode()).hexdigest()
        CacheEntry.model_validate_json(store.get(f"default::{key}"))
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    items = parser.parse_args().items
    directory = tempfile.mkdtemp(prefix="kura-bench-")
    os.environ["KURA_MAGIC_CACHE"] = directory
    data = conversations(items)

    print(f"import kura_magic: {import_time() * 1000:.0f} ms")
    fill = fill_cache(data)
    print(f"fresh run over the loopback server: {fill:.1f} s ({items / fill:.0f} items/s)")

    import kura_magic

    keys = [r.key for r in kura_magic.summarise(data, PROMPT, model="openai/gpt-4o-mini")]
    ours = min(time_summarise(data) for _ in range(3))
    floor = min(time_floor(data, directory, keys) for _ in range(3))
    ratio = ours / floor
    print(f"cached summarise: {ours:.3f} s ({ours / items * 1e6:.0f} us/item)")
    print(f"floor (sha256 + diskcache get + pydantic validate): {floor:.3f} s "
          f"({floor / items * 1e6:.0f} us/item)")
    print(f"ratio: {ratio:.2f}x (target <= {TARGET_RATIO}x) -> {'OK' if ratio <= TARGET_RATIO else 'OVER'}")


if __name__ == "__main__":
    main()
