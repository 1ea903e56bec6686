"""Issue 11, findings 4-7: one notice version per language, times that agree, one name for
an audio file, and one timeline on the call page, `calls show` and `calls show --json`."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from ivr.cli.main import cli
from ivr.storage.models import Call
from ivr.web.current import database
from tests.support.auditor import audio_dir, auditor, parse_html, place_call, rendered_audio

__all__ = ["audio_dir", "auditor", "rendered_audio"]  # fixtures, so pytest finds them

ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
LOCAL_WITH_UTC = re.compile(r"\d{2}\.\d{2}\.\d{4} \d{2}:\d{2}:\d{2} Europe/Istanbul "
                            r"\(UTC \d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z\)")


def show(app, sid: str, *args: str):
    result = app.test_cli_runner().invoke(cli, ["calls", "show", sid, *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output) if "--json" in args else result.output


def call_page(client, sid: str):
    r = client.get(f"/auditor/calls/{sid}")
    assert r.status_code == 200
    return r.get_data(as_text=True)


def recording(caller):
    caller.signed_post(caller.url("/voice/recording"), caller.params(
        RecordingSid="RE" + "7" * 32, RecordingStatus="completed", RecordingDuration="38",
        RecordingChannels="1", RecordingSource="StartCallRecordingTwiML",
        RecordingStartTime="Tue, 01 Apr 2025 09:00:00 +0000",
        RecordingUrl="https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE7"))


def stored_times(app, sid: str) -> Call:
    with database(app).sessionmaker() as s:
        call = s.get(Call, sid)
        s.expunge(call)
        return call


# --- One timeline -----------------------------------------------------------------------


def test_calls_show_and_the_call_page_show_one_timeline(app, auditor, local_caller):
    caller = place_call(local_caller, ["5", "1"])
    recording(caller)
    sid = caller.call_sid
    doc = show(app, sid, "--json")
    text = show(app, sid)
    html = call_page(auditor, sid)
    root = parse_html(html)

    # The page lists exactly the JSON's events, in order, with the same titles.
    items = root.findall("li", data_kind=True)
    assert [(int(li.get("data-seq")), li.get("data-kind")) for li in items] == [
        (ev["seq"], ev["kind"]) for ev in doc["timeline"]]
    assert [li.find("strong").text for li in items] == [ev["title"] for ev in doc["timeline"]]
    kinds = {ev["kind"] for ev in doc["timeline"]}
    assert {"call.started", "prompts.played", "notice.played", "input.received",
            "consent.decided", "call.status", "recording.status"} <= kinds

    # The text shows every event's title, and every prompt with its audio hash.
    for ev in doc["timeline"]:
        assert f"#{ev['seq']:<6} " in text and ev["title"] in text
        for p in ev["prompts"]:
            heard = f"audio sha256 {p['audio']}" if p["audio"] else "spoken by Twilio <Say>"
            assert f"{p['prompt']} ({p['language']})  {heard}" in text
    prompts = [p for ev in doc["timeline"] for p in ev["prompts"]]
    assert any(p["audio"] for p in prompts) and any(not p["audio"] for p in prompts)
    page_prompts = [(d.get("data-prompt"), d.get("data-audio") or None)
                    for d in root.find("section", id="timeline").findall("div", data_prompt=True)]
    assert page_prompts == [(p["prompt"], p["audio"]) for p in prompts]
    for needle in ("Key pressed: 5", "Key pressed: 1", "Decision: granted",
                   "Call status: completed", "Recording completed", "RE" + "7" * 32):
        assert needle in text and needle in html
    consent = doc["consent"]
    assert f"rests on notice version {consent['notice_version']}" in text
    assert "None" not in text


def test_the_api_gives_the_same_timeline(app, auditor, local_caller):
    from tests.support.auditor import AUDITOR, make_user

    sid = place_call(local_caller, ["1"]).call_sid
    token = make_user(app, AUDITOR + "-api", "auditor")
    r = auditor.get(f"/api/calls/{sid}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    assert r.get_json()["timeline"] == show(app, sid, "--json")["timeline"]


# --- One notice version per language ----------------------------------------------------


def test_the_notice_version_a_consent_rests_on_is_shown_once_and_explained(
        app, auditor, local_caller):
    sid = place_call(local_caller, ["1"]).call_sid
    doc = show(app, sid, "--json")
    html = call_page(auditor, sid)
    root = parse_html(html)
    version = doc["consent"]["notice_version"]

    # The parts are labelled as parts, with their own hashes, never as the notice version.
    parts = [ev for ev in doc["timeline"] if ev["kind"] == "notice.played"]
    assert len(parts) == 2
    for ev in parts:
        assert ev["title"].startswith("Notice part played (tr): ")
        assert ev["notice_part"]["part_hash"] != version
        assert f"part hash {ev['notice_part']['part_hash'][:12]}" in ev["detail"]
        assert "notice version" not in ev["detail"].replace("the notice version is", "")
    assert "in full" not in html and "in full" not in show(app, sid)

    # One notice per language: its version is recomputed from the parts heard and equals
    # the consent's; the decision links to it and to the explanation.
    [notice] = doc["notices"]
    assert notice["notice_version"] == version == notice["decision_records"]
    assert [p["prompt"] for p in notice["parts"]] == ["notice_intro", "notice_body"]
    section = root.find("div", id="notice-tr")
    assert section.get("data-notice-version") == version
    assert [d.get("data-notice-part") for d in section.findall("div", data_notice_part=True)] \
        == ["notice_intro", "notice_body"]
    assert section.find("blockquote").text == app.extensions["ivr_flows"].default.text(
        "notice_intro", "tr")
    decision = root.find("section", id="decision")
    links = [a.get("href") for a in decision.findall("a")]
    assert links == ["#notice-tr", "#what-is-a-notice-version"]
    note = root.find("p", id="what-is-a-notice-version").text
    assert "SHA-256" in note and "part hash" in note
    # The page names the version the consent rests on, and no part hash as a version.
    for ev in parts:
        assert f"notice version {ev['notice_part']['part_hash']}" not in html


# --- One name for an audio file ---------------------------------------------------------


def test_the_player_url_is_the_sha256_of_the_served_bytes(app, auditor, local_caller, client):
    sid = place_call(local_caller, ["1"]).call_sid
    root = parse_html(call_page(auditor, sid))
    players = root.findall("audio")
    assert players
    for player in players:
        shown = player.get("data-sha256")
        assert player.get("src") == f"/auditor/audio/{shown}.wav"
        r = auditor.get(player.get("src"))
        assert r.status_code == 200 and r.mimetype == "audio/wav"
        assert hashlib.sha256(r.data).hexdigest() == shown
    assert auditor.get(f"/auditor/audio/{'0' * 64}.wav").status_code == 404
    assert auditor.get("/auditor/audio/not-a-hash.wav").status_code == 404
    anonymous = app.test_client().get(players[0].get("src"))
    assert anonymous.status_code in (302, 401)


def test_a_replaced_file_is_not_served_under_the_old_hash(app, auditor, local_caller, audio_dir):
    sid = place_call(local_caller, ["1"]).call_sid
    src = parse_html(call_page(auditor, sid)).findall("audio")[0].get("src")
    sha = src.rsplit("/", 1)[1].removesuffix(".wav")
    files = [f for f in audio_dir.glob("*.wav")
             if hashlib.sha256(f.read_bytes()).hexdigest() == sha]
    assert files
    for f in files:
        f.write_bytes(f.read_bytes() + b"\0")
    assert auditor.get(src).status_code == 404


# --- Times you can trust ----------------------------------------------------------------


def test_an_end_stamped_in_whole_seconds_is_never_before_the_start(app, local_caller):
    caller = local_caller()
    caller.dial()
    started = stored_times(app, caller.call_sid).started_at
    # Twilio's Timestamp has whole seconds: the end it reports can precede our start.
    early = (started - timedelta(seconds=1)).replace(microsecond=0)
    caller.signed_post(caller.url("/voice/status"), caller.params(
        CallStatus="completed", SequenceNumber="1", Timestamp=format_datetime(early, usegmt=True)))
    call = stored_times(app, caller.call_sid)
    assert call.started_at <= call.answered_at <= call.ended_at
    doc = show(app, caller.call_sid, "--json")
    assert doc["started_at"] <= doc["answered_at"] <= doc["ended_at"]
    assert (doc["duration"], doc["duration_source"]) == (0, "timestamps")


def test_duration_is_twilios_when_it_sends_one(app, local_caller, auditor):
    caller = local_caller()
    caller.dial()
    caller.status("completed", duration=17)
    doc = show(app, caller.call_sid, "--json")
    assert (doc["duration"], doc["duration_source"]) == (17, "twilio")
    assert "duration  17 s (Twilio's CallDuration)" in show(app, caller.call_sid)
    duration = parse_html(call_page(auditor, caller.call_sid)).find("dd", id="duration").text
    assert duration.startswith("17 s")


def test_duration_from_our_times_when_twilio_sends_none(app, local_caller):
    caller = local_caller()
    caller.dial()
    with database(app).sessionmaker() as s, s.begin():
        call = s.get(Call, caller.call_sid)
        call.started_at = call.answered_at = datetime(2026, 11, 30, 7, 39, 51, 367000,
                                                      tzinfo=UTC)
    end = datetime(2026, 11, 30, 7, 40, 33, tzinfo=UTC)
    caller.signed_post(caller.url("/voice/status"), caller.params(
        CallStatus="completed", SequenceNumber="1", Timestamp=format_datetime(end, usegmt=True)))
    doc = show(app, caller.call_sid, "--json")
    assert (doc["duration"], doc["duration_source"]) == (42, "timestamps")
    assert "duration  42 s (from our answer and end times)" in show(app, caller.call_sid)


def test_an_unfinished_call_prints_dashes_not_none(app, local_caller, auditor):
    caller = local_caller()
    caller.dial()
    text = show(app, caller.call_sid)
    assert "None" not in text
    assert "  duration  —\n" in text and "  ended     —\n" in text
    assert "— (no consent decision was recorded)" in text
    doc = show(app, caller.call_sid, "--json")
    assert doc["duration"] is None and doc["duration_source"] is None and doc["ended_at"] is None
    html = call_page(auditor, caller.call_sid)
    assert "None" not in html
    assert parse_html(html).find("dd", id="duration").text == "—"


def test_every_time_in_calls_show_is_istanbul_with_utc_in_brackets(app, local_caller):
    sid = place_call(local_caller, ["1"]).call_sid
    text = show(app, sid)
    stamps = LOCAL_WITH_UTC.findall(text)
    assert len(stamps) >= 10
    for stamp in stamps:
        local, utc = re.match(r"(.*) Europe/Istanbul \(UTC (.*)\)", stamp).groups()
        moment = datetime.fromisoformat(utc.replace("Z", "+00:00"))
        assert (moment + timedelta(hours=3)).strftime("%d.%m.%Y %H:%M:%S") == local
    # No other zone label, and no bare ISO time outside the brackets.
    for label in ("(UTC)", "TRT", "TSİ", "Turkey time"):
        assert label not in text
    assert len(ISO.findall(text)) == len(stamps)


def test_iys_pending_writes_times_with_the_one_label(app, local_caller):
    place_call(local_caller, ["1"])
    result = app.test_cli_runner().invoke(cli, ["iys", "pending"])
    assert result.exit_code == 0, result.output
    assert "collected and deadline in Europe/Istanbul (UTC in brackets)" in result.output
    lines = [x for x in result.output.splitlines() if "collected " in x and "deadline " in x
             and "UTC in brackets" not in x]
    assert lines
    for line in lines:
        assert len(LOCAL_WITH_UTC.findall(line)) == 2, line
    assert "TRT" not in result.output and "None" not in result.output


@pytest.mark.parametrize("typed", ["{d:%d.%m.%Y}", "{d:%Y-%m-%d}"])
def test_search_takes_days_as_written_in_the_tables(auditor, local_caller, typed):
    sid = place_call(local_caller, ["1"]).call_sid
    from zoneinfo import ZoneInfo

    today = datetime.now(ZoneInfo("Europe/Istanbul")).date()
    value = typed.format(d=today)
    r = auditor.get(f"/auditor/?since={value}&until={value}")
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert f'href="/auditor/calls/{sid}"' in html
    root = parse_html(html)
    field = root.find("form", id="search").find("input", name="since")
    assert field.get("type") == "text" and field.get("value") == f"{today:%d.%m.%Y}"
    assert re.fullmatch(field.get("pattern"), f"{today:%d.%m.%Y}")


def test_exports_and_the_search_list_use_the_same_duration(app, local_caller, auditor):
    from tests.support.auditor import csrf_token

    caller = local_caller()
    caller.dial()
    with database(app).sessionmaker() as s, s.begin():
        call = s.get(Call, caller.call_sid)
        call.started_at = call.answered_at = datetime(2026, 11, 30, 7, 39, 51, tzinfo=UTC)
    caller.signed_post(caller.url("/voice/status"), caller.params(
        CallStatus="completed", SequenceNumber="1",
        Timestamp=format_datetime(datetime(2026, 11, 30, 7, 40, 20, tzinfo=UTC), usegmt=True)))
    token = csrf_token(auditor, "/auditor/")
    r = auditor.post("/auditor/export.json", data={"csrf_token": token,
                                                   "call_sid": caller.call_sid})
    [row] = r.get_json()["rows"]
    assert row["duration"] == 29 and row["ended_at"] == "2026-11-30T07:40:20Z"
    listed = parse_html(auditor.get(f"/auditor/?call_sid={caller.call_sid}").get_data(
        as_text=True)).find("table").findall("td")
    assert "29 s" in [td.text for td in listed]
