"""The web chat in a real browser: Debian's headless Chromium driven by Selenium through Debian's chromedriver,
against a live `medtune serve` of the embedded model (with an API key, so the key field is exercised).

The page loads offline, shows the not-medical-advice banner and the model card, streams a reply, stops one, honours
the max-token setting, and shows HTML in a message or a reply (`<img onerror>`, `<script>`) as text that runs nothing.
Set MEDTUNE_SCREENSHOT to a path to keep a screenshot (docs/serve-webchat.png is made that way)."""

import os
import shutil

import pytest

from medtune import NOT_MEDICAL_ADVICE, models
from serving import start, wait_until

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", "--window-size=1000,900"]
KEY = "browser-key"
INJECTION = '<img src=x onerror="window.__pwned = 1">'


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    try:
        models.default_model_path()
    except Exception as exc:
        pytest.skip(f"embedded default model unavailable: {exc}")
    server = start("default", "--api-key", KEY, "--max-tokens", "256", log_dir=tmp_path_factory.mktemp("log"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip("Debian's chromium and chromium-driver are not installed (`make test` installs them with apt-get "
                    "where it can: apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def by_css(driver, css):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def wait_for(driver, condition, what, limit_s=600):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, limit_s, poll_frequency=0.1).until(lambda d: condition(d))
    except Exception:
        raise AssertionError(f"gave up waiting for: {what}") from None


def send(driver, text):
    box = by_css(driver, "#prompt")[0]
    box.clear()
    box.send_keys(text)
    by_css(driver, "#send")[0].click()


def last_reply(driver, n):
    """Wait for the n-th assistant message to finish; returns (element, finish)."""
    wait_for(driver, lambda d: len(by_css(d, ".msg.assistant[data-finish]")) >= n, f"reply {n} to finish")
    box = by_css(driver, ".msg.assistant")[n - 1]
    return box, box.get_attribute("data-finish")


def test_web_chat_in_headless_chromium(live, browser, tmp_path):
    d = browser
    d.get(live.url + "/")
    # the banner shows before anything else, with the notice; the key field shows because the server has a key
    notice = by_css(d, "#notice")[0]
    assert notice.is_displayed() and NOT_MEDICAL_ADVICE in notice.text
    wait_for(d, lambda d: by_css(d, "#auth")[0].is_displayed(), "the API-key field")
    assert "API key" in by_css(d, "#status")[0].text
    by_css(d, "#api-key")[0].send_keys(KEY)
    by_css(d, "#use-key")[0].click()
    wait_for(d, lambda d: by_css(d, "#card .model-id"), "the model card")
    card = by_css(d, "#card")[0].text
    assert models.DEFAULT_NAME in card and "base" in card

    # a message streams a reply: the reply's text changes several times before it finishes
    d.execute_script("""
        window.__updates = 0;
        new MutationObserver(() => { window.__updates += 1; })
          .observe(document.getElementById('log'), {subtree: true, characterData: true, childList: true});""")
    by_css(d, "#temperature")[0].clear()
    by_css(d, "#temperature")[0].send_keys("0")
    send(d, "In one sentence: what organ pumps blood? " + INJECTION)
    reply, finish = last_reply(d, 1)
    assert finish == "stop" and "heart" in reply.find_element("css selector", ".text").text.lower()
    assert d.execute_script("return window.__updates") > 5
    user = by_css(d, ".msg.user .text")[0]
    assert INJECTION in user.text  # the user's HTML is shown as characters
    if os.environ.get("MEDTUNE_SCREENSHOT"):
        d.save_screenshot(os.environ["MEDTUNE_SCREENSHOT"])
    d.save_screenshot(str(tmp_path / "webchat.png"))

    # the max-token setting is sent: 3 tokens cut the reply
    by_css(d, "#max-tokens")[0].clear()
    by_css(d, "#max-tokens")[0].send_keys("3")
    send(d, "List ten organs of the body.")
    reply, finish = last_reply(d, 2)
    assert finish == "length" and "token limit" in reply.text

    # the stop button ends a long reply, and the server frees its slot
    by_css(d, "#max-tokens")[0].clear()
    by_css(d, "#max-tokens")[0].send_keys("256")
    cancelled = live.health()["cancelled"]
    send(d, "Write a long essay about the history of medicine.")
    wait_for(d, lambda d: len(by_css(d, ".msg.assistant")) == 3 and by_css(d, ".msg.assistant")[2].text.count(" ") > 3,
             "the third reply to start")
    by_css(d, "#stop")[0].click()
    reply, finish = last_reply(d, 3)
    assert finish == "stopped" and "(stopped)" in reply.text
    wait_until(lambda: live.health()["cancelled"] == cancelled + 1 and live.health()["running"] == 0,
               "the server to cancel the stopped reply")

    # a hostile reply (the page's fetch answers with HTML in the stream) is shown as text and runs nothing
    d.execute_script("""
        const hostile = ['<img src=x onerror="window.__pwned = 2">', '<script>window.__pwned = 3</script>', ' done'];
        window.fetch = async (url, init) => {
          const events = [{choices: [{index: 0, delta: {role: 'assistant', content: ''}, finish_reason: null}]}]
            .concat(hostile.map((c) => ({choices: [{index: 0, delta: {content: c}, finish_reason: null}]})))
            .concat([{choices: [{index: 0, delta: {}, finish_reason: 'stop'}]}]);
          const body = events.map((e) => 'data: ' + JSON.stringify(e) + '\\n\\n').join('') + 'data: [DONE]\\n\\n';
          return new Response(body, {status: 200, headers: {'Content-Type': 'text/event-stream'}});
        };""")
    send(d, "anything")
    reply, finish = last_reply(d, 4)
    shown = reply.find_element("css selector", ".text").text
    assert shown == '<img src=x onerror="window.__pwned = 2"><script>window.__pwned = 3</script> done'
    assert by_css(d, "#log img") == [] and by_css(d, "#log script") == []
    assert d.execute_script("return window.__pwned === undefined")
