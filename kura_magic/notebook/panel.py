"""The cache panel: a live view of a run and of the cache, as widgets or as plain text.

Modelled on tqdm's notebook bar: `Panel` holds the numbers, turns them into text
and carries out the buttons' actions; it is also the text fallback, printing the
same lines where no widget front end exists. `WidgetPanel` only builds widgets
and copies that text into them. The CSS classes (`kura-panel`, `kura-fresh`, ...)
are a stable contract for browser tests and user styles.

A run's panel is one header line like tqdm's (a stacked bar, counts, rate, ETA, calls in
flight, money, elapsed: `run_widget.RunWidget`, an anywidget) over at most three lines: what
changed, one line about the cache, and a status; the cache's details and its buttons live in
the cache panel (`%kura`, ipywidgets). A run's panel first shows at the run's first report
(its template and data read, the cache looked up), so a run that fails before that shows
only its error; one that fails later with no answer yet has its panel emptied.
When a run ends its live widget is replaced, in place, by static HTML of how it ended, so a
saved or exported notebook shows the final counts rather than widget reprs. Every open cache
panel follows the cache: a clear or a switch in one re-renders them all, and their buttons
are off while a run goes.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import sys
import time
import warnings
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from kura_magic import formatting, session
from kura_magic.embeddings import clear_embedding_cache
from kura_magic.errors import KuraMagicError
from kura_magic.notebook import views
from kura_magic.results import RunStats
from kura_magic.session import active_experiment, cache_info, clear_all_caches, clear_cache
from kura_magic.types import CacheInfo

if TYPE_CHECKING:
    import pandas

THROTTLE_S = 0.1
CONFIRM_WINDOW_S = 5.0  # a second click later than this after the first only asks again
# A second click sooner than this is ignored: two clicks queued while the kernel was busy
# reach the panel back to back, and must not count as a person confirming.
CONFIRM_AFTER_S = 0.5
BUSY = "ignored: the cache cannot be changed while a run is going"


class Destructive(NamedTuple):
    """A button that deletes from the cache: the first click arms it, a second one within
    CONFIRM_WINDOW_S carries it out. `question` and `deletes` are formatted with
    `Panel._numbers()`."""

    label: str
    question: str  # the label while armed
    css_class: str
    deletes: str  # what the second click will delete, for the status line


# The destructive buttons, by the name of the `Panel` method each one calls.
BUTTONS = {
    "clear_experiment": Destructive("Clear experiment", "Really clear {experiment}?", "kura-clear-experiment",
                                    "the {own} entries of experiment {experiment!r}"),
    "clear_all": Destructive("Clear all", "Really clear all?", "kura-clear-all",
                             "all {entries} entries of the whole cache, every experiment (the run history stays)"),
    "clear_embeddings": Destructive("Clear embeddings", "Really clear embeddings?", "kura-clear-embeddings",
                                    "the {vectors} vectors of the embedding cache"),
}


class Armed(NamedTuple):
    """A destructive action waiting for its confirming second click."""

    action: str  # a key of BUTTONS
    at: float  # time.monotonic() of the first click
    prompt: str  # the status line: what a second click will delete


# The panel's text, row by row: each name is a CSS class and a key of `Panel.texts()`.
RUN_ROWS = (
    ("kura-done", "kura-fresh", "kura-cached", "kura-errors"),
    ("kura-spent", "kura-saved", "kura-elapsed"),
    ("kura-changes",),  # what changed since the previous run of the same --out
    ("kura-cache",),  # the run panel's one line about the cache
    ("kura-status",),  # why a run stopped
)
# The designed run view (the live widget and the static HTML): the header's pieces, then a
# piece per line. The text view keeps RUN_ROWS.
HEADER = ("kura-done", "kura-fresh", "kura-cached", "kura-errors", "kura-rate", "kura-eta", "kura-phase",
          "kura-spent", "kura-saved", "kura-elapsed")
RUN_VIEW = (HEADER, ("kura-changes",), ("kura-cache",), ("kura-status",))
CACHE_ROWS = (
    ("kura-experiment-size", "kura-total-size", "kura-embeddings-size"),
    ("kura-experiments",),
    ("kura-status",),
)


def cache_texts(info: CacheInfo, name: str) -> dict[str, str]:
    """The cache's size for experiment `name` and in total, and the list of experiments.

    Example:
        >>> cache_texts(CacheInfo(entries=0, bytes=0), "default")["kura-experiment-size"]
        'default: 0 entries, 0 B'
    """
    if not info.enabled:
        return {"kura-experiment-size": f"{name}: caching is off", "kura-total-size": "cache: off"}
    if info.problem is not None:
        return {"kura-experiment-size": f"{name}: not cached", "kura-total-size": info.problem}
    own = info.for_experiment(name)
    listed = ", ".join(f"{n} ({info.experiments[n].entries})" for n in sorted(info.experiments))
    vectors = info.embeddings
    return {
        "kura-experiment-size": f"{name}: {own.entries} entries, {formatting.size(own.bytes)}",
        "kura-total-size": f"cache: {info.entries} entries, {formatting.size(info.bytes)} on disk",
        "kura-embeddings-size": f"embeddings: {vectors.entries} vectors, {formatting.size(vectors.bytes)} on disk",
        "kura-experiments": f"experiments: {listed or 'none yet'}",
    }


def experiment_names(info: CacheInfo, active: str) -> list[str]:
    """The experiments to offer in the selector: those with entries, and the active one.

    Example:
        >>> experiment_names(CacheInfo(entries=0, bytes=0), "default")
        ['default']
    """
    return sorted({*info.experiments, active})


def cache_table(info: CacheInfo, active: str) -> pandas.DataFrame:
    """`%kura stats`: one row per experiment (entries, bytes, size, active), then the whole cache.

    Example:
        >>> cache_table(CacheInfo(entries=0, bytes=0), "default").iloc[-1]["experiment"]
        '(whole cache)'
    """
    import pandas

    rows = [
        {"experiment": name, "entries": e.entries, "bytes": e.bytes,
         "size": formatting.size(e.bytes), "active": name == active}
        for name, e in sorted(info.experiments.items())
    ]
    rows.append({"experiment": "(whole cache)", "entries": info.entries, "bytes": info.bytes,
                 "size": formatting.size(info.bytes), "active": False})
    return pandas.DataFrame(rows)


def progress_line(stats: RunStats, rate: float | None) -> str:
    """The text view's live line, like tqdm's bar: share done, bar, where the run is, elapsed
    and time left at `rate` (calls per second, as `Panel.rate`), rate, then counts and money.

    Example:
        >>> progress_line(RunStats(total=4, done=1, fresh=1, elapsed_s=2.0), 0.5)
        ' 25%|█████               | 1/4 done [2.00 s<6.00 s, 0.5/s] 1 fresh · 0 cached · 0 errors · spent $0.00'
    """
    texts = stats.texts()
    fraction = stats.done / stats.total if stats.total else 0.0
    seconds = seconds_left(stats, rate)
    left = "?" if seconds is None else formatting.duration(seconds)
    speed = f"{rate:.1f}/s" if rate else "?/s"
    counts = " · ".join(texts[name] for name in ("kura-fresh", "kura-cached", "kura-errors", "kura-spent"))
    timing = f"[{formatting.duration(stats.elapsed_s)}<{left}, {speed}]"
    return f"{fraction:4.0%}|{formatting.bar(fraction)}| {texts['kura-done']} {timing} {counts}"


def run_texts(stats: RunStats, rate: float | None, *, going: bool) -> dict[str, str]:
    """The run's pieces of text: counts and money (the saved share beside what was saved), the
    rate of calls and, while the run goes, what it waits on and the time left.

    Example:
        >>> texts = run_texts(RunStats(total=8, done=4, fresh=2, cached=2, cost=0.01, saved_cost=0.03,
        ...                            phase=RunStats.CALLING, in_flight=3), 2.0, going=True)
        >>> [texts[name] for name in ("kura-done", "kura-rate", "kura-eta", "kura-phase", "kura-saved")]
        ['4/8 done', '2.0 calls/s', 'ETA 2.00 s', 'calling · 3 in flight', 'saved $0.0300 (75%)']
    """
    texts = stats.model_copy(update={"phase": "", "in_flight": 0}).texts()
    if stats.saved_cost:
        texts["kura-saved"] += f" ({stats.saved_cost / (stats.saved_cost + stats.cost):.0%})"
    if rate:
        texts["kura-rate"] = f"{rate:.1f} calls/s"
    if not going:
        return texts
    texts["kura-phase"] = _phase_text(stats)
    seconds = seconds_left(stats, rate)
    if seconds is not None:
        texts["kura-eta"] = f"ETA {formatting.duration(seconds)}"
    return texts


def seconds_left(stats: RunStats, rate: float | None) -> float | None:
    """How long the calls not yet done take at `rate` per second (None: unknown, or none left).

    Example:
        >>> seconds_left(RunStats(total=10, done=4, skipped=2), 2.0)
        2.0
    """
    left = stats.total - stats.done - stats.skipped
    return left / rate if rate and left > 0 else None


def _phase_text(stats: RunStats) -> str:
    """What the run waits on: the start, the provider library, or its calls (how many are out,
    once the run has said so: it first reports the calling phase before any is sent)."""
    if stats.phase != RunStats.CALLING:
        return stats.phase or "starting…"
    return f"calling · {stats.in_flight} in flight" if stats.in_flight else "calling…"


def budget_text(stats: RunStats) -> str:
    """Why calls were skipped, said once: the budget, how many, and what one was estimated to cost.

    Example:
        >>> budget_text(RunStats(skipped=12, max_cost=0.01, skip_estimate=0.0011))
        '--max-cost $0.0100 reached: 12 calls skipped (about $0.00110 each)'
    """
    each = f" (about {formatting.money(stats.skip_estimate)} each)" if stats.skip_estimate else ""
    calls = "call" if stats.skipped == 1 else "calls"
    return f"--max-cost {formatting.money(stats.max_cost)} reached: {stats.skipped} {calls} skipped{each}"


def widgets_available() -> bool:
    """True in a Jupyter kernel with ipywidgets installed (detected like tqdm.autonotebook).

    Example:
        >>> widgets_available()   # a plain Python process has no widget front end
        False
    """
    if "ipykernel.zmqshell" not in sys.modules:
        return False
    from IPython import get_ipython

    if "zmq" not in type(get_ipython()).__name__.lower():
        return False
    if importlib.util.find_spec("ipywidgets") is None:
        warnings.warn("ipywidgets is not installed: the kura_magic panel is shown as text", stacklevel=2)
        return False
    return True


# The cache panels on the page, re-rendered when the cache changes, and the runs going now.
_CACHE_PANELS: weakref.WeakSet[Panel] = weakref.WeakSet()
_RUNS_GOING: weakref.WeakSet[Panel] = weakref.WeakSet()


class Panel:
    """The panel's state and actions, shown as plain text lines (the fallback view).

    Example:
        >>> panel = Panel(run=False)
        >>> panel.lines()[0].startswith("default: ")
        True
        >>> panel.clear_all()   # a first click only asks
        >>> panel.label("clear_all"), panel.texts()["kura-status"]
        ('Really clear all?', 'click again within 5 s to delete all 0 entries of the whole cache, every experiment (the run history stays)')
    """

    live = False  # a live view is shown at the run's first report; text is shown when it ends

    def __init__(self, *, experiment: str | None = None, run: bool = True) -> None:
        self.experiment = experiment or active_experiment()
        self.stats: RunStats | None = RunStats() if run else None
        self.info = cache_info()
        self.status = ""
        self.failed = False
        self.changes = ""
        self.ended = False  # the run finished or failed: the cache line is a snapshot
        self.handle: Any = None  # the live view's display, replaced by static HTML at the end
        self._line = 0  # the length of the text view's progress line, to wipe it
        self._armed: Armed | None = None
        self._shown_at = 0.0
        self._calls_from: tuple[float, int] | None = None  # (elapsed_s, fresh) when calls began
        self._phase = ""  # the phase last shown: a new one shows at once
        self._pending = False  # a throttled update waits to be shown
        if not run:
            _CACHE_PANELS.add(self)

    @property
    def running(self) -> bool:
        """A run is going somewhere in this kernel: the cache panels' buttons are off."""
        return bool(_RUNS_GOING)

    def texts(self) -> dict[str, str]:
        """Every piece of text, keyed by its CSS class."""
        texts = cache_texts(self.info, self.experiment)
        budget = ""
        if self.stats is not None:
            texts.update(run_texts(self.stats, self.rate, going=self in _RUNS_GOING))
            when = "at the end of this run" if self.ended else "before this run"
            texts["kura-cache"] = f"cache {when}: {texts['kura-experiment-size']}"
            budget = budget_text(self.stats) if self.stats.skipped else ""
        if self.changes:
            texts["kura-changes"] = self.changes
        status = self._armed.prompt if self._armed and self.armed else self.status or budget
        return {**texts, "kura-status": status} if status else texts

    @property
    def rate(self) -> float | None:
        """Fresh calls per second since the first call went out (None: none answered yet)."""
        if self.stats is None or self._calls_from is None:
            return None
        seconds, calls = self.stats.elapsed_s - self._calls_from[0], self.stats.fresh - self._calls_from[1]
        return calls / seconds if calls and seconds > 0 else None

    @property
    def state(self) -> str:
        """How the run panel looks: running, failed, warning (errors, skips, an interrupt) or ok."""
        stats = self.stats
        if self.failed:
            return "failed"
        if self in _RUNS_GOING:
            return "running"
        return "warning" if stats and (stats.errors or stats.skipped or stats.interrupted) else "ok"

    def lines(self) -> list[str]:
        """The text view: one line per row of the panel."""
        texts = self.texts()
        return [" · ".join(texts[n] for n in row if n in texts) for row in self.rows if any(n in texts for n in row)]

    @property
    def rows(self) -> tuple[tuple[str, ...], ...]:
        """The CSS classes of the panel's text, row by row."""
        return RUN_ROWS if self.stats is not None else CACHE_ROWS

    def html(self) -> str:
        """The panel as static HTML: what a saved or exported notebook shows."""
        rows = RUN_VIEW if self.stats is not None else self.rows
        return views.panel_html(self.texts(), rows, self.stats, state=self.state)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": "\n".join(self.lines()), "text/html": self.html()}

    @property
    def armed(self) -> str | None:
        """The action a second click would carry out now: None once CONFIRM_WINDOW_S has passed."""
        if self._armed is None or time.monotonic() - self._armed.at >= CONFIRM_WINDOW_S:
            return None
        return self._armed.action

    def label(self, action: str) -> str:
        """The text of `action`'s button: its name, or the question while it is armed."""
        button = BUTTONS[action]
        return button.question.format(**self._numbers()) if self.armed == action else button.label

    # the run
    def start(self) -> None:
        """The run begins: the cache panels' buttons are off until it ends. This panel shows at
        the run's first `update`, so a run whose template or data is wrong shows only its error."""
        _RUNS_GOING.add(self)
        for panel in list(_CACHE_PANELS):
            panel.render()

    def update(self, stats: RunStats) -> None:
        """`on_progress`: take the run's numbers, re-rendering at most every THROTTLE_S (a new
        phase at once); an update held back is shown THROTTLE_S later, if none came since."""
        self.stats = stats
        if stats.phase == RunStats.CALLING and self._calls_from is None:
            self._calls_from = (stats.elapsed_s, stats.fresh)
        if stats.phase != self._phase or time.monotonic() - self._shown_at >= THROTTLE_S:
            self._show_now()
        elif not self._pending:
            self._pending = self._render_later(THROTTLE_S, then=self._show_held)

    def _show_now(self) -> None:
        self._shown_at, self._phase = time.monotonic(), self.stats.phase if self.stats else ""
        self.render()
        if self.live and self.handle is None:
            self.handle = _display(self)

    def _show_held(self) -> None:
        """The update the throttle held back (later if another was shown meanwhile), unless
        the run has ended since."""
        self._pending = False
        wait = THROTTLE_S - (time.monotonic() - self._shown_at)
        if self not in _RUNS_GOING:
            return
        if wait > 0:
            self._pending = self._render_later(wait, then=self._show_held)
        else:
            self._show_now()

    def finish(self, stats: RunStats, *, changes: str = "") -> None:
        """The final update: the run's last numbers, what changed since the previous run of
        the same cell, and the cache as it is now; buttons back on (the results are the
        cell's value, in their own text and HTML)."""
        self.stats = stats
        self.changes = changes
        self._end()
        self._show_final()

    def fail(self, message: str) -> None:
        """The run raised: a run stopped part-way keeps its panel, red, saying where and why;
        before any answer there is nothing to show but the error, so a panel shown is emptied
        (IPython cannot take one display off the page, and clearing the cell would also take
        the warnings the run printed, such as a cache that cannot be reached)."""
        self.failed = True
        done = self.stats.done if self.stats is not None else 0
        total = self.stats.total if self.stats is not None else 0
        self.status = f"stopped at {done}/{total}: {message}" if done else message
        self._end()
        if done:
            self._show_final()
        elif self.handle is not None:
            self.handle.update({"text/plain": ""}, raw=True)

    def _end(self) -> None:
        self.ended = True
        _RUNS_GOING.discard(self)
        if self._line:
            _write("\r" + " " * self._line + "\r")
        self.refresh()
        _refresh_cache_panels()

    def _show_final(self) -> None:
        """The final state as static text and HTML: in place of the live view, or printed."""
        if self.handle is not None:
            self.handle.update(Panel._repr_mimebundle_(self), raw=True)
        else:
            _display(self)

    # the buttons: each clear asks first, and nothing changes the cache during a run
    def clear_experiment(self) -> None:
        if self._confirmed("clear_experiment"):
            removed = clear_cache(self.experiment)
            self._done(f"cleared {removed} entries of experiment {self.experiment!r}")

    def clear_all(self) -> None:
        if self._confirmed("clear_all"):
            removed = clear_all_caches()
            self._done(f"cleared {removed} entries from the whole cache; the run history is kept")

    def clear_embeddings(self) -> None:
        if self._confirmed("clear_embeddings"):
            removed = clear_embedding_cache()
            self._done(f"cleared {removed} vectors from the embedding cache")

    def select_experiment(self, name: str) -> None:
        """Make `name` the active experiment (a new name starts an empty one)."""
        if self._refused():
            return
        try:
            self.experiment = session.set_experiment(name)
        except KuraMagicError as exc:
            self._done(str(exc))
            return
        self._done(f"active experiment: {self.experiment}")

    def _confirmed(self, action: str) -> bool:
        """True for the confirming second click on `action`; a first click (or a late
        second one) arms it instead and says what a second click will delete."""
        if self._refused():
            return False
        if self.armed == action and self._armed is not None:
            return time.monotonic() - self._armed.at >= CONFIRM_AFTER_S
        self.info = cache_info()
        deletes = BUTTONS[action].deletes.format(**self._numbers())
        busy = session.in_use_elsewhere()
        prompt = f"click again within {CONFIRM_WINDOW_S:g} s to delete {deletes}" + (f" ({busy})" if busy else "")
        self._armed = Armed(action, time.monotonic(), prompt)
        self.render()
        self._render_later(CONFIRM_WINDOW_S + 0.1, then=self.render)
        return False

    def _refused(self) -> bool:
        """During a run the buttons change nothing: True, and the status says so."""
        if self.running:
            self.status = BUSY
            self.render()
        return self.running

    def _numbers(self) -> dict[str, Any]:
        """What the buttons' questions and warnings are formatted with."""
        info = self.info
        return {"experiment": self.experiment, "own": info.for_experiment(self.experiment).entries,
                "entries": info.entries, "vectors": info.embeddings.entries}

    def _render_later(self, delay_s: float, *, then: Callable[[], None]) -> bool:
        """In a running loop (a kernel's, a run's), call `then` after `delay_s`, so an armed
        button's label turns back by itself and a held update shows; elsewhere that waits
        for the next render. True if it was scheduled."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        loop.call_later(delay_s, then)
        return True

    def _done(self, status: str) -> None:
        """After a change to the cache: say what happened here; every cache panel re-reads it."""
        self.status = status
        self._armed = None
        _refresh_cache_panels()

    def refresh(self) -> None:
        """Re-read the cache's sizes (a cache panel: of the active experiment) and re-render."""
        if self.stats is None:
            self.experiment = active_experiment()
        self.info = cache_info()
        self.render()

    def render(self) -> None:
        """Copy the state into the view: in text, rewrite the run's one progress line in place."""
        if self.stats is None or self not in _RUNS_GOING:
            return
        line = formatting.cut(progress_line(self.stats, self.rate), shutil.get_terminal_size().columns - 1)
        _write("\r" + line.ljust(self._line))
        self._line = len(line)

    def __repr__(self) -> str:
        return "\n".join(self.lines())


class WidgetPanel(Panel):
    """The panel as widgets: a run's is a `RunWidget`, the cache panel is ipywidgets with
    its controls; both only copy `Panel`'s state into the widgets."""

    live = True

    def __init__(self, *, experiment: str | None = None, run: bool = True) -> None:
        super().__init__(experiment=experiment, run=run)
        self.labels: dict[str, Any] = {}
        self.buttons: dict[str, Any] = {}
        if run:
            from kura_magic.notebook.run_widget import RunWidget

            self.root: Any = RunWidget()
        else:
            self.root = self._cache_view()
        self.render()

    def _cache_view(self) -> Any:
        import ipywidgets as widgets

        spaced = {"margin": "0 1.5em 0 0"}
        self.labels = {name: _styled(widgets.Label(layout=spaced), name) for row in self.rows for name in row}
        boxes = [widgets.HBox([self.labels[name] for name in row]) for row in self.rows]
        edge = {"border_left": f"4px solid {views.RUNNING_EDGE}", "padding": "2px 10px"}  # as a run's panel
        return _styled(widgets.VBox([*boxes, self._controls(widgets)], layout=edge), "kura-panel")

    def _controls(self, widgets: Any) -> Any:
        self.selector = _styled(widgets.Combobox(
            value=self.experiment, options=experiment_names(self.info, self.experiment),
            placeholder="experiment name", description="experiment", ensure_option=False,
            continuous_update=False,
        ), "kura-experiment-select")
        self.buttons = {action: _button(widgets, button, getattr(self, action))
                        for action, button in BUTTONS.items()}
        self.selector.observe(self._selected, names="value")
        return widgets.HBox([self.selector, *self.buttons.values()])

    def _selected(self, change: dict[str, Any]) -> None:
        if change["new"] and change["new"] != self.experiment:
            self.select_experiment(change["new"])

    def render(self) -> None:
        if self.stats is not None:
            self.root.show(self.texts(), RUN_VIEW, self.stats, state=self.state)
            return
        texts = self.texts()
        for name, label in self.labels.items():
            label.value = texts.get(name, "")
            label.layout.display = "" if label.value else "none"  # no gap where a line is empty
        self._render_controls()

    def _render_controls(self) -> None:
        for action, button in self.buttons.items():
            button.description = self.label(action)
            button.disabled = self.running
        self.selector.options = experiment_names(self.info, self.experiment)
        self.selector.value = self.experiment
        self.selector.disabled = self.running

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        """The live widget, with this moment's text and HTML for where widgets do not show."""
        bundle = self.root._repr_mimebundle_(include=include, exclude=exclude)
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        return {**data, **super()._repr_mimebundle_()}, metadata


def open_panel(*, mode: str = "auto", experiment: str | None = None, run: bool = True) -> Panel:
    """A widget panel in a Jupyter front end (or when `mode` is 'widgets'), else the text one.

    Example:
        >>> type(open_panel(mode="text", run=False)).__name__
        'Panel'
    """
    use_widgets = mode == "widgets" or (mode == "auto" and widgets_available())
    return (WidgetPanel if use_widgets else Panel)(experiment=experiment, run=run)


def _styled(widget: Any, css_class: str) -> Any:
    widget.add_class(css_class)
    return widget


def _button(widgets: Any, button: Destructive, action: Callable[[], None]) -> Any:
    """A red button, as wide as its text (an armed one names the experiment), calling `action`."""
    widget = _styled(widgets.Button(description=button.label, button_style="danger",
                                    layout={"width": "auto"}), button.css_class)
    widget.on_click(lambda _: action())
    return widget


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _refresh_cache_panels() -> None:
    for panel in list(_CACHE_PANELS):
        panel.refresh()


def _display(panel: Panel) -> Any:
    """Show `panel`; the handle replaces it in place later."""
    from IPython.display import display

    return display(panel, display_id=True)
