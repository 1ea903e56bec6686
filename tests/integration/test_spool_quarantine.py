"""No spooled record can stop the drain: a record that cannot be applied is quarantined with
its error, the records behind it (a consent) are stored, every later call is served, and
`python -m ivr spool quarantine list|show|retry|discard` handles it. Spool files are
encrypted; plain ones from before still drain."""

from __future__ import annotations

import json
import os
import secrets
import time
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.engine import make_url

from ivr.adapters.simulate import Caller, flask_transport
from ivr.cli.main import cli
from ivr.domain import twilio_form
from ivr.domain.times import utcnow
from ivr.services.calls import Context
from ivr.services.offline import callback, gather, incoming
from ivr.storage.models import AuditEntry, CallEvent, Consent
from ivr.web.current import apply_record, current_context, database, spool
from tests.integration.conftest import AUTH_TOKEN, verified_chain_length
from tests.integration.test_health import render_all_prompts
from tests.integration.test_observability import scrape, value

PHONE = "+905321234567"
NINE_NINE = "Fri, 31 Dec 9999 23:59:59 -0100"


@pytest.fixture
def ready_app(app):
    render_all_prompts(app)  # so /readyz says "ready" unless the spool says otherwise
    return app


def _ctx(app) -> Context:
    return current_context()


def _legacy(app, record: dict) -> str:
    """A plain JSON record as the spool wrote them before encryption."""
    name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.json"
    path = spool().directory / name
    spool().directory.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record), encoding="utf-8")
    return name.split(".")[0]


def _offline_call(app, sid: str, digits: str) -> tuple[dict, dict]:
    """The spool records of a call answered without the database: its start and one key."""
    ctx = _ctx(app)
    now = utcnow()
    fields = twilio_form.call_fields({"CallSid": sid, "From": PHONE, "To": "+902122223344",
                                      "Direction": "inbound", "CallStatus": "ringing"})
    twiml, start = incoming(ctx, fields, now)
    action = ET.fromstring(twiml).find("Gather").get("action")
    target = twilio_form.gather_target({k: v[0] for k, v in parse_qs(urlsplit(action).query)
                                        .items()}, sid)
    _twiml, key = gather(ctx, target, twilio_form.gather_input(
        {"CallSid": sid, "Digits": digits}), now)
    for record in (start, key):
        record.update(received_at=now.isoformat(), token=None)
    key["path"], start["path"] = "/voice/gather", "/voice/incoming"
    return start, key


def _consents(app) -> list[tuple[str, str]]:
    with database(app).sessionmaker() as s:
        return sorted((c.call_sid, c.decision) for c in s.scalars(select(Consent)))


def _readyz(client) -> tuple[int, dict]:
    r = client.get("/readyz")
    return r.status_code, r.get_json()


def test_poisoned_records_are_quarantined_and_the_consent_behind_them_is_stored(
        ready_app, client, runner):
    app = ready_app
    with app.app_context():
        sp = spool()
        start, key = _offline_call(app, "CA" + "1" * 32, "1")
        status = callback("status", twilio_form.status_callback(
            {"CallSid": "CA" + "1" * 32, "CallStatus": "completed", "SequenceNumber": "3"}))
        # A record whose own time cannot be stored (finding 1: "date value out of range").
        sp.write({**status, "received_at": "9999-12-31T23:59:59-01:00", "token": None})
        # A plain record from before the upgrade with the poison of finding 1 in its form:
        # it goes through the edge parser on replay, and is applied without those values.
        _legacy(app, {"kind": "status", "received_at": utcnow().isoformat(),
                      "form": {"CallSid": "CA" + "1" * 32, "CallStatus": "ringing",
                               "SequenceNumber": str(2**53), "Timestamp": NINE_NINE,
                               "From": PHONE}})
        # A plain gather record from before the upgrade whose step no column holds.
        bad_step = _legacy(app, {**key, "step": 9007199254740992})
        # A record another key wrote, a torn one, and one of an unknown kind.
        other = Fernet(Fernet.generate_key())
        (sp.directory / f"{time.time_ns():020d}-1-aaaaaaaa.spool").write_bytes(
            other.encrypt(b'{"kind": "status"}'))
        (sp.directory / f"{time.time_ns():020d}-1-bbbbbbbb.json").write_text("{")
        sp.write({"kind": "telepathy", "received_at": utcnow().isoformat(), "form": {}})
        sp.write(start)
        sp.write(key)
        assert sp.depth() == 8
    result = runner.invoke(cli, ["spool", "drain"])
    assert result.exit_code == 0, result.output
    assert "applied 3, waiting 0, quarantined 5, left 0" in result.output
    assert "Traceback" not in result.output
    assert _consents(app) == [("CA" + "1" * 32, "granted")]
    assert verified_chain_length(app) > 0
    with database(app).sessionmaker() as s:
        [event] = s.scalars(select(CallEvent).where(CallEvent.status == "ringing"))
        assert event.sequence_number is None and event.twilio_timestamp is None
    listed = json.loads(runner.invoke(cli, ["spool", "quarantine", "list", "--json"]).output)
    errors = {q["id"]: q["error"] for q in listed}
    assert len(listed) == 5
    assert "gather record without a step" in errors[bad_step]
    assert sorted(e.split(":")[0] for e in errors.values()) == [
        "OverflowError", "ValueError", "ValueError", "cannot decrypt", "not a spool record"]
    assert any("date value out of range" in e for e in errors.values())
    status_out = runner.invoke(cli, ["spool", "status"]).output
    assert "0 record(s) waiting" in status_out and "5 record(s) quarantined" in status_out
    assert value(scrape(client), "ivr_spool_quarantined") == 5
    code, body = _readyz(client)
    assert code == 200 and body["status"] == "degraded" and body["spool_quarantine"] == 5
    assert "spool quarantine list" in body["warnings"][0]
    # Every later call is served normally (another caller: a "2" from the consenter above
    # would be a withdrawal, see the truth table).
    later = Caller(app.config["PUBLIC_URL"], AUTH_TOKEN, flask_transport(client),
                   from_number="+905329990011")
    assert later.run(["2"]).end == "hangup"
    assert "declined" in {d for _s, d in _consents(app)}


def test_a_gather_for_a_step_never_reached_is_quarantined_after_the_bounded_wait(
        app_config, tmp_path):
    from ivr import create_app

    app_config["SPOOL_MAX_WAIT"] = "3"
    app = create_app(app_config)
    database(app).create_all()
    try:
        client = app.test_client()
        c = Caller(app.config["PUBLIC_URL"], AUTH_TOKEN, flask_transport(client))
        first = c.dial()
        ahead = first.gather_action.replace("step=1", "step=6")
        reply = c.signed_post(ahead, c.params(Digits="1"))
        assert reply.status == 200 and ET.fromstring(reply.body).tag == "Response"
        runner = app.test_cli_runner()
        assert "1 record(s) waiting" in runner.invoke(cli, ["spool", "status"]).output
        assert c.press(first, "1").end == "hangup"  # the real step is taken as usual
        assert _consents(app) == [(c.call_sid, "granted")]
        result = runner.invoke(cli, ["spool", "drain"])
        assert result.exit_code == 0 and "waiting 1, quarantined 0" in result.output
        time.sleep(3.1)
        other = Caller(app.config["PUBLIC_URL"], AUTH_TOKEN, flask_transport(client))
        assert other.run(["1"]).end == "hangup"  # its first webhook drains the spool
        with app.app_context():
            assert spool().depth() == 0
            [held] = spool().quarantined()
        assert held.call_sid == c.call_sid and held.kind == "gather"
        assert "waited 3 s for an earlier step" in held.error
        assert len(_consents(app)) == 2
    finally:
        database(app).engine.dispose()


def test_quarantine_show_retry_and_discard(app, runner):
    with app.app_context():
        sp = spool()
        sp.max_wait = 0
        start, key = _offline_call(app, "CA" + "2" * 32, "1")
        sp.write(key)  # its start is elsewhere (another server's spool): it cannot apply
        poison = callback("status", twilio_form.status_callback(
            {"CallSid": "CA" + "2" * 32, "CallStatus": "busy", "From": PHONE}))
        sp.write({**poison, "received_at": "9999-12-31T23:59:59-01:00"})
    result = runner.invoke(cli, ["spool", "drain"])
    assert result.exit_code == 0 and "quarantined 2" in result.output, result.output
    with app.app_context():
        gather_id, poison_id = [q.id for q in spool().quarantined()]

    shown = json.loads(runner.invoke(cli, ["spool", "quarantine", "show", poison_id]).output)
    assert shown["record"]["form"]["From"] == "[phone]" and PHONE not in json.dumps(shown)
    assert shown["record"]["form"]["CallStatus"] == "busy"
    assert "out of range" in shown["error"]

    # The call's start arrives (copied from the other server); the gather can go now.
    with app.app_context():
        spool().write(start)
    assert runner.invoke(cli, ["spool", "drain"]).exit_code == 0
    result = runner.invoke(cli, ["spool", "quarantine", "retry", gather_id])
    assert result.exit_code == 0, result.output
    assert "applied 1" in result.output
    assert _consents(app) == [("CA" + "2" * 32, "granted")]

    result = runner.invoke(cli, ["spool", "quarantine", "retry", poison_id])
    assert result.exit_code == 1 and "failed again" in result.output

    result = runner.invoke(cli, ["spool", "quarantine", "discard", poison_id,
                                "--reason", "its time is out of range"])
    assert result.exit_code == 0, result.output
    assert "no record in quarantine" in runner.invoke(
        cli, ["spool", "quarantine", "list"]).output
    with database(app).sessionmaker() as s:
        entry = s.scalar(select(AuditEntry).where(AuditEntry.kind == "spool.discarded"))
    data = json.loads(entry.body)["data"]
    assert entry.ref == "CA" + "2" * 32
    assert (data["record"], data["kind"], data["reason"]) == (
        poison_id, "status", "its time is out of range")
    assert len(data["file_sha256"]) == 64 and "out of range" in data["error"]
    assert verified_chain_length(app) > 0

    for command in ("show", "retry", "discard"):
        result = runner.invoke(cli, ["spool", "quarantine", command, poison_id])
        assert result.exit_code == 1 and "no quarantined record" in result.output


def test_spool_files_hold_no_phone_number_in_clear_and_plain_ones_still_drain(app, runner):
    with app.app_context():
        start, key = _offline_call(app, "CA" + "3" * 32, "2")
        path = spool().write(start)
        raw = path.read_bytes()
        for needle in (PHONE, PHONE[1:], PHONE[3:], "5321234567"):
            assert needle.encode() not in raw
        assert spool().read(path) == json.loads(json.dumps(start))
        _legacy(app, key)  # written before the upgrade, in clear
    result = runner.invoke(cli, ["spool", "drain"])
    assert result.exit_code == 0 and "applied 2" in result.output, result.output
    assert _consents(app) == [("CA" + "3" * 32, "declined")]


def test_a_quarantined_plain_record_is_kept_encrypted(app):
    with app.app_context():
        sp = spool()
        _legacy(app, {"kind": "status", "received_at": "9999-12-31T23:59:59-01:00",
                      "form": {"CallSid": "CA" + "4" * 32, "From": PHONE}})
        report = sp.drain(apply_record)
        assert len(report.quarantined) == 1
        files = list(sp.quarantine_dir.iterdir())
        assert all(PHONE[3:].encode() not in f.read_bytes() for f in files), files
        assert {f.suffix for f in files} == {".spool", ".error"}


def test_unreachable_database_keeps_records_in_the_spool(app, app_config):
    """Only "the database cannot be reached" stops a drain; nothing is quarantined for it."""
    from ivr import create_app

    with app.app_context():
        start, _key = _offline_call(app, "CA" + "5" * 32, "1")
        spool().write(start)
    # Nothing listens on port 9 of the loopback.
    app_config["DATABASE_URL"] = make_url(app_config["DATABASE_URL"]).set(
        host="127.0.0.1", port=9).render_as_string(hide_password=False)
    away = create_app(app_config)  # the same instance folder, so the same spool and key
    try:
        result = away.test_cli_runner().invoke(cli, ["spool", "drain"])
        assert result.exit_code == 1 and "(database error: OperationalError)" in result.output
        with away.app_context():
            assert spool().depth() == 1 and spool().quarantine_depth() == 0
    finally:
        database(away).engine.dispose()
    result = app.test_cli_runner().invoke(cli, ["spool", "drain"])
    assert result.exit_code == 0 and "applied 1" in result.output


@pytest.mark.parametrize("setting", ["soon", "-1", "inf", "nan"])
def test_a_bad_max_wait_is_a_configuration_error(app_config, setting):
    from ivr import create_app
    from ivr.domain.config import ConfigError

    app_config["SPOOL_MAX_WAIT"] = setting
    with pytest.raises(ConfigError, match="IVR_SPOOL_MAX_WAIT"):
        create_app(app_config)
