"""A real browser for the web page's tests: Debian's Chromium driven by Playwright (no browser download).

Each page records its console errors, uncaught exceptions and every request it makes (``helpers.PageLog``),
so a test can check that the page stayed quiet and never left the service.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


# Per module, not per session: Playwright's sync API keeps an asyncio loop running in the main thread while
# it is open, and later tests that call asyncio.run() (the rate limiter's) must not find one.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
