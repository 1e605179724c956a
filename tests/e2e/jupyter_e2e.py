"""What the browser tests share: a Jupyter server (JupyterLab or Notebook 7) on loopback wired
to the loopback LLM, headless Debian Chromium, and the notebook's cells in the page (both
front ends draw a notebook with JupyterLab's widgets, so the cells read the same)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
import pytest

from kura_magic.testing import LoopbackLLM

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

TOKEN = "kura-e2e-token"
DOCS = Path(__file__).resolve().parents[2] / "docs"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
N_LIVE = 12  # the live run: 4 waves of 3 calls, each answered after LIVE_LATENCY_S (the samples repeat past 13)
LIVE_LATENCY_S = 1.25
LIVE_CONVERSATIONS = (f"from kura_magic.inputs.samples import sample_conversations\n"
                      f"live = sample_conversations({N_LIVE})")
LIVE_SUMMARISE = """%%summarise live --experiment {experiment} --max-concurrency 3
{{{{ transcript }}}}

In one sentence, what did the customer want?"""
BAD_TEMPLATE = """%%summarise live --experiment buggy
Summarise: {{ transcript"""


def missing(reason: str) -> None:
    """Skip the test, or fail it where KURA_E2E_REQUIRE is set (as in CI)."""
    if os.environ.get("KURA_E2E_REQUIRE"):
        pytest.fail(f"{reason} (KURA_E2E_REQUIRE is set; run scripts/install_e2e.sh)")
    pytest.skip(f"{reason}; run scripts/install_e2e.sh")


def chromium(*modules: str) -> str:
    """The browser's path, once it, Playwright and the `modules` (the front end) are all here."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not path or not os.access(path, os.X_OK):
        missing(f"no chromium browser at {path or '/usr/bin/chromium'}")
    for module in ("playwright.sync_api", *modules):
        try:
            __import__(module)
        except ImportError:
            missing(f"{module.split('.')[0]} is not installed")
    return str(path)


def write_notebook(path: Path, *sources: str) -> None:
    """A notebook of code cells with `sources`, on the python3 kernel."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def jupyter_env(root: Path, server: LoopbackLLM) -> dict[str, str]:
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


@contextmanager
def jupyter_server(app: str, root: Path, port: int, env: dict[str, str], *options: str) -> Iterator[str]:
    """`jupyter <app>` ("lab" or "notebook") on 127.0.0.1:`port` serving `root`/nb; yields its
    base URL once it answers, and stops it afterwards."""
    with open(root / f"{app}.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", app, "--no-browser", "--allow-root",
             "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root / 'nb'}", *options],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_until_up(proc, port, root / f"{app}.log")
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


def _wait_until_up(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={TOKEN}", timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"jupyter {log.stem} did not start:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def wait_for_kernel(page: Page) -> None:
    """The kernel really started and idle: the indicator says idle briefly while the
    toolbar still shows "No Kernel", so check both (Notebook 7 has both too)."""
    page.wait_for_function("""() => {
        const k = document.querySelector('.jp-Toolbar-kernelName');
        const i = document.querySelector('.jp-Notebook-ExecutionIndicator');
        return k && i && !/No Kernel/.test(k.textContent) && i.dataset.status === 'idle'; }""",
        timeout=120_000)


def cell_at(page: Page, index: int) -> Locator:
    """The notebook's code cell number `index` (from 0)."""
    return page.locator(".jp-Notebook .jp-CodeCell").nth(index)


def start_cell(page: Page, index: int) -> Locator:
    """Start cell `index` running in place and return it at once."""
    cell = cell_at(page, index)
    cell.locator(".cm-content").click()
    page.keyboard.press("Control+Enter")
    return cell


def run_cell(page: Page, index: int, count: int) -> Locator:
    """Run cell `index` in place and wait until it is done as execution `count`."""
    from playwright.sync_api import expect

    cell = start_cell(page, index)
    expect(cell.locator(".jp-InputPrompt")).to_have_text(f"[{count}]:", timeout=120_000)
    return cell


@contextmanager
def explained(cell: Locator, shot: Path) -> Iterator[None]:
    """On a failed check, say what the cell showed and keep a screenshot of the page."""
    try:
        yield
    except AssertionError as exc:
        cell.page.screenshot(path=str(shot), full_page=True)
        output = cell.locator(".jp-OutputArea").inner_text(timeout=5_000)
        raise AssertionError(f"{exc}\n--- cell output ---\n{output}\n--- page: {shot}") from exc


def run_setup(page: Page, count: int, tmp_path: Path) -> None:
    """Run the notebook's first `count` cells (loading the extension, the data) without errors."""
    from playwright.sync_api import expect

    for index in range(count):
        cell = cell_at(page, index)
        with explained(cell, tmp_path / f"setup{index}.png"):
            run_cell(page, index, index + 1)
            expect(cell.locator(".jp-OutputArea")).not_to_contain_text(
                re.compile(r"Traceback|Error"), timeout=5_000)


def shoot(cell: Locator, name: str, selector: str = ".kura-panel") -> None:
    """A screenshot of the first `selector` in the cell, as docs/`name`."""
    DOCS.mkdir(exist_ok=True)
    cell.locator(selector).first.screenshot(path=str(DOCS / name), animations="disabled")


def expect_run(cell: Locator, *, fresh: int, cached: int) -> None:
    """The finished run's panel and results table: `fresh` + `cached` rows, no errors."""
    from playwright.sync_api import expect

    panel = cell.locator(".kura-panel")
    expect(panel).to_have_count(1)
    expect(panel.locator(".kura-fresh")).to_have_text(f"{fresh} fresh")
    expect(panel.locator(".kura-cached")).to_have_text(f"{cached} cached")
    expect(panel.locator(".kura-errors")).to_have_text("0 errors")
    table = cell.locator("div.kura-results .dt-scroll-body table")  # the interactive table (itables)
    expect(table).to_have_count(1)
    shown = min(fresh + cached, 10)  # a page; a table of one page has no pager
    if fresh + cached > shown:
        expect(cell.locator("div.kura-results .dt-info")).to_contain_text(f"of {fresh + cached} entries")
    expect(table.locator("tbody tr")).to_have_count(shown)
    expect(table.locator("td", has_text=re.compile(r"^\s*Summary: "))).to_have_count(shown)
    expect(table.locator("span.kura-badge.kura-cached")).to_have_count(min(cached, shown))
    expect(table.locator("span.kura-badge.kura-fresh")).to_have_count(min(fresh, shown))
    # "spent $x · saved $y" must read as money, not be typeset by MathJax as $...$ math
    expect(cell.locator(".jp-OutputArea mjx-container")).to_have_count(0)


def mid_run(cell: Locator, shot: Path) -> None:
    """While the cell's run is going: the live header shows calls in flight, its counts rise and
    its elapsed time ticks."""
    from playwright.sync_api import expect

    live = cell.locator(".kura-panel.kura-run")
    with explained(cell, shot):
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


def expect_red_card(cell: Locator, loopback: LoopbackLLM) -> None:
    """A mistake before any call: one red card is the cell's only output, with no panel, no
    traceback and no request to the LLM server (reset before the run)."""
    from playwright.sync_api import expect

    # a template is read before the panel first shows: the card is the cell's only output
    expect(cell.locator(".jp-OutputArea-output")).to_have_count(1)
    expect(cell.locator(".ansi-red-bg")).to_contain_text("template error")
    output = cell.locator(".jp-OutputArea").inner_text()
    assert "Traceback" not in output and "UsageError" not in output
    expect(cell.locator(".kura-panel")).to_have_count(0)
    assert loopback.request_count == 0
