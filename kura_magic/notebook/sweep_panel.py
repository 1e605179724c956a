"""A sweep in the notebook: the `%%summarise` cell that names several models, temperatures,
samples, a scorer or `### variant: NAME` prompts; a run panel per variant while it goes (the
run panel as it is, its first piece naming the variant); then the leaderboard and the grid of
conversation × variant, where the variants disagree marked, long outputs a click away."""

from __future__ import annotations

import argparse
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from IPython.core.error import UsageError

from kura_magic import formatting
from kura_magic.calls import CallOptions
from kura_magic.notebook.panel import Panel, WidgetPanel, widgets_available
from kura_magic.notebook.views import Figure, Key, Markup, Row, cut_html, table_html
from kura_magic.results import RunStats
from kura_magic.sweep import Prompts, Sweep, sweep

VARIANT_LINE = re.compile(r"^###\s*variant:\s*(.*?)\s*$", re.MULTILINE)
# Rows where the variants disagree, tinted as `%kura compare` tints changed rows; the cells
# that differ from the row's most common output get an edge.
SWEEP_CSS = (
    ".kura-sweep tr.kura-differs>td{background:rgba(255,152,0,.16)!important;"
    "background:color-mix(in srgb,var(--jp-warn-color1,#ff9800) 16%,var(--jp-layout-color0,#fff))!important}"
    ".kura-sweep .kura-odd{border-left:3px solid #fb8c00;padding-left:4px}"
)


def numbers(text: str) -> list[float]:
    """A flag's comma list of numbers (one number is a list of one).

    Example:
        >>> numbers("0,0.7")
        [0.0, 0.7]
    """
    return [float(part) for part in text.split(",")]


def cell_prompts(cell: str) -> Prompts:
    """The cell's prompt, or its prompts by name where `### variant: NAME` lines part them.

    Example:
        >>> cell_prompts("### variant: short\\nIn 5 words: {{ transcript }}\\n### variant: long\\nSummarise: {{ transcript }}")
        {'short': 'In 5 words: {{ transcript }}', 'long': 'Summarise: {{ transcript }}'}
    """
    parts = VARIANT_LINE.split(cell)
    if len(parts) == 1:
        return cell
    if parts[0].strip():
        raise UsageError("the cell has text above its first '### variant: NAME' line: start each prompt "
                         "with such a line, or use none")
    names = parts[1::2]
    repeated = [name for name, count in Counter(names).items() if count > 1 or not name]
    if repeated:
        raise UsageError(f"variant name {repeated[0]!r} is empty or used twice: give each prompt its own name")
    return {name: prompt.strip() for name, prompt in zip(names, parts[2::2])}


def is_sweep(args: argparse.Namespace, cell: str) -> bool:
    """True if the cell asks for more than one run: a comma in --model, several temperatures,
    samples, a scorer, or named prompt variants. A plain cell stays a plain run."""
    return ("," in (args.model or "") or len(args.temperature) > 1 or args.samples != 1
            or args.scorer is not None or VARIANT_LINE.search(cell) is not None)


def run_sweep(data: Any, cell: str, args: argparse.Namespace, *, user_ns: Mapping[str, Any], mode: str,
              options: CallOptions, where: str) -> Sweep:
    """The sweep the cell asks for, with a panel per variant live beside it."""
    if args.max_concurrency is not None or args.dry_run:
        flag = "--max-concurrency" if args.max_concurrency is not None else "--dry-run"
        raise UsageError(f"{flag} does not go with a sweep: the variants share the process-wide limit "
                         "(%kura config max_concurrency=N); --max-cost checks the whole sweep's estimate first")
    models = [m.strip() for m in args.model.split(",")] if args.model else None
    panels: dict[str, Panel] = {}

    def update(variant: str, stats: RunStats) -> None:
        if variant not in panels:
            panels[variant] = variant_panel(variant, mode=mode, experiment=args.experiment)
            panels[variant].start()
        panels[variant].update(stats)

    common = {k: v for k, v in options.items() if k not in ("model", "temperature")}
    try:
        result = sweep(data, cell_prompts(cell), models=models, params={"temperature": args.temperature},
                       samples=args.samples, scorer=_scorer(args.scorer, user_ns), max_cost=args.max_cost,
                       name=args.out, limit=args.limit, variables=user_ns, on_progress=update, cell=where,
                       **common)  # type: ignore[arg-type]
    except BaseException as exc:
        for panel in panels.values():
            panel.fail(type(exc).__name__ if not str(exc) else str(exc))
        raise
    for name, panel in panels.items():
        panel.finish(result.stats(name), changes=result.runs[name].changes)
    return result


def _scorer(name: str | None, user_ns: Mapping[str, Any]) -> Any:
    """--scorer NAME: a function or a judge prompt (a string) of the notebook."""
    if name is None:
        return None
    value = user_ns.get(name)
    if not (callable(value) or isinstance(value, str)):
        raise UsageError(f"--scorer {name}: define {name} in the notebook as a function (conversation, output) "
                         "-> number, or a judge prompt string using {{ output }}")
    return value


class _Named:
    """A run panel for one variant: its name leads the header; no cache line per variant; a
    variant whose calls are all done waits on nothing (while others go on)."""

    variant = ""
    stats: RunStats | None

    def texts(self) -> dict[str, str]:
        texts = super().texts()  # type: ignore[misc]
        texts["kura-done"] = f"{self.variant}: {texts['kura-done']}"
        texts.pop("kura-cache", None)
        if self.stats is not None and self.stats.done + self.stats.skipped >= self.stats.total:
            texts.pop("kura-phase", None)
        return texts


class VariantPanel(_Named, Panel):
    """A variant's panel as text: its lines once it ends (live lines of many variants at once
    would overwrite each other on the one line a terminal rewrites)."""

    def render(self) -> None:
        return None


class VariantWidgetPanel(_Named, WidgetPanel):
    """A variant's panel as the run widget."""


def variant_panel(variant: str, *, mode: str, experiment: str | None) -> Panel:
    """The panel of one variant: the run widget in Jupyter (or `mode` 'widgets'), else text."""
    use_widgets = mode == "widgets" or (mode == "auto" and widgets_available())
    panel = (VariantWidgetPanel if use_widgets else VariantPanel)(experiment=experiment)
    panel.variant = variant
    return panel


def sweep_html(result: Sweep) -> str:
    """The leaderboard over the grid of conversation × variant."""
    return (f'<div class="kura-sweep {formatting.NO_MATHS}"><style>{SWEEP_CSS}</style>'
            f"{leaderboard_html(result)}{grid_html(result)}</div>")


# The leaderboard's columns: title, and how a row's value reads (score and agreement only
# where a scorer or samples give them).
BOARD_COLUMNS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "variant": ("variant", Key), "model": ("model", str),
    "score": ("mean score", lambda v: Figure(_number(v))), "agreement": ("samples agree", lambda v: Figure(_share(v))),
    "cost": ("cost", lambda v: Figure(formatting.money(v))), "saved": ("saved", lambda v: Figure(formatting.money(v))),
    "latency_s": ("latency", lambda v: Figure("" if math.isnan(v) else formatting.duration(v))),
    "errors": ("errors", lambda v: Figure(str(v))),
}


def leaderboard_html(result: Sweep) -> str:
    """One row per variant, best mean score first (as `leaderboard()`)."""
    left_out = {"score"} if not result.scored else set()
    left_out |= {"agreement"} if result.samples < 2 else set()
    columns = {name: shown for name, shown in BOARD_COLUMNS.items() if name not in left_out}
    rows = [([shown[1](row[name]) for name, shown in columns.items()], None)
            for row in result.leaderboard().to_dict("records")]
    return table_html("leaderboard", [title for title, _ in columns.values()], rows, caption=result.summary_line())


def grid_html(result: Sweep) -> str:
    """One row per conversation, one column per variant (sample 0); rows where the variants
    disagree are tinted and counted, the cells unlike the row's most common output edged."""
    names = list(result.runs)
    count = len(result.conversations)
    differing = [i for i in range(count) if result.differs(i)]
    rows: list[Row] = [(["≠" if i in differing else "", Key(result.conversations[i].chat_id), *_cells(result, i, names)],
             "kura-differs" if i in differing else None) for i in range(min(count, formatting.ROW_LIMIT))]
    caption = f"{len(differing)} of {count} conversations differ between variants"
    return table_html("sweep-grid", ["", "id", *names], rows, caption=caption,
                      hidden=count - formatting.ROW_LIMIT, hidden_hint=".to_pandas()")


def _cells(result: Sweep, index: int, names: list[str]) -> list[Markup]:
    outputs = result.outputs(index)
    ranked = Counter(outputs.values()).most_common(2)
    # the cells unlike a clear majority are edged; a tie has none
    common = ranked[0][0] if len(ranked) > 1 and ranked[0][1] > max(ranked[1][1], 1) else None
    cells = []
    for name in names:
        text = cut_html(outputs[name] or "")
        scores = result.cells[name, 0].scores
        score = scores[index].score if scores is not None else None
        if score is not None:
            text += f' <span class="kura-score">({_number(score)})</span>'
        odd = common is not None and outputs[name] != common
        cells.append(Markup(f'<div class="kura-odd">{text}</div>' if odd else text))
    return cells


def _number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.2f}"  # NaN: no score


def _share(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.0%}"
