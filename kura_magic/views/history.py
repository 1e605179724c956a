"""What `%kura runs` shows: the run history's table (a DataFrame from `kura_magic.runs`),
with its columns' titles, as text in a terminal and as HTML in a notebook."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kura_magic import formatting
from kura_magic.views.html import runs_html
from kura_magic.views.text import runs_text

if TYPE_CHECKING:
    import pandas

# The title of each column of the history table.
TITLES = {"run_id": "run", "created_at": "when (UTC)", "label": "out", "cell": "cell",
          "experiment": "experiment", "model": "model", "prompt_hash": "prompt", "conversations": "rows",
          "fresh": "fresh", "cached": "cached", "errors": "errors", "spent": "spent", "saved": "saved",
          "repeats": "again"}


class RunHistory:
    """What `%kura runs` shows: the history table, as HTML in a notebook, as text elsewhere.

    Example:
        >>> from kura_magic import runs, summarise
        >>> _ = summarise(convs, "Summarise:\\n{{ transcript }}", label="v1")
        >>> shown = repr(RunHistory(runs()))
        >>> shown.splitlines()[0], "5452f652" in shown
        ('1 recorded run', True)
    """

    def __init__(self, frame: pandas.DataFrame, *, recorded: int | None = None) -> None:
        self.frame = frame.iloc[::-1]  # newest first
        self.recorded = len(frame) if recorded is None else recorded  # how many there are in all

    @property
    def caption(self) -> str:
        count = len(self.frame)
        if not count:
            return "0 recorded runs: none yet"
        shown = formatting.counted(count, "recorded run")
        if count < self.recorded:
            shown = f"{count} of {formatting.counted(self.recorded, 'recorded run')}"
        return shown + (", newest first" if count > 1 else "")

    def cells(self) -> list[list[str]]:
        """The table's rows as the text a person reads (times in UTC, money in dollars)."""
        return [[_shown(name, value) for name, value in row.items()] for row in self.frame.to_dict("records")]

    @property
    def titles(self) -> list[str]:
        """The columns' titles, as a person reads them."""
        return [TITLES[column] for column in self.frame.columns]

    def __repr__(self) -> str:
        return runs_text(self)

    def _repr_html_(self) -> str:
        return runs_html(self)


def _shown(name: str, value: Any) -> str:
    if name in ("spent", "saved"):
        return formatting.money(value)
    if name == "created_at":
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if name == "repeats":
        return f"×{value}" if value else ""
    return "" if value is None else str(value)
