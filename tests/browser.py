"""Debian's headless Chromium through Selenium, for the page tests (skipped where it is not installed)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,900")


def require_browser():
    """Skip the calling test module unless Chromium, chromedriver and selenium are there; selenium's webdriver."""
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver; .ci/run does it)",
                    allow_module_level=True)  # fmt: skip
    return pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")


@contextlib.contextmanager
def headless_chromium() -> Iterator[object]:
    """A headless Chromium driven by chromedriver, quit afterwards."""
    webdriver = require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
