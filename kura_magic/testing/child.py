"""What the throwaway servers the tests start (`RedisServer`, `SeaweedFS`) share: a child
process with a temporary directory, stopped or killed the same way. Standard library only."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import weakref


class ChildServer:
    """A server running as a child process of this one, with a directory of its own.

    Subclasses start the process and set `_process`, `_finalizer` (which ends the process,
    also at interpreter exit) and `_dir`.
    """

    _process: subprocess.Popen[bytes] | None = None
    _finalizer: weakref.finalize | None = None
    _dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else None."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL if it lingers) and remove its directory."""
        if self._finalizer is not None:
            self._finalizer()  # runs the end once, even if stop() is called again
        self._process = self._finalizer = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def kill(self) -> None:
        """SIGKILL the server, as if it crashed: its address stays the same and nothing answers."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
        if self._finalizer is not None:
            self._finalizer.detach()
        self._process = self._finalizer = None
