"""Response schemas: the built-in Kura-style summary, and finding a schema by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from kura_magic.errors import SchemaError


class KuraSummary(BaseModel):
    """Kura's structured summary of one conversation."""

    summary: str = Field(description="A clear, concise summary of the conversation in at most two sentences, without personal details")
    request: str | None = Field(default=None, description="What the user is asking for, as 'The user's overall request for the assistant is to ...'")
    topic: str | None = Field(default=None, description="The main high-level topic of the conversation")
    languages: list[str] = Field(default_factory=list, description="Human and programming languages present, lower case, full names")
    task: str | None = Field(default=None, description="The task the model is asked to do, as 'The task is to ...'")
    concerning_score: int = Field(default=1, ge=1, le=5, description="Safety concern, 1 (none) to 5 (severe)")
    user_frustration: int = Field(default=1, ge=1, le=5, description="User frustration, 1 (none) to 5 (extreme)")
    assistant_errors: list[str] | None = Field(default=None, description="Errors the assistant made, if any")


BUILTIN_SCHEMAS: dict[str, type[BaseModel]] = {
    "KuraSummary": KuraSummary,
    "kura": KuraSummary,
}


def resolve_schema(
    schema: str | type[BaseModel] | None, namespace: Mapping[str, Any] | None = None
) -> type[BaseModel] | None:
    """A pydantic model from a class, or from a name in `namespace` or the built-ins.

    Example:
        >>> resolve_schema("KuraSummary").__name__
        'KuraSummary'
    """
    if schema is None or (isinstance(schema, type) and issubclass(schema, BaseModel)):
        return schema
    if not isinstance(schema, str):
        raise SchemaError(f"schema must be a pydantic model class or its name, got {schema!r}")
    found = (namespace or {}).get(schema, BUILTIN_SCHEMAS.get(schema))
    if found is None:
        builtins = ", ".join(BUILTIN_SCHEMAS)
        raise SchemaError(
            f"no schema named {schema!r}: define a pydantic model with that name in the "
            f"notebook, or use a built-in one ({builtins})"
        )
    if not (isinstance(found, type) and issubclass(found, BaseModel)):
        raise SchemaError(f"{schema!r} is a {type(found).__name__}, not a pydantic model class")
    return found
