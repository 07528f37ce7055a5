"""Playwright (Python) driving Debian's chromium against pytest-django's live server.

Never downloads a browser: it launches ``/usr/bin/chromium`` (``.ci/browser.sh`` installs it with apt-get) and
skips cleanly when it is absent. Screenshots of every page, at desktop and phone widths, go to
``var/screenshots/`` for CI to keep as artifacts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from accounts.models import Role
from tests.factories import add_member, make_project, make_user

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
SCREENSHOTS = Path(settings.BASE_DIR) / "var" / "screenshots"
PASSWORD = "browser-pass-1"
# Playwright's own waits; htmx polls every DASHBOARD_POLL_SECONDS (set to 1 below).
TIMEOUT_MS = 30_000


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if CHROMIUM.exists():
        return
    skip = pytest.mark.skip(reason=f"{CHROMIUM} is absent (CI installs it with .ci/browser.sh)")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are still synchronous.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live_server, settings) -> Iterator[object]:
    settings.DASHBOARD_POLL_SECONDS = 1
    context = browser.new_context(viewport=DESKTOP, base_url=live_server.url)
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    yield tab
    context.close()


@pytest.fixture
def project(transactional_db):
    return make_project("alpha")


@pytest.fixture
def operator(project):
    user = make_user("olivia", password=PASSWORD)
    add_member(user, project, Role.OPERATOR)
    return user


def sign_in(page, username: str, password: str = PASSWORD) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")


def screenshot(page, name: str) -> None:
    """Save the page at 1280 px and at phone width, and check the phone view does not scroll sideways."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-1280.png"), full_page=True)
    page.set_viewport_size(PHONE)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    page.screenshot(path=str(SCREENSHOTS / f"{name}-phone.png"), full_page=True)
    page.set_viewport_size(DESKTOP)
    assert overflow <= 0, f"{name}: the page is {overflow}px wider than a phone screen"
