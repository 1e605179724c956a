"""The panel in Jupyter Notebook 7 (a different app and page than JupyterLab's), in headless
Debian Chromium via Playwright.

Starts the loopback LLM server and `jupyter notebook` (127.0.0.1, token, isolated Jupyter dirs;
the kernel inherits the LLM settings), opens a generated notebook on Notebook 7's own page and
checks what a person sees there: the live run panel (the anywidget) with its counts rising
mid-run, then the finished panel and results; the same run again, all cached and no request
to the server; a template that does not parse, one red card. The finished panel's screenshot
goes to docs/notebook7_panel.png.

Needs `scripts/install_e2e.sh` (Debian's chromium, notebook 7, playwright); the server, browser
and cell helpers are the JupyterLab test's (`jupyter_e2e.py`, `conftest.py`).
Set KURA_E2E_REQUIRE=1 (as .ci/run does) to fail rather than skip when any is missing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from jupyter_e2e import (
    BAD_TEMPLATE,
    LIVE_CONVERSATIONS,
    LIVE_LATENCY_S,
    LIVE_SUMMARISE,
    N_LIVE,
    TOKEN,
    chromium,
    expect_red_card,
    expect_run,
    explained,
    jupyter_env,
    jupyter_server,
    mid_run,
    missing,
    run_cell,
    run_setup,
    shoot,
    start_cell,
    wait_for_kernel,
    write_notebook,
)

from kura_magic.local.launcher import free_port
from kura_magic.testing import LoopbackLLM

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def notebook7(tmp_path_factory: pytest.TempPathFactory, loopback: LoopbackLLM) -> Iterator[str]:
    """The Notebook 7 server's base URL; its folder holds panel.ipynb."""
    chromium("notebook")  # skip (or fail) before starting anything
    if not version("notebook").startswith("7."):
        missing(f"notebook {version('notebook')} is installed, not 7.x")
    root = tmp_path_factory.mktemp("notebook7")
    (root / "nb").mkdir()
    write_notebook(root / "nb" / "panel.ipynb", "%load_ext kura_magic", LIVE_CONVERSATIONS,
                   LIVE_SUMMARISE.format(experiment="nb7"), BAD_TEMPLATE)
    with jupyter_server("notebook", root, free_port(), jupyter_env(root, loopback)) as url:
        yield url


def test_notebook7_live_panel_cached_rerun_and_card(
    notebook7: str, new_page: Callable[[str], Page], loopback: LoopbackLLM, tmp_path: Path
) -> None:
    """A slow run shows the live panel with its counts rising, then the finished panel; the
    same run again is all cached with no request; a template that does not parse is one red card."""
    from playwright.sync_api import expect

    page = new_page(f"{notebook7}/notebooks/panel.ipynb?token={TOKEN}")
    expect(page.locator("#top-panel-wrapper")).to_have_count(1)  # Notebook 7's page,
    expect(page.locator("#jp-top-panel")).to_have_count(0)  # not JupyterLab's
    wait_for_kernel(page)
    run_setup(page, 2, tmp_path)  # %load_ext kura_magic; the conversations
    loopback.reset()
    loopback.latency_s = LIVE_LATENCY_S
    try:
        cell = start_cell(page, 2)
        mid_run(cell, tmp_path / "mid_run.png")
        with explained(cell, tmp_path / "finished.png"):
            expect(cell.locator(".jp-InputPrompt")).to_have_text("[3]:", timeout=120_000)
            expect(cell.locator(".kura-run")).to_have_count(0)  # the live view was replaced
            expect(cell.locator(".kura-panel.kura-static .kura-done")).to_have_text(f"{N_LIVE}/{N_LIVE} done")
            expect_run(cell, fresh=N_LIVE, cached=0)
            assert loopback.request_count == N_LIVE, f"the LLM server got {loopback.request_count} requests"
            shoot(cell, "notebook7_panel.png")
    finally:
        loopback.latency_s = 0.0

    loopback.reset()
    cell = run_cell(page, 2, 4)  # the same run again
    with explained(cell, tmp_path / "cached.png"):
        expect_run(cell, fresh=0, cached=N_LIVE)
        expect(cell.locator(".kura-saved")).to_have_text(re.compile(r"^saved \$[\d.]+ \(100%\)$"))
        assert loopback.request_count == 0, f"the LLM server got {loopback.request_count} requests"

    loopback.reset()
    cell = run_cell(page, 3, 5)  # a template that does not parse: one red card, nothing else
    with explained(cell, tmp_path / "card.png"):
        expect_red_card(cell, loopback)
