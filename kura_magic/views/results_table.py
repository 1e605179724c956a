"""A run's results as an interactive table (itables, the DataTables library, offline): sortable,
filterable (by any text, or the status column to only errors), paginated; a click on a row opens
it whole in a full-width row under it; lists are chips. Every piece of text is escaped here.

Where JavaScript does not run (GitHub, an untrusted notebook) itables shows its static preview
instead: the same cells, the first page of rows, a header on every column, lists as bullets.

What a saved notebook keeps is bounded: at most `EMBED_ROWS` rows or `EMBED_CHARS` characters of
field text per table (the table says when it holds fewer rows than the run), and the DataTables
library itself, about 0.97 MB, once per kernel: in the first table shown (`library_once`).

Built from the run's public face only (`rows_with_status`, `len`, `stats`), so its storage may change."""

from __future__ import annotations

import html
import itertools
import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from kura_magic import formatting
from kura_magic.types import UNANSWERED
from kura_magic.views import text as plain
from kura_magic.views.theme import BADGE_COLOURS, CACHED

if TYPE_CHECKING:
    from kura_magic.run.results import SummaryResult, SummaryRun

EMBED_ROWS = 1_000  # the most rows a table carries into the notebook
EMBED_CHARS = 400_000  # ... and the most characters of its fields' text, whichever comes first
PAGE_ROWS = 10  # rows per page, and the rows of the static preview
LONG_CHARS = 80  # text longer than this is clamped to three lines until its row is opened
# The columns around the summary's fields: id and status first (they stay in view when the table
# scrolls right), the figures and the error last.
LEADING, TRAILING = ("id", "status"), ("cost", "latency", "error")
# The controls around a table of more than one page (itables leaves them off one that fits on a
# page): rows per page, the search, a count, the pages.
LAYOUT = {"topStart": "pageLength", "topEnd": "search", "bottomStart": "info", "bottomEnd": "paging"}

# The status is plain text (the filter lists its values); the live table draws it as a badge.
STATUS_BADGE = """function (data, type) {
  return type === 'display' ? '<span class="kura-badge kura-' + data + '">' + data + '</span>' : data;
}"""

# A cost or a latency cell carries its number (`data-sort`) for sorting by value, not by text.
SORT_BY_NUMBER = """function (data, type) {
  if (type !== 'sort' && type !== 'type') return data;
  const found = /data-sort="([^"]*)"/.exec(data || '');
  return found ? Number(found[1]) : null;
}"""

# A click on a row opens it whole under it (every column, full width); another click closes it.
# Set up at the first draw: itables 2.9 does not evaluate an `initComplete` function.
OPEN_ROWS = """function (settings) {
  const api = settings.api;
  const body = api.table().body();
  if (body.dataset.kuraOpens) return;
  body.dataset.kuraOpens = 'yes';
  body.addEventListener('click', (event) => {
    const line = event.target.closest('tr');
    const row = line && api.row(line);
    if (!row || !row.any() || event.target.closest('a, button, input')) return;
    if (row.child.isShown()) {
      row.child.hide();
      line.classList.remove('kura-open');
      return;
    }
    const record = document.createElement('dl');
    record.className = 'kura-record';
    row.data().forEach((cell, index) => {
      if (cell === '' || cell === null) return;
      const title = document.createElement('dt');
      title.textContent = api.column(index).title();
      const value = document.createElement('dd');
      value.innerHTML = cell;
      record.append(title, value);
    });
    row.child(record, 'kura-record-row').show();
    line.classList.add('kura-open');
  });
}"""

# The live table's look (in the table's own output, so it comes with it): rows a few lines tall
# with long text clamped until opened, text columns wide enough to read, lists as chips, the
# opened record in two columns. Scoped to `.dataTable`: the static preview keeps whole text.
CSS = "".join(f".kura-results .kura-badge.kura-{status} {{ background: {colour}; }}\n"
              for status, colour in BADGE_COLOURS.items()) + f"""
.kura-results .dataTable th, .kura-results .dataTable td {{ vertical-align: top; white-space: nowrap;
  text-align: left; }}
.kura-results .dataTable tbody tr {{ cursor: pointer; }}
.kura-results .dataTable td .kura-long {{ display: -webkit-box; -webkit-line-clamp: 3;
  -webkit-box-orient: vertical; overflow: hidden; white-space: normal; min-width: 16em; max-width: 30em; }}
.kura-results .dataTable ul.kura-list {{ display: flex; flex-wrap: wrap; gap: 3px; margin: 0;
  padding: 0; list-style: none; min-width: 18em; max-width: 30em; }}
.kura-results .dataTable ul.kura-list > li {{ border: 1px solid var(--jp-border-color1, #bdbdbd);
  border-radius: 10px; padding: 0 7px; white-space: nowrap; }}
.kura-results dl.kura-record {{ display: grid; grid-template-columns: max-content 1fr; gap: 4px 14px;
  margin: 4px 8px; white-space: pre-wrap; text-align: left; }}
.kura-results dl.kura-record dt {{ font-weight: 600; }}
.kura-results dl.kura-record dd {{ margin: 0; }}
.kura-results dl.kura-record .kura-long {{ display: block; overflow: visible; max-width: 60em; }}
.kura-results dl.kura-record ul.kura-list {{ display: block; list-style: disc; padding-left: 1.2em; }}
.kura-results dl.kura-record ul.kura-list > li {{ border: none; white-space: normal; }}
.kura-results tr.kura-open > td {{ border-bottom: 2px solid {CACHED}; }}
.kura-results .kura-badge {{ color: #fff; border-radius: 8px; padding: 0 7px; font-size: 11px; }}
"""


# The static preview's look where a page keeps styles but runs no script (an nbconvert export
# opened with scripts off, an untrusted notebook): text left and on top, each long text a small
# box that scrolls, so ten rows of twelve fields stay a page or two tall. GitHub drops styles:
# there each text shows whole.
PREVIEW_CSS = ('<style>.kura-results div[id$="_fallback"] :is(th,td){text-align:left;vertical-align:top}'
               '.kura-results div[id$="_fallback"] .kura-long{min-width:18em;max-height:7.5em;overflow:auto}</style>')


class Embedded(NamedTuple):
    """The rows a table carries, and how many answered rows the run has in all."""

    rows: list[list[str]]
    columns: list[str]  # the summary's fields, in the order first seen
    answered: int


def results_table_html(run: SummaryRun, *, library: str = "") -> str:
    """A run's results as an interactive table, under its caption and one line per reason rows
    got no answer; `library` (DataTables, see `library_once`) goes in front where given.

    Example:
        >>> from kura_magic.run.results import RunStats, SummaryResult, SummaryRun
        >>> run = SummaryRun([SummaryResult(conversation_id="c0", summary="<b>Refund</b>", cost=0.001)],
        ...                  RunStats(total=1, done=1, fresh=1), model="m", experiment="e")
        >>> page = results_table_html(run)
        >>> "&lt;b&gt;Refund&lt;/b&gt;" in page and "<b>Refund" not in page
        True
    """
    answered, rows = run.rows_with_status(UNANSWERED, among=False)
    embedded = embed_rows(rows, answered)
    notes = [*plain.unanswered_notes(run.rows_with_status(UNANSWERED)[1]), *_cut_note(run, embedded)]
    named = f"run {run.run_id} · " if run.run_id else ""
    missing = f" · {len(run.missing)} answers missing from the cache" if run.missing else ""
    caption = f"{named}{run.model} · experiment {run.experiment} · {run.stats.summary_line()}{missing}"
    return (
        f'<div class="kura-results {formatting.NO_MATHS}">{library}'
        f'<p class="kura-caption">{html.escape(caption)}</p>'
        + "".join(f'<p class="kura-note">{html.escape(note)}</p>' for note in notes)
        + PREVIEW_CSS + _datatable(embedded) + "</div>"
    )


def embed_rows(answered: Iterable[SummaryResult], count: int) -> Embedded:
    """The rows a table carries of the `count` answered rows `answered` gives (skipped and
    unfinished ones are said once, above it): the first, up to `EMBED_ROWS` rows or
    `EMBED_CHARS` characters, each cell escaped HTML. No row past those is read.

    Example:
        >>> from kura_magic.run.results import SummaryResult
        >>> embed_rows([SummaryResult(conversation_id="c0", summary="ok", cost=0.001)], 1).rows
        [['c0', 'fresh', 'ok', '<span data-sort="0.001">$0.00100</span>', '<span data-sort="0">0 ms</span>', '']]
    """
    results: list[SummaryResult] = []
    chars = 0
    for result in answered:
        if len(results) == EMBED_ROWS or (chars >= EMBED_CHARS and results):
            break
        results.append(result)
        chars += sum(len(str(value)) for value in result.summary_fields().values())
    columns = list(dict.fromkeys(itertools.chain.from_iterable(
        result.summary_fields() for result in results if result.summary is not None))) or ["summary"]
    return Embedded([_cells(result, columns) for result in results], columns, count)


def _cut_note(run: SummaryRun, embedded: Embedded) -> Iterator[str]:
    if len(embedded.rows) < embedded.answered:
        yield (f"this table holds the first {len(embedded.rows):,} of {embedded.answered:,} rows (a table keeps "
               f"at most {EMBED_ROWS:,} rows or {EMBED_CHARS:,} characters of text in the notebook); all of them: "
               f"{run.label or 'run'}.to_pandas()")


def _cells(result: SummaryResult, columns: list[str]) -> list[str]:
    """One row's cells as escaped HTML: the id, status, each field, cost, latency, error."""
    fields = result.summary_fields() if result.summary is not None else {}
    return [
        html.escape(result.conversation_id),
        plain.status_badge(result),
        *(value_html(fields.get(column)) for column in columns),
        _number(result.fresh_cost if result.cached else result.cost, plain.cost_text(result)),
        _number(result.latency_s, formatting.duration(result.latency_s)),
        value_html(result.error),
    ]


def value_html(value: Any) -> str:
    """One field's value as escaped HTML: a list as a list of items (bullets, chips in the live
    table), long text in a block clamped until its row is opened, anything else as its text.

    Example:
        >>> value_html(["a <b>", "c, d"])
        '<ul class="kura-list"><li>a &lt;b&gt;</li><li>c, d</li></ul>'
        >>> value_html(None), value_html(3)
        ('', '3')
    """
    if value is None:
        return ""
    if isinstance(value, list):
        items = "".join(f"<li>{html.escape(_text(item))}</li>" for item in value)
        return f'<ul class="kura-list">{items}</ul>' if items else ""
    text = html.escape(_text(value))
    return f'<div class="kura-long">{text}</div>' if len(text) > LONG_CHARS else text


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _number(value: float | None, shown: str) -> str:
    """A figure's text with its value, so the column sorts by value (`SORT_BY_NUMBER`)."""
    if not shown:
        return ""
    return f'<span data-sort="{value or 0.0:.6g}">{html.escape(shown)}</span>'


def _datatable(embedded: Embedded) -> str:
    """The rows as an itables DataTable with its static preview; its library is on the page
    already (`library_once`)."""
    import pandas
    from itables import JavascriptFunction, to_html_datatable

    titles = [*LEADING, *embedded.columns, *TRAILING]
    figures = [len(titles) - 3, len(titles) - 2]
    frame = pandas.DataFrame(embedded.rows, columns=[html.escape(title) for title in titles], dtype=object)
    return to_html_datatable(
        frame, connected=False, allow_html=True, showIndex=False, maxBytes=0, maxColumns=0,
        display_logo_when_loading=False, classes="display compact", css=CSS, layout=LAYOUT,
        pageLength=PAGE_ROWS, lengthMenu=[10, 25, 50, 100], scrollX=True, fixedColumns={"left": len(LEADING)},
        columnDefs=[{"targets": figures, "render": JavascriptFunction(SORT_BY_NUMBER), "className": "dt-right"},
                    {"targets": [LEADING.index("status")], "render": JavascriptFunction(STATUS_BADGE),
                     "columnControl": [["searchList"]]}],
        drawCallback=JavascriptFunction(OPEN_ROWS),
    )


_LIBRARY_SENT = False


def library_once() -> str:
    """The DataTables library (its script and style, about 1 MB, offline) the first time this
    process shows a table, and "" after: every later table on the page uses it from there.

    Example:
        >>> _ = library_once()   # the first table of this process carries it
        >>> library_once(), len(library_html()) > 500_000
        ('', True)
    """
    global _LIBRARY_SENT
    if _LIBRARY_SENT:
        return ""
    _LIBRARY_SENT = True
    return library_html()


def library_html() -> str:
    """The DataTables library as itables' offline notebook mode embeds it, and its dark theme
    switch (itables' `init_notebook_mode(connected=False)` without IPython)."""
    from itables import options
    from itables.javascript import _itables_underscore_version, generate_init_offline_itables_html

    dark = ("<script type=\"module\">const { set_or_remove_dark_class } = "
            f"await window.{_itables_underscore_version()}; set_or_remove_dark_class();</script>")
    scripts = generate_init_offline_itables_html(options.dt_bundle)
    # without its closing <noscript> note ("is your notebook trusted?"): the table's preview says enough
    return scripts[: scripts.rindex("</script>") + len("</script>")] + dark
