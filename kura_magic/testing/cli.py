"""``python -m kura_magic.testing``: serve a loopback LLM until Ctrl-C or SIGTERM, with
faults injected if asked (``--fail-rate 0.3`` answers 30% of requests with a 429)."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from kura_magic.testing.server import LoopbackLLM

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kura_magic.testing",
                                     description="Serve a loopback OpenAI-compatible LLM.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--embedding-dims", type=int, default=16)
    parser.add_argument("--port-file", type=Path, help="write the bound port to this file")
    faults = parser.add_argument_group("faults", "failures to inject, as providers send them")
    faults.add_argument("--fail-rate", type=float, default=0.0, metavar="P",
                        help="fail each request with probability P (seeded: the same run fails alike)")
    faults.add_argument("--fail-status", type=int, default=429, help="the status of those failures (default 429)")
    faults.add_argument("--retry-after", type=float, default=None, metavar="S",
                        help="the Retry-After those failures carry, in seconds")
    faults.add_argument("--fail-first", type=int, default=0, metavar="N",
                        help="fail the first N requests with --fail-status")
    faults.add_argument("--seed", type=int, default=0, help="the seed of --fail-rate")
    return parser


def _inject_faults(server: LoopbackLLM, args: argparse.Namespace) -> None:
    """Arm the failures the command line asked for."""
    if args.fail_rate > 0:
        server.fail_rate(args.fail_rate, status=args.fail_status, retry_after_s=args.retry_after, seed=args.seed)
    if args.fail_first > 0:
        server.fail_next(args.fail_first, status=args.fail_status, retry_after_s=args.retry_after)


def main(argv: list[str] | None = None) -> None:
    """Serve until Ctrl-C or SIGTERM. Example: ``python -m kura_magic.testing --port 8765``."""
    args = _parser().parse_args(argv)
    done = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: done.set())
    with LoopbackLLM(latency_s=args.latency, embedding_dims=args.embedding_dims,
                     host=args.host, port=args.port) as server:
        _inject_faults(server, args)
        print(f"kura_magic loopback LLM on {server.url}", flush=True)
        if args.port_file is not None:
            _write_port(args.port_file, server.port)
        try:
            while not done.wait(0.2):
                pass
        except KeyboardInterrupt:
            pass


def _write_port(port_file: Path, port: int) -> None:
    """Write ``port`` atomically: a poller never reads half a file."""
    partial = port_file.with_name(port_file.name + ".partial")
    partial.write_text(f"{port}\n")
    partial.replace(port_file)
