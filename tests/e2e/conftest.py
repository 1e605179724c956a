"""Fixtures of the browser tests: the loopback LLM and Chromium, one of each per test module,
and pages opened in that browser, closed after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from jupyter_e2e import CHROMIUM_ARGS, chromium

from kura_magic.testing import LoopbackLLM

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


@pytest.fixture(scope="module")
def loopback() -> Iterator[LoopbackLLM]:
    with LoopbackLLM() as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium()  # skip (or fail) when it or Playwright is missing
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)  # a loaded 2-core CI machine is slow
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[[str], Page]]:
    """A function that opens a URL in a new page the size of a laptop screen."""
    pages: list[Page] = []

    def opener(url: str) -> Page:
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        pages.append(page)
        page.set_default_timeout(60_000)
        page.goto(url)
        return page

    yield opener
    for page in pages:
        page.close()
