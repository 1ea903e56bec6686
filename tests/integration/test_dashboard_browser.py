"""The dashboard and the flow registry in headless Debian Chromium over real HTTP.

An auditor logs in, reads the dashboard against the stored consents, follows a number to
the search that lists its calls, opens the registry and a flow's diagram; an agent gets a
clear 403. The test writes docs/screenshots/dashboard.png and flows.png for the README.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ivr.adapters.simulate import manifest_seconds
from ivr.storage.models import Consent, FlowRun
from ivr.web.current import database
from tests.support.auditor import audio_dir, make_user, rendered_audio

from .conftest import CHROMIUM_ARGS, chromium, require_tools

__all__ = ["audio_dir", "rendered_audio"]  # fixtures, so pytest finds them

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

pytestmark = pytest.mark.browser


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    path = chromium("the dashboard browser test")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


def stored(app, query):
    s = database(app).sessionmaker()
    try:
        return s.execute(query).all()
    finally:
        s.close()


def log_in(browser, url: str, name: str, secret: str, path: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{url}{path}")
    page.fill("input[name=name]", name)
    page.fill("input[name=secret]", secret)
    page.click("button[type=submit]")
    return page


def test_an_auditor_reads_the_dashboard_and_the_registry(live_app, caller, browser,
                                                         audio_dir):
    require_tools("dot", what="the flow registry browser test")
    seconds = manifest_seconds(audio_dir)
    for n, keys in enumerate((["1"], ["1"], ["2"], ["0", "1"], ["0", "2"], ["t", "t", "t"],
                              ["1"], ["h"])):
        caller(from_number=f"+9053212345{n:02d}", audio_seconds=seconds).run(keys)
    early = caller(from_number="+905321234599", audio_seconds=seconds)
    early.dial()
    early.elapsed = 3.0  # hangs up during the greeting
    early.status("completed", duration=4)
    secret = make_user(live_app.app, "selin", "auditor")

    page = log_in(browser, live_app.url, "selin", secret, "/auditor/dashboard")
    assert page.url == f"{live_app.url}/auditor/dashboard"
    decisions = Counter(dict(stored(live_app.app, select(Consent.decision, func.count())
                                    .group_by(Consent.decision))))
    assert sum(decisions.values()) == 7
    total = page.locator("#series tfoot td.total")
    assert int(total.get_attribute("data-count")) == 7
    for decision, n in decisions.items():
        cell = page.locator(f"#series tfoot td[data-decision={decision}]")
        assert int(cell.get_attribute("data-count")) == n
    # The chart's bars add up to the table.
    segments = page.locator("#outcomes svg.chart rect.seg")
    assert sum(int(c) for c in segments.evaluate_all(
        "els => els.map(e => e.dataset.count)")) == 7
    by_language = {lang: n for lang, n in stored(
        live_app.app, select(Consent.language, func.count()).group_by(Consent.language))}
    for lang, n in by_language.items():
        row = page.locator(f"#table-language tbody tr[data-value={lang}] td.total")
        assert int(row.get_attribute("data-count")) == n
    dropoff = page.locator("#table-dropoff tr[data-language=tr]")
    assert int(dropoff.locator("td[data-phase=before]").get_attribute("data-count")) == 1
    assert int(dropoff.locator("td[data-phase=after]").get_attribute("data-count")) == 1
    page.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=True)

    # A number leads to the search listing exactly its calls.
    english = stored(live_app.app, select(Consent.call_sid).where(
        Consent.language == "en", Consent.decision == "granted"))
    page.click("#table-language tr[data-value=en] td[data-decision=granted] a")
    assert page.url.startswith(f"{live_app.url}/auditor/?")
    listed = page.locator("table.results a.sid").evaluate_all("els => els.map(e => e.textContent)")
    assert listed == [sid for (sid,) in english]
    assert "language" in page.inner_text("#consent-filters")

    # The registry, from the navigation.
    page.click("header nav a:text('Flows')")
    assert page.url == f"{live_app.url}/auditor/flows"
    [(version, calls)] = stored(live_app.app, select(FlowRun.flow_version,
                                                     func.count(FlowRun.call_sid.distinct()))
                                .group_by(FlowRun.flow_version))
    row = page.locator(f"#versions tr[data-version='{version}']")
    assert int(row.locator("td.calls").get_attribute("data-count")) == calls == 9
    assert sorted(row.locator(".notice").evaluate_all(
        "els => els.map(e => e.dataset.language)")) == ["en", "tr"]
    page.screenshot(path=str(SCREENSHOTS / "flows.png"), full_page=True)
    row.locator("a.version").click()
    assert page.url == f"{live_app.url}/auditor/flows/{version}"
    graph = page.locator("#graph svg")
    assert graph.is_visible()
    nodes = graph.locator("g.node title").evaluate_all("els => els.map(e => e.textContent)")
    assert {"greeting", "notice", "consent", "done", "start"} <= set(nodes)
    page.screenshot(path=str(SCREENSHOTS / "flow-version.png"), full_page=True)
    page.close()


def test_an_agent_sees_a_clear_403_not_a_loop(live_app, browser):
    secret = make_user(live_app.app, "ali", "agent")
    # Asked for the dashboard, the agent lands on their own desk after login...
    page = log_in(browser, live_app.url, "ali", secret, "/auditor/dashboard")
    assert page.url == f"{live_app.url}/agent/"
    # ...and opening it anyway is a clear refusal whose only way out is their own home.
    for path in ("/auditor/dashboard", "/auditor/flows"):
        page.goto(f"{live_app.url}{path}")
        assert page.locator("h1").inner_text() == "Not allowed"
        assert "for the auditor and admin roles" in page.inner_text("main")
        links = [a.get_attribute("href") for a in page.locator("main a").all()]
        assert path not in " ".join(links)
        assert all(h.endswith("/agent/") for h in links), links
    page.close()
