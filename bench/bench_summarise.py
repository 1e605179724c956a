"""Benchmark: a fully cached `summarise` of 10,000 (or 100,000) conversations against a floor.

The floor is the least any cache must do per item, measured in the same process
on the same cache directory: sha256 of the item's messages, one diskcache get,
one pydantic validation of the stored JSON. Two floors: the least-recently-used one (a get
that writes the access time, as diskcache's LRU eviction does on every hit) and the no-write
one (a get that writes nothing). Rounds alternate summarise and the floors (A B C, C B A,
...); medians and min-max are printed. Targets: summarise <= 1.0x the LRU floor and
<= 1.5x the no-write floor (a re-run of entries used within a day writes nothing).

    python bench/bench_summarise.py [--items 10000] [--rounds 5] [--cache DIR] [--direct-fill]

`--direct-fill` fills the cache without calling the loopback server: the same keys, with
the loopback's replies, written with `set_many` (seconds for 100,000 items, not minutes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

TARGETS = {"floor, LRU get": 1.0, "floor, no-write get": 1.5}
PROMPT = "Summarise this support conversation in one line:\n{{ transcript }}"


def conversations(n: int, start: int = 0) -> list[dict]:
    """Conversations `start` to `n` (exclusive) of the bench's endless supply."""
    return [
        {
            "chat_id": f"chat-{i}",
            "messages": [
                {"role": "user", "content": f"My order {i} has not arrived, can you check it?"},
                {"role": "assistant", "content": f"Order {i} ships tomorrow; sorry for the wait."},
            ],
        }
        for i in range(start, n)
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


def fill_directly(data: list[dict]) -> float:
    """The entries a fresh run would store, written straight into the store."""
    import kura_magic
    from kura_magic.calls.calls import CallSetup
    from kura_magic.inputs.templates import PromptTemplate
    from kura_magic.testing import reply_for
    from kura_magic.types import CacheEntry, Usage

    started = time.perf_counter()
    setup = CallSetup.create({"model": "openai/gpt-4o-mini"})
    template = PromptTemplate.compile(PROMPT, None)
    requests = [setup.request(template.render(c)) for c in kura_magic.load_conversations(data)]
    entries = {
        request.key: CacheEntry(
            model=request.model, response=reply_for(list(request.messages)),
            usage=Usage(prompt_tokens=60, completion_tokens=14), cost=0.0000174, latency_s=0.8,
        )
        for request in requests
    }
    stored = setup.context.responses.set_many(entries, experiment=setup.context.experiment)
    if stored != len(data):
        raise SystemExit(f"fill failed: {stored} of {len(data)} entries stored")
    return time.perf_counter() - started


def time_summarise(data: list[dict]) -> float:
    import kura_magic

    started = time.perf_counter()
    run = kura_magic.summarise(data, PROMPT, model="openai/gpt-4o-mini")
    elapsed = time.perf_counter() - started
    if run.stats.cached != len(data):
        raise SystemExit(f"expected a fully cached run, got {run.stats.summary_line()}")
    return elapsed


def time_floor(data: list[dict], directory: str, keys: list[str], *, writes: bool) -> float:
    import diskcache

    from kura_magic.types import CacheEntry

    store = diskcache.Cache(directory)  # with the store's own setting: least-recently-used
    if not writes:
        store.reset("eviction_policy", "none", update=False)  # this instance: a get writes nothing
    started = time.perf_counter()
    for row, key in zip(data, keys):
        hashlib.sha256(json.dumps(row["messages"], sort_keys=True).encode()).hexdigest()
        CacheEntry.model_validate_json(store.get(f"default::{key}"))
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed


def interleaved(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each run's times, alternating A B / B A so that drift hits both alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(rounds):
        for name in list(runs) if round_ % 2 == 0 else reversed(list(runs)):
            times[name].append(runs[name]())
    return times


def spread(values: list[float], scale: float = 1.0, unit: str = "s") -> str:
    """Median and (min-max) of `values`, scaled."""
    scaled = [v * scale for v in values]
    return f"{statistics.median(scaled):.3f} {unit} ({min(scaled):.3f}-{max(scaled):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cache", help="a cache directory an earlier run filled (no fresh run)")
    parser.add_argument("--direct-fill", action="store_true",
                        help="fill the cache with set_many instead of calls to the loopback server")
    args = parser.parse_args()
    items = args.items
    directory = args.cache or tempfile.mkdtemp(prefix="kura-bench-")
    os.environ["KURA_MAGIC_CACHE"] = directory
    data = conversations(items)

    print(f"import kura_magic: {import_time() * 1000:.0f} ms")
    if args.cache is None and args.direct_fill:
        fill = fill_directly(data)
        print(f"filled directly with set_many: {fill:.1f} s ({items / fill:.0f} items/s)")
    elif args.cache is None:
        fill = fill_cache(data)
        print(f"fresh run over the loopback server: {fill:.1f} s ({items / fill:.0f} items/s)")

    import kura_magic

    keys = [r.key for r in kura_magic.summarise(data, PROMPT, model="openai/gpt-4o-mini")]
    times = interleaved({
        "summarise": lambda: time_summarise(data),
        "floor, LRU get": lambda: time_floor(data, directory, keys, writes=True),
        "floor, no-write get": lambda: time_floor(data, directory, keys, writes=False),
    }, args.rounds)
    for name, values in times.items():
        print(f"{name}: {spread(values)}, {spread(values, 1e6 / items, 'us/item')}")
    for floor, target in TARGETS.items():
        ratios = [ours / anchor for ours, anchor in zip(times["summarise"], times[floor])]
        ratio = statistics.median(ratios)
        print(f"summarise / {floor} (sha256 + get + pydantic validate): {spread(ratios, unit='x')} over "
              f"{args.rounds} rounds (target <= {target}x) -> {'OK' if ratio <= target else 'OVER'}")


if __name__ == "__main__":
    main()
