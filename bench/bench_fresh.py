"""Benchmark: fresh calls through `summarise` against litellm alone and an ideal client.

Each scenario sends n fresh chat calls, at most c at once, to a loopback LLM server with
a fixed latency, run in another process (so its CPU is not ours). In every round the
three clients run back to back, in a rotating order:

- ideal: a plain aiohttp client under an asyncio.Semaphore(c) (floor: n / c x latency);
- litellm: `litellm.acompletion` under the same semaphore, with our call options, and
  its background logging of those calls (as for ours);
- ours: `kura_magic.summarise(..., max_concurrency=c)` into a disk cache, a new
  experiment each round so every call is fresh.

It prints the median and min-max over rounds of each client's wall time, our ratio to
litellm (target <= 1.2x) and to the ideal, and the client CPU per fresh call (process
CPU time / calls; target ours <= 1.1x litellm's).

    python bench/bench_fresh.py [--rounds 3] [--latency 0.1] [--scenarios 1000x50 2000x200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench_summarise import PROMPT, conversations

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

MODEL = "openai/gpt-4o-mini"
API_KEY = "sk-bench-0000"
TARGET_WALL, TARGET_CPU = 1.2, 1.1
CLIENTS = ("ideal", "litellm", "ours")


@contextmanager
def server_process(latency_s: float) -> Iterator[str]:
    """A loopback LLM in its own process; yields its api_base."""
    port_file = Path(tempfile.mkdtemp(prefix="kura-bench-")) / "port"
    command = [sys.executable, "-m", "kura_magic.testing", "--latency", str(latency_s),
               "--port-file", str(port_file)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the loopback server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port_file.read_text().strip()}/v1"
    finally:
        server.terminate()
        server.wait(timeout=10)


def messages_of(data: list[dict]) -> list[list[dict]]:
    """The messages `summarise` sends for `data` under PROMPT, for the other clients."""
    from kura_magic import load_conversations
    from kura_magic.inputs.templates import PromptTemplate

    template = PromptTemplate.compile(PROMPT, None)
    return [[{"role": "user", "content": template.render(c)}] for c in load_conversations(data)]


async def under_semaphore(limit: int, sends: list[Callable[[], object]]) -> None:
    slots = asyncio.Semaphore(limit)

    async def one(send: Callable[[], object]) -> None:
        async with slots:
            await send()  # type: ignore[misc]

    await asyncio.gather(*(one(send) for send in sends))


async def ideal(api_base: str, prompts: list[list[dict]], limit: int) -> None:
    import aiohttp

    url, headers = f"{api_base}/chat/completions", {"Authorization": f"Bearer {API_KEY}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit)) as session:

        async def send(messages: list[dict]) -> None:
            body = {"model": "gpt-4o-mini", "messages": messages, "temperature": 0.0}
            async with session.post(url, json=body, headers=headers) as response:
                (await response.json())["choices"][0]["message"]["content"]

        await under_semaphore(limit, [lambda m=m: send(m) for m in prompts])


async def litellm_alone(api_base: str, prompts: list[list[dict]], limit: int) -> None:
    from kura_magic.calls.gateway import litellm

    lib = litellm()

    async def send(messages: list[dict]) -> None:
        response = await lib.acompletion(
            model=MODEL, messages=messages, temperature=0.0, timeout=600, max_retries=0,
            api_base=api_base, api_key=API_KEY,
        )
        response.choices[0].message.content

    await under_semaphore(limit, [lambda m=m: send(m) for m in prompts])


def ours(api_base: str, data: list[dict], limit: int, experiment: str) -> None:
    import kura_magic

    run = kura_magic.summarise(data, PROMPT, model=MODEL, api_base=api_base, api_key=API_KEY,
                               max_concurrency=limit, experiment=experiment)
    if run.stats.fresh != len(data) or run.stats.errors:
        raise SystemExit(f"expected {len(data)} fresh calls, got {run.stats.summary_line()}")


def settled(run: Callable[[], object]) -> None:
    """`run()`, then wait for litellm's background logging of its calls (a queue on the loop
    that outlives them), so that each client pays for its own."""
    from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

    from kura_magic.background import run_sync

    run()
    run_sync(GLOBAL_LOGGING_WORKER.flush())


def timed(run: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of `run()`."""
    wall, cpu = time.perf_counter(), time.process_time()
    settled(run)
    return time.perf_counter() - wall, time.process_time() - cpu


def scenario(api_base: str, n: int, limit: int, rounds: int) -> dict[str, list[tuple[float, float]]]:
    from kura_magic.background import run_sync

    data = conversations(n)
    prompts = messages_of(data)
    # All three on the loop `summarise` uses, where litellm keeps its session and logging queue.
    runs: dict[str, Callable[[int], object]] = {
        "ideal": lambda r: run_sync(ideal(api_base, prompts, limit)),
        "litellm": lambda r: run_sync(litellm_alone(api_base, prompts, limit)),
        "ours": lambda r: ours(api_base, data, limit, f"bench-{n}x{limit}-{r}-{time.time_ns()}"),
    }
    measured: dict[str, list[tuple[float, float]]] = {name: [] for name in CLIENTS}
    for r in range(rounds):
        for name in CLIENTS[r % 3:] + CLIENTS[:r % 3]:  # A/B interleaved, order rotated
            measured[name].append(timed(lambda: runs[name](r)))
    return measured


def spread(values: list[float], scale: float = 1.0, unit: str = "s") -> str:
    scaled = [v * scale for v in values]
    return f"{statistics.median(scaled):.2f} {unit} ({min(scaled):.2f}-{max(scaled):.2f})"


def report(n: int, limit: int, latency_s: float, measured: dict[str, list[tuple[float, float]]]) -> None:
    walls = {name: [wall for wall, _ in runs] for name, runs in measured.items()}
    cpus = {name: [cpu / n * 1000 for _, cpu in runs] for name, runs in measured.items()}
    print(f"\n{n} fresh calls, max_concurrency={limit}, latency {latency_s * 1000:.0f} ms "
          f"(floor n/c x latency = {n / limit * latency_s:.2f} s)")
    for name in CLIENTS:
        print(f"  {name:8} wall {spread(walls[name])}   CPU/call {spread(cpus[name], unit='ms')}")
    per_round = [o / lit for o, lit in zip(walls["ours"], walls["litellm"])]
    cpu_ratio = [o / lit for o, lit in zip(cpus["ours"], cpus["litellm"])]
    to_ideal = [o / i for o, i in zip(walls["ours"], walls["ideal"])]
    wall_ok = statistics.median(per_round) <= TARGET_WALL
    cpu_ok = statistics.median(cpu_ratio) <= TARGET_CPU
    print(f"  ours / litellm wall: {spread(per_round, unit='x')} (target <= {TARGET_WALL}x) "
          f"-> {'OK' if wall_ok else 'OVER'}")
    print(f"  ours / litellm CPU per call: {spread(cpu_ratio, unit='x')} (target <= {TARGET_CPU}x) "
          f"-> {'OK' if cpu_ok else 'OVER'}")
    print(f"  ours / ideal wall: {spread(to_ideal, unit='x')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--scenarios", nargs="+", default=["1000x50", "2000x200"],
                        help="calls x max_concurrency")
    args = parser.parse_args()
    os.environ["KURA_MAGIC_CACHE"] = tempfile.mkdtemp(prefix="kura-bench-")
    from kura_magic.calls.gateway import litellm

    litellm()  # imported before any timing: its 3-7 s belong to no client
    with server_process(args.latency) as api_base:
        for spec in args.scenarios:
            n, limit = (int(part) for part in spec.split("x"))
            report(n, limit, args.latency, scenario(api_base, n, limit, args.rounds))


if __name__ == "__main__":
    main()
