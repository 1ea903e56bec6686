"""Withdrawal, as easy as consent: one key in the call, or an agent through the API.
A person's status per channel is their latest decision for it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from ivr.domain.flow import load_flow
from ivr.storage.models import AuditEntry, Consent
from tests.integration.conftest import ROOT
from tests.support.lifecycle import PHONE, add_consent, run_cli, session, status, token

FLOW = load_flow(ROOT / "flows" / "consent.yaml")


def texts(turn) -> list[str]:
    return [h.text for h in turn.heard]


def consents(app) -> list[Consent]:
    s = session(app)
    try:
        return list(s.scalars(select(Consent).order_by(Consent.id)))
    finally:
        s.close()


def test_a_caller_with_consent_withdraws_with_one_key(caller, live_app):
    app = live_app.app
    first = caller()
    last = first.run(["1"])
    assert FLOW.text("confirm_granted", "tr") in texts(last)

    second = caller()  # the same number calls again
    turn = second.dial()
    assert texts(turn)[-1] == FLOW.text("question_withdraw", "tr")
    assert "Daha önce verdiğiniz izni geri almak için 3'e basın;" in texts(turn)[-1]
    turn = second.press(turn, "3")
    assert FLOW.text("confirm_withdrawn", "tr") in texts(turn)
    assert turn.end == "hangup"
    second.hang_up()

    rows = consents(app)
    assert [r.decision for r in rows] == ["granted", "withdrawn"]
    grant, withdrawal = rows
    assert withdrawal.call_sid == second.call_sid and withdrawal.digits == "3"
    assert withdrawal.source == "ivr" and withdrawal.channels == ["ARAMA", "MESAJ", "EPOSTA"]
    assert withdrawal.notice_version == grant.notice_version  # the notice was heard first
    assert grant.decision == "granted"  # a new event: the grant is never updated
    st = status(app)
    assert {c: v["status"] for c, v in st.items()} == {
        "ARAMA": "withdrawn", "MESAJ": "withdrawn", "EPOSTA": "withdrawn"}
    s = session(app)
    kinds = list(s.scalars(select(AuditEntry.kind).where(AuditEntry.ref == second.call_sid)))
    s.close()
    assert "consent.withdrawn" in kinds
    # The auditors' replay re-runs the call (the withdrawal key was offered) and agrees.
    replay = run_cli(app, "audit", "replay", second.call_sid)
    assert "withdrawn" in replay.output

    # Having withdrawn, the third call offers no withdrawal and key 3 is invalid there.
    third = caller()
    turn = third.dial()
    assert texts(turn)[-1] == FLOW.text("question", "tr")
    turn = third.press(turn, "3")
    assert FLOW.text("invalid", "tr") in texts(turn)


def test_withdrawal_in_english(caller, live_app):
    caller().run(["1"])
    c = caller()
    turn = c.dial()
    turn = c.press(turn, "0")  # English: the notice again, then the question in English
    assert texts(turn)[-1] == FLOW.text("question_withdraw", "en")
    turn = c.press(turn, "3")
    assert FLOW.text("confirm_withdrawn", "en") in texts(turn)
    rows = consents(live_app.app)
    assert rows[-1].decision == "withdrawn" and rows[-1].language == "en"


def test_a_caller_without_consent_cannot_press_3(local_caller, app):
    c = local_caller()
    turn = c.dial()
    assert texts(turn)[-1] == FLOW.text("question", "tr")
    for _ in range(3):
        turn = c.press(turn, "3")
    assert FLOW.text("confirm_no_input", "tr") in texts(turn)
    assert [r.decision for r in consents(app)] == ["no_input"]


def post(client, secret, body, key=None):
    headers = {"Authorization": f"Bearer {secret}"}
    if key:
        headers["Idempotency-Key"] = key
    return client.post("/api/consents/withdrawals", json=body, headers=headers)


def test_an_agent_records_a_withdrawal_through_the_api(app, client):
    add_consent(app, PHONE, "granted", datetime.now(UTC) - timedelta(days=2))
    agent = token(app, "agent", "ayse")
    r = post(client, agent, {"phone": "0532 123 45 67", "channels": ["MESAJ"],
                             "reason": "Müşteri SMS istemediğini telefonda söyledi"})
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    [event] = body["events"]
    assert event["decision"] == "withdrawn" and event["source"] == "api"
    assert event["channels"] == ["MESAJ"] and event["phone"] == PHONE
    assert event["reason"] == "Müşteri SMS istemediğini telefonda söyledi"
    s = session(app)
    from ivr.storage.accounts import User

    user = s.scalar(select(User).where(User.name == "ayse"))
    assert event["agent_id"] == str(user.id) and body["agent"]["name"] == "ayse"
    entry = s.scalars(select(AuditEntry).where(AuditEntry.kind == "consent.withdrawn")).one()
    s.close()
    data = json.loads(entry.body)["data"]
    assert data["source"] == "api" and data["phone"] != PHONE and "reason" not in data
    assert {c: v["status"] for c, v in body["status"].items()} == {
        "ARAMA": "granted", "MESAJ": "withdrawn", "EPOSTA": "granted"}
    # Still granted for two channels: the next call offers withdrawal (key 3).
    cli_status = status(app)
    assert cli_status["MESAJ"]["status"] == "withdrawn"
    assert cli_status["MESAJ"]["source"] == "api"


def test_api_withdrawal_defaults_to_every_channel_and_admins_may_too(app, client):
    admin = token(app, "admin")
    r = post(client, admin, {"phone": PHONE, "reason": "KVKK başvurusu"})
    assert r.status_code == 201
    assert r.get_json()["events"][0]["channels"] == ["ARAMA", "MESAJ", "EPOSTA"]


def test_api_withdrawal_is_idempotent(app, client):
    agent = token(app, "agent")
    body = {"phone": PHONE, "channels": ["ARAMA", "EPOSTA"], "reason": "istemiyor"}
    first = post(client, agent, body, key="k-123")
    again = post(client, agent, body, key="k-123")
    assert first.status_code == again.status_code == 201
    assert first.get_json()["events"] == again.get_json()["events"]
    assert len(consents(app)) == 1
    other = post(client, agent, {**body, "channels": ["MESAJ"]}, key="k-123")
    assert other.status_code == 422
    assert len(consents(app)) == 1
    s = session(app)
    n = s.scalar(select(func.count()).select_from(AuditEntry)
                 .where(AuditEntry.kind == "consent.withdrawn"))
    s.close()
    assert n == 1


def test_api_withdrawal_access_and_bad_input(app, client):
    agent, auditor = token(app, "agent"), token(app, "auditor")
    ok = {"phone": PHONE, "reason": "x"}
    assert client.post("/api/consents/withdrawals", json=ok).status_code == 401
    assert post(client, "ivr_not-a-token", ok).status_code == 401
    assert post(client, auditor, ok).status_code == 403
    bad = [
        ({"reason": "x"}, "phone"),
        ({"phone": "hello", "reason": "x"}, "phone"),
        ({"phone": 905321234567, "reason": "x"}, "phone"),
        ({"phone": PHONE}, "reason"),
        ({"phone": PHONE, "reason": "  "}, "reason"),
        ({"phone": PHONE, "reason": "x" * 1001}, "reason"),
        ({"phone": PHONE, "reason": "x", "channels": []}, "channels"),
        ({"phone": PHONE, "reason": "x", "channels": ["FAX"]}, "FAX"),
        ({"phone": PHONE, "reason": "x", "channels": "ARAMA"}, "channels"),
        ({"phone": PHONE, "reason": "x", "decision": "granted"}, "decision"),
    ]
    for body, word in bad:
        r = post(client, agent, body)
        assert r.status_code == 400, body
        assert word in r.get_json()["message"]
    r = client.post("/api/consents/withdrawals", data="not json",
                    headers={"Authorization": f"Bearer {agent}"})
    assert r.status_code == 400 and r.is_json
    r = post(client, agent, ok, key="x" * 151)
    assert r.status_code == 400
    assert consents(app) == []


def test_status_after_grant_withdraw_grant(app):
    t0 = datetime.now(UTC) - timedelta(days=10)
    assert {v["status"] for v in status(app).values()} == {"none"}
    add_consent(app, PHONE, "granted", t0)
    assert {v["status"] for v in status(app).values()} == {"granted"}
    wid = add_consent(app, PHONE, "withdrawn", t0 + timedelta(days=1), source="api")
    st = status(app)
    assert {v["status"] for v in st.values()} == {"withdrawn"}
    assert st["ARAMA"]["consent_id"] == wid and st["ARAMA"]["source"] == "api"
    gid = add_consent(app, PHONE, "granted", t0 + timedelta(days=2), channels=["ARAMA"])
    st = status(app)
    assert st["ARAMA"]["status"] == "granted" and st["ARAMA"]["consent_id"] == gid
    assert st["MESAJ"]["status"] == st["EPOSTA"]["status"] == "withdrawn"
    # Silence is never a decision: it changes no channel.
    add_consent(app, PHONE, "no_input", t0 + timedelta(days=3))
    assert status(app)["ARAMA"]["status"] == "granted"
    assert [c.decision for c in consents(app)] == ["granted", "withdrawn", "granted", "no_input"]
    text = run_cli(app, "consents", "status", PHONE).output
    assert "ARAMA    granted" in text and "MESAJ    withdrawn" in text
    assert "Europe/Istanbul (UTC " in text and "None" not in text
    blank = run_cli(app, "consents", "status", "+905329998877").output
    assert "ARAMA    none       —" in blank
    bad = run_cli(app, "consents", "status", "nonsense", ok=False)
    assert bad.exit_code != 0 and "PHONE" in bad.output


def test_mixed_channels_silence_keeps_each_and_2_withdraws_the_rest(caller, live_app):
    """Granted on two channels, withdrawn on one (an agent, through the API): the caller is
    still a consenter. Silence keeps every channel as it was, and says so; 2 withdraws."""
    app = live_app.app
    caller().run(["1"])
    agent = token(app, "agent")
    r = post(app.test_client(), agent, {"phone": PHONE, "channels": ["MESAJ"], "reason": "x"})
    assert r.status_code == 201
    mixed = {"ARAMA": "granted", "MESAJ": "withdrawn", "EPOSTA": "granted"}

    c = caller()
    c.run(["t", "t", "t"])
    assert c.turns[0].heard[-1].text == FLOW.text("question_withdraw", "tr")
    assert texts(c.turns[-1]) == [FLOW.text("confirm_no_input_kept", "tr"),
                                  FLOW.text("goodbye", "tr")]
    assert {ch: v["status"] for ch, v in status(app).items()} == mixed

    c = caller()
    c.run(["2"])
    assert FLOW.text("confirm_withdrawn", "tr") in texts(c.turns[-1])
    assert consents(app)[-1].decision == "withdrawn" and consents(app)[-1].digits == "2"
    assert {v["status"] for v in status(app).values()} == {"withdrawn"}
