"""One test base for the webhooks, whatever path a webhook takes to its database function.

A webhook is applied live, or answered from the spool while the database is away and
applied when it is back: both go through the same verbs and functions
(ivr/services/webhooks.py). Each scenario below is played both ways, with the same
injected clock, call SIDs and Twilio timestamps, and every stored row must come out the
same, times included: the calls, runs, turns, consents, events, recordings and the audit
leaves (bodies and times). Only the webhooks' own rows differ ('ok' against 'spooled').
"""

from __future__ import annotations

import itertools
import re
from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text

from ivr.adapters.simulate import Caller, Recording, http_transport
from ivr.cli.main import cli
from tests.integration.conftest import AUTH_TOKEN, LiveServer, pg_schema_url
from tests.support.tcp_proxy import proxied

EPOCH = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
TABLES = {
    "calls": "SELECT * FROM calls ORDER BY call_sid",
    "flow_runs": "SELECT * FROM flow_runs ORDER BY id",
    "flow_turns": "SELECT * FROM flow_turns ORDER BY run_id, step",
    "consents": "SELECT * FROM consents ORDER BY id",
    "call_events": "SELECT call_sid, kind, status, dedupe_key, sequence_number, "
                   "twilio_timestamp, received_at, data::text FROM call_events "
                   "ORDER BY call_sid, dedupe_key",
    "recordings": "SELECT * FROM recordings ORDER BY recording_sid",
    "leaves": "SELECT kind, ref, body, queued_at FROM audit_queue ORDER BY id",
}


class Clock:
    """The webhooks' clock: a quarter of a second further at each reading."""

    def __init__(self):
        self._ticks = itertools.count()

    def __call__(self) -> datetime:
        return EPOCH + timedelta(milliseconds=250 * next(self._ticks))


def _caller(url: str, n: int, **kw) -> Caller:
    c = Caller(url, AUTH_TOKEN, http_transport(), call_sid=f"CA{n:032d}",
               from_number=f"+90532000{n:04d}", **kw)
    c.started_at = EPOCH
    return c


def _recording(c: Caller, status: str) -> None:
    rec = Recording("RE" + c.call_sid[2:], c.url("/voice/recording"), (status,), 0.0)
    assert c.recording_status(rec, status).status == 200


def grant_with_recording(url):
    c = _caller(url, 1)
    c.press(c.dial(), "1")
    _recording(c, "in-progress")
    c.hang_up()
    _recording(c, "completed")


def decline_in_english_after_a_wrong_key(url):
    c = _caller(url, 2)
    turn = c.dial()
    turn = c.press(turn, "0")  # English
    turn = c.press(turn, "7")  # not a choice
    c.press(turn, "2")
    c.hang_up()


def silence_three_times(url):
    c = _caller(url, 3)
    turn = c.dial()
    for _ in range(3):
        if turn.gather_action:
            turn = c.press(turn, "")
    c.hang_up()


def hang_up_during_the_notice(url):
    c = _caller(url, 4)
    c.dial()
    c.hang_up()


def callbacks_out_of_order_and_twice(url):
    c = _caller(url, 5)
    assert c.status("ringing", sequence=1).status == 200
    assert c.status("initiated", sequence=0).status == 200
    assert c.status("ringing", sequence=1).status == 200
    turn = c.dial()
    c.press(turn, "1")
    assert c.status("completed", sequence=3, duration=20).status == 200
    assert c.status("in-progress", sequence=2).status == 200


SCENARIOS = [grant_with_recording, decline_in_english_after_a_wrong_key, silence_three_times,
             hang_up_during_the_notice, callbacks_out_of_order_and_twice]


def _portless(value):
    """Each run has its own server port, in the TwiML's absolute URLs."""
    return re.sub(r"http://127\.0\.0\.1:\d+", "http://server", value) \
        if isinstance(value, str) else value


class WebhookPath(ABC):
    """Plays a scenario against a fresh database through one path; its stored rows."""

    @abstractmethod
    def play(self, app_config: dict, scenario) -> dict:
        """Play `scenario` against the database `app_config` names; its stored rows."""

    @staticmethod
    def rows(url: str) -> dict:
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                # The encrypted number differs by its random IV: compared decrypted elsewhere.
                return {name: [{k: _portless(v) for k, v in r._mapping.items()
                                if k != "phone_enc"} for r in conn.execute(text(sql))]
                        for name, sql in TABLES.items()}
        finally:
            engine.dispose()


class Live(WebhookPath):
    """Every webhook applied as it arrives."""

    def play(self, app_config, scenario):
        server = LiveServer(dict(app_config, CLOCK=Clock(), AUDIT_SEQUENCER="off")).start()
        try:
            scenario(server.url)
        finally:
            server.stop()
        return self.rows(app_config["DATABASE_URL"])


class Spooled(WebhookPath):
    """Every webhook answered from the spool while the database is away, then applied."""

    def play(self, app_config, scenario):
        proxy, url = proxied(app_config["DATABASE_URL"])
        server = LiveServer(dict(app_config, DATABASE_URL=url, CLOCK=Clock(),
                                 AUDIT_SEQUENCER="off", DB_CONNECT_TIMEOUT="1.2")).start()
        try:
            proxy.cut()
            scenario(server.url)
            runner = server.app.test_cli_runner()
            assert "0 record(s) waiting" not in runner.invoke(cli, ["spool", "status"]).output
            proxy.restore()
            result = runner.invoke(cli, ["spool", "drain"])
            assert result.exit_code == 0 and "quarantined 0, left 0" in result.output, (
                result.output)
        finally:
            server.stop()
            proxy.close()
        return self.rows(app_config["DATABASE_URL"])


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_live_and_spooled_webhooks_store_the_same_rows_and_times(app_config, scenario):
    live = Live().play(app_config, scenario)
    second = pg_schema_url()
    try:
        spooled = Spooled().play(dict(app_config, DATABASE_URL=next(second)), scenario)
    finally:
        for _ in second:  # the generator's end drops the schema
            pass
    assert live["consents"] or scenario in (hang_up_during_the_notice,)
    for table in TABLES:
        assert spooled[table] == live[table], table
