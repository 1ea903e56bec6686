"""No consent is lost when PostgreSQL becomes unreachable mid-call: the caller hears valid
TwiML, the decision is spooled durably, and it is ingested in order when the DB is back."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from email.utils import format_datetime

import pytest
from sqlalchemy import func, select

from ivr.adapters.simulate import Caller, http_transport
from ivr.cli.main import cli
from ivr.domain.flow import load_flow
from ivr.domain.times import utcnow
from ivr.storage.models import AuditEntry, CallEvent, Consent
from ivr.web.current import database, spool
from tests.integration.conftest import (
    AUTH_TOKEN,
    ROOT,
    LiveServer,
    verified_chain_length,
)
from tests.support.tcp_proxy import proxied

FLOW = load_flow(ROOT / "flows" / "consent.yaml")


@pytest.fixture
def outage(app_config):
    """A live server whose PostgreSQL connection goes through a proxy the test controls.

    The outage path is about a networked database, so its tests run on PostgreSQL only."""
    proxy, app_config["DATABASE_URL"] = proxied(app_config["DATABASE_URL"])
    app_config["DB_CONNECT_TIMEOUT"] = "1.2"  # the production deadline these tests are about
    server = LiveServer(app_config)
    server.proxy = proxy
    server.start()
    yield server
    server.stop()
    proxy.close()


def consents(app) -> list[Consent]:
    with database(app).sessionmaker() as s:
        return list(s.scalars(select(Consent)))


def test_database_lost_mid_call_then_restored(outage):
    app, proxy = outage.app, outage.proxy
    c = Caller(outage.url, AUTH_TOKEN, http_transport())
    first = c.dial()
    proxy.cut()
    last = c.press(first, "1")  # the decision is taken while the database is away
    assert FLOW.text("confirm_granted", "tr") in [h.text for h in last.heard]
    assert last.end == "hangup"
    assert c.hang_up().status == 200
    assert c.signed_post(c.url("/voice/recording"), {
        "CallSid": c.call_sid, "AccountSid": c.account_sid, "RecordingSid": "RE" + "1" * 32,
        "RecordingStatus": "completed", "RecordingDuration": "12"}).status == 200
    runner = app.test_cli_runner()
    assert "3 record(s) waiting" in runner.invoke(cli, ["spool", "status"]).output
    # Still down: a drain stops without losing anything.
    result = runner.invoke(cli, ["spool", "drain"])
    assert result.exit_code == 1 and "database error" in result.output
    proxy.restore()
    result = runner.invoke(cli, ["spool", "drain"])
    assert result.exit_code == 0, result.output
    assert "applied 3" in result.output
    [consent] = consents(app)
    assert (consent.decision, consent.digits, consent.call_sid) == ("granted", "1", c.call_sid)
    shown = json.loads(runner.invoke(cli, ["calls", "show", c.call_sid, "--json"]).output)
    assert shown["status"] == "completed" and shown["recordings"][0]["status"] == "completed"
    assert verified_chain_length(app) > 0
    # Draining again, or Twilio retrying, records nothing twice.
    assert "applied 0" in runner.invoke(cli, ["spool", "drain"]).output
    assert len(consents(app)) == 1


def test_call_that_starts_during_the_outage_is_ingested_automatically(outage):
    app, proxy = outage.app, outage.proxy
    proxy.cut()
    c = Caller(outage.url, AUTH_TOKEN, http_transport())
    first = c.dial()
    root = ET.fromstring(first.twiml)
    assert root.find("Gather") is not None  # the notice and the question, without a DB
    turn = c.press(first, "5")
    turn = c.press(turn, "2")
    assert FLOW.text("confirm_declined", "tr") in [h.text for h in turn.heard]
    c.hang_up()
    proxy.restore()
    # The next webhook (any call) drains the spool first, in order.
    Caller(outage.url, AUTH_TOKEN, http_transport()).run(["1"])
    decisions = sorted((x.call_sid == c.call_sid, x.decision, x.digits) for x in consents(app))
    assert decisions == [(False, "granted", "1"), (True, "declined", "52")]
    with database(app).sessionmaker() as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry)) > 0
    assert verified_chain_length(app) > 0
    assert "0 record(s)" in app.test_cli_runner().invoke(cli, ["spool", "status"]).output


def test_a_hidden_caller_during_the_outage_is_never_asked(outage):
    """Without the database the rule holds: a caller with no phone number hears the notice
    and why nothing can be recorded; the spool's replay records no consent."""
    app, proxy = outage.app, outage.proxy
    proxy.cut()
    c = Caller(outage.url, AUTH_TOKEN, http_transport(), from_number="Anonymous")
    first = c.dial()
    assert first.heard[-1].text == FLOW.text("hidden_caller", "tr")
    last = c.press(first, "1")
    assert [h.text for h in last.heard] == [FLOW.text("hidden_caller_end", "tr"),
                                            FLOW.text("goodbye", "tr")]
    c.hang_up()
    proxy.restore()
    result = app.test_cli_runner().invoke(cli, ["spool", "drain"])
    assert result.exit_code == 0 and "applied 3" in result.output, result.output
    assert consents(app) == []
    shown = json.loads(app.test_cli_runner().invoke(
        cli, ["calls", "show", c.call_sid, "--json"]).output)
    assert shown["status"] == "completed" and shown["consents"] == []
    assert verified_chain_length(app) > 0


def test_fallback_url_is_static_twiml(client):
    for method in (client.get, client.post):
        r = method("/voice/fallback")
        assert r.status_code == 200 and r.mimetype == "text/xml"
        root = ET.fromstring(r.data)
        assert [el.tag for el in root] == ["Say", "Say", "Hangup"]


def test_database_stops_answering_mid_call(outage):
    """A hung database (connections open, no answer) must not leave the caller waiting:
    the webhook gives up after IVR_DB_CONNECT_TIMEOUT and answers from the spool path."""
    app, proxy = outage.app, outage.proxy
    c = Caller(outage.url, AUTH_TOKEN, http_transport())
    first = c.dial()
    proxy.freeze()
    last = c.press(first, "1")  # would wait past Twilio's 15 s without the deadline
    assert FLOW.text("confirm_granted", "tr") in [h.text for h in last.heard]
    assert last.end == "hangup"
    assert c.hang_up().status == 200
    other = Caller(outage.url, AUTH_TOKEN, http_transport())
    turn = other.dial()  # a new call while it still hangs: new connections time out too
    assert ET.fromstring(turn.twiml).find("Gather") is not None
    runner = app.test_cli_runner()
    assert "3 record(s) waiting" in runner.invoke(cli, ["spool", "status"]).output
    proxy.restore()
    result = runner.invoke(cli, ["spool", "drain"])
    assert result.exit_code == 0, result.output
    [consent] = consents(app)
    assert (consent.decision, consent.digits, consent.call_sid) == ("granted", "1", c.call_sid)
    assert verified_chain_length(app) > 0
    assert "applied 0" in runner.invoke(cli, ["spool", "drain"]).output


def test_a_key_for_a_call_whose_start_still_waits_in_the_spool(outage):
    """The database is back, but the spool has not been drained yet (another worker holds
    the drain lock): the key press cannot find its run, so it waits in the spool behind
    the call's start instead of the caller hearing the apology."""
    app, proxy = outage.app, outage.proxy
    proxy.cut()
    c = Caller(outage.url, AUTH_TOKEN, http_transport())
    first = c.dial()
    proxy.restore()
    with app.app_context(), spool().lock(5) as got:
        assert got  # "another worker" is draining
        turn = c.press(first, "1")
    assert FLOW.text("confirm_granted", "tr") in [h.text for h in turn.heard]
    assert consents(app) == []
    result = app.test_cli_runner().invoke(cli, ["spool", "drain"])
    assert result.exit_code == 0 and "applied 2" in result.output, result.output
    [consent] = consents(app)
    assert (consent.decision, consent.digits, consent.call_sid) == ("granted", "1", c.call_sid)
    assert verified_chain_length(app) > 0


@pytest.mark.parametrize("field,poison", [
    ("Timestamp", "Fri, 31 Dec 9999 23:59:59 -0100"),
    ("SequenceNumber", "9007199254740992"),
])
def test_finding_1_a_poisoned_callback_during_the_outage_stops_nothing(outage, field, poison):
    """Issue 10, finding 1: PostgreSQL is away, a signed status callback carries a value no
    column holds, and a consent is spooled behind it. When the database is back, every
    call is served, the consent is stored and `spool drain` exits cleanly."""
    app, proxy = outage.app, outage.proxy
    c = Caller(outage.url, AUTH_TOKEN, http_transport())
    first = c.dial()
    proxy.cut()
    data = c.params(CallStatus="in-progress", SequenceNumber="1",
                    Timestamp=format_datetime(utcnow(), usegmt=True),
                    CallbackSource="call-progress-events")
    data[field] = poison
    assert c.signed_post(c.url("/voice/status"), data).status == 200
    last = c.press(first, "1")
    assert FLOW.text("confirm_granted", "tr") in [h.text for h in last.heard]
    with app.app_context():
        files = spool().pending()
        assert len(files) == 2
        for path in files:  # the caller's number is not on disk in clear
            assert c.from_number[1:].encode() not in path.read_bytes()
        kept = [spool().read(path) for path in files]
        assert [r["kind"] for r in kept] == ["status", "gather"]
        assert field not in kept[0]["form"]  # the spool holds only what the parser accepted
    proxy.restore()
    for _ in range(3):  # every later call is served normally (the first one drains)
        other = Caller(outage.url, AUTH_TOKEN, http_transport())
        assert FLOW.text("confirm_granted", "tr") in [h.text for h in other.run(["1"]).heard]
    decisions = [(x.call_sid == c.call_sid, x.decision) for x in consents(app)]
    assert sorted(decisions) == [(False, "granted")] * 3 + [(True, "granted")]
    with database(app).sessionmaker() as s:
        event = s.scalar(select(CallEvent).where(CallEvent.call_sid == c.call_sid))
    assert (event.sequence_number, event.status) == (
        (None, "in-progress") if field == "SequenceNumber" else (1, "in-progress"))
    assert event.twilio_timestamp is None if field == "Timestamp" else event.twilio_timestamp
    result = app.test_cli_runner().invoke(cli, ["spool", "drain"])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "applied 0, waiting 0, quarantined 0, left 0" in result.output
    status = app.test_cli_runner().invoke(cli, ["spool", "status"]).output
    assert "0 record(s) quarantined" in status
    assert verified_chain_length(app) > 0


def test_a_record_that_cannot_be_applied_is_quarantined_by_the_next_webhook(outage):
    """A record no parser vetted (a spool written by an earlier version, or a record whose
    own time cannot be stored) sits before a spooled consent. When PostgreSQL is back, the
    next webhook's drain quarantines it and goes on: that call and every later one are
    served, the consent is stored, and /readyz and /metrics say a record waits for an
    operator."""
    app, proxy = outage.app, outage.proxy
    c = Caller(outage.url, AUTH_TOKEN, http_transport())
    first = c.dial()
    proxy.cut()
    with app.app_context():
        spool().write({"kind": "status", "received_at": "9999-12-31T23:59:59-01:00",
                       "token": None, "form": {"CallSid": c.call_sid, "CallStatus": "ringing"}})
    assert FLOW.text("confirm_granted", "tr") in [h.text for h in c.press(first, "1").heard]
    proxy.restore()
    for _ in range(3):
        other = Caller(outage.url, AUTH_TOKEN, http_transport())
        assert FLOW.text("confirm_granted", "tr") in [h.text for h in other.run(["1"]).heard]
    assert sum(x.call_sid == c.call_sid for x in consents(app)) == 1
    assert len(consents(app)) == 4
    runner = app.test_cli_runner()
    listed = json.loads(runner.invoke(cli, ["spool", "quarantine", "list", "--json"]).output)
    assert [(q["call_sid"], q["kind"]) for q in listed] == [(c.call_sid, "status")]
    assert "date value out of range" in listed[0]["error"]
    result = runner.invoke(cli, ["spool", "drain"])
    assert result.exit_code == 0 and "applied 0, waiting 0, quarantined 0, left 0" in (
        result.output)
    with app.test_client() as client:
        ready = client.get("/readyz").get_json()
        assert ready["spool_quarantine"] == 1 and ready["status"] in ("degraded", "not ready")
        assert "ivr_spool_quarantined 1.0" in client.get("/metrics").get_data(as_text=True)
    assert verified_chain_length(app) > 0


def test_a_drain_stops_when_its_time_budget_is_spent(app):
    with app.app_context():
        sp = spool()
        for i in range(3):
            sp.write({"kind": "test", "i": i})
        applied = []
        report = sp.drain(applied.append, budget=0)
        assert (report.applied, report.stopped, applied) == (0, "time budget spent", [])
        report = sp.drain(applied.append)
        assert report.applied == 3 and [r["i"] for r in applied] == [0, 1, 2]
