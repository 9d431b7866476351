"""Playwright's sync API driving Debian's chromium (the system browser; ``playwright install`` is never run).

Create database rows before opening the browser: Playwright's sync API runs an event loop in the
test's thread, and Django refuses ORM calls from a thread with a running loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.urls import reverse
from playwright.sync_api import Page, sync_playwright

from tests.conftest import require_browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 812}
TIMEOUT_MS = 15_000


@contextmanager
def browser_page(*, phone: bool = False, locale: str = "zh-CN") -> Iterator[Page]:
    """A fresh page in a fresh browser, at phone (375×812, touch) or desktop size."""
    executable = require_browser()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(
                viewport=PHONE if phone else DESKTOP,
                device_scale_factor=2 if phone else 1,
                is_mobile=phone,
                has_touch=phone,
                locale=locale,
                timezone_id="Asia/Shanghai",
            )
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def log_in(page: Page, base_url: str, username: str, password: str) -> None:
    """Sign in through the login page, as a person would, and wait for the page it leads to."""
    login = reverse("login")
    page.goto(base_url + login)
    form = page.locator(f"form[action='{login}']")
    form.locator("input[name=username]").fill(username)
    form.locator("input[name=password]").fill(password)
    with page.expect_navigation():
        form.locator("button[type=submit]").click()


def screenshot(page: Page, name: str) -> Path:
    """Keep a full-page screenshot under ``artifacts/`` (git-ignored), to look at after the run."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def horizontal_overflow(page: Page) -> int:
    """Pixels the page is wider than its viewport; 0 means nothing forces sideways scrolling."""
    return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))
