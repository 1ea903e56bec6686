"""Signed callbacks with numbers and dates beyond what the databases hold: 200, the value
stored as absent, a warning with the call SID; a caller still hears the right TwiML.
(Issue 10, finding 2, webhooks)."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

import pytest
from sqlalchemy import func, select

from ivr.storage.models import AuditEntry, Call, CallEvent, Consent, Recording, WebhookRequest
from ivr.web.current import database
from tests.integration.test_webhooks import CALL, RECORDING, count, post

BEYOND = [str(2**31), str(2**53), str(2**63), str(2**64 + 1), str(2**100), "9" * 400,
          str(-2**31 - 1), str(-2**63), str(-2**64 - 1), str(-10**40)]
FAR_DATES = ["Fri, 31 Dec 9999 23:59:59 -0100", "Fri, 31 Dec 9999 23:59:59 +0000",
             "Mon, 01 Jan 0001 00:00:00 +0100", "Mon, 01 Jan 0001 00:00:00 +0000",
             "Sat, 01 Jan 2100 00:00:00 +0000", "Tue, 31 Dec 1969 23:59:59 +0000"]
STATUS = {**CALL, "CallStatus": "completed", "SequenceNumber": "4",
          "Timestamp": "Wed, 25 Nov 2026 20:00:42 +0000", "CallDuration": "42",
          "CallbackSource": "call-progress-events"}


def _warned(caplog, field: str) -> bool:
    return any(f"webhook field {field} ignored" in r.getMessage()
               and f"call_sid={CALL['CallSid']}" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("value", BEYOND)
@pytest.mark.parametrize("field", ["SequenceNumber", "CallDuration"])
def test_status_numbers_beyond_the_columns_are_absent(client, app, caplog, field, value):
    caplog.set_level(logging.WARNING)
    r = post(client, app, "/voice/status", {**STATUS, field: value})
    assert r.status_code == 200 and ET.fromstring(r.data).tag == "Response"
    assert _warned(caplog, field)
    with database(app).sessionmaker() as s:
        event = s.scalar(select(CallEvent))
        call = s.get(Call, CALL["CallSid"])
        if field == "SequenceNumber":
            assert event.sequence_number is None and call.duration == 42
        else:
            assert event.sequence_number == 4 and call.duration is None
        assert field not in event.data
        assert call.status == "completed"


@pytest.mark.parametrize("value", BEYOND)
@pytest.mark.parametrize("field", ["RecordingDuration", "RecordingChannels"])
def test_recording_numbers_beyond_the_columns_are_absent(client, app, caplog, field, value):
    caplog.set_level(logging.WARNING)
    r = post(client, app, "/voice/recording", {**RECORDING, field: value})
    assert r.status_code == 200
    assert _warned(caplog, field)
    with database(app).sessionmaker() as s:
        rec = s.get(Recording, RECORDING["RecordingSid"])
        assert rec.status == "completed"
        assert (rec.duration, rec.channels) == ((None, 2) if field == "RecordingDuration"
                                                else (41, None))


@pytest.mark.parametrize("when", FAR_DATES)
def test_far_dates_are_absent(client, app, caplog, when):
    caplog.set_level(logging.WARNING)
    assert post(client, app, "/voice/status", {**STATUS, "Timestamp": when}).status_code == 200
    assert post(client, app, "/voice/recording",
                {**RECORDING, "RecordingStartTime": when}).status_code == 200
    assert _warned(caplog, "Timestamp") and _warned(caplog, "RecordingStartTime")
    with database(app).sessionmaker() as s:
        event = s.scalar(select(CallEvent).where(CallEvent.kind == "status"))
        assert event.twilio_timestamp is None and event.sequence_number == 4
        assert s.get(Recording, RECORDING["RecordingSid"]).start_time is None
        assert s.get(Call, CALL["CallSid"]).ended_at is not None  # our own receipt time


def test_every_field_out_of_range_at_once_on_a_live_call(client, app):
    """The caller still hears the flow, and the consent is stored, around such callbacks."""
    first = post(client, app, "/voice/incoming", {**CALL, "SequenceNumber": str(2**64)})
    gather = ET.fromstring(first.data).find("Gather")
    assert gather is not None
    bad = {"SequenceNumber": str(2**70), "CallDuration": str(-2**63),
           "Timestamp": FAR_DATES[0], "RecordingDuration": str(2**53),
           "RecordingChannels": str(2**31), "RecordingStartTime": FAR_DATES[2]}
    assert post(client, app, "/voice/status",
                {**STATUS, **bad, "CallStatus": "in-progress"}).status_code == 200
    assert post(client, app, "/voice/recording", {**RECORDING, **bad}).status_code == 200
    path = gather.get("action")[len(app.config["PUBLIC_URL"]):]
    last = post(client, app, path, {**CALL, **bad, "Digits": "1"})
    assert last.status_code == 200 and ET.fromstring(last.data).find("Hangup") is not None
    with database(app).sessionmaker() as s:
        assert s.scalar(select(Consent.decision)) == "granted"
        assert s.scalar(select(func.count()).select_from(AuditEntry)) > 0


@pytest.mark.parametrize("path", ["/voice/status", "/voice/recording", "/voice/incoming",
                                  "/voice/gather?run=x&step=1"])
def test_a_5000_character_call_sid_is_a_clear_400(client, app, path):
    r = post(client, app, path, {**STATUS, "CallSid": "CA" + "a" * 4998})
    assert r.status_code == 400
    assert r.data == b"Bad request: CallSid is longer than 64 characters.\n"
    assert count(app, Call) == 0 and count(app, WebhookRequest) == 0


@pytest.mark.parametrize("step", [str(2**31), str(2**53), str(2**64 + 1), str(-2**63)])
def test_a_gather_step_beyond_the_columns_still_gets_twiml(client, app, step):
    first = ET.fromstring(post(client, app, "/voice/incoming", CALL).data)
    action = first.find("Gather").get("action")[len(app.config["PUBLIC_URL"]):]
    path = action.replace("step=1", f"step={step}")
    r = post(client, app, path, {**CALL, "Digits": "1"})
    assert r.status_code == 200 and ET.fromstring(r.data).tag == "Response"
