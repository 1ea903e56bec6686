"""The work queues, the agent desk and recordings in a real browser: headless Debian
Chromium over real HTTP, against the local Twilio and İYS stand-ins. What each page shows
is checked against the stored records, and every action against the audit log."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from ivr.storage.kvkk_models import SubjectRequest
from ivr.web.current import apply_record, spool
from tests.integration.conftest import CHROMIUM_ARGS, chromium
from tests.integration.test_agent_desk import users  # noqa: F401 - a fixture
from tests.integration.test_lifecycle_retention import backdate_call
from tests.integration.test_recordings_play import RSID, recorded_call
from tests.integration.test_work_queues import open_request
from tests.support.auditor import audit_bodies, make_user
from tests.support.lifecycle import add_consent, run_cli, session
from tests.support.transfer import ACCOUNT, follow, transfers, twilio

__all__ = ["twilio"]  # the autouse fixture, so pytest finds it here

pytestmark = pytest.mark.browser
NOW = datetime.now(UTC).replace(microsecond=0)
SHOTS = {"queues": "/tmp/ivr-work-queues.png", "desk": "/tmp/ivr-agent-desk.png",
         "call": "/tmp/ivr-call-recording.png", "transfer": "/tmp/ivr-desk-transfer-page.png"}


@pytest.fixture
def browser():
    path = chromium("the workspace browser test")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


def log_in(page, url: str, name: str, secret: str) -> None:
    page.goto(url)
    assert "/login?next=" in page.url
    page.fill("input[name=name]", name)
    page.fill("input[name=secret]", secret)
    page.click("button[type=submit]")


def watch(page) -> list[str]:
    problems: list[str] = []
    # The browser's own favicon request (there is none) is not the page's problem.
    page.on("console", lambda m: m.type == "error" and not m.location.get("url", "")
            .endswith("/favicon.ico") and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(str(e)))
    return problems


def test_an_auditor_works_the_queues_and_plays_a_recording(live_app, caller, twilio, browser):
    app = live_app.app
    secret = make_user(app, "selin", "auditor")
    add_consent(app, "+905320000001", "granted", NOW - timedelta(days=30), channels=["ARAMA"])
    add_consent(app, "+905320000002", "granted", NOW, channels=["ARAMA"])
    add_consent(app, "+905320000003", "declined", NOW - timedelta(days=30), channels=["ARAMA"])
    late = open_request(app, "+905320000004", 33)
    with app.app_context():
        spool().write({"kind": "telepathy", "received_at": NOW.isoformat(), "form": {}})
        [poisoned] = spool().drain(apply_record).quarantined
    old = recorded_call(caller, twilio, "RE" + "7" * 32, keys=["h"])
    backdate_call(app, old.call_sid, NOW - timedelta(days=3 * 365))
    run_cli(app, "retention", "run")
    c = recorded_call(caller, twilio)

    page = browser.new_page()
    problems = watch(page)
    log_in(page, f"{live_app.url}/auditor/", "selin", secret)
    page.click("nav a:has-text('Work queues')")
    assert page.url == f"{live_app.url}/auditor/queues"

    # İYS: the CLI's list, row for row; the overdue record in red, the skipped one explained.
    listed = json.loads(run_cli(app, "iys", "pending", "--json").output.split("WARNING")[0])
    rows = page.locator("#iys tr[data-consent]")
    shown = rows.evaluate_all("rs => rs.map(r => [r.dataset.consent, r.dataset.state, "
                              "r.dataset.action])")
    assert shown == [[str(x["consent_id"]), x["state"], x["action"]] for x in listed]
    overdue = page.locator("#iys tr[data-state=overdue] .overdue")
    assert overdue.count() == 1
    assert overdue.evaluate("e => getComputedStyle(e).color") == "rgb(179, 38, 30)"
    assert "H175" in page.locator("#iys tr[data-action=skipped] .reason").inner_text()
    deadline = page.locator("#iys tr[data-state=overdue] .deadline time")
    assert deadline.get_attribute("datetime")[:10] == listed[0]["deadline"][:10]
    # Subject requests: days left as stored.
    row = page.locator(f"#requests tr[data-request='{late}']")
    assert row.locator(".days-left").inner_text() == "3 day(s) overdue"
    # The retention run with its destruction log.
    [run] = audit_bodies(app, "retention.run")
    details = page.locator(f"details[data-run='{run['data']['run_id']}']")
    details.locator("summary").click()
    assert details.locator(f"text=recordings:RE{'7' * 32}").count() == 1
    page.set_viewport_size({"width": 1280, "height": 900})
    page.screenshot(path=SHOTS["queues"], full_page=True)

    # Close the request through its form; the audit log says who did it.
    row.locator("input[name=outcome]").fill("the report was sent by post")
    row.locator("button[type=submit]").click()
    due = (NOW - timedelta(days=33)).date() + timedelta(days=30)
    assert page.locator(".note.ok").inner_text() == \
        f"Request #{late} is closed. It was due on {due:%d.%m.%Y}."
    assert page.locator(f"#requests tr[data-request='{late}']").count() == 0
    s = session(app)
    assert s.get(SubjectRequest, late).status == "closed"
    s.close()
    # Discard the quarantined record.
    record = page.locator(f"#quarantine tr[data-record='{poisoned}']")
    record.locator("input[name=reason]").fill("an unknown kind from a test")
    record.locator("button.danger").click()
    assert page.locator("#quarantine").inner_text().count("No record is in quarantine.") == 1
    actions = [b["data"]["action"] for b in audit_bodies(app, "auditor.access")]
    assert "close.subject_request" in actions and "discard.spool_record" in actions

    # The call page: play the recording from start to end, through the server.
    page.goto(f"{live_app.url}/auditor/calls/{c.call_sid}")
    player = page.locator(f"audio[data-recording='{RSID}']")
    result = player.evaluate("""async a => {
        const ended = new Promise(r => a.addEventListener('ended', () => r('ended')));
        const failed = new Promise(r => a.addEventListener('error', () => r('error')));
        await a.play();
        return [await Promise.race([ended, failed]), a.duration];
    }""")
    assert result[0] == "ended" and abs(result[1] - 1.0) < 0.05, result
    media = [r for r in twilio.media_requests if r.path.endswith(f"{RSID}.wav")]
    played = [b["data"] for b in audit_bodies(app, "auditor.access")
              if b["data"]["action"] == "play.recording"]
    assert media and all(r.authorized for r in media)
    assert len(played) == len(media)  # one entry per fetch from Twilio: none unrecorded
    assert {(p["user"], p["call_sid"], p["recording_sid"]) for p in played} == {
        ("selin", c.call_sid, RSID)}
    page.screenshot(path=SHOTS["call"], full_page=True)
    # The destroyed recording says when and under which policy, with no player.
    page.goto(f"{live_app.url}/auditor/calls/{old.call_sid}")
    note = page.locator(f"#recordings tr[data-recording='RE{'7' * 32}']").inner_text()
    assert "under policy recording_metadata (730 days): retention period ended." in note
    assert page.locator("#recordings audio").count() == 0
    assert problems == []


def test_an_agent_starts_a_transfer_from_the_desk(live_app, caller, twilio, browser):
    app = live_app.app
    secret = make_user(app, "ayse", "agent")
    c = caller(account_sid=ACCOUNT)
    twilio.calls[c.call_sid] = "in-progress"

    page = browser.new_page()
    problems = watch(page)
    log_in(page, f"{live_app.url}/", "ayse", secret)
    assert page.url == f"{live_app.url}/agent/"
    assert page.locator("#transfers .none").inner_text() == "No transfers yet."

    page.fill("input[name=call_sid]", c.call_sid)
    page.check("input[name=return_type][value=queue]")
    page.fill("input[name=queue]", "sales")
    page.select_option("select[name=language]", "en")
    page.click("#transfer-form button[type=submit]")
    assert page.url == f"{live_app.url}/agent/"
    assert page.locator(".note.ok").inner_text() == f"The transfer of {c.call_sid} has started."
    [t] = transfers(app)
    assert (t.call_sid, t.return_to, t.language, t.agent_name) == (
        c.call_sid, {"type": "queue", "name": "sales"}, "en", "ayse")
    row = page.locator(f"tr[data-transfer='{t.id}']")
    assert row.get_attribute("data-status") == "requested"
    assert row.locator(".sid").inner_text() == c.call_sid

    # The caller reaches the flow and decides: the desk follows by itself.
    first = follow(c, twilio.updates()[0].form["Url"])
    page.wait_for_selector(f"tr[data-transfer='{t.id}'][data-status=in_flow]", timeout=15000)
    assert c.press(first, "1").end == "enqueue:sales"
    page.wait_for_selector(f"tr[data-transfer='{t.id}'][data-status=returned]", timeout=15000)
    assert page.locator(f"tr[data-transfer='{t.id}'] .decision").inner_text() == "granted"
    page.set_viewport_size({"width": 1280, "height": 900})
    page.screenshot(path=SHOTS["desk"], full_page=True)

    # The transfer's own page uses the session: no token asked for.
    page.click(f"tr[data-transfer='{t.id}'] a:has-text('Details')")
    page.wait_for_selector("#status[data-status=returned]")
    assert page.is_hidden("#token-form")
    assert page.inner_text("#decision") == "granted"
    page.screenshot(path=SHOTS["transfer"], full_page=True)

    # A page for another role explains itself and leads home, never back to itself.
    page.goto(f"{live_app.url}/auditor/queues")
    assert "Your account has the agent role." in page.inner_text("#forbidden")
    page.click("#home")
    assert page.url == f"{live_app.url}/agent/"
    problems = [p for p in problems if "403" not in p]  # the browser logs the 403 itself
    assert problems == []
