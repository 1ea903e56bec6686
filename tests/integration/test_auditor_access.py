"""Who may use the auditor workspace and its API: login, roles, CSRF, throttle, sessions."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import pytest
from sqlalchemy import update

from ivr import create_app
from ivr.domain.times import utcnow
from ivr.services.auditor.login_throttle import failures
from ivr.storage.accounts import LoginFailure, User
from ivr.storage.models import WebSession
from ivr.web.current import database
from tests.support.auditor import audit_bodies, csrf_token, login, make_user


@pytest.fixture
def users(app):
    """One account per role: name -> secret."""
    return {role: make_user(app, f"{role}-1", role) for role in ("auditor", "agent", "admin")}


def test_anonymous_is_sent_to_login(client):
    r = client.get("/auditor/calls/CA123?x=1")
    assert r.status_code == 302
    assert r.headers["Location"].startswith("/login?next=")
    assert r.headers["Location"] == "/login?next=/auditor/calls/CA123?x%3D1"
    assert client.get("/").headers["Location"] == "/auditor/"
    assert client.get("/auditor/").status_code == 302


def test_login_with_the_one_time_secret_opens_the_workspace(client, app, users):
    r = login(client, "auditor-1", users["auditor"], next_url="/auditor/?decision=granted")
    assert r.status_code == 302
    assert r.headers["Location"] == "/auditor/?decision=granted"
    page = client.get("/auditor/")
    assert page.status_code == 200
    assert "auditor-1" in page.get_data(as_text=True)
    [entry] = audit_bodies(app, "auditor.login")
    assert entry["data"]["user"] == "auditor-1" and entry["data"]["role"] == "auditor"


@pytest.mark.parametrize("name,secret_of", [
    ("auditor-1", None),          # wrong secret
    ("auditor-1", "agent"),       # another account's secret
    ("nobody", "auditor"),        # a right secret under a wrong name
])
def test_wrong_secret_is_refused(client, users, name, secret_of):
    secret = users[secret_of] if secret_of else "ivr_not-the-secret"
    r = login(client, name, secret)
    assert r.status_code == 401
    assert "Wrong name or secret" in r.get_data(as_text=True)
    assert client.get("/auditor/").status_code == 302


def test_agent_cannot_open_auditor_pages(client, users):
    assert login(client, "agent-1", users["agent"]).status_code == 302
    for path in ("/auditor/", "/auditor/?decision=granted", "/auditor/calls/CA0001"):
        r = client.get(path)
        assert r.status_code == 403, path
        assert "agent role" in r.get_data(as_text=True)
    token = csrf_token(client, "/login")
    for path in ("/auditor/export.csv", "/auditor/export.json", "/auditor/calls/CA1/evidence.zip"):
        assert client.post(path, data={"csrf_token": token, "decision": "granted"}
                           ).status_code == 403, path


def test_admin_may_use_the_workspace(client, users):
    login(client, "admin-1", users["admin"])
    assert client.get("/auditor/?decision=granted").status_code == 200


def test_forms_without_the_csrf_token_are_rejected(client, users):
    r = client.post("/login", data={"name": "auditor-1", "secret": users["auditor"]})
    assert r.status_code == 400
    assert "security token" in r.get_data(as_text=True)
    assert client.get("/auditor/").status_code == 302  # not logged in
    login(client, "auditor-1", users["auditor"])
    r = client.post("/auditor/export.csv", data={"decision": "granted"})
    assert r.status_code == 400
    r = client.post("/auditor/export.csv", data={"decision": "granted", "csrf_token": "forged"})
    assert r.status_code == 400
    assert client.post("/logout").status_code == 400
    assert client.get("/auditor/").status_code == 200  # still logged in


def test_logout_ends_the_session(client, users):
    login(client, "auditor-1", users["auditor"])
    token = csrf_token(client, "/auditor/")
    r = client.post("/logout", data={"csrf_token": token})
    assert r.status_code == 302 and r.headers["Location"] == "/login"
    assert client.get("/auditor/").status_code == 302


def test_session_cookie_is_httponly_lax_and_expires(client, users):
    r = login(client, "auditor-1", users["auditor"])
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    expires = parsedate_to_datetime(cookie.split("Expires=")[1].split(";")[0])
    left = expires - datetime.now(UTC)
    assert timedelta(minutes=25) < left <= timedelta(minutes=31)


def test_session_cookie_is_secure_behind_https(app_config):
    app_config["PUBLIC_URL"] = "https://ivr.example.com"
    application = create_app(app_config)
    assert application.config["SESSION_COOKIE_SECURE"] is True
    database(application).engine.dispose()


def test_session_ends_after_the_absolute_limit_or_when_the_account_is_disabled(
        client, app, users):
    login(client, "auditor-1", users["auditor"])
    s = database(app).sessionmaker()
    with s.begin():
        s.execute(update(WebSession).values(created_at=utcnow() - timedelta(hours=9)))
    s.close()
    assert client.get("/auditor/").status_code == 302
    login(client, "auditor-1", users["auditor"])
    assert client.get("/auditor/").status_code == 200
    s = database(app).sessionmaker()
    with s.begin():
        s.query(User).filter_by(name="auditor-1").one().active = False
    s.close()
    assert client.get("/auditor/").status_code == 302


def test_login_is_throttled_per_name_and_address(client, app, users):
    for _ in range(5):
        assert login(client, "auditor-1", "ivr_wrong").status_code == 401
    r = login(client, "auditor-1", users["auditor"])  # even the right secret waits
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) > 0
    assert "Too many failed logins" in r.get_data(as_text=True)
    # Another client address is not locked out by this one's failures.
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "10.9.8.7"
    assert login(other, "auditor-1", users["auditor"]).status_code == 302


def test_login_throttle_counts_every_name_from_one_address(client, app_config):
    app_config["AUDITOR_LOGIN_MAX_PER_ADDRESS"] = 3
    application = create_app(app_config)
    database(application).create_all()
    c = application.test_client()
    for i in range(3):
        assert login(c, f"name-{i}", "ivr_wrong").status_code == 401
    assert login(c, "name-9", "ivr_wrong").status_code == 429
    database(application).engine.dispose()


def test_successful_login_clears_the_failures(client, app, users):
    login(client, "auditor-1", "ivr_wrong")
    login(client, "auditor-1", "ivr_wrong")
    with app.app_context():
        s = database(app).sessionmaker()
        assert failures(s, "auditor-1", "127.0.0.1") == 2
        s.close()
    assert login(client, "auditor-1", users["auditor"]).status_code == 302
    s = database(app).sessionmaker()
    assert failures(s, "auditor-1", "127.0.0.1") == 0
    s.close()


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil",
                                    "javascript:alert(1)"])
def test_login_never_redirects_off_site(client, users, target):
    r = login(client, "auditor-1", users["auditor"], next_url=target)
    assert r.headers["Location"] == "/auditor/"


def test_api_wants_a_bearer_token_with_the_auditor_role(client, users):
    for path in ("/api/calls/CA0001", "/api/consents"):
        r = client.get(path)
        assert r.status_code == 401 and r.is_json and r.json["status"] == 401
        r = client.get(path, headers={"Authorization": "Bearer ivr_wrong"})
        assert r.status_code == 401
        r = client.get(path, headers={"Authorization": f"Bearer {users['agent']}"})
        assert r.status_code == 403 and "agent" in r.json["message"]
    for role in ("auditor", "admin"):
        auth = {"Authorization": f"Bearer {users[role]}"}
        assert client.get("/api/consents", headers=auth).status_code == 200
        assert client.get("/api/calls/CA0001", headers=auth).status_code == 404


def test_the_session_cookie_does_not_open_the_api(client, users):
    login(client, "auditor-1", users["auditor"])
    assert client.get("/api/consents").status_code == 401


def test_webhooks_need_no_csrf_token(local_caller):
    caller = local_caller()
    turn = caller.dial()  # a POST with Twilio's signature and no CSRF token
    assert turn.gather_action or turn.heard


# --- throttle: slow-down per (account, address), a budget per address for unknown names ---

def _throttled_app(app_config, **limits):
    app_config.update({f"AUDITOR_LOGIN_{k.upper()}": v for k, v in limits.items()})
    application = create_app(app_config)
    database(application).create_all()
    return application


def _age_failures(app, seconds):
    s = database(app).sessionmaker()
    with s.begin():
        for f in s.query(LoginFailure).all():
            f.at -= timedelta(seconds=seconds)
    s.close()


def test_unknown_names_from_one_address_never_lock_out_a_known_account(app_config):
    application = _throttled_app(app_config, max_per_address=3)
    try:
        secret = make_user(application, "ayse", "auditor")
        c = application.test_client()
        for i in range(3):
            assert login(c, f"guess-{i}", "ivr_wrong").status_code == 401
        assert login(c, "guess-9", "ivr_wrong").status_code == 429
        # Past the address's budget a wrong try is refused alike for an account's name (it
        # would tell the account apart otherwise), and the right secret still logs in.
        assert login(c, "ayse", "ivr_wrong").status_code == 429
        assert login(c, "ayse", secret).status_code == 302
    finally:
        database(application).engine.dispose()


def test_a_known_and_an_unknown_name_are_answered_alike(app_config):
    """No name can be told to be an account's by the throttle: 401 the same number of
    times, then 429 with the same wait, from the same page."""
    application = _throttled_app(app_config)  # the defaults: 5 per name, 20 per address
    try:
        make_user(application, "ayse", "auditor")
        answers = {}
        for name, address in (("ayse", "198.51.100.7"), ("nobody", "198.51.100.8")):
            c = application.test_client()
            c.environ_base["REMOTE_ADDR"] = address
            got = []
            for _ in range(8):
                r = login(c, name, "ivr_wrong")
                page = re.sub(r'name="csrf_token" value="[^"]*"', "",
                              r.get_data(as_text=True).replace(name, "NAME"))
                got.append((r.status_code, r.headers.get("Retry-After"), page))
            answers[name] = got
        assert [a[0] for a in answers["ayse"]] == [401] * 5 + [429] * 3
        assert answers["ayse"] == answers["nobody"]
    finally:
        database(application).engine.dispose()


def test_a_stranger_elsewhere_cannot_lock_a_known_account_out(app_config):
    application = _throttled_app(app_config, max_per_name=3)
    try:
        secret = make_user(application, "ayse", "auditor")
        stranger = application.test_client()
        stranger.environ_base["REMOTE_ADDR"] = "203.0.113.5"
        codes = [login(stranger, "ayse", "ivr_wrong").status_code for _ in range(10)]
        assert codes == [401] * 3 + [429] * 7
        assert login(stranger, "ayse", secret).status_code == 429  # slowed down there
        assert login(application.test_client(), "ayse", secret).status_code == 302
    finally:
        database(application).engine.dispose()


def test_the_slow_down_doubles_per_failure_up_to_its_cap(app_config):
    application = _throttled_app(app_config, max_per_name=2, delay_seconds=10,
                                 max_delay_seconds=25)
    try:
        secret = make_user(application, "ayse", "auditor")
        c = application.test_client()
        assert [login(c, "ayse", "ivr_wrong").status_code for _ in range(2)] == [401, 401]
        waits = []
        for _ in range(3):
            r = login(c, "ayse", secret)  # refused unseen while the wait lasts
            assert r.status_code == 429
            waits.append(int(r.headers["Retry-After"]))
            _age_failures(application, waits[-1])
            assert login(c, "ayse", "ivr_wrong").status_code == 401
        # 10 s, doubled to 20 s, then capped at 25 s (a slow machine may see a second less).
        assert all(want - 2 < got <= want for got, want in zip(waits, [10, 20, 25], strict=True))
        _age_failures(application, 25)
        assert login(c, "ayse", secret).status_code == 302
    finally:
        database(application).engine.dispose()
