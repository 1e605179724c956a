"""``python -m kura_magic.testing``: serve a loopback LLM until Ctrl-C or SIGTERM."""

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
    return parser


def main(argv: list[str] | None = None) -> None:
    """Serve until Ctrl-C or SIGTERM. Example: ``python -m kura_magic.testing --port 8765``."""
    args = _parser().parse_args(argv)
    done = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: done.set())
    with LoopbackLLM(latency_s=args.latency, embedding_dims=args.embedding_dims,
                     host=args.host, port=args.port) as server:
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
