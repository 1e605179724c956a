"""A small set of realistic support conversations shipped with the package, for examples."""

from __future__ import annotations

from importlib import resources

from kura_magic.errors import ConfigError
from kura_magic.inputs.loaders import load_conversations
from kura_magic.types import Conversation

SAMPLE_FILE = "sample_conversations.jsonl"


def sample_conversations(n: int | None = None) -> list[Conversation]:
    """The shipped sample conversations (40, in Kura's shape), or the first `n` of them.

    Example:
        >>> conversations = sample_conversations(3)
        >>> [c.chat_id for c in conversations]
        ['conv-001', 'conv-002', 'conv-003']
    """
    if n is not None and n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    source = resources.files("kura_magic") / "data" / SAMPLE_FILE
    with resources.as_file(source) as path:
        return load_conversations(path)[:n]
