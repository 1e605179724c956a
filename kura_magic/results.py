"""What a run gives back: per-conversation results, live run statistics, the run itself."""

from __future__ import annotations

import html
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kura_magic import formatting
from kura_magic.types import Usage

if TYPE_CHECKING:
    import pandas

    from kura_magic.embeddings import Embeddings

HTML_ROW_LIMIT = 200
LEFT = ' style="text-align:left"'  # JupyterLab right-aligns table cells; text reads better left
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
        '$0.01'
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
    def saved_text(self) -> str:
        return formatting.money(self.saved_cost, unknown=self.saved_unknown)

    def summary_line(self) -> str:
        """One line a person reads: counts, money and time."""
        line = (
            f"{self.done}/{self.total} done · {self.fresh} fresh · {self.cached} cached · "
            f"{self.errors} errors · spent {self.spent_text} · saved {self.saved_text} · "
            f"{formatting.duration(self.elapsed_s)}"
        )
        if self.skipped:
            line += f" · {self.skipped} skipped (budget)"
        if self.interrupted:
            line += " · interrupted"
        return line


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
    ) -> None:
        self.results = results
        self.stats = stats
        self.model = model
        self.experiment = experiment
        self.schema_name = schema_name
        self.prompt = prompt

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[SummaryResult]:
        return iter(self.results)

    def __getitem__(self, index: int) -> SummaryResult:
        return self.results[index]

    def __repr__(self) -> str:
        return f"<SummaryRun {self.model} experiment={self.experiment!r}: {self.stats.summary_line()}>"

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
            >>> vectors = run.embed(model="openai/text-embedding-3-small")   # doctest: +SKIP
            >>> vectors.to_numpy().shape                                       # doctest: +SKIP
            (50, 1536)
        """
        from kura_magic.embeddings import embed

        texts = [r.summary_text() for r in self.results if r.status == "ok"]
        return embed([t for t in texts if t], model=model, dimensions=dimensions)

    def provenance(self) -> dict[str, Any]:
        """Where these results came from, for output metadata and reports."""
        return {
            "model": self.model,
            "experiment": self.experiment,
            "schema": self.schema_name,
            "stats": self.stats.model_dump(),
            "keys": [r.key for r in self.results],
        }

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[dict, dict]:
        data = {"text/plain": repr(self), "text/html": self._repr_html_()}
        return data, {"kura_magic": self.provenance()}

    def _repr_html_(self) -> str:
        return render_table(self)


def render_table(run: SummaryRun) -> str:
    """The run as an HTML table; every piece of model text is escaped."""
    results = run.results[:HTML_ROW_LIMIT]
    columns = _summary_columns(results)
    head = "".join(f"<th{LEFT}>{html.escape(c)}</th>" for c in ["id", *columns])
    head += "".join(f"<th>{html.escape(c)}</th>" for c in ["", "cost", "latency", "error"])
    body = "".join(_row_html(r, columns) for r in results)
    more = len(run.results) - len(results)
    footer = f"<p>… {more} more rows: use <code>.to_pandas()</code></p>" if more > 0 else ""
    caption = html.escape(f"{run.model} · experiment {run.experiment} · {run.stats.summary_line()}")
    return (
        f'<div class="kura-run {formatting.NO_MATHS}"><p class="kura-run-caption">{caption}</p>'
        f'<table class="kura-results"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>{footer}</div>"
    )


def _summary_columns(results: list[SummaryResult]) -> list[str]:
    columns: dict[str, None] = {}
    for result in results:
        if result.summary is not None:
            columns.update(dict.fromkeys(result.summary_fields()))
    return list(columns) or ["summary"]


def _row_html(result: SummaryResult, columns: list[str]) -> str:
    fields = result.summary_fields() if result.summary is not None else {}
    badge = "cached" if result.cached else ("fresh" if result.status == "ok" else result.status)
    cells = [
        result.conversation_id,
        *(_cell_text(fields.get(c)) for c in columns),
    ]
    tail = [
        formatting.money(result.cost) if result.status == "ok" or result.cost else "",
        formatting.duration(result.latency_s),
        result.error or "",
    ]
    tds = "".join(f"<td{LEFT}>{html.escape(str(c))}</td>" for c in cells)
    tds += f'<td><span class="kura-badge kura-{badge}">{badge}</span></td>'
    tds += "".join(f"<td>{html.escape(str(c))}</td>" for c in tail)
    return f"<tr>{tds}</tr>"


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


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


class DryRun(BaseModel):
    """What a run would do: how many calls are fresh, and what they would cost.

    Example:
        >>> DryRun(total=3, cached=1, fresh=2, estimated_cost=None, model="m", experiment="e").describe()
        'dry run: 3 conversations, 1 cached, 2 fresh calls, estimated cost unknown (m, experiment e)'
    """

    total: int
    cached: int
    fresh: int
    estimated_cost: float | None
    model: str
    experiment: str

    def describe(self) -> str:
        cost = formatting.money(self.estimated_cost)
        cost_text = "unknown" if self.estimated_cost is None else f"about {cost}"
        return (
            f"dry run: {self.total} conversations, {self.cached} cached, {self.fresh} fresh "
            f"calls, estimated cost {cost_text} ({self.model}, experiment {self.experiment})"
        )

    def __repr__(self) -> str:
        return self.describe()

    __str__ = __repr__

    def _repr_html_(self) -> str:
        return f"<p class='kura-dry-run {formatting.NO_MATHS}'>{html.escape(self.describe())}</p>"
