"""Benchmark: what the live widget panel costs a run. Target: under 10% slower.

Runs the same fresh summarise over the loopback server with and without the
panel's on_progress (alternating, best of several, a fresh cache each time).

    python bench/bench_panel.py [--items 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

TARGET = 1.10
PROMPT = "Summarise:\n{{ transcript }}"


def timed_run(n: int, server_url: str, with_panel: bool) -> float:
    import kura_magic
    from kura_magic.notebook.panels import RunPanel

    os.environ["KURA_MAGIC_CACHE"] = tempfile.mkdtemp(prefix="kura-bench-panel-")
    data = [f"conversation number {i} about a refund" for i in range(n)]
    panel = RunPanel.open(widget=True) if with_panel else None
    started = time.perf_counter()
    run = kura_magic.summarise(
        data, PROMPT, model="openai/gpt-4o-mini", api_base=server_url, api_key="sk-bench",
        on_progress=panel.update if panel else None,
    )
    elapsed = time.perf_counter() - started
    if panel is not None:
        panel.finish(run.stats)
    if run.stats.fresh != n:
        raise SystemExit(f"expected {n} fresh calls, got {run.stats.summary_line()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    from kura_magic.testing import LoopbackLLM

    with LoopbackLLM() as server:
        timed_run(20, server.url, with_panel=True)  # warm up: litellm import, connections
        plain, panel = [], []
        for _ in range(options.rounds):
            plain.append(timed_run(options.items, server.url, with_panel=False))
            panel.append(timed_run(options.items, server.url, with_panel=True))
    ratio = min(panel) / min(plain)
    print(f"{options.items} fresh calls without the panel: {min(plain):.2f} s (best of {options.rounds})")
    print(f"{options.items} fresh calls with the widget panel: {min(panel):.2f} s")
    print(f"ratio: {ratio:.3f} (target < {TARGET}) -> {'OK' if ratio < TARGET else 'OVER'}")


if __name__ == "__main__":
    main()
