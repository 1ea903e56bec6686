"""The workspace pages: search, the call page, CSV/JSON exports, and access entries."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from ivr.audit import leaves
from ivr.services.auditor import call_search as search_module
from ivr.services.auditor.call_search import EXPORT_FIELDS
from ivr.storage import audit_store
from ivr.web.current import database
from tests.support.auditor import (
    audio_dir,
    audit_bodies,
    auditor,
    csrf_token,
    parse_html,
    place_call,
    rendered_audio,
)

__all__ = ["audio_dir", "auditor", "rendered_audio"]  # fixtures, so pytest finds them

ISTANBUL = ZoneInfo("Europe/Istanbul")
ALICE = "+905321234567"
BOB = "+905339876543"


@pytest.fixture
def calls(local_caller):
    """Three calls: Alice grants, Bob declines, Alice stays silent."""
    return {"granted": place_call(local_caller, ["1"], from_number=ALICE),
            "declined": place_call(local_caller, ["2"], from_number=BOB),
            "no_input": place_call(local_caller, ["t", "t", "t"], from_number=ALICE)}


def sids_on(html: str) -> set[str]:
    """The CallSids the results table links to."""
    return set(re.findall(r'href="/auditor/calls/(CA[0-9a-f]+)"', html))


def page(client, url: str, status: int = 200) -> str:
    r = client.get(url)
    assert r.status_code == status, r.get_data(as_text=True)[:500]
    return r.get_data(as_text=True)


@pytest.mark.parametrize("typed", [ALICE, "0532 123 45 67", "+90 (532) 123-4567"])
def test_search_by_phone_in_any_usual_form(auditor, calls, typed):
    html = page(auditor, f"/auditor/?phone={typed}")
    assert sids_on(html) == {calls["granted"].call_sid, calls["no_input"].call_sid}
    assert ALICE not in html  # the list masks the number
    assert "+90532" in html


def test_search_by_callsid_decision_and_date(auditor, calls):
    sid = calls["declined"].call_sid
    assert sids_on(page(auditor, f"/auditor/?call_sid={sid}")) == {sid}
    assert sids_on(page(auditor, "/auditor/?decision=granted")) == {calls["granted"].call_sid}
    assert sids_on(page(auditor, "/auditor/?decision=no_input")) == {calls["no_input"].call_sid}
    assert sids_on(page(auditor, "/auditor/?decision=withdrawn")) == set()
    today = datetime.now(ISTANBUL).date()
    all_three = {c.call_sid for c in calls.values()}
    assert sids_on(page(auditor, f"/auditor/?since={today}&until={today}")) == all_three
    yesterday = today - timedelta(days=1)
    assert sids_on(page(auditor, f"/auditor/?until={yesterday}")) == set()
    assert sids_on(page(auditor, f"/auditor/?since={today + timedelta(days=1)}")) == set()
    assert sids_on(page(auditor, f"/auditor/?phone={BOB}&decision=granted")) == set()


def test_search_pages_follow_the_next_link(auditor, calls, monkeypatch):
    monkeypatch.setattr(search_module, "PAGE_LIMIT", 2)
    today = datetime.now(ISTANBUL).date()
    first = page(auditor, f"/auditor/?since={today}&until={today}")
    nxt = re.search(r'<a rel="next" href="([^"]+)"', first)
    assert nxt and len(sids_on(first)) == 2
    url = nxt.group(1).replace("&amp;", "&")
    assert f"since={today}" in url and "after=" in url and "offset" not in url
    second = page(auditor, url)
    assert 'rel="next"' not in second
    assert sids_on(first) | sids_on(second) == {c.call_sid for c in calls.values()}
    assert not sids_on(first) & sids_on(second)


def test_a_garbled_page_cursor_is_a_clear_error(auditor, calls):
    html = page(auditor, "/auditor/?decision=granted&after=12.%20x", 400)
    assert "not a page of this search" in html


def test_search_without_criteria_shows_only_the_form(app, auditor, calls):
    html = page(auditor, "/auditor/")
    assert sids_on(html) == set()
    assert 'id="search"' in html
    assert not audit_bodies(app, "auditor.access")


@pytest.mark.parametrize("query,field,message", [
    ("phone=abc", "phone", "not a phone number"),
    ("call_sid=CA%3Cscript%3E", "call_sid", "letters and digits"),
    ("since=2025-13-01", "since", "not a date"),
    ("since=2025-02-01&until=2025-01-01", "until", "must not be before"),
    ("decision=maybe", "decision", "one of granted"),
])
def test_bad_search_input_gets_a_clear_error(auditor, query, field, message):
    html = page(auditor, f"/auditor/?{query}", 400)
    assert message in html
    assert "<script>" not in html


def test_a_search_is_an_access_entry_without_the_phone_number(app, auditor, calls):
    page(auditor, "/auditor/?phone=0532 123 45 67&decision=granted")
    [entry] = audit_bodies(app, "auditor.access")
    d = entry["data"]
    assert d["user"] == "ayse" and d["role"] == "auditor" and d["action"] == "view.search"
    assert d["via"] == "web" and d["count"] == 1
    assert d["call_sids"] == [calls["granted"].call_sid]
    assert re.fullmatch(r"[0-9a-f]{64}", d["phone"]) and d["query"]["phone"] == d["phone"]
    assert d["query"]["decision"] == "granted"
    for body in audit_bodies(app):
        assert "5321234567" not in leaves.canonical(body).decode()


def _recording(caller):
    caller.signed_post(caller.url("/voice/recording"), caller.params(
        RecordingSid="RE" + "7" * 32, RecordingStatus="completed", RecordingDuration="38",
        RecordingChannels="1", RecordingSource="StartCallRecordingTwiML",
        RecordingStartTime="Tue, 01 Apr 2025 09:00:00 +0000",
        RecordingUrl="https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE7"))


def test_call_page_shows_the_record(app, auditor, local_caller):
    caller = place_call(local_caller, ["5", "1"], from_number=ALICE)
    _recording(caller)
    sid = caller.call_sid
    html = page(auditor, f"/auditor/calls/{sid}")
    root = parse_html(html)
    events = root.findall("li", data_kind=True)
    kinds = [e.get("data-kind") for e in events]
    assert kinds[0] == "call.started"
    assert kinds.count("input.received") == 2  # 5 (not a choice), then 1
    assert "consent.decided" in kinds and "recording.status" in kinds
    text = html
    assert "Key pressed: 5" in text and "Key pressed: 1" in text
    assert "Decision: granted" in text
    assert 'data-verified="true"' in text and 'data-replay="ok"' in text
    assert ALICE in text  # the call page shows the number to the auditor
    assert "RE" + "7" * 32 in text and "38 s" in text
    # Every time is Istanbul wall-clock time with the UTC instant in its title.
    times = root.findall("time")
    assert times
    for t in times:
        utc = datetime.fromisoformat(t.get("datetime").replace("Z", "+00:00"))
        assert t.get("title") == f"UTC {t.get('datetime')}"
        assert t.text == utc.astimezone(ISTANBUL).strftime("%d.%m.%Y %H:%M:%S")
        assert utc.astimezone(ISTANBUL).utcoffset() == timedelta(hours=3)


def test_call_page_shows_timeouts_and_a_hang_up(auditor, local_caller):
    caller = place_call(local_caller, ["t", "h"], from_number=BOB)
    html = page(auditor, f"/auditor/calls/{caller.call_sid}")
    assert "No key pressed (timeout)" in html and "Caller hung up" in html
    assert "waited up to 6 s for a key" in html
    assert "No consent decision was recorded" in html


def test_call_page_plays_each_prompt_exactly_as_played(app, auditor, local_caller):
    caller = place_call(local_caller, ["1"], from_number=ALICE)
    html = page(auditor, f"/auditor/calls/{caller.call_sid}")
    root = parse_html(html)
    played = [b for b in audit_bodies(app, "prompts.played")]
    recorded = {p["prompt"]: p["audio"] for b in played for p in b["data"]["played"]}
    prompts = root.findall("div", data_prompt=True)
    assert {p.get("data-prompt") for p in prompts} == set(recorded)
    with_audio = {p.get("data-prompt"): p.find("audio") for p in prompts
                  if p.find("audio") is not None}
    assert set(with_audio) == {"greeting", "language_offer", "notice_intro", "goodbye"}
    for prompt, audio in with_audio.items():
        assert audio.get("data-sha256") == recorded[prompt]
        with auditor.get(audio.get("src")) as r:
            assert r.status_code == 200 and r.mimetype == "audio/wav"
            assert hashlib.sha256(r.data).hexdigest() == recorded[prompt]
    # Prompts that had no file were spoken by <Say>; their words are shown all the same.
    body = next(p for p in prompts if p.get("data-prompt") == "notice_body")
    assert body.find("audio") is None and recorded["notice_body"] is None
    words = app.extensions["ivr_flows"].default.text("notice_body", "tr")
    assert body.find("blockquote").text == words
    assert "spoken by Twilio &lt;Say&gt;" in html


def test_call_page_names_a_tampered_entry(app, auditor, local_caller):
    caller = place_call(local_caller, ["2"], from_number=BOB)
    engine = database(app).engine
    with engine.begin() as conn:  # the attacker has the database and drops the guard
        seq = conn.execute(text("SELECT seq FROM audit_log WHERE kind = 'consent.decided' "
                                "AND ref = :r"), {"r": caller.call_sid}).scalar()
        for name in audit_store.TRIGGERS:
            conn.execute(text(f"DROP TRIGGER IF EXISTS {name} ON audit_log"))
        conn.execute(text("UPDATE audit_log SET body = replace(body, '\"declined\"', "
                          "'\"granted\"') WHERE seq = :s"), {"s": seq})
    html = page(auditor, f"/auditor/calls/{caller.call_sid}")
    assert 'data-verified="false"' in html
    assert f"Verification failed at index {seq - 1}: leaf modified" in html


def test_unknown_call_is_a_404_page_and_still_recorded(app, auditor):
    html = page(auditor, "/auditor/calls/CA" + "0" * 32, 404)
    assert "No call with CallSid" in html
    [entry] = audit_bodies(app, "auditor.access")
    assert entry["data"]["found"] is False and entry["ref"] == "CA" + "0" * 32
    page(auditor, "/auditor/calls/not a sid!", 404)


def test_call_view_is_an_access_entry(app, auditor, calls):
    sid = calls["granted"].call_sid
    page(auditor, f"/auditor/calls/{sid}")
    html = page(auditor, f"/auditor/calls/{sid}")
    entries = audit_bodies(app, "auditor.access")
    assert [e["data"]["action"] for e in entries] == ["view.call", "view.call"]
    first = entries[0]
    assert first["ref"] == sid and first["data"]["call_sid"] == sid
    assert first["data"]["user"] == "ayse" and re.fullmatch(r"[0-9a-f]{64}",
                                                           first["data"]["phone"])
    assert "ayse (auditor)" in html  # the second view lists the first in "who has seen"


def _export(client, fmt: str, **criteria):
    token = csrf_token(client, "/auditor/")
    return client.post(f"/auditor/export.{fmt}", data={"csrf_token": token, **criteria})


def test_csv_export_of_a_search(app, auditor, calls):
    r = _export(auditor, "csv", phone=ALICE)
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert r.headers["Content-Disposition"].startswith("attachment; filename=")
    assert r.headers["Cache-Control"] == "no-store"
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    assert list(rows[0]) == EXPORT_FIELDS
    by_sid = {row["call_sid"]: row for row in rows}
    assert set(by_sid) == {calls["granted"].call_sid, calls["no_input"].call_sid}
    g = by_sid[calls["granted"].call_sid]
    assert g["decision"] == "granted" and g["digits"] == "1" and g["phone"] == "'" + ALICE
    assert g["channels"] == '["ARAMA", "MESAJ", "EPOSTA"]' and g["language"] == "tr"
    assert by_sid[calls["no_input"].call_sid]["decision"] == "no_input"
    [entry] = audit_bodies(app, "auditor.access")
    assert entry["data"]["action"] == "export.csv"
    assert set(entry["data"]["call_sids"]) == set(by_sid)


def test_json_export_of_a_search(app, auditor, calls):
    r = _export(auditor, "json", decision="declined")
    assert r.status_code == 200 and r.is_json
    doc = r.json
    assert doc["query"] == {"decision": "declined"} and doc["calls"] == 1
    [row] = doc["rows"]
    assert list(row) == EXPORT_FIELDS
    assert row["call_sid"] == calls["declined"].call_sid and row["phone"] == BOB
    assert row["channels"] == ["ARAMA", "MESAJ", "EPOSTA"]
    assert row["duration"] == calls["declined"].duration
    assert audit_bodies(app, "auditor.access")[0]["data"]["action"] == "export.json"


def test_export_needs_a_valid_search(app, auditor, calls):
    assert _export(auditor, "csv").status_code == 400
    assert _export(auditor, "csv", phone="abc").status_code == 400
    assert _export(auditor, "xml", decision="granted").status_code == 404
    assert not audit_bodies(app, "auditor.access")


def test_export_lists_a_call_without_a_decision_once(auditor, local_caller):
    c = local_caller(from_number=ALICE)
    c.dial()
    c.hang_up()
    rows = list(csv.DictReader(io.StringIO(_export(auditor, "csv", decision="none")
                                           .get_data(as_text=True))))
    assert [(r["call_sid"], r["decision"]) for r in rows] == [(c.call_sid, "")]
