"""What a provider sent with a failed call, and what kind of failure that makes.

A failure is sorted from what the provider sent: the HTTP status and the error body's
`code`, `type` and `param` (OpenAI, Azure and Anthropic shapes), with litellm's exception
class as one signal among them, so that a litellm release that moves its own heuristics
does not change what is cached:

- transient (429, 5xx, timeouts, connection errors): retried with backoff, never cached;
- deterministic (content policy, context too long): cached as errors;
- fatal (a rejected key, an unknown model): the run stops, nothing more is spent;
- other (any other bad request): reported, not cached.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

ErrorKind = Literal["transient", "deterministic", "fatal", "other"]
Sorted = tuple[ErrorKind, str]

CONTENT_POLICY: Sorted = ("deterministic", "content_policy")
CONTEXT_WINDOW: Sorted = ("deterministic", "context_window")

# The error body's `code` (or Azure's `innererror.code`) -> what it means.
_CODES: dict[str, Sorted] = {
    "content_policy_violation": CONTENT_POLICY,  # OpenAI
    "content_filter": CONTENT_POLICY,  # Azure OpenAI, and OpenAI's own filter
    "ResponsibleAIPolicyViolation": CONTENT_POLICY,  # Azure's innererror
    "context_length_exceeded": CONTEXT_WINDOW,  # OpenAI, Azure
    "string_above_max_length": CONTEXT_WINDOW,  # OpenAI, one message too long
}
# Anthropic sends no code: its type is `invalid_request_error` and its message says why.
_MESSAGE_STARTS: dict[str, Sorted] = {
    "prompt is too long": CONTEXT_WINDOW,
    "input is too long": CONTEXT_WINDOW,
}
# Failures where nothing was received: litellm's class is all there is (it gives them
# made-up statuses, 408 and 500).
_TRANSPORT_CLASSES: dict[str, Sorted] = {
    "Timeout": ("transient", "timeout"),
    "APIConnectionError": ("transient", "connection"),
}
_STATUSES: dict[int, Sorted] = {
    401: ("fatal", "authentication"),
    403: ("fatal", "authentication"),
    404: ("fatal", "unknown_model"),
    408: ("transient", "timeout"),
    409: ("transient", "server_error"),
    429: ("transient", "rate_limit"),
}
# litellm's class name -> what it means, looked up along the MRO (most specific first),
# for failures whose status and body said nothing more.
_CLASSES: dict[str, Sorted] = {
    "ContentPolicyViolationError": CONTENT_POLICY,
    "ContextWindowExceededError": CONTEXT_WINDOW,
    "RateLimitError": ("transient", "rate_limit"),
    "InternalServerError": ("transient", "server_error"),
    "ServiceUnavailableError": ("transient", "server_error"),
    "BadGatewayError": ("transient", "server_error"),
    "AuthenticationError": ("fatal", "authentication"),
    "PermissionDeniedError": ("fatal", "authentication"),
    "NotFoundError": ("fatal", "unknown_model"),
    "BadRequestError": ("other", "bad_request"),
}


def is_transient(error_type: str | None) -> bool:
    """True for a failure that is retried and never cached (it may well work next time).

    Example:
        >>> is_transient("rate_limit"), is_transient("content_policy"), is_transient(None)
        (True, False, False)
    """
    return error_type in _TRANSIENT_TYPES


@dataclass(frozen=True)
class Failure:
    """A failed provider call, sorted by `classify()`."""

    kind: ErrorKind
    error_type: str
    message: str
    retry_after_s: float | None = None


_TRANSIENT_TYPES = frozenset(
    error_type for table in (_TRANSPORT_CLASSES, _STATUSES, _CLASSES) for kind, error_type in table.values()
    if kind == "transient"
) | {"server_error"}


@dataclass(frozen=True)
class ProviderError:
    """The parts of a failed call's reply that say what went wrong.

    Example:
        >>> body = {"error": {"message": "too long", "type": "invalid_request_error",
        ...                   "param": "messages", "code": "context_length_exceeded"}}
        >>> ProviderError.of_body(400, body).code
        'context_length_exceeded'
    """

    status: int | None
    code: str | None = None
    type: str | None = None
    param: str | None = None
    message: str | None = None
    inner_code: str | None = None

    @classmethod
    def of(cls, exc: BaseException) -> ProviderError:
        """What `exc` carries of the provider's reply: its status and error body."""
        status = getattr(exc, "status_code", None)
        return cls.of_body(status if isinstance(status, int) else None, _error_body(exc))

    @classmethod
    def of_body(cls, status: int | None, body: Mapping[str, Any]) -> ProviderError:
        """Read OpenAI's and Azure's `{"error": {...}}` and Anthropic's
        `{"type": "error", "error": {...}}` alike."""
        nested = body.get("error")
        error: Mapping[str, Any] = nested if isinstance(nested, Mapping) else body
        found = error.get("innererror")
        inner: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        return cls(status, _text(error.get("code")), _text(error.get("type")), _text(error.get("param")),
                   _text(error.get("message")), _text(inner.get("code")))

    def meaning(self) -> Sorted | None:
        """What the body's code (or Anthropic's message) says, if it says anything we know."""
        for code in (self.inner_code, self.code):
            if code in _CODES:
                return _CODES[code]
        message = (self.message or "").lower()
        return next((meaning for start, meaning in _MESSAGE_STARTS.items() if message.startswith(start)), None)


def classify(exc: BaseException) -> Failure:
    """Sort a provider exception into transient / deterministic / fatal / other, from what
    the provider sent first and litellm's class second.

    Example:
        >>> class Refused(Exception):
        ...     status_code = 400
        ...     body = {"code": "content_policy_violation", "message": "Rejected by the safety system."}
        >>> classify(Refused("BadRequestError")).error_type, classify(Refused()).message
        ('content_policy', 'Rejected by the safety system.')
    """
    sent = ProviderError.of(exc)
    kind, error_type = (
        sent.meaning()
        or _by_class(exc, _TRANSPORT_CLASSES)
        or _by_status(sent.status)
        or _by_class(exc, _CLASSES)
        or ("other", type(exc).__name__)
    )
    return Failure(kind, error_type, sent.message and _one_line(sent.message) or short_message(exc),
                   _retry_after(exc))


def classify_reply(status: int | None, body: Mapping[str, Any]) -> Failure:
    """Sort a failed reply that came back as data (a line of a batch's error file) as
    `classify` sorts an exception: by what the body says, else by the status.

    Example:
        >>> classify_reply(400, {"error": {"code": "content_policy_violation", "message": "No."}}).kind
        'deterministic'
    """
    sent = ProviderError.of_body(status, body)
    kind, error_type = sent.meaning() or _by_status(status) or ("other", "bad_request")
    return Failure(kind, error_type, _one_line(sent.message) if sent.message else error_type)


def _by_status(status: int | None) -> Sorted | None:
    if status is not None and status >= 500:
        return ("transient", "server_error")
    return _STATUSES.get(status) if status is not None else None


def _by_class(exc: BaseException, table: Mapping[str, Sorted]) -> Sorted | None:
    return next((table[cls.__name__] for cls in type(exc).__mro__ if cls.__name__ in table), None)


def _error_body(exc: BaseException) -> Mapping[str, Any]:
    """The provider's error body: as the SDK parsed it, as the reply carried it, or as
    litellm quoted it in its message (Anthropic's errors reach us only that way)."""
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping) and body:
        return body
    response = getattr(exc, "response", None)
    try:
        parsed = json.loads(getattr(response, "text", "") or "")
    except (ValueError, TypeError, AttributeError, RuntimeError):  # httpx raises if unread
        parsed = None
    return parsed if isinstance(parsed, Mapping) else _quoted_json(str(exc))


def _quoted_json(text: str) -> Mapping[str, Any]:
    """The first JSON object quoted in `text`, or {}."""
    start = text.find("{")
    while start != -1:
        try:
            found, _ = json.JSONDecoder().raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
            continue
        return found if isinstance(found, Mapping) else {}
    return {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


_SECRET_PATTERN = re.compile(r"\b(sk|key|token)-[A-Za-z0-9_*\-]{4,}", re.IGNORECASE)


def _one_line(text: str) -> str:
    """`text` on one line, at most 300 characters, with anything shaped like a key removed."""
    return _SECRET_PATTERN.sub(r"\1-<redacted>", " ".join(text.split()))[:300]


def short_message(exc: BaseException) -> str:
    """One line of an exception's message, litellm's prefixes and any key removed.

    Example:
        >>> short_message(ValueError("litellm.BadRequestError: OpenAIException - key sk-abcdef12 bad"))
        'BadRequestError: key sk-<redacted> bad'
    """
    text = str(exc)
    for prefix in ("litellm.", "OpenAIException - "):
        text = text.replace(prefix, "")
    return _one_line(text)


def _retry_after(exc: BaseException) -> float | None:
    """Seconds the provider asked us to wait (retry-after-ms or Retry-After), if any."""
    response = getattr(exc, "response", None)
    headers = dict(getattr(response, "headers", None) or {})
    headers.update(getattr(exc, "litellm_response_headers", None) or {})
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    if "retry-after-ms" in lowered:
        return _as_seconds(lowered["retry-after-ms"], scale=0.001)
    if "retry-after" in lowered:
        return _as_seconds(lowered["retry-after"], scale=1.0)
    return None


def _as_seconds(value: str, *, scale: float) -> float | None:
    try:
        return max(0.0, float(value) * scale)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None
