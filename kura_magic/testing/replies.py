"""What the loopback LLM answers: deterministic reply text, embedding vectors, JSON
content for a ``response_format``, the OpenAI-shaped bodies (completions,
embeddings, models) that carry them, and the 400s for malformed requests.

Pure functions of the request: no sockets, no threads, no state. Standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
import time
import uuid
from typing import Any, NamedTuple

from kura_magic.testing.fake_json import fake_value

__all__ = [
    "Reply", "chat_completion_body", "chat_request_error", "context_too_long", "embedding_for",
    "embedding_inputs", "embeddings_body", "embeddings_request", "error", "fault_reply",
    "json_content", "models_body", "parse_json_body", "refusal", "reply_for", "text_of", "word_count",
]

_JSON_MODES = ("json_object", "json_schema")
_ENCODINGS = ("float", "base64", None)
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


class Reply(NamedTuple):
    """One HTTP answer: status, JSON body and extra headers (`raw`: bytes sent instead of the
    JSON body, e.g. a file's content)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = {}
    raw: bytes | None = None


# ---------------------------------------------------------------- text and vectors


def text_of(content: Any) -> str:
    """Text of a message content: a string or a list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def word_count(texts: list[str]) -> int:
    """Words across ``texts``, at least 1: the loopback's token count."""
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
    words = text_of(last.get("content") if isinstance(last, dict) else None).split()
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


def embedding_inputs(value: Any) -> list[str] | None:
    """``input`` as a list of texts; token-id lists become their repr; None if invalid."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, int) for v in value):
        return [repr(value)]
    if all(isinstance(v, (str, list)) for v in value):
        return [v if isinstance(v, str) else repr(v) for v in value]
    return None


def json_content(response_format: Any, messages: list[dict[str, Any]]) -> str | None:
    """JSON text for a ``response_format`` asking for JSON, else None."""
    if not isinstance(response_format, dict):
        return None
    kind, text = response_format.get("type"), reply_for(messages)
    schema = (response_format.get("json_schema") or {}).get("schema")
    if kind == "json_schema" and isinstance(schema, dict):
        return json.dumps(fake_value(schema, text=text, digest=_digest(messages)))
    if kind in _JSON_MODES:
        return json.dumps({"summary": text})
    return None


# ---------------------------------------------------------------- success bodies


def chat_completion_body(body: dict[str, Any], content: str, prompt_tokens: int) -> dict[str, Any]:
    """The chat.completion body; ``max_tokens`` cuts plain text to that many words."""
    content, completion_words, finish = _truncated(body, content)
    requested = body.get("n")
    n = requested if isinstance(requested, int) and requested > 0 else 1
    choices = [{"index": i, "message": {"role": "assistant", "content": content}, "finish_reason": finish}
               for i in range(n)]
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": max(1, completion_words) * len(choices)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"), "choices": choices, "usage": usage,
            "system_fingerprint": "fp_loopback"}


def _truncated(body: dict[str, Any], content: str) -> tuple[str, int, str]:
    """(content, its word count, finish_reason) after ``max_tokens``; JSON is never cut."""
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    words = content.split()
    json_mode = (body.get("response_format") or {}).get("type") in _JSON_MODES
    if isinstance(limit, int) and 0 < limit < len(words) and not json_mode:
        return " ".join(words[:limit]), limit, "length"
    return content, len(words), "stop"


def embeddings_body(texts: list[str], *, dims: int, model: Any, as_b64: bool) -> dict[str, Any]:
    """The embeddings list body: one vector per text, floats or base64 float32."""
    data = [{"object": "embedding", "index": i, "embedding": _encoded(embedding_for(t, dims), as_b64)}
            for i, t in enumerate(texts)]
    tokens = sum(word_count([t]) for t in texts)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}


def _encoded(vector: list[float], as_b64: bool) -> list[float] | str:
    if not as_b64:
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def models_body() -> dict[str, Any]:
    """The ``GET /models`` body: one model, ``loopback``."""
    model = {"id": "loopback", "object": "model", "created": 0, "owned_by": "kura_magic"}
    return {"object": "list", "data": [model]}


# ---------------------------------------------------------------- requests and errors


def parse_json_body(raw: bytes) -> tuple[dict[str, Any], Reply | None]:
    """(body, None), or ({}, a 400 reply) when ``raw`` is not a JSON object."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}, error(400, "We could not parse the JSON body of your request. Send valid JSON.")
    if not isinstance(body, dict):
        return {}, error(400, "The request body must be a JSON object.")
    return body, None


def chat_request_error(body: dict[str, Any]) -> Reply | None:
    """A 400 reply if the chat request is malformed or asks to stream, else None."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return error(400, "'messages' must be a non-empty list of message objects.", param="messages")
    if body.get("stream"):
        return error(400, "The loopback LLM does not stream; call it with stream=False.", param="stream")
    return None


def embeddings_request(body: dict[str, Any], default_dims: int) -> tuple[list[str], int] | Reply:
    """(texts, dimensions) of an embeddings request, or a 400 reply naming its first bad parameter.

    >>> embeddings_request({"input": "hi", "dimensions": 3}, 8)
    (['hi'], 3)
    >>> embeddings_request({"input": []}, 8).body["error"]["param"]
    'input'
    """
    texts = embedding_inputs(body.get("input"))
    dims = default_dims if body.get("dimensions") is None else body["dimensions"]
    if texts is None:
        message = "'input' must be a string or a non-empty list of strings or token ids."
        return error(400, message, param="input")
    if not isinstance(dims, int) or isinstance(dims, bool) or dims < 1:
        return error(400, "'dimensions' must be a positive integer.", param="dimensions")
    if body.get("encoding_format", "float") not in _ENCODINGS:
        return error(400, "'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    return texts, dims


def error(status: int, message: str, *, kind: str = "invalid_request_error", code: str | None = None,
          param: str | None = None, headers: dict[str, str] | None = None) -> Reply:
    """An OpenAI-shaped error reply."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return Reply(status, body, headers or {})


def fault_reply(status: int, retry_after_s: float | None, *, api_key: str = "") -> Reply:
    """The error for an injected HTTP ``status``, with Retry-After headers if given. A 401
    echoes the presented ``api_key`` in full, as the least careful provider would.

    >>> fault_reply(401, None, api_key="sk-abc123").body["error"]["message"]
    'Incorrect API key provided: sk-abc123 (injected).'
    """
    default = ("server_error" if status >= 500 else "invalid_request_error", None, f"Injected HTTP {status}.")
    kind, code, message = _STATUS_ERRORS.get(status, default)
    if status == 401 and api_key:
        message = f"Incorrect API key provided: {api_key} (injected)."
    headers = {}
    if retry_after_s is not None:
        headers = {"Retry-After": f"{retry_after_s:g}", "retry-after-ms": str(round(retry_after_s * 1000))}
    return error(status, message, kind=kind, code=code, headers=headers)


def refusal(param: str) -> Reply:
    """A content-policy refusal (``param`` is ignored, as OpenAI leaves it null)."""
    return error(400, _REFUSAL, code="content_policy_violation")


def context_too_long(param: str) -> Reply:
    """A context-window error naming the offending ``param``."""
    return error(400, _TOO_LONG, code="context_length_exceeded", param=param)
