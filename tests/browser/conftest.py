"""A real browser for the web page's tests: Debian's Chromium driven by Playwright (no browser download).

Each page records its console errors, uncaught exceptions and every request it makes, so a test can check
that the page stayed quiet and never left the service.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = ROOT / "docs" / "ui"
DESKTOP = {"width": 1360, "height": 860}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


@dataclass
class PageLog:
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.console_errors.append(f"uncaught: {e}"))
        page.on("request", lambda r: self.requests.append(r.url))

    def outside(self, origin: str) -> list[str]:
        """Requests to anything but the service itself (blob: and data: URLs are the page's own)."""
        return [u for u in self.requests if not u.startswith((origin + "/", "blob:", "data:"))]


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


def shot(page: Any, name: str, **options: Any) -> Path:
    """Save a screenshot of the page's state as docs/ui/<name>.jpg (JPEG keeps the committed files small)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.jpg"
    page.screenshot(path=str(path), type="jpeg", quality=85, **options)
    return path
