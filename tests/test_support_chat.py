"""The support chat page at /support in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``)."""

from __future__ import annotations

import base64
import re
import sqlite3
from collections.abc import Iterator

import pytest

from tests.browser import headless_chromium, require_browser
from tests.conftest import FAQ_ANSWERS
from tests.servers import KEY, running

FAQ_QUESTION = "Do you know what your exchange rates are?"

require_browser()  # skips this module where Chromium, chromedriver or selenium is missing
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with headless_chromium() as driver:
        yield driver


def _send(browser, text: str, count: int) -> object:
    """Type ``text``, press Enter, and return the ``count``-th assistant message once it is shown."""
    box = browser.find_element(By.ID, "question")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)
    WebDriverWait(browser, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".message.assistant")) == count)
    return browser.find_elements(By.CSS_SELECTOR, ".message.assistant")[-1]


def test_chat_shows_each_reply_with_its_decision(browser, assistant_bundle, exported, tmp_path) -> None:
    db = tmp_path / "chat.sqlite"
    with running([("tiny", exported), ("help", assistant_bundle)], support_db=db) as (url, _):
        browser.get(url + "/support")
        WebDriverWait(browser, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        assert [o.text for o in Select(browser.find_element(By.ID, "assistant")).options] == ["help"]  # not 'tiny'
        assert "10 intents" in browser.find_element(By.ID, "assistant-facts").text
        assert browser.find_element(By.ID, "conversation").text == "(new)"

        faq = _send(browser, FAQ_QUESTION, 1)
        assert faq.get_attribute("data-decision") == "faq"
        badge = faq.find_element(By.CSS_SELECTOR, ".badge.faq").text
        assert badge.startswith("faq · faq-") and re.search(r"similarity (0\.9\d|1\.00)$", badge), badge
        assert faq.find_element(By.CSS_SELECTOR, ".answer").text == FAQ_ANSWERS["exchange_rate"]
        steps = faq.find_elements(By.CSS_SELECTOR, "details.path li")
        assert not steps[0].is_displayed()  # the decision path starts folded
        faq.find_element(By.CSS_SELECTOR, "details.path summary").click()
        assert steps[0].is_displayed() and "intent exchange_rate" in steps[0].text
        assert browser.find_elements(By.CSS_SELECTOR, ".message.user")[0].text == FAQ_QUESTION
        conversation = browser.find_element(By.ID, "conversation").text
        assert len(conversation) == 32
        assert browser.find_element(By.ID, "question").get_attribute("value") == ""

        handoff = _send(browser, "I lost my card", 2)
        assert handoff.get_attribute("data-decision") == "handoff"
        assert handoff.find_element(By.CSS_SELECTOR, ".badge.handoff").text == "handoff · intent_requires_human"
        assert "person" in handoff.find_element(By.CSS_SELECTOR, ".answer").text
        assert browser.find_element(By.ID, "conversation").text == conversation  # the same conversation

        # A slot from the context box fills the template.
        browser.find_element(By.CSS_SELECTOR, "#context-box summary").click()
        browser.find_element(By.ID, "context").send_keys('{"name": "Ana"}')
        intent = _send(browser, "my new card has not arrived", 3)
        assert intent.find_element(By.CSS_SELECTOR, ".badge.intent").text == "intent · card_arrival"
        assert intent.find_element(By.CSS_SELECTOR, ".answer").text == "Cards arrive within 3-5 working days, Ana."
        browser.save_screenshot(str(tmp_path / "chat.png"))

        with sqlite3.connect(db) as con:
            stored = con.execute("SELECT conversation_id, decision FROM turns ORDER BY id").fetchall()
        assert stored == [(conversation, "faq"), (conversation, "handoff"), (conversation, "intent")]

        browser.find_element(By.ID, "new-conversation").click()
        assert browser.find_elements(By.CSS_SELECTOR, ".message") == []
        assert browser.find_element(By.ID, "conversation").text == "(new)"

        # The playground lists only the classifier and links to the chat.
        browser.get(url + "/")
        WebDriverWait(browser, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        assert [o.text for o in Select(browser.find_element(By.ID, "model")).options] == ["tiny"]
        link = browser.find_element(By.ID, "chat-link")
        assert link.is_displayed() and link.get_attribute("href") == url + "/support"


def test_chat_under_api_keys_works_once_the_browser_has_logged_in(browser, assistant_bundle, tmp_path) -> None:
    with running([("help", assistant_bundle)], support_db=tmp_path / "chat.sqlite", api_keys=(KEY,)) as (url, _):
        token = base64.b64encode(f"user:{KEY}".encode()).decode()
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
        try:
            browser.get(url + "/support")
            WebDriverWait(browser, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
            reply = _send(browser, "book me a flight to rome", 1)
            assert reply.find_element(By.CSS_SELECTOR, ".badge.handoff").text == "handoff · out_of_scope"
        finally:
            browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})
