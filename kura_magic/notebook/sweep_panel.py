"""A sweep in the notebook: the `%%summarise` cell that names several models, temperatures,
samples, a scorer or `### variant: NAME` prompts; a run panel per variant while it goes (the
run panel as it is, its first piece naming the variant); then the leaderboard and the grid of
conversation × variant, where the variants disagree marked, long outputs a click away."""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from IPython.core.error import UsageError

from kura_magic.calls.calls import CallOptions
from kura_magic.notebook.panels import RunPanel, use_widgets
from kura_magic.run.sweep import Prompts, Sweep, sweep
from kura_magic.types import RunStats

VARIANT_LINE = re.compile(r"^###\s*variant:\s*(.*?)\s*$", re.MULTILINE)
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
    panels: dict[str, RunPanel] = {}

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


class VariantPanel(RunPanel):
    """A run panel for one variant: its name leads the header; no cache line per variant; a
    variant whose calls are all done waits on nothing (while others go on). As text, its
    lines once it ends (live lines of many variants at once would overwrite each other on
    the one line a terminal rewrites)."""

    variant = ""

    def texts(self) -> dict[str, str]:
        texts = super().texts()
        texts["kura-done"] = f"{self.variant}: {texts['kura-done']}"
        texts.pop("kura-cache", None)
        if self.stats.done + self.stats.skipped >= self.stats.total:
            texts.pop("kura-phase", None)
        return texts

    def render(self) -> None:
        if self.widget is not None:
            super().render()


def variant_panel(variant: str, *, mode: str, experiment: str | None) -> VariantPanel:
    """The panel of one variant: the run widget in Jupyter (or `mode` 'widgets'), else text."""
    panel = VariantPanel.open(experiment=experiment, widget=use_widgets(mode))
    panel.variant = variant
    panel.render()
    return panel
