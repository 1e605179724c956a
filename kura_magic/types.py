"""Plain data: conversations (Kura's shape), token usage and cache statistics."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Message(BaseModel):
    """One turn of a conversation.

    Example:
        >>> Message(role="user", content="hi").role
        'user'
    """

    role: str = Field(min_length=1)
    content: str
    created_at: datetime | None = None


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


class ExperimentInfo(BaseModel):
    """Entries and bytes of one experiment (or of the embedding store)."""

    entries: int = 0
    bytes: int = 0


class CacheInfo(BaseModel):
    """What the cache holds, per experiment and in total.

    Example:
        >>> CacheInfo(entries=0, bytes=0).experiments
        {}
    """

    model_config = ConfigDict(frozen=True)

    entries: int
    bytes: int
    experiments: dict[str, ExperimentInfo] = Field(default_factory=dict)
    directory: str | None = None
    url: str | None = None
    size_limit: int | None = None
    enabled: bool = True
    active_experiment: str = "default"
    embeddings: ExperimentInfo = Field(default_factory=ExperimentInfo)

    def for_experiment(self, name: str) -> ExperimentInfo:
        """The counts of one experiment (zero if it has no entries)."""
        return self.experiments.get(name, ExperimentInfo())
