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
import functools
import threading
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from kura_magic.errors import KuraMagicError

T = TypeVar("T")
P = ParamSpec("P")
InterruptHook = Callable[[], None]

# Set by `run_sync` for the coroutine it runs: what to call on Ctrl-C instead of cancelling.
_interrupt_hooks: ContextVar[list[InterruptHook] | None] = ContextVar(
    "kura_magic_interrupt_hooks", default=None
)

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


def on_interrupt(hook: InterruptHook) -> None:
    """Ask the waiting `run_sync` to call `hook` on Ctrl-C rather than cancel the work, so the
    coroutine can return what it finished. Does nothing when awaited directly.

    Example:
        >>> async def work():
        ...     on_interrupt(lambda: None)
        ...     return "done"
        >>> run_sync(work())
        'done'
    """
    hooks = _interrupt_hooks.get()
    if hooks is not None:
        hooks.append(hook)


async def _with_hooks(coroutine: Coroutine[Any, Any, T], hooks: list[InterruptHook]) -> T:
    _interrupt_hooks.set(hooks)
    return await coroutine


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on the background loop and wait for its result.

    On Ctrl-C (a kernel interrupt) the hooks the coroutine registered with
    `on_interrupt` are called on the loop and the result is still awaited, so a run
    can hand back what it finished; without hooks, the coroutine is cancelled and
    KeyboardInterrupt propagates.

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
    hooks: list[InterruptHook] = []
    future = asyncio.run_coroutine_threadsafe(_with_hooks(coroutine, hooks), loop)
    try:
        return future.result()
    except KeyboardInterrupt:
        if not hooks:
            future.cancel()
            raise
        for hook in hooks:
            loop.call_soon_threadsafe(hook)
        return future.result()


def blocking(async_function: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """The blocking twin of `async_function`: the same typed signature and docstring, run on
    the background loop, so it works in a script and inside a running loop (a Jupyter cell).

    Example:
        >>> async def adouble(x: int) -> int:
        ...     return 2 * x
        >>> double = blocking(adouble)
        >>> double.__name__, double(21)
        ('double', 42)
    """

    @functools.wraps(async_function)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(async_function(*args, **kwargs))

    run.__name__ = run.__qualname__ = async_function.__name__.removeprefix("a")
    return run
