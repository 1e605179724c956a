"""The loopback LLM itself: an OpenAI-compatible HTTP server on 127.0.0.1.

``LoopbackLLM`` owns the state (requests received, requests in flight, injected
faults); ``_Server`` and ``_Handler`` move bytes; what goes in the answers comes
from ``kura_magic.testing.replies``. Standard library only.
"""

from __future__ import annotations

import json
import random
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kura_magic.testing.replies import (
    Reply, chat_completion_body, chat_request_error, context_too_long, embedding_inputs,
    embeddings_body, embeddings_request, error, fault_reply, json_content, models_body,
    parse_json_body, refusal, reply_for, text_of, word_count,
)
from kura_magic.testing.batches import BatchDesk
from kura_magic.testing.provider_shapes import (
    REFUSE, TOO_LONG, anthropic_error, anthropic_message, chat_marker_reply, messages_marker_reply,
)

__all__ = ["LoopbackLLM", "RecordedRequest"]

_SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "proxy-authorization"})


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
        return embedding_inputs(self.body.get("input")) or []

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Chat messages (``[]`` for other requests)."""
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []


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

    def take(self, api_key: str) -> tuple[float, Reply | None]:
        """(seconds to hang, error reply or None) for the next request, made with `api_key`."""
        hang = self.hang_s if self.hang_left > 0 else 0.0
        self.hang_left = max(0, self.hang_left - 1)
        if self.fail_left > 0:
            self.fail_left -= 1
            return hang, fault_reply(self.fail_status, self.fail_retry, api_key=api_key)
        if self.rate > 0 and self.rng.random() < self.rate:
            return hang, fault_reply(self.rate_status, self.rate_retry, api_key=api_key)
        return hang, None


def _bearer(headers: dict[str, str]) -> str:
    """The API key a request presented (``Authorization: Bearer KEY``), or ''."""
    return headers.get("authorization", "").removeprefix("Bearer ").strip()


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
        self._port = self._bound_port = port
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._in_flight = self._peak = self._generation = self._handling = 0
        self._last_activity = 0.0
        self._faults = _Faults()
        self._wake = threading.Event()  # set by stop() and reset(): ends pauses at once
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.batches = BatchDesk(self._answer_line)  # the Files and Batch APIs

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

    def settle(self, *, quiet_s: float = 0.05, timeout_s: float = 2.0) -> None:
        """Wait until no request is being handled and none has come for ``quiet_s``.

        A run that failed fast may have a call on the wire that the server picks up a moment
        later; settling before ``reset()`` keeps it from taking the next test's injected fault.
        Example: ``server.settle(); server.reset()``.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                idle = self._handling == 0 and time.monotonic() - self._last_activity >= quiet_s
            if idle:
                return
            time.sleep(quiet_s / 5)

    def reset(self) -> None:
        """Forget requests, batches and the peak, clear injected faults (not ``latency_s`` or the batch delay).

        Requests still in flight (say, hanging after their client gave up) are woken and
        no longer counted, and the server settles first, so one test's leftovers never
        inflate the next one's counts or take its injected faults.
        """
        with self._lock:
            self._wake.set()
            self._wake = threading.Event()
        self.settle()
        with self._lock:
            self._requests.clear()
            self._faults = _Faults()
            self.batches = BatchDesk(self._answer_line, delay_s=self.batches.delay_s)
            self._generation += 1
            self._in_flight = self._peak = 0

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
        """A request being handled, from its arrival until its reply has been sent (`settle`)."""
        with self._lock:
            self._handling += 1
            self._last_activity = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._handling -= 1
                self._last_activity = time.monotonic()

    @contextmanager
    def _counted_in_flight(self) -> Iterator[None]:
        """A request in flight until its reply is ready, before a byte of it is sent: a client
        that starts its next request on reading the reply cannot be counted twice."""
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

    def _respond(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        route = _route(path)
        batch_route = self.batches.handles(route)  # multipart uploads and empty POSTs: not JSON
        body, bad_json = parse_json_body(raw) if method != "GET" and not batch_route else ({}, None)
        redacted = {k: "<redacted>" if k in _SECRET_HEADERS else v for k, v in headers.items()}
        with self._lock:
            self._requests.append(RecordedRequest(path, body, redacted, method))
            hang, fault = self._faults.take(_bearer(headers))
            wake = self._wake
        if self.latency_s > 0 or hang > 0:
            wake.wait(self.latency_s + hang)
        if fault is not None:
            return fault
        if bad_json is not None:
            return bad_json
        if batch_route:
            return self.batches.respond(method, route, headers, raw)
        endpoint = _ENDPOINTS.get((method, route))
        if endpoint is None:
            return error(404, f"Invalid URL ({method} {path})")
        return endpoint(self, body)

    def _marker_error(self, texts: list[str], param: str) -> Reply | None:
        """A refusal or a too-long error if ``texts`` carry that marker, refusals first."""
        joined = "\n".join(texts)
        for marker, make_error in ((REFUSE, refusal), (TOO_LONG, context_too_long)):
            if marker in joined:
                return make_error(param)
        return None

    def _chat(self, body: dict[str, Any]) -> Reply:
        bad_request = chat_request_error(body)
        if bad_request:
            return bad_request
        messages: list[dict[str, Any]] = body["messages"]  # a non-empty list of dicts, as just checked
        texts = [text_of(m.get("content")) for m in messages]
        marked = chat_marker_reply("\n".join(texts), body, word_count(texts))
        if marked:
            return marked
        try:
            content = self._content(messages, body.get("response_format"))
        except Exception as exc:  # the user's reply callable, or an impossible schema
            return error(500, f"The loopback LLM could not answer: {exc!r}", kind="server_error")
        return Reply(200, chat_completion_body(body, content, word_count(texts)))

    def _messages(self, body: dict[str, Any]) -> Reply:
        """Anthropic's Messages API (``/v1/messages``): the same replies, Anthropic's shapes."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return anthropic_error(400, "invalid_request_error", "messages: field required")
        texts = [text_of(body.get("system"))] + [text_of(m.get("content")) for m in messages]
        marked = messages_marker_reply("\n".join(texts), body, word_count(texts))
        return marked or anthropic_message(body, self._content(messages, None), word_count(texts))

    def _content(self, messages: list[dict[str, Any]], response_format: Any) -> str:
        if self.reply is not None:
            return self.reply(messages)  # verbatim, even in JSON mode (to test bad output)
        return json_content(response_format, messages) or reply_for(messages)

    def _embeddings(self, body: dict[str, Any]) -> Reply:
        request = embeddings_request(body, self.embedding_dims)
        if isinstance(request, Reply):
            return request
        texts, dims = request
        marked = self._marker_error(texts, "input")
        if marked:
            return marked
        as_b64 = body.get("encoding_format") == "base64"
        return Reply(200, embeddings_body(texts, dims=dims, model=body.get("model"), as_b64=as_b64))

    def _answer_line(self, endpoint: str, body: dict[str, Any]) -> Reply:
        """A batch line's answer: what a call to `endpoint` with `body` would get."""
        return self._embeddings(body) if endpoint.endswith("/embeddings") else self._chat(body)

    def _models(self, body: dict[str, Any]) -> Reply:
        return Reply(200, models_body())


_ENDPOINTS: dict[tuple[str, str], Callable[[LoopbackLLM, dict[str, Any]], Reply]] = {
    ("POST", "/chat/completions"): LoopbackLLM._chat,
    ("POST", "/embeddings"): LoopbackLLM._embeddings,
    ("POST", "/messages"): LoopbackLLM._messages,
    ("GET", "/models"): LoopbackLLM._models,
}


def _route(path: str) -> str:
    """``/v1/chat/completions?x=1`` -> ``/chat/completions``."""
    path = path.split("?", 1)[0].rstrip("/")
    return path[3:] if path.startswith("/v1/") else path


# ---------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 resets connections when hundreds of clients
    # connect at once (a run with max_concurrency=200).
    request_queue_size = 1024

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
            with llm._counted_in_flight():
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

    def _send(self, reply: Reply) -> None:
        data = reply.raw if reply.raw is not None else json.dumps(reply.body).encode("utf-8")
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
