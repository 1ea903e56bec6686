"""Playing a call's recording on the call page: fetched from the
local Twilio stand-in with the account's Basic auth, streamed, each play an audit entry; a
recording retention destroyed says when and under which policy."""

from __future__ import annotations

import io
import math
import struct
import wave
from datetime import UTC, datetime, timedelta

import pytest

from ivr.storage.models import Recording
from tests.integration.test_lifecycle_retention import backdate_call
from tests.support.auditor import audit_bodies, login, make_user, parse_html
from tests.support.lifecycle import run_cli, session
from tests.support.transfer import ACCOUNT, twilio

__all__ = ["twilio"]  # the autouse fixture: the app's REST calls go to the stand-in

RSID = "RE" + "4" * 32


def tone_wav(seconds: float = 1.0, rate: int = 8000) -> bytes:
    """A short 440 Hz WAV, as Twilio serves recordings."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i
                                                                      / rate)))
                               for i in range(int(seconds * rate))))
    return buf.getvalue()


def recorded_call(make_caller, twilio, rsid: str = RSID, keys=("1",)):
    """A call with a completed recording that the stand-in holds; returns the caller."""
    c = make_caller(account_sid=ACCOUNT)
    c.run(list(keys))
    r = c.signed_post(c.url("/voice/recording"), c.params(
        RecordingSid=rsid, RecordingStatus="completed", RecordingDuration="1",
        RecordingChannels="1", RecordingSource="StartCallRecordingTwiML",
        RecordingUrl=f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{rsid}"))
    assert r.status == 200
    twilio.recordings[rsid] = tone_wav()
    return c


@pytest.fixture
def auditor(app, client):
    assert login(client, "selin", make_user(app, "selin", "auditor")).status_code == 302
    return client


def plays(app) -> list[dict]:
    return [b["data"] for b in audit_bodies(app, "auditor.access")
            if b["data"]["action"] == "play.recording"]


def test_an_auditor_plays_a_recording_and_the_play_is_audited(app, auditor, local_caller,
                                                              twilio):
    c = recorded_call(local_caller, twilio)
    doc = parse_html(auditor.get(f"/auditor/calls/{c.call_sid}").get_data(as_text=True))
    [player] = doc.findall("audio", data_recording=RSID)
    src = player.get("src")
    assert src == f"/auditor/calls/{c.call_sid}/recordings/{RSID}.wav"
    assert plays(app) == []  # showing the page plays nothing
    r = auditor.get(src)
    assert r.status_code == 200 and r.mimetype == "audio/wav"
    assert r.get_data() == twilio.recordings[RSID]
    assert r.headers["Cache-Control"] == "no-store"
    [asked] = twilio.media_requests
    assert asked.authorized and asked.path == \
        f"/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RSID}.wav"
    [play] = plays(app)
    assert (play["user"], play["call_sid"], play["recording_sid"], play["via"]) == (
        "selin", c.call_sid, RSID, "web")
    auditor.get(src)
    assert len(plays(app)) == 2  # every play
    # The call page lists the plays with the other accesses.
    page = auditor.get(f"/auditor/calls/{c.call_sid}").get_data(as_text=True)
    assert page.count("play.recording via web") == 2


@pytest.mark.parametrize("case,status", [
    ("gone_at_twilio", 404), ("wrong_credentials", 502), ("unknown_recording", 404),
    ("another_calls_recording", 404),
])
def test_a_recording_that_cannot_be_played_is_not_audited(app, app_config, auditor,
                                                          local_caller, twilio, case, status):
    c = recorded_call(local_caller, twilio)
    sid, call = RSID, c.call_sid
    if case == "gone_at_twilio":
        twilio.recordings.clear()
    elif case == "wrong_credentials":
        twilio.auth_token = "not-the-token"
    elif case == "unknown_recording":
        sid = "RE" + "5" * 32
    else:
        call = recorded_call(local_caller, twilio, "RE" + "6" * 32).call_sid
    r = auditor.get(f"/auditor/calls/{call}/recordings/{sid}.wav")
    assert r.status_code == status
    assert plays(app) == []


@pytest.mark.parametrize("role", [None, "agent"])
def test_only_the_workspace_roles_play_recordings(app, local_caller, twilio, role):
    c = recorded_call(local_caller, twilio)
    client = app.test_client()
    if role:
        login(client, "ali", make_user(app, "ali", role))
    r = client.get(f"/auditor/calls/{c.call_sid}/recordings/{RSID}.wav")
    assert r.status_code == (403 if role else 302)
    assert twilio.media_requests == [] and plays(app) == []


def test_a_destroyed_recording_says_when_and_under_which_policy(app, auditor, local_caller,
                                                               twilio):
    c = recorded_call(local_caller, twilio, keys=["h"])  # no decision: nothing keeps it
    backdate_call(app, c.call_sid, datetime.now(UTC) - timedelta(days=3 * 365))
    run_cli(app, "retention", "run")
    assert RSID not in twilio.recordings  # deleted at Twilio first, then its metadata
    s = session(app)
    assert s.get(Recording, RSID) is None
    s.close()
    [run] = audit_bodies(app, "retention.run")
    doc = parse_html(auditor.get(f"/auditor/calls/{c.call_sid}").get_data(as_text=True))
    row = doc.find("tr", data_recording=RSID)
    assert doc.find("audio", data_recording=RSID) is None
    days = run["data"]["policy_days"]["recording_metadata"]
    assert f"under policy recording_metadata ({days} days): retention period ended." in row.text
    when = row.find("time")
    assert when.get("datetime")[:10] == datetime.now(UTC).date().isoformat()
    assert auditor.get(f"/auditor/calls/{c.call_sid}/recordings/{RSID}.wav").status_code == 404


@pytest.mark.parametrize("given,served,ext", [("audio/x-wav", "audio/wav", "wav"),
                                              ("audio/wav; charset=binary", "audio/wav", "wav"),
                                              ("audio/mpeg", "audio/mpeg", "mp3")])
def test_a_recording_is_served_only_as_wav_or_mp3(app, auditor, local_caller, twilio, given,
                                                  served, ext):
    c = recorded_call(local_caller, twilio)
    twilio.media_type = given
    r = auditor.get(f"/auditor/calls/{c.call_sid}/recordings/{RSID}.wav")
    assert r.status_code == 200 and r.mimetype == served
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Content-Disposition"] == f'inline; filename="{RSID}.{ext}"'


@pytest.mark.parametrize("given", ["text/html", "image/svg+xml", "application/octet-stream",
                                   "text/plain", ""])
def test_a_recording_answered_as_anything_else_is_refused(app, auditor, local_caller, twilio,
                                                          given):
    c = recorded_call(local_caller, twilio)
    twilio.recordings[RSID] = b"<script>alert(document.cookie)</script>"
    twilio.media_type = given
    r = auditor.get(f"/auditor/calls/{c.call_sid}/recordings/{RSID}.wav")
    assert r.status_code == 502 and r.mimetype == "text/html"
    assert b"alert(document.cookie)" not in r.get_data()
    assert "WAV or MP3" in r.get_data(as_text=True)
    assert plays(app) == []  # nothing played, nothing audited as played
