"""One server stack and one Chromium per test module (Debian's ``chromium`` package,
driven by Playwright). Without the browser the tests fail: ``make test`` installs it
(``scripts/test-browser.sh``)."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .stack import API_TOKEN, Stack

CHROMIUM = Path(os.environ.get("CALLBRIDGE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
SCREENSHOTS = os.environ.get("DASHBOARD_SCREENSHOTS")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="cb-dash-") as data:
        served = Stack(Path(data))
        served.start()
        try:
            yield served
        finally:
            served.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A fresh profile per launch (Playwright's own temporary user-data-dir)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/test-browser.sh (make test does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - a dev dependency
        pytest.fail(f"playwright is not installed ({exc}): pip install -e '.[dev]'")
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)  # a shared 2-core machine: generous, never slept
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield launched
        finally:
            launched.close()


def log_in(page: object, base_url: str, token: str = API_TOKEN) -> None:
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    page.goto(base_url + "/dashboard/login")
    page.get_by_label(re.compile("API token")).fill(token)
    page.get_by_role("button", name="Log in").click()


def screenshot_dir(tmp_path: Path) -> Path:
    """``DASHBOARD_SCREENSHOTS=docs/dashboard`` (``make screenshots``) keeps them."""
    path = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    path.mkdir(parents=True, exist_ok=True)
    return path
