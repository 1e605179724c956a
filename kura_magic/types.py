"""Plain data shared by every layer: conversations (Kura's shape), token usage, a chat
request, what the cache keeps per call, and what a store holds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from kura_magic.keys import KeyRecipe

CacheMode = Literal["read_write", "read_only", "refresh", "off"]
CACHE_MODES: tuple[CacheMode, ...] = ("read_write", "read_only", "refresh", "off")


def lone_surrogate(text: str) -> str | None:
    """What is wrong with `text` if it holds a lone surrogate (half of a UTF-16 pair, which
    no request can encode), else None. Callers prefix where the text came from.

    Example:
        >>> print(lone_surrogate("ok \\ud83d"))  # doctest: +ELLIPSIS
        contains a lone surrogate (\\ud83d) at character 3, half of a character: ...
        >>> lone_surrogate("ok") is None
        True
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        escaped = text[exc.start].encode("unicode_escape").decode("ascii")
        return (
            f"contains a lone surrogate ({escaped}) at character {exc.start}, half of a "
            "character: the text was probably cut inside an emoji; re-encode or drop it"
        )
    return None


class Message(BaseModel):
    """One turn of a conversation.

    Example:
        >>> Message(role="user", content="hi").role
        'user'
    """

    role: str = Field(min_length=1)
    content: str
    created_at: datetime | None = None

    @field_validator("role", "content")
    @classmethod
    def _whole_characters(cls, value: str) -> str:
        problem = None if value.isascii() else lone_surrogate(value)  # ASCII has no surrogates
        if problem is not None:
            raise PydanticCustomError("lone_surrogate", problem)
        return value


class Conversation(BaseModel):
    """A conversation in Kura's shape: `chat_id`, `created_at`, `messages`, `metadata`.

    Example:
        >>> c = Conversation(chat_id="a", messages=[Message(role="user", content="hi")])
        >>> c.transcript()
        'user: hi'
    """

    chat_id: str = Field(min_length=1)
    created_at: datetime | None = None
    messages: list[Message] = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("chat_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    def transcript(self) -> str:
        """The messages as `role: content` lines, the form most prompts want."""
        return "\n".join(f"{m.role}: {m.content}" for m in self.messages)


class Usage(BaseModel):
    """Token counts of one call.

    Example:
        >>> Usage(prompt_tokens=3, completion_tokens=2).total_tokens
        5
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def model_post_init(self, __context: Any) -> None:
        if not self.total_tokens:
            self.total_tokens = self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Problem:
    """The first problem pydantic found in some data: where, what, and its kind.

    Example:
        >>> try:
        ...     Conversation(chat_id="a", messages=[{"role": "user"}])
        ... except ValidationError as exc:
        ...     print(Problem.of(exc).where)
        messages[0].content
    """

    where: str
    message: str
    kind: str
    value: Any

    @classmethod
    def of(cls, exc: ValidationError) -> Problem:
        error = exc.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        return cls(where.lstrip("."), error["msg"], error["type"], error.get("input"))


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion as plain data: what is keyed, and how it travels.

    Example:
        >>> request = ChatRequest("openai/gpt-4o-mini", ({"role": "user", "content": "hi"},))
        >>> request.key.startswith("km2-chat-")
        True
    """

    model: str
    messages: tuple[dict[str, Any], ...]
    schema: type[BaseModel] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    transport: dict[str, Any] = field(default_factory=dict, repr=False)  # holds the API key
    # Model, schema and params canonicalised, when the caller has them already (one per run).
    recipe: KeyRecipe | None = field(default=None, repr=False, compare=False)

    @cached_property
    def key(self) -> str:
        """The cache key: model, messages, schema and output parameters, never the transport."""
        recipe = self.recipe or KeyRecipe.of(model=self.model, schema=self.schema, params=self.params)
        return recipe.key(self.messages)


class CacheEntry(BaseModel):
    """What one cached call keeps: its answer or deterministic error, usage, cost and timing.

    Example:
        >>> CacheEntry(model="m", response="hi").error is None
        True
    """

    model: str
    response: str | None = None
    error: str | None = None
    error_type: str | None = None
    usage: Usage = Field(default_factory=Usage)
    cost: float | None = None
    latency_s: float = 0.0
    created_at: float = Field(default_factory=time.time)

    def charged(self, *, cached: bool) -> tuple[float | None, float]:
        """(cost, latency) of one use of this entry: nothing on a hit (its cost is saved).

        Example:
            >>> CacheEntry(model="m", cost=0.5, latency_s=2.0).charged(cached=True)
            (0.0, 0.0)
        """
        return (0.0, 0.0) if cached else (self.cost, self.latency_s)


class ExportedEntry(BaseModel):
    """One line of an exported experiment: a cache entry and its key.

    Example:
        >>> ExportedEntry.model_validate_json('{"key": "k", "entry": {"model": "m"}}').entry.model
        'm'
    """

    key: str
    entry: CacheEntry


class ExperimentInfo(BaseModel):
    """Entries and bytes of one experiment (or of the embedding store)."""

    entries: int = 0
    bytes: int = 0


class StoreInfo(BaseModel):
    """What one store holds, per experiment and in total, and where it is.

    Example:
        >>> StoreInfo(entries=0, bytes=0).for_experiment("default").entries
        0
    """

    model_config = ConfigDict(frozen=True)

    entries: int
    bytes: int
    experiments: dict[str, ExperimentInfo] = Field(default_factory=dict)
    directory: str | None = None
    url: str | None = None
    size_limit: int | None = None
    enabled: bool = True
    problem: str | None = None  # why the store is not in use (a damaged file), if it is not

    def for_experiment(self, name: str) -> ExperimentInfo:
        """The counts of one experiment (zero if it has no entries)."""
        return self.experiments.get(name, ExperimentInfo())


class CacheInfo(StoreInfo):
    """The session's view of the cache: the response store, the active experiment, and
    the embedding store.

    Example:
        >>> CacheInfo(entries=0, bytes=0).active_experiment
        'default'
    """

    active_experiment: str = "default"
    embeddings: ExperimentInfo = Field(default_factory=ExperimentInfo)
