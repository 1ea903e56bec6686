"""Agent transfers end to end: the API, the real twilio client against a local "Twilio",
the transferred caller in the consent flow, and the way back.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import select

from ivr.domain.flow import load_flow
from ivr.domain.state_token import read_transfer_token
from ivr.storage.models import AuditEntry, Consent, FlowRun
from ivr.web.current import session
from tests.integration.conftest import ROOT
from tests.support.transfer import (
    ACCOUNT,
    QUEUE,
    auth,
    follow,
    get_transfer,
    make_user,
    post_transfer,
    texts,
    twilio,
)

__all__ = ["twilio"]  # the autouse fixture, so pytest finds it here

FLOW = load_flow(ROOT / "flows" / "consent.yaml")
TR, EN = (lambda p: FLOW.text(p, "tr")), (lambda p: FLOW.text(p, "en"))


def transfer_live_call(app, client, local_caller, twilio, return_to=QUEUE):
    """Agent ayse sends a caller on a live call into the flow: (token, caller, status, doc)."""
    _agent, token = make_user(app, "ayse", "agent")
    c = local_caller(account_sid=ACCOUNT)
    twilio.calls[c.call_sid] = "in-progress"
    status, doc, _ = post_transfer(client, token, "k", {"call_sid": c.call_sid,
                                                         "return_to": return_to})
    return token, c, status, doc


def audit_kinds(app, call_sid: str) -> list[str]:
    with app.app_context():
        s = session()
        with s.begin():
            return list(s.scalars(select(AuditEntry.kind).where(AuditEntry.ref == call_sid)
                                  .order_by(AuditEntry.seq)))


def test_agent_transfers_a_live_call_and_gets_the_caller_back(live_app, twilio, caller):
    app = live_app.app
    agent_id, token = make_user(app, "ayse", "agent")
    c = caller(account_sid=ACCOUNT)
    twilio.calls[c.call_sid] = "in-progress"

    # 1. The agent asks for the transfer.
    r = requests.post(f"{live_app.url}/api/transfers", timeout=30,
                      json={"call_sid": c.call_sid, "return_to": QUEUE},
                      headers=auth(token, "transfer-1"))
    assert r.status_code == 201, r.text
    doc = r.json()
    tid = doc["id"]
    assert r.headers["Location"] == f"/api/transfers/{tid}" == doc["status_url"]
    assert doc["status"] == "requested"
    assert doc["agent"] == {"id": agent_id, "name": "ayse"}
    assert doc["redirected_at"] and doc["in_flow_at"] is None

    # 2. "Twilio" got exactly one update of that call, with our URL, as the account.
    [update] = twilio.updates()
    assert update.path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{c.call_sid}.json"
    assert update.authorized
    assert update.form["Method"] == "POST" and set(update.form) == {"Url", "Method"}
    url = urlsplit(update.form["Url"])
    query = parse_qs(url.query)
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{live_app.url}/voice/transfer"
    assert query["transfer"] == [tid]
    # The transfer's facts travel in the URL (Twilio signs it), so its flow is planned
    # without reading the transfer first.
    assert read_transfer_token(query["t"][0]) == {
        "flow_id": "kvkk-consent", "language": None, "return_to": QUEUE}

    # 3. Twilio fetches that URL for the call: the caller hears what an inbound caller hears.
    first = follow(c, update.form["Url"])
    inbound = caller().dial()
    assert texts(first) == texts(inbound)
    assert texts(first) == [TR("greeting"), TR("language_offer"), TR("notice_intro"),
                            TR("notice_body"), TR("question")]
    assert first.recording_started
    assert requests.get(f"{live_app.url}/api/transfers/{tid}", headers=auth(token),
                        timeout=30).json()["status"] == "in_flow"
    last = c.press(first, "1")

    # 4. The consent carries the agent and the transfer.
    with app.app_context():
        s = session()
        with s.begin():
            [consent] = s.scalars(select(Consent).where(Consent.call_sid == c.call_sid))
            assert consent.decision == "granted"
            assert consent.agent_id == agent_id
            assert consent.transfer_id == tid
            assert consent.phone_hmac  # the caller, from Twilio's From
            run = s.scalar(select(FlowRun).where(FlowRun.transfer_id == tid))
            assert run.origin == f"transfer:{tid}" and run.agent_id == agent_id

    # 5. The caller is told, and goes back to the agent's queue.
    assert texts(last) == [TR("confirm_granted"), TR("return_queue")]
    assert last.end == "enqueue:sales"
    assert [el.tag for el in ET.fromstring(last.twiml)][-1] == "Enqueue"

    # 6. The agent sees it all.
    r = requests.get(f"{live_app.url}/api/transfers/{tid}", headers=auth(token), timeout=30)
    assert r.status_code == 200
    doc = r.json()
    assert doc["status"] == "returned"
    assert doc["decision"] == "granted"
    assert doc["consent_id"] == consent.id
    assert doc["error"] is None and doc["failed_at"] is None
    stamps = [doc[k] for k in ("requested_at", "redirected_at", "in_flow_at", "decided_at",
                               "returned_at")]
    assert all(stamps) and stamps == sorted(stamps)
    kinds = audit_kinds(app, c.call_sid)
    assert [k for k in kinds if k.startswith("transfer.")] == [
        "transfer.requested", "transfer.redirected", "transfer.in_flow", "transfer.decided",
        "transfer.returned"]
    assert kinds.index("consent.decided") < kinds.index("transfer.decided")
    assert len(twilio.updates()) == 1


@pytest.mark.parametrize("return_to,language,keys,end,heard", [
    pytest.param({"type": "dial", "number": "0212 222 33 44"}, None, ["2"], "dial:+902122223344",
                 [TR("confirm_declined"), TR("return_dial")], id="dial-number"),
    pytest.param({"type": "dial", "client": "ayse"}, "en", ["1"], "dial:ayse",
                 [EN("confirm_granted"), EN("return_dial")], id="dial-client-english"),
    pytest.param({"type": "hangup"}, None, ["t", "t", "t"], "hangup",
                 [TR("confirm_no_input"), TR("return_hangup")], id="hangup-after-silence"),
])
def test_return_to_dial_and_hangup(app, client, local_caller, twilio, return_to, language,
                                   keys, end, heard):
    _agent, token = make_user(app, "ayse", "agent")
    c = local_caller(account_sid=ACCOUNT)
    twilio.calls[c.call_sid] = "in-progress"
    body = {"call_sid": c.call_sid, "return_to": return_to}
    if language:
        body["language"] = language
    status, doc, _ = post_transfer(client, token, "k", body)
    assert status == 201, doc
    turn = follow(c, twilio.updates()[0].form["Url"])
    for key in keys:
        turn = c.press(turn, "" if key == "t" else key)
    assert turn.end == end
    assert texts(turn) == heard
    status, doc = get_transfer(client, token, doc["id"])
    assert doc["status"] == "returned"
    assert doc["decision"] == {"dial:+902122223344": "declined", "dial:ayse": "granted",
                               "hangup": "no_input"}[end]
    assert doc["language"] == language


def test_the_number_to_dial_never_enters_the_audit_chain(app, client, local_caller, twilio):
    token, c, status, _doc = transfer_live_call(
        app, client, local_caller, twilio, {"type": "dial", "number": "+902122223344"})
    assert status == 201
    with app.app_context():
        s = session()
        with s.begin():
            bodies = list(s.scalars(select(AuditEntry.body)))
    assert any('"transfer.requested"' in b and "number_hmac" in b for b in bodies)
    assert not any("2122223344" in b for b in bodies)


def test_caller_hangs_up_after_the_redirect_before_the_flow(app, client, local_caller, twilio):
    token, c, status, doc = transfer_live_call(app, client, local_caller, twilio)
    assert status == 201
    assert c.hang_up().status == 200
    status, doc = get_transfer(client, token, doc["id"])
    assert doc["status"] == "failed"
    assert doc["error"]["reason"] == "call_ended"
    assert doc["failed_at"] and doc["in_flow_at"] is None


def test_caller_hangs_up_in_the_flow(app, client, local_caller, twilio):
    token, c, status, doc = transfer_live_call(app, client, local_caller, twilio)
    follow(c, twilio.updates()[0].form["Url"])
    assert c.hang_up().status == 200
    status, doc = get_transfer(client, token, doc["id"])
    assert doc["status"] == "failed"
    assert doc["error"]["reason"] == "hung_up_in_flow"
    assert doc["decision"] is None and doc["in_flow_at"]
    with app.app_context():
        s = session()
        with s.begin():
            assert s.scalar(select(Consent).where(Consent.call_sid == c.call_sid)) is None


def test_a_retried_webhook_changes_nothing(app, client, local_caller, twilio):
    token, c, _s, doc = transfer_live_call(app, client, local_caller, twilio)
    url = twilio.updates()[0].form["Url"]
    first = c.signed_post(url, c.params(), token="same-token")
    again = c.signed_post(url, c.params(), token="same-token")
    other = c.signed_post(url, c.params())  # a fresh fetch of the same transfer
    assert first.body == again.body == other.body
    kinds = audit_kinds(app, c.call_sid)
    assert kinds.count("transfer.in_flow") == 1
    assert kinds.count("call.started") == 1


def test_a_forged_transfer_webhook_gets_403_and_changes_nothing(app, client, local_caller,
                                                                twilio):
    token, c, _s, doc = transfer_live_call(app, client, local_caller, twilio)
    path = urlsplit(twilio.updates()[0].form["Url"])
    r = client.post(f"{path.path}?{path.query}", data=c.params(),
                    headers={"X-Twilio-Signature": "forged"})
    assert r.status_code == 403
    assert get_transfer(client, token, doc["id"])[1]["status"] == "requested"


def test_a_webhook_for_another_call_or_no_transfer_gets_valid_twiml(app, client, local_caller,
                                                                    twilio):
    token, c, _s, doc = transfer_live_call(app, client, local_caller, twilio)
    stranger = local_caller(account_sid=ACCOUNT)
    for url in (twilio.updates()[0].form["Url"], "http://ivr.test/voice/transfer?transfer=x",
                "http://ivr.test/voice/transfer"):
        turn = follow(stranger, url)
        assert turn.end == "hangup"  # the apology, never Twilio's application error
    assert get_transfer(client, token, doc["id"])[1]["status"] == "requested"


def test_the_agent_page(app, client, twilio, local_caller):
    token, c, _s, doc = transfer_live_call(app, client, local_caller, twilio)
    r = client.get(doc["page_url"])
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert doc["id"] in html and f'"/api/transfers/{doc["id"]}"' in html
    assert token not in html and c.call_sid not in html  # the data come from the API only
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert client.get("/agent/transfers/not-an-id").status_code == 404


def test_without_a_language_the_caller_keeps_the_one_they_chose(app, client, local_caller,
                                                                 twilio):
    _agent, token = make_user(app, "ayse", "agent")
    c = local_caller(account_sid=ACCOUNT)
    c.press(c.dial(), "0")  # English, in the inbound flow, before any decision
    twilio.calls[c.call_sid] = "in-progress"
    status, doc, _ = post_transfer(client, token, "k", {"call_sid": c.call_sid,
                                                         "return_to": QUEUE})
    assert status == 201 and doc["language"] is None
    first = follow(c, twilio.updates()[0].form["Url"])
    assert texts(first)[0] == EN("greeting") and texts(first)[-1] == EN("question")
    assert texts(c.press(first, "1")) == [EN("confirm_granted"), EN("return_queue")]
