"""HTML views of runs, comparisons and estimates: every piece of text escaped, in blocks
JupyterLab does not typeset as maths. Plain strings in, HTML out; no IPython."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from kura_magic import formatting
from kura_magic.compare import shown as output_or_absent

if TYPE_CHECKING:
    import pandas

    from kura_magic.results import SummaryResult, SummaryRun

LEFT = ' style="text-align:left"'  # JupyterLab right-aligns table cells; text reads better left


class Badge(str):
    """A cell shown as a coloured status badge (`kura-badge kura-<text>`)."""


class Figure(str):
    """A cell holding a number (cost, latency): right-aligned like numbers are."""


Row = tuple[Sequence[str], str | None]  # the cells, and the row's CSS class if any


def table_html(
    kind: str, header: Sequence[str], rows: Iterable[Row], *, caption: str, hidden: int = 0,
    hidden_hint: str = "",
) -> str:
    """A captioned table in `<div class="kura-KIND">`; `hidden` rows left out are counted.

    Example:
        >>> table_html("demo", ["id"], [(["<b>"], None)], caption="1 row")
        '<div class="kura-demo mathjax_ignore"><p class="kura-caption">1 row</p><table class="kura-table"><thead><tr><th style="text-align:left">id</th></tr></thead><tbody><tr><td style="text-align:left">&lt;b&gt;</td></tr></tbody></table></div>'
    """
    head = "".join(f"<th{LEFT}>{html.escape(title)}</th>" for title in header)
    body = "".join(_row(cells, css) for cells, css in rows)
    footer = (
        f"<p>… {hidden} more rows: use <code>{html.escape(hidden_hint)}</code></p>" if hidden > 0 else ""
    )
    return (
        f'<div class="kura-{kind} {formatting.NO_MATHS}"><p class="kura-caption">{html.escape(caption)}</p>'
        f'<table class="kura-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
        f"{footer}</div>"
    )


def _row(cells: Sequence[str], css: str | None) -> str:
    attribute = f' class="{css}"' if css else ""
    return f"<tr{attribute}>" + "".join(_cell(cell) for cell in cells) + "</tr>"


def _cell(value: str) -> str:
    text = html.escape(value)
    if isinstance(value, Badge):
        return f'<td><span class="kura-badge kura-{text}">{text}</span></td>'
    return f"<td>{text}</td>" if isinstance(value, Figure) else f"<td{LEFT}>{text}</td>"


def paragraph_html(text: str, *, css_class: str) -> str:
    """One escaped line of text.

    Example:
        >>> paragraph_html("spent $1 · saved $2", css_class="kura-estimate")
        '<p class="kura-estimate mathjax_ignore">spent $1 · saved $2</p>'
    """
    return f'<p class="{css_class} {formatting.NO_MATHS}">{html.escape(text)}</p>'


def results_html(run: SummaryRun) -> str:
    """A run as a table: id, the summary (or the schema's fields), status, cost, latency, error."""
    shown = run.results[: formatting.ROW_LIMIT]
    columns = _summary_columns(shown)
    return table_html(
        "results", ["id", *columns, "", "cost", "latency", "error"],
        [(_result_cells(result, columns), None) for result in shown],
        caption=f"{run.model} · experiment {run.experiment} · {run.stats.summary_line()}",
        hidden=len(run.results) - len(shown), hidden_hint=".to_pandas()",
    )


def _summary_columns(results: Sequence[SummaryResult]) -> list[str]:
    columns: dict[str, None] = {}
    for result in results:
        if result.summary is not None:
            columns.update(dict.fromkeys(result.summary_fields()))
    return list(columns) or ["summary"]


def _result_cells(result: SummaryResult, columns: list[str]) -> list[str]:
    fields = result.summary_fields() if result.summary is not None else {}
    badge = "cached" if result.cached else ("fresh" if result.status == "ok" else result.status)
    cost = formatting.money(result.cost) if result.status == "ok" or result.cost else ""
    return [
        result.conversation_id,
        *(_cell_text(fields.get(column)) for column in columns),
        Badge(badge),
        Figure(cost),
        Figure(formatting.duration(result.latency_s)),
        result.error or "",
    ]


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def comparison_html(frame: pandas.DataFrame, caption: str) -> str:
    """A comparison (see `compare.compare_runs`) as a table; differing rows get `kura-differs`."""
    label_a, label_b = str(frame.columns[1]), str(frame.columns[2])
    shown = frame.head(formatting.ROW_LIMIT).itertuples(index=False, name=None)
    return table_html(
        "compare", ["", "id", label_a, label_b],
        [(["≠" if differs else "", cid, output_or_absent(a), output_or_absent(b)],
          "kura-differs" if differs else None)
         for cid, a, b, differs in shown],
        caption=caption, hidden=len(frame) - formatting.ROW_LIMIT, hidden_hint=".frame",
    )

