"""The running `authgate demo` and one headless browser, shared by each browser-demo module.

Module-scoped: each test module gets a demo run (a fresh in-memory store) of
its own; a module's own fixture of the same name takes precedence.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page

from tests.browser import chromium

STARTUP_TIMEOUT = 60.0


@dataclass(frozen=True)
class RunningDemo:
    url: str
    idp_url: str


def _wait_for_banner(proc: subprocess.Popen[bytes], log: Path) -> RunningDemo:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        app = re.search(r"^Open (http://\S+)/ — ", text, re.M)
        idp = re.search(r"development IdP:\s+(http://\S+)/ ", text)
        if app and idp:
            return RunningDemo(app.group(1), idp.group(1))
        if proc.poll() is not None:
            raise RuntimeError(f"authgate demo exited with {proc.returncode}:\n{text}")
        time.sleep(0.1)
    raise RuntimeError(f"authgate demo printed no URL in {STARTUP_TIMEOUT}s")


@pytest.fixture(scope="module")
def demo() -> Iterator[RunningDemo]:
    """`authgate demo --port 0` as a subprocess; its output goes to a file (never a full pipe)."""
    with tempfile.TemporaryDirectory(prefix="authgate-demo-test-") as tmp:
        log = Path(tmp) / "demo.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "authgate", "demo", "--port", "0"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            yield _wait_for_banner(proc, log)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def context() -> Iterator[BrowserContext]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    context.clear_cookies()
    tab = context.new_page()
    yield tab
    tab.close()
