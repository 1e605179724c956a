"""A loopback OpenAI-compatible LLM server for tests and offline notebooks.

Standard library only: no IPython, ipywidgets or litellm. Answers are
deterministic (equal prompts, equal answers), JSON mode answers validate under
the requested JSON schema, and faults (429/5xx, hangs, refusals, too-long
prompts) can be injected while it runs. ``python -m kura_magic.testing`` serves
one from the command line.

Example::

    with LoopbackLLM() as server:
        litellm.completion(model="openai/gpt-4o-mini", api_base=server.url,
                           api_key="sk-test", messages=[{"role": "user", "content": "hi"}])
        assert server.request_count == 1
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import random
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

from kura_magic.fake_json import fake_value

__all__ = ["LoopbackLLM", "RecordedRequest", "embedding_for", "main", "reply_for"]

_SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "proxy-authorization"})
_STATUS_ERRORS: dict[int, tuple[str, str | None, str]] = {
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided (injected)."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests (injected)."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway (injected)."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout (injected)."),
}
_REFUSAL = (
    "Your request was rejected as a result of our safety system. Your prompt may contain "
    "text that is not allowed by our safety system."
)
_TOO_LONG = (
    "This model's maximum context length is 8192 tokens. However, your messages resulted in "
    "9000 tokens. Please reduce the length of the messages."
)


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the server saw it: header names lower-cased, secrets redacted.

    Example: ``server.chat_requests[0].messages[-1]["content"]``
    """

    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    method: str = "POST"

    @property
    def model(self) -> str | None:
        """The request's ``model``, if any."""
        return self.body.get("model")

    @property
    def inputs(self) -> list[str]:
        """Embedding inputs normalised to a list of strings (``[]`` if invalid)."""
        return _embedding_inputs(self.body.get("input")) or []

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Chat messages (``[]`` for other requests)."""
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []


class _Reply(NamedTuple):
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = {}


# ---------------------------------------------------------------- pure helpers


def _text_of(content: Any) -> str:
    """Text of a message content: a string or a list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _word_count(texts: list[str]) -> int:
    return max(1, sum(len(t.split()) for t in texts))


def _digest(messages: list[dict[str, Any]]) -> str:
    canonical = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def reply_for(messages: list[dict[str, Any]]) -> str:
    """The default deterministic reply: the last user message's start plus a hash.

    >>> reply_for([{"role": "user", "content": "Where is my parcel?"}])[:29]
    'Summary: Where is my parcel? '
    """
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    last = (users or messages or [{}])[-1]
    words = _text_of(last.get("content") if isinstance(last, dict) else None).split()
    return f"Summary: {' '.join(words[:12])} [{_digest(messages)[:8]}]"


def embedding_for(text: str, dims: int = 16) -> list[float]:
    """The deterministic unit vector the server returns for ``text``.

    >>> round(sum(v * v for v in embedding_for("hello", 8)), 5)
    1.0
    """
    blocks = math.ceil(dims * 4 / 32)
    raw = b"".join(hashlib.sha256(f"{i}:{text}".encode()).digest() for i in range(blocks))
    values = [u / 2**31 - 1.0 for u in struct.unpack(f"<{dims}I", raw[: dims * 4])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    packed = struct.pack(f"<{dims}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dims}f", packed))  # float32 values, same as base64


def _embedding_inputs(value: Any) -> list[str] | None:
    """``input`` as a list of texts; token-id lists become their repr."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, int) for v in value):
        return [repr(value)]
    if all(isinstance(v, (str, list)) for v in value):
        return [v if isinstance(v, str) else repr(v) for v in value]
    return None


def _error(status: int, message: str, *, kind: str = "invalid_request_error", code: str | None = None,
           param: str | None = None, headers: dict[str, str] | None = None) -> _Reply:
    """An OpenAI-shaped error reply."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return _Reply(status, body, headers or {})


def _fault_reply(status: int, retry_after_s: float | None) -> _Reply:
    default = ("server_error" if status >= 500 else "invalid_request_error", None, f"Injected HTTP {status}.")
    kind, code, message = _STATUS_ERRORS.get(status, default)
    headers = {}
    if retry_after_s is not None:
        headers = {"Retry-After": f"{retry_after_s:g}", "retry-after-ms": str(round(retry_after_s * 1000))}
    return _error(status, message, kind=kind, code=code, headers=headers)


def _route(path: str) -> str:
    """``/v1/chat/completions?x=1`` -> ``/chat/completions``."""
    path = path.split("?", 1)[0].rstrip("/")
    return path[3:] if path.startswith("/v1/") else path


def _parse_json(raw: bytes) -> tuple[dict[str, Any], _Reply | None]:
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}, _error(400, "We could not parse the JSON body of your request. Send valid JSON.")
    if not isinstance(body, dict):
        return {}, _error(400, "The request body must be a JSON object.")
    return body, None


def _json_content(response_format: Any, messages: list[dict[str, Any]]) -> str | None:
    """JSON text for a ``response_format`` asking for JSON, else None."""
    if not isinstance(response_format, dict):
        return None
    kind, text = response_format.get("type"), reply_for(messages)
    schema = (response_format.get("json_schema") or {}).get("schema")
    if kind == "json_schema" and isinstance(schema, dict):
        return json.dumps(fake_value(schema, text=text, digest=_digest(messages)))
    if kind in ("json_object", "json_schema"):
        return json.dumps({"summary": text})
    return None


# ---------------------------------------------------------------- the server


@dataclass
class _Faults:
    """Injected failures and hangs, consumed one request at a time (under the server's lock)."""

    rate: float = 0.0
    rate_status: int = 429
    rate_retry: float | None = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    fail_left: int = 0
    fail_status: int = 500
    fail_retry: float | None = None
    hang_left: int = 0
    hang_s: float = 0.0

    def take(self) -> tuple[float, _Reply | None]:
        """(seconds to hang, error reply or None) for the next request."""
        hang = self.hang_s if self.hang_left > 0 else 0.0
        self.hang_left = max(0, self.hang_left - 1)
        if self.fail_left > 0:
            self.fail_left -= 1
            return hang, _fault_reply(self.fail_status, self.fail_retry)
        if self.rate > 0 and self.rng.random() < self.rate:
            return hang, _fault_reply(self.rate_status, self.rate_retry)
        return hang, None


class LoopbackLLM:
    """An OpenAI-compatible server on 127.0.0.1 with deterministic answers.

    Example::

        with LoopbackLLM(latency_s=0.1) as server:
            server.fail_next(1, status=429, retry_after_s=0.05)
            ...  # call server.url as the api_base; inspect server.requests
    """

    def __init__(self, *, latency_s: float = 0.0, embedding_dims: int = 16,
                 reply: Callable[[list[dict[str, Any]]], str] | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.latency_s = latency_s
        self.embedding_dims = embedding_dims
        self.reply = reply
        self.host = host
        self.refuse_marker = "[[refuse]]"
        self.too_long_marker = "[[too-long]]"
        self._port = self._bound_port = port
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._in_flight = self._peak = self._generation = 0
        self._faults = _Faults()
        self._wake = threading.Event()  # set by stop() and reset(): ends pauses at once
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> LoopbackLLM:
        """Bind (a free port if ``port=0``) and serve on a daemon thread."""
        if self._server is None:
            self._wake = threading.Event()
            self._server = _Server((self.host, self._port), self)
            self._bound_port = self._server.server_address[1]
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                name=f"LoopbackLLM:{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake hanging requests and close open connections."""
        server, self._server = self._server, None
        if server is None:
            return
        self._wake.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port once started (the requested one before)."""
        return self._bound_port

    @property
    def url(self) -> str:
        """The ``api_base``: ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    # what was received
    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received, in order."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        """Every HTTP request, failed and injected ones included."""
        with self._lock:
            return len(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """Requests to ``/chat/completions``."""
        return [r for r in self.requests if _route(r.path) == "/chat/completions"]

    @property
    def embedding_requests(self) -> list[RecordedRequest]:
        """Requests to ``/embeddings``."""
        return [r for r in self.requests if _route(r.path) == "/embeddings"]

    @property
    def peak_in_flight(self) -> int:
        """The most requests handled at the same moment."""
        with self._lock:
            return self._peak

    def reset(self) -> None:
        """Forget requests and the peak, clear injected faults (not ``latency_s``).

        Requests still in flight (say, hanging after their client gave up) are woken
        and no longer counted, so one test's leftovers never inflate the next one's peak.
        """
        with self._lock:
            self._requests.clear()
            self._faults = _Faults()
            self._generation += 1
            self._in_flight = self._peak = 0
            self._wake.set()
            self._wake = threading.Event()

    # fault injection
    def fail_rate(self, rate: float, *, status: int = 429, retry_after_s: float | None = 0.0,
                  seed: int = 0) -> None:
        """Fail each request with probability ``rate`` (seeded, deterministic).

        Example: ``server.fail_rate(0.3, status=503)``; ``server.fail_rate(0)`` turns it off.
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, got {rate!r}")
        with self._lock:
            f = self._faults
            f.rate, f.rate_status, f.rate_retry, f.rng = rate, status, retry_after_s, random.Random(seed)

    def fail_next(self, n: int, *, status: int = 500, retry_after_s: float | None = None) -> None:
        """Fail the next ``n`` requests with ``status``. Example: ``server.fail_next(2)``."""
        with self._lock:
            f = self._faults
            f.fail_left, f.fail_status, f.fail_retry = n, status, retry_after_s

    def hang_next(self, n: int, *, seconds: float = 30.0) -> None:
        """Make the next ``n`` requests wait ``seconds`` (or until stop/reset) before answering.

        Example: ``server.hang_next(1, seconds=5)`` then call with ``timeout=0.5``.
        """
        with self._lock:
            self._faults.hang_left, self._faults.hang_s = n, seconds

    # request handling (called from the handler threads)
    @contextmanager
    def _tracking(self) -> Iterator[None]:
        with self._lock:
            generation = self._generation
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                if generation == self._generation:  # else reset() has already let it go
                    self._in_flight -= 1

    def _respond(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> _Reply:
        body, bad_json = _parse_json(raw) if method != "GET" else ({}, None)
        redacted = {k: "<redacted>" if k in _SECRET_HEADERS else v for k, v in headers.items()}
        with self._lock:
            self._requests.append(RecordedRequest(path, body, redacted, method))
            hang, fault = self._faults.take()
            wake = self._wake
        if self.latency_s > 0 or hang > 0:
            wake.wait(self.latency_s + hang)
        if fault is not None:
            return fault
        if bad_json is not None:
            return bad_json
        endpoint = _ENDPOINTS.get((method, _route(path)))
        if endpoint is None:
            return _error(404, f"Invalid URL ({method} {path})")
        return endpoint(self, body)

    def _marker_error(self, texts: list[str], param: str) -> _Reply | None:
        joined = "\n".join(texts)
        if self.refuse_marker and self.refuse_marker in joined:
            return _error(400, _REFUSAL, code="content_policy_violation")
        if self.too_long_marker and self.too_long_marker in joined:
            return _error(400, _TOO_LONG, code="context_length_exceeded", param=param)
        return None

    def _chat(self, body: dict[str, Any]) -> _Reply:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return _error(400, "'messages' must be a non-empty list of message objects.", param="messages")
        if body.get("stream"):
            return _error(400, "The loopback LLM does not stream; call it with stream=False.", param="stream")
        texts = [_text_of(m.get("content")) for m in messages]
        error = self._marker_error(texts, "messages")
        if error:
            return error
        try:
            content = self._content(messages, body.get("response_format"))
        except Exception as exc:  # the user's reply callable, or an impossible schema
            return _error(500, f"The loopback LLM could not answer: {exc!r}", kind="server_error")
        return _Reply(200, _completion(body, content, _word_count(texts)))

    def _content(self, messages: list[dict[str, Any]], response_format: Any) -> str:
        if self.reply is not None:
            return self.reply(messages)  # verbatim, even in JSON mode (to test bad output)
        return _json_content(response_format, messages) or reply_for(messages)

    def _embeddings(self, body: dict[str, Any]) -> _Reply:
        texts = _embedding_inputs(body.get("input"))
        dims = self.embedding_dims if body.get("dimensions") is None else body["dimensions"]
        if texts is None:
            message = "'input' must be a string or a non-empty list of strings or token ids."
            return _error(400, message, param="input")
        if not isinstance(dims, int) or isinstance(dims, bool) or dims < 1:
            return _error(400, "'dimensions' must be a positive integer.", param="dimensions")
        if body.get("encoding_format", "float") not in ("float", "base64", None):
            return _error(400, "'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
        error = self._marker_error(texts, "input")
        if error:
            return error
        as_b64 = body.get("encoding_format") == "base64"
        data = [{"object": "embedding", "index": i, "embedding": _encode(embedding_for(t, dims), as_b64)}
                for i, t in enumerate(texts)]
        tokens = sum(_word_count([t]) for t in texts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return _Reply(200, {"object": "list", "data": data, "model": body.get("model"), "usage": usage})

    def _models(self, body: dict[str, Any]) -> _Reply:
        model = {"id": "loopback", "object": "model", "created": 0, "owned_by": "kura_magic"}
        return _Reply(200, {"object": "list", "data": [model]})


def _encode(vector: list[float], as_b64: bool) -> list[float] | str:
    if not as_b64:
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def _completion(body: dict[str, Any], content: str, prompt_tokens: int) -> dict[str, Any]:
    """The chat.completion body; ``max_tokens`` cuts plain text to that many words."""
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    words, finish = content.split(), "stop"
    json_mode = (body.get("response_format") or {}).get("type") in ("json_object", "json_schema")
    if isinstance(limit, int) and 0 < limit < len(words) and not json_mode:  # never break JSON
        content, words, finish = " ".join(words[:limit]), words[:limit], "length"
    n = body.get("n") if isinstance(body.get("n"), int) and body["n"] > 0 else 1
    choices = [{"index": i, "message": {"role": "assistant", "content": content}, "finish_reason": finish}
               for i in range(n)]
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": max(1, len(words)) * len(choices)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"), "choices": choices, "usage": usage,
            "system_fingerprint": "fp_loopback"}


_ENDPOINTS: dict[tuple[str, str], Callable[[LoopbackLLM, dict[str, Any]], _Reply]] = {
    ("POST", "/chat/completions"): LoopbackLLM._chat,
    ("POST", "/embeddings"): LoopbackLLM._embeddings,
    ("GET", "/models"): LoopbackLLM._models,
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], llm: LoopbackLLM) -> None:
        super().__init__(address, _Handler)
        self.llm = llm
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            (self._connections.add if open_ else self._connections.discard)(connection)

    def close_connections(self) -> None:
        """Shut keep-alive sockets so no handler thread serves after stop()."""
        with self._connections_lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client hanging up is not news
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers and body meet delayed ACKs: ~40 ms a request
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def do_GET(self) -> None:
        llm = self.server.llm
        with llm._tracking():
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = llm._respond(self.command, self.path, headers, self._read_body())
            self._send(reply)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunks()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            return b""
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunks(self) -> bytes:
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline().strip():  # trailers up to the blank line
            pass
        return b"".join(chunks)

    def _send(self, reply: _Reply) -> None:
        data = json.dumps(reply.body).encode("utf-8")
        try:
            self.send_response(reply.status)
            for name, value in {"Content-Type": "application/json", **reply.headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (e.g. its timeout fired during a hang)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no per-request lines on stderr."""


# ---------------------------------------------------------------- command line


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
            partial = args.port_file.with_name(args.port_file.name + ".partial")
            partial.write_text(f"{server.port}\n")
            partial.replace(args.port_file)  # atomic: a poller never reads half a file
        try:
            while not done.wait(0.2):
                pass
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
