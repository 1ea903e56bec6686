"""The webhook deadline on PostgreSQL work: inside it a statement that takes too long is
cut and fails at once; outside it (the CLI's long jobs) nothing is cut; either way the
engine goes on working."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from ivr.storage.db import Database
from ivr.storage.deadline import deadline


@pytest.fixture
def db(database_url):
    database = Database(database_url)
    yield database
    database.engine.dispose()


def test_a_statement_past_the_deadline_is_cut_and_the_engine_recovers(db):
    with db.engine.connect() as conn:  # outside a deadline: a slow statement finishes
        assert conn.execute(text("SELECT pg_sleep(0.3), 1")).one()[1] == 1
    # Left alone this would finish without error after 30 s: the error is the cut.
    with deadline(0.3), pytest.raises(OperationalError), db.engine.connect() as conn:
        conn.execute(text("SELECT pg_sleep(30)"))
    with deadline(5), db.engine.connect() as conn:  # a new connection, within the time
        assert conn.execute(text("SELECT 1")).scalar() == 1


def test_no_time_left_means_no_connection_attempt(db):
    with deadline(0), pytest.raises(OperationalError, match="deadline"):
        db.engine.connect()


def test_sessions_left_idle_in_a_transaction_are_ended_by_the_server(db):
    with db.engine.connect() as conn:
        timeout = conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar()
    assert timeout == "1min"
