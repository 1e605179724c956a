"""Benchmark: export and import of an experiment of 20,000 entries, against one entry at a
time and against the floor.

Anchors, measured in the same run on the same disk store:
- one by one: what export and import did before they were batched (export as a key
  listing then one `get` per entry, import as one `set` per line);
- floor: the least diskcache can do for the same work, with no checks: export as one
  plain `get` per key (no access-time update) written out as a line; import as `json.loads`
  of each line and one bare `Cache.set` per entry, a transaction per 1,000.

Rounds alternate the clients (A B C, C B A, ...); each import goes into an emptied
experiment. Targets: export < 0.5 s; import <= 1.2x its floor (diskcache's own cost per
stored entry puts 20,000 sets over 0.5 s on this machine).

    python bench/bench_store.py [--entries 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_summarise import interleaved, spread

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of prices

TARGET_S = 0.5
TARGET_FLOOR = 1.2
SOURCE, COPY = "bench", "bench-copy"


def fill(store, n: int) -> None:
    """`n` entries of the size a one-line summary has, in experiment SOURCE."""
    from kura_magic.storage.responses import ResponseStore
    from kura_magic.types import CacheEntry, Usage

    entries = {
        f"km2-chat-{i:064x}": CacheEntry(
            model="openai/gpt-4o-mini", response=f"The customer asks where order {i} is; it ships tomorrow.",
            usage=Usage(prompt_tokens=60, completion_tokens=14), cost=0.0000174, latency_s=0.8,
        )
        for i in range(n)
    }
    ResponseStore(store).set_many(entries, experiment=SOURCE)


def export_one_by_one(store, path: Path) -> int:
    from kura_magic.storage.responses import ResponseStore

    responses, count = ResponseStore(store), 0
    with path.open("w", encoding="utf-8") as out:
        for key in store.keys(experiment=SOURCE):
            entry = responses.get(key, experiment=SOURCE)
            out.write(json.dumps({"key": key, "entry": entry.model_dump(mode="json")}) + "\n")
            count += 1
    return count


def import_one_by_one(store, path: Path) -> int:
    from kura_magic.storage.responses import ResponseStore
    from kura_magic.types import CacheEntry

    lines = path.read_text(encoding="utf-8").splitlines()
    for line in lines:
        row = json.loads(line)
        ResponseStore(store).set(row["key"], CacheEntry.model_validate(row["entry"]), experiment=COPY)
    return len(lines)


def bare(directory: Path):
    """diskcache on the store's own database, with the settings stored there (the store's
    eviction policy and experiment index), reading without refreshing what it reads."""
    import diskcache

    from kura_magic.storage.disk import _JSONOnlyDisk

    cache = diskcache.Cache(str(directory), disk=_JSONOnlyDisk)
    cache.reset("cull_limit", 0, update=False)
    return cache


def export_floor(cache, keys: list[str], path: Path) -> int:
    with path.open("w", encoding="utf-8") as out:
        for key in keys:
            data = cache.get(f"{SOURCE}::{key}")
            out.write(f'{{"key": {json.dumps(key)}, "entry": {data.decode()}}}\n')
    return len(keys)


def import_floor(cache, path: Path) -> int:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for start in range(0, len(rows), 1000):
        with cache.transact():
            for row in rows[start : start + 1000]:
                cache.set(f"{COPY}::{row['key']}", json.dumps(row["entry"]).encode(), tag=COPY)
    return len(rows)


def timed(run: Callable[[], int], expected: int) -> float:
    started = time.perf_counter()
    count = run()
    elapsed = time.perf_counter() - started
    if count != expected:
        raise SystemExit(f"expected {expected} entries, got {count}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="kura-bench-store-"))
    os.environ["KURA_MAGIC_CACHE"] = str(directory / "cache")
    try:
        report(measure(directory, args.entries, args.rounds), args.entries)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def measure(directory: Path, n: int, rounds: int) -> dict[str, list[float]]:
    import kura_magic
    from kura_magic.storage import open_store

    store = open_store(kura_magic.config.settings())
    fill(store, n)
    exported, reader, writer = directory / "export.jsonl", bare(directory / "cache"), bare(directory / "cache")
    reader.reset("eviction_policy", "none", update=False)  # reads without an access-time update
    runs: dict[str, Callable[[], int]] = {
        "export, batched": lambda: kura_magic.export_experiment(exported, SOURCE),
        "export, one by one": lambda: export_one_by_one(store, directory / "anchor.jsonl"),
        "export, floor": lambda: export_floor(reader, store.keys(experiment=SOURCE), directory / "floor.jsonl"),
        "import, batched": lambda: kura_magic.import_experiment(exported, COPY),
        "import, one by one": lambda: import_one_by_one(store, exported),
        "import, floor": lambda: import_floor(writer, exported),
    }
    def timing(name: str) -> Callable[[], float]:
        def run() -> float:
            if name.startswith("import"):
                store.clear(COPY)
            return timed(runs[name], n)
        return run

    exports = interleaved({name: timing(name) for name in runs if name.startswith("export")}, rounds)
    imports = interleaved({name: timing(name) for name in runs if name.startswith("import")}, rounds)
    return {**exports, **imports}


def report(times: dict[str, list[float]], n: int) -> None:
    print(f"{n} entries, disk store, median (min-max) of {len(next(iter(times.values())))} rounds")
    for name, values in times.items():
        print(f"  {name:20} {spread(values)}")
    for work in ("export", "import"):
        ours = times[f"{work}, batched"]
        ratios = {anchor: [a / b for a, b in zip(ours, times[f"{work}, {anchor}"])]
                  for anchor in ("one by one", "floor")}
        if work == "export":
            verdict = f"(target < {TARGET_S} s) -> {'OK' if statistics.median(ours) < TARGET_S else 'OVER'}"
        else:
            met = statistics.median(ratios["floor"]) <= TARGET_FLOOR
            verdict = f"(target <= {TARGET_FLOOR}x the floor) -> {'OK' if met else 'OVER'}"
        print(f"  {work}: {spread(ours)}; / floor {spread(ratios['floor'], unit='x')} {verdict}; "
              f"/ one by one {spread(ratios['one by one'], unit='x')}")


if __name__ == "__main__":
    main()
