"""Cache keys: a versioned prefix plus sha256 over canonical JSON of everything
that changes a model's answer (and nothing that does not, like the API key)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel

from kura_magic.errors import ConfigError, SchemaError

# Changing this number invalidates every entry; bumping the package version does not.
# 2: numbers that compare equal give one key (temperature=0 and 0.0 were two entries).
CACHE_FORMAT = 2

CallKind = Literal["chat", "embedding"]

# Call settings that change how a request travels, never what comes back.
# Secrets live here too, so they can never reach a key.
TRANSPORT_PARAMS = frozenset(
    {
        "api_key",
        "api_base",
        "base_url",
        "api_version",
        "organization",
        "timeout",
        "request_timeout",
        "num_retries",
        "max_retries",
        "extra_headers",
        "headers",
        "metadata",
        "user",
        "stream",
        "mock_response",
        "input_cost_per_token",  # what a call is charged at, not what it answers
        "output_cost_per_token",
    }
)


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: equal data gives equal text.

    Example:
        >>> canonical_json({"b": 1, "a": [1.0, "x"]})
        '{"a":[1.0,"x"],"b":1}'
    """
    return _CANONICAL.encode(value)


def equal_numbers_alike(value: Any) -> Any:
    """`value` with every integral float made an int, so numbers that compare equal encode
    alike (bools stay bools; lists, tuples and dicts are walked).

    Example:
        >>> equal_numbers_alike({"temperature": 0.0, "top_p": 0.5, "stop": [1.0, True]})
        {'temperature': 0, 'top_p': 0.5, 'stop': [1, True]}
    """
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        return {k: equal_numbers_alike(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [equal_numbers_alike(v) for v in value]
    return value


def _encode_other(value: Any) -> Any:
    if isinstance(value, type) and issubclass(value, BaseModel):
        return schema_json(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise ConfigError(
        f"cannot use {type(value).__name__} value {value!r} in a cache key: "
        "pass plain JSON data (str, number, bool, list, dict) or a pydantic model"
    )


@lru_cache(maxsize=256)
def schema_json(schema: type[BaseModel]) -> dict[str, Any]:
    """The full JSON Schema of a pydantic model (what the key hashes, not the name)."""
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise SchemaError(f"schema must be a pydantic BaseModel subclass, got {schema!r}")
    return schema.model_json_schema()


_json_string = json.encoder.encode_basestring  # what _CANONICAL writes for a str (ensure_ascii=False)
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_encode_other
)


def output_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters that can change the answer, with None values dropped.

    Example:
        >>> output_params({"temperature": 0, "api_key": "sk-x", "seed": None})
        {'temperature': 0}
    """
    return {k: v for k, v in params.items() if k not in TRANSPORT_PARAMS and v is not None}


def cache_key(
    *,
    model: str,
    messages: Sequence[Mapping[str, Any]] = (),
    schema: type[BaseModel] | None = None,
    params: Mapping[str, Any] | None = None,
    kind: CallKind = "chat",
    sample: int = 0,
) -> str:
    """The cache key a call would have; compare two to see why one was a miss. `sample` tells
    repeated generations of one call apart; sample 0 is the plain call's key.

    Example:
        >>> a = cache_key(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        >>> b = cache_key(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
        ...               params={"temperature": 0.7})
        >>> a.startswith("km2-chat-"), a == b
        (True, False)
    """
    return KeyRecipe.of(model=model, schema=schema, params=params, kind=kind, sample=sample).key(messages)


@dataclass(frozen=True)
class KeyRecipe:
    """Everything a key hashes except the messages, canonicalised once, so that the many
    keys of one run each cost one encoding of their messages and one sha256.

    The key is sha256 over the canonical JSON of {format, kind, messages, model, params,
    schema}; with sorted keys the messages come third, so that text is `head`, the
    messages, then `tail`.

    Example:
        >>> recipe = KeyRecipe.of(model="m", params={"temperature": 0})
        >>> recipe.key([{"role": "user", "content": "hi"}]) == cache_key(
        ...     model="m", params={"temperature": 0}, messages=[{"role": "user", "content": "hi"}])
        True
    """

    kind: CallKind
    head: str
    tail: str

    @classmethod
    def of(
        cls, *, model: str, schema: type[BaseModel] | None = None,
        params: Mapping[str, Any] | None = None, kind: CallKind = "chat", sample: int = 0,
    ) -> KeyRecipe:
        """The recipe of calls to `model` with `schema` and `params` (see `cache_key`); a
        `sample` past 0 is hashed too, never sent (sample 0 keeps the plain call's key)."""
        rest = equal_numbers_alike({
            "model": model,
            "params": output_params(params or {}),
            "schema": schema_json(schema) if schema is not None else None,
            **({"sample": sample} if sample else {}),
        })
        head = f'{{"format":{CACHE_FORMAT},"kind":{canonical_json(kind)},"messages":'
        return cls(kind, head, "," + canonical_json(rest)[1:])

    def key(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The key of one call with these messages (only their role and content count)."""
        text = _text_messages_json(messages)
        if text is None:
            text = canonical_json([{"role": m["role"], "content": _content(m["content"])} for m in messages])
        digest = hashlib.sha256(f"{self.head}{text}{self.tail}".encode("utf-8")).hexdigest()
        return f"km{CACHE_FORMAT}-{self.kind}-{digest}"


def _text_messages_json(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """`canonical_json` of the messages' role and content when every one is plain text (a
    run's prompts), written directly: the same text, without the encoder's walk. None
    otherwise (structured content, a number): the encoder's turn.

    Example:
        >>> messages = [{"role": "user", "content": 'caf\u00e9 "x"'}]
        >>> _text_messages_json(messages) == canonical_json(messages)
        True
    """
    parts = []
    for message in messages:
        role, content = message["role"], message["content"]
        if type(role) is not str or type(content) is not str:
            return None
        # Sorted keys put "content" before "role"; strings escaped as with ensure_ascii=False.
        parts.append(f'{{"content":{_json_string(content)},"role":{_json_string(role)}}}')
    return f"[{','.join(parts)}]"


def _content(content: Any) -> Any:
    """A message's content as the key sees it: text as it is (the common case, kept cheap),
    structured parts with their numbers made alike."""
    return content if isinstance(content, str) else equal_numbers_alike(content)
