"""Sessions are server-side facts: logout, a disabled account or a rotated secret end them
at once, a cookie copied before included; and the account lifecycle commands
(`users list|disable|enable|rotate`), each an audit entry."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from ivr import create_app
from ivr.cli.main import cli
from ivr.domain.times import utcnow
from ivr.storage.models import WebSession
from ivr.web.current import database
from tests.integration.test_webhooks import CALL, post
from tests.support.auditor import audit_bodies, csrf_token, login, make_user

COOKIE = "ivr_session"


@pytest.fixture
def users(app):
    """One account per role: name -> secret."""
    return {role: make_user(app, f"{role}-1", role) for role in ("auditor", "agent", "admin")}


def copy_of(app, client):
    """Another browser holding a copy of `client`'s session cookie, as a thief would."""
    other = app.test_client()
    other.set_cookie(COOKIE, client.get_cookie(COOKIE).value)
    return other


def bearer(secret):
    return {"Authorization": f"Bearer {secret}"}


def logged_in(app, client, name, secret):
    assert login(client, name, secret).status_code == 302
    copy = copy_of(app, client)
    assert copy.get("/auditor/").status_code == 200  # the copy works, for now
    return copy


def users_cmd(runner, *args):
    return runner.invoke(cli, ["users", *args])


def test_logout_ends_the_session_for_a_cookie_copied_before(app, client, users):
    copy = logged_in(app, client, "auditor-1", users["auditor"])
    r = client.post("/logout", data={"csrf_token": csrf_token(client, "/auditor/")})
    assert r.status_code == 302 and r.headers["Location"] == "/login"
    assert client.get("/auditor/").status_code == 302
    r = copy.get("/auditor/?decision=granted")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login")
    [entry] = audit_bodies(app, "auditor.logout")
    assert entry["data"]["user"] == "auditor-1"


def test_logout_ends_only_its_own_session(app, users):
    first, second = app.test_client(), app.test_client()
    login(first, "auditor-1", users["auditor"])
    login(second, "auditor-1", users["auditor"])
    first.post("/logout", data={"csrf_token": csrf_token(first, "/auditor/")})
    assert first.get("/auditor/").status_code == 302
    assert second.get("/auditor/").status_code == 200


def test_a_new_login_ends_the_session_the_browser_had(app, client, users):
    copy = logged_in(app, client, "auditor-1", users["auditor"])
    assert login(client, "admin-1", users["admin"]).status_code == 302
    assert copy.get("/auditor/").status_code == 302
    assert client.get("/auditor/").status_code == 200


def test_disable_ends_every_session_and_the_bearer_token_at_once(app, client, runner, users):
    copy = logged_in(app, client, "auditor-1", users["auditor"])
    elsewhere = app.test_client()
    login(elsewhere, "auditor-1", users["auditor"])
    assert client.get("/api/consents", headers=bearer(users["auditor"])).status_code == 200
    result = users_cmd(runner, "disable", "auditor-1", "--by", "ops")
    assert result.exit_code == 0, result.output
    assert "2 web sessions ended" in result.output
    for c in (client, copy, elsewhere):
        assert c.get("/auditor/").status_code == 302
    assert client.get("/api/consents", headers=bearer(users["auditor"])).status_code == 401
    assert login(app.test_client(), "auditor-1", users["auditor"]).status_code == 401
    [entry] = audit_bodies(app, "account.disabled")
    assert entry["ref"] == f"user:{entry['data']['user_id']}"
    assert entry["data"] == {"user_id": entry["data"]["user_id"], "user": "auditor-1",
                             "role": "auditor", "by": "ops", "sessions_ended": 2}


def test_enable_restores_the_account_but_not_its_ended_sessions(app, client, runner, users):
    copy = logged_in(app, client, "auditor-1", users["auditor"])
    assert users_cmd(runner, "disable", "auditor-1").exit_code == 0
    result = users_cmd(runner, "enable", "auditor-1")
    assert result.exit_code == 0, result.output
    assert copy.get("/auditor/").status_code == 302
    assert client.get("/api/consents", headers=bearer(users["auditor"])).status_code == 200
    assert login(client, "auditor-1", users["auditor"]).status_code == 302
    [entry] = audit_bodies(app, "account.enabled")
    assert entry["data"]["user"] == "auditor-1" and entry["data"]["by"] is None


@pytest.mark.parametrize("role", ["auditor", "agent"])
def test_rotate_ends_sessions_and_the_old_secret(app, client, runner, users, role):
    name, old = f"{role}-1", users[role]
    assert login(client, name, old).status_code == 302
    copy = copy_of(app, client)
    result = users_cmd(runner, "rotate", name)
    assert result.exit_code == 0, result.output
    new = result.output.strip().splitlines()[-1]
    assert new.startswith("ivr_") and new != old and " " not in new
    # The copied cookie, the old bearer token and the old password are all refused.
    for c in (client, copy):
        assert c.get("/auditor/").status_code == 302
    assert client.get("/api/consents", headers=bearer(old)).status_code == 401
    fresh = app.test_client()
    assert login(fresh, name, old).status_code == 401
    assert login(fresh, name, new).status_code == 302
    r = client.get("/api/consents", headers=bearer(new))
    assert r.status_code == (200 if role == "auditor" else 403)
    [entry] = audit_bodies(app, "account.rotated")
    assert entry["data"]["user"] == name and entry["data"]["sessions_ended"] == 1
    assert old not in str(entry) and new not in str(entry)


def test_a_rotated_disabled_account_stays_disabled(app, runner, users):
    users_cmd(runner, "disable", "agent-1")
    result = users_cmd(runner, "rotate", "agent-1")
    assert result.exit_code == 0 and "stays disabled" in result.output
    new = result.output.strip().splitlines()[-1]
    assert app.test_client().get("/api/transfers/" + "a" * 32,
                                 headers=bearer(new)).status_code == 401


def test_users_list_shows_every_account_and_is_an_audit_entry(app, client, runner, users):
    login(client, "auditor-1", users["auditor"])
    users_cmd(runner, "disable", "agent-1")
    result = users_cmd(runner, "list", "--by", "ops")
    assert result.exit_code == 0, result.output
    header, *rows = result.output.strip().splitlines()
    assert header.split()[:5] == ["ID", "NAME", "ROLE", "STATUS", "SESSIONS"]
    assert "Europe/Istanbul" in header
    table = {r.split()[1]: r.split() for r in rows}
    assert set(table) == {"auditor-1", "agent-1", "admin-1"}
    assert table["auditor-1"][2:5] == ["auditor", "active", "1"]
    assert table["agent-1"][2:5] == ["agent", "disabled", "0"]
    assert table["admin-1"][2:5] == ["admin", "active", "0"]
    assert all(secret not in result.output for secret in users.values())
    [entry] = audit_bodies(app, "account.listed")
    assert entry["data"] == {"by": "ops", "count": 3}


def test_users_list_on_no_accounts(runner):
    result = users_cmd(runner, "list")
    assert result.exit_code == 0 and "users add" in result.output


@pytest.mark.parametrize("args,message", [
    (("disable", "nobody"), "no account named 'nobody'"),
    (("enable", "auditor-1"), "already active"),
    (("rotate", "Auditor-1"), "no account named 'Auditor-1'"),
])
def test_users_commands_refuse_what_cannot_be_done(app, runner, users, args, message):
    before = len(audit_bodies(app))
    result = users_cmd(runner, *args)
    assert result.exit_code == 1 and message in result.output
    assert len(audit_bodies(app)) == before


def test_disabling_twice_is_refused(app, runner, users):
    assert users_cmd(runner, "disable", "auditor-1").exit_code == 0
    result = users_cmd(runner, "disable", "auditor-1")
    assert result.exit_code == 1 and "already disabled" in result.output
    assert len(audit_bodies(app, "account.disabled")) == 1


def _age(app, **columns):
    s = database(app).sessionmaker()
    with s.begin():
        s.execute(update(WebSession).values(**{k: utcnow() - v for k, v in columns.items()}))
    s.close()


@pytest.mark.parametrize("columns,alive", [
    ({"last_seen_at": timedelta(minutes=29)}, True),
    ({"last_seen_at": timedelta(minutes=31)}, False),            # idle too long
    ({"created_at": timedelta(hours=7, minutes=59)}, True),
    ({"created_at": timedelta(hours=8, minutes=1)}, False),      # past the absolute limit
])
def test_idle_and_absolute_limits_are_kept_on_the_server(app, client, users, columns, alive):
    copy = logged_in(app, client, "auditor-1", users["auditor"])
    _age(app, **columns)
    assert copy.get("/auditor/").status_code == (200 if alive else 302)


def _last_seen(app):
    s = database(app).sessionmaker()
    [row] = s.query(WebSession).all()
    s.close()
    return utcnow() - row.last_seen_at


def test_use_resets_the_idle_limit_with_a_write_at_most_a_minute(app, client, users):
    login(client, "auditor-1", users["auditor"])
    for _ in range(2):
        _age(app, last_seen_at=timedelta(minutes=20))
        assert client.get("/auditor/").status_code == 200  # 40 minutes in all, 20 idle at most
        assert _last_seen(app) < timedelta(seconds=5)
    _age(app, last_seen_at=timedelta(seconds=30))
    assert client.get("/auditor/").status_code == 200
    assert _last_seen(app) > timedelta(seconds=29)  # not written again within the minute


def test_the_cookie_holds_no_account_and_the_table_no_token(app, client, users):
    login(client, "auditor-1", users["auditor"])
    with client.session_transaction() as sess:
        token = sess["sid"]
        assert set(sess) <= {"sid", "csrf_token", "_permanent"}
    s = database(app).sessionmaker()
    [row] = s.query(WebSession).all()
    s.close()
    assert row.id != token and len(row.id) == 64


def test_a_new_secret_key_ends_every_session(app, app_config, client, users):
    copy = logged_in(app, client, "auditor-1", users["auditor"])
    cookie = client.get_cookie(COOKIE).value
    rekeyed = create_app({**app_config, "SECRET_KEY": "another-" + "k" * 56})
    try:
        other = rekeyed.test_client()
        other.set_cookie(COOKIE, cookie)
        assert other.get("/auditor/").status_code == 302
        assert copy.get("/auditor/").status_code == 200  # the old key still opens it
    finally:
        database(rekeyed).engine.dispose()


def test_a_webhook_neither_reads_nor_refreshes_a_session_cookie(app, client, users):
    """Twilio sends no cookie; one that comes with a webhook anyway is not a login there,
    and the answer sets no cookie, while the same cookie still serves the workspace."""
    assert login(client, "auditor-1", users["auditor"]).status_code == 302
    assert client.get("/auditor/").headers.get("Set-Cookie")  # refreshed on each page
    r = post(client, app, "/voice/incoming", dict(CALL))
    assert r.status_code == 200 and b"<Response>" in r.data
    assert "Set-Cookie" not in r.headers
    assert client.get("/auditor/").status_code == 200
