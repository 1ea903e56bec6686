"""The agent desk over HTTP: who may open which page (never a
loop), the session-authenticated desk endpoints, and the transfer form, which makes the
same transfers as POST /api/transfers against the local Twilio stand-in."""

from __future__ import annotations

import pytest

from tests.support.auditor import csrf_token, login, parse_html
from tests.support.auditor import make_user as make_web_user
from tests.support.transfer import ACCOUNT, QUEUE, auth, follow, post_transfer, transfers, twilio

__all__ = ["twilio"]  # the autouse fixture, so pytest finds it here


@pytest.fixture
def users(app):
    """One account per role: role -> secret."""
    return {role: make_web_user(app, f"{role}-1", role) for role in ("auditor", "agent", "admin")}


def logged_in(app, users, role):
    client = app.test_client()
    if role is not None:
        assert login(client, f"{role}-1", users[role]).status_code == 302
    return client


@pytest.mark.parametrize("role,path,home", [
    ("agent", "/auditor/", "/agent/"),
    ("agent", "/auditor/queues", "/agent/"),
    ("agent", "/auditor/calls/CA" + "0" * 32, "/agent/"),
    ("auditor", "/agent/", "/auditor/"),
])
def test_a_page_the_role_may_not_see_links_home_not_back(app, users, role, path, home):
    client = logged_in(app, users, role)
    r = client.get(path)
    assert r.status_code == 403
    doc = parse_html(r.get_data(as_text=True))
    assert f"Your account has the {role} role." in doc.find("p", role="alert").text
    assert doc.find("a", id="home").get("href") == home
    assert client.get(home).status_code == 200  # the way out is open: no loop
    assert client.get("/").headers["Location"] == home


@pytest.mark.parametrize("role,path", [(None, "/agent/"), (None, "/auditor/queues"),
                                       ("admin", "/agent/"), ("admin", "/auditor/queues")])
def test_anonymous_logs_in_first_and_admins_see_both(app, users, role, path):
    r = logged_in(app, users, role).get(path)
    if role is None:
        assert r.status_code == 302 and r.headers["Location"] == f"/login?next={path}"
    else:
        assert r.status_code == 200


@pytest.mark.parametrize("role,next_url,lands", [
    ("agent", "", "/agent/"), ("auditor", "", "/auditor/"), ("admin", "", "/auditor/"),
    ("agent", "/auditor/", "/agent/"),            # a page the role may not see: its home
    ("auditor", "/agent/", "/auditor/"),
    ("agent", "/agent/transfers/" + "a" * 32, "/agent/transfers/" + "a" * 32),
    ("auditor", "/agent/transfers/" + "a" * 32, "/agent/transfers/" + "a" * 32),
])
def test_login_lands_each_role_at_home(app, users, role, next_url, lands):
    r = login(app.test_client(), f"{role}-1", users[role], next_url=next_url)
    assert r.status_code == 302 and r.headers["Location"] == lands


def desk_form(client, **fields) -> dict:
    doc = parse_html(client.get("/agent/").get_data(as_text=True))
    form = doc.find("form", id="transfer-form")
    data = {i.get("name"): i.get("value") for i in form.findall("input", type="hidden")}
    data.update({"return_type": "queue", "queue": "sales", "language": ""}, **fields)
    return data


def test_the_desk_starts_a_transfer_with_the_session(app, users, twilio, local_caller):
    agent = logged_in(app, users, "agent")
    c = local_caller(account_sid=ACCOUNT)
    twilio.calls[c.call_sid] = "in-progress"
    data = desk_form(agent, call_sid=c.call_sid)
    # Without the CSRF token nothing happens.
    r = agent.post("/agent/transfers", data={k: v for k, v in data.items() if k != "csrf_token"})
    assert r.status_code == 400 and transfers(app) == [] and twilio.updates() == []
    r = agent.post("/agent/transfers", data=data)
    assert r.status_code == 303 and r.headers["Location"] == "/agent/"
    [t] = transfers(app)
    assert (t.call_sid, t.return_to, t.status, t.agent_name) == (
        c.call_sid, QUEUE, "requested", "agent-1")
    assert t.redirected_at is not None and len(twilio.updates(c.call_sid)) == 1
    # The same form sent twice (a double click) makes one transfer and one redirect.
    assert agent.post("/agent/transfers", data=data).status_code == 303
    assert len(transfers(app)) == 1 and len(twilio.updates(c.call_sid)) == 1
    assert "This form was already sent" in agent.get("/agent/").get_data(as_text=True)
    # The desk's JSON follows the caller through the flow.
    [listed] = agent.get("/agent/transfers.json").get_json()["transfers"]
    assert listed["id"] == t.id and listed["status"] == "requested"
    first = follow(c, twilio.updates()[0].form["Url"])
    c.press(first, "1")
    doc = agent.get(f"/agent/transfers/{t.id}.json").get_json()
    assert doc["status"] == "returned" and doc["decision"] == "granted"


@pytest.mark.parametrize("fields,status,says", [
    ({"call_sid": "CA123"}, 400, "a CallSid is CA followed by 32 lowercase hex digits"),
    ({"return_type": "queue", "queue": ""}, 400, "a queue name is 1 to 64 characters"),
    ({"return_type": "dial_number", "number": "12"}, 400, "a phone number in E.164 form"),
    ({"return_type": "dial_client", "client": "a b"}, 400, "a client name is 1 to 100"),
    ({"language": "de"}, 400, "choose one of the flow"),
])
def test_the_desk_form_explains_what_is_wrong(app, users, fields, status, says):
    agent = logged_in(app, users, "agent")
    data = desk_form(agent, call_sid="CA" + "1" * 32)
    data.update(fields)
    r = agent.post("/agent/transfers", data=data)
    assert r.status_code == status and says in r.get_data(as_text=True)
    assert transfers(app) == []


def test_a_refused_transfer_is_explained_and_the_form_kept(app, users, twilio, local_caller):
    agent = logged_in(app, users, "agent")
    c = local_caller(account_sid=ACCOUNT)
    c.run(["1"])  # the caller already decided, and the call has ended
    r = agent.post("/agent/transfers", data=desk_form(agent, call_sid=c.call_sid,
                                                      return_type="hangup"))
    assert r.status_code == 409 and "the call has already ended" in r.get_data(as_text=True)
    doc = parse_html(r.get_data(as_text=True))
    assert doc.find("input", name="call_sid").get("value") == c.call_sid
    assert doc.find("input", value="hangup").get("checked") is not None


def test_the_desk_endpoints_use_the_session_and_the_roles(app, users, twilio, local_caller):
    c = local_caller(account_sid=ACCOUNT)
    twilio.calls[c.call_sid] = "in-progress"
    status, doc, _ = post_transfer(app.test_client(), users["agent"], "k-1",
                                   {"call_sid": c.call_sid, "return_to": QUEUE})
    assert status == 201
    other = make_web_user(app, "agent-2", "agent")
    anonymous = app.test_client()
    assert anonymous.get("/agent/transfers.json").status_code == 401
    assert anonymous.get(f"/agent/transfers/{doc['id']}.json").status_code == 401
    assert logged_in(app, users, "auditor").get("/agent/transfers.json").status_code == 403
    second = app.test_client()
    login(second, "agent-2", other)
    assert second.get("/agent/transfers.json").get_json() == {"transfers": []}
    assert second.get(f"/agent/transfers/{doc['id']}.json").status_code == 404
    for role in ("agent", "auditor", "admin"):
        r = logged_in(app, users, role).get(f"/agent/transfers/{doc['id']}.json")
        assert r.status_code == 200 and r.get_json()["id"] == doc["id"], role
    # The bearer-token API is unchanged, and a session cookie is no token there.
    agent = logged_in(app, users, "agent")
    assert agent.get(f"/api/transfers/{doc['id']}").status_code == 401
    assert agent.get(f"/api/transfers/{doc['id']}", headers=auth(users["agent"])).status_code \
        == 200


@pytest.mark.parametrize("role,mode", [(None, "token"), ("agent", "session"),
                                       ("auditor", "session")])
def test_the_transfer_page_uses_the_session_when_logged_in(app, users, role, mode):
    r = logged_in(app, users, role).get("/agent/transfers/" + "a" * 32)
    assert r.status_code == 200
    box = parse_html(r.get_data(as_text=True)).find("section", id="transfer")
    assert box.get("data-mode") == mode
    source = "/api/transfers/" if mode == "token" else "/agent/transfers/"
    assert box.get("data-source").startswith(source)


def test_the_desk_page_carries_a_fresh_key_and_token_per_form(app, users):
    agent = logged_in(app, users, "agent")
    one, two = desk_form(agent), desk_form(agent)
    assert one["idempotency_key"] != two["idempotency_key"]
    assert one["csrf_token"] and csrf_token(agent, "/agent/")


def test_an_auditor_cannot_start_a_transfer_from_the_desk(app, users, twilio):
    auditor = logged_in(app, users, "auditor")
    token = csrf_token(auditor, "/auditor/")
    r = auditor.post("/agent/transfers", data={"csrf_token": token, "call_sid": "CA" + "1" * 32,
                                               "return_type": "hangup"})
    assert r.status_code == 403 and "The agent desk is for the agent and admin roles." in \
        r.get_data(as_text=True)
    assert transfers(app) == [] and twilio.updates() == []
