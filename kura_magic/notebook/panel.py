"""The cache panel: a live view of a run and of the cache, as widgets or as plain text.

Modelled on tqdm's notebook bar: `Panel` holds the numbers, turns them into text
and carries out the buttons' actions; it is also the text fallback, printing the
same lines where no widget front end exists. `WidgetPanel` only builds ipywidgets
and copies that text into them. The CSS classes (`kura-panel`, `kura-fresh`, ...)
are a stable contract for browser tests and user styles.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from kura_magic import formatting, session
from kura_magic.embeddings import clear_embedding_cache
from kura_magic.errors import KuraMagicError
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
                             "all {entries} entries of the whole cache, every experiment"),
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
)
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


class Panel:
    """The panel's state and actions, shown as plain text lines (the fallback view).

    Example:
        >>> panel = Panel(run=False)
        >>> panel.lines()[0].startswith("default: ")
        True
        >>> panel.clear_all()   # a first click only asks
        >>> panel.label("clear_all"), panel.texts()["kura-status"]
        ('Really clear all?', 'click again within 5 s to delete all 0 entries of the whole cache, every experiment')
    """

    live = False  # a live view is shown when the run starts; text is shown when it ends

    def __init__(self, *, experiment: str | None = None, run: bool = True) -> None:
        self.experiment = experiment or active_experiment()
        self.stats: RunStats | None = RunStats() if run else None
        self.info = cache_info()
        self.status = ""
        self.running = False  # between start() and finish()/fail(): the buttons are off
        self.failed = False
        self._armed: Armed | None = None
        self._shown_at = 0.0

    def texts(self) -> dict[str, str]:
        """Every piece of text, keyed by its CSS class."""
        texts = cache_texts(self.info, self.experiment)
        if self.stats is not None:
            texts.update(self.stats.texts())
        status = self._armed.prompt if self._armed and self.armed else self.status
        return {**texts, "kura-status": status} if status else texts

    def lines(self) -> list[str]:
        """The text view: one line per row of the panel."""
        texts = self.texts()
        rows = (*RUN_ROWS, *CACHE_ROWS) if self.stats is not None else CACHE_ROWS
        return [" · ".join(texts[n] for n in row if n in texts) for row in rows if any(n in texts for n in row)]

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
        """The run begins: the buttons are off until it ends. A live view is shown now."""
        self.running, self._armed = True, None
        self.render()
        if self.live:
            _display(self)

    def update(self, stats: RunStats) -> None:
        """`on_progress`: take the run's numbers, re-rendering at most every THROTTLE_S."""
        self.stats = stats
        now = time.monotonic()
        if now - self._shown_at >= THROTTLE_S:
            self._shown_at = now
            self.render()

    def finish(self, stats: RunStats) -> None:
        """The final update: the run's last numbers and the cache as it is now; buttons back on."""
        self.stats = stats
        self.running = False
        self.refresh()
        if not self.live:
            _display(self)

    def fail(self, message: str) -> None:
        """Mark the run as failed (a red bar in the widget view); buttons back on."""
        self.failed = True
        self.running = False
        self.status = message
        self.render()

    # the buttons: each clear asks first, and nothing changes the cache during a run
    def clear_experiment(self) -> None:
        if self._confirmed("clear_experiment"):
            removed = clear_cache(self.experiment)
            self._done(f"cleared {removed} entries of experiment {self.experiment!r}")

    def clear_all(self) -> None:
        if self._confirmed("clear_all"):
            removed = clear_all_caches()
            self._done(f"cleared {removed} entries from the whole cache")

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
        prompt = f"click again within {CONFIRM_WINDOW_S:g} s to delete {deletes}"
        self._armed = Armed(action, time.monotonic(), prompt)
        self.render()
        self._render_later(CONFIRM_WINDOW_S + 0.1)
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

    def _render_later(self, delay_s: float) -> None:
        """In a kernel (a running loop), re-render after `delay_s`, so an armed button's label
        turns back by itself; elsewhere it turns back at the next render."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_later(delay_s, self.render)

    def _done(self, status: str) -> None:
        self.status = status
        self._armed = None
        self.refresh()

    def refresh(self) -> None:
        """Re-read the cache's sizes and re-render."""
        self.info = cache_info()
        self.render()

    def render(self) -> None:
        """Copy the state into the view; text has no live view."""

    def __repr__(self) -> str:
        return "\n".join(self.lines())


class WidgetPanel(Panel):
    """The panel as ipywidgets: builds the widgets, and copies `Panel`'s state into them."""

    live = True

    def __init__(self, *, experiment: str | None = None, run: bool = True) -> None:
        super().__init__(experiment=experiment, run=run)
        import ipywidgets as widgets

        rows = (*RUN_ROWS, *CACHE_ROWS) if run else CACHE_ROWS
        spaced = {"margin": "0 1.5em 0 0"}
        self.labels = {name: _styled(widgets.Label(layout=spaced), name) for row in rows for name in row}
        self.progress = _styled(widgets.IntProgress(min=0, max=1, value=0), "kura-progress")
        boxes = [widgets.HBox([self.labels[name] for name in row]) for row in rows]
        top = [self.progress] if run else []
        self.root = _styled(widgets.VBox([*top, *boxes, self._controls(widgets)]), "kura-panel")
        self.render()

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
        texts = self.texts()
        for name, label in self.labels.items():
            label.value = texts.get(name, "")
        if self.stats is not None:
            self.progress.max = max(self.stats.total, 1)
            self.progress.value = self.stats.done
            self.progress.bar_style = _bar_style(self.stats, failed=self.failed)
        for action, button in self.buttons.items():
            button.description = self.label(action)
            button.disabled = self.running
        self.selector.options = experiment_names(self.info, self.experiment)
        self.selector.value = self.experiment
        self.selector.disabled = self.running

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        return self.root._repr_mimebundle_(include=include, exclude=exclude)


def open_panel(*, mode: str = "auto", experiment: str | None = None, run: bool = True) -> Panel:
    """A widget panel in a Jupyter front end (or when `mode` is 'widgets'), else the text one.

    Example:
        >>> type(open_panel(mode="text", run=False)).__name__
        'Panel'
    """
    use_widgets = mode == "widgets" or (mode == "auto" and widgets_available())
    return (WidgetPanel if use_widgets else Panel)(experiment=experiment, run=run)


def _bar_style(stats: RunStats, *, failed: bool) -> str:
    if failed:
        return "danger"
    if stats.errors or stats.interrupted or stats.skipped:
        return "warning"
    return "success" if stats.done == stats.total else ""


def _styled(widget: Any, css_class: str) -> Any:
    widget.add_class(css_class)
    return widget


def _button(widgets: Any, button: Destructive, action: Callable[[], None]) -> Any:
    """A red button, as wide as its text (an armed one names the experiment), calling `action`."""
    widget = _styled(widgets.Button(description=button.label, button_style="danger",
                                    layout={"width": "auto"}), button.css_class)
    widget.on_click(lambda _: action())
    return widget


def _display(panel: Panel) -> None:
    from IPython.display import display

    display(panel)
