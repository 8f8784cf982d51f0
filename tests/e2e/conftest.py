"""A real browser for the dashboard tests: Playwright for Python driving Debian's chromium
(Playwright's own browser download cannot work on these machines). Any JavaScript console
error or uncaught exception fails the test. Screenshots go to tests/e2e/artifacts/ (or
$MEMOROSE_E2E_ARTIFACTS)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("MEMOROSE_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("MEMOROSE_E2E_ARTIFACTS", Path(__file__).parent / "artifacts"))


@dataclass
class Tab:
    """A page plus everything it reported as an error."""

    page: object  # playwright.async_api.Page (typed loosely: playwright is a test-only dependency)
    errors: list[str] = field(default_factory=list)

    async def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await self.page.screenshot(path=str(path))  # type: ignore[attr-defined]
        return path


@pytest.fixture
async def tab() -> AsyncIterator[Tab]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (make test installs Debian's chromium when run as root)")
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(20_000)
        page = await context.new_page()
        tab = Tab(page)
        page.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: tab.errors.append(f"uncaught: {exc}"))
        try:
            yield tab
        finally:
            await browser.close()
    assert not tab.errors, f"JavaScript console errors: {tab.errors}"
