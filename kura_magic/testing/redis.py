"""A real Redis for tests, benches and notebooks: ``RedisServer`` runs Debian's redis-server.

Each server is private: a free port on 127.0.0.1, a temporary ``--dir``, nothing
saved to disk (``--save ""``, ``--appendonly no``), protected mode on, an
optional password. It never uses a system Redis service. Readiness is checked
by speaking RESP over a plain socket, so this module is standard library only.
Install the binary with ``sudo apt-get install redis-server`` or
``bash scripts/install_redis.sh``.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from urllib.parse import quote

from kura_magic.testing.child import ChildServer

__all__ = ["RedisServer", "redis_server_path"]

_INSTALL_HINT = "sudo apt-get install redis-server` or `bash scripts/install_redis.sh"
_PING = b"*1\r\n$4\r\nPING\r\n"
_READY = (b"+PONG", b"-NOAUTH")  # with a password, PING before AUTH answers NOAUTH


def redis_server_path(binary: str | None = None) -> str | None:
    """The redis-server executable (``binary`` or the one on PATH), or None if there is none."""
    found = shutil.which(binary or "redis-server")
    return found if found and os.access(found, os.X_OK) else None


def _free_port(host: str) -> int:
    """A port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _ping(host: str, port: int, *, ca_file: Path | None = None, timeout_s: float = 0.5) -> bytes:
    """The first line Redis answers to PING (``b"+PONG"``, ``b"-NOAUTH ..."``); b"" if none.
    With `ca_file`, over TLS, trusting that certificate."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw:
            conn = raw if ca_file is None else ssl.create_default_context(cafile=str(ca_file)).wrap_socket(
                raw, server_hostname=host)
            conn.sendall(_PING)
            return conn.recv(256).split(b"\r\n", 1)[0]
    except OSError:  # ssl.SSLError is one too: not ready yet
        return b""


def _self_signed(directory: Path, host: str) -> tuple[Path, Path]:
    """A certificate for `host` that signs itself, and its key, made by openssl (a day's)."""
    cert, key = directory / "tls-cert.pem", directory / "tls-key.pem"
    if not cert.exists():
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={host}",
             "-addext", f"subjectAltName=IP:{host}"],
            check=True, stdin=subprocess.DEVNULL, capture_output=True,
        )
    return cert, key


def _end(process: subprocess.Popen[bytes], *, grace_s: float = 5.0) -> None:
    """Terminate `process` (SIGTERM), then SIGKILL it if it has not exited within `grace_s`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


class RedisServer(ChildServer):
    """A redis-server of our own on 127.0.0.1, with a temporary directory and nothing persisted.

    Example::

        with RedisServer() as redis:
            os.environ["KURA_MAGIC_CACHE"] = redis.url   # redis://127.0.0.1:PORT/0
            ...
            redis.kill()    # Redis goes away mid-run: the url stays, nothing answers
            redis.start()   # back on the same port, empty

    ``RedisServer(password="s3cret")`` requires AUTH (``redis://:s3cret@127.0.0.1:PORT/0``).
    ``RedisServer(tls=True)`` speaks only TLS, with a certificate it makes for itself (by
    ``openssl``): ``rediss://127.0.0.1:PORT/0?ssl_ca_certs=<its certificate>``.
    """

    def __init__(self, *, password: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 binary: str | None = None, startup_timeout_s: float = 10.0, tls: bool = False) -> None:
        found = redis_server_path(binary)
        if found is None:
            raise FileNotFoundError(
                f"{binary or 'redis-server'} is not installed or not on PATH: "
                f"run `{_INSTALL_HINT}`")
        self.binary = found
        self.password = password
        self.tls = tls
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        self._port = port
        self._port_fixed = port != 0  # a chosen port, or one a server has already used
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    # lifecycle
    def start(self) -> RedisServer:
        """Run redis-server and wait until it answers PING; a no-op while it runs.

        After ``kill()`` it comes back on the same port (empty: nothing was saved).
        A free port picked for the first start is picked again if another process took it.
        """
        if self.running:
            return self
        attempts = 1 if self._port_fixed else 3
        for _ in range(attempts):
            if not self._port_fixed:
                self._port = _free_port(self.host)
            if self._launch():
                self._port_fixed = True
                return self
        raise RuntimeError(f"redis-server did not start on {self.host}:{self._port}: {self._log_tail()}")

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # where it is
    @property
    def port(self) -> int:
        """The port the server listens on (0 before the first start if none was requested)."""
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``, or ``redis://:PASSWORD@127.0.0.1:PORT/0`` with a password;
        with TLS ``rediss://…/0?ssl_ca_certs=…``, trusting the server's own certificate."""
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        if self.ca_file is None:
            return f"redis://{auth}{self.host}:{self.port}/0"
        return f"rediss://{auth}{self.host}:{self.port}/0?ssl_ca_certs={quote(str(self.ca_file))}"

    @property
    def ca_file(self) -> Path | None:
        """With TLS, the certificate the server presents (a client trusts it to connect)."""
        return self.directory / "tls-cert.pem" if self.tls and self.directory is not None else None

    @property
    def directory(self) -> Path | None:
        """The server's temporary ``--dir`` (its log is ``redis.log`` there), until ``stop()``."""
        return Path(self._dir.name) if self._dir is not None else None

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "not running"
        return f"RedisServer({self.host}:{self.port}, {state})"

    # plumbing
    def _arguments(self, directory: Path) -> list[str]:
        """The command line: our port and directory, no persistence; the password in a file."""
        config = directory / "redis.conf"  # so the password is not visible in `ps`
        config.write_text("" if self.password is None else f'requirepass "{_quoted(self.password)}"\n',
                          encoding="utf-8")
        config.chmod(0o600)
        return [self.binary, str(config), *self._listening(directory), "--bind", self.host,
                "--dir", str(directory), "--save", "", "--appendonly", "no",
                "--protected-mode", "yes", "--daemonize", "no", "--loglevel", "warning"]

    def _listening(self, directory: Path) -> list[str]:
        """Our port, in plain text or (with TLS) in TLS only."""
        if not self.tls:
            return ["--port", str(self._port)]
        cert, key = _self_signed(directory, self.host)
        return ["--port", "0", "--tls-port", str(self._port), "--tls-cert-file", str(cert),
                "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]

    def _launch(self) -> bool:
        """Spawn redis-server on ``self._port``; True once it answers PING, False if it exited."""
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="kura-redis-")
        directory = Path(self._dir.name)
        with open(directory / "redis.log", "ab") as log:
            process = subprocess.Popen(self._arguments(directory), stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT, cwd=directory)
        self._process = process
        self._finalizer = weakref.finalize(self, _end, process)  # also at interpreter exit
        if self._wait_until_ready(process):
            return True
        self.kill()
        return False

    def _wait_until_ready(self, process: subprocess.Popen[bytes]) -> bool:
        """Poll with PING until Redis answers (True) or exits (False); raise on timeout."""
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            if _ping(self.host, self._port, ca_file=self.ca_file).startswith(_READY):
                return True
            time.sleep(0.02)
        self.kill()
        raise TimeoutError(f"redis-server on {self.host}:{self._port} did not answer PING within "
                           f"{self.startup_timeout_s} s: {self._log_tail()}")

    def _log_tail(self, lines: int = 5) -> str:
        """The last lines of the server's log, for error messages."""
        log = self.directory / "redis.log" if self.directory is not None else None
        if log is None or not log.exists():
            return "no log"
        text = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "empty log"


def _quoted(value: str) -> str:
    """`value` escaped for a double-quoted string in redis.conf."""
    return value.replace("\\", "\\\\").replace('"', '\\"')
