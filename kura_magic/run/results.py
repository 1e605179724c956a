"""What a run gives back: per-conversation results, live run statistics, the run itself."""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

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
        return _summary_fields(self.summary)


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
    table = ResultTable()
    table.fill(table.add(conversation_id, key, metadata or {}), entry, cached=cached, parse=parse)
    return table.row(0)


KEYS_SHOWN = 1000  # a run's provenance lists its cache keys up to this many; past it, their digest only


class ResultTable:
    """A run's results held as columns, one slot per conversation in input order; a
    `SummaryResult` is made only when a row is asked for (`row`), so a million cached rows
    cost their strings and a few list slots each, not a tree of objects.

    Example:
        >>> table = ResultTable()
        >>> row = table.add("c1", "k1", {})
        >>> table.fill(row, CacheEntry(model="m", response="Refund issued.", cost=0.002), cached=True)
        >>> table.row(row).summary, table.row(row).cost, len(table)
        ('Refund issued.', 0.0, 1)
    """

    def __init__(self) -> None:
        self.conversation_id: list[str] = []
        self.key: list[str] = []
        self.metadata: list[dict[str, Any] | None] = []  # None: none (most conversations)
        self.summary: list[Any] = []
        self.cached: list[bool] = []
        self.cost: list[float | None] = []
        self.fresh_cost: list[float | None] = []
        self.latency_s: list[float] = []
        self.error: list[str | None] = []
        self.status: list[ResultStatus] = []
        self.tokens = array("q")  # prompt, completion and total tokens, three per row

    def __len__(self) -> int:
        return len(self.key)

    def add(self, conversation_id: str, key: str, metadata: dict[str, Any]) -> int:
        """A row with no answer yet (status 'unfinished'); returns its index."""
        self.conversation_id.append(conversation_id)
        self.key.append(key)
        self.metadata.append(metadata or None)
        self.summary.append(None)
        self.cached.append(False)
        self.cost.append(None)
        self.fresh_cost.append(None)
        self.latency_s.append(0.0)
        self.error.append(None)
        self.status.append("unfinished")
        self.tokens.extend((0, 0, 0))
        return len(self.key) - 1

    def fill(self, row: int, entry: CacheEntry, *, cached: bool, parse: Callable[[str], Any] | None = None) -> None:
        """Give `row` the answer or error of `entry` (see `result_from_entry`)."""
        self.cost[row], self.latency_s[row] = entry.charged(cached=cached)
        self.cached[row], self.fresh_cost[row] = cached, entry.cost
        self._set_tokens(row, entry.usage)
        if entry.error is not None:
            self.status[row], self.error[row] = "error", f"{entry.error_type}: {entry.error}"
        else:
            self.status[row] = "ok"
            self.summary[row] = entry.response if parse is None else parse(entry.response or "")

    def settle(self, row: int, status: ResultStatus, why: str) -> None:
        """Give `row` no answer: skipped by the budget, pending in a provider batch, or unfinished
        when the run stopped."""
        self.status[row], self.error[row] = status, why

    def put(self, row: int, result: SummaryResult) -> None:
        """Give `row` everything of `result` (a checkpoint's row) but its id, key and metadata."""
        self.summary[row], self.cached[row], self.cost[row] = result.summary, result.cached, result.cost
        self.fresh_cost[row], self.latency_s[row] = result.fresh_cost, result.latency_s
        self.error[row], self.status[row] = result.error, result.status
        self._set_tokens(row, result.usage)

    def _set_tokens(self, row: int, usage: Usage) -> None:
        tokens, at = self.tokens, 3 * row  # item by item: no array made for three numbers
        tokens[at], tokens[at + 1], tokens[at + 2] = usage.prompt_tokens, usage.completion_tokens, usage.total_tokens

    @classmethod
    def of(cls, results: Iterable[SummaryResult]) -> ResultTable:
        """The table of `results` as they are."""
        table = cls()
        for result in results:
            table.put(table.add(result.conversation_id, result.key, result.metadata), result)
        return table

    def row(self, index: int) -> SummaryResult:
        """The result of one row, made now."""
        prompt, completion, total = self.tokens[3 * index : 3 * index + 3]
        return SummaryResult.model_construct(
            conversation_id=self.conversation_id[index], summary=self.summary[index], cached=self.cached[index],
            cost=self.cost[index], fresh_cost=self.fresh_cost[index], latency_s=self.latency_s[index],
            error=self.error[index], status=self.status[index], key=self.key[index],
            usage=Usage.model_construct(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total),
            metadata=dict(self.metadata[index] or {}),
        )

    def keys_digest(self) -> str:
        """sha256 of the rows' cache keys, in order (the run history's `keys_digest`)."""
        digest = hashlib.sha256()
        for index, key in enumerate(self.key):
            digest.update(f"\n{key}".encode() if index else key.encode())
        return digest.hexdigest()

    def columns(self) -> dict[str, Sequence[Any]]:
        """The table for `to_pandas`: id, the summary (or a schema's fields), cached, cost,
        latency, error, status. A schema's fields are the one part made row by row."""
        if all(summary is None or isinstance(summary, str) for summary in self.summary):
            summary: dict[str, Sequence[Any]] = {"summary": self.summary}
        else:
            import pandas

            fields = [_summary_fields(summary) for summary in self.summary]
            summary = {name: column.tolist() for name, column in pandas.DataFrame(fields).items()}
        return {"conversation_id": self.conversation_id, **summary, "cached": self.cached, "cost": self.cost,
                "latency_s": self.latency_s, "error": self.error, "status": self.status}


def _summary_fields(summary: Any) -> dict[str, Any]:
    return summary.model_dump(mode="json") if isinstance(summary, BaseModel) else {"summary": summary}


class ResultRows(Sequence[SummaryResult]):
    """A run's `.results`: a sequence of `SummaryResult` in input order, each made when read.

    Example:
        >>> rows = ResultRows(ResultTable.of([SummaryResult(conversation_id="c1", summary="hi")]))
        >>> [r.summary for r in rows], rows[0].conversation_id
        (['hi'], 'c1')
    """

    def __init__(self, table: ResultTable) -> None:
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    @overload
    def __getitem__(self, index: int) -> SummaryResult: ...

    @overload
    def __getitem__(self, index: slice) -> list[SummaryResult]: ...

    def __getitem__(self, index: int | slice) -> SummaryResult | list[SummaryResult]:
        if isinstance(index, slice):
            return [self.table.row(i) for i in range(len(self.table))[index]]
        return self.table.row(range(len(self.table))[index])

    def __iter__(self) -> Iterator[SummaryResult]:
        return (self.table.row(i) for i in range(len(self.table)))

    def __repr__(self) -> str:
        return f"<{len(self)} results>"


class SummaryRun:
    """The results of `summarise`, in input order, with the run's statistics.

    Example:
        >>> run = SummaryRun([], RunStats(), model="openai/gpt-4o-mini", experiment="default")
        >>> len(run), run.stats.fresh
        (0, 0)
    """

    def __init__(
        self,
        results: Sequence[SummaryResult] | ResultTable,
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
        self.table = results if isinstance(results, ResultTable) else ResultTable.of(results)
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

    @property
    def results(self) -> ResultRows:
        """The results, in input order: a sequence of `SummaryResult`, each made when read."""
        return ResultRows(self.table)

    @results.setter
    def results(self, results: Sequence[SummaryResult]) -> None:
        self.table = ResultTable.of(results)

    def __len__(self) -> int:
        return len(self.table)

    def __iter__(self) -> Iterator[SummaryResult]:
        return iter(self.results)

    def __getitem__(self, index: int) -> SummaryResult:
        return self.results[index]

    def rows_with_status(self, statuses: Collection[str], *, among: bool = True) -> tuple[int, Iterator[SummaryResult]]:
        """How many rows have a status in `statuses` (not in them, with `among=False`), counted
        from the status column, and those rows in order, each made only when reached: a view
        of a million rows makes only the ones it shows.

        Example:
            >>> run = SummaryRun([SummaryResult(conversation_id="a", status="skipped"),
            ...                   SummaryResult(conversation_id="b")], RunStats(), model="m", experiment="e")
            >>> count, rows = run.rows_with_status({"skipped"}, among=False)
            >>> count, [r.conversation_id for r in rows]
            (1, ['b'])
        """
        picked = [index for index, status in enumerate(self.table.status) if (status in statuses) == among]
        return len(picked), (self.table.row(index) for index in picked)

    def __repr__(self) -> str:
        run = f"run {self.run_id} " if self.run_id else ""
        missing = f" · {len(self.missing)} answers missing from the cache" if self.missing else ""
        return f"<SummaryRun {run}{self.model} experiment={self.experiment!r}: {self.stats.summary_line()}{missing}>"

    def to_pandas(self) -> pandas.DataFrame:
        """One row per conversation: id, summary (or schema fields), cached, cost, latency, error;
        built from the run's columns, not row by row."""
        import pandas

        return pandas.DataFrame(self.table.columns())

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
            **self._keys(),
        }

    def _keys(self) -> dict[str, Any]:
        """The rows' cache keys: listed for a run of up to `KEYS_SHOWN` rows; their count and
        digest always, so the metadata of a million rows stays small."""
        listed = {"keys": list(self.table.key)} if len(self.table) <= KEYS_SHOWN else {}
        return {**listed, "key_count": len(self.table), "keys_digest": self.table.keys_digest()}

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
