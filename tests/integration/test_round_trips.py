"""Database round trips per webhook: exactly one, in every scenario of the benchmark's mix
(benchmarks/consent_calls.py --mix): fresh callers, returning consenters offered the
withdrawal (and withdrawing), a caller whose number is hidden, hang-ups during the notice,
Twilio's retries with the same idempotency token, callbacks for a call not seen yet,
out-of-order and duplicated statuses, and a transfer (its start, its return, its call's
end).

Counted twice: statements through SQLAlchemy's `before_cursor_execute` event (the
functions' calls go to psycopg directly and count 0 there), and round trips on the wire
from libpq's trace of every connection the app checks out (each ReadyForQuery from the
server ends one: a statement, a BEGIN, a COMMIT, a ROLLBACK or a pool ping). A change that
adds one to any webhook fails here.
"""

from __future__ import annotations

import secrets

import psycopg
import pytest
from sqlalchemy import event, text

from ivr.adapters.simulate import Recording
from ivr.web.current import database
from tests.support.transfer import QUEUE, auth, follow, make_user, twilio  # noqa: F401

# One statement, autocommitted: no BEGIN, COMMIT or ping on the wire.
BUDGET = 1


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


def _measure(engine, tmp_path, label, action):
    """(statements, round trips, the action's result)."""
    name = f"{label}-{secrets.token_hex(4)}"
    with open(tmp_path / f"{name}.trace", "w+") as trace, Wire(engine, trace) as wire:
        result = action()
        return wire.statements, wire.round_trips(), result


class Measured:
    """Every webhook of the scenarios, measured."""

    def __init__(self, engine, tmp_path):
        self.engine, self.tmp_path = engine, tmp_path
        self.rows: list[tuple[str, int, int]] = []

    def __call__(self, label: str, action):
        statements, trips, result = _measure(self.engine, self.tmp_path, label, action)
        self.rows.append((label, statements, trips))
        return result


def _fresh(m: Measured, caller, key: str = "1") -> None:
    turn = m("fresh: incoming", caller.dial)
    m("fresh: gather", lambda: caller.press(turn, key))
    rec = Recording("RE" + caller.call_sid[2:], caller.url("/voice/recording"),
                    ("completed",), 0.0)
    m("fresh: recording", lambda: caller.recording_status(rec, "completed"))
    m("fresh: status", lambda: caller.status("completed", duration=42))


def _transfer(m: Measured, app, client, local_caller, fake_twilio, number: str,
              bearer: str) -> None:
    moved = local_caller(from_number=number, account_sid="AC" + "1" * 32)
    moved.dial()
    fake_twilio.calls[moved.call_sid] = "in-progress"
    r = client.post("/api/transfers", json={"call_sid": moved.call_sid, "return_to": QUEUE},
                    headers=auth(bearer, "key-" + moved.call_sid))
    assert r.status_code == 201, r.get_data(as_text=True)
    url = fake_twilio.updates()[-1].form["Url"]
    turn = m("transfer: start", lambda: follow(moved, url))
    back = m("transfer: return (decides)", lambda: moved.press(turn, "1"))
    assert back.end == "enqueue:sales", back
    m("transfer: status", lambda: moved.status("completed", duration=60))


def test_each_webhook_of_the_mix_is_one_round_trip(app, client, local_caller, tmp_path,
                                                   twilio):  # noqa: F811 - the fixture
    engine = database(app).engine
    # Warm: the data keys checked and the flow version stored (once per process), and each
    # function prepared on the connection (a connection's first call also parses it).
    _agent, bearer = make_user(app, "ayse", "agent")
    for n in (1, 2):
        _fresh(Measured(engine, tmp_path), local_caller(from_number=f"+90532000000{n}"))
        _transfer(Measured(engine, tmp_path), app, client, local_caller, twilio,
                  f"+90532000001{n}", bearer)
    m = Measured(engine, tmp_path)

    # A fresh caller who consents, with a recording.
    number = "+905321112233"
    _fresh(m, local_caller(from_number=number))
    # The same caller again: offered the withdrawal, and withdraws.
    back = local_caller(from_number=number)
    turn = m("returning: incoming", back.dial)
    assert turn.gather_action
    m("returning: gather (withdraws)", lambda: back.press(turn, "3"))
    m("returning: status", lambda: back.status("completed", duration=30))
    # A returning consenter who confirms.
    again = local_caller(from_number="+905321112244")
    _fresh(Measured(engine, tmp_path), again)
    confirm = local_caller(from_number="+905321112244")
    turn = m("consenter: incoming", confirm.dial)
    m("consenter: gather (confirms)", lambda: confirm.press(turn, "1"))
    # A caller whose number is hidden: the notice, why nothing can be recorded, goodbye.
    hidden = local_caller(from_number="+266696687")
    turn = m("hidden: incoming", hidden.dial)
    end = m("hidden: gather (nothing recorded)", lambda: hidden.press(turn, "1"))
    assert end.end == "hangup"
    m("hidden: status", lambda: hidden.status("completed", duration=40))
    # A caller who hangs up during the notice.
    gone = local_caller(from_number="+905321112255")
    m("hang-up: incoming", gone.dial)
    m("hang-up: status", lambda: gone.status("completed", duration=5))
    # Twilio retries a webhook with the same idempotency token.
    retried = local_caller(from_number="+905321112266")
    token = secrets.token_hex(16)
    data = retried.params(CallStatus="ringing")
    for label in ("retry: incoming", "retry: incoming again"):
        reply = m(label, lambda: retried.signed_post(retried.url("/voice/incoming"), data,
                                                     token))
        assert reply.status == 200
    # Callbacks for a call not seen yet, out of order and duplicated.
    early = local_caller(from_number="+905321112277")
    rec = Recording("RE" + early.call_sid[2:], early.url("/voice/recording"),
                    ("completed",), 0.0)
    m("unseen: recording", lambda: early.recording_status(rec, "completed"))
    m("unseen: status ringing", lambda: early.status("ringing", sequence=1))
    m("out of order: status initiated", lambda: early.status("initiated", sequence=0))
    m("duplicate: status ringing", lambda: early.status("ringing", sequence=1))
    m("late: incoming", early.dial)
    # A transfer: the agent moves a live call into the flow; it decides and returns.
    _transfer(m, app, client, local_caller, twilio, "+905321112288", bearer)

    over = [(label, s, t) for label, s, t in m.rows if s > BUDGET or t > BUDGET]
    assert not over, over
    assert all(t == 1 for _label, _s, t in m.rows), m.rows


def test_only_the_webhook_functions_are_prepared(app, local_caller):
    """The pages' queries are planned for their values at every run: no statement but a
    webhook function's call is prepared on a connection, however often it runs (after five
    runs of a prepared statement PostgreSQL may keep a generic plan, ten times slower for a
    keyset page of the drop-off at a million calls)."""
    db = database(app)
    for _ in range(8):  # past psycopg's default threshold of five, each run committed
        with db.sessionmaker.begin() as s:
            s.execute(text("SELECT count(*) FROM calls WHERE started_at >= :t"),
                      {"t": "2026-01-01T00:00:00Z"})
    local_caller(from_number="+905321112299").dial()
    assert db.engine.pool.checkedin() == 1  # one thread: one connection served them all
    with db.engine.connect() as conn:
        prepared = set(conn.exec_driver_sql(
            "SELECT statement FROM pg_prepared_statements").scalars())
    assert prepared, "the webhook's function was not prepared"
    assert all("ivr_webhook_" in p for p in prepared), prepared
