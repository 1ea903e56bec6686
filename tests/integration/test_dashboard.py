"""The dashboard over HTTP on both databases: its counts equal `consents export` for the
same Istanbul days, every number's link lists exactly its calls, and the notice drop-off
places each hang-up in the notice part that was playing."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest

from ivr.adapters.simulate import manifest_seconds
from ivr.cli.main import cli
from ivr.storage.models import Consent
from ivr.storage.transfer_models import Transfer
from ivr.web.current import database
from tests.support.auditor import (
    audio_dir,
    audit_bodies,
    auditor,
    login,
    make_user,
    parse_html,
    place_call,
    rendered_audio,
)

__all__ = ["audio_dir", "auditor", "rendered_audio"]  # fixtures, so pytest finds them

ISTANBUL = ZoneInfo("Europe/Istanbul")
DECISIONS = ("granted", "declined", "no_input", "withdrawn")
# What flows/consent.yaml plays when a call comes in, in order.
FIRST_TURN = ("greeting", "language_offer", "notice_intro", "notice_body", "question")


def istanbul_today() -> date:
    return datetime.now(ISTANBUL).date()


def utc_bounds(first: date, last: date) -> tuple[str, str]:
    lo = datetime.combine(first, time(), ISTANBUL).astimezone(UTC)
    hi = datetime.combine(last + timedelta(days=1), time(), ISTANBUL).astimezone(UTC)
    return lo.isoformat(), hi.isoformat()


def get_page(client, url: str, status: int = 200):
    r = client.get(url)
    assert r.status_code == status, r.get_data(as_text=True)[:500]
    return parse_html(r.get_data(as_text=True))


def dashboard(client, query: str = "", status: int = 200):
    r = client.get(f"/auditor/dashboard{query}")
    assert r.status_code == status, r.get_data(as_text=True)[:500]
    return parse_html(r.get_data(as_text=True))


def table_counts(doc, table_id: str) -> dict[str, dict[str, int]]:
    """Row label → decision → count (and 'all'), from the table's data attributes."""
    table = doc.find("table", id=table_id)
    assert table is not None, table_id
    out = {}
    for tr in table.findall("tr", data_value=True):
        cells = {td.get("data-decision") or td.get("data-outcome") or "all":
                 int(td.get("data-count"))
                 for td in tr.findall("td", data_count=True)}
        out[tr.get("data-value")] = cells
    return out


def exported(runner, first: date, last: date) -> list[dict]:
    since, until = utc_bounds(first, last)
    out = runner.invoke(cli, ["consents", "export", "--since", since, "--until", until])
    assert out.exit_code == 0, out.output
    return [json.loads(line) for line in out.output.splitlines() if line.strip()]


def add_consent(app, captured_at: datetime, decision: str, **fields) -> None:
    """A stored consent record at an exact instant (what a call or the API would store)."""
    with app.app_context():
        s = database(app).sessionmaker()
        with s.begin():
            s.add(Consent(purpose="marketing", channels=["ARAMA"], decision=decision,
                          captured_at=captured_at, source=fields.pop("source", "ivr"),
                          **fields))
        s.close()


@pytest.fixture
def history(app, local_caller):
    """Calls placed now, and consents stored around two Istanbul midnights."""
    today = istanbul_today()
    calls = {"granted": place_call(local_caller, ["1"], from_number="+905321234567"),
             "declined": place_call(local_caller, ["2"], from_number="+905339876543"),
             "english": place_call(local_caller, ["0", "1"], from_number="+905301112233"),
             "no_input": place_call(local_caller, ["t", "t", "t"],
                                    from_number="+905304445566")}
    midnight = datetime.combine(today - timedelta(days=1), time(), ISTANBUL).astimezone(UTC)
    # One second before and at Istanbul midnight: two different Istanbul days.
    add_consent(app, midnight - timedelta(seconds=1), "declined", language="tr",
                call_sid="CA" + "1" * 32, flow_version="f" * 64, notice_version="n" * 64)
    add_consent(app, midnight, "granted", language="en", call_sid="CA" + "2" * 32,
                transfer_id="tr" + "0" * 30, agent_id="7", flow_version="f" * 64,
                notice_version="n" * 64)
    add_consent(app, midnight + timedelta(hours=5), "withdrawn", source="api")
    with app.app_context():
        s = database(app).sessionmaker()
        with s.begin():
            s.add(Transfer(id="tr" + "0" * 30, call_sid="CA" + "2" * 32, agent_id="7",
                           agent_name="Deniz", idempotency_key="k", request_hash="h" * 64,
                           return_to={"type": "hangup"}, language="en", flow_id="kvkk-consent",
                           status="returned", decision="granted", requested_at=midnight))
        s.close()
    return calls


def test_dashboard_counts_equal_the_consents_export(app, auditor, runner, history):
    today = istanbul_today()
    first = today - timedelta(days=3)
    doc = dashboard(auditor, f"?since={first:%d.%m.%Y}&until={today:%d.%m.%Y}")
    rows = exported(runner, first, today)
    assert len(rows) == 7
    totals = table_counts(doc, "series")["all"]
    want = Counter(r["decision"] for r in rows)
    assert {d: totals[d] for d in DECISIONS} == {d: want[d] for d in DECISIONS}
    assert totals["all"] == len(rows)

    # Per Istanbul day: the export of that day alone gives the same counts.
    series = table_counts(doc, "series")
    for d in range(4):
        day = first + timedelta(days=d)
        label = f"{day:%d.%m.%Y}"
        day_rows = Counter(r["decision"] for r in exported(runner, day, day))
        assert {k: series[label][k] for k in DECISIONS} == {k: day_rows[k] for k in DECISIONS}
    yesterday = f"{today - timedelta(days=1):%d.%m.%Y}"
    two_ago = f"{today - timedelta(days=2):%d.%m.%Y}"
    assert series[two_ago]["declined"] == 1 and series[yesterday]["granted"] == 1

    def by(value_of):
        return Counter((value_of(r), r["decision"]) for r in rows)

    checks = {
        "language": by(lambda r: r["language"] or "-"),
        "agent": by(lambda r: r["agent_id"] or "-"),
        "flow_version": by(lambda r: r["flow_version"] or "-"),
        "notice_version": by(lambda r: r["notice_version"] or "-"),
        "origin": by(lambda r: "transfer" if r["transfer_id"]
                     else ("api" if not r["call_sid"] else "inbound")),
    }
    for name, want in checks.items():
        got = table_counts(doc, f"table-{name}")
        flat = Counter({(value or "-", d): n for value, cells in got.items() if value != "all"
                        for d, n in cells.items() if d != "all" and n})
        assert flat == want, name
    assert table_counts(doc, "table-origin")["transfer"]["granted"] == 1
    agent = doc.find("table", id="table-agent").find("tr", data_value="7")
    assert agent.find("span", **{"class": "agent-name"}).text == "Deniz"
    assert table_counts(doc, "table-language")["en"]["granted"] == 2


def test_week_buckets_add_up(auditor, history):
    today = istanbul_today()
    first = today - timedelta(days=20)
    doc = dashboard(auditor, f"?since={first.isoformat()}&until={today.isoformat()}&step=week")
    series = table_counts(doc, "series")
    weeks = [k for k in series if k != "all"]
    assert len(weeks) in (3, 4, 5)
    assert all("–" in w or w.count(".") == 2 for w in weeks)
    assert sum(series[w]["all"] for w in weeks) == series["all"]["all"] == 7


def test_every_number_links_to_the_search_that_lists_its_calls(auditor, history):
    today = istanbul_today()
    doc = dashboard(auditor)
    links = {}
    for table in ("series", "table-language", "table-origin", "table-flow_version"):
        for tr in doc.find("table", id=table).findall("tr", data_value=True):
            for td in tr.findall("td", data_count=True):
                if int(td.get("data-count")):
                    a = td.find("a")
                    assert a is not None, (table, tr.get("data-value"))
                    links[(table, tr.get("data-value"), td.get("data-decision", "all"))] = (
                        a.get("href"), int(td.get("data-count")))
    granted_tr = links[("table-language", "tr", "granted")]
    href, count = granted_tr
    query = parse_qs(urlsplit(href).query)
    assert query["language"] == ["tr"] and query["decision"] == ["granted"]
    assert query["basis"] == ["consent"]
    page = parse_html(auditor.get(href).get_data(as_text=True))
    listed = {a.text for a in page.findall("a", **{"class": "sid"})}
    assert listed == {history["granted"].call_sid} and count == 1
    # The inbound calls of today: the four placed through the simulator.
    assert links[("table-origin", "inbound", "all")][1] == 5
    today_row = links[("series", f"{today:%d.%m.%Y}", "all")]
    page = parse_html(auditor.get(today_row[0]).get_data(as_text=True))
    assert {a.text for a in page.findall("a", **{"class": "sid"})} == {
        c.call_sid for c in history.values()}
    assert today_row[1] == 4


@pytest.mark.parametrize("query, field", [
    ("?since=31.02.2026", "since"),
    ("?since=tomorrow", "since"),
    ("?step=month", "step"),
    ("?since=10.03.2026&until=01.03.2026", "until"),
    ("?since=01.01.2020&until=01.01.2026", "since"),
])
def test_a_bad_period_is_explained_not_a_server_error(auditor, query, field):
    doc = dashboard(auditor, query, status=400)
    form = doc.find("form", id="period")
    errors = [span for span in form.findall("span", **{"class": "error"})]
    assert errors, query
    assert doc.find("table", id="series") is not None  # the default period is shown


@pytest.mark.parametrize("query, message", [
    ("origin=moon", "one of inbound, transfer, api"),
    ("basis=decided&since=2026-03-01", "call or consent"),
    ("decision=none&language=tr", "calls without a decision have no consent"),
    ("decision=none&basis=consent&since=2026-03-01", "calls without a decision have no consent"),
    ("agent=" + "x" * 101, "too long"),
])
def test_search_rejects_a_bad_consent_criterion(auditor, query, message):
    r = auditor.get(f"/auditor/?{query}")
    assert r.status_code == 400
    assert message in r.get_data(as_text=True)


def seconds_into(caller, prompt: str, fraction: float) -> float:
    """How far into its first turn the caller is, `fraction` through `prompt`."""
    heard = caller.turns[0].heard
    assert len(heard) == len(FIRST_TURN)
    offset = 0.0
    for name, item in zip(FIRST_TURN, heard, strict=True):
        length = caller.seconds(item)
        if name == prompt:
            return offset + length * fraction
        offset += length
    raise AssertionError(f"{prompt} is not played in the first turn")


def test_notice_dropoff_places_each_hang_up_in_its_notice_part(app, auditor, local_caller,
                                                               audio_dir):
    seconds = manifest_seconds(audio_dir)

    def hang_up_during(prompt):
        c = local_caller(audio_seconds=seconds)
        c.dial()
        c.elapsed = seconds_into(c, prompt, 0.6)
        c.status("completed", duration=int(c.elapsed) + 1)
        return c

    in_body = {hang_up_during("notice_body").call_sid, hang_up_during("notice_body").call_sid}
    hang_up_during("notice_intro")
    hang_up_during("greeting")
    place_call(local_caller, ["h"], audio_seconds=seconds)  # hangs up at the question
    place_call(local_caller, ["1"], audio_seconds=seconds)
    doc = dashboard(auditor)
    row = doc.find("table", id="table-dropoff").find("tr", data_language="tr")
    cells = {td.get("data-phase", "calls"): int(td.get("data-count"))
             for td in row.findall("td", data_count=True)}
    assert cells == {"calls": 6, "before": 1, "notice_intro": 1, "notice_body": 2, "after": 1}
    body = row.find("td", data_phase="notice_body")
    assert "33.3%" in body.text
    # The number lists its calls, and the listing is an auditor access.
    listing = get_page(auditor, body.find("a").get("href"))
    assert {tr.get("data-call") for tr in listing.findall("tr", data_call=True)} == in_body
    entry = audit_bodies(app, "auditor.access")[-1]["data"]
    assert entry["action"] == "view.hangups" and set(entry["call_sids"]) == in_body
    assert entry["query"]["phase"] == "notice_body" and entry["query"]["language"] == "tr"
    assert row.find("td", data_phase="notice_intro").find("a") is not None


def test_an_agent_gets_a_clear_403_without_a_way_back_into_it(app, client):
    secret = make_user(app, "ali", "agent")
    assert login(client, "ali", secret).status_code == 302
    for path in ("/auditor/dashboard", "/auditor/flows"):
        r = client.get(path)
        assert r.status_code == 403
        html = r.get_data(as_text=True)
        assert "The auditor workspace is for the auditor and admin roles" in html
        doc = parse_html(html)
        hrefs = [a.get("href") for a in doc.findall("a")]
        # No link leads back into the workspace; the way out is the agent's own desk.
        assert not [h for h in hrefs if h and h.startswith("/auditor")], hrefs
        assert "/agent/" in hrefs


def test_the_dashboard_needs_a_login(client):
    r = client.get("/auditor/dashboard?step=week")
    assert r.status_code == 302
    assert r.headers["Location"].startswith("/login?next=/auditor/dashboard")


def test_the_hangups_list_explains_a_bad_period(auditor):
    doc = get_page(auditor, "/auditor/dashboard/hangups?since=99.99.2026&language=tr",
                   status=400)
    assert "Write the day as dd.mm.yyyy" in doc.find("main").text


def test_an_admin_may_use_both_pages(app, client):
    secret = make_user(app, "root", "admin")
    assert login(client, "root", secret).status_code == 302
    for path in ("/auditor/dashboard", "/auditor/flows"):
        assert client.get(path).status_code == 200


def test_calls_from_a_hidden_number_are_counted_as_numara_gizli(app, auditor, local_caller):
    place_call(local_caller, ["1"], from_number="+905321234567")
    for number in ("Anonymous", "+266696687", "sip:a@b.c"):
        place_call(local_caller, ["1"], from_number=number)
    gone = local_caller(from_number="+2562533")
    gone.dial()
    gone.hang_up()  # during the notice: a hang-up, and still a hidden-number call
    today = istanbul_today()
    doc = dashboard(auditor, f"?since={today:%d.%m.%Y}&until={today:%d.%m.%Y}")
    totals = table_counts(doc, "series")["all"]
    assert totals["hidden"] == 4 and totals["all"] == 1 and totals["granted"] == 1
    assert doc.find("p", id="hidden-text").get("data-count") == "4"
    # Every call that started is in the drop-off's calls, the hidden ones too.
    runs = doc.find("table", id="table-dropoff").find("tr", data_language="tr")
    assert runs.find("td", data_count=True).get("data-count") == "5"
