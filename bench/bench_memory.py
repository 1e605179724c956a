"""Benchmark: the memory of a fully cached `summarise`, and a million conversations.

RSS rows: a cached run of 100,000 conversations against its floor, each in a fresh
subprocess, rounds alternating (A B, B A, ...). A process's base is its RSS once imports
are done and the data is built (the peak is reset there, Linux's /proc/self/clear_refs);
what it adds is its peak RSS above that. The floor
is the least a cache must do and keep for the same data: sha256 of each row's messages, one
diskcache get that writes nothing, one pydantic validation of the stored JSON, the
validated entries kept (they are the answers). Target: the run adds <= 1.3x what the floor
adds (medians of per-round ratios).

Million row: `summarise` over a JSONL file of 1,000,000 conversations (streamed from the
path), everything cached, in one process: its time per conversation over the first 10,000,
100,000 and all 1,000,000 lines (`limit=`), and the peak RSS of the whole process (target
under 2 GB; the time per conversation flat). The cache is filled directly, as
`bench_summarise.py --direct-fill` does, a slice at a time.

    python bench/bench_memory.py [--items 100000] [--rounds 3] [--million] [--million-items N]
                                 [--million-cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from bench_summarise import PROMPT, conversations, spread

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

TARGET_RATIO = 1.3
TARGET_MILLION_MB = 2048
FILL_SLICE = 50_000


def memory_mib(field: str = "VmHWM") -> float:
    """The process's peak RSS (VmHWM) or current RSS (VmRSS), from /proc (Linux)."""
    with open("/proc/self/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024


def start_peak() -> float:
    """Reset the peak RSS to the current RSS (so an import's passing peak hides nothing) and
    return that base."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")
    return memory_mib("VmRSS")


def peak_mib() -> float:
    return memory_mib("VmHWM")


def rows(n: int) -> Iterator[dict]:
    """The bench's conversations, one at a time (as `bench_summarise.conversations`)."""
    for start in range(0, n, FILL_SLICE):
        yield from conversations(min(n, start + FILL_SLICE), start)


def fill(source: Iterator[dict]) -> int:
    """The entries a fresh run would store, written straight into the store, a slice at a time."""
    from bench_summarise import fill_directly

    count = 0
    while chunk := list(islice(source, FILL_SLICE)):
        fill_directly(chunk)
        count += len(chunk)
    return count


def write_jsonl(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        for row in rows(n):
            out.write(json.dumps(row) + "\n")


# --- the children: each prints one JSON line -------------------------------------------


def child_run(items: int) -> dict:
    import kura_magic

    data = conversations(items)
    base = start_peak()
    started = time.perf_counter()
    run = kura_magic.summarise(data, PROMPT, model="openai/gpt-4o-mini")
    elapsed = time.perf_counter() - started
    assert run.stats.cached == items, run.stats.summary_line()
    return {"base": base, "peak": peak_mib(), "s": elapsed}


def child_floor(items: int, directory: str) -> dict:
    import hashlib

    import diskcache

    from kura_magic.calls.calls import CallSetup
    from kura_magic.inputs.templates import PromptTemplate
    from kura_magic.types import CacheEntry, Conversation

    data = conversations(items)
    template, recipe = PromptTemplate.compile(PROMPT), CallSetup.create({"model": "openai/gpt-4o-mini"}).recipe
    # Where each row's entry is, found one row at a time (so no peak of garbage) before the base.
    keys = [recipe.key([{"role": "user", "content": template.render(Conversation.model_validate(row))}])
            for row in data]
    base = start_peak()
    started = time.perf_counter()
    store = diskcache.Cache(directory)
    store.reset("eviction_policy", "none", update=False)  # a get that writes nothing
    kept = []
    for row, key in zip(data, keys):
        hashlib.sha256(json.dumps(row["messages"], sort_keys=True).encode()).hexdigest()
        kept.append(CacheEntry.model_validate_json(store.get(f"default::{key}")))
    elapsed = time.perf_counter() - started
    assert len(kept) == items
    return {"base": base, "peak": peak_mib(), "s": elapsed}


def child_million(path: str, limits: list[int]) -> dict:
    import kura_magic

    base = start_peak()
    per_item = {}
    for limit in limits:
        started = time.perf_counter()
        run = kura_magic.summarise(path, PROMPT, model="openai/gpt-4o-mini", limit=limit)
        elapsed = time.perf_counter() - started
        assert run.stats.cached == limit, run.stats.summary_line()
        per_item[limit] = elapsed / limit
        del run
    return {"base": base, "peak": peak_mib(), "per_item_s": per_item}


def child(args: argparse.Namespace) -> None:
    if args.child == "run":
        result = child_run(args.items)
    elif args.child == "floor":
        result = child_floor(args.items, args.cache)
    else:
        result = child_million(args.jsonl, [int(n) for n in args.limits.split(",")])
    print(json.dumps(result))


# --- the parent ------------------------------------------------------------------------


def in_child(kind: str, directory: str, *extra: str) -> dict:
    env = {**os.environ, "KURA_MAGIC_CACHE": directory}
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--cache", directory, *extra],
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def rss_rows(items: int, rounds: int) -> None:
    directory = tempfile.mkdtemp(prefix="kura-bench-mem-")
    os.environ["KURA_MAGIC_CACHE"] = directory
    started = time.perf_counter()
    fill(rows(items))
    print(f"filled {items} entries directly: {time.perf_counter() - started:.1f} s")
    in_child("run", directory, "--items", str(items))  # the first run writes the history record
    added: dict[str, list[float]] = {"run": [], "floor": []}
    for round_ in range(rounds):
        for kind in ("run", "floor") if round_ % 2 == 0 else ("floor", "run"):
            result = in_child(kind, directory, "--items", str(items))
            added[kind].append(result["peak"] - result["base"])
            print(f"  round {round_ + 1} {kind:5}: base {result['base']:.0f} MiB, peak {result['peak']:.0f} MiB, "
                  f"+{result['peak'] - result['base']:.0f} MiB, {result['s']:.2f} s")
    ratios = [run / floor for run, floor in zip(added["run"], added["floor"])]
    ratio = statistics.median(ratios)
    print(f"cached summarise of {items}: +{spread(added['run'], unit='MiB')} above base; "
          f"floor +{spread(added['floor'], unit='MiB')}")
    print(f"ratio: {spread(ratios, unit='x')} over {rounds} rounds (target <= {TARGET_RATIO}x) -> "
          f"{'OK' if ratio <= TARGET_RATIO else 'OVER'}")


def million_row(items: int, directory: str | None) -> None:
    """`directory`: one an earlier --million filled with `items` (its JSONL file and cache)."""
    reuse = directory is not None
    directory = directory or tempfile.mkdtemp(prefix="kura-bench-1m-")
    os.environ["KURA_MAGIC_CACHE"] = directory
    path = Path(directory) / "conversations.jsonl"
    if not reuse:
        started = time.perf_counter()
        write_jsonl(path, items)
        fill(rows(items))
        print(f"wrote {items} lines and filled the cache directly: {time.perf_counter() - started:.0f} s")
    limits = sorted({min(items, n) for n in (10_000, 100_000, items)})
    print(f"the million row's cache and file: {directory} (--million-cache to reuse them)")
    result = in_child("million", directory, "--jsonl", str(path), "--limits", ",".join(map(str, limits)))
    for limit, seconds in result["per_item_s"].items():
        print(f"  summarise(path, limit={int(limit):>9,}): {seconds * 1e6:.1f} us/conversation, "
              f"{seconds * int(limit):.1f} s")
    print(f"peak RSS of the process: {result['peak']:.0f} MiB (base {result['base']:.0f} MiB; "
          f"target < {TARGET_MILLION_MB} MiB) -> {'OK' if result['peak'] < TARGET_MILLION_MB else 'OVER'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--million", action="store_true", help="also the 1,000,000-conversation row")
    parser.add_argument("--million-items", type=int, default=1_000_000)
    parser.add_argument("--million-cache", help="a directory an earlier --million filled (it prints where)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--jsonl", help=argparse.SUPPRESS)
    parser.add_argument("--limits", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    rss_rows(args.items, args.rounds)
    if args.million:
        million_row(args.million_items, args.million_cache)


if __name__ == "__main__":
    main()
