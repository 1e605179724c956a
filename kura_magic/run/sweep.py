"""`sweep`: every combination of prompt variants, models and parameter values as its own run,
all at once through the same cache and concurrency limit, with repeated samples and scores.

A variant is one point of the grid (a prompt, a model, a value of each swept parameter); each
of its samples is a `summarise` run recorded in the run history as `NAME/VARIANT` (sample
0) or `NAME/VARIANT/sN`, so `load_run` and `compare` work on any two of them. Sample 0 has
the key a plain run has, so what is cached already counts.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from typing_extensions import Unpack

from kura_magic import formatting
from kura_magic.background import blocking, on_interrupt
from kura_magic.calls.calls import CallOptions, SharedOptions
from kura_magic.errors import BudgetError, ConfigError
from kura_magic.formatting import counted
from kura_magic.inputs.loaders import ConversationSource, load_conversations
from kura_magic.keys import equal_numbers_alike
from kura_magic.run.pipeline import asummarise, estimate
from kura_magic.run.results import SummaryResult, SummaryRun
from kura_magic.run.scoring import Scored, ScoreFunction, Scorer
from kura_magic.types import Conversation, RunStats

if TYPE_CHECKING:
    import pandas

Prompts = str | Sequence[str] | Mapping[str, str]


class SweepOptions(SharedOptions, total=False):
    """The `CallOptions` every run of a sweep shares; what varies is the grid's (prompts,
    models, params). A parameter held fixed is a list of one: params={"seed": [7]}."""


SweepProgress = Callable[[str, RunStats], None]  # a variant's name, its samples' stats so far
SHORT_NAMES = {"temperature": "t", "max_tokens": "max"}  # how a swept parameter is named in a variant
OPTION_PARAMS = ("temperature", "max_tokens")  # swept parameters that are `CallOptions` of their own
# Options a judge shares with the sweep: where calls are cached and where they go, not how they are made.
JUDGE_SHARES = ("experiment", "cache_mode", "store", "api_key", "api_base")


@dataclass(frozen=True)
class Variant:
    """One point of the grid: a prompt, a model (None: the session's) and swept parameters.

    Example:
        >>> Variant("short,t=0.7", "short", "{{ transcript }}", None, {"temperature": 0.7}).options({}, 2)
        {'model': None, 'sample': 2, 'params': {}, 'temperature': 0.7}
    """

    name: str
    prompt_name: str
    prompt: str
    model: str | None
    settings: dict[str, Any]

    def options(self, base: SweepOptions, sample: int) -> CallOptions:
        """The `CallOptions` of this variant's run for `sample`, over the sweep's own."""
        swept = {k: v for k, v in self.settings.items() if k not in OPTION_PARAMS}
        options: dict[str, Any] = {**base, "model": self.model, "sample": sample, "params": swept}
        options.update({k: v for k, v in self.settings.items() if k in OPTION_PARAMS})
        return options  # type: ignore[return-value]


def variants(prompts: Prompts, *, models: Sequence[str | None] = (None,),
             params: Mapping[str, Sequence[Any]] | None = None) -> list[Variant]:
    """Every combination of prompt, model and parameter value, named by what varies.

    Example:
        >>> [v.name for v in variants("{{ transcript }}", models=["openai/a", "openai/b"],
        ...                            params={"temperature": [0, 0.7]})]
        ['a,t=0', 'a,t=0.7', 'b,t=0', 'b,t=0.7']
    """
    named, models, grid = _prompt_names(prompts), list(models) or [None], dict(params or {})
    for dimension, values in [("models", models), *((f"params[{k!r}]", v) for k, v in grid.items())]:
        _check_values(dimension, values)
    short = _model_names(models)
    found = []
    for (prompt_name, prompt), model, *values in itertools.product(named.items(), models, *grid.values()):
        settings = dict(zip(grid, values))
        parts = [prompt_name] if len(named) > 1 else []
        parts += [short[model]] if len(models) > 1 else []
        parts += [f"{SHORT_NAMES.get(k, k)}={equal_numbers_alike(v)}" for k, v in settings.items() if len(grid[k]) > 1]
        found.append(Variant(",".join(parts) or prompt_name, prompt_name, prompt, model, settings))
    return found


def _prompt_names(prompts: Prompts) -> dict[str, str]:
    """The prompts by name: a dict as given, a list as p1, p2, ..., one prompt as 'prompt'."""
    if isinstance(prompts, str):
        return {"prompt": prompts}
    named = dict(prompts) if isinstance(prompts, Mapping) else {f"p{i}": p for i, p in enumerate(prompts, 1)}
    if not named:
        raise ConfigError("no prompts: give one prompt, a list of them, or a {name: prompt} dict")
    bad = [name for name in named if not name or any(c in name for c in ",/ ")]
    if bad:
        raise ConfigError(f"prompt name {bad[0]!r}: name a variant with no spaces, commas or slashes")
    return named


def _check_values(dimension: str, values: Sequence[Any]) -> None:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ConfigError(f"{dimension} must be a non-empty list of values, got {values!r}")
    if len({repr(v) for v in values}) < len(values):
        raise ConfigError(f"{dimension} lists a value twice: {list(values)!r}")


def _model_names(models: Sequence[str | None]) -> dict[str | None, str]:
    """How each model is named in a variant: its name after the provider, unless two share that."""
    short = {model: (model or "default").rsplit("/", 1)[-1] for model in models}
    unique = len(set(short.values())) == len(short)
    return {model: name if unique else (model or "default") for model, name in short.items()}


@dataclass
class Cell:
    """One sample of one variant: its run, and its rows' scores (None: no scorer)."""

    run: SummaryRun
    scores: list[Scored] | None = None


class Sweep:
    """The result of `sweep`: each variant's runs and scores, a leaderboard, a long table.

    `runs` maps each variant to its run (sample 0); `cells` holds every sample's.
    """

    def __init__(self, name: str, grid: list[Variant], samples: int, conversations: list[Conversation],
                 cells: dict[tuple[str, int], Cell]) -> None:
        self.name = name
        self.variants = grid
        self.samples = samples
        self.conversations = conversations
        self.cells = cells

    @property
    def runs(self) -> dict[str, SummaryRun]:
        return {v.name: self.cells[v.name, 0].run for v in self.variants}

    @property
    def scored(self) -> bool:
        return any(cell.scores is not None for cell in self.cells.values())

    @property
    def interrupted(self) -> bool:
        return any(cell.run.stats.interrupted for cell in self.cells.values())

    def samples_of(self, variant: str) -> list[Cell]:
        return [self.cells[variant, s] for s in range(self.samples)]

    def stats(self, variant: str) -> RunStats:
        """A variant's counts and money over its samples (the judge's calls not included)."""
        return combined([cell.run.stats for cell in self.samples_of(variant)])

    def leaderboard(self) -> pandas.DataFrame:
        """One row per variant, best mean score first: score, agreement between samples, cost
        spent now (the judge's included), saved, mean latency of fresh calls, errors."""
        import pandas

        frame = pandas.DataFrame([self._standing(v) for v in self.variants])
        return frame.sort_values("score", ascending=False, kind="stable") if self.scored else frame

    def _standing(self, variant: Variant) -> dict[str, Any]:
        cells, stats = self.samples_of(variant.name), self.stats(variant.name)
        scores = [s for cell in cells for s in cell.scores or []]
        fresh = [r.latency_s for cell in cells for r in cell.run.results if not r.cached and r.status == "ok"]
        return {
            "variant": variant.name, "model": cells[0].run.model,
            "score": _mean([s.score for s in scores if s.score is not None]),
            "agreement": self.agreement(variant.name),
            "cost": round(stats.cost + sum(s.cost for s in scores), 12),
            "saved": round(stats.saved_cost + sum(s.saved for s in scores), 12),
            "latency_s": _mean(fresh), "errors": stats.errors, "fresh": stats.fresh, "cached": stats.cached,
        }

    def agreement(self, variant: str) -> float:
        """The share of conversations whose samples all gave the same output (NaN: 1 sample)."""
        if self.samples < 2:
            return math.nan
        outputs = zip(*([r.summary_text() for r in cell.run.results] for cell in self.samples_of(variant)))
        same = [len(set(texts)) == 1 for texts in outputs if None not in texts]
        return _mean([float(s) for s in same])

    def outputs(self, index: int) -> dict[str, str | None]:
        """Conversation `index`'s output from each variant (sample 0): the text, or the error."""
        return {name: _shown(run.results[index]) for name, run in self.runs.items()}

    def differs(self, index: int) -> bool:
        """True if the variants' outputs for conversation `index` are not all the same."""
        return len(set(self.outputs(index).values())) > 1

    def to_pandas(self) -> pandas.DataFrame:
        """Long form: one row per conversation, variant and sample, with its output, whether it
        was cached, its cost (the judge's included) and score."""
        import pandas

        rows = []
        for (name, sample), cell in self.cells.items():
            scores = cell.scores or [Scored()] * len(cell.run.results)
            for result, scored in zip(cell.run.results, scores):
                rows.append({
                    "conversation": result.conversation_id, "variant": name, "sample": sample,
                    "output": result.summary_text(), "cached": result.cached,
                    "cost": (result.cost or 0.0) + scored.cost, "score": scored.score, "error": result.error,
                })
        return pandas.DataFrame(rows)

    def summary_line(self) -> str:
        """The sweep in one line: variants, samples, conversations, calls and money."""
        total = combined([cell.run.stats for cell in self.cells.values()])
        grid = f"{counted(len(self.variants), 'variant')} × {counted(self.samples, 'sample')}"
        return (f"sweep {self.name}: {grid} × {counted(len(self.conversations), 'conversation')} · "
                f"{total.fresh} fresh · {total.cached} cached · {total.errors} errors · {total.spent_label} · "
                f"saved {total.saved_text}" + (" · interrupted" if self.interrupted else ""))

    def __repr__(self) -> str:
        board = self.leaderboard()
        return f"{self.summary_line()}\n{board.to_string(index=False)}\n" \
               f"per row: {self.name}.to_pandas(); a variant's run: {self.name}.runs[VARIANT]"

    def _repr_html_(self) -> str:
        from kura_magic.views.sweep import sweep_html

        return sweep_html(self)


def _shown(result: SummaryResult) -> str | None:
    return result.summary_text() if result.status == "ok" else result.error


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def combined(stats: Sequence[RunStats]) -> RunStats:
    """Several runs' stats as one: counts and money added, the longest elapsed time.

    Example:
        >>> combined([RunStats(total=2, fresh=2, cost=0.5), RunStats(total=2, cached=2)]).summary_line()
        '0/4 done · 2 fresh · 2 cached · 0 errors · spent $0.500 · saved $0.00 · elapsed 0 ms'
    """
    added = ("total", "done", "fresh", "cached", "errors", "skipped", "cost_unknown", "saved_unknown",
             "unsaved", "in_flight")
    together = RunStats(**{name: sum(getattr(s, name) for s in stats) for name in added})
    together.cost = round(sum(s.cost for s in stats), 12)
    together.saved_cost = round(sum(s.saved_cost for s in stats), 12)
    together.elapsed_s = max((s.elapsed_s for s in stats), default=0.0)
    together.phase = next((s.phase for s in stats if s.phase), "")
    together.interrupted = any(s.interrupted for s in stats)
    together.model = stats[0].model if stats else ""
    return together


@dataclass
class _Progress:
    """Each variant's stats over its samples, sent to `on_progress` as runs report."""

    on_progress: SweepProgress | None
    samples: int
    latest: dict[tuple[str, int], RunStats] = field(default_factory=dict)

    def reporter(self, variant: str, sample: int) -> Callable[[RunStats], None]:
        def report(stats: RunStats) -> None:
            self.latest[variant, sample] = stats
            if self.on_progress is not None:
                found = [self.latest[variant, s] for s in range(self.samples) if (variant, s) in self.latest]
                self.on_progress(variant, combined(found))
        return report


def check_budget(conversations: list[Conversation], grid: list[Variant], *, samples: int, max_cost: float,
                 variables: Mapping[str, Any] | None, options: SweepOptions) -> dict[tuple[str, int], float | None]:
    """Refuse the sweep before anything is sent if its estimate is over `max_cost`; else each
    run's share of `max_cost` (in proportion to its estimate), so together they never pass it."""
    if max_cost <= 0:
        raise BudgetError(f"max_cost must be a positive number of dollars, got {max_cost}")
    estimates = {(v.name, s): estimate(conversations, v.prompt, variables=variables, **v.options(options, s))
                 for v in grid for s in range(samples)}
    unpriced = next((e.model for e in estimates.values() if e.fresh and e.estimated_cost is None), None)
    if unpriced is not None:
        raise BudgetError(f"max_cost cannot be enforced: litellm knows no price for {unpriced!r}. "
                          "Sweep without --max-cost, or leave that model out")
    total = sum(e.estimated_cost or 0.0 for e in estimates.values())
    if total > max_cost:
        fresh = sum(e.fresh for e in estimates.values())
        raise BudgetError(
            f"the sweep would cost about {formatting.money(total)} for {fresh} fresh calls, over max_cost "
            f"{formatting.money(max_cost)}; nothing was sent. Sweep fewer variants or conversations (--limit), "
            "or raise --max-cost")
    return {cell: max_cost * (e.estimated_cost or 0.0) / total if e.estimated_cost else None
            for cell, e in estimates.items()}


async def asweep(
    conversations: ConversationSource,
    prompts: Prompts,
    *,
    models: Sequence[str] | None = None,
    params: Mapping[str, Sequence[Any]] | None = None,
    samples: int = 1,
    scorer: ScoreFunction | str | None = None,
    judge_model: str | None = None,
    max_cost: float | None = None,
    name: str = "sweep",
    limit: int | None = None,
    variables: Mapping[str, Any] | None = None,
    on_progress: SweepProgress | None = None,
    cell: str | None = None,
    **options: Unpack[SweepOptions],
) -> Sweep:
    """Run every combination of `prompts` × `models` × `params` values, `samples` times each,
    all at once through one cache and the process-wide concurrency limit; `sweep` is the same,
    blocking. `scorer` scores each output: a function (conversation, output) -> number or bool,
    or a judge prompt using `{{ output }}` (sent to `judge_model`, default the session's,
    cached like any call; its cost counts in the variant's; its reply read by `judge_score`). `max_cost` refuses the sweep before
    anything is sent if its estimate is over, and caps what it spends (the judge's calls aside).
    Each sample is a run in the history, labelled `NAME/VARIANT` (sample 0) or `NAME/VARIANT/sN`.

    Example:
        >>> result = sweep(convs, {"short": "In 5 words:\\n{{ transcript }}", "long": "Summarise:\\n{{ transcript }}"},
        ...                models=["openai/gpt-4o-mini", "openai/gpt-4o"], name="matrix")
        >>> list(result.runs)
        ['short,gpt-4o-mini', 'short,gpt-4o', 'long,gpt-4o-mini', 'long,gpt-4o']
        >>> result.leaderboard()[["variant", "fresh"]].values.tolist()[0]
        ['short,gpt-4o-mini', 5]
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"samples={samples!r}: give a whole number of at least 1")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    grid = variants(prompts, models=[*models] if models else [None], params=params)
    rows = load_conversations(conversations)[:limit]
    judge_options: dict[str, Any] = {k: v for k, v in options.items() if k in JUDGE_SHARES} | {"model": judge_model}
    score = Scorer.create(scorer, variables, judge_options) if scorer is not None else None
    shares = (check_budget(rows, grid, samples=samples, max_cost=max_cost, variables=variables, options=options)
              if max_cost is not None else {})
    progress, stopped = _Progress(on_progress, samples), asyncio.Event()
    on_interrupt(stopped.set)

    async def one(variant: Variant, sample: int) -> Cell:
        run = await asummarise(
            rows, variant.prompt, variables=variables, max_cost=shares.get((variant.name, sample)),
            on_progress=progress.reporter(variant.name, sample), cell=cell,
            label=f"{name}/{variant.name}" + (f"/s{sample}" if sample else ""), **variant.options(options, sample),
        )
        if score is None or stopped.is_set() or run.stats.interrupted:
            return Cell(run)
        return Cell(run, list(await asyncio.gather(*(score.score(c, r) for c, r in zip(rows, run.results)))))

    pairs = [(v, s) for v in grid for s in range(samples)]
    done = await _all([one(v, s) for v, s in pairs])
    return Sweep(name, grid, samples, rows, {(v.name, s): c for (v, s), c in zip(pairs, done)})


sweep = blocking(asweep)


async def _all(work: Sequence[Awaitable[Cell]]) -> list[Cell]:
    """Every run at once; the first failure cancels the others and escapes."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
