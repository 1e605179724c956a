"""Every error kura_magic raises on purpose: one base class, messages that say what to do."""

from __future__ import annotations


class KuraMagicError(Exception):
    """Base of all kura_magic errors; the magics show these as one line."""


class ConfigError(KuraMagicError, ValueError):
    """A setting (environment variable, argument or `%kura config`) has a bad value."""


class DataError(KuraMagicError, ValueError):
    """Input data is not a set of conversations; the message names the row and field."""


class TemplateError(KuraMagicError, ValueError):
    """The prompt template does not parse or does not render."""


class SchemaError(KuraMagicError, ValueError):
    """A `schema` is neither a pydantic model nor the name of a built-in schema."""


class CacheError(KuraMagicError, OSError):
    """The cache storage cannot be opened or written."""


class CacheMissError(KuraMagicError, LookupError):
    """Offline mode (or read-only replay) met calls that are not in the cache."""


class ModelError(KuraMagicError, RuntimeError):
    """A model call failed in a way that stops the whole run."""


class UnknownModelError(ModelError, ValueError):
    """litellm does not know the model, or the provider says it does not exist."""


class MissingAPIKeyError(ModelError):
    """The provider's API key is not set (checked before anything is spent)."""


class AuthenticationError(ModelError):
    """The provider rejected the API key."""


class BudgetError(KuraMagicError, ValueError):
    """A `max_cost` that cannot be enforced or is not a positive number."""


class ResponseError(ModelError):
    """The model could not answer this call (content policy, context too long, schema
    mismatch, or the provider kept failing); `error_type` says which."""

    def __init__(self, message: str, *, error_type: str, cached: bool) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.cached = cached


class LocalModelError(KuraMagicError, RuntimeError):
    """The bundled local model cannot run: the [local] extra is missing or its server failed."""
