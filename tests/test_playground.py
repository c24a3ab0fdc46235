"""The playground page at / in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest

from tests.browser import headless_chromium, require_browser
from tests.servers import KEY, running

TEXT = "I still have not received my new card, it has been two weeks"

require_browser()  # skips this module where Chromium, chromedriver or selenium is missing
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with headless_chromium() as driver:
        yield driver


def test_playground_predicts_and_draws_probability_bars(browser, exported, tmp_path) -> None:
    with running([("tiny", exported), ("second", exported)]) as (url, _):
        expected = httpx.post(f"{url}/v1/models/second/predict", json={"text": TEXT, "top_k": 5}).json()
        browser.get(url + "/")
        wait = WebDriverWait(browser, 20)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
        models = Select(browser.find_element(By.ID, "model"))
        assert [o.text for o in models.options] == ["tiny", "second"]
        models.select_by_visible_text("second")
        assert "10 labels" in browser.find_element(By.ID, "model-facts").text
        browser.find_element(By.ID, "text").send_keys(TEXT)
        browser.find_element(By.ID, "predict").click()
        wait.until(ec.visibility_of_element_located((By.ID, "result")))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 5)
        top = expected["predictions"][0]
        assert browser.find_element(By.ID, "label").text == top["label"]
        bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
        assert [b.get_attribute("data-label") for b in bars] == [t["label"] for t in top["top_k"]]
        widths = [b.find_element(By.CSS_SELECTOR, ".bar-fill").size["width"] for b in bars]
        assert widths == sorted(widths, reverse=True) and widths[0] > 0
        assert "ms" in browser.find_element(By.ID, "latency").text
        browser.save_screenshot(str(tmp_path / "playground.png"))

        # Empty text: the page says so and sends nothing.
        browser.find_element(By.ID, "text").clear()
        browser.find_element(By.ID, "predict").click()
        error = wait.until(ec.visibility_of_element_located((By.ID, "error")))
        assert "Type a text" in error.text


def test_playground_under_api_keys_works_once_the_browser_has_logged_in(browser, exported) -> None:
    with running([("tiny", exported)], api_keys=(KEY,)) as (url, _):
        assert httpx.get(url + "/").status_code == 401  # without the key the page itself is refused
        # What the browser's Basic-auth prompt leads to: every later request of the page carries the key.
        token = base64.b64encode(f"user:{KEY}".encode()).decode()
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
        try:
            browser.get(url + "/")
            wait = WebDriverWait(browser, 20)
            wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
            assert [o.text for o in Select(browser.find_element(By.ID, "model")).options] == ["tiny"]
            browser.find_element(By.ID, "text").send_keys("how do I change my PIN?")
            browser.find_element(By.ID, "predict").click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 5)
        finally:
            browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})


def test_openapi_docs_render_offline(browser, exported) -> None:
    with running([("tiny", exported)]) as (url, _):
        browser.get(url + "/docs")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
        paths = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")]
        assert "/v1/models/{name}/predict" in [p.replace("\u200b", "") for p in paths]
