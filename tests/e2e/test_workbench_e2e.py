"""The workbench as a person uses it, in JupyterLab 4 and headless Chromium: Run All, then
Kernel › Interrupt during a `%%summarise` (the partial run shows, the interrupt reaches
Jupyter, the cells queued after it never run, and the LLM server gets no further calls);
the cache panel's "Clear all", after which the run history is still there; and a run
whose calls all fail, which says so.

Needs `scripts/install_e2e.sh`; KURA_E2E_REQUIRE=1 (as in CI) fails rather than skips."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from jupyter_e2e import (
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
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

LONG_RUN = """%%summarise live --max-concurrency 1 --experiment stop
{{ transcript }}

In one sentence, what did the customer want?"""
NEXT_RUN = """%%summarise live --limit 3 --out next_run --experiment stop-next
Summarise: {{ transcript }}"""
SHORT_RUN = """%%summarise live --limit 3 --out v1 --experiment kept
Summarise: {{ transcript }}"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, loopback: LoopbackLLM) -> Iterator[str]:
    chromium("jupyterlab")
    root = tmp_path_factory.mktemp("workbench")
    (root / "nb").mkdir()
    write_notebook(root / "nb" / "stop.ipynb", "%load_ext kura_magic", LIVE_CONVERSATIONS, LONG_RUN, NEXT_RUN)
    write_notebook(root / "nb" / "clear.ipynb", "%load_ext kura_magic", LIVE_CONVERSATIONS, SHORT_RUN, "%kura",
                   "%kura runs")
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
