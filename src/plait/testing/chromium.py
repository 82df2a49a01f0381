"""Headless Chromium (Debian's /usr/bin/chromium) driven by Playwright for Python, for tests of pages plait
serves (the dashboard). In: the page's origin (``http://127.0.0.1:PORT``). Out: a Playwright page whose
console errors, page errors and requests to any other origin are recorded (`problems`): a test asserts
there are none. Requests elsewhere are aborted, so nothing leaves the machine."""

from __future__ import annotations

import shutil
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def chromium_path() -> str | None:
    """Debian's Chromium, if installed (``apt-get install chromium``)."""
    return CHROMIUM if shutil.which(CHROMIUM) else None


@dataclass
class Watched:
    page: Any  # playwright.sync_api.Page
    origin: str
    problems: list[str] = field(default_factory=list)


@contextmanager
def chromium_page(origin: str, width: int = 1400, height: int = 1000) -> Iterator[Watched]:
    """A fresh page in headless Chromium that may only reach `origin`."""
    from playwright.sync_api import sync_playwright  # the test extra; imported only by browser tests

    allowed = urllib.parse.urlsplit(origin)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            watched = Watched(page, origin)

            def guard(route) -> None:
                url = urllib.parse.urlsplit(route.request.url)
                if url.scheme in ("data", "blob") or (url.scheme, url.netloc) == (allowed.scheme, allowed.netloc):
                    route.continue_()
                else:
                    watched.problems.append(f"request to another origin: {route.request.url}")
                    route.abort()

            page.route("**/*", guard)
            page.on("console", lambda m: m.type == "error" and watched.problems.append(f"console: {m.text}"))
            page.on("pageerror", lambda e: watched.problems.append(f"page error: {e}"))
            yield watched
        finally:
            browser.close()
