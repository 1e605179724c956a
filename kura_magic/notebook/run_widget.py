"""The live run panel as an anywidget: one header line like tqdm's (a stacked bar, counts,
rate, ETA, calls in flight, money, elapsed) and at most three lines under it.

Python decides every word (`RunPanel.texts()`) and the layout (`rows`: the header's pieces,
then one piece per line); the browser only draws them, and ticks the elapsed time from
the last `elapsed_s` it was sent while the run is going, so it moves between updates.
The script is `run_widget.js`; its style `panels.css`, shared with the cache panel; the
colours come from `views.theme`, set as CSS variables (`--kura-colour-ok`, ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from kura_magic.types import RunStats
from kura_magic.views.theme import BAR_PARTS, CSS_COLOURS

HERE = Path(__file__).parent


class RunWidget(anywidget.AnyWidget):
    """The run panel's view: traitlets the browser draws, set by `show`.

    Example:
        >>> widget = RunWidget()
        >>> widget.show({"kura-done": "1/2 done"}, [["kura-done"]], RunStats(total=2, done=1, fresh=1),
        ...             state="running")
        >>> widget.done, widget.total, widget.parts[1], widget.running
        (1, 2, {'name': 'fresh', 'count': 1, 'colour': '#43a047'}, True)
    """

    _esm = HERE / "run_widget.js"
    _css = HERE / "panels.css"

    texts = traitlets.Dict().tag(sync=True)  # CSS class -> its text
    rows: traitlets.List[list[str]] = traitlets.List().tag(sync=True)  # the header's CSS classes, then one per line
    parts: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)  # the stacked bar: name, count, colour
    total = traitlets.Int(0).tag(sync=True)
    done = traitlets.Int(0).tag(sync=True)
    in_flight = traitlets.Int(0).tag(sync=True)
    phase = traitlets.Unicode("").tag(sync=True)
    elapsed_s = traitlets.Float(0.0).tag(sync=True)  # the browser counts on from here while running
    state = traitlets.Unicode("running").tag(sync=True)  # running, ok, warning or failed
    running = traitlets.Bool(True).tag(sync=True)
    colours = traitlets.Dict(CSS_COLOURS).tag(sync=True)  # the theme's, as CSS variables

    def __init__(self) -> None:
        super().__init__()
        self.add_class("kura-panel")
        self.add_class("kura-run")

    def show(self, texts: Mapping[str, str], rows: Sequence[Sequence[str]], stats: RunStats, *,
             state: str) -> None:
        """Send a new state to the browser, in one message."""
        counts = stats.bar_counts()
        with self.hold_sync():
            self.texts = dict(texts)
            self.rows = [list(row) for row in rows]
            self.parts = [{"name": name, "count": counts[name], "colour": colour}
                          for name, colour in BAR_PARTS]
            self.total, self.done, self.in_flight = stats.total, stats.done, stats.in_flight
            self.phase, self.elapsed_s = stats.phase, stats.elapsed_s
            self.state, self.running = state, state == "running"
