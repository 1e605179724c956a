"""The panel in a real browser: JupyterLab 4 + headless Debian Chromium via Playwright.

Starts the loopback LLM server and JupyterLab (127.0.0.1, token, isolated Jupyter
dirs; the kernel inherits the server's environment, so litellm talks to the
loopback server), opens generated notebooks and checks in the page what a person
sees: the live run panel mid-run (counts rising, calls in flight, the elapsed time
ticking), the finished panel with fresh and cached counts and the results table, a
run stopped by a bug (red), a mistake before any call (one red card), the cache panel's buttons (off during a run, asking before
they clear, and an older cache panel following a clear), and the dark theme.
Screenshots of the panels go to docs/.

Needs `scripts/install_e2e.sh` (Debian's chromium, jupyterlab, playwright).
Set KURA_E2E_REQUIRE=1 (as .ci/run does) to fail rather than skip when any is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
import pytest

from kura_magic.local import free_port
from kura_magic.testing import LoopbackLLM

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

pytestmark = pytest.mark.e2e

TOKEN = "kura-e2e-token"
DOCS = Path(__file__).resolve().parents[2] / "docs"
N = 5
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
CONVERSATIONS = f"from kura_magic.samples import sample_conversations\nconvs = sample_conversations({N})"
SUMMARISE = """%%summarise convs
{{ transcript }}

Summarise the support conversation above in one sentence."""
N_LIVE = 12  # the live run: 4 waves of 3 calls, each answered after LIVE_LATENCY_S (the samples repeat past 13)
LIVE_LATENCY_S = 1.25
LIVE_CONVERSATIONS = (f"from kura_magic.samples import sample_conversations\n"
                      f"live = sample_conversations({N_LIVE})")
LIVE_SUMMARISE = """%%summarise live --experiment {experiment} --max-concurrency 3
{{{{ transcript }}}}

In one sentence, what did the customer want?"""
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
BAD_TEMPLATE = """%%summarise live --experiment buggy
Summarise: {{ transcript"""
# A light colour (each channel 200 or more), as text on JupyterLab Dark's background should be.
LIGHT_TEXT = re.compile(r"^rgba?\((2\d\d), (2\d\d), (2\d\d)")
SMOKE = """import ipywidgets as w
label = w.Label(value="0")
button = w.Button(description="Increment")
button.on_click(lambda _: setattr(label, "value", str(int(label.value) + 1)))
w.HBox([label, button])"""


def _missing(reason: str) -> None:
    if os.environ.get("KURA_E2E_REQUIRE"):
        pytest.fail(f"{reason} (KURA_E2E_REQUIRE is set; run scripts/install_e2e.sh)")
    pytest.skip(f"{reason}; run scripts/install_e2e.sh")


def _chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not path or not os.access(path, os.X_OK):
        _missing(f"no chromium browser at {path or '/usr/bin/chromium'}")
    for module in ("playwright.sync_api", "jupyterlab"):
        try:
            __import__(module)
        except ImportError:
            _missing(f"{module.split('.')[0]} is not installed")
    return str(path)


def _notebook(path: Path, *sources: str) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _lab_env(root: Path, server: LoopbackLLM) -> dict[str, str]:
    """Jupyter's dirs isolated from the user's; the kernel inherits the LLM settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KURA_MAGIC_", "JUPYTER"))}
    for var, sub in [("JUPYTER_CONFIG_DIR", "cfg"), ("JUPYTER_DATA_DIR", "data"),
                     ("JUPYTER_RUNTIME_DIR", "rt"), ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                     ("JUPYTERLAB_WORKSPACES_DIR", "ws"), ("IPYTHONDIR", "ipy")]:
        env[var] = str(root / sub)
    env.update(OPENAI_API_BASE=server.url, OPENAI_API_KEY="sk-e2e",
               KURA_MAGIC_CACHE=str(root / "cache"), KURA_MAGIC_MODEL="openai/gpt-4o-mini",
               LITELLM_LOCAL_MODEL_COST_MAP="True",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    return env


def _start_lab(root: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    news = root / "settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false", "checkForUpdates": false}')  # no news toast
    with open(root / "lab.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
             "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root / 'nb'}",
             "--LabApp.extension_manager=readonly", "--LabApp.news_url=None",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={TOKEN}", timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    _stop(proc)
    raise RuntimeError("jupyter lab did not start:\n" + (root / "lab.log").read_text())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope="module")
def loopback() -> Iterator[LoopbackLLM]:
    with LoopbackLLM() as server:
        yield server


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, loopback: LoopbackLLM) -> Iterator[str]:
    """JupyterLab's base URL; its notebook folder holds the generated notebooks."""
    _chromium()  # skip (or fail) before starting anything
    root = tmp_path_factory.mktemp("lab")
    (root / "nb").mkdir()
    _notebook(root / "nb" / "smoke.ipynb", SMOKE)
    _notebook(root / "nb" / "panel.ipynb", "%load_ext kura_magic", CONVERSATIONS, SUMMARISE, "%kura", "%kura")
    _notebook(root / "nb" / "live.ipynb", "%load_ext kura_magic", LIVE_CONVERSATIONS, "%kura",
              LIVE_SUMMARISE.format(experiment="live"), BUGGY_SCHEMA, BUGGY_RUN, BAD_TEMPLATE)
    _notebook(root / "nb" / "dark.ipynb", "%load_ext kura_magic", LIVE_CONVERSATIONS,
              LIVE_SUMMARISE.format(experiment="dark"))
    port = free_port()
    proc = _start_lab(root, port, _lab_env(root, loopback))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def browser(lab: str) -> Iterator[Browser]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)  # a loaded 2-core CI machine is slow
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def open_notebook(lab: str, browser: Browser) -> Iterator[Callable[[str], Page]]:
    """A function that opens a notebook of the lab's folder and waits for its kernel."""
    pages: list[Page] = []

    def opener(name: str) -> Page:
        page = browser.new_page(viewport={"width": 1600, "height": 900})  # a laptop screen
        pages.append(page)
        page.set_default_timeout(60_000)
        page.goto(f"{lab}/lab/tree/{name}?reset&token={TOKEN}")
        _wait_for_kernel(page)
        return page

    yield opener
    for page in pages:
        page.close()


def _wait_for_kernel(page: Page) -> None:
    """The kernel really started and idle: the indicator says idle briefly while the
    toolbar still shows "No Kernel", so check both."""
    page.wait_for_function("""() => {
        const k = document.querySelector('.jp-Toolbar-kernelName');
        const i = document.querySelector('.jp-Notebook-ExecutionIndicator');
        return k && i && !/No Kernel/.test(k.textContent) && i.dataset.status === 'idle'; }""",
        timeout=120_000)


def _cell(page: Page, index: int) -> Locator:
    return page.locator(".jp-Notebook .jp-CodeCell").nth(index)


def _start(page: Page, index: int) -> Locator:
    """Start cell `index` running in place and return it at once."""
    cell = _cell(page, index)
    cell.locator(".cm-content").click()
    page.keyboard.press("Control+Enter")
    return cell


def _run(page: Page, index: int, count: int) -> Locator:
    """Run cell `index` in place and wait until it is done as execution `count`."""
    from playwright.sync_api import expect

    cell = _start(page, index)
    expect(cell.locator(".jp-InputPrompt")).to_have_text(f"[{count}]:", timeout=120_000)
    return cell


@contextmanager
def _explained(cell: Locator, shot: Path) -> Iterator[None]:
    """On a failed check, say what the cell showed and keep a screenshot of the page."""
    try:
        yield
    except AssertionError as exc:
        cell.page.screenshot(path=str(shot), full_page=True)
        output = cell.locator(".jp-OutputArea").inner_text(timeout=5_000)
        raise AssertionError(f"{exc}\n--- cell output ---\n{output}\n--- page: {shot}") from exc


def _expect_run(cell: Locator, *, fresh: int, cached: int) -> None:
    from playwright.sync_api import expect

    panel = cell.locator(".kura-panel")
    expect(panel).to_have_count(1)
    expect(panel.locator(".kura-fresh")).to_have_text(f"{fresh} fresh")
    expect(panel.locator(".kura-cached")).to_have_text(f"{cached} cached")
    expect(panel.locator(".kura-errors")).to_have_text("0 errors")
    table = cell.locator("div.kura-results table")
    expect(table).to_have_count(1)
    expect(table.locator("tbody tr")).to_have_count(N)
    expect(table.locator("td", has_text=re.compile(r"^\s*Summary: "))).to_have_count(N)
    expect(table.locator("span.kura-badge.kura-cached")).to_have_count(cached)
    expect(table.locator("span.kura-badge.kura-fresh")).to_have_count(fresh)
    # "spent $x · saved $y" must read as money, not be typeset by MathJax as $...$ math
    expect(cell.locator(".jp-OutputArea mjx-container")).to_have_count(0)


def _summarise(page: Page, loopback: LoopbackLLM, count: int, *, fresh: int, cached: int,
               shots: Path) -> Locator:
    """Run the %%summarise cell (execution `count`) and check the panel, table and server."""
    loopback.reset()
    cell = _cell(page, 2)
    with _explained(cell, shots / f"run{count}.png"):
        _run(page, 2, count)
        _expect_run(cell, fresh=fresh, cached=cached)
        assert loopback.request_count == fresh, f"the LLM server got {loopback.request_count} requests"
    return cell


def _shoot(cell: Locator, name: str, selector: str = ".kura-panel") -> None:
    DOCS.mkdir(exist_ok=True)
    cell.locator(selector).first.screenshot(path=str(DOCS / name), animations="disabled")


def _setup(page: Page, count: int, tmp_path: Path) -> None:
    """Run the notebook's first `count` cells (loading the extension, the data) without errors."""
    from playwright.sync_api import expect

    for index in range(count):
        cell = _cell(page, index)
        with _explained(cell, tmp_path / f"setup{index}.png"):
            _run(page, index, index + 1)
            expect(cell.locator(".jp-OutputArea")).not_to_contain_text(
                re.compile(r"Traceback|Error"), timeout=5_000)


def _mid_run(cell: Locator, shot: Path) -> str:
    """While the cell's run is going: the live header shows calls in flight, its counts rise and
    its elapsed time ticks. Returns the first count seen."""
    from playwright.sync_api import expect

    live = cell.locator(".kura-panel.kura-run")
    with _explained(cell, shot):
        expect(live).to_have_count(1)
        expect(live.locator(".kura-phase")).to_have_text(re.compile(r"^calling · [1-3] in flight$"))
        done = live.locator(".kura-done")
        expect(done).to_have_text(re.compile(rf"^[1-9]\d*/{N_LIVE} done$"))
        first = done.inner_text()
        elapsed = live.locator(".kura-elapsed")
        ticks = set()
        for _ in range(10):  # a second in which the kernel sends an update or two at most
            ticks.add(elapsed.inner_text())
            cell.page.wait_for_timeout(100)
        assert len(ticks) >= 5, f"the elapsed time does not tick in the browser: {sorted(ticks)}"
        expect(done).not_to_have_text(first)  # the counts rise
        expect(live.locator(".kura-progress > div").first).to_be_visible()
        expect(live.locator(".kura-rate")).to_have_text(re.compile(r"calls/s$"))
        expect(live.locator(".kura-eta")).to_have_text(re.compile(r"^ETA "))
    return first


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
    cell = _run(page, 0, 1)
    with _explained(cell, tmp_path / "smoke.png"):
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
    _setup(page, 2, tmp_path)  # %load_ext kura_magic; the conversations
    cell = _summarise(page, loopback, 3, fresh=N, cached=0, shots=tmp_path)
    _shoot(cell, "panel_first_run.png")
    cell = _summarise(page, loopback, 4, fresh=0, cached=N, shots=tmp_path)
    _shoot(cell, "panel_second_run.png")
    expect(cell.locator(".kura-saved")).to_have_text(re.compile(r"^saved \$[\d.]+ \(100%\)$"))
    expect(cell.locator(".kura-panel button")).to_have_count(0)  # a run panel has no cache controls

    older, newer = _run(page, 3, 5), _run(page, 4, 6)  # %kura twice: two cache panels
    with _explained(newer, tmp_path / "clear.png"):
        sizes = [c.locator(".kura-panel .kura-experiment-size") for c in (older, newer)]
        for size in sizes:
            expect(size).to_contain_text(f": {N} entries")
        button = newer.locator(".kura-panel .kura-clear-experiment")
        button.click()  # the first click only asks
        expect(button).to_have_text("Really clear default?")
        expect(newer.locator(".kura-panel .kura-status")).to_contain_text("click again")
        _shoot(newer, "panel_confirm_clear.png")
        page.wait_for_timeout(700)  # a person confirms; a click within 0.5 s would not count
        button.click()
        expect(sizes[1]).to_contain_text(re.compile(r": 0 entries"))
        expect(button).to_have_text("Clear experiment")
    with _explained(older, tmp_path / "stale.png"):
        expect(sizes[0]).to_contain_text(re.compile(r": 0 entries"))  # the older panel followed
        _shoot(older, "panel_stale_updated.png")

    _summarise(page, loopback, 7, fresh=N, cached=0, shots=tmp_path)
    with _explained(older, tmp_path / "follows.png"):
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
    _setup(page, 3, tmp_path)  # %load_ext; the conversations; %kura
    controls = _cell(page, 2).locator(".kura-panel")
    loopback.reset()
    loopback.latency_s = LIVE_LATENCY_S
    try:
        cell = _start(page, 3)
        _mid_run(cell, tmp_path / "mid_run.png")
        _shoot(cell, "panel_mid_run.png", ".kura-run")
        with _explained(_cell(page, 2), tmp_path / "controls_off.png"):
            for css in ("kura-clear-experiment", "kura-clear-all", "kura-clear-embeddings"):
                expect(controls.locator(f".{css}")).to_be_disabled()
            expect(controls.locator(".kura-experiment-select input")).to_be_disabled()
            _shoot(_cell(page, 2), "panel_controls_off.png")
        with _explained(cell, tmp_path / "finished.png"):
            expect(cell.locator(".jp-InputPrompt")).to_have_text("[4]:", timeout=120_000)
            expect(cell.locator(".kura-panel.kura-static .kura-done")).to_have_text(f"{N_LIVE}/{N_LIVE} done")
            expect(cell.locator(".kura-panel.kura-static .kura-fresh")).to_have_text(f"{N_LIVE} fresh")
            expect(cell.locator(".kura-run")).to_have_count(0)  # the live view was replaced
            _shoot(cell, "panel_finished.png")
        expect(controls.locator(".kura-clear-experiment")).to_be_enabled()
    finally:
        loopback.latency_s = 0.0

    _run(page, 4, 5)  # the schema with a bug
    cell = _run(page, 5, 6)
    with _explained(cell, tmp_path / "failed.png"):
        panel = cell.locator(".kura-panel.kura-failed")
        expect(panel).to_have_count(1)
        expect(panel.locator(".kura-status")).to_have_text(
            f"stopped at 2/{N_LIVE}: KeyError: 'a bug in a validator'")
        expect(panel.locator(".kura-done")).to_have_text(re.compile(rf"^2/{N_LIVE} done"))
        _shoot(cell, "panel_failed.png")

    loopback.reset()
    cell = _run(page, 6, 7)  # a template that does not parse: one red card, nothing else
    with _explained(cell, tmp_path / "card.png"):
        # the live panel shown at the start was emptied: the card is the only output with text
        expect(cell.locator(".jp-OutputArea-output", has_text=re.compile(r"\S"))).to_have_count(1)
        expect(cell.locator(".ansi-red-bg")).to_contain_text("template error")
        output = cell.locator(".jp-OutputArea").inner_text()
        assert "Traceback" not in output and "UsageError" not in output
        expect(cell.locator(".kura-panel")).to_have_count(0)
        assert loopback.request_count == 0
        _shoot(cell, "failure_card.png", ".jp-OutputArea")


def test_dark_theme(open_notebook: Callable[[str], Page], loopback: LoopbackLLM, tmp_path: Path) -> None:
    """In JupyterLab Dark the panel's text is light on dark, live and finished."""
    from playwright.sync_api import expect

    page = open_notebook("dark.ipynb")
    _theme(page, "JupyterLab Dark")
    try:
        _setup(page, 2, tmp_path)
        loopback.reset()
        loopback.latency_s = LIVE_LATENCY_S
        try:
            cell = _start(page, 2)
            _mid_run(cell, tmp_path / "dark_mid_run.png")
            expect(cell.locator(".kura-run .kura-done")).to_have_css("color", LIGHT_TEXT)  # light on dark
            _shoot(cell, "panel_dark.png", ".kura-run")
            expect(cell.locator(".jp-InputPrompt")).to_have_text("[3]:", timeout=120_000)
        finally:
            loopback.latency_s = 0.0
        with _explained(cell, tmp_path / "dark_finished.png"):
            static = cell.locator(".kura-panel.kura-static")
            expect(static.locator(".kura-fresh")).to_have_text(f"{N_LIVE} fresh")
            expect(static.locator(".kura-done")).to_have_css("color", LIGHT_TEXT)
            expect(static.locator(".kura-elapsed")).to_have_css("color", LIGHT_TEXT)
            _shoot(cell, "panel_dark_finished.png", ".jp-OutputArea")
    finally:
        _theme(page, "JupyterLab Light")

