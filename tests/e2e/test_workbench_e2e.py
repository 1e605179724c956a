"""The workbench as a person uses it, in JupyterLab 4 and headless Chromium: Run All, then
Kernel › Interrupt during a `%%summarise` (the partial run shows, the interrupt reaches
Jupyter, the cells queued after it never run, and the LLM server gets no further calls);
the cache panel's "Clear all", after which the run history is still there, and its own
"Clear history" button, which deletes the history only after its named confirmation; a run
whose calls all fail, which says so; a 12-field result in the interactive table (every column
headed, list items apart, a row opened whole, filtered to its errors); and a notebook with two
200-row runs and their comparison, saved from the browser, under a stated size.

Needs `scripts/install_e2e.sh`; KURA_E2E_REQUIRE=1 (as in CI) fails rather than skips."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers import Ticket
from jupyter_e2e import (
    DOCS,
    LIVE_CONVERSATIONS,
    TOKEN,
    cell_at,
    chromium,
    explained,
    jupyter_env,
    jupyter_server,
    run_cell,
    run_setup,
    shoot,
    wait_for_kernel,
    write_notebook,
)

from kura_magic.local.launcher import free_port
from kura_magic.testing import LoopbackLLM

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

pytestmark = pytest.mark.e2e

LONG_RUN = """%%summarise live --max-concurrency 1 --experiment stop
{{ transcript }}

In one sentence, what did the customer want?"""
NEXT_RUN = """%%summarise live --limit 3 --out next_run --experiment stop-next
Summarise: {{ transcript }}"""
SHORT_RUN = """%%summarise live --limit 3 --out v1 --experiment kept
Summarise: {{ transcript }}"""
# A 12-field schema, a list among its fields; 30 conversations, long and not all English,
# markdown and HTML inside, three of which the model refuses (an error row each).
WIDE_SCHEMA = "from pydantic import BaseModel, Field\n\n" + inspect.getsource(Ticket) + """
tickets = [{"chat_id": f"t{i:02d}", "created_at": "2026-01-01T00:00:00",
            "messages": [{"role": "user", "content": ("[[refuse]] " if i % 10 == 3 else "")
                          + f"Ticket {i}: **mi pedido** <b>no llegó</b> " + "y nadie responde. " * 20},
                         {"role": "assistant", "content": "Lo siento, lo reviso."}]}
           for i in range(30)]"""
WIDE_RUN = """%%summarise tickets --schema Ticket --out wide --experiment wide
Fill in every field for this ticket:
{{ transcript }}"""
WIDE_FIELDS = ["summary", "request", "topics", "sentiment", "language", "product", "urgency", "resolved",
               "channel", "next_step", "quote", "explanation"]
TOPICS = ["shipping <delay>", "refund, partial", "tone"]  # a comma and markup inside items
LONG_TEXT = "El cliente escribe que su pedido no llegó y que nadie responde; " * 8 + "<script>alert(1)</script> FIN."
N_COMPARED = 200
COMPARED = f"""from kura_magic.inputs.samples import sample_conversations
many = [{{**c.model_dump(mode="json"), "chat_id": f"{{c.chat_id}}-{{i}}"}}
        for i, c in enumerate(sample_conversations() * {N_COMPARED // 40})]"""
RUN_A = """%%summarise many --out a --experiment sizes
Summarise this support chat in one line:
{{ transcript }}"""
RUN_B = """%%summarise many --out b --experiment sizes
In one line, what did the customer want?
{{ transcript }}"""
# What a saved notebook may weigh, measured from the .ipynb the browser saved: the table library
# (about 1 MB, once), two 200-row results tables and a 200-row comparison.
# Measured: 1,200,529 B in all; the first table 1,064,593 B (the library about 973 KB), the second
# 91,747 B, the comparison 36,414 B (outputs as saved JSON).
SAVED_BOUND = 1_350_000
LIBRARY_BOUND = 1_050_000
TABLE_BOUND = 120_000
COMPARE_BOUND = 150_000


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the server keeps its files; the notebooks are in `nb/`."""
    return tmp_path_factory.mktemp("workbench")


@pytest.fixture(scope="module")
def lab(lab_root: Path, loopback: LoopbackLLM) -> Iterator[str]:
    chromium("jupyterlab")
    root = lab_root
    (root / "nb").mkdir()
    news = root / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false", "checkForUpdates": false}')  # no toast over the screenshots
    write_notebook(root / "nb" / "stop.ipynb", "%load_ext kura_magic", LIVE_CONVERSATIONS, LONG_RUN, NEXT_RUN)
    write_notebook(root / "nb" / "clear.ipynb", "%load_ext kura_magic", LIVE_CONVERSATIONS, SHORT_RUN, "%kura",
                   "%kura runs")
    write_notebook(root / "nb" / "wide.ipynb", "%load_ext kura_magic", WIDE_SCHEMA, WIDE_RUN)
    write_notebook(root / "nb" / "sizes.ipynb", "%load_ext kura_magic", COMPARED, RUN_A, RUN_B,
                   "%kura compare a b")
    write_notebook(root / "nb" / "history.ipynb", "%load_ext kura_magic", LIVE_CONVERSATIONS, SHORT_RUN,
                   "%kura runs", "%kura", "%kura runs")
    write_notebook(root / "nb" / "failing.ipynb", "%load_ext kura_magic\n%kura config max_retries=2 retry_base_s=0.01",
                   LIVE_CONVERSATIONS, SHORT_RUN.replace("kept", "failing"))
    with jupyter_server("lab", root, free_port(), jupyter_env(root, loopback),
                        "--LabApp.news_url=None") as url:
        yield url


def menu(page: Page, top: str, item: str) -> None:
    """Choose `top` › `item` from JupyterLab's menu bar, as a person does."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(rf"^{top}$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(rf"^{item}$")).click()


def test_interrupt_under_run_all_stops_the_queue_and_the_spending(
    lab: str, new_page: Callable[[str], Page], loopback: LoopbackLLM, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    loopback.reset()
    loopback.latency_s = 1.0
    page = new_page(f"{lab}/lab/tree/stop.ipynb?reset&token={TOKEN}")
    wait_for_kernel(page)
    cell_at(page, 0).locator(".cm-content").click()
    menu(page, "Run", "Run All Cells")
    long_run, next_run = cell_at(page, 2), cell_at(page, 3)
    with explained(long_run, tmp_path / "interrupt.png"):
        expect(long_run.locator(".kura-done")).to_have_text(re.compile(r"^[2-9]/12 done"), timeout=60_000)
        menu(page, "Kernel", "Interrupt Kernel")
        expect(long_run.locator(".jp-OutputArea")).to_contain_text("■ interrupted: ", timeout=30_000)
        sent = loopback.request_count
        expect(long_run.locator(".jp-OutputArea")).to_contain_text("bound to summaries")
        expect(long_run.locator(".kura-panel").last).to_contain_text("interrupted")
        expect(next_run.locator(".jp-InputPrompt")).to_have_text(re.compile(r"^\[\s?\]:$"))
        page.wait_for_timeout(3_000)  # long enough for the queued cell to have started, had it
        expect(next_run.locator(".jp-InputPrompt")).to_have_text(re.compile(r"^\[\s?\]:$"))
        expect(next_run.locator(".kura-panel")).to_have_count(0)
        assert loopback.request_count == sent < 12, "no call after the interrupt, and no next cell"
        assert "Traceback" not in long_run.locator(".jp-OutputArea").inner_text()
        shoot(long_run, "interrupted_run_all.png", selector=".jp-OutputArea")
    loopback.latency_s = 0.0


def open_notebook(lab: str, new_page: Callable[[str], Page], name: str) -> Page:
    page = new_page(f"{lab}/lab/tree/{name}?reset&token={TOKEN}")
    wait_for_kernel(page)
    return page


def test_clear_all_in_the_cache_panel_keeps_the_run_history(
    lab: str, new_page: Callable[[str], Page], loopback: LoopbackLLM, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    loopback.reset()
    page = open_notebook(lab, new_page, "clear.ipynb")
    run_setup(page, 3, tmp_path)  # the extension, the conversations, one run recorded as v1
    panel = run_cell(page, 3, 4)
    with explained(panel, tmp_path / "clear.png"):
        button = panel.locator(".kura-panel .kura-clear-all")
        button.click()  # the first click asks, and says the history stays
        expect(panel.locator(".kura-panel .kura-status")).to_contain_text("(the run history stays)")
        page.wait_for_timeout(700)
        button.click()
        expect(panel.locator(".kura-panel .kura-status")).to_have_text(
            re.compile(r"^cleared \d+ entries from the whole cache; the run history is kept"))
        shoot(panel, "panel_cleared_history_kept.png")
    runs = run_cell(page, 4, 5)
    with explained(runs, tmp_path / "runs.png"):
        expect(runs.locator(".jp-OutputArea")).to_contain_text(re.compile(r"\d+ recorded runs?, newest first|1 recorded run"))
        expect(runs.locator(".jp-OutputArea td", has_text=re.compile(r"^v1$"))).to_have_count(1)


def test_a_run_whose_calls_all_fail_says_so(
    lab: str, new_page: Callable[[str], Page], loopback: LoopbackLLM, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    loopback.reset()
    page = open_notebook(lab, new_page, "failing.ipynb")
    run_setup(page, 2, tmp_path)
    loopback.fail_rate(1.0, status=500)
    cell = run_cell(page, 2, 3)  # three calls, each tried three times
    loopback.fail_rate(0.0)
    with explained(cell, tmp_path / "failing.png"):
        panel = cell.locator(".kura-panel").first
        expect(panel.locator(".kura-done")).to_have_text(re.compile(r"^3/3 failed"))
        expect(panel.locator(".kura-fresh")).to_have_text("0 fresh")
        expect(panel.locator(".kura-errors")).to_have_text("3 errors (not cached: run again to retry)")
        expect(panel.locator(".kura-retries")).to_have_text("6 retries")
        head = panel.locator(".kura-head")
        box = head.bounding_box()
        assert box is not None and box["height"] < 40, f"the header is one line, not {box}"
        shoot(cell, "panel_all_failed.png")


def wide_reply(messages: list[dict]) -> str:
    """The model's answer for the 12-field schema: long text with markup in it, a list of three."""
    ticket = re.search(r"Ticket \d+", str(messages[-1]["content"]))
    return json.dumps({
        "summary": f"{ticket and ticket.group()}: {LONG_TEXT}", "request": "Saber dónde está el pedido", "topics": TOPICS,
        "sentiment": "frustrated", "language": "es", "product": "parcel", "urgency": 4, "resolved": False,
        "channel": "chat", "next_step": "**escalate** to carrier", "quote": "<b>no llegó</b>",
        "explanation": "The customer waited two weeks.",
    }, ensure_ascii=False)


def test_a_twelve_field_result_reads_as_a_table(
    lab: str, lab_root: Path, new_page: Callable[[str], Page], browser: Browser, loopback: LoopbackLLM,
    tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    loopback.reset()
    loopback.reply = wide_reply
    try:
        page = open_notebook(lab, new_page, "wide.ipynb")
        run_setup(page, 2, tmp_path)
        cell = run_cell(page, 2, 3)
    finally:
        loopback.reply = None
    table = cell.locator("div.kura-results .dt-scroll-body table")
    with explained(cell, tmp_path / "wide.png"):
        headers = cell.locator("div.kura-results .dt-scroll-head th .dt-column-title")
        expect(headers).to_have_text(["id", "status", *WIDE_FIELDS, "cost", "latency", "error"])
        expect(cell.locator("div.kura-results .dt-info")).to_contain_text("of 30 entries")
        rows = table.locator("tbody > tr")
        expect(rows).to_have_count(10)  # a page
        first = rows.first
        expect(first.locator("ul.kura-list > li")).to_have_text(TOPICS)  # items apart, escaped
        box = first.bounding_box()
        assert box is not None and box["height"] < 90, f"a row is a few lines tall, not {box}"
        expect(cell.locator(".jp-OutputArea script", has_text="alert(1)")).to_have_count(0)
        shoot(cell, "results_table.png", selector=".kura-results")
        first.locator("td").nth(1).click()  # the row opens whole, full width, under itself
        record = table.locator("tr.kura-record-row dl.kura-record")
        expect(record).to_have_count(1)
        expect(record.locator("dt")).to_have_text(["id", "status", *WIDE_FIELDS, "cost", "latency"])
        expect(record).to_contain_text(LONG_TEXT.strip())  # the whole text, escaped, said once
        assert record.inner_text().count("FIN.") == 1
        shoot(cell, "results_row_opened.png", selector=".kura-results")
        first.locator("td").nth(1).click()
        expect(record).to_have_count(0)
        status = cell.locator("div.kura-results .dt-scroll-head th").nth(1)
        status.locator(".dtcc-button_dropdown").click()  # the status column's filter: only the errors
        options = page.locator(".dtcc-dropdown .dtcc-button", has_text=re.compile(r"^error$"))
        options.click()
        page.keyboard.press("Escape")
        expect(cell.locator("div.kura-results .dt-info")).to_contain_text("3 entries")
        expect(table.locator("tbody > tr")).to_have_count(3)
        expect(table.locator("tbody span.kura-badge.kura-error")).to_have_count(3)
        errors = table.locator("tbody td", has_text=re.compile(r"^content_policy: "))
        expect(errors).to_have_count(3)
        errors.first.scroll_into_view_if_needed()  # the error column, at the far right
        shoot(cell, "results_errors_only.png", selector=".kura-results")
        page.keyboard.press("Control+s")
        expect(page.locator(".jp-mod-dirty")).to_have_count(0)
    static_preview_reads(lab_root / "nb" / "wide.ipynb", browser, tmp_path)


def static_preview_reads(notebook: Path, browser: Browser, tmp_path: Path) -> None:
    """The saved notebook exported by nbconvert and opened where JavaScript does not run (as on
    GitHub, or untrusted): the static preview shows the first page, every column headed, lists
    as bullets, the model's markup as text."""
    import nbformat
    from nbconvert import HTMLExporter
    from playwright.sync_api import expect

    exported = tmp_path / "wide.html"
    exported.write_text(HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))[0], encoding="utf-8")
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1600, "height": 900})
    try:
        page = context.new_page()
        page.goto(exported.as_uri())
        preview = page.locator("div.kura-results div[id$='_fallback'] table")
        expect(preview).to_be_visible()
        expect(preview.locator("thead th")).to_have_text(
            [re.compile(r"id$"), "status", *WIDE_FIELDS, "cost", "latency", "error"])
        expect(preview.locator("tbody tr")).to_have_count(10)
        expect(preview.locator("tbody tr").first.locator("ul.kura-list > li")).to_have_text(TOPICS)
        expect(preview).to_contain_text("<script>alert(1)</script> FIN.")
        DOCS.mkdir(exist_ok=True)
        page.locator("div.kura-results").first.screenshot(path=str(DOCS / "results_static_preview.png"))
    finally:
        context.close()


def saved_outputs(path: Path) -> list[int]:
    """The size in bytes of each code cell's outputs in the saved notebook at `path`."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    return [len(json.dumps(cell.get("outputs", []), ensure_ascii=False))
            for cell in notebook["cells"] if cell["cell_type"] == "code"]


def test_a_saved_notebook_with_a_200_row_comparison_stays_small(
    lab: str, lab_root: Path, new_page: Callable[[str], Page], loopback: LoopbackLLM, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    loopback.reset()
    page = open_notebook(lab, new_page, "sizes.ipynb")
    run_setup(page, 2, tmp_path)
    for index in (2, 3, 4):
        cell = run_cell(page, index, index + 1)
    with explained(cell, tmp_path / "sizes.png"):
        expect(cell.locator(".kura-comparison")).to_contain_text("200")
        cell_at(page, 0).locator(".cm-content").click()
        page.keyboard.press("Control+s")
        expect(page.locator(".jp-mod-dirty")).to_have_count(0)
        path = lab_root / "nb" / "sizes.ipynb"
        sizes = saved_outputs(path)
        whole = path.stat().st_size
        print(f"saved sizes: notebook {whole} B, outputs by cell {sizes}")
        assert sizes[2] - sizes[3] < LIBRARY_BOUND, "the first table carries the library, once"
        assert sizes[3] < TABLE_BOUND, f"a 200-row results table: {sizes[3]} B"
        assert sizes[4] < COMPARE_BOUND, f"a 200-row comparison: {sizes[4]} B"
        assert whole < SAVED_BOUND, f"the saved notebook: {whole} B"


def recorded_runs(cell: Locator) -> int:
    """How many runs the output of `%kura runs` in `cell` says are recorded."""
    from playwright.sync_api import expect

    caption = cell.locator(".kura-runs .kura-caption")
    expect(caption).to_have_text(re.compile(r"^\d+ recorded runs?"))
    found = re.match(r"^(\d+)", caption.inner_text())
    assert found
    return int(found.group(1))


def test_clear_history_in_the_cache_panel_asks_by_its_own_count_first(
    lab: str, new_page: Callable[[str], Page], loopback: LoopbackLLM, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = open_notebook(lab, new_page, "history.ipynb")
    run_setup(page, 3, tmp_path)  # the extension, the conversations, one run recorded
    before = run_cell(page, 3, 4)
    with explained(before, tmp_path / "runs.png"):
        recorded = recorded_runs(before)
    runs = f"{recorded} recorded run{'' if recorded == 1 else 's'}"
    assert recorded >= 1
    panel = run_cell(page, 4, 5)
    with explained(panel, tmp_path / "history.png"):
        button, status = panel.locator(".kura-panel .kura-clear-history"), panel.locator(".kura-panel .kura-status")
        expect(button).to_have_text("Clear history")
        button.click()  # asks, by the real count, apart from the cache's entries
        expect(button).to_have_text(f"Delete the {runs}?")
        expect(status).to_have_text(f"click again within 5 s to delete the {runs} of the run history; "
                                    "they cannot be rebuilt from the cache")
        shoot(panel, "panel_confirm_clear_history.png")
        expect(button).to_have_text("Clear history", timeout=10_000)  # not confirmed in time: nothing deleted
    assert recorded_runs(run_cell(page, 5, 6)) == recorded, "the history is all there until confirmed"
    with explained(panel, tmp_path / "history_cleared.png"):
        button.click()
        page.wait_for_timeout(700)
        button.click()
        expect(status).to_have_text(f"deleted {runs}; the cache's entries are kept")
        shoot(panel, "panel_history_cleared.png")
    after = run_cell(page, 5, 7)
    expect(after.locator(".kura-runs .kura-caption")).to_have_text("0 recorded runs: none yet")
