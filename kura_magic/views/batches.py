"""What `km.batches()` and `%kura batches` show: each provider batch's state (validating,
in progress n/m, finalizing, completed, expired, cancelled), when it was submitted, and what
it will cost (or cost) at the batch price; as text in a terminal, as HTML in a notebook
(every value escaped)."""

from __future__ import annotations

import html

from kura_magic import formatting
from kura_magic.storage.batches import BatchRecord

TITLES = ("batch", "experiment", "model", "state", "lines", "submitted (UTC)", "cost")
# The state's colour in the HTML table: still out, done, or ended early.
_STATE_COLOURS = {"completed": "#43a047", "expired": "#fb8c00", "cancelled": "#757575", "failed": "#e53935"}
_OUT = "#1e88e5"


class BatchTable:
    """Provider batches, newest first, as a person reads them.

    Example:
        >>> record = BatchRecord(batch_id="batch_1", provider="openai", model="openai/gpt-4o-mini",
        ...                      experiment="default", keys=["k1", "k2"], token="t", estimated_cost=0.5)
        >>> print(repr(BatchTable([record])).splitlines()[0])
        1 batch, 1 pending
    """

    def __init__(self, records: list[BatchRecord]) -> None:
        self.records = sorted(records, key=lambda record: record.submitted_at, reverse=True)

    @property
    def caption(self) -> str:
        pending = sum(record.pending for record in self.records)
        count = len(self.records)
        shown = f"{count} {'batch' if count == 1 else 'batches'}"
        return f"{shown}, {pending} pending" if self.records else "no provider batches in this cache"

    def cells(self) -> list[list[str]]:
        """Each batch's row as text."""
        return [[record.batch_id, record.experiment, record.model, record.progress_text, str(len(record.keys)),
                 record.submitted_at.strftime("%Y-%m-%d %H:%M"), cost_text(record)] for record in self.records]

    def __repr__(self) -> str:
        rows = [list(TITLES), *self.cells()]
        widths = [max(len(row[column]) for row in rows) for column in range(len(TITLES))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        return "\n".join([self.caption, *(lines if self.records else [])])

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left;padding:2px 8px'>{title}</th>" for title in TITLES)
        body = "".join(_html_row(record, cells) for record, cells in zip(self.records, self.cells()))
        table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>" if self.records else ""
        return f"<div class='kura-batches'><div><b>{html.escape(self.caption)}</b></div>{table}</div>"


def cost_text(record: BatchRecord) -> str:
    """What the batch cost once collected, else what it will cost (an estimate, said so).

    Example:
        >>> cost_text(BatchRecord(batch_id="b", provider="openai", model="m", experiment="x", keys=[],
        ...                       token="t", estimated_cost=0.0123))
        'about $0.0123'
    """
    if record.collected:
        return formatting.money(record.cost)
    return "unknown" if record.estimated_cost is None else f"about {formatting.money(record.estimated_cost)}"


def _html_row(record: BatchRecord, cells: list[str]) -> str:
    colour = _STATE_COLOURS.get(record.state, _OUT)
    shown = [html.escape(cell) for cell in cells]
    shown[3] = f"<span style='color:{colour};font-weight:600'>{shown[3]}</span>"
    return "<tr>" + "".join(f"<td style='padding:2px 8px'>{cell}</td>" for cell in shown) + "</tr>"
