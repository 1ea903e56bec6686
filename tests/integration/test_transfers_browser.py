"""The agent's status page in a real browser (headless Debian Chromium, real HTTP): it asks
for the token, follows the transfer live while the caller goes through the flow, and
holds no data of its own."""

from __future__ import annotations

import pytest
import requests

from tests.integration.conftest import CHROMIUM_ARGS, chromium
from tests.support.transfer import ACCOUNT, QUEUE, auth, follow, make_user, twilio

__all__ = ["twilio"]  # the autouse fixture, so pytest finds it here

SCREENSHOT = "/tmp/ivr-agent-transfer-page.png"

pytestmark = pytest.mark.browser



@pytest.fixture
def browser():
    path = chromium("the agent page browser test")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_the_agent_follows_a_transfer_live(live_app, caller, twilio, browser):
    _agent, token = make_user(live_app.app, "ayse", "agent")
    _other, other_token = make_user(live_app.app, "mehmet", "agent")
    c = caller(account_sid=ACCOUNT)
    twilio.calls[c.call_sid] = "in-progress"
    r = requests.post(f"{live_app.url}/api/transfers", timeout=30,
                      json={"call_sid": c.call_sid, "return_to": QUEUE},
                      headers=auth(token, "browser-1"))
    assert r.status_code == 201
    doc = r.json()

    page = browser.new_page()
    problems = []
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(live_app.url + doc["page_url"])

    # No token yet: the page asks for one; a wrong one is refused and forgotten.
    page.wait_for_selector("#token-form", state="visible")
    page.fill("#token", "ivr_wrong")
    page.click("#token-form button[type=submit]")
    page.wait_for_selector("#message:has-text('not accepted')")
    assert page.evaluate("sessionStorage.getItem('ivr.agentToken')") is None
    problems.clear()  # the browser logs the 401 itself

    # Another agent's token sees nothing.
    page.fill("#token", other_token)
    page.click("#token-form button[type=submit]")
    page.wait_for_selector("#message:has-text('no such transfer')")
    problems.clear()  # the browser logs the 404 itself

    page.fill("#token", token)
    page.click("#token-form button[type=submit]")
    page.wait_for_selector("#status[data-status=requested]")
    assert page.inner_text("#call_sid") == c.call_sid
    assert page.inner_text("#return_to") == "queue sales"
    assert page.get_attribute("li[data-step=requested]", "class") == "now"

    # The caller reaches the flow, then decides: the page follows by itself.
    first = follow(c, twilio.updates()[0].form["Url"])
    page.wait_for_selector("#status[data-status=in_flow]", timeout=15000)
    last = c.press(first, "1")
    assert last.end == "enqueue:sales"
    page.wait_for_selector("#status[data-status=returned]", timeout=15000)
    assert page.inner_text("#decision") == "granted"
    steps = page.eval_on_selector_all("ol.steps li", "els => els.map(e => e.className)")
    assert steps == ["done", "done", "done", "now"]
    assert page.inner_text("#returned_at") != "—"
    page.screenshot(path=SCREENSHOT, full_page=True)

    # The token lives in this tab only, and the page keeps working after a reload.
    page.reload()
    page.wait_for_selector("#status[data-status=returned]")
    assert page.is_hidden("#token-form")
    assert token not in page.content()
    assert problems == []
