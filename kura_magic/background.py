"""One event loop on a daemon thread, where every sync helper's work runs.

A Jupyter cell already has a running loop, so sync helpers cannot `asyncio.run`;
sending the work to this loop and waiting for it works everywhere, without
nest_asyncio, keeps one concurrency limit for all sync calls, and leaves the
kernel's own loop free to carry widget updates.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from kura_magic.errors import KuraMagicError

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_lock = threading.Lock()


def background_loop() -> asyncio.AbstractEventLoop:
    """The shared background loop, started on first use."""
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            _loop = asyncio.new_event_loop()
            _thread = threading.Thread(
                target=_loop.run_forever, name="kura_magic-loop", daemon=True
            )
            _thread.start()
            atexit.register(_shutdown, _loop)
        return _loop


def _shutdown(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left on the loop (litellm's logging worker) so exit is quiet."""

    async def cancel_others() -> None:
        current = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is not current:
                task.cancel()

    if loop.is_running():
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cancel_others(), loop).result(timeout=2)
        loop.call_soon_threadsafe(loop.stop)


def run_sync(
    coroutine: Coroutine[Any, Any, T], *, on_interrupt: Callable[[], None] | None = None
) -> T:
    """Run `coroutine` on the background loop and wait for its result.

    On Ctrl-C (a kernel interrupt), `on_interrupt` is called on the loop and the
    result is still awaited, so a run can hand back what it finished; without
    `on_interrupt`, the coroutine is cancelled and KeyboardInterrupt propagates.

    Example:
        >>> async def answer():
        ...     return 42
        >>> run_sync(answer())
        42
    """
    loop = background_loop()
    if threading.current_thread() is _thread:
        coroutine.close()
        raise KuraMagicError("a sync kura_magic helper was called from its own loop: await the async one")
    future = asyncio.run_coroutine_threadsafe(coroutine, loop)
    try:
        return future.result()
    except KeyboardInterrupt:
        if on_interrupt is None:
            future.cancel()
            raise
        loop.call_soon_threadsafe(on_interrupt)
        return future.result()
