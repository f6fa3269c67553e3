"""Headless Chromium for the browser tests, driven by Selenium, and what is kept when one fails.

The system's Chromium and chromedriver are used (Debian's `chromium` and
`chromium-driver`; .ci/run installs them); Selenium Manager is never asked
to find or download anything. Without them the tests are skipped, saying so.

The window is 1400×1000, the size staff use the admin at, with its
navigation sidebar open (the admin's default at that width).

`browser.snap(name)` keeps a screenshot and the HTML of the page; after each
test, pass or fail, every kept page and the last one are written to
test-artifacts/browser/<test name>/ (not committed), for a reviewer to look at.
"""

import os
import re
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_PATH", "/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # Keep each phase's report on the test, so the browser fixture can tell
    # in its teardown whether the test failed.
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


class Browser:
    """A Selenium driver plus the pages seen so far, for the artifacts of a failure."""

    def __init__(self, driver, base_url: str):
        self.driver = driver
        self.base_url = base_url
        self.pages: list[tuple[str, bytes, str]] = []

    def visit(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def snap(self, name: str) -> None:
        self.pages.append((name, self.driver.get_screenshot_as_png(), self.driver.page_source))

    def keep_artifacts(self, test_name: str, *, failed: bool) -> Path:
        folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        last = "at-failure" if failed else "at-end"
        try:
            self.snap(last)
        except Exception as exc:  # the browser itself may be what failed
            (folder / f"{last}.txt").write_text(f"No screenshot of the last page: {exc}\n")
        for number, (name, png, html) in enumerate(self.pages, start=1):
            (folder / f"{number:02d}-{name}.png").write_bytes(png)
            (folder / f"{number:02d}-{name}.html").write_text(html)
        return folder


@pytest.fixture
def browser(request, live_server, tmp_path_factory):
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip(
            f"needs Chromium at {CHROMIUM} and chromedriver at {CHROMEDRIVER} "
            "(apt-get install chromium chromium-driver; .ci/run does)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    session = Browser(driver, live_server.url)
    try:
        yield session
    finally:
        failed = any(
            getattr(request.node, f"report_{when}", None) is not None and getattr(request.node, f"report_{when}").failed
            for when in ("setup", "call")
        )
        folder = session.keep_artifacts(request.node.name, failed=failed)
        print(f"browser pages kept in {folder}")
        driver.quit()
