#!/usr/bin/env python
"""Run the quickstart notebook headless against a real model, twice, and say what each run did.

The model is the bundled local one (`kura_magic.local`, needs the [local] extra)
or, with `--backend loopback`, the project's loopback test server. The local model
server starts while the first run's kernel starts, answers one warm-up request, and
the job says how long it took to load. The notebook's
kernel is configured only the way a user would configure it: environment
variables (OPENAI_API_BASE, OPENAI_API_KEY, KURA_MAGIC_MODEL, KURA_MAGIC_CACHE, and
KURA_MAGIC_MAX_CONCURRENCY=1 for the local model, which answers one call at a time).
After each run one line gives fresh/cached counts, time, cost and cache size,
read from the `kura_magic` provenance in the executed notebook's outputs.
The executed notebooks and HTML copies are saved under runs/. Exits 1 if the
second run was not served wholly from the cache.

Example:
    $ python scripts/run_quickstart.py                       # the local model
    $ python scripts/run_quickstart.py --backend loopback    # no [local] extra needed
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of prices

import nbformat  # noqa: E402
from nbclient import NotebookClient  # noqa: E402
from nbclient.exceptions import CellExecutionError  # noqa: E402
from nbconvert import HTMLExporter  # noqa: E402

import kura_magic  # noqa: E402
from kura_magic import formatting  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "example_notebooks" / "quickstart.ipynb"
RUNS = REPO / "runs"
LOOPBACK_MODEL = "openai/gpt-4o-mini"  # the loopback server answers any name; this one is priced
LOOPBACK_KEY = "sk-loopback-no-key"
CELL_TIMEOUT_S = 900
# Variables of the caller's environment that would send the kernel's calls elsewhere.
ROUTING_VARS = ("OPENAI_BASE_URL", "KURA_MAGIC_API_BASE", "KURA_MAGIC_API_KEY", "KURA_MAGIC_OFFLINE")
STAT_FIELDS = ("total", "fresh", "cached", "errors", "cost", "cost_unknown", "elapsed_s")


def _no_wait() -> str | None:
    """A backend that is ready at once: nothing to wait for, nothing to say."""
    return None


@dataclass(frozen=True)
class Backend:
    """Where the kernel's model calls go; `ready()` blocks until the model answers and
    returns a line saying how long it took to load (None if there is nothing to say)."""

    api_base: str
    api_key: str
    model: str
    max_concurrency: int | None = None
    ready: Callable[[], str | None] = field(default=_no_wait)
    free: bool = False  # a model on this machine: priced at $0 (KURA_MAGIC_MODEL_PRICES)


@dataclass(frozen=True)
class RunReport:
    """What one execution of the notebook did, summed over its `kura_magic` outputs.

    Example:
        >>> report = RunReport(1, {"fresh": 0, "cached": 3, "cost": 0.0, "cost_unknown": 0,
        ...                        "errors": 0, "total": 3, "elapsed_s": 0.1}, 2.0, 3, 4096)
        >>> report.line().split(" · ")[:2], report.line().split(" · ")[-2:]
        (['run 1: 0 fresh', '3 cached'], ['cost $0.00', 'cache 3 entries, 4.0 KiB'])
    """

    number: int
    stats: dict[str, float]
    wall_s: float
    cache_entries: int
    cache_bytes: int

    def line(self) -> str:
        s = self.stats
        cost = formatting.money(s["cost"], unknown=int(s["cost_unknown"]))
        return (
            f"run {self.number}: {int(s['fresh'])} fresh · {int(s['cached'])} cached · "
            f"{int(s['errors'])} errors · notebook {formatting.duration(self.wall_s)} "
            f"(model calls {formatting.duration(s['elapsed_s'])}) · cost {cost} · "
            f"cache {self.cache_entries} entries, {formatting.size(self.cache_bytes)}"
        )


def main(argv: list[str] | None = None) -> int:
    """Execute the notebook twice; 0 if the second run came wholly from the cache."""
    args = _parser().parse_args(argv)
    cache_dir = (args.cache or args.runs / "cache").resolve()
    kura_magic.configure(cache=str(cache_dir))  # this process reads the size of the same cache
    with _backend(args.backend) as backend:
        env = kernel_env(backend, cache_dir)
        print(f"model {backend.model} at {backend.api_base}; cache {cache_dir}", flush=True)
        reports = [_run(args.notebook, n, env, args.runs, backend.ready if n == 1 else _no_wait)
                   for n in (1, 2)]
    return _verdict(reports)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("local", "loopback"), default="local",
                        help="local: the bundled SmolLM2 model (default); loopback: the test server")
    parser.add_argument("--notebook", type=Path, default=NOTEBOOK, help="the notebook to run")
    parser.add_argument("--runs", type=Path, default=RUNS, help="where outputs go (default: runs/)")
    parser.add_argument("--cache", type=Path, help="the cache directory (default: RUNS/cache)")
    return parser


@contextmanager
def _backend(name: str) -> Iterator[Backend]:
    """The model server for the whole job, stopped at the end."""
    if name == "loopback":
        with _loopback() as backend:
            yield backend
        return
    from kura_magic.local import launcher as local

    port = local.free_port()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-model") as pool:
        starting = pool.submit(local.start, port=port)
        try:
            yield Backend(f"{local.address(port)}/v1", local.API_KEY, local.MODEL,
                          local.MAX_CONCURRENCY, ready=lambda: _loaded(starting), free=True)
        finally:
            wait([starting])
            local.stop()


def _loaded(starting: Future[Any]) -> str:
    """Wait for the local model server; say how long it took to load and warm up."""
    server = starting.result()
    return (f"local model loaded in {server.load_s:.1f} s (server start and weights), "
            f"warmed up in {server.warm_s:.1f} s, while the kernel started")


@contextmanager
def _loopback() -> Iterator[Backend]:
    """`python -m kura_magic.testing` in a subprocess, on the port it writes to a file."""
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        command = [sys.executable, "-m", "kura_magic.testing", "--port-file", str(port_file)]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        try:
            port = _wait_for_file(port_file, server, timeout_s=30)
            yield Backend(f"http://127.0.0.1:{port}/v1", LOOPBACK_KEY, LOOPBACK_MODEL)
        finally:
            server.terminate()
            server.wait(timeout=10)


def _wait_for_file(path: Path, process: subprocess.Popen[bytes], *, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the loopback server did not start (exit code {process.poll()})")
        time.sleep(0.1)
    return int(path.read_text())


def kernel_env(backend: Backend, cache_dir: Path) -> dict[str, str]:
    """This process's environment plus what a user would set to use `backend`.

    Example:
        >>> env = kernel_env(Backend("http://127.0.0.1:1/v1", "sk-x", "openai/m"), Path("/c"))
        >>> env["KURA_MAGIC_MODEL"], env["KURA_MAGIC_CACHE"]
        ('openai/m', '/c')
    """
    env = {k: v for k, v in os.environ.items() if k not in ROUTING_VARS}
    env.update(
        OPENAI_API_BASE=backend.api_base, OPENAI_API_KEY=backend.api_key,
        KURA_MAGIC_MODEL=backend.model, KURA_MAGIC_CACHE=str(cache_dir),
        LITELLM_LOCAL_MODEL_COST_MAP="True",
    )
    if backend.max_concurrency is not None:
        env["KURA_MAGIC_MAX_CONCURRENCY"] = str(backend.max_concurrency)
    if backend.free:
        env["KURA_MAGIC_MODEL_PRICES"] = json.dumps({backend.model: [0, 0]})
    return env


def _run(notebook: Path, number: int, env: dict[str, str], runs: Path,
         ready: Callable[[], str | None]) -> RunReport:
    """Start a kernel, wait for `ready()` (printing what it says), execute `notebook` once,
    save it and its HTML copy, print and return its report."""
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(notebook.parent)}})
    started = time.perf_counter()
    try:
        with client.setup_kernel(env=env):  # the kernel starts while the model loads
            note = ready()
            if note:
                print(note, flush=True)
            client.execute(cleanup_kc=False)  # setup_kernel shuts the kernel down
    finally:
        saved = _save(nb, runs / f"{notebook.stem}-run{number}")
        print(f"  saved {saved[0]} and {saved[1]}", flush=True)
    info = kura_magic.cache_info()
    report = RunReport(number, notebook_stats(nb), time.perf_counter() - started, info.entries, info.bytes)
    print(report.line(), flush=True)
    return report


def notebook_stats(nb: Any) -> dict[str, float]:
    """Run statistics summed over every output that carries `kura_magic` provenance.

    Example:
        >>> cell = {"outputs": [{"metadata": {"kura_magic": {"stats": {"fresh": 2, "cached": 1}}}}]}
        >>> notebook_stats({"cells": [cell, {"outputs": []}]})["fresh"]
        2.0
    """
    totals = dict.fromkeys(STAT_FIELDS, 0.0)
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            stats = output.get("metadata", {}).get("kura_magic", {}).get("stats", {})
            for name in STAT_FIELDS:
                totals[name] += float(stats.get(name) or 0)
    return totals


def _save(nb: Any, stem: Path) -> tuple[Path, Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    notebook_path, html_path = stem.with_suffix(".ipynb"), stem.with_suffix(".html")
    nbformat.write(nb, notebook_path)
    html, _ = HTMLExporter().from_notebook_node(nb)
    html_path.write_text(html, encoding="utf-8")
    return notebook_path, html_path


def _verdict(reports: list[RunReport]) -> int:
    last = reports[-1].stats
    if last["total"] == 0:
        print("FAILED: the notebook produced no kura_magic results (no %%summarise output)")
        return 1
    if last["fresh"] > 0:
        print(f"FAILED: the second run made {int(last['fresh'])} fresh calls; it should be wholly cached")
        return 1
    print(f"OK: the second run was served wholly from the cache ({int(last['cached'])} results)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (CellExecutionError, kura_magic.KuraMagicError) as exc:
        sys.exit(f"FAILED: {exc}")
