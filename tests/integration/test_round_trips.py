"""Database round trips per webhook on PostgreSQL (issue 14: one statement per webhook).

Counted twice: statements through SQLAlchemy's `before_cursor_execute` event (the ORM's;
the functions' calls go to psycopg directly and count 0 there), and round trips on the wire
from libpq's trace of every connection the app checks out (each ReadyForQuery from the
server ends one: a statement, a BEGIN, a COMMIT, a ROLLBACK or a pool ping). A change that
adds one to a webhook's common path fails here.
"""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import event

from ivr.adapters.simulate import Recording
from ivr.storage.db import database
from tests.integration.conftest import postgresql_only

WEBHOOKS = ("incoming", "gather", "status", "recording")
# One statement, autocommitted: no BEGIN, COMMIT or ping on the wire.
BUDGET = {name: 1 for name in WEBHOOKS}


@pytest.fixture
def app_config(app_config):
    """The sequencer off: its integration passes are not the webhooks' round trips."""
    return {**app_config, "AUDIT_SEQUENCER": "off"}


class Wire:
    """Counts statements and round trips of one engine while it listens."""

    def __init__(self, engine, trace_file):
        self.engine = engine
        self.trace_file = trace_file
        self.statements = 0

    def _statement(self, *_args):
        self.statements += 1

    def _checkout(self, dbapi_conn, _record, _proxy):
        dbapi_conn.pgconn.trace(self.trace_file.fileno())
        dbapi_conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)

    @staticmethod
    def _checkin(dbapi_conn, _record):
        dbapi_conn.pgconn.untrace()

    def round_trips(self) -> int:
        self.trace_file.flush()
        self.trace_file.seek(0)
        return sum("\tReadyForQuery\t" in line for line in self.trace_file.read().splitlines())

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self._statement)
        event.listen(self.engine, "checkout", self._checkout)
        event.listen(self.engine, "checkin", self._checkin)
        return self

    def __exit__(self, *_exc):
        event.remove(self.engine, "before_cursor_execute", self._statement)
        event.remove(self.engine, "checkout", self._checkout)
        event.remove(self.engine, "checkin", self._checkin)


def _measure(engine, tmp_path, name, action) -> tuple[int, int]:
    with open(tmp_path / f"{name}.trace", "w+") as trace, Wire(engine, trace) as wire:
        action()
        return wire.statements, wire.round_trips()


def _call(caller, tmp_path, engine, label) -> dict:
    measured = {}
    box = {}
    measured["incoming"] = _measure(engine, tmp_path, label + "-incoming",
                                    lambda: box.update(turn=caller.dial()))
    measured["gather"] = _measure(engine, tmp_path, label + "-gather",
                                  lambda: caller.press(box["turn"], "1"))
    rec = Recording("RE" + caller.call_sid[2:], caller.url("/voice/recording"),
                    ("completed",), 0.0)
    measured["recording"] = _measure(engine, tmp_path, label + "-recording",
                                     lambda: caller.recording_status(rec, "completed"))
    measured["status"] = _measure(engine, tmp_path, label + "-status",
                                  lambda: caller.status("completed", duration=42))
    return measured


@postgresql_only
def test_each_webhook_is_one_round_trip(app, local_caller, tmp_path):
    engine = database(app).engine
    # Warm: the data keys checked and the flow version stored (both on the ORM path, once
    # per process), and each function prepared on the connection (a connection's first
    # call of a function also parses it: one more round trip, once).
    for n in (1, 2):
        _call(local_caller(from_number=f"+90532000000{n}"), tmp_path, engine, f"warm{n}")
    measured = _call(local_caller(), tmp_path, engine, "call")
    for name in WEBHOOKS:
        statements, trips = measured[name]
        assert statements <= BUDGET[name], (name, measured)
        assert trips <= BUDGET[name], (name, measured)
