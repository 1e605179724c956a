"""The cache panel: a live view of a run and of the cache, as widgets or as plain text.

Modelled on tqdm's notebook bar: `Panel` holds the numbers, turns them into text
and carries out the buttons' actions; it is also the text fallback, printing the
same lines where no widget front end exists. `WidgetPanel` only builds ipywidgets
and copies that text into them. The CSS classes (`kura-panel`, `kura-fresh`, ...)
are a stable contract for browser tests and user styles.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import warnings
from typing import TYPE_CHECKING, Any

from kura_magic import formatting, session
from kura_magic.embeddings import clear_embedding_cache
from kura_magic.errors import KuraMagicError
from kura_magic.results import RunStats
from kura_magic.session import active_experiment, cache_info, clear_all_caches, clear_cache
from kura_magic.types import CacheInfo

if TYPE_CHECKING:
    import pandas

THROTTLE_S = 0.1
CLEAR_ALL = "Clear all"
CONFIRM_CLEAR_ALL = "Really clear all?"

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
    """

    live = False  # a live view is shown when the run starts; text is shown when it ends

    def __init__(self, *, experiment: str | None = None, run: bool = True) -> None:
        self.experiment = experiment or active_experiment()
        self.stats: RunStats | None = RunStats() if run else None
        self.info = cache_info()
        self.status = ""
        self.confirming = False
        self.failed = False
        self._shown_at = 0.0

    def texts(self) -> dict[str, str]:
        """Every piece of text, keyed by its CSS class."""
        texts = cache_texts(self.info, self.experiment)
        if self.stats is not None:
            texts.update(self.stats.texts())
        return {**texts, "kura-status": self.status} if self.status else texts

    def lines(self) -> list[str]:
        """The text view: one line per row of the panel."""
        texts = self.texts()
        rows = (*RUN_ROWS, *CACHE_ROWS) if self.stats is not None else CACHE_ROWS
        return [" · ".join(texts[n] for n in row if n in texts) for row in rows if any(n in texts for n in row)]

    @property
    def clear_all_label(self) -> str:
        return CONFIRM_CLEAR_ALL if self.confirming else CLEAR_ALL

    # the run
    def start(self) -> None:
        """Show the panel if it is live (widgets); text waits for the end."""
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
        """The final update: the run's last numbers and the cache as it is now."""
        self.stats = stats
        self.refresh()
        if not self.live:
            _display(self)

    def fail(self, message: str) -> None:
        """Mark the run as failed (a red bar in the widget view)."""
        self.failed = True
        self.status = message
        self.render()

    # the buttons
    def clear_experiment(self) -> None:
        removed = clear_cache(self.experiment)
        self._done(f"cleared {removed} entries of experiment {self.experiment!r}")

    def clear_all(self) -> None:
        """First call asks for confirmation; the second clears the whole cache."""
        if not self.confirming:
            self.status = "click again to clear the whole cache, every experiment"
            self.confirming = True
            self.render()
            return
        removed = clear_all_caches()
        self._done(f"cleared {removed} entries from the whole cache")

    def clear_embeddings(self) -> None:
        removed = clear_embedding_cache()
        self._done(f"cleared {removed} vectors from the embedding cache")

    def select_experiment(self, name: str) -> None:
        """Make `name` the active experiment (a new name starts an empty one)."""
        try:
            self.experiment = session.set_experiment(name)
        except KuraMagicError as exc:
            self._done(str(exc))
            return
        self._done(f"active experiment: {self.experiment}")

    def _done(self, status: str) -> None:
        self.status = status
        self.confirming = False
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
        self.clear_experiment_button = _button(widgets, "Clear experiment", "kura-clear-experiment", self.clear_experiment)
        self.clear_all_button = _button(widgets, CLEAR_ALL, "kura-clear-all", self.clear_all)
        self.clear_embeddings_button = _button(widgets, "Clear embeddings", "kura-clear-embeddings", self.clear_embeddings)
        self.selector.observe(self._selected, names="value")
        return widgets.HBox([self.selector, self.clear_experiment_button, self.clear_all_button,
                             self.clear_embeddings_button])

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
        self.clear_all_button.description = self.clear_all_label
        self.selector.options = experiment_names(self.info, self.experiment)
        self.selector.value = self.experiment

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


def _button(widgets: Any, description: str, css_class: str, action: Any) -> Any:
    button = _styled(widgets.Button(description=description), css_class)
    button.on_click(lambda _: action())
    return button


def _display(panel: Panel) -> None:
    from IPython.display import display

    display(panel)
