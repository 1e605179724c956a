"""Benchmark: batch mode's own work for a big run, against the loopback server's Batch API on
a fresh disk cache: submitting N misses (their lines built, prompts counted for the estimate,
the upload, the record and leases written), collecting the finished batch (download, parse,
price at the batch price, store), and the same run again without --batch (wholly cached).

No target: it says what the bookkeeping costs beside a batch that takes the provider hours.

    python bench/bench_batch.py [--conversations 20000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of prices
os.environ["KURA_MAGIC_CACHE"] = tempfile.mkdtemp(prefix="kura-bench-batch-")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import kura_magic as km  # noqa: E402
from helpers import MODEL, PROMPT, make_conversations  # noqa: E402
from kura_magic.calls.gateway import litellm  # noqa: E402
from kura_magic.testing import LoopbackLLM  # noqa: E402

T = TypeVar("T")


def timed(work: Callable[[], T]) -> tuple[T, float]:
    """What `work()` gives, and how long it took in seconds."""
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=20_000)
    count = parser.parse_args().conversations
    litellm()  # imported before the clock starts, as in a kernel that has called before
    with LoopbackLLM() as llm:
        os.environ.update(OPENAI_API_BASE=llm.url, OPENAI_API_KEY="sk-bench")
        conversations = make_conversations(count)
        llm.batches.delay_s = 3600
        submitted, submit_s = timed(lambda: km.summarise(conversations, PROMPT, model=MODEL, batch=True))
        llm.batches.delay_s = 0
        collected, collect_s = timed(lambda: km.summarise(conversations, PROMPT, model=MODEL, batch=True))
        cached, cached_s = timed(lambda: km.summarise(conversations, PROMPT, model=MODEL))
        pending = sum(result.status == "pending" for result in submitted)
        print(f"{count} conversations, {len(llm.batches.batch_ids)} batch(es), {len(llm.chat_requests)} chat calls")
        print(f"submit:  {submit_s:6.2f} s  ({pending} rows pending)")
        print(f"collect: {collect_s:6.2f} s  ({collected.stats.fresh} rows, {collected.stats.spent_text} at the batch price)")
        print(f"cached:  {cached_s:6.2f} s  ({cached.stats.cached} rows from the cache)")


if __name__ == "__main__":
    main()
