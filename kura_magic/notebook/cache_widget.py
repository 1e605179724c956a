"""The cache panel (`%kura`) as an anywidget, drawn as the run panel is (`panels.css`): the
cache's sizes, the experiment chooser, and the buttons that clear, which stand apart in the
failure colour and fill when armed.

Python decides every word and which button is armed (`CachePanel`); the browser only draws
them and sends back a click (`{"action": ...}`) or a chosen experiment (`{"choose": ...}`).
The script is `cache_widget.js`, next to this file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from kura_magic.views.theme import CSS_COLOURS

HERE = Path(__file__).parent


class CacheWidget(anywidget.AnyWidget):
    """The cache panel's view: traitlets the browser draws, set by `show`; `click` and
    `choose` are what the browser's messages call.

    Example:
        >>> clicked = []
        >>> widget = CacheWidget(act=clicked.append, choose=print)
        >>> widget.show({"kura-status": "ready"}, [["kura-status"]], buttons=[], experiments=["default"],
        ...             experiment="default", disabled=False)
        >>> widget.click("clear_all")
        >>> clicked, widget.texts
        (['clear_all'], {'kura-status': 'ready'})
    """

    _esm = HERE / "cache_widget.js"
    _css = HERE / "panels.css"

    texts = traitlets.Dict().tag(sync=True)  # CSS class -> its text
    rows: traitlets.List[list[str]] = traitlets.List().tag(sync=True)  # the CSS classes, line by line
    buttons: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)  # action, label, css, armed
    experiments: traitlets.List[str] = traitlets.List().tag(sync=True)  # offered by the chooser
    experiment = traitlets.Unicode("").tag(sync=True)  # the active one
    disabled = traitlets.Bool(False).tag(sync=True)  # a run is going: nothing may change the cache
    colours = traitlets.Dict(CSS_COLOURS).tag(sync=True)  # the theme's, as CSS variables

    def __init__(self, *, act: Callable[[str], None], choose: Callable[[str], None]) -> None:
        super().__init__()
        self.add_class("kura-panel")
        self.add_class("kura-cache")
        self._act, self._choose = act, choose
        self.on_msg(self._message)

    def show(self, texts: Mapping[str, str], rows: Sequence[Sequence[str]], *, buttons: list[dict[str, Any]],
             experiments: list[str], experiment: str, disabled: bool) -> None:
        """Send a new state to the browser, in one message."""
        with self.hold_sync():
            self.texts = dict(texts)
            self.rows = [list(row) for row in rows]
            self.buttons, self.experiments, self.experiment = buttons, experiments, experiment
            self.disabled = disabled

    def click(self, action: str) -> None:
        """A click on the button of `action`."""
        self._act(action)

    def choose(self, name: str) -> None:
        """An experiment chosen or typed in the chooser."""
        self._choose(name.strip())

    def _message(self, _: Any, content: dict[str, Any], buffers: list[bytes]) -> None:
        if isinstance(content.get("action"), str):
            self.click(content["action"])
        elif isinstance(content.get("choose"), str):
            self.choose(content["choose"])
