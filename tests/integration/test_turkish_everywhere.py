"""Every page, in every state, reads in Turkish: a test that cannot be fooled.

A world is built through the public interfaces (signed webhooks, the API, the CLI) that
reaches every İYS queue reason, every call status, a transfer, a recording, a destruction
run, a failed push, an open subject request and a quarantined webhook. Then every auditor
and agent page is rendered for a user who chose no language, and the test fails on

- a message looked up that the Turkish catalogue does not hold (every gettext is watched),
- a visible English word from ENGLISH below (text outside <code>, <kbd>, <pre> and
  elements marked translate="no" or with another lang: identifiers and what a caller heard
  in English), and
- any 5xx, in either language.

A Turkish screenshot of each page is kept in docs/screenshots/ (taken in Chromium).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import babel.support
import pytest

from tests.support.auditor import (
    audio_dir,
    csrf_token,
    login,
    make_user,
    parse_html,
    rendered_audio,
)
from tests.support.fake_iys import FakeIys
from tests.support.lifecycle import add_consent, run_cli
from tests.support.transfer import ACCOUNT, QUEUE, follow, post_transfer, twilio

from .conftest import CHROMIUM_ARGS, chromium
from .test_work_queues import open_request, quarantine

__all__ = ["audio_dir", "rendered_audio", "twilio"]  # fixtures

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
NOW = datetime.now(UTC).replace(microsecond=0)
IYS_TOKEN = "iys-test-token"

# English words a Turkish page must not show (lower case). Words that are also Turkish
# ("an", "at", "on", "ara", "son", ...) are left out on purpose; names (Twilio, İYS, KVKK)
# and the İYS vocabulary (ONAY, RET, ARAMA, MESAJ, EPOSTA) are Turkish pages' own words.
ENGLISH = set("""
the and of to for is are was were be been with without not none yes this that which
when where what who why how from into than then there their its it's has have had if else
only must can cannot could should would will already never ever every each all any some
call calls caller called status completed inbound outbound transfer transfers transferred
marketing both none inprogress in-progress progress busy canceled cancelled ringing
answered queued queue dial hangup hang hung up key keys press pressed valid invalid input
no_input granted declined withdrawn consent consents decision decided requested returned
failed failure error errors reached unreachable connection connectionerror timeout
recording recordings started starts stopped paused absent processing track tracks mono
dual outcome outcomes per day days week weeks month chart view export exports search
superseded skipped unchanged later first recipient type holds registered refused repeated
nothing new batch older sent ended already notice question goodbye menu play played
agent agents name names must queue started answered seconds second duration percent
flow version versions diagram node nodes label labels next default yet here
""".split())
WORD = re.compile(r"\w+(?:-\w+)*")
SKIP_TAGS = {"code", "kbd", "pre", "samp", "script", "style", "template"}


@pytest.fixture
def app_config(app_config, tmp_path):
    app_config["IYS_TOKEN"] = IYS_TOKEN
    app_config["IYS_OUT_DIR"] = str(tmp_path / "iys-out")
    return app_config


@pytest.fixture
def fake_iys():
    server = FakeIys(IYS_TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def misses(monkeypatch):
    """Every msgid looked up in the Turkish catalogue and not found there."""
    found: set[str] = set()
    plain, plural = babel.support.Translations.ugettext, babel.support.Translations.ungettext

    def turkish(t) -> bool:
        return any("/tr/" in str(f) for f in getattr(t, "files", []))

    def ugettext(self, message):
        if turkish(self) and message not in self._catalog:
            found.add(message)
        return plain(self, message)

    def ungettext(self, singular, plural_, n):
        if turkish(self) and (singular, 0) not in self._catalog:
            found.add(singular)
        return plural(self, singular, plural_, n)

    monkeypatch.setattr(babel.support.Translations, "ugettext", ugettext)
    monkeypatch.setattr(babel.support.Translations, "ungettext", ungettext)
    return found


def visible_words(html: str) -> list[str]:
    """The words a reader sees (and placeholders and labels a screen reader says), outside
    identifiers and text in another language."""
    out: list[str] = []

    def walk(node, skip: bool):
        skip = skip or node.tag in SKIP_TAGS or node.get("translate") == "no" or (
            node.get("lang") not in (None, "tr") and node.tag != "html")
        if not skip:
            for attr in ("placeholder", "aria-label", "alt"):
                if node.get(attr):
                    out.extend(WORD.findall(node.get(attr)))
        for part in node.parts:
            if isinstance(part, str):
                if not skip:
                    out.extend(WORD.findall(part))
            else:
                walk(part, skip)

    walk(parse_html(html), False)
    return out


def english_in(html: str) -> list[str]:
    """ENGLISH words among the visible ones. A token with a digit (a CallSid, a hash, a
    time) or in snake_case (a prompt or node id in the flow diagram) is an identifier."""
    words = set()
    for w in visible_words(html):
        if any(ch.isdigit() for ch in w) or "_" in w:
            continue
        low = w.lower()
        parts = [low, *low.split("-")]
        if any(p in ENGLISH for p in parts):
            words.add(w)
    return sorted(words)


def build_world(app, http_caller, client, twilio, fake_iys) -> dict:
    """Calls, a transfer, recordings, every call status, İYS reasons, a failed push, a
    destruction run, an open request and a quarantined webhook. Returns the pages' ids."""
    ids: dict = {}
    # Calls through signed webhooks: consent (with a recording), decline, English, no input.
    c = http_caller(from_number="+905320000011")
    c.run(["1"])
    ids["granted"] = c.call_sid
    http_caller(from_number="+905320000012").run(["2"])
    http_caller(from_number="+905320000013").run(["0", "1"])
    http_caller(from_number="+905320000014").run(["t", "t", "t"])
    w = http_caller(from_number="+905320000011")  # the consenter again: withdraws
    w.run(["3"])
    ids["withdrawn"] = w.call_sid
    # Every call status Twilio sends.
    for status in ("ringing", "in-progress", "busy", "no-answer", "failed", "canceled"):
        s = http_caller(from_number="+905320000020")
        s.dial()
        s.status(status)
        ids[f"status-{status}"] = s.call_sid
    # A transfer: agent deniz sends a live call into the flow; it comes back to a queue.
    agent = make_user(app, "deniz", "agent", language=None)
    t = http_caller(account_sid=ACCOUNT, from_number="+905320000030")
    twilio.calls[t.call_sid] = "in-progress"
    status, doc, _ = post_transfer(client, agent, "world-1", {"call_sid": t.call_sid,
                                                               "return_to": QUEUE})
    assert status == 201, doc
    turn = follow(t, twilio.updates()[0].form["Url"])
    t.press(turn, "1")
    t.hang_up()
    ids["transfer"], ids["transferred"] = doc["id"], t.call_sid
    # A failed transfer: the call has ended.
    twilio.calls[ids["status-busy"]] = "completed"
    post_transfer(client, agent, "world-2", {"call_sid": ids["status-busy"],
                                             "return_to": QUEUE})
    # İYS: accepted exports, then a failed push, then records that reach each reason (a
    # record is pending until an export puts it in a batch).
    add_consent(app, "+905320000040", "granted", NOW - timedelta(days=9))
    add_consent(app, "+905320000041", "granted", NOW - timedelta(days=9), channels=["ARAMA"])
    add_consent(app, "+905320000050", "granted", NOW - timedelta(days=9), channels=["MESAJ"])
    run_cli(app, "iys", "export", "--push", fake_iys.url)
    add_consent(app, "+905320000041", "withdrawn", NOW - timedelta(days=8), channels=["ARAMA"])
    run_cli(app, "iys", "export", "--push", fake_iys.url)
    add_consent(app, "+905320000045", "granted", NOW - timedelta(hours=2), channels=["ARAMA"])
    fake_iys.fail_next = [503]
    run_cli(app, "iys", "export", "--push", fake_iys.url, ok=False)
    add_consent(app, "+905320000040", "granted", NOW - timedelta(days=2))  # unchanged
    add_consent(app, "+905320000041", "declined", NOW - timedelta(days=2),
                channels=["ARAMA"])  # H174
    add_consent(app, "+905320000041", "granted", NOW - timedelta(days=30),
                channels=["ARAMA"])  # older than the last sent: H178 (then superseded)
    add_consent(app, "+905320000042", "declined", NOW - timedelta(days=2))  # H175
    add_consent(app, "+905320000043", "granted", NOW - timedelta(days=3), channels=["MESAJ"])
    add_consent(app, "+905320000043", "declined", NOW - timedelta(days=1),
                channels=["MESAJ"])  # superseded, then H175
    add_consent(app, "+905320000044", "granted", datetime(2014, 1, 2, tzinfo=UTC),
                channels=["ARAMA"])  # before 2015-05-01
    add_consent(app, "+905320000049", "granted", NOW - timedelta(days=6))  # overdue export
    add_consent(app, "+905320000050", "declined", NOW - timedelta(days=20),
                channels=["MESAJ"])  # older than the ONAY sent 9 days ago, and alone: H178
    add_consent(app, "anonymous", "granted", NOW - timedelta(days=1))  # no number: RECIPIENT
    # A destruction run, an open request (one overdue), a quarantined webhook.
    add_consent(app, "+905320000046", "declined", NOW - timedelta(days=5 * 365))
    run_cli(app, "retention", "run")
    open_request(app, "+905320000047", 35)
    open_request(app, "+905320000048", 2)
    quarantine(app)
    return ids


# Where the crawl starts: every page the navigation names, for an admin (both roles).
CRAWL_STARTS = ("/auditor/", "/auditor/dashboard", "/auditor/flows", "/auditor/queues",
                "/agent/")
CRAWL_LIMIT = 600  # pages at most, per language
# Links the crawl does not follow: they leave the workspace or only send a file again.
CRAWL_SKIP = re.compile(r"^/(static|api|voice|health|metrics|login|logout|language)\b")


def crawl(client, limit: int = CRAWL_LIMIT):
    """Every same-origin page reachable by GET links from CRAWL_STARTS, breadth first:
    yields (path, status, HTML or None for a file such as a CSV or a ZIP)."""
    from urllib.parse import urldefrag, urlsplit

    queue, seen = list(CRAWL_STARTS), set(CRAWL_STARTS)
    while queue:
        path = queue.pop(0)
        r = client.get(path)
        moved = 300 <= r.status_code < 400
        html = r.get_data(as_text=True) if r.mimetype == "text/html" and not moved else None
        yield path, r.status_code, html
        if moved:
            targets = [r.headers.get("Location", "")]
        elif html is not None:
            targets = [a.get("href") for a in parse_html(html).findall("a", href=True)]
        else:
            continue
        for target in targets:
            href = urldefrag(target)[0]
            parts = urlsplit(href)
            if not href or parts.scheme or parts.netloc or not href.startswith("/") \
                    or CRAWL_SKIP.match(href) or href in seen:
                continue
            if len(seen) >= limit:
                raise AssertionError(f"the crawl passed {limit} pages: raise CRAWL_LIMIT")
            seen.add(href)
            queue.append(href)


def pages(ids: dict) -> list[tuple[str, str, int]]:
    """(screenshot name, path, status) of every page and state."""
    out = [
        ("login", "/login", 200),
        ("search", "/auditor/", 200),
        ("search-results", "/auditor/?since=2000-01-01", 200),
        ("search-error", "/auditor/?since=99.99.2026&decision=maybe", 400),
        ("dashboard", "/auditor/dashboard", 200),
        ("dashboard-weeks", "/auditor/dashboard?step=week", 200),
        ("hangups", "/auditor/dashboard/hangups?language=tr&phase=notice_body", 200),
        ("flows", "/auditor/flows", 200),
        ("flow-diff-none", "/auditor/flows/diff", 400),
        ("queues", "/auditor/queues", 200),
        ("not-found", "/auditor/calls/CA" + "0" * 32, 404),
        ("agent-desk", "/agent/", 200),
        ("transfer", f"/agent/transfers/{ids['transfer']}", 200),
    ]
    for key in ("granted", "withdrawn", "transferred", *sorted(k for k in ids
                                                              if k.startswith("status-"))):
        out.append((f"call-{key}", f"/auditor/calls/{ids[key]}", 200))
    return out


@pytest.mark.browser
def test_every_page_and_state_reads_in_turkish(live_app, caller, twilio, fake_iys, misses):  # noqa: C901 - one walk through every page and state
    app = live_app.app
    client = app.test_client()
    ids = build_world(app, caller, client, twilio, fake_iys)
    secret = make_user(app, "elif", "admin", language=None)
    assert login(client, "elif", secret, lang="tr").status_code == 302
    version = parse_html(client.get("/auditor/flows").get_data(as_text=True)).find(
        "tr", data_version=True).get("data-version")
    all_pages = [*pages(ids), ("flow-version", f"/auditor/flows/{version}", 200)]
    leaks = {}
    for _name, path, status in all_pages:
        r = client.get(path)
        assert r.status_code == status, (path, r.status_code)
        html = r.get_data(as_text=True)
        assert '<html lang="tr">' in html, path
        found = english_in(html)
        if found:
            leaks[path] = found
    assert sorted(misses) == [], "looked up but not in the Turkish catalogue"
    queue = parse_html(client.get("/auditor/queues").get_data(as_text=True))
    reached = {r.get("data-code") for r in queue.findall("tr", data_consent=True)}
    assert {"H174", "H175", "H178", "RECIPIENT", "UNCHANGED", "SUPERSEDED", "DATE", ""} \
        <= reached, reached
    assert leaks == {}, "English words on Turkish pages: " + json.dumps(leaks, indent=1)

    # The crawl: every page a link reaches from the workspace's start pages, in Turkish.
    crawled, errors = set(), {}
    for path, status, html in crawl(client):
        crawled.add(path)
        if status >= 500:
            errors[path] = status
        if html is not None:
            assert '<html lang="tr">' in html, path
            if found := english_in(html):
                leaks[path] = found
    assert errors == {}, errors
    assert sorted(misses) == [], "looked up but not in the Turkish catalogue (crawl)"
    assert leaks == {}, "English words on crawled Turkish pages: " + json.dumps(leaks, indent=1)
    reached_calls = {p for p in crawled if p.startswith("/auditor/calls/") and p.count("/") == 3}
    assert {f"/auditor/calls/{ids[k]}" for k in ("granted", "withdrawn", "transferred")} \
        <= reached_calls, sorted(crawled)
    assert f"/agent/transfers/{ids['transfer']}" in crawled
    # The dashboard's agent links narrow the search by agent, which names the agent.
    by_agent = [p for p in crawled if p.startswith("/auditor/?")
                and "agent=" in p and "agent=-" not in p]
    assert by_agent, sorted(crawled)
    shown = parse_html(client.get(by_agent[0]).get_data(as_text=True)).find(
        "p", id="consent-filters")
    assert shown is not None and "deniz" in shown.text, by_agent[0]
    assert any(p.startswith("/auditor/flows/") for p in crawled)

    # English too: no 5xx and no Turkish-only gap (English shows the msgid).
    client.post("/language", data={"csrf_token": csrf_token(client, "/auditor/"),
                                   "lang": "en", "next": "/auditor/"})
    for _name, path, status in all_pages:
        assert client.get(path).status_code == status, ("en", path)
    en_crawled = set()
    for path, status, html in crawl(client):
        en_crawled.add(path)
        assert status < 500, ("en", path, status)
        if html is not None:
            assert '<html lang="en">' in html, path
    assert en_crawled == crawled
    client.post("/language", data={"csrf_token": csrf_token(client, "/auditor/"),
                                   "lang": "tr", "next": "/auditor/"})

    # Screenshots in Turkish, in Chromium.
    path = chromium("the Turkish screenshots")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        page = browser.new_context(locale="tr-TR", viewport={"width": 1280, "height": 900}
                                   ).new_page()
        page.goto(live_app.url + "/login")
        page.fill("input[name=name]", "elif")
        page.fill("input[name=secret]", secret)
        page.click("button[type=submit]")
        page.wait_for_url("**/auditor/**")
        for name, url_path, _status in all_pages:
            if name == "login":
                continue
            page.goto(live_app.url + url_path)
            assert page.locator("html").get_attribute("lang") == "tr"
            page.screenshot(path=str(SCREENSHOTS / f"tr-{name}.png"), full_page=True)
        browser.close()
