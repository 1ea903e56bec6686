"""Transfers when things go wrong: Twilio's errors and silences, retries and concurrent
duplicates, calls already decided or already ended, accounts and roles, bad requests.
"""

from __future__ import annotations

import json
import socket
import threading

import pytest
import requests
from sqlalchemy import func, select

from ivr.storage.models import Consent, FlowRun
from ivr.web.current import session
from tests.integration.conftest import AUTH_TOKEN
from tests.support.fake_twilio import Failure, twilio_error
from tests.support.transfer import (
    ACCOUNT,
    QUEUE,
    auth,
    follow,
    get_transfer,
    make_user,
    post_transfer,
    transfers,
    twilio,
)

__all__ = ["twilio"]  # the autouse fixture, so pytest finds it here


SID = "CA" + "ab" * 16


def body(call_sid: str = SID, **more) -> dict:
    return {"call_sid": call_sid, "return_to": QUEUE, **more}


def count(app, model) -> int:
    with app.app_context():
        s = session()
        with s.begin():
            return s.scalar(select(func.count()).select_from(model))


# --- Twilio's answers -----------------------------------------------------------------

@pytest.mark.parametrize("setup,status,reason,code", [
    pytest.param(lambda fake: None, 404, "call_not_found", 20404, id="20404-unknown-call"),
    pytest.param(lambda fake: fake.calls.update({SID: "completed"}), 409,
                 "call_not_in_progress", 21220, id="21220-call-ended"),
    pytest.param(lambda fake: (fake.calls.update({SID: "in-progress"}),
                               setattr(fake, "auth_token", "another-token")), 502,
                 "twilio_auth_failed", 20003, id="20003-bad-credentials"),
    pytest.param(lambda fake: (fake.calls.update({SID: "in-progress"}), fake.fail_next.append(
        twilio_error(500, 20500, "An internal server error has occurred"))), 502,
                 "twilio_unavailable", 20500, id="500-json"),
    pytest.param(lambda fake: (fake.calls.update({SID: "in-progress"}), fake.fail_next.append(
        Failure(503, "<html>Service Unavailable</html>", "text/html"))), 502,
                 "twilio_unavailable", None, id="503-html"),
])
def test_twilio_errors_fail_the_transfer_once_and_for_all(app, client, twilio, setup, status,
                                                          reason, code):
    _agent, token = make_user(app, "ayse", "agent")
    setup(twilio)
    got, doc, headers = post_transfer(client, token, "k1", body())
    assert got == status, doc
    assert doc["reason"] == reason
    assert doc["twilio_code"] == code
    assert doc["message"]
    tid = doc["transfer_id"]
    assert len(twilio.updates()) == 1

    # Nothing claims the transfer happened.
    _s, t = get_transfer(client, token, tid)
    assert t["status"] == "failed" and t["failed_at"]
    assert t["error"] == {"reason": reason, "message": doc["message"], "twilio_code": code}
    assert t["redirected_at"] is None and t["in_flow_at"] is None
    assert count(app, FlowRun) == 0 and count(app, Consent) == 0

    # The same request again: the same answer, and Twilio is not asked again.
    twilio.auth_token = AUTH_TOKEN
    twilio.calls[SID] = "in-progress"
    again, doc2, headers2 = post_transfer(client, token, "k1", body())
    assert (again, doc2) == (got, doc)
    assert headers2["Idempotent-Replayed"] == "true"
    assert len(twilio.updates()) == 1
    # A new key is a new attempt (here it succeeds, the call being live again).
    assert post_transfer(client, token, "k2", body())[0] == 201
    assert len(twilio.updates()) == 2


@pytest.fixture
def slow_app(request, app_config):
    """An app whose Twilio client gives up after half a second."""
    app_config["TWILIO_TIMEOUT"] = 0.5
    return request.getfixturevalue("app")


def test_a_timeout_fails_and_a_late_redirect_still_lands(slow_app, twilio, local_caller):
    app, client = slow_app, slow_app.test_client()
    _agent, token = make_user(app, "ayse", "agent")
    twilio.calls[SID] = "in-progress"
    twilio.stall = True
    got, doc, _ = post_transfer(client, token, "k1", body())
    assert got == 504, doc
    assert doc["reason"] == "twilio_timeout" and doc["twilio_code"] is None
    assert "may or may not" in doc["message"]
    _s, t = get_transfer(client, token, doc["transfer_id"])
    assert t["status"] == "failed"
    again, doc2, _ = post_transfer(client, token, "k1", body())
    assert (again, doc2) == (got, doc)
    assert len(twilio.updates()) == 1

    # Twilio acted after all and fetches our URL: the caller is in the flow, and the
    # transfer says so (the failure stays on record in the audit chain).
    twilio.release.set()
    c = local_caller(account_sid=ACCOUNT, call_sid=SID)
    turn = follow(c, twilio.updates()[0].form["Url"])
    assert turn.gather_action
    _s, t = get_transfer(client, token, doc["transfer_id"])
    assert t["status"] == "in_flow" and t["error"] is None


def test_twilio_unreachable(app_config, request, twilio):
    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app_config["TWILIO_API_URL"] = f"http://127.0.0.1:{port}"
    app = request.getfixturevalue("app")
    _agent, token = make_user(app, "ayse", "agent")
    got, doc, _ = post_transfer(app.test_client(), token, "k1", body())
    assert got == 502 and doc["reason"] == "twilio_unreachable"
    assert [t.status for t in transfers(app)] == ["failed"]


# --- retries and duplicates -----------------------------------------------------------

def test_a_retry_after_success_replays_and_never_redirects_twice(app, client, twilio):
    _agent, token = make_user(app, "ayse", "agent")
    twilio.calls[SID] = "in-progress"
    got, doc, _ = post_transfer(client, token, '"a8f9-11"', body())  # a quoted key is fine
    assert got == 201
    again, doc2, headers = post_transfer(client, token, "a8f9-11", body())
    assert again == 201 and doc2["id"] == doc["id"]
    assert headers["Idempotent-Replayed"] == "true"
    assert len(twilio.updates()) == 1
    assert len(transfers(app)) == 1


def test_a_key_reused_for_another_request_is_refused(app, client, twilio):
    _agent, token = make_user(app, "ayse", "agent")
    twilio.calls[SID] = "in-progress"
    assert post_transfer(client, token, "k1", body())[0] == 201
    got, doc, _ = post_transfer(client, token, "k1", body(return_to={"type": "hangup"}))
    assert got == 422 and doc["reason"] == "key_reused"
    assert len(twilio.updates()) == 1


def test_keys_belong_to_their_agent(app, client, twilio):
    _a, ayse = make_user(app, "ayse", "agent")
    _b, mehmet = make_user(app, "mehmet", "agent")
    other = "CA" + "cd" * 16
    twilio.calls.update({SID: "in-progress", other: "in-progress"})
    first = post_transfer(client, ayse, "k1", body())
    second = post_transfer(client, mehmet, "k1", body(other))
    assert first[0] == second[0] == 201 and first[1]["id"] != second[1]["id"]


def test_a_concurrent_duplicate_sees_the_first_request(live_app, twilio):
    _agent, token = make_user(live_app.app, "ayse", "agent")
    twilio.calls[SID] = "in-progress"
    twilio.stall = True
    url = f"{live_app.url}/api/transfers"
    results = {}

    def first():
        results["first"] = requests.post(url, json=body(), headers=auth(token, "k1"),
                                          timeout=30)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert twilio.received.wait(10)  # the first request is now waiting for Twilio
        dup = requests.post(url, json=body(), headers=auth(token, "k1"), timeout=30)
        assert dup.status_code == 409
        assert dup.json()["reason"] == "request_in_progress"
        assert dup.headers["Retry-After"] == "1"
        other = requests.post(url, json=body(), headers=auth(token, "k2"), timeout=30)
        assert other.status_code == 409
        assert other.json()["reason"] == "transfer_in_progress"
        assert other.json()["transfer_id"] == dup.json()["transfer_id"]
    finally:
        twilio.release.set()
        thread.join(30)
    assert results["first"].status_code == 201
    retry = requests.post(url, json=body(), headers=auth(token, "k1"), timeout=30)
    assert retry.status_code == 201 and retry.json()["id"] == results["first"].json()["id"]
    assert len(twilio.updates()) == 1


def test_concurrent_requests_with_one_key_redirect_once(live_app, twilio):
    _agent, token = make_user(live_app.app, "ayse", "agent")
    twilio.calls[SID] = "in-progress"
    url = f"{live_app.url}/api/transfers"
    barrier = threading.Barrier(6)
    codes = []

    def post():
        barrier.wait()
        codes.append(requests.post(url, json=body(), headers=auth(token, "same"),
                                   timeout=30).status_code)

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(codes) == 6 and set(codes) <= {201, 409} and 201 in codes
    assert len(twilio.updates()) == 1
    assert len(transfers(live_app.app)) == 1


# --- calls already decided or already ended -------------------------------------------

def test_a_call_that_already_decided(app, client, twilio, local_caller):
    _agent, token = make_user(app, "ayse", "agent")
    c = local_caller(account_sid=ACCOUNT)
    c.press(c.dial(), "2")  # the caller declined in the inbound flow
    twilio.calls[c.call_sid] = "in-progress"
    got, doc, _ = post_transfer(client, token, "k1", body(c.call_sid))
    assert got == 409
    # The agent learns only that the call cannot go now, never what the caller decided.
    assert doc["reason"] == "already_decided" and "force" in doc["message"]
    assert not {"decision", "decided_at", "consent_transfer_id"} & set(doc), doc
    assert "declined" not in json.dumps(doc) and "decided" not in doc["message"]
    assert twilio.updates() == [] and transfers(app) == []
    # Asking again on purpose (the caller changed their mind) is allowed.
    got, doc, _ = post_transfer(client, token, "k2", body(c.call_sid, force=True))
    assert got == 201 and doc["force"] is True
    turn = c.press(follow(c, twilio.updates()[0].form["Url"]), "1")
    assert turn.end == "enqueue:sales"
    with app.app_context():
        s = session()
        with s.begin():
            decisions = list(s.scalars(select(Consent.decision).where(
                Consent.call_sid == c.call_sid).order_by(Consent.id)))
    assert decisions == ["declined", "granted"]


def test_a_call_whose_end_is_known_is_refused_without_asking_twilio(app, client, twilio,
                                                                    local_caller):
    _agent, token = make_user(app, "ayse", "agent")
    c = local_caller(account_sid=ACCOUNT)
    c.dial()
    c.hang_up()
    twilio.calls[c.call_sid] = "in-progress"  # Twilio would even accept it
    got, doc, _ = post_transfer(client, token, "k1", body(c.call_sid))
    assert got == 409 and doc["reason"] == "call_ended" and doc["call_status"] == "completed"
    assert twilio.updates() == [] and transfers(app) == []


# --- accounts and roles ---------------------------------------------------------------

def test_roles(app, client, twilio):
    _a, agent = make_user(app, "ayse", "agent")
    _b, other_agent = make_user(app, "mehmet", "agent")
    _c, auditor = make_user(app, "denetci", "auditor")
    _d, admin = make_user(app, "yonetici", "admin")
    twilio.calls[SID] = "in-progress"
    r = client.post("/api/transfers", json=body(), headers={"Idempotency-Key": "k"})
    assert r.status_code == 401 and r.get_json()["error"] == "Unauthorized"
    assert post_transfer(client, "ivr_wrong", "k", body())[0] == 401
    got, doc, _ = post_transfer(client, auditor, "k", body())
    assert got == 403 and "auditor" in doc["message"]
    assert twilio.updates() == []
    got, doc, _ = post_transfer(client, agent, "k", body())
    assert got == 201
    tid = doc["id"]
    assert client.get(f"/api/transfers/{tid}").status_code == 401
    assert get_transfer(client, agent, tid)[0] == 200
    assert get_transfer(client, auditor, tid)[0] == 200
    assert get_transfer(client, admin, tid)[0] == 200
    assert get_transfer(client, other_agent, tid)[0] == 404  # not theirs: not shown
    assert get_transfer(client, agent, "0" * 32)[0] == 404
    # An admin may transfer too (on another call: this one has a transfer on its way).
    twilio.calls["CA" + "ef" * 16] = "in-progress"
    assert post_transfer(client, admin, "k", body("CA" + "ef" * 16))[0] == 201


# --- bad requests ---------------------------------------------------------------------

BAD = [
    ("not json", "body", None),
    ("[1, 2]", "body", None),
    ({"call_sid": SID}, "return_to", "return_to"),
    ({"return_to": QUEUE}, "call_sid", "call_sid"),
    (body(extra=1), "unknown", "extra"),
    (body(call_sid="CA123"), "call_sid", "call_sid"),
    (body(call_sid=42), "call_sid", "call_sid"),
    (body(call_sid="CA" + "AB" * 16), "call_sid", "call_sid"),
    (body(return_to="sales"), "return_to", "return_to"),
    (body(return_to={"type": "conference"}), "type", "return_to.type"),
    (body(return_to={"type": "queue"}), "return_to.name", "return_to.name"),
    (body(return_to={"type": "queue", "name": " "}), "return_to.name", "return_to.name"),
    (body(return_to={"type": "queue", "name": "q" * 65}), "return_to.name", "return_to.name"),
    (body(return_to={"type": "queue", "name": "a\nb"}), "return_to.name", "return_to.name"),
    (body(return_to={"type": "dial"}), "exactly one", "return_to"),
    (body(return_to={"type": "dial", "number": "+902122223344", "client": "x"}),
     "exactly one", "return_to"),
    (body(return_to={"type": "dial", "number": "call me"}), "phone number",
     "return_to.number"),
    (body(return_to={"type": "dial", "client": "a b"}), "return_to.client",
     "return_to.client"),
    (body(return_to={"type": "hangup", "name": "x"}), "takes no name", "return_to.name"),
    (body(language="de"), "language must be one of tr, en", "language"),
    (body(language=1), "language", "language"),
    (body(flow="nope"), "unknown flow", "flow"),
    (body(force="yes"), "force", "force"),
]


def test_bad_requests_get_400_and_change_nothing(app, client, twilio, subtests):
    # One app per backend for the whole table: each case is its own subtest.
    _agent, token = make_user(app, "ayse", "agent")
    for payload, message, field in BAD:
        with subtests.test(payload=payload):
            got, doc, _ = post_transfer(client, token, "k1", payload)
            assert got == 400, doc
            assert message in doc["message"]
            assert doc["field"] == field
    assert twilio.updates() == [] and transfers(app) == []


BAD_KEYS = [
    ("k" * 201, "1 to 200 printable ASCII"),
    ('""', "1 to 200 printable ASCII"),
    ("clé", "1 to 200 printable ASCII"),
]


def test_a_bad_idempotency_key_is_refused(app, client, twilio, subtests):
    _agent, token = make_user(app, "ayse", "agent")
    for key, message in BAD_KEYS:
        with subtests.test(key=key):
            headers = auth(token)
            if key is not None:
                headers["Idempotency-Key"] = key.encode().decode("latin-1")
            r = client.post("/api/transfers", json=body(), headers=headers)
            assert r.status_code == 400
            assert message in r.get_json()["message"]
            assert r.get_json()["field"] == "Idempotency-Key"
    assert twilio.updates() == []


def test_without_a_key_a_transfer_is_made_once_and_not_repeated(app, client, twilio):
    """No Idempotency-Key: the transfer happens, and a blind resend cannot redirect the
    live call a second time."""
    _agent, token = make_user(app, "ayse", "agent")
    twilio.calls.update({SID: "in-progress"})
    first = client.post("/api/transfers", json=body(), headers=auth(token))
    assert first.status_code == 201, first.get_json()
    again = client.post("/api/transfers", json=body(), headers=auth(token))
    assert again.status_code == 409
    assert again.get_json()["reason"] == "transfer_in_progress"
    assert len(twilio.updates()) == 1


def test_a_form_post_is_refused(app, client, twilio):
    _agent, token = make_user(app, "ayse", "agent")
    r = client.post("/api/transfers", data={"call_sid": SID}, headers=auth(token, "k"))
    assert r.status_code == 400 and "JSON" in r.get_json()["message"]


def test_a_bad_timeout_setting_stops_start_up(app_config):
    from ivr import create_app
    from ivr.domain.config import ConfigError

    app_config["TWILIO_TIMEOUT"] = "soon"
    with pytest.raises(ConfigError, match="IVR_TWILIO_TIMEOUT"):
        create_app(app_config)


def test_a_transfer_left_hanging_without_a_status_callback_stops_blocking(app, client,
                                                                          twilio, local_caller):
    from datetime import timedelta

    from ivr.domain.times import utcnow
    from ivr.services import transfer_request
    from ivr.services import transfers as service
    from ivr.web.current import personal_data

    _agent, token = make_user(app, "ayse", "agent")
    c = local_caller(account_sid=ACCOUNT)
    twilio.calls[c.call_sid] = "in-progress"
    assert post_transfer(client, token, "k1", body(c.call_sid))[0] == 201
    follow(c, twilio.updates()[0].form["Url"])  # in the flow, then silence: no callback
    with app.app_context():
        req = transfer_request.parse(body(c.call_sid), app.extensions["ivr_flows"])
        agent = service.Agent("1", "ayse")
        s = session()
        outcomes = []
        for later in (timedelta(minutes=1), timedelta(minutes=16)):
            s.begin()
            try:
                service.request(s, req, agent, f"later-{later}", pii=personal_data(),
                                stale_after=timedelta(seconds=20), now=utcnow() + later)
                outcomes.append("accepted")
            except service.Refused as exc:
                outcomes.append(exc.reason)
            finally:
                s.rollback()  # only the check matters here
    assert outcomes == ["transfer_in_progress", "accepted"]
