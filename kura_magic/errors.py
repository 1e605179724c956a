"""Every error kura_magic raises on purpose: one base class, messages that say what to do.

    KuraMagicError
    ├── ConfigError (ValueError)        a setting or argument has a bad value
    ├── DataError (ValueError)          input is not conversations / texts / an export
    ├── TemplateError (ValueError)      the prompt does not parse or render
    ├── SchemaError (ValueError)        not a pydantic model, nor a built-in schema's name
    ├── BudgetError (ValueError)        a max_cost that cannot be enforced
    ├── CacheError (OSError)            the store cannot be opened or written
    ├── CacheMissError (LookupError)    offline (or replay) met calls not in the cache
    ├── ModelError (RuntimeError)       the provider cannot be used: the run stops
    │   ├── UnknownModelError (ValueError)
    │   ├── MissingAPIKeyError
    │   └── AuthenticationError
    ├── ResponseError (RuntimeError)    one call got no answer; other calls go on
    └── LocalModelError (RuntimeError)  the bundled local model cannot run

`CacheWarning` is a warning, not an error: the cache failed and the call went on.
"""

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


class BudgetError(KuraMagicError, ValueError):
    """A `max_cost` that cannot be enforced or is not a positive number."""


class CacheError(KuraMagicError, OSError):
    """The cache storage cannot be opened or written."""


class CacheMissError(KuraMagicError, LookupError):
    """Offline mode (or read-only replay) met calls that are not in the cache."""


class ModelError(KuraMagicError, RuntimeError):
    """The provider cannot be used at all: the run stops, and what finished stays cached."""


class UnknownModelError(ModelError, ValueError):
    """litellm does not know the model, or the provider says it does not exist."""


class MissingAPIKeyError(ModelError):
    """The provider's API key is not set (checked before anything is spent)."""


class AuthenticationError(ModelError):
    """The provider rejected the API key."""


class ResponseError(KuraMagicError, RuntimeError):
    """The model could not answer this call (content policy, context too long, schema
    mismatch, or the provider kept failing); `error_type` says which."""

    def __init__(self, message: str, *, error_type: str, cached: bool) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.cached = cached


class BatchError(KuraMagicError, ValueError):
    """Batch mode cannot be used here (a provider with no batch API, a cache it cannot
    write); nothing was sent."""


class BatchPendingError(KuraMagicError, RuntimeError):
    """Some answers are still in a provider batch: nothing is lost, call again to collect them."""


class LocalModelError(KuraMagicError, RuntimeError):
    """The bundled local model cannot run: the [local] extra is missing or its server failed."""


class CacheWarning(UserWarning):
    """The cache could not be read or written; the call went on without it."""
