"""The panel in a real browser: JupyterLab 4 + headless Debian Chromium via Playwright.

Starts the loopback LLM server and JupyterLab (127.0.0.1, token, isolated Jupyter
dirs; the kernel inherits the server's environment, so litellm talks to the
loopback server), opens generated notebooks and checks in the page what a person
sees: the live run panel mid-run (counts rising, calls in flight, the elapsed time
ticking), the finished panel with fresh and cached counts and the results table, a
run stopped by a bug (red), a mistake before any call (one red card), the cache panel's buttons (off during a run, asking before
they clear, and an older cache panel following a clear), and the dark theme.
Screenshots of the panels go to docs/.

Needs `scripts/install_e2e.sh` (Debian's chromium, jupyterlab, playwright). The server, browser
and cell helpers are shared with the Notebook 7 test (`jupyter_e2e.py`, `conftest.py`).
Set KURA_E2E_REQUIRE=1 (as .ci/run does) to fail rather than skip when any is missing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
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
    cell_at,
    chromium,
    expect_red_card,
    expect_run,
    explained,
    jupyter_env,
    jupyter_server,
    mid_run,
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
    from playwright.sync_api import Locator, Page

pytestmark = pytest.mark.e2e

N = 5
CONVERSATIONS = f"from kura_magic.inputs.samples import sample_conversations\nconvs = sample_conversations({N})"
SUMMARISE = """%%summarise convs
{{ transcript }}

Summarise the support conversation above in one sentence."""
BUGGY_SCHEMA = """from pydantic import BaseModel, model_validator
seen = set()

class Buggy(BaseModel):
    summary: str

    @model_validator(mode="after")
    def _a_bug_on_the_third_reply(self):
        if self.summary not in seen and len(seen) == 2:
            raise KeyError("a bug in a validator")
        seen.add(self.summary)
        return self"""
BUGGY_RUN = """%%summarise live --schema Buggy --max-concurrency 1 --experiment buggy
{{ transcript }}"""
# A light colour (each channel 200 or more), as text on JupyterLab Dark's background should be.
LIGHT_TEXT = re.compile(r"^rgba?\((2\d\d), (2\d\d), (2\d\d)")
SMOKE = """import ipywidgets as w
label = w.Label(value="0")
button = w.Button(description="Increment")
button.on_click(lambda _: setattr(label, "value", str(int(label.value) + 1)))
w.HBox([label, button])"""
LAB_OPTIONS = ("--LabApp.extension_manager=readonly", "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, loopback: LoopbackLLM) -> Iterator[str]:
    """JupyterLab's base URL; its notebook folder holds the generated notebooks."""
    chromium("jupyterlab")  # skip (or fail) before starting anything
    root = tmp_path_factory.mktemp("lab")
    (root / "nb").mkdir()
    write_notebook(root / "nb" / "smoke.ipynb", SMOKE)
    write_notebook(root / "nb" / "panel.ipynb", "%load_ext kura_magic", CONVERSATIONS, SUMMARISE,
                   "%kura", "%kura")
    write_notebook(root / "nb" / "live.ipynb", "%load_ext kura_magic", LIVE_CONVERSATIONS, "%kura",
                   LIVE_SUMMARISE.format(experiment="live"), BUGGY_SCHEMA, BUGGY_RUN, BAD_TEMPLATE)
    write_notebook(root / "nb" / "dark.ipynb", "%load_ext kura_magic", LIVE_CONVERSATIONS,
                   LIVE_SUMMARISE.format(experiment="dark"))
    news = root / "settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false", "checkForUpdates": false}')  # no news toast
    with jupyter_server("lab", root, free_port(), jupyter_env(root, loopback), *LAB_OPTIONS) as url:
        yield url


@pytest.fixture
def open_notebook(lab: str, new_page: Callable[[str], Page]) -> Callable[[str], Page]:
    """A function that opens a notebook of the lab's folder and waits for its kernel."""

    def opener(name: str) -> Page:
        page = new_page(f"{lab}/lab/tree/{name}?reset&token={TOKEN}")
        wait_for_kernel(page)
        return page

    return opener


def _summarise(page: Page, loopback: LoopbackLLM, count: int, *, fresh: int, cached: int,
               shots: Path) -> Locator:
    """Run the %%summarise cell (execution `count`) and check the panel, table and server."""
    loopback.reset()
    cell = cell_at(page, 2)
    with explained(cell, shots / f"run{count}.png"):
        run_cell(page, 2, count)
        expect_run(cell, fresh=fresh, cached=cached)
        assert loopback.request_count == fresh, f"the LLM server got {loopback.request_count} requests"
    return cell


def _theme(page: Page, name: str) -> None:
    """Switch JupyterLab's theme the way a person does: Settings > Theme > `name`."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Settings").click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Theme$")).hover()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(rf"^{name}$")).click()
    light = "true" if "Light" in name else "false"
    page.wait_for_function(f"() => document.body.dataset.jpThemeLight === '{light}'")


def test_lab_renders_a_widget(open_notebook: Callable[[str], Page], tmp_path: Path) -> None:
    """The infrastructure alone: a plain ipywidget renders and its button works."""
    from playwright.sync_api import expect

    page = open_notebook("smoke.ipynb")
    cell = run_cell(page, 0, 1)
    with explained(cell, tmp_path / "smoke.png"):
        label = cell.locator(".jp-OutputArea .widget-label")
        expect(label).to_have_text("0")
        cell.locator("button.widget-button").click()
        expect(label).to_have_text("1")


def test_panel_fresh_cached_and_clear(
    open_notebook: Callable[[str], Page], loopback: LoopbackLLM, tmp_path: Path
) -> None:
    """Fresh, then all cached; then two cache panels (`%kura`): "Clear experiment" in the second
    asks, then clears, and the first (older) one follows; a fresh run again, both follow it."""
    from playwright.sync_api import expect

    page = open_notebook("panel.ipynb")
    run_setup(page, 2, tmp_path)  # %load_ext kura_magic; the conversations
    cell = _summarise(page, loopback, 3, fresh=N, cached=0, shots=tmp_path)
    shoot(cell, "panel_first_run.png")
    cell = _summarise(page, loopback, 4, fresh=0, cached=N, shots=tmp_path)
    shoot(cell, "panel_second_run.png")
    expect(cell.locator(".kura-saved")).to_have_text(re.compile(r"^saved \$[\d.]+ \(100%\)$"))
    expect(cell.locator(".kura-panel button")).to_have_count(0)  # a run panel has no cache controls

    older, newer = run_cell(page, 3, 5), run_cell(page, 4, 6)  # %kura twice: two cache panels
    with explained(newer, tmp_path / "clear.png"):
        sizes = [c.locator(".kura-panel .kura-experiment-size") for c in (older, newer)]
        for size in sizes:
            expect(size).to_contain_text(f": {N} entries")
        button = newer.locator(".kura-panel .kura-clear-experiment")
        button.click()  # the first click only asks
        expect(button).to_have_text("Really clear default?")
        expect(newer.locator(".kura-panel .kura-status")).to_contain_text("click again")
        shoot(newer, "panel_confirm_clear.png")
        page.wait_for_timeout(700)  # a person confirms; a click within 0.5 s would not count
        button.click()
        expect(sizes[1]).to_contain_text(re.compile(r": 0 entries"))
        expect(button).to_have_text("Clear experiment")
    with explained(older, tmp_path / "stale.png"):
        expect(sizes[0]).to_contain_text(re.compile(r": 0 entries"))  # the older panel followed
        shoot(older, "panel_stale_updated.png")

    _summarise(page, loopback, 7, fresh=N, cached=0, shots=tmp_path)
    with explained(older, tmp_path / "follows.png"):
        for size in sizes:
            expect(size).to_contain_text(f": {N} entries")  # both re-read the cache after the run


def test_live_panel_mid_run_controls_off_and_a_failure(
    open_notebook: Callable[[str], Page], loopback: LoopbackLLM, tmp_path: Path
) -> None:
    """A slow run: the live header mid-run, the cache panel's controls off until it ends, the
    finished panel; then a run a bug stops part-way is red and says where and why, and a
    template that does not parse is one red card, with no panel and no call made."""
    from playwright.sync_api import expect

    page = open_notebook("live.ipynb")
    run_setup(page, 3, tmp_path)  # %load_ext; the conversations; %kura
    controls = cell_at(page, 2).locator(".kura-panel")
    loopback.reset()
    loopback.latency_s = LIVE_LATENCY_S
    try:
        cell = start_cell(page, 3)
        mid_run(cell, tmp_path / "mid_run.png")
        shoot(cell, "panel_mid_run.png", ".kura-run")
        with explained(cell_at(page, 2), tmp_path / "controls_off.png"):
            for css in ("kura-clear-experiment", "kura-clear-all", "kura-clear-embeddings"):
                expect(controls.locator(f".{css}")).to_be_disabled()
            expect(controls.locator(".kura-experiment-select input")).to_be_disabled()
            shoot(cell_at(page, 2), "panel_controls_off.png")
        with explained(cell, tmp_path / "finished.png"):
            expect(cell.locator(".jp-InputPrompt")).to_have_text("[4]:", timeout=120_000)
            expect(cell.locator(".kura-panel.kura-static .kura-done")).to_have_text(f"{N_LIVE}/{N_LIVE} done")
            expect(cell.locator(".kura-panel.kura-static .kura-fresh")).to_have_text(f"{N_LIVE} fresh")
            expect(cell.locator(".kura-run")).to_have_count(0)  # the live view was replaced
            shoot(cell, "panel_finished.png")
        expect(controls.locator(".kura-clear-experiment")).to_be_enabled()
    finally:
        loopback.latency_s = 0.0

    run_cell(page, 4, 5)  # the schema with a bug
    cell = run_cell(page, 5, 6)
    with explained(cell, tmp_path / "failed.png"):
        panel = cell.locator(".kura-panel.kura-failed")
        expect(panel).to_have_count(1)
        expect(panel.locator(".kura-status")).to_have_text(
            f"stopped at 2/{N_LIVE}: KeyError: 'a bug in a validator'")
        expect(panel.locator(".kura-done")).to_have_text(re.compile(rf"^2/{N_LIVE} done"))
        shoot(cell, "panel_failed.png")

    loopback.reset()
    cell = run_cell(page, 6, 7)  # a template that does not parse: one red card, nothing else
    with explained(cell, tmp_path / "card.png"):
        expect_red_card(cell, loopback)
        shoot(cell, "failure_card.png", ".jp-OutputArea")


def test_dark_theme(open_notebook: Callable[[str], Page], loopback: LoopbackLLM, tmp_path: Path) -> None:
    """In JupyterLab Dark the panel's text is light on dark, live and finished."""
    from playwright.sync_api import expect

    page = open_notebook("dark.ipynb")
    _theme(page, "JupyterLab Dark")
    try:
        run_setup(page, 2, tmp_path)
        loopback.reset()
        loopback.latency_s = LIVE_LATENCY_S
        try:
            cell = start_cell(page, 2)
            mid_run(cell, tmp_path / "dark_mid_run.png")
            expect(cell.locator(".kura-run .kura-done")).to_have_css("color", LIGHT_TEXT)  # light on dark
            shoot(cell, "panel_dark.png", ".kura-run")
            expect(cell.locator(".jp-InputPrompt")).to_have_text("[3]:", timeout=120_000)
        finally:
            loopback.latency_s = 0.0
        with explained(cell, tmp_path / "dark_finished.png"):
            static = cell.locator(".kura-panel.kura-static")
            expect(static.locator(".kura-fresh")).to_have_text(f"{N_LIVE} fresh")
            expect(static.locator(".kura-done")).to_have_css("color", LIGHT_TEXT)
            expect(static.locator(".kura-elapsed")).to_have_css("color", LIGHT_TEXT)
            shoot(cell, "panel_dark_finished.png", ".jp-OutputArea")
    finally:
        _theme(page, "JupyterLab Light")

