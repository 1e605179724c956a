"""The panel in a real browser: JupyterLab 4 + headless Debian Chromium via Playwright.

Starts the loopback LLM server and JupyterLab (127.0.0.1, token, isolated Jupyter
dirs; the kernel inherits the server's environment, so litellm talks to the
loopback server), opens a generated notebook and checks in the page what a person
sees: fresh and cached counts, the results table, and the "Clear experiment"
button. Screenshots of the panel go to docs/.

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
    _notebook(root / "nb" / "panel.ipynb", "%load_ext kura_magic", CONVERSATIONS, SUMMARISE, "%kura")
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
        page = browser.new_page(viewport={"width": 1280, "height": 900})
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


def _run(page: Page, index: int, count: int) -> Locator:
    """Run cell `index` in place and wait until it is done as execution `count`."""
    from playwright.sync_api import expect

    cell = _cell(page, index)
    cell.locator(".cm-content").click()
    page.keyboard.press("Control+Enter")
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


def _shoot(cell: Locator, name: str) -> None:
    DOCS.mkdir(exist_ok=True)
    cell.locator(".kura-panel").screenshot(path=str(DOCS / name), animations="disabled")


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
    """Fresh, then all cached, then "Clear experiment" in the cache panel (`%kura`), then fresh
    again, and the cache panel follows the run."""
    from playwright.sync_api import expect

    page = open_notebook("panel.ipynb")
    for index in (0, 1):  # %load_ext kura_magic; the conversations
        cell = _cell(page, index)
        with _explained(cell, tmp_path / f"setup{index}.png"):
            _run(page, index, index + 1)
            expect(cell.locator(".jp-OutputArea")).not_to_contain_text(
                re.compile(r"Traceback|Error"), timeout=5_000)

    cell = _summarise(page, loopback, 3, fresh=N, cached=0, shots=tmp_path)
    _shoot(cell, "panel_first_run.png")
    cell = _summarise(page, loopback, 4, fresh=0, cached=N, shots=tmp_path)
    _shoot(cell, "panel_second_run.png")

    expect(cell.locator(".kura-panel button")).to_have_count(0)  # a run panel has no cache controls
    cell = _run(page, 3, 5)  # %kura: the cache panel
    with _explained(cell, tmp_path / "clear.png"):
        size = cell.locator(".kura-panel .kura-experiment-size")
        expect(size).to_contain_text(re.compile(r": [1-9]\d* entries"))
        button = cell.locator(".kura-panel .kura-clear-experiment")
        button.click()  # the first click only asks
        expect(button).to_have_text("Really clear default?")
        expect(cell.locator(".kura-panel .kura-status")).to_contain_text("click again")
        cell.page.wait_for_timeout(700)  # a person confirms; a click within 0.5 s would not count
        button.click()
        expect(size).to_contain_text(re.compile(r": 0 entries"))
        expect(button).to_have_text("Clear experiment")

    _summarise(page, loopback, 6, fresh=N, cached=0, shots=tmp_path)
    with _explained(cell, tmp_path / "follows.png"):
        expect(size).to_contain_text(f": {N} entries")  # the older cache panel re-read the cache
