"""What a run gives back: per-conversation results, live run statistics, the run itself."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from kura_magic import formatting
from kura_magic.types import CacheMode, Usage

if TYPE_CHECKING:
    import pandas

    from kura_magic.embeddings import Embeddings

ResultStatus = Literal["ok", "error", "skipped", "unfinished"]


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
    LOADING: ClassVar[str] = "loading the provider library…"  # phases
    CALLING: ClassVar[str] = "calling"

    def record(self, *, cached: bool, error: bool, cost: float | None) -> None:
        """Count one finished row; `cost` is what its call cost when made (None: no price).

        A cached row's cost counts as saved, a fresh row's as spent.
        """
        self.done += 1
        self.errors += error
        self.cached += cached
        self.fresh += not cached
        total, unknown = ("saved_cost", "saved_unknown") if cached else ("cost", "cost_unknown")
        if cost is None:
            setattr(self, unknown, getattr(self, unknown) + 1)
        else:
            # Rounded so the same calls add up to the same total in any order (spent == saved).
            setattr(self, total, round(getattr(self, total) + cost, 12))

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
        done = f"{self.done}/{self.total} done"
        done += f" · {self.phase}" if self.phase else ""
        done += f" · {self.in_flight} in flight" if self.in_flight else ""
        done += f" · {self.skipped} skipped (budget)" if self.skipped else ""
        done += " · interrupted" if self.interrupted else ""
        done += f" · {self.unsaved} not stored (cache unavailable)" if self.unsaved else ""
        return {
            "kura-done": done,
            "kura-fresh": f"{self.fresh} fresh",
            "kura-cached": f"{self.cached} cached",
            "kura-errors": f"{self.errors} errors",
            "kura-spent": self.spent_label,
            "kura-saved": f"saved {self.saved_text}",
            "kura-elapsed": f"elapsed {formatting.duration(self.elapsed_s)}",
        }

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
        from kura_magic.embeddings import embed

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
        from kura_magic.notebook.views import results_text

        data = {"text/plain": f"{self!r}\n{results_text(self)}", "text/html": self._repr_html_()}
        return data, {"kura_magic": self.provenance()}

    def _repr_html_(self) -> str:
        from kura_magic.notebook.views import results_html

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
        from kura_magic.notebook.views import paragraph_html

        return paragraph_html(self.describe(), css_class="kura-estimate")
