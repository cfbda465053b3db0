"""Helpers for the web page's tests: viewports, a page's log, screenshots (the browser fixture is in conftest.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from tests.helpers import ROOT

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


def shot(page: Any, name: str, **options: Any) -> bytes:
    """A JPEG screenshot of the page's state (JPEG keeps the committed files small). Saved as docs/ui/<name>.jpg,
    the README's pictures, only when ``HNDSR_UPDATE_SCREENSHOTS=1``: a test run leaves the committed files alone."""
    image = page.screenshot(type="jpeg", quality=85, **options)
    if os.environ.get("HNDSR_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (SCREENSHOTS / f"{name}.jpg").write_bytes(image)
    return image
