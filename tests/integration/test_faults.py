"""Several gunicorn workers: a worker killed mid-request, and callback storms."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import format_datetime

import psycopg
import pytest
import requests
from sqlalchemy import func, select

from ivr import create_app
from ivr.adapters.simulate import Caller, http_transport
from ivr.domain.flow import load_flow
from ivr.domain.times import utcnow
from ivr.storage.models import Call, CallEvent, Consent, FlowRun, Recording, Turn
from ivr.web.current import database
from tests.integration.conftest import AUTH_TOKEN, verified_chain_length
from tests.support.gunicorn_server import Gunicorn
from tests.unit.conftest import ROOT

FLOW = load_flow(ROOT / "flows" / "consent.yaml")


@pytest.fixture
def served(app_config, request):
    """The app's schema, and gunicorn serving it with several workers.

    A test marked `patient` gives webhooks 60 s for the database instead of the 1.2 s
    after which they answer from the spool, so a worker stays blocked in its transaction."""
    if request.node.get_closest_marker("patient"):
        app_config["DB_CONNECT_TIMEOUT"] = "60"
    # Fixed keys so the test process and the workers share them.
    app = create_app(app_config)
    database(app).create_all()
    app_config.update(PII_KEY=app.config["PII_KEY"], HMAC_KEY=app.config["HMAC_KEY"])
    server = Gunicorn(app_config, workers=2)
    server.app = app
    yield server
    server.stop()
    database(app).engine.dispose()


class HeldLock:
    """Hold a lock every webhook's audit append waits for, from outside the app: the audit
    queue's table (appends take no lock of their own)."""

    def __init__(self, url: str):
        conninfo = url.replace("postgresql+psycopg://", "postgresql://")
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.conn.execute("BEGIN")
        self.conn.execute("LOCK TABLE audit_queue IN EXCLUSIVE MODE")

    def release(self):
        self.conn.execute("ROLLBACK")
        self.conn.close()


@pytest.mark.patient
def test_worker_killed_mid_request_then_twilio_retries(served, app_config):
    c = Caller(served.url, AUTH_TOKEN, http_transport())
    first = c.dial()
    data = c.params(Digits="1")
    token = "retry-token-1"
    lock = HeldLock(app_config["DATABASE_URL"])
    outcome = {}

    def press():
        try:
            outcome["reply"] = c.signed_post(first.gather_action, data, token)
        except requests.RequestException as e:
            outcome["error"] = e

    t = threading.Thread(target=press)
    t.start()
    t.join(1.5)  # the worker is now blocked inside its transaction, before commit
    assert t.is_alive()
    killed = served.kill_workers()
    assert killed
    t.join(10)
    assert "error" in outcome or outcome["reply"].status != 200
    time.sleep(1.0)  # PostgreSQL notices the killed worker's socket (every 250 ms)
    lock.release()
    served.wait_ready()
    # Nothing of the killed request was written: on SQLite and in an ORM transaction it
    # was never committed; on PostgreSQL its one statement was cancelled when the server
    # saw its client gone (client_connection_check_interval, ivr/storage/deadline.py).
    with database(served.app).sessionmaker() as s:
        assert s.scalar(select(func.count()).select_from(Consent)) == 0
        assert s.scalar(select(func.max(Turn.step))) == 0
    # Twilio retries the same request: the call completes exactly once.
    reply = c.signed_post(first.gather_action, data, token)
    assert reply.status == 200
    assert FLOW.text("confirm_granted", "tr") in reply.body
    again = c.signed_post(first.gather_action, data, token)
    assert again.body == reply.body
    c.hang_up()
    with database(served.app).sessionmaker() as s:
        assert [x.decision for x in s.scalars(select(Consent))] == ["granted"]
    assert verified_chain_length(served.app) > 0


STATUSES = ["initiated", "ringing", "in-progress", "completed"]


def test_callback_storm_leaves_one_correct_final_state(served):
    calls = [Caller(served.url, AUTH_TOKEN, http_transport()) for _ in range(6)]
    for c in calls:
        c.press(c.dial(), "2")
    jobs = []
    base = utcnow()
    for c in calls:
        for seq, st in enumerate(STATUSES):
            form = c.params(CallStatus=st, SequenceNumber=str(seq),
                            Timestamp=format_datetime(base, usegmt=True),
                            CallbackSource="call-progress-events",
                            CallDuration="33" if st == "completed" else None)
            jobs += [(c, "/voice/status", form)] * 3
        for st in ("in-progress", "completed"):
            form = {"CallSid": c.call_sid, "AccountSid": c.account_sid,
                    "RecordingSid": "RE" + c.call_sid[2:], "RecordingStatus": st,
                    "RecordingDuration": "30" if st == "completed" else None}
            jobs += [(c, "/voice/recording", {k: v for k, v in form.items() if v})] * 3
    random.Random(7).shuffle(jobs)

    def send(job):
        c, path, form = job
        return c.signed_post(c.url(path), form).status

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(send, jobs))
    assert set(codes) == {200}
    with database(served.app).sessionmaker() as s:
        for c in calls:
            call = s.get(Call, c.call_sid)
            assert (call.status, call.status_seq, call.duration) == ("completed", 3, 33)
            events = s.scalars(select(CallEvent).where(CallEvent.call_sid == c.call_sid)).all()
            assert sorted((e.kind, e.status) for e in events) == sorted(
                [("status", st) for st in STATUSES]
                + [("recording", "in-progress"), ("recording", "completed")])
            rec = s.get(Recording, "RE" + c.call_sid[2:])
            assert (rec.status, rec.duration) == ("completed", 30)
            run = s.scalar(select(FlowRun).where(FlowRun.call_sid == c.call_sid))
            assert run.ended
        assert [x.decision for x in s.scalars(select(Consent))] == ["declined"] * 6
    assert verified_chain_length(served.app) > 0
