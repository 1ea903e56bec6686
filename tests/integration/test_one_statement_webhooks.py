"""The one-statement webhooks (PostgreSQL functions, issue 14) store exactly what the ORM
verbs store: the same calls, scripted alike, go through an app with IVR_WEBHOOK_FUNCTIONS
on and one with it off, and every row and audit leaf they leave must match (times, ids and
the sequencer's order aside)."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import event, text

from ivr import create_app
from ivr.adapters.simulate import Caller, Recording, flask_transport
from ivr.storage.db import database
from tests.integration.conftest import (
    AUTH_TOKEN,
    pg_schema_url,
    postgresql_only,
    verified_chain_length,
)

from ..support.auditor import audio_dir, rendered_audio

__all__ = ["audio_dir", "rendered_audio"]  # fixtures, so pytest finds them

# (CallSid, caller's number, keys; 'h' hangs up). The numbers repeat on purpose: the
# second call of +905320000001 comes from a caller who consented (the withdrawal offer).
SCRIPTS = [
    ("CA" + "1" * 32, "+905320000001", ["1"]),
    ("CA" + "2" * 32, "+905320000002", ["2"]),
    ("CA" + "3" * 32, "+905320000003", ["9", "1"]),
    ("CA" + "4" * 32, "+905320000004", ["7", "", "1"]),
    ("CA" + "5" * 32, "+905320000005", ["", "", ""]),
    ("CA" + "6" * 32, "+905320000006", ["0", "1"]),
    ("CA" + "7" * 32, "+905320000007", ["h"]),
    ("CA" + "8" * 32, "+905320000001", ["3"]),
]
TIMES = {"at", "captured_at", "timestamp", "start_time", "created_at", "updated_at",
         "received_at", "queued_at", "started_at", "answered_at", "ended_at", "status_at",
         "hangup_at", "twilio_timestamp", "first_seen", "integrated_at"}
IDS = {"id", "consent_id", "seq", "hash", "prev_hash", "phone_enc"}  # phone_enc: Fernet is random
_TIME = re.compile(r"time|_at$", re.IGNORECASE)


def _place(app) -> None:
    client = app.test_client()
    for sid, number, keys in SCRIPTS:
        caller = Caller(app.config["PUBLIC_URL"], AUTH_TOKEN, flask_transport(client),
                        call_sid=sid, from_number=number)
        caller.status("ringing", sequence=0)
        turn = caller.dial()
        for key in keys:
            if key == "h" or not turn.gather_action:
                break
            turn = caller.press(turn, key)
        # A retried gather (same URL, same token) and a duplicated status: stored once.
        rec = Recording("RE" + sid[2:], caller.url("/voice/recording"),
                        ("in-progress", "completed"), 0.0)
        caller.recording_status(rec, "in-progress")
        caller.recording_status(rec, "completed")
        caller.status("completed", sequence=5, duration=30, token="tok-" + sid)
        caller.status("completed", sequence=5, duration=30, token="tok-" + sid)
        caller.status("completed", sequence=5, duration=30)
        caller.status("answered", sequence=2)


def _normal(value):
    """A value with times and ids dropped, JSON text parsed, and the gather URLs' state
    tokens cut (they carry the run's memory on both paths alike, but compressed)."""
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()
                if k not in TIMES | IDS and not _TIME.search(k)}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return _normal(json.loads(value))
        except ValueError:
            return value
    if isinstance(value, str):
        return re.sub(r"&amp;s=[A-Za-z0-9_-]+", "&amp;s=…", value)
    return value


def _snapshot(app) -> dict:
    verified_chain_length(app)
    out = {}
    queries = {
        "calls": "SELECT * FROM calls ORDER BY call_sid",
        "call_events": "SELECT * FROM call_events ORDER BY call_sid, dedupe_key",
        "webhook_requests": "SELECT path, call_sid, CASE WHEN idempotency_token LIKE 'tok-%' "
                            "THEN idempotency_token END AS token, outcome, status_code, "
                            "response FROM webhook_requests ORDER BY call_sid, id",
        "flow_runs": "SELECT * FROM flow_runs ORDER BY call_sid, origin",
        "flow_turns": "SELECT t.* FROM flow_turns t JOIN flow_runs r ON r.id = t.run_id "
                      "ORDER BY r.call_sid, t.step",
        "recordings": "SELECT * FROM recordings ORDER BY recording_sid",
        "consents": "SELECT * FROM consents ORDER BY call_sid",
        "audit": "SELECT kind, ref, body FROM audit_log ORDER BY ref, seq",
    }
    with database(app).engine.connect() as conn:
        for name, sql in queries.items():
            rows = [dict(r._mapping) for r in conn.execute(text(sql))]
            out[name] = [_normal(r) for r in rows]
    # The three webhooks that arrive together leave their leaves in the order they were
    # handled; within a call the order is the same on both paths.
    return out


@pytest.fixture
def app_config(app_config):
    """The sequencer off while calls are placed (its passes are not the webhooks'
    statements); the snapshot integrates the queue."""
    return {**app_config, "AUDIT_SEQUENCER": "off"}


@pytest.fixture
def second_database_url():
    yield from pg_schema_url()


@postgresql_only
def test_functions_store_what_the_orm_verbs_store(app, app_config, second_database_url):
    statements: list[int] = []
    engine = database(app).engine
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(1))
    _place(app)
    fast = _snapshot(app)
    fast_statements = len(statements)

    orm_app = create_app({**app_config, "DATABASE_URL": second_database_url,
                          "WEBHOOK_FUNCTIONS": "off"})
    database(orm_app).create_all()
    orm_statements: list[int] = []
    event.listen(database(orm_app).engine, "before_cursor_execute",
                 lambda *a: orm_statements.append(1))
    try:
        _place(orm_app)
        slow = _snapshot(orm_app)
    finally:
        database(orm_app).engine.dispose()
    for table in fast:
        assert fast[table] == slow[table], table
    # The functions did the work: far fewer statements than the ORM path.
    assert fast_statements * 3 < len(orm_statements), (fast_statements, len(orm_statements))


def test_a_bad_switch_value_stops_start_up(app_config):
    from ivr.domain.config import ConfigError

    with pytest.raises(ConfigError, match="IVR_WEBHOOK_FUNCTIONS"):
        create_app({**app_config, "WEBHOOK_FUNCTIONS": "maybe"})
