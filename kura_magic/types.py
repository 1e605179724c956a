"""Plain data shared by every layer: conversations (Kura's shape), token usage, a chat
request, what the cache keeps per call, what a store holds, and a run's statistics."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from kura_magic import formatting
from kura_magic.keys import KeyRecipe

CacheMode = Literal["read_write", "read_only", "refresh", "off"]
CACHE_MODES: tuple[CacheMode, ...] = ("read_write", "read_only", "refresh", "off")
ResultStatus = Literal["ok", "error", "skipped", "unfinished", "pending"]  # how one row of a run ended
UNANSWERED: frozenset[ResultStatus] = frozenset({"skipped", "unfinished", "pending"})  # rows that got no answer


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


# What `RunStats.record` counts.
_RECORDED = ("done", "errors", "errors_cached", "errors_retryable", "cached", "fresh", "cost", "cost_unknown",
             "saved_cost", "saved_unknown")


class RunStats(BaseModel):
    """Counts, money and time of one run, updated live while it goes.

    Example:
        >>> RunStats(total=3, fresh=1, cached=2, cost=0.01).spent_text
        '$0.0100'
    """

    total: int = 0
    done: int = 0
    fresh: int = 0
    cached: int = 0
    errors: int = 0
    skipped: int = 0
    cost: float = 0.0
    cost_unknown: int = 0
    saved_cost: float = 0.0
    saved_unknown: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    unsaved: int = 0  # fresh answers the cache could not keep (it was down)
    phase: str = ""  # what the run is waiting on, while it is not obvious from the counts
    in_flight: int = 0  # provider calls out now
    max_cost: float | None = None  # the budget, once it has refused a call
    skip_estimate: float | None = None  # what one refused call was estimated to cost, on average
    model: str = ""  # the run's model, named when litellm knows no price for it
    errors_cached: int = 0  # of the errors, those served from the cache (deterministic ones)
    errors_retryable: int = 0  # of the errors, the transient ones: not cached, worth another run
    retries: int = 0  # transient failures retried during the run
    rate_limited: int = 0  # of those, the 429s
    LOADING: ClassVar[str] = "loading the provider library…"  # phases
    CALLING: ClassVar[str] = "calling"

    def record(self, *, cached: bool, error: bool, cost: float | None, retryable: bool = False) -> None:
        """Count one finished row; `cost` is what its call cost when made (None: no price);
        `retryable`: its error was transient, so it was not cached.

        `fresh` and `cached` say where rows came from (a call made now, or the cache), errors
        included; the panel shows answers and failures apart (`texts`). A cached row's cost
        counts as saved, a fresh row's as spent.
        """
        self.record_many([(cached, error, cost, retryable)])

    def record_many(self, rows: Iterable[tuple[bool, bool, float | None, bool]]) -> None:
        """`record` for each (cached, error, cost, retryable) of `rows`, counted on plain
        numbers and set once (a pydantic attribute set costs a microsecond; a million rows).

        Example:
            >>> stats = RunStats()
            >>> stats.record_many([(True, False, 0.5, False), (False, True, None, True)])
            >>> stats.cached, stats.fresh, stats.errors_retryable, stats.saved_cost, stats.cost_unknown
            (1, 1, 1, 0.5, 1)
        """
        counts = {name: getattr(self, name) for name in _RECORDED}
        for cached, error, cost, retryable in rows:
            counts["done"] += 1
            counts["errors"] += error
            counts["errors_cached"] += error and cached
            counts["errors_retryable"] += error and retryable
            counts["cached"] += cached
            counts["fresh"] += not cached
            total, unknown = ("saved_cost", "saved_unknown") if cached else ("cost", "cost_unknown")
            if cost is None:
                counts[unknown] += 1
            else:
                # Rounded so the same calls add up to the same total in any order (spent == saved).
                counts[total] = round(counts[total] + cost, 12)
        for name, value in counts.items():
            if value != getattr(self, name):
                setattr(self, name, value)

    @property
    def spent_text(self) -> str:
        return formatting.money(self.cost, unknown=self.cost_unknown)

    @property
    def spent_label(self) -> str:
        """Money spent; where no fresh call had a price, that said with the model's name.

        Example:
            >>> RunStats(fresh=2, cost=0.5).spent_label
            'spent $0.500'
            >>> RunStats(fresh=2, cost_unknown=2, model="openai/gpt-4o-mni").spent_label
            'no price known for openai/gpt-4o-mni — is the name right?'
        """
        if self.model and self.cost_unknown and self.cost_unknown == self.fresh and self.cost == 0:
            return f"no price known for {self.model} — is the name right?"
        return f"spent {self.spent_text}"

    @property
    def saved_text(self) -> str:
        return formatting.money(self.saved_cost, unknown=self.saved_unknown)

    def texts(self) -> dict[str, str]:
        """The run's counts, money and time, each keyed by the CSS class the panel gives it;
        what the run is doing now (its phase, calls in flight) goes beside the progress.

        Example:
            >>> RunStats(total=4, done=4, fresh=3, cached=1).texts()["kura-fresh"]
            '3 fresh'
            >>> RunStats(total=9, done=2, phase=RunStats.CALLING, in_flight=5).texts()["kura-done"]
            '2/9 done · calling · 5 in flight'
        """
        all_failed = self.done and self.errors == self.done
        done = f"{self.done}/{self.total} " + ("failed" if all_failed else "done")
        done += f" · {self.phase}" if self.phase else ""
        done += f" · {self.in_flight} in flight" if self.in_flight else ""
        done += f" · {self.skipped} skipped (budget)" if self.skipped else ""
        done += " · interrupted" if self.interrupted else ""
        done += f" · {self.unsaved} not stored (cache unavailable)" if self.unsaved else ""
        return {
            "kura-done": done,
            "kura-fresh": f"{self.fresh - self.errors + self.errors_cached} fresh",
            "kura-cached": f"{self.cached - self.errors_cached} cached",
            "kura-errors": self.errors_label,
            **({"kura-retries": self.retries_label} if self.retries else {}),
            "kura-spent": self.spent_label,
            "kura-saved": f"saved {self.saved_text}",
            "kura-elapsed": f"elapsed {formatting.duration(self.elapsed_s)}",
        }

    @property
    def errors_label(self) -> str:
        """The failed rows; transient failures are said not to be cached, and what to do.

        Example:
            >>> RunStats(done=6, fresh=6, errors=6, errors_retryable=6).errors_label
            '6 errors (not cached: run again to retry)'
        """
        retry = " (not cached: run again to retry)" if self.errors_retryable else ""
        return f"{self.errors} errors{retry}"

    @property
    def retries_label(self) -> str:
        """The retries the run made, and how many of them a rate limit (429) caused.

        Example:
            >>> RunStats(retries=9, rate_limited=7).retries_label
            '9 retries (7 rate-limited)'
        """
        limited = f" ({self.rate_limited} rate-limited)" if self.rate_limited else ""
        return f"{self.retries} {'retry' if self.retries == 1 else 'retries'}{limited}"

    def bar_counts(self) -> dict[str, int]:
        """The stacked bar's parts, adding up to `done`: errors (cached or fresh), then the
        answers that came from the cache and from a fresh call.

        Example:
            >>> RunStats(total=9, done=6, fresh=4, cached=2, errors=1).bar_counts()
            {'cached': 2, 'fresh': 3, 'errors': 1}
        """
        cached = min(self.cached, self.done - self.errors)
        return {"cached": cached, "fresh": self.done - self.errors - cached, "errors": self.errors}

    def summary_line(self) -> str:
        """One line a person reads: the panel's texts, in the panel's order.

        Example:
            >>> RunStats(total=2, done=2, fresh=2, cost=0.01).summary_line()
            '2/2 done · 2 fresh · 0 cached · 0 errors · spent $0.0100 · saved $0.00 · elapsed 0 ms'
        """
        return " · ".join(self.texts().values())
