"""Helpers for the lifecycle tests (no tests here): users, consent events, the CLI."""

from __future__ import annotations

import json
from datetime import datetime

from ivr.cli.main import cli
from ivr.services.accounts import add_user
from ivr.storage import audit_store
from ivr.storage.models import Consent
from ivr.web.current import database, personal_data

PHONE = "+905321234567"
CHANNELS = ["ARAMA", "MESAJ", "EPOSTA"]


def token(app, role: str, name: str | None = None) -> str:
    """A bearer token of a new account with `role`."""
    with app.app_context():
        s = database(app).sessionmaker()
        with s.begin():
            _user, secret = add_user(s, name or f"{role}-user", role)
        s.close()
    return secret


def add_consent(app, phone: str, decision: str, at: datetime, channels=None,
                source: str = "ivr", call_sid: str | None = None) -> int:
    """Store one consent event directly (as a call or the API would), with its audit entry."""
    from ivr.services.consents import audit_entry

    with app.app_context():
        pii = personal_data()
        s = database(app).sessionmaker()
        with s.begin():
            rec = Consent(call_sid=call_sid, phone_hmac=pii.fingerprint(phone),
                          phone_enc=pii.encrypt(phone), purpose="marketing",
                          channels=list(channels or CHANNELS), decision=decision,
                          digits="1" if decision == "granted" else "",
                          language="tr", captured_at=at, source=source, audio={})
            s.add(rec)
            s.flush()
            audit_store.append(s, [audit_entry(rec)], at=at)
            rid = rec.id
        s.close()
    return rid


def run_cli(app, *args, ok: bool = True):
    """`python -m ivr ARGS` against this app; asserts exit 0 unless ok=False."""
    result = app.test_cli_runner().invoke(cli, list(args))
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


def status(app, phone: str = PHONE) -> dict:
    """`consents status PHONE --json`."""
    return json.loads(run_cli(app, "consents", "status", phone, "--json").output)


def session(app):
    """A new session on the app's database (close it when done)."""
    return database(app).sessionmaker()
