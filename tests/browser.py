"""Headless Chromium (Debian's package) driven by Playwright, for the browser tests.

Every page a person meets in these tests is saved under test-artifacts/screenshots/.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from playwright import async_api, sync_api

from tests.servers import require_binary

SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[sync_api.BrowserContext]:
    """One browser with a throwaway profile, for tests that drive it synchronously."""
    with (
        tempfile.TemporaryDirectory(prefix="authgate-chromium-") as profile,
        sync_api.sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=require_binary("chromium"), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@asynccontextmanager
async def async_chromium() -> AsyncIterator[async_api.BrowserContext]:
    """The same browser for async tests, which share their event loop with the servers."""
    with tempfile.TemporaryDirectory(prefix="authgate-chromium-") as profile:
        async with async_api.async_playwright() as playwright:
            browser = await playwright.chromium.launch_persistent_context(
                profile,
                executable_path=require_binary("chromium"),
                headless=True,
                args=CHROMIUM_ARGS,
            )
            yield browser
            await browser.close()


def screenshot_path(name: str) -> str:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return str(SCREENSHOTS / f"{name}.png")


def shot(page: sync_api.Page, name: str) -> None:
    page.screenshot(path=screenshot_path(name), full_page=True)
