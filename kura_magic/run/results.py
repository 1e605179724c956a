"""What a run gives back: per-conversation results, live run statistics, the run itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from kura_magic import formatting
from kura_magic.types import CacheEntry, CacheMode, ResultStatus, RunStats, Usage

if TYPE_CHECKING:
    import pandas

    from kura_magic.run.embeddings import Embeddings

class SummaryResult(BaseModel):
    """One conversation's result; `summary` is text, or the schema object with `--schema`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    conversation_id: str
    summary: Any = None
    cached: bool = False
    cost: float | None = None
    fresh_cost: float | None = None  # what the call cost when it was made (saved on a hit)
    latency_s: float = 0.0
    error: str | None = None
    status: ResultStatus = "ok"
    key: str = ""
    usage: Usage = Field(default_factory=Usage)
    metadata: dict[str, Any] = Field(default_factory=dict)

    def summary_text(self) -> str | None:
        """The summary as one text: itself, a schema's `summary` field, or the object as JSON."""
        if self.summary is None or isinstance(self.summary, str):
            return self.summary
        text = getattr(self.summary, "summary", None)
        return text if isinstance(text, str) else self.summary.model_dump_json()

    def summary_fields(self) -> dict[str, Any]:
        """The summary as columns: the schema's fields, or one 'summary' column."""
        if isinstance(self.summary, BaseModel):
            return self.summary.model_dump(mode="json")
        return {"summary": self.summary}


def result_from_entry(entry: CacheEntry, *, conversation_id: str, key: str, cached: bool,
                      parse: Callable[[str], Any] | None = None,
                      metadata: dict[str, Any] | None = None) -> SummaryResult:
    """One conversation's result from its stored entry (the one place this is done): what
    it cost now (nothing on a hit) and when fresh, then its answer, parsed by `parse` (a
    schema's `model_validate_json`), or its error.

    Example:
        >>> entry = CacheEntry(model="m", response="Refund issued.", cost=0.002, latency_s=1.5)
        >>> hit = result_from_entry(entry, conversation_id="c1", key="k", cached=True)
        >>> hit.summary, hit.cost, hit.fresh_cost
        ('Refund issued.', 0.0, 0.002)
    """
    cost, latency = entry.charged(cached=cached)
    facts: dict[str, Any] = {"conversation_id": conversation_id, "key": key, "cached": cached, "cost": cost,
                             "latency_s": latency, "fresh_cost": entry.cost, "usage": entry.usage,
                             "metadata": metadata or {}}
    if entry.error is not None:
        return SummaryResult(**facts, status="error", error=f"{entry.error_type}: {entry.error}")
    return SummaryResult(**facts, summary=entry.response if parse is None else parse(entry.response or ""))


class SummaryRun:
    """The results of `summarise`, in input order, with the run's statistics.

    Example:
        >>> run = SummaryRun([], RunStats(), model="openai/gpt-4o-mini", experiment="default")
        >>> len(run), run.stats.fresh
        (0, 0)
    """

    def __init__(
        self,
        results: list[SummaryResult],
        stats: RunStats,
        *,
        model: str,
        experiment: str,
        schema_name: str | None = None,
        prompt: str = "",
        cache_mode: CacheMode = "read_write",
        params: dict[str, Any] | None = None,
        label: str | None = None,
    ) -> None:
        self.results = results
        self.stats = stats
        self.model = model
        self.experiment = experiment
        self.schema_name = schema_name
        self.prompt = prompt
        self.cache_mode = cache_mode
        self.params = dict(params or {})
        self.label = label  # the name it was bound to (`--out`), if any
        self.run_id: str | None = None  # set once the run history has recorded it
        self.changes = ""  # what changed since the previous run of the same label
        self.missing: list[str] = []  # a loaded run: conversations whose answer left the cache

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[SummaryResult]:
        return iter(self.results)

    def __getitem__(self, index: int) -> SummaryResult:
        return self.results[index]

    def __repr__(self) -> str:
        run = f"run {self.run_id} " if self.run_id else ""
        missing = f" · {len(self.missing)} answers missing from the cache" if self.missing else ""
        return f"<SummaryRun {run}{self.model} experiment={self.experiment!r}: {self.stats.summary_line()}{missing}>"

    def to_pandas(self) -> pandas.DataFrame:
        """One row per conversation: id, summary (or schema fields), cached, cost, latency, error."""
        import pandas

        rows = [
            {
                "conversation_id": r.conversation_id,
                **r.summary_fields(),
                "cached": r.cached,
                "cost": r.cost,
                "latency_s": r.latency_s,
                "error": r.error,
                "status": r.status,
            }
            for r in self.results
        ]
        return pandas.DataFrame(rows)

    def embed(self, *, model: str, dimensions: int | None = None) -> Embeddings:
        """Embed the summaries that succeeded (Kura's next step), through the embedding cache.

        Example:
            >>> from kura_magic import summarise
            >>> run = summarise(convs, "Summarise:\\n{{ transcript }}")
            >>> run.embed(model="openai/text-embedding-3-small", dimensions=64).to_numpy().shape
            (5, 64)
        """
        from kura_magic.run.embeddings import embed

        texts = [r.summary_text() for r in self.results if r.status == "ok"]
        return embed([t for t in texts if t], model=model, dimensions=dimensions)

    def provenance(self) -> dict[str, Any]:
        """Where these results came from, for output metadata and reports."""
        return {
            "run_id": self.run_id,
            "model": self.model,
            "experiment": self.experiment,
            "cache_mode": self.cache_mode,
            "schema": self.schema_name,
            "stats": self.stats.model_dump(),
            "keys": [r.key for r in self.results],
        }

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[dict, dict]:
        """HTML, and for where HTML does not render (a terminal, GitHub's text view, nbconvert
        to text) the one-line summary over the results as a text table."""
        from kura_magic.views.text import results_text

        data = {"text/plain": f"{self!r}\n{results_text(self)}", "text/html": self._repr_html_()}
        return data, {"kura_magic": self.provenance()}

    def _repr_html_(self) -> str:
        from kura_magic.views.html import results_html

        return results_html(self)


class Completion(BaseModel):
    """The result of `complete`: text, or the parsed schema object, with cache and cost facts.

    Example:
        >>> Completion(text="hi", model="m", key="k").cached
        False
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    text: str
    parsed: Any = None
    cached: bool = False
    cost: float | None = None
    saved_cost: float | None = None
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = 0.0
    model: str
    key: str

    @property
    def value(self) -> Any:
        """The parsed object if a schema was given, else the text."""
        return self.parsed if self.parsed is not None else self.text

    def __str__(self) -> str:
        return self.text


class Estimate(BaseModel):
    """What a run would do: how many calls are fresh, and what they would cost.

    Example:
        >>> Estimate(total=3, cached=1, fresh=2, estimated_cost=None, model="m", experiment="e")
        estimate: 3 conversations, 1 cached, 2 fresh calls, cost unknown (m, experiment e)
    """

    total: int
    cached: int
    fresh: int
    estimated_cost: float | None
    model: str
    experiment: str
    reply_basis: str = ""  # the reply length the estimate assumes, and why

    def describe(self) -> str:
        cost = "cost unknown" if self.estimated_cost is None else f"about {formatting.money(self.estimated_cost)}"
        basis = f"; {self.reply_basis}" if self.fresh and self.reply_basis else ""
        return (
            f"estimate: {self.total} conversations, {self.cached} cached, {self.fresh} fresh "
            f"calls, {cost} ({self.model}, experiment {self.experiment}{basis})"
        )

    def __repr__(self) -> str:
        return self.describe()

    __str__ = __repr__

    def _repr_html_(self) -> str:
        from kura_magic.views.html import paragraph_html

        return paragraph_html(self.describe(), css_class="kura-estimate")
