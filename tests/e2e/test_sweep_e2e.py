"""A sweep in a real browser (JupyterLab 4 + headless Debian Chromium via Playwright): a cell
naming two prompt variants, two models and two temperatures shows a live run panel per
variant while it goes, then each variant's finished panel, the leaderboard and the grid of
conversation × variant with the disagreeing rows tinted and long outputs a click away.
Screenshots: docs/sweep_mid_run.png, docs/sweep_finished.png. Needs `scripts/install_e2e.sh`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from jupyter_e2e import (
    TOKEN,
    chromium,
    explained,
    jupyter_env,
    jupyter_server,
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

N = 4
VARIANTS = 8  # 2 prompts × 2 models × 2 temperatures
CONVERSATIONS = (f"from kura_magic.inputs.samples import sample_conversations\nconvs = sample_conversations({N})\n"
                 "def no_echo(conversation, output):\n    return 'five words' not in output")
SWEEP = """%%summarise convs --out matrix --model openai/gpt-4o-mini,openai/gpt-4o --temperature 0,0.7 --scorer no_echo
### variant: short
In five words, what did the customer want? {{ transcript }}
### variant: long
{{ transcript }}

Summarise the support conversation above in one sentence."""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, loopback: LoopbackLLM) -> Iterator[str]:
    """JupyterLab whose kernel makes 4 calls at a time, so the sweep's 32 take a few waves."""
    chromium("jupyterlab")
    root = tmp_path_factory.mktemp("sweep")
    (root / "nb").mkdir()
    write_notebook(root / "nb" / "sweep.ipynb", "%load_ext kura_magic", CONVERSATIONS, SWEEP)
    news = root / "settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false", "checkForUpdates": false}')
    env = jupyter_env(root, loopback) | {"KURA_MAGIC_MAX_CONCURRENCY": "4"}
    with jupyter_server("lab", root, free_port(), env, "--LabApp.news_url=None") as url:
        yield url


def test_a_sweep_mid_run_and_finished(lab: str, new_page: Callable[[str], Page], loopback: LoopbackLLM,
                                      tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page = new_page(f"{lab}/lab/tree/sweep.ipynb?reset&token={TOKEN}")
    wait_for_kernel(page)
    run_setup(page, 2, tmp_path)
    loopback.reset()
    loopback.latency_s = 1.0
    try:
        cell = start_cell(page, 2)
        with explained(cell, tmp_path / "mid.png"):
            live = cell.locator(".kura-panel.kura-run")
            expect(live).to_have_count(VARIANTS)
            expect(live.locator(".kura-done", has_text=re.compile(r"^short,gpt-4o,t=0\.7: \d/4 done"))).to_have_count(1)
            expect(live.locator(".kura-phase", has_text="in flight").first).to_be_visible()
            expect(live.locator(".kura-done", has_text="4/4 done").first).to_be_visible()  # one variant done
            shoot(cell, "sweep_mid_run.png", ".jp-OutputArea")
        with explained(cell, tmp_path / "finished.png"):
            expect(cell.locator(".jp-InputPrompt")).to_have_text("[3]:", timeout=120_000)
            expect(cell.locator(".kura-run")).to_have_count(0)  # each live view replaced by its final state
            static = cell.locator(".kura-panel.kura-static .kura-fresh")
            expect(static).to_have_count(VARIANTS)
            expect(static.first).to_have_text(f"{N} fresh")
            board = cell.locator(".kura-leaderboard tbody tr")
            expect(board).to_have_count(VARIANTS)
            grid = cell.locator(".kura-sweep-grid")
            expect(grid.locator("thead th")).to_have_count(2 + VARIANTS)
            expect(grid.locator("tbody tr.kura-differs")).to_have_count(N)  # the two prompts answer differently
            expect(grid.locator(".kura-caption")).to_have_text(f"{N} of {N} conversations differ between variants")
            expect(cell.locator(".kura-leaderboard tbody tr").first.locator("td").first).to_have_text(
                re.compile(r"^long,"))  # the loopback echoes the short prompt's words: it scores 0, ranked last
            page.set_viewport_size({"width": 1600, "height": 2000})  # the whole output in one picture
            shoot(cell, "sweep_finished.png", ".jp-OutputArea")
    finally:
        loopback.latency_s = 0.0
    assert len(loopback.chat_requests) == VARIANTS * N
