"""HTML views of runs, comparisons, the run history and the panels: every piece of text
escaped (the words from `views.text`, the colours from `views.theme`), in blocks JupyterLab
does not typeset as maths. Plain strings in, HTML out; no IPython."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from kura_magic import formatting
from kura_magic.diffs import Chunk, cut_chunks, margins, word_diff
from kura_magic.types import RunStats
from kura_magic.views import text as plain
from kura_magic.views.results_table import library_once, results_table_html
from kura_magic.views.theme import BAR_PARTS, DIFFERS_CSS, EDGES, FAILED, QUIET_GREY, RUNNING_EDGE, TRACK

if TYPE_CHECKING:
    from kura_magic.run.compare import Comparison
    from kura_magic.run.results import SummaryRun
    from kura_magic.views.history import RunHistory

LEFT = ' style="text-align:left"'  # JupyterLab right-aligns table cells; text reads better left
# The id column never wraps and stays in view when a wide table scrolls right.
KEY_STYLE = "text-align:left;white-space:nowrap;position:sticky;left:0;background:var(--jp-layout-color0, #fff)"


class Key(str):
    """The id cell: never wraps, and stays visible when the table scrolls right."""


class Figure(str):
    """A cell holding a number (cost, latency): right-aligned like numbers are."""


class Markup(str):
    """A cell that is HTML already, built here from escaped text (changed words marked)."""


Row = tuple[Sequence[str], str | None]  # the cells, and the row's CSS class if any


def table_html(
    kind: str, header: Sequence[str], rows: Iterable[Row], *, caption: str, hidden: int = 0,
    hidden_hint: str = "", notes: Sequence[str] = (),
) -> str:
    """A captioned table in `<div class="kura-KIND">`, `notes` between caption and table;
    `hidden` rows left out are counted.

    Example:
        >>> table_html("demo", ["id"], [(["<b>"], None)], caption="1 row")
        '<div class="kura-demo mathjax_ignore"><p class="kura-caption">1 row</p><div class="kura-scroll" style="overflow-x:auto;max-width:100%"><table class="kura-table"><thead><tr><th style="text-align:left">id</th></tr></thead><tbody><tr><td style="text-align:left">&lt;b&gt;</td></tr></tbody></table></div></div>'
    """
    head = "".join(f"<th{LEFT}>{html.escape(title)}</th>" for title in header)
    body = "".join(_row(cells, css) for cells, css in rows)
    footer = (
        f"<p>… {hidden} more rows: use <code>{html.escape(hidden_hint)}</code></p>" if hidden > 0 else ""
    )
    return (
        f'<div class="kura-{kind} {formatting.NO_MATHS}"><p class="kura-caption">{html.escape(caption)}</p>'
        + "".join(f'<p class="kura-note">{html.escape(note)}</p>' for note in notes)
        + '<div class="kura-scroll" style="overflow-x:auto;max-width:100%">'
        f'<table class="kura-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
        f"{footer}</div>"
    )


def _row(cells: Sequence[str], css: str | None) -> str:
    attribute = f' class="{css}"' if css else ""
    return f"<tr{attribute}>" + "".join(_cell(cell) for cell in cells) + "</tr>"


def _cell(value: str) -> str:
    if isinstance(value, Markup):
        return f"<td{LEFT}>{value}</td>"
    text = html.escape(value)
    if isinstance(value, Key):
        return f'<td class="kura-id" style="{KEY_STYLE}">{text}</td>'
    return f"<td>{text}</td>" if isinstance(value, Figure) else f"<td{LEFT}>{cut_html(value)}</td>"


def cut_html(text: str, limit: int = formatting.CELL_CHARS) -> str:
    """`text` escaped; past `limit` characters, cut, with the whole in a `<details>` (no JavaScript).

    Example:
        >>> cut_html("<b>" * 3, limit=4)
        '<details class="kura-cut"><summary>&lt;b&gt;&lt;…</summary>&lt;b&gt;&lt;b&gt;&lt;b&gt;</details>'
    """
    if len(text) <= limit:
        return html.escape(text)
    return _cut(html.escape(text[:limit].rstrip()), html.escape(text))


def _cut(start: str, whole: str) -> str:
    """HTML `start` (a cut) that opens on a click to HTML `whole`, without JavaScript."""
    return f'<details class="kura-cut"><summary>{start}…</summary>{whole}</details>'


def paragraph_html(text: str, *, css_class: str) -> str:
    """One escaped line of text.

    Example:
        >>> paragraph_html("spent $1 · saved $2", css_class="kura-estimate")
        '<p class="kura-estimate mathjax_ignore">spent $1 · saved $2</p>'
    """
    return f'<p class="{css_class} {formatting.NO_MATHS}">{html.escape(text)}</p>'


PANEL_STYLE = "border-left:4px solid {colour};padding:4px 10px;margin:4px 0;font-size:13px;line-height:1.5"


# A run panel's header, as the live widget draws it: the pieces in a wrapping row, the count
# ones after a swatch of their bar colour, what the run is doing in a quieter colour.
HEAD_STYLE = "display:flex;flex-wrap:wrap;align-items:center;gap:0 10px;font-variant-numeric:tabular-nums"
QUIET = f"color:var(--jp-ui-font-color2, {QUIET_GREY})"
QUIET_PIECES = ("kura-rate", "kura-eta", "kura-phase", "kura-elapsed")
SWATCH = "display:inline-block;width:8px;height:8px;margin-right:4px;border-radius:2px;background:{colour}"
FAILED_LINE = f"color:{FAILED}"


def panel_html(texts: dict[str, str], rows: Sequence[Sequence[str]], stats: RunStats | None, *,
               state: str = "ok") -> str:
    """A panel as static HTML, each piece of text in a span of its CSS class; inline styles (the
    theme's variables, with fallbacks), so it reads the same exported. A run's panel (`stats`
    given) looks like the live one: a header line of a stacked bar and the pieces of `rows[0]`,
    over a line per further row. `state`: ok, warning or failed, the colour of its edge.

    Example:
        >>> panel_html({"kura-status": "a <b>"}, [("kura-status",)], None).endswith('<div><span class="kura-status">a &lt;b&gt;</span></div></div>')
        True
    """
    header, lines = "", rows
    if stats is not None:
        swatches = {f"kura-{name}": colour for name, colour in BAR_PARTS}
        pieces = "".join(_piece_html(name, texts[name], swatches.get(name)) for name in rows[0] if name in texts)
        header = f'<div class="kura-head" style="{HEAD_STYLE}">{_stacked_bar(stats)}{pieces}</div>'
        lines = rows[1:]
    body = "".join(
        f"<div{_line_style(row, stats, state)}>" + " · ".join(
            f'<span class="{name}">{html.escape(texts[name])}</span>' for name in row if name in texts) + "</div>"
        for row in lines if any(name in texts for name in row)
    )
    css = f"kura-panel kura-static kura-{state} {formatting.NO_MATHS}"
    edge = EDGES.get(state, RUNNING_EDGE)
    return f'<div class="{css}" style="{PANEL_STYLE.format(colour=edge)}">{header}{body}</div>'


def _line_style(row: Sequence[str], stats: RunStats | None, state: str) -> str:
    """Under a run's header the lines are quieter, but a failed run's status is red."""
    if stats is None:
        return ""
    return f' style="{FAILED_LINE if state == "failed" and "kura-status" in row else QUIET}"'


def _piece_html(name: str, text: str, swatch: str | None) -> str:
    """One piece of a run's header, styled as the live widget draws it."""
    mark = f'<span style="{SWATCH.format(colour=swatch)}"></span>' if swatch else ""
    style = "font-weight:600" if name == "kura-done" else QUIET if name in QUIET_PIECES else ""
    return f'<span style="{style}">{mark}<span class="{name}">{html.escape(text)}</span></span>'


def _stacked_bar(stats: RunStats) -> str:
    total = max(stats.total, 1)
    counts = stats.bar_counts()
    parts = "".join(
        f'<div class="kura-bar-{name}" title="{counts[name]} {name}" '
        f'style="width:{100 * counts[name] / total:.1f}%;background:{colour}"></div>'
        for name, colour in BAR_PARTS if counts[name]
    )
    return ('<div class="kura-bar kura-progress" style="display:flex;height:8px;width:10em;'
            f'background:var(--jp-layout-color3, {TRACK});border-radius:4px;overflow:hidden">'
            f"{parts}</div>")


def results_html(run: SummaryRun) -> str:
    """A run as an interactive table (`results_table`), carrying the table library if it is
    this kernel's first table."""
    return results_table_html(run, library=library_once())


def runs_html(history: RunHistory) -> str:
    """The run history as a table, one row per run, money and counts right-aligned."""
    numeric = {"rows", "fresh", "cached", "errors", "spent", "saved"}
    header = history.titles
    rows = [([Figure(cell) if title in numeric else cell for title, cell in zip(header, cells)], None)
            for cells in history.cells()[-formatting.ROW_LIMIT:]]
    return table_html("runs", header, rows, caption=history.caption,
                      hidden=len(history.frame) - formatting.ROW_LIMIT, hidden_hint="km.runs()")


def comparison_html(comparison: Comparison) -> str:
    """A comparison: what changed (prompt word diff, settings), then one row per conversation,
    left-aligned, long outputs cut (the whole a click away), changed words marked in both;
    differing rows are tinted (`kura-differs`) and counted, with how to show only them."""
    label_a, label_b = (str(label) for label in comparison.frame.columns[1:3])
    rows = comparison.rows
    shown = rows.head(formatting.COMPARE_ROW_LIMIT).itertuples(index=False, name=None)
    table = table_html(
        "compare", ["", "id", label_a, label_b],
        [(["≠" if differs else "", Key(cid), *_outputs_html(a, b)], "kura-differs" if differs else None)
         for cid, a, b, differs in shown],
        caption=plain.comparison_caption(comparison), hidden=len(rows) - formatting.COMPARE_ROW_LIMIT,
        hidden_hint=".frame",
        notes=[hint] if (hint := plain.comparison_hint(comparison)) else [],
    )
    return (f'<div class="kura-comparison {formatting.NO_MATHS}"><style>{DIFFERS_CSS}</style>'
            f"{_changes_html(comparison)}{table}</div>")


def _changes_html(comparison: Comparison) -> str:
    """The prompt's word diff and each changed setting, above the table."""
    parts = []
    if comparison.prompts is not None:
        parts.append(f'<p class="kura-caption">{html.escape(plain.prompt_summary(comparison.prompts))}</p>')
        if comparison.prompts[0] != comparison.prompts[1]:
            diff = marked_html(word_diff(*comparison.prompts), side="both")
            parts.append(f'<pre class="kura-prompt-diff">{diff}</pre>')
    parts += [f'<p class="kura-setting-change">{html.escape(line)}</p>' for line in plain.setting_lines(comparison)]
    return "".join(parts)


def _outputs_html(a: object, b: object) -> tuple[str, str]:
    """Two outputs as cells: plain if either is missing, else with changed words marked; an
    output past `CELL_CHARS` shows its start, the whole (marked too) in a `<details>`."""
    if not (isinstance(a, str) and isinstance(b, str)):
        return plain.shown(a), plain.shown(b)
    chunks = word_diff(a, b)
    cells = []
    for side, text in (("old", a), ("new", b)):
        whole = marked_html(chunks, side=side)
        if len(text) > formatting.CELL_CHARS:
            whole = _cut(marked_html(cut_chunks(chunks, side=side, limit=formatting.CELL_CHARS), side=side), whole)
        cells.append(Markup(whole))
    return cells[0], cells[1]


def marked_html(chunks: list[Chunk], *, side: str) -> str:
    """One side of a word diff as escaped HTML: removed words in `<del>` ('old'), added ones
    in `<ins>` ('new'), or both ('both').

    Example:
        >>> from kura_magic.diffs import word_diff
        >>> marked_html(word_diff("a <b> c", "a <i> c"), side="both")
        'a <del class="kura-removed">&lt;b&gt;</del> <ins class="kura-added">&lt;i&gt;</ins> c'
    """
    parts = []
    for chunk in chunks:
        if not chunk.changed:
            parts.append(html.escape(chunk.old))
            continue
        lead, trail = margins(chunk)
        removed, added = chunk.old.strip(), chunk.new.strip()
        shown = [f'<del class="kura-removed">{html.escape(removed)}</del>' if removed and side != "new" else "",
                 f'<ins class="kura-added">{html.escape(added)}</ins>' if added and side != "old" else ""]
        marks = " ".join(mark for mark in shown if mark)  # "Summarise File", not "SummariseFile"
        parts.append(html.escape(lead) + marks + html.escape(trail))
    return "".join(parts)
