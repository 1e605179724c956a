"""Outputs that survive saving: a notebook executed in a real kernel (nbclient, so the panel is
a live widget while it runs) and exported with nbconvert shows the runs' final counts and
tables as HTML, never widget reprs such as `VBox(children=(IntProgress(...`."""

from __future__ import annotations

import html
import json
import os
import re

import nbformat
import pytest
from nbclient import NotebookClient
from nbconvert import HTMLExporter
from nbformat.v4 import new_code_cell, new_notebook

import kura_magic as km
from helpers import PROMPT, Ticket, make_conversations
from kura_magic.run.results import SummaryResult, SummaryRun
from kura_magic.testing import LoopbackLLM
from kura_magic.types import RunStats
from kura_magic.views import results_table

SETUP = ("from kura_magic.inputs.samples import sample_conversations\nconvs = sample_conversations(4)\nnumber = 42\n"
         "%load_ext kura_magic")
RUN = "%%summarise convs --out first\nSummarise this support chat in one line:\n{{ transcript }}"
BROKEN = "%%summarise convs --out broken\nSummarise {{ transcript"
BAD_DATA = "%%summarise 42\nSummarise this support chat in one line:\n{{ transcript }}"
NOT_CONVERSATIONS = "%%summarise number\nSummarise this support chat in one line:\n{{ transcript }}"
# The first run of the kernel, so its key is found missing only once litellm has loaded.
KEYLESS = ('import os\nkey = os.environ.pop("OPENAI_API_KEY")',
           "%%summarise convs --out keyless\nIn five words:\n{{ transcript }}",
           'os.environ["OPENAI_API_KEY"] = key')
TEXT_PANEL = "%config KuraMagics.panel = 'text'"  # where ipywidgets is not installed
ANSI = re.compile(r"\x1b\[[0-9;]*m")
WIDGET_REPRS = ("VBox(", "IntProgress(", "HBox(", "Label(value")


@pytest.fixture
def kernel_env(tmp_path, llm_server: LoopbackLLM) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KURA_MAGIC_", "OPENAI_"))}
    env.update(OPENAI_API_BASE=llm_server.url, OPENAI_API_KEY="sk-outputs-test",
               KURA_MAGIC_CACHE=str(tmp_path / "cache"), LITELLM_LOCAL_MODEL_COST_MAP="True")
    return env


def executed(cells: list[str], env: dict[str, str]) -> nbformat.NotebookNode:
    """`cells` run in a new kernel, errors kept in the outputs as a person's notebook keeps them."""
    notebook = new_notebook(cells=[new_code_cell(source) for source in cells])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(notebook, timeout=180, kernel_name="python3", allow_errors=True).execute(env=env)
    return notebook


@pytest.mark.slow
def test_an_exported_notebook_shows_final_counts_and_tables_not_widget_reprs(kernel_env, llm_server, tmp_path):
    llm_server.reset()
    notebook = executed([SETUP, *KEYLESS, RUN, RUN, BROKEN, BAD_DATA, NOT_CONVERSATIONS, "%kura",
                         TEXT_PANEL, *KEYLESS[:2]], kernel_env)
    nbformat.write(notebook, tmp_path / "saved.ipynb")  # a reopened notebook reads this file

    page, _ = HTMLExporter().from_notebook_node(nbformat.read(tmp_path / "saved.ipynb", as_version=4))

    assert llm_server.request_count == 4
    assert '<span class="kura-done">4/4 done</span>' in page
    assert '<span class="kura-fresh">4 fresh</span>' in page, "the first run's final counts"
    assert '<span class="kura-cached">4 cached</span>' in page, "the second run's final counts"
    assert page.count('<div class="kura-results') == 2 and page.count("Summary: ") >= 8
    for widget_repr in WIDGET_REPRS:
        assert widget_repr not in page
    first, second = (notebook.cells[i].outputs for i in (4, 5))
    for outputs in (first, second):
        assert [out.output_type for out in outputs] == ["display_data", "execute_result"], "the panel, the table"
        assert '<div class="kura-panel' in outputs[0].data["text/html"]
        assert all("application/vnd.jupyter.widget-view+json" not in out.get("data", {}) for out in outputs)
    text = next(out.data["text/plain"] for out in second if out.output_type == "execute_result")
    assert text.splitlines()[1].split() == ["id", "status", "cost", "summary"], (
        "where HTML does not render (GitHub's text view, nbconvert to text) the table still reads")
    assert text.count("cached") >= 4 and text.count("Summary: ") == 4
    cache_panel = notebook.cells[9].outputs[0].data  # a widget still: its buttons work when the kernel runs
    assert "experiments: default (4)" in cache_panel["text/html"], "with a static fallback beside it"
    assert "VBox(" not in cache_panel["text/plain"]
    for cell, kind, message in [(6, "template error", "the prompt does not parse"),
                                (7, "data error", "no variable named '42'"),
                                (8, "data error", "cannot read conversations from a int")]:
        assert card(notebook.cells[cell].outputs) == (kind, message), "one red card, nothing else"
    for cell in (2, 12):  # found once litellm has loaded: the panel shown meanwhile is emptied
        assert card(visible(notebook.cells[cell].outputs)) == ("missing API key", "set OPENAI_API_KEY")
    assert "✖ template error" in page and "Traceback" not in page


def visible(outputs: list) -> list:
    """`outputs` as a front end shows them: consecutive streams joined (JupyterLab does), and
    none that shows nothing: a panel emptied, a text line wiped (what shows of a stream is
    what follows its last carriage return)."""
    joined: list = []
    for out in outputs:
        if joined and out["output_type"] == joined[-1]["output_type"] == "stream":
            joined[-1] = nbformat.NotebookNode({**joined[-1], "text": joined[-1]["text"] + out["text"]})
        else:
            joined.append(out)
    return [out for out in joined
            if out.get("data") != {"text/plain": ""} and out.get("text", "x").rsplit("\r", 1)[-1].strip()]


def card(outputs: list) -> tuple[str, str]:
    """A failed cell's outputs as (the card's kind, the part of its message the test knows),
    checking there is exactly one: an error output (the cell failed, so Run All stops there) in
    red, with no traceback, no panel beside it (not even an empty one) and the message said once."""
    assert [out.output_type for out in outputs] == ["error"]
    lines = outputs[0].traceback
    assert lines[0].startswith("\x1b[1;97;41m") and all("\x1b[31m│" in line for line in lines[1:])
    plain = [ANSI.sub("", line) for line in lines]
    text = " ".join(line.removeprefix("│ ") for line in plain[1:])
    known = re.search(r"the prompt does not parse|no variable named '42'|set OPENAI_API_KEY|"
                      r"cannot read conversations from a int", text)
    assert known and text.count(known.group()) == 1 and "Traceback" not in text
    return plain[0].strip().removeprefix("✖ "), known.group()


# ---------------------------------------------------------------- the results table


def test_a_runs_text_is_its_summary_line_over_a_text_table_and_its_repr_one_line(llm):
    run = km.summarise(make_conversations(3), PROMPT, label="v1")

    bundle, _ = run._repr_mimebundle_()
    lines = bundle["text/plain"].splitlines()

    assert "\n" not in repr(run) and lines[0] == repr(run)
    assert lines[1].split() == ["id", "status", "cost", "summary"]
    assert [line.split()[:2] for line in lines[2:5]] == [["c0", "fresh"], ["c1", "fresh"], ["c2", "fresh"]]
    assert all(result.summary[:40] in bundle["text/plain"] for result in run)
    assert lines[-1] == "all 3 rows: v1.to_pandas()"


def table_args(page: str) -> dict:
    """The DataTables arguments of the (one) interactive table in `page`, its rows decoded."""
    found = re.search(r"let dt_args = (\{.*?\n\s*\});", page, re.S)
    assert found, "an interactive table"
    args = json.loads(found.group(1))
    args["rows"] = json.loads(args.pop("data_json"))
    args["titles"] = re.findall(r"<th>(.*?)</th>", args["table_html"])
    return args


def static_preview(page: str) -> str:
    """What shows where JavaScript does not run: the static table itables puts beside the live one."""
    found = re.search(r'<div id="itables_[\w]+_fallback">(.*?)</div><script>', page, re.S)
    assert found, "a static preview"
    return found.group(1)


def test_long_replies_are_escaped_and_kept_once_whole_in_each_view(llm_server, llm):
    reply = "<script>alert(1)</script> " + "word " * 100
    llm_server.reply = lambda messages: reply
    try:
        run = km.summarise(make_conversations(2), PROMPT)
    finally:
        llm_server.reply = None
    page = run._repr_html_()
    whole = f'<div class="kura-long">{html.escape(reply)}</div>'

    assert run[0].summary.startswith("<script>alert(1)</script> word word")
    assert "<script>alert(1)" not in page
    assert [row[2] for row in table_args(page)["rows"]] == [whole, whole], "the whole reply, once per row"
    assert static_preview(page).count(whole) == 2, "the static preview: the same, nothing cut"
    assert "<details" not in page, "no preview followed by the whole text again"


def test_cached_rows_say_what_they_saved_and_figures_sort_by_value(llm):
    first = km.summarise(make_conversations(3), PROMPT)
    args = table_args(km.summarise(make_conversations(3), PROMPT)._repr_html_())

    assert args["titles"] == ["id", "status", "summary", "cost", "latency", "error"]
    assert args["fixedColumns"] == {"left": 2}, "the id and the status stay in view when the table scrolls right"
    assert [row[1] for row in args["rows"]] == ["cached"] * 3
    for row, result in zip(args["rows"], first):
        assert row[3] == f'<span data-sort="{result.cost:.6g}">saved {km.formatting.money(result.cost)}</span>'
    assert args["columnDefs"][0]["targets"] == [3, 4] and "data-sort" in args["columnDefs"][0]["render"]


def test_a_twelve_field_result_heads_every_column_and_keeps_list_items_apart(llm):
    run = km.summarise(make_conversations(4), PROMPT, schema=Ticket)
    page = run._repr_html_()
    args = table_args(page)

    assert args["titles"] == ["id", "status", *Ticket.model_fields, "cost", "latency", "error"]
    topics = args["titles"].index("topics")
    items = [item for item in run[0].summary.topics]
    assert len(items) >= 3 and args["rows"][0][topics] == (
        '<ul class="kura-list">' + "".join(f"<li>{html.escape(item)}</li>" for item in items) + "</ul>")
    preview = static_preview(page)
    assert all(f"{title}</th>" in preview for title in args["titles"]), "headed where JavaScript does not run"
    assert preview.count("<tr>") == 4 and preview.count('<ul class="kura-list">') == 4


def test_a_saved_table_of_200_rows_and_12_fields_stays_under_its_bound(llm, monkeypatch):
    monkeypatch.setattr(results_table, "_LIBRARY_SENT", False)  # as in a new kernel
    run = km.summarise(make_conversations(200, text="Mi pedido no llegó y nadie responde, " * 4), PROMPT,
                       schema=Ticket)
    first, second = run._repr_html_(), run._repr_html_()
    library = len(first) - len(second)

    args = table_args(second)
    assert len(args["rows"]) == 200 and args["pageLength"] == 10
    assert args["layout"] == results_table.LAYOUT, "paginated, with a search box"
    assert 500_000 < library < 1_050_000, f"the table library, once per kernel: {library} B"
    assert len(second.encode()) < 240_000, f"200 rows x 12 fields: {len(second.encode())} B"
    assert "<script" not in second.split("kura-caption")[0], "the library is not sent twice"


def test_a_huge_run_embeds_its_first_rows_and_says_so(monkeypatch):
    monkeypatch.setattr(results_table, "EMBED_ROWS", 25)
    run = SummaryRun([SummaryResult(conversation_id=f"c{i}", summary=f"answer {i}", cost=0.001) for i in range(300)],
                     RunStats(total=300, done=300, fresh=300), model="m", experiment="e", label="big")
    page = results_table.results_table_html(run)

    assert len(table_args(page)["rows"]) == 25
    assert ("this table holds the first 25 of 300 rows (a table keeps at most 25 rows or 400,000 characters of "
            "text in the notebook); all of them: big.to_pandas()") in page


def test_budget_skips_are_said_once_not_row_by_row(llm):
    conversations = make_conversations(20)
    one_call = km.estimate(conversations[:1], PROMPT, max_tokens=8).estimated_cost

    run = km.summarise(conversations, PROMPT, max_tokens=8, max_cost=one_call * 3.5, max_concurrency=1)
    page = run._repr_html_()

    skipped = run.stats.skipped
    assert skipped > 10
    budget = km.formatting.money(one_call * 3.5)
    assert page.count(f"{skipped} calls skipped: budget of {budget} reached") == 1
    assert [row[1] for row in table_args(page)["rows"]] == ["fresh"] * run.stats.fresh, "no row per skipped call"
