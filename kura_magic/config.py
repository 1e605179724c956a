"""Settings: environment variables, overridden for the session by `configure()`.

Every run reads `settings()` once, so a changed environment variable or a
`%kura config key=value` takes effect on the next run.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from kura_magic.errors import ConfigError
from kura_magic.types import Problem

CACHE_OFF = "off"
DEFAULT_CACHE_DIR = Path("~/.kura_magic/cache")
_OFF_WORDS = {"0", "false", "off", "no"}
GB = 1024**3

# Settings field -> the environment variable that sets it.
ENV_VARS: dict[str, str] = {
    "cache": "KURA_MAGIC_CACHE",
    "cache_size_limit": "KURA_MAGIC_CACHE_SIZE_LIMIT",
    "embedding_size_limit": "KURA_MAGIC_EMBEDDING_SIZE_LIMIT",
    "max_concurrency": "KURA_MAGIC_MAX_CONCURRENCY",
    "embedding_batch_size": "KURA_MAGIC_EMBEDDING_BATCH_SIZE",
    "offline": "KURA_MAGIC_OFFLINE",
    "model": "KURA_MAGIC_MODEL",
    "experiment": "KURA_MAGIC_EXPERIMENT",
    "timeout_s": "KURA_MAGIC_TIMEOUT",
    "max_retries": "KURA_MAGIC_MAX_RETRIES",
    "retry_base_s": "KURA_MAGIC_RETRY_BASE",
    "api_base": "KURA_MAGIC_API_BASE",
    "api_key": "KURA_MAGIC_API_KEY",
    "redis_prefix": "KURA_MAGIC_REDIS_PREFIX",
    "cache_ttl_s": "KURA_MAGIC_CACHE_TTL",
    "s3_endpoint": "KURA_MAGIC_S3_ENDPOINT",
    "history_limit": "KURA_MAGIC_HISTORY_LIMIT",
    "model_prices": "KURA_MAGIC_MODEL_PRICES",
}


class Settings(BaseModel):
    """The settings in force for one run.

    Example:
        >>> Settings(max_concurrency=4).max_concurrency
        4
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    cache: str = Field(default=str(DEFAULT_CACHE_DIR), description="directory, 'off' or redis:// URL")
    cache_size_limit: int = Field(default=5 * GB, gt=0)
    embedding_size_limit: int = Field(default=5 * GB, gt=0)
    max_concurrency: int = Field(default=20, ge=1)
    embedding_batch_size: int = Field(default=100, ge=1)
    offline: bool = False
    model: str = "openai/gpt-4o-mini"
    experiment: str = "default"
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=5, ge=0)
    retry_base_s: float = Field(default=0.5, ge=0)
    api_base: str | None = Field(default=None, description="where calls go; None: litellm's default")
    api_key: SecretStr | None = Field(default=None, description="None: the provider's own variable")
    redis_prefix: str = Field(default="kura_magic", min_length=1, description="namespace in a shared Redis")
    cache_ttl_s: float | None = Field(default=None, gt=0, description="how long an entry is served (7d, 12h, 30m, seconds); None: until evicted")
    s3_endpoint: str | None = Field(default=None, description="an S3-compatible store's URL; None: AWS's own")
    history_limit: int = Field(default=200, ge=1, description="runs the run history keeps; the oldest go first")
    model_prices: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="model -> (dollars per prompt token, per reply token), for models litellm has no "
                    "price for, e.g. a model served on your own machine: (0, 0)")

    def transport(self, model: str, *, api_key: str | None = None, api_base: str | None = None) -> dict[str, Any]:
        """Where and with which key calls to `model` travel (explicit values, else these
        settings), and the price litellm is to charge them at if `model_prices` names one.

        Example:
            >>> Settings(model_prices={"openai/mine": (0, 0)}).transport("openai/mine", api_base="http://h")
            {'api_base': 'http://h', 'input_cost_per_token': 0.0, 'output_cost_per_token': 0.0}
        """
        key = api_key or (self.api_key.get_secret_value() if self.api_key else None)
        values = {"api_key": key, "api_base": api_base or self.api_base}
        found: dict[str, Any] = {name: value for name, value in values.items() if value}
        if model in self.model_prices:
            found["input_cost_per_token"], found["output_cost_per_token"] = self.model_prices[model]
        return found

    @field_validator("cache")
    @classmethod
    def _normalise_cache(cls, value: str) -> str:
        value = value.strip()
        if value.lower() in _OFF_WORDS:
            return CACHE_OFF
        if "://" in value:
            return value
        return str(Path(value).expanduser())

    @field_validator("model_prices", mode="before")
    @classmethod
    def _prices_from_json(cls, value: Any) -> Any:
        """KURA_MAGIC_MODEL_PRICES is JSON: '{"openai/my-model": [0, 0]}'."""
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError('give JSON, e.g. {"openai/my-model": [0, 0]} (dollars per prompt and reply token)') from None

    @field_validator("cache_ttl_s", mode="before")
    @classmethod
    def _parse_ttl(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("experiment")
    @classmethod
    def _check_experiment(cls, value: str) -> str:
        return check_experiment_name(value)

    @property
    def caching_enabled(self) -> bool:
        return self.cache != CACHE_OFF

    def shown(self) -> dict[str, Any]:
        """The settings as a person may see them: the API key and any password in the cache
        URL or the API base masked.

        Example:
            >>> Settings(cache="redis://team:hunter2@cache.local:6379/0").shown()["cache"]
            'redis://team:***@cache.local:6379/0'
        """
        values = self.model_dump(mode="json")  # a SecretStr dumps as '**********'
        base = mask_url(self.api_base) if self.api_base else None
        endpoint = mask_url(self.s3_endpoint) if self.s3_endpoint else None
        return {**values, "cache": mask_url(self.cache), "api_base": base, "s3_endpoint": endpoint}

    def __repr_args__(self) -> Any:
        return list(self.shown().items())


def mask_url(url: str) -> str:
    """`url` with its password, if any, replaced by ***.

    Example:
        >>> mask_url("redis://:s3cret@localhost:6379/0"), mask_url("/home/me/cache")
        ('redis://:***@localhost:6379/0', '/home/me/cache')
    """
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}***@{host}"))


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
ALIASES = {"cache_ttl": "cache_ttl_s"}  # `%kura config cache_ttl=7d`


def parse_duration(text: str) -> float:
    """Seconds in `7d`, `12h`, `30m`, `45s` or a plain number of seconds.

    Example:
        >>> parse_duration("7d"), parse_duration("12h"), parse_duration("90")
        (604800.0, 43200.0, 90.0)
    """
    text = text.strip().lower()
    unit = DURATION_UNITS.get(text[-1:], 1) if text else 1
    number = text[:-1] if text[-1:] in DURATION_UNITS else text
    try:
        return float(number) * unit
    except ValueError:
        raise ConfigError(f"{text!r} is not a duration: give e.g. 7d, 12h, 30m or a number of seconds") from None


def check_experiment_name(name: str) -> str:
    """Return `name` stripped, or raise ConfigError if it cannot name an experiment."""
    name = str(name).strip()
    if not name or len(name) > 200 or any(ch in name for ch in "\x00\n\r\t\x1f"):
        raise ConfigError(
            f"experiment name {name!r} is not usable: give 1 to 200 printable characters"
        )
    return name


_overrides: dict[str, Any] = {}
_lock = threading.Lock()


def settings() -> Settings:
    """The settings in force now: defaults < environment < `configure()`.

    Example:
        >>> settings().max_concurrency >= 1
        True
    """
    values: dict[str, Any] = {}
    for field, var in ENV_VARS.items():
        raw = os.environ.get(var)
        if raw is not None and raw.strip() != "":
            values[field] = raw
    with _lock:
        values.update(_overrides)
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_describe_invalid(exc)) from None


def configure(**overrides: Any) -> Settings:
    """Override settings for this session (None removes an override).

    Example:
        >>> configure(max_concurrency=5).max_concurrency
        5
        >>> _ = configure(max_concurrency=None)
    """
    overrides = {ALIASES.get(key, key): value for key, value in overrides.items()}
    unknown = sorted(set(overrides) - set(Settings.model_fields))
    if unknown:
        known = ", ".join(Settings.model_fields)
        raise ConfigError(f"unknown setting {unknown[0]!r}; known settings: {known}")
    with _lock:
        previous = dict(_overrides)
        for key, value in overrides.items():
            if value is None:
                _overrides.pop(key, None)
            else:
                _overrides[key] = value
    try:
        return settings()
    except ConfigError:
        with _lock:
            _overrides.clear()
            _overrides.update(previous)
        raise


def reset_overrides() -> None:
    """Forget every `configure()` override (the environment still applies)."""
    with _lock:
        _overrides.clear()


def _describe_invalid(exc: ValidationError) -> str:
    problem = Problem.of(exc)
    field = problem.where or "?"
    source = f"{ENV_VARS[field]} / {field}" if field in ENV_VARS else field
    return f"setting {source} = {problem.value!r} is invalid: {problem.message}"
