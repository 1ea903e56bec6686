"""Webhook contract: signatures, idempotency, ordering, and bad input."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from email.utils import format_datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from ivr.domain.times import utcnow
from ivr.storage.models import AuditEntry, Call, CallEvent, Consent, FlowRun, Recording, Turn
from ivr.web.current import database
from tests.integration.conftest import AUTH_TOKEN


def sign(url: str, data: dict, token: str = AUTH_TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, data)


def post(client, app, path: str, data: dict, *, token=AUTH_TOKEN, idem=None, signed_url=None):
    url = app.config["PUBLIC_URL"] + path
    headers = {"X-Twilio-Signature": sign(signed_url or url, data, token)}
    if idem:
        headers["I-Twilio-Idempotency-Token"] = idem
    return client.post(path, data=data, headers=headers)


def count(app, model) -> int:
    with database(app).sessionmaker() as s:
        return s.scalar(select(func.count()).select_from(model))


CALL = {"CallSid": "CA" + "a" * 32, "AccountSid": "AC" + "1" * 32, "From": "+905321234567",
        "To": "+902122223344", "CallStatus": "ringing", "Direction": "inbound",
        "ApiVersion": "2010-04-01"}


@pytest.mark.parametrize("headers", [
    pytest.param({}, id="missing"),
    pytest.param({"X-Twilio-Signature": "AAAA"}, id="garbage"),
    pytest.param({"X-Twilio-Signature": sign("http://ivr.test/voice/incoming", CALL, "wrong")},
                 id="wrong-token"),
    pytest.param({"X-Twilio-Signature": sign("http://other.host/voice/incoming", CALL)},
                 id="wrong-url"),
])
@pytest.mark.parametrize("path", ["/voice/incoming", "/voice/status", "/voice/recording",
                                  "/voice/gather?run=x&step=1"])
def test_forged_webhooks_get_403_and_store_nothing(client, app, headers, path):
    r = client.post(path, data=CALL, headers=headers)
    assert r.status_code == 403
    for model in (Call, CallEvent, FlowRun, Turn, AuditEntry):
        assert count(app, model) == 0


def test_tampered_parameter_is_rejected(client, app):
    headers = {"X-Twilio-Signature": sign("http://ivr.test/voice/incoming", CALL)}
    r = client.post("/voice/incoming", data={**CALL, "From": "+905559999999"}, headers=headers)
    assert r.status_code == 403


def test_reverse_proxy_validates_against_the_public_url(app_config):
    """Behind a TLS proxy the app sees http://internal:8000; Twilio signed the https URL."""
    from ivr import create_app

    app_config["PUBLIC_URL"] = "https://ivr.example.com/callcenter"
    app = create_app(app_config)
    database(app).create_all()
    client = app.test_client()
    signature = sign("https://ivr.example.com/callcenter/voice/incoming", CALL)
    r = client.post("/voice/incoming", data=CALL, base_url="http://10.0.0.5:8000",
                    headers={"X-Twilio-Signature": signature,
                             "X-Forwarded-Proto": "https", "Host": "10.0.0.5:8000"})
    assert r.status_code == 200
    gather = ET.fromstring(r.data).find("Gather")
    assert gather.get("action").startswith("https://ivr.example.com/callcenter/voice/gather?")
    database(app).engine.dispose()


@pytest.mark.parametrize("path", ["/voice/incoming", "/voice/status", "/voice/recording"])
def test_signed_request_without_callsid_is_a_clear_400(client, app, path):
    data = {k: v for k, v in CALL.items() if k != "CallSid"}
    r = post(client, app, path, data)
    assert r.status_code == 400
    assert b"CallSid" in r.data
    assert count(app, Call) == 0


def test_retried_incoming_gets_the_same_answer_and_stores_once(client, app):
    first = post(client, app, "/voice/incoming", CALL, idem="tok-1")
    again = post(client, app, "/voice/incoming", CALL, idem="tok-1")
    # A retry with a new token (Twilio's retry of the same call and step) is also the same.
    other = post(client, app, "/voice/incoming", CALL, idem="tok-2")
    assert first.status_code == again.status_code == other.status_code == 200
    assert first.data == again.data == other.data
    assert count(app, FlowRun) == 1 and count(app, Turn) == 1
    assert count(app, Call) == 1


def test_retried_gather_records_the_consent_once(client, app):
    first = ET.fromstring(post(client, app, "/voice/incoming", CALL).data)
    action = first.find("Gather").get("action")
    path = action[len(app.config["PUBLIC_URL"]):]
    data = {**CALL, "CallStatus": "in-progress", "Digits": "1"}
    a = post(client, app, path, data, idem="g-1")
    b = post(client, app, path, data, idem="g-1")
    c = post(client, app, path, data, idem="g-2")
    assert a.data == b.data == c.data
    assert count(app, Consent) == 1
    # A late, different answer for a step already taken changes nothing either.
    d = post(client, app, path, {**data, "Digits": "2"}, idem="g-3")
    assert d.data == a.data
    with database(app).sessionmaker() as s:
        assert s.scalar(select(Consent.decision)) == "granted"


def status(client, app, status_: str, seq: int, *, when=None, idem=None, duration=None):
    data = {**CALL, "CallStatus": status_, "SequenceNumber": str(seq),
            "Timestamp": format_datetime(when or utcnow(), usegmt=True),
            "CallbackSource": "call-progress-events"}
    if duration is not None:
        data["CallDuration"] = str(duration)
    return post(client, app, "/voice/status", data, idem=idem)


def test_out_of_order_and_duplicate_status_callbacks(client, app):
    post(client, app, "/voice/incoming", CALL)
    assert status(client, app, "completed", 3, duration=30).status_code == 200
    assert status(client, app, "ringing", 1).status_code == 200
    assert status(client, app, "in-progress", 2).status_code == 200
    assert status(client, app, "completed", 3, duration=30).status_code == 200  # duplicate
    assert status(client, app, "completed", 3, duration=30, idem="x").status_code == 200
    assert status(client, app, "completed", 3, duration=30, idem="x").status_code == 200
    with database(app).sessionmaker() as s:
        call = s.get(Call, CALL["CallSid"])
        assert call.status == "completed" and call.status_seq == 3 and call.duration == 30
        events = s.scalars(select(CallEvent).order_by(CallEvent.sequence_number)).all()
        assert [e.sequence_number for e in events] == [1, 2, 3]
        assert all(e.twilio_timestamp and e.received_at for e in events)


RECORDING = {"CallSid": CALL["CallSid"], "AccountSid": CALL["AccountSid"],
             "RecordingSid": "RE" + "b" * 32, "RecordingStatus": "completed",
             "RecordingDuration": "41", "RecordingChannels": "2",
             "RecordingSource": "StartCallRecordingTwiML", "RecordingTrack": "both",
             "RecordingStartTime": "Wed, 25 Nov 2026 20:00:00 +0000",
             "RecordingUrl": "https://api.twilio.com/2010-04-01/Accounts/AC/Recordings/RE",
             "ErrorCode": "0"}


def test_recording_callback_before_the_call_is_kept(client, app):
    assert post(client, app, "/voice/recording", RECORDING).status_code == 200
    assert post(client, app, "/voice/recording", RECORDING).status_code == 200  # duplicate
    assert post(client, app, "/voice/recording",
                {**RECORDING, "RecordingStatus": "in-progress"}).status_code == 200  # late
    assert post(client, app, "/voice/incoming", CALL).status_code == 200
    with database(app).sessionmaker() as s:
        rec = s.get(Recording, RECORDING["RecordingSid"])
        assert rec.call_sid == CALL["CallSid"]
        assert (rec.status, rec.duration, rec.channels, rec.track) == ("completed", 41, 2, "both")
        assert rec.source == "StartCallRecordingTwiML" and rec.error_code == "0"
        assert rec.start_time.isoformat() == "2026-11-25T20:00:00+00:00"
        assert s.get(Call, CALL["CallSid"]).phone_hmac is not None
        assert s.scalar(select(func.count()).select_from(CallEvent)) == 2


@pytest.mark.parametrize("digits", ["abc", "12", "", "٣", "1" * 5000, "#", "*"])
def test_unexpected_digits_count_as_an_invalid_key(client, app, digits):
    first = ET.fromstring(post(client, app, "/voice/incoming", CALL).data)
    path = first.find("Gather").get("action")[len(app.config["PUBLIC_URL"]):]
    r = post(client, app, path, {**CALL, "Digits": digits})
    assert r.status_code == 200 and r.mimetype == "text/xml"
    root = ET.fromstring(r.data)
    assert root.tag == "Response" and root.find("Gather") is not None
    assert count(app, Consent) == 0


def test_gather_for_an_unknown_run_still_gets_valid_twiml(client, app):
    r = post(client, app, "/voice/gather?run=nope&step=1", {**CALL, "Digits": "1"})
    assert r.status_code == 200
    assert ET.fromstring(r.data).tag == "Response"
    assert count(app, Consent) == 0


form_text = st.text(max_size=300)
garbage_forms = st.dictionaries(
    st.sampled_from(["CallSid", "From", "To", "Digits", "CallStatus", "SequenceNumber",
                     "Timestamp", "CallDuration", "Direction", "RecordingSid",
                     "RecordingStatus", "RecordingDuration", "RecordingStartTime",
                     "RecordingChannels", "Bogus", "AccountSid"]),
    form_text, max_size=12)


@pytest.mark.parametrize("path", ["/voice/incoming", "/voice/status", "/voice/recording",
                                  "/voice/gather?run=r&step=1"])
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(form=garbage_forms)
def test_garbage_input_never_causes_a_500(client, app, path, form):
    form = {k: v.replace("\x00", "") for k, v in form.items()}
    r = post(client, app, path, form)
    assert r.status_code < 500
    if r.status_code == 200 and path in ("/voice/incoming", "/voice/gather?run=r&step=1"):
        assert r.mimetype == "text/xml"
        assert ET.fromstring(r.data).tag == "Response"
    if not form.get("CallSid", "").strip():
        assert r.status_code == 400


def test_oversized_request_is_refused_cleanly(client, app):
    r = post(client, app, "/voice/incoming", {**CALL, "Bogus": "x" * 200_000})
    assert r.status_code == 413
