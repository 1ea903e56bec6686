"""The workspace in a real browser: headless Debian Chromium over real HTTP.

Log in, search by phone number, open a call, and check the timeline (Istanbul time, UTC
on hover) and the <audio> players, which must load the very files the caller heard.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import requests

from tests.support.auditor import audio_dir, audit_bodies, make_user, rendered_audio

from .conftest import CHROMIUM_ARGS, chromium

__all__ = ["audio_dir", "rendered_audio"]  # fixtures, so pytest finds them

SCREENSHOT = "/tmp/ivr-auditor-call-page.png"
SEARCH_SCREENSHOT = "/tmp/ivr-auditor-search.png"
ISTANBUL = ZoneInfo("Europe/Istanbul")

pytestmark = pytest.mark.browser


@pytest.fixture
def chromium_path() -> str:
    return chromium("the auditor browser test")


@pytest.fixture
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_auditor_logs_in_searches_and_reads_a_call(live_app, caller, browser):
    secret = make_user(live_app.app, "selin", "auditor")
    granted = caller(from_number="+905321234567")
    granted.run(["1"])
    caller(from_number="+905339876543").run(["2"])
    sid = granted.call_sid

    page = browser.new_page()
    page.goto(f"{live_app.url}/auditor/")
    assert page.url.startswith(f"{live_app.url}/login?next=")
    page.fill("input[name=name]", "selin")
    page.fill("input[name=secret]", "ivr_wrong")
    page.click("button[type=submit]")
    assert "Wrong name or secret" in page.inner_text("main")
    page.fill("input[name=secret]", secret)
    page.click("button[type=submit]")
    assert page.url == f"{live_app.url}/auditor/"

    # Dates are typed and shown as 30.11.2026, as the tables write them.
    today = datetime.now(ISTANBUL).strftime("%d.%m.%Y")
    for name in ("since", "until"):
        field = page.locator(f"input[name={name}]")
        assert field.get_attribute("type") == "text"
        assert field.get_attribute("placeholder") == "30.11.2026"
        field.fill(today)
    page.fill("input[name=phone]", "0532 123 45 67")
    page.click("#search button[type=submit]")
    assert page.locator("#search input[name=since]").input_value() == today
    assert "since=" + today in page.url
    page.screenshot(path=SEARCH_SCREENSHOT, full_page=True)
    links = page.locator("table.results a.sid")
    assert links.count() == 1 and links.first.inner_text() == sid
    assert page.locator("table.results .decision").first.inner_text() == "granted"
    links.first.click()
    assert page.url == f"{live_app.url}/auditor/calls/{sid}"

    # The timeline: every entry of the call, in order, with Istanbul time and UTC on hover.
    events = page.locator("li.event")
    kinds = events.evaluate_all("els => els.map(e => e.dataset.kind)")
    assert kinds[0] == "call.started" and "consent.decided" in kinds
    assert "input.received" in kinds and "notice.played" in kinds
    assert page.locator("li.event.ev-keys").first.inner_text().count("Key pressed: 1") == 1
    first_time = page.locator("li.event .when time").first
    utc = datetime.fromisoformat(first_time.get_attribute("datetime").replace("Z", "+00:00"))
    assert first_time.get_attribute("title") == "UTC " + first_time.get_attribute("datetime")
    assert first_time.inner_text() == utc.astimezone(ISTANBUL).strftime("%d.%m.%Y %H:%M:%S")
    first_time.hover()
    assert "verified" in page.locator("#chain .verified").first.inner_text().lower()

    # The players: one per prompt that had a file, each loading exactly the recorded bytes.
    recorded = {p["prompt"]: p["audio"] for b in audit_bodies(live_app.app, "prompts.played")
                if b["ref"] == sid for p in b["data"]["played"]}
    players = page.locator("li.event audio")
    assert players.count() == 4
    for i in range(players.count()):
        player = players.nth(i)
        prompt = player.evaluate("a => a.closest('[data-prompt]').dataset.prompt")
        assert player.get_attribute("data-sha256") == recorded[prompt]
        # Fetch the player's file whole and let Chromium decode it. (Letting the element
        # stream it makes Chromium abort range requests mid-file, which the test server's
        # werkzeug does not tidy up after; and the CSP rightly refuses blob: media.)
        assert player.evaluate("a => a.canPlayType('audio/wav')") != ""
        duration = player.evaluate("""async a => {
            const bytes = await (await fetch(a.src)).arrayBuffer();
            const ctx = new OfflineAudioContext(1, 8000, 8000);
            try { return (await ctx.decodeAudioData(bytes)).duration; }
            catch (e) { return String(e); }
        }""")
        assert isinstance(duration, float) and duration > 0.5, f"{prompt}: {duration}"
        # One name for the file: the player's URL is the SHA-256 the page shows and the
        # audit log records, and the bytes served hash to it.
        src = player.evaluate("a => a.src")
        assert src == f"{live_app.url}/auditor/audio/{recorded[prompt]}.wav"
        shown = player.evaluate("a => a.closest('[data-prompt]').innerText")
        assert f"audio sha256 {recorded[prompt]}" in shown
        assert hashlib.sha256(page.request.get(src).body()).hexdigest() == recorded[prompt]
        assert requests.get(src, timeout=10, allow_redirects=False).status_code in (302, 401)
    spoken = page.locator("[data-prompt=notice_body]")
    assert spoken.locator("audio").count() == 0 and "<Say>" in spoken.inner_text()

    page.set_viewport_size({"width": 1280, "height": 900})
    page.screenshot(path=SCREENSHOT, full_page=True)
    page.close()

    # Both views were recorded as auditor access.
    actions = [e["data"]["action"] for e in audit_bodies(live_app.app, "auditor.access")]
    assert actions == ["view.search", "view.call"]
