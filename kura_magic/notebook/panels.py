"""The panels: a run's, live while it goes, and the cache's (`%kura`), as widgets or as text.

Modelled on tqdm's notebook bar: `RunPanel` and `CachePanel` are plain classes that hold the
state, turn it into text and carry out the buttons' actions; they are also the text
fallback, printing the same lines where no widget front end exists. A widget, where there
is one, is attached to them (`run_widget.RunWidget`, `cache_widget.CacheWidget`, both
anywidgets with one look, `panels.css`) and only draws what they send it. The CSS classes
(`kura-panel`, `kura-fresh`, ...) are a stable contract for browser tests and user styles.

A run's panel is one header line like tqdm's (a stacked bar, counts, rate, ETA, calls in
flight, money, elapsed: `run_widget.RunWidget`, an anywidget) over at most three lines: what
changed, one line about the cache, and a status; the cache's details and its buttons live in
the cache panel (`%kura`). A run's panel first shows at the run's first report
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

from typing_extensions import Self

from kura_magic import formatting
from kura_magic.errors import KuraMagicError
from kura_magic.run import session
from kura_magic.run.embeddings import clear_embedding_cache
from kura_magic.run.session import active_experiment, cache_info, clear_all_caches, clear_cache
from kura_magic.storage.runlog import clear_history, records
from kura_magic.types import CacheInfo, RunStats

if TYPE_CHECKING:
    from kura_magic.notebook.cache_widget import CacheWidget
    from kura_magic.notebook.run_widget import RunWidget
from kura_magic.views.html import panel_html
from kura_magic.views.text import budget_text, cache_texts, progress_line, run_texts

THROTTLE_S = 0.1
CONFIRM_WINDOW_S = 5.0  # a second click later than this after the first only asks again
# A second click sooner than this is ignored: two clicks queued while the kernel was busy
# reach the panel back to back, and must not count as a person confirming.
CONFIRM_AFTER_S = 0.5
BUSY = "ignored: the cache cannot be changed while a run is going"


class Destructive(NamedTuple):
    """A button that deletes from the cache: the first click arms it, a second one within
    CONFIRM_WINDOW_S carries it out. `question` and `deletes` are formatted with
    `CachePanel._numbers()`."""

    label: str
    question: str  # the label while armed
    css_class: str
    deletes: str  # what the second click will delete, for the status line


# The destructive buttons, by the name of the `CachePanel` method each one calls.
BUTTONS = {
    "clear_experiment": Destructive("Clear experiment", "Really clear {experiment}?", "kura-clear-experiment",
                                    "the {own} entries of experiment {experiment!r}"),
    "clear_all": Destructive("Clear all", "Really clear all?", "kura-clear-all",
                             "all {entries} entries of the whole cache, every experiment (the run history stays)"),
    "clear_embeddings": Destructive("Clear embeddings", "Really clear embeddings?", "kura-clear-embeddings",
                                    "the {vectors} vectors of the embedding cache"),
    # the one thing the cache cannot give back: asked apart, by its own count
    "clear_history": Destructive("Clear history", "Delete the {runs}?", "kura-clear-history",
                                 "the {runs} of the run history; they cannot be rebuilt from the cache"),
}


class Armed(NamedTuple):
    """A destructive action waiting for its confirming second click."""

    action: str  # a key of BUTTONS
    at: float  # time.monotonic() of the first click
    prompt: str  # the status line: what a second click will delete


# The panels' text, row by row: each name is a CSS class and a key of `texts()`.
RUN_ROWS = (
    ("kura-done", "kura-fresh", "kura-cached", "kura-errors", "kura-retries"),
    ("kura-spent", "kura-saved", "kura-elapsed"),
    ("kura-changes",),  # what changed since the previous run of the same --out
    ("kura-cache",),  # the run panel's one line about the cache
    ("kura-status",),  # why a run stopped
)
# The designed run view (the live widget and the static HTML): the header's pieces, then a
# piece per line. The text view keeps RUN_ROWS.
HEADER = ("kura-done", "kura-fresh", "kura-cached", "kura-errors", "kura-retries", "kura-rate", "kura-eta", "kura-phase",
          "kura-spent", "kura-saved", "kura-elapsed")
RUN_VIEW = (HEADER, ("kura-changes",), ("kura-cache",), ("kura-status",))
CACHE_ROWS = (
    ("kura-experiment-size", "kura-total-size", "kura-embeddings-size"),
    ("kura-experiments",),
    ("kura-status",),
)


def experiment_names(info: CacheInfo, active: str) -> list[str]:
    """The experiments to offer in the selector: those with entries, and the active one.

    Example:
        >>> experiment_names(CacheInfo(entries=0, bytes=0), "default")
        ['default']
    """
    return sorted({*info.experiments, active})


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
_CACHE_PANELS: weakref.WeakSet[CachePanel] = weakref.WeakSet()
_RUNS_GOING: weakref.WeakSet[RunPanel] = weakref.WeakSet()


def run_going() -> bool:
    """A run is going somewhere in this kernel: the cache panels' buttons are off."""
    return bool(_RUNS_GOING)


class _Shown:
    """What both panels show: their texts as lines (the text view) and as static HTML."""

    rows: tuple[tuple[str, ...], ...]

    def texts(self) -> dict[str, str]:
        raise NotImplementedError

    @property
    def state(self) -> str:
        return "ok"

    def lines(self) -> list[str]:
        """The text view: one line per row of the panel."""
        texts = self.texts()
        return [" · ".join(texts[n] for n in row if n in texts) for row in self.rows if any(n in texts for n in row)]

    def html(self) -> str:
        """The panel as static HTML: what a saved or exported notebook shows."""
        return panel_html(self.texts(), self.rows, None, state=self.state)

    def static_bundle(self) -> dict[str, str]:
        return {"text/plain": "\n".join(self.lines()), "text/html": self.html()}

    def __repr__(self) -> str:
        return "\n".join(self.lines())


class CachePanel(_Shown):
    """The cache panel's state and actions: the sizes, the experiment chooser, and the clear
    buttons, which ask first. Its text view is the lines; a widget, if attached, draws them.

    Example:
        >>> panel = CachePanel(experiment="default", info=CacheInfo(entries=0, bytes=0))
        >>> panel.lines()[0]
        'default: 0 entries, 0 B · cache: 0 entries, 0 B on disk · embeddings: 0 vectors, 0 B on disk'
        >>> panel.clear_all()   # a first click only asks
        >>> panel.label("clear_all"), panel.texts()["kura-status"]
        ('Really clear all?', 'click again within 5 s to delete all 0 entries of the whole cache, every experiment (the run history stays)')
    """

    rows = CACHE_ROWS

    def __init__(self, *, experiment: str, info: CacheInfo, widget: CacheWidget | None = None) -> None:
        self.experiment = experiment
        self.info = info
        self.status = ""
        self.widget = widget
        self._armed: Armed | None = None

    @classmethod
    def open(cls, *, experiment: str | None = None, widget: bool = False) -> CachePanel:
        """A cache panel of the cache as it is now (with a widget, where one can be shown),
        kept up to date with every other one on the page."""
        panel = cls(experiment=experiment or active_experiment(), info=cache_info())
        if widget:
            from kura_magic.notebook.cache_widget import CacheWidget

            panel.widget = CacheWidget(act=panel.act, choose=panel.choose)
        _CACHE_PANELS.add(panel)
        panel.render()
        return panel

    def texts(self) -> dict[str, str]:
        """Every piece of text, keyed by its CSS class."""
        texts = cache_texts(self.info, self.experiment)
        status = self._armed.prompt if self._armed and self.armed else self.status
        return {**texts, "kura-status": status} if status else texts

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

    def act(self, action: str) -> None:
        """A click on the button of `action` (a key of BUTTONS)."""
        if action in BUTTONS:
            getattr(self, action)()

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

    def clear_history(self) -> None:
        if self._confirmed("clear_history"):
            removed = clear_history()
            self._done(f"deleted {formatting.counted(removed, 'recorded run')}; the cache's entries are kept")

    def choose(self, name: str) -> None:
        """A name chosen or typed in the experiment chooser: switch to it if it is another."""
        if name and name != self.experiment:
            self.select_experiment(name)

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
        _call_later(CONFIRM_WINDOW_S + 0.1, self.render)
        return False

    def _refused(self) -> bool:
        """During a run the buttons change nothing: True, and the status says so."""
        if run_going():
            self.status = BUSY
            self.render()
        return run_going()

    def _numbers(self) -> dict[str, Any]:
        """What the buttons' questions and warnings are formatted with."""
        info = self.info
        return {"experiment": self.experiment, "own": info.for_experiment(self.experiment).entries,
                "entries": info.entries, "vectors": info.embeddings.entries,
                "runs": formatting.counted(len(records()), "recorded run")}

    def _done(self, status: str) -> None:
        """After a change to the cache: say what happened here; every cache panel re-reads it."""
        self.status = status
        self._armed = None
        _refresh_cache_panels()

    def refresh(self) -> None:
        """Re-read the active experiment and the cache's sizes, and re-render."""
        self.experiment = active_experiment()
        self.info = cache_info()
        self.render()

    def render(self) -> None:
        """Copy the state into the widget, if one is attached (the text view is `lines`)."""
        if self.widget is None:
            return
        self.widget.show(
            self.texts(), self.rows,
            buttons=[{"action": action, "label": self.label(action), "css": button.css_class,
                      "armed": self.armed == action} for action, button in BUTTONS.items()],
            experiments=experiment_names(self.info, self.experiment), experiment=self.experiment,
            disabled=run_going(),
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        """The widget, with this moment's text and HTML for where widgets do not show."""
        if self.widget is None:
            return self.static_bundle()
        return _with_widget(self.widget, self.static_bundle(), include, exclude)


class RunPanel(_Shown):
    """A run's panel: its numbers as they come (`update`), how it ended (`finish`, `fail`),
    and a line about the cache. Its text view is one progress line rewritten in place; a
    widget, if attached, draws the live header and is replaced by static HTML at the end.

    Example:
        >>> panel = RunPanel(experiment="default", info=CacheInfo(entries=0, bytes=0))
        >>> panel.finish(RunStats(total=2, done=2, fresh=2, cost=0.01))   # shown as text here
        2/2 done · 2 fresh · 0 cached · 0 errors
        spent $0.0100 · saved $0.00 · elapsed 0 ms
        cache at the end of this run: default: 0 entries, 0 B
    """

    rows = RUN_ROWS

    def __init__(self, *, experiment: str, info: CacheInfo, widget: RunWidget | None = None) -> None:
        self.experiment = experiment
        self.info = info
        self.widget = widget
        self.stats = RunStats()
        self.status = ""
        self.failed = False
        self.changes = ""
        self.ended = False  # the run finished or failed: the cache line is a snapshot
        self.handle: Any = None  # the live view's display, replaced by static HTML at the end
        self._line = 0  # the length of the text view's progress line, to wipe it
        self._shown_at = 0.0
        self._calls_from: tuple[float, int] | None = None  # (elapsed_s, fresh) when calls began
        self._phase = ""  # the phase last shown: a new one shows at once
        self._pending = False  # a throttled update waits to be shown

    @classmethod
    def open(cls, *, experiment: str | None = None, widget: bool = False) -> Self:
        """A run panel beside the cache as it is before the run (with a live widget, where
        one can be shown)."""
        panel = cls(experiment=experiment or active_experiment(), info=cache_info())
        if widget:
            from kura_magic.notebook.run_widget import RunWidget

            panel.widget = RunWidget()
            panel.render()
        return panel

    @property
    def live(self) -> bool:
        """A live view is shown at the run's first report; text is shown when it ends."""
        return self.widget is not None

    def texts(self) -> dict[str, str]:
        """Every piece of text, keyed by its CSS class."""
        texts = cache_texts(self.info, self.experiment)
        texts.update(run_texts(self.stats, self.rate, going=self in _RUNS_GOING))
        when = "at the end of this run" if self.ended else "before this run"
        texts["kura-cache"] = f"cache {when}: {texts['kura-experiment-size']}"
        if self.changes:
            texts["kura-changes"] = self.changes
        status = self.status or (budget_text(self.stats) if self.stats.skipped else "")
        return {**texts, "kura-status": status} if status else texts

    @property
    def rate(self) -> float | None:
        """Fresh calls per second since the first call went out (None: none answered yet)."""
        if self._calls_from is None:
            return None
        seconds, calls = self.stats.elapsed_s - self._calls_from[0], self.stats.fresh - self._calls_from[1]
        return calls / seconds if calls and seconds > 0 else None

    @property
    def state(self) -> str:
        """How the panel looks: running, failed, warning (errors, skips, an interrupt) or ok."""
        stats = self.stats
        if self.failed:
            return "failed"
        if self in _RUNS_GOING:
            return "running"
        return "warning" if stats.errors or stats.skipped or stats.interrupted else "ok"

    def html(self) -> str:
        return panel_html(self.texts(), RUN_VIEW, self.stats, state=self.state)

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
            self._pending = _call_later(THROTTLE_S, self._show_held)

    def _show_now(self) -> None:
        self._shown_at, self._phase = time.monotonic(), self.stats.phase
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
            self._pending = _call_later(wait, self._show_held)
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
        done, total = self.stats.done, self.stats.total
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
        self.info = cache_info()
        self.render()
        _refresh_cache_panels()

    def _show_final(self) -> None:
        """The final state as static text and HTML: in place of the live view, or printed."""
        if self.handle is not None:
            self.handle.update(self.static_bundle(), raw=True)
        else:
            _display(self)

    def render(self) -> None:
        """Copy the state into the widget; in text, rewrite the run's one progress line in place."""
        if self.widget is not None:
            self.widget.show(self.texts(), RUN_VIEW, self.stats, state=self.state)
            return
        if self not in _RUNS_GOING:
            return
        line = formatting.cut(progress_line(self.stats, self.rate), shutil.get_terminal_size().columns - 1)
        _write("\r" + line.ljust(self._line))
        self._line = len(line)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        """The live widget, with this moment's text and HTML for where widgets do not show;
        without a widget (or once ended), the text and HTML."""
        if self.widget is None or self.ended:
            return self.static_bundle()
        return _with_widget(self.widget, self.static_bundle(), include, exclude)


def open_run_panel(*, mode: str = "auto", experiment: str | None = None) -> RunPanel:
    """A run's panel: live widgets in a Jupyter front end (or when `mode` is 'widgets'), else text.

    Example:
        >>> open_run_panel(mode="text").live
        False
    """
    return RunPanel.open(experiment=experiment, widget=use_widgets(mode))


def open_cache_panel(*, mode: str = "auto", experiment: str | None = None) -> CachePanel:
    """The cache panel (`%kura`): a widget in a Jupyter front end (or when `mode` is 'widgets'), else text.

    Example:
        >>> open_cache_panel(mode="text").widget is None
        True
    """
    return CachePanel.open(experiment=experiment, widget=use_widgets(mode))


def use_widgets(mode: str) -> bool:
    """Whether panels in `mode` ('auto', 'widgets', 'text') are live widgets here."""
    return mode == "widgets" or (mode == "auto" and widgets_available())


def _with_widget(widget: Any, static: dict[str, str], include: Any, exclude: Any) -> Any:
    """A widget's mime bundle with `static` text and HTML beside it."""
    bundle = widget._repr_mimebundle_(include=include, exclude=exclude)
    data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
    return {**data, **static}, metadata


def _call_later(delay_s: float, then: Callable[[], None]) -> bool:
    """In a running loop (a kernel's, a run's), call `then` after `delay_s`, so an armed
    button's label turns back by itself and a held update shows; elsewhere that waits
    for the next render. True if it was scheduled."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    loop.call_later(delay_s, then)
    return True


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _refresh_cache_panels() -> None:
    for panel in list(_CACHE_PANELS):
        panel.refresh()


def _display(panel: RunPanel) -> Any:
    """Show `panel`; the handle replaces it in place later."""
    from IPython.display import display

    return display(panel, display_id=True)
