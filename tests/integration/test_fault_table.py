"""Database faults as a table (issue 19): every fault, wherever it strikes, ends the same.

Rows are the faults, columns where they strike. Every cell is one test with one outcome:

- the caller hears the flow, or the spool's answer, within 2 s (HTTP 200 and valid TwiML;
  a callback gets 200 and an empty <Response/>), and nothing is ever answered 5xx;
- after recovery (the proxy restored, the lock released, the trigger dropped; then the
  spool drained and the sequencer run) nothing is lost and nothing is applied twice: the
  call's consent, status, events, recording and transfer are exactly what a call without
  the fault leaves, the audit log verifies and holds each of the call's leaves once;
- the spool replays each record once: empty afterwards, nothing quarantined, and a second
  drain applies 0.

The real server, real HTTP, and the production deadline (IVR_DB_CONNECT_TIMEOUT 1.2 s).
Faults on the wire come from a proxy that speaks enough of PostgreSQL's protocol
(tests/support/fault_proxy.py); the others are made on the server by another session
(tests/support/db_faults.py). The worker-killed row runs the webhooks under gunicorn (one
server for the module) and the sequencer and the spool drain as processes of their own.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from abc import ABC, abstractmethod
from collections import Counter
from datetime import datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from ivr import create_app
from ivr.adapters.simulate import Caller, http_transport, parse_twiml
from ivr.cli.main import cli
from ivr.domain.flow import load_flow
from ivr.domain.times import LOCAL, utcnow
from ivr.services import daily_aggregates
from ivr.services.audit_sequencer import run_pass
from ivr.storage.daily_aggregates import DailyConsents, DailyHangups, DailyNotices, DailyRuns
from ivr.storage.models import AuditEntry, AuditQueue, Call, CallEvent, Consent, Recording
from ivr.storage.transfer_models import Transfer
from ivr.web.current import database, spool
from tests.integration.conftest import (
    AUTH_TOKEN,
    ROOT,
    LiveServer,
    pg_schema_url,
    verified_chain_length,
)
from tests.support.db_faults import AdminShutdown, HeldLock, LostRaces, wait_for, with_options
from tests.support.db_faults import via as via_port
from tests.support.fake_twilio import FakeTwilio
from tests.support.fault_proxy import FaultProxy
from tests.support.gunicorn_server import Gunicorn
from tests.support.transfer import ACCOUNT, QUEUE, make_user, post_transfer, twilio

__all__ = ["twilio"]  # the autouse fixture: the app's REST calls go to the fake Twilio

FLOW = load_flow(ROOT / "flows" / "consent.yaml")


def TR(prompt: str) -> str:  # reads as the language's name
    return FLOW.text(prompt, "tr")


INBOUND = [TR("greeting"), TR("language_offer"), TR("notice_intro"), TR("notice_body"),
           TR("question")]
DEADLINE = "1.2"  # the production IVR_DB_CONNECT_TIMEOUT
HEARD_WITHIN = 2.0  # seconds: a caller hears something within this, whatever happens
STATEMENT_TIMEOUT = "statement_timeout=500"  # ms: below the deadline, so the server cuts

CALL_STEPS = ("incoming", "gather", "status", "recording")
TRANSFER_STEPS = ("transfer_request", "transfer_start", "transfer_return", "status",
                  "recording")
COLUMNS = ("incoming", "gather", "status", "recording", "transfer_start", "transfer_return",
           "sequencer", "spool_drain")

TWIML_STEPS = ("incoming", "gather", "transfer_start", "transfer_return")


@pytest.fixture
def database_url():
    """A fresh schema on the PostgreSQL server (the faults are a networked server's)."""
    yield from pg_schema_url()


# --- a call, step by step ---------------------------------------------------------------


class Story:
    """One caller's call, each step a signed request as Twilio sends it (a retry of a step
    sends the same form with the same idempotency token)."""

    def __init__(self, rig, transfer: bool = False):
        self.rig = rig
        self.transfer = transfer
        self.steps = TRANSFER_STEPS if transfer else CALL_STEPS
        # A caller of their own (a number seen before would be offered the withdrawal).
        number = "+90532" + str(secrets.randbelow(10**7)).zfill(7)
        self.c = Caller(rig.url, AUTH_TOKEN, http_transport(), account_sid=ACCOUNT,
                        from_number=number)
        self.sid = self.c.call_sid
        self.turn = None
        self.transfer_id: str | None = None
        self.transfer_url: str | None = None
        self.recording_sid = "RE" + secrets.token_hex(16)
        self._forms: dict[str, tuple[str, dict]] = {}

    def request(self, step: str) -> tuple[str, dict]:
        """The URL and form of a step (made once: a retry sends the same)."""
        if step not in self._forms:
            c = self.c
            if step == "incoming":
                made = c.url("/voice/incoming"), c.params(CallStatus="ringing")
            elif step == "transfer_start":
                made = self.transfer_url, c.params()
            elif step in ("gather", "transfer_return"):
                made = self.turn.gather_action, c.params(Digits="1")
            elif step == "status":
                made = c.url("/voice/status"), c.params(
                    CallStatus="completed", SequenceNumber="0", CallDuration="20",
                    Timestamp=format_datetime(utcnow(), usegmt=True),
                    CallbackSource="call-progress-events")
            else:
                made = c.url("/voice/recording"), {
                    "CallSid": self.sid, "AccountSid": ACCOUNT,
                    "RecordingSid": self.recording_sid, "RecordingStatus": "completed",
                    "RecordingDuration": "12"}
            self._forms[step] = made
        return self._forms[step]

    def send(self, step: str, token: str | None = None):
        """Send one step: (reply, seconds taken)."""
        url, form = self.request(step)
        started = time.monotonic()
        reply = self.c.signed_post(url, form, token)
        return reply, time.monotonic() - started

    def check(self, step: str, reply, seconds: float) -> None:
        """What the caller (or Twilio) got is a good answer, in time."""
        assert reply.status == 200, f"{step}: {reply.status} {reply.body[:300]}"
        assert seconds < HEARD_WITHIN, f"{step} answered after {seconds:.2f} s"
        root = ET.fromstring(reply.body)  # our own server's TwiML
        assert root.tag == "Response"
        if step not in TWIML_STEPS:
            assert len(root) == 0, reply.body  # a callback: the empty TwiML document
            return
        turn = parse_twiml(self.request(step)[0], reply.body)
        heard = [h.text for h in turn.heard]
        if step in ("incoming", "transfer_start"):
            assert heard == INBOUND, reply.body
            assert turn.gather_action
        elif step == "gather":
            assert heard == [TR("confirm_granted"), TR("goodbye")], reply.body
            assert turn.end == "hangup"
        else:
            assert heard == [TR("confirm_granted"), TR("return_queue")], reply.body
            assert turn.end == f"enqueue:{QUEUE['name']}"
        self.turn = turn

    def step(self, step: str, token: str | None = None) -> None:
        """Take a step that must simply work."""
        if step == "transfer_request":
            self.transfer_id, self.transfer_url = self.rig.request_transfer(self.sid)
            return
        self.check(step, *self.send(step, token))

    def steps_before(self, column: str):
        """The steps up to the one under the fault, which is not taken."""
        for step in self.steps:
            if step == column:
                return
            self.step(step)

    def steps_after(self, column: str) -> None:
        for step in self.steps[self.steps.index(column) + 1:]:
            self.step(step)

    def run(self) -> None:
        for step in self.steps:
            self.step(step)


# --- what a call leaves behind ------------------------------------------------------------


def leaf_kinds(app, sid: str) -> Counter:
    with database(app).sessionmaker() as s:
        return Counter(s.scalars(select(AuditEntry.kind).where(AuditEntry.ref == sid)))


def expected_leaves(transfer: bool) -> Counter:
    leaves = Counter({"call.started": 1, "notice.played": 2, "prompts.played": 2,
                      "input.received": 1, "consent.decided": 1, "call.status": 1,
                      "recording.status": 1})
    if transfer:
        leaves.update({"transfer.requested": 1, "transfer.redirected": 1, "transfer.in_flow": 1,
                       "transfer.decided": 1, "transfer.returned": 1})
    return leaves


def assert_complete(app, story: Story) -> None:
    """The call is stored exactly as one without a fault is, once."""
    sid = story.sid
    with database(app).sessionmaker() as s:
        consents = [(x.decision, x.digits, x.transfer_id)
                    for x in s.scalars(select(Consent).where(Consent.call_sid == sid))]
        assert consents == [("granted", "1", story.transfer_id)]
        call = s.get(Call, sid)
        assert (call.status, call.duration) == ("completed", 20)
        events = sorted((e.kind, e.status) for e in s.scalars(
            select(CallEvent).where(CallEvent.call_sid == sid)))
        assert events == [("recording", "completed"), ("status", "completed")]
        rec = s.get(Recording, story.recording_sid)
        assert (rec.call_sid, rec.status, rec.duration) == (sid, "completed", 12)
        if story.transfer:
            t = s.get(Transfer, story.transfer_id)
            assert t.status == "returned"
    assert leaf_kinds(app, sid) == expected_leaves(story.transfer)


def spool_depth(app) -> int:
    with app.app_context():
        return spool().depth()


def assert_recovered(app, stories: list[Story]) -> None:
    """Drain what waits, run the sequencer, and check every call and the spool."""
    runner = app.test_cli_runner()
    result = runner.invoke(cli, ["spool", "drain"])
    assert result.exit_code == 0, result.output
    assert "quarantined 0, left 0" in result.output, result.output
    status = runner.invoke(cli, ["spool", "status"]).output
    assert "0 record(s) waiting" in status and "0 record(s) quarantined" in status, status
    again = runner.invoke(cli, ["spool", "drain"]).output
    assert "applied 0, waiting 0, quarantined 0, left 0" in again, again
    assert verified_chain_length(app) > 0
    with database(app).sessionmaker() as s:
        assert s.scalar(select(func.count()).select_from(AuditQueue)) == 0
    for story in stories:
        assert_complete(app, story)


# --- the rigs -------------------------------------------------------------------------


class Rig:
    """The app over real HTTP, its PostgreSQL connections through a FaultProxy."""

    def __init__(self, app_config: dict, fake: FakeTwilio, statement_timeout: bool):
        url = app_config["DATABASE_URL"]
        self.db_url = url  # outside sessions (locks, triggers) connect directly
        target = make_url(url)
        self.proxy = FaultProxy(target.host, target.port)
        app_url = with_options(url, STATEMENT_TIMEOUT) if statement_timeout else url
        app_config.update(DB_CONNECT_TIMEOUT=DEADLINE, AUDIT_SEQUENCER="off",
                          DATABASE_URL=via_port(app_url, self.proxy.port))
        self.server = LiveServer(app_config).start()
        self.app, self.url, self.fake = self.server.app, self.server.url, fake
        self.config = app_config
        self._agent = None

    def request_transfer(self, sid: str) -> tuple[str, str]:
        """An agent asks for the call's transfer: (its id, the URL Twilio was given)."""
        return request_transfer(self, self.app, sid)

    def stop(self) -> None:
        self.server.stop()
        self.proxy.close()


def request_transfer(rig, app, sid: str) -> tuple[str, str]:
    if rig._agent is None:
        rig._agent = make_user(app, "ayse", "agent")[1]
    rig.fake.calls[sid] = "in-progress"
    client = app.test_client()
    status, doc, _ = post_transfer(client, rig._agent, secrets.token_hex(8),
                                   {"call_sid": sid, "return_to": QUEUE})
    assert status == 201, doc
    [update] = rig.fake.updates(sid)
    return doc["id"], update.form["Url"]


@pytest.fixture
def rig(app_config, twilio, row):
    r = Rig(app_config, twilio, statement_timeout=row == "statement_timeout")
    yield r
    r.stop()


# --- the faults -------------------------------------------------------------------------


class Fault(ABC):
    """One row: arm() makes the fault, disarm() recovers; `live` rows apply webhooks
    without the spool (the app retried), the others answer from it."""

    live = False

    @abstractmethod
    def arm(self, rig) -> None:
        """Make the fault happen from now on."""

    @abstractmethod
    def disarm(self, rig) -> None:
        """Recover: the database is reachable and answering again."""

    def struck(self, rig) -> bool:
        """Whether the fault was met (where it can be told)."""
        return True


class Refused(Fault):
    def arm(self, rig):
        rig.proxy.cut()

    def disarm(self, rig):
        rig.proxy.restore()


class ResetMidStatement(Fault):
    def arm(self, rig):
        self.before = rig.proxy.resets
        rig.proxy.reset_on_query(True)

    def disarm(self, rig):
        rig.proxy.reset_on_query(False)

    def struck(self, rig):
        return rig.proxy.resets > self.before


class Frozen(Fault):
    def arm(self, rig):
        rig.proxy.freeze()

    def disarm(self, rig):
        rig.proxy.restore()


class StatementTimeout(Fault):
    """The app's connections carry statement_timeout; another session holds the lock its
    statement needs, so the server cancels it (57014)."""

    def arm(self, rig):
        self.lock = HeldLock(rig.db_url)

    def disarm(self, rig):
        self.lock.release()


class TooManyConnections(Fault):
    def arm(self, rig):
        database(rig.app).engine.dispose()  # so the next statement needs a new connection
        self.before = rig.proxy.refused
        rig.proxy.too_many(True)

    def disarm(self, rig):
        rig.proxy.too_many(False)

    def struck(self, rig):
        return rig.proxy.refused > self.before


class AdminShutdownRow(Fault):
    """The app's statement waits on a lock; an administrator ends its backend (57P01)."""

    def arm(self, rig):
        self.lock = HeldLock(rig.db_url)
        self.admin = AdminShutdown(self.lock)

    def disarm(self, rig):
        self.admin.stop()
        self.lock.release()

    def struck(self, rig):
        return bool(self.admin.ended)


class LostRace(Fault):
    def __init__(self, sqlstate: str, times: int):
        self.sqlstate, self.times = sqlstate, times
        self.live = times < 3  # the app runs a transaction that lost a race 3 times

    def arm(self, rig):
        self.races = LostRaces(rig.db_url, self.sqlstate, self.times)

    def disarm(self, rig):
        self.strikes = self.races.strikes()
        self.races.drop()

    def struck(self, rig):
        return self.races.strikes() > 0


ROWS = {
    "refused": Refused,
    "reset": ResetMidStatement,
    "frozen": Frozen,
    "statement_timeout": StatementTimeout,
    "too_many": TooManyConnections,
    "admin_shutdown": AdminShutdownRow,
    "serialization": lambda: LostRace("40001", 1),
    "deadlock": lambda: LostRace("40P01", 2),
    "race_lost_thrice": lambda: LostRace("40001", 3),
}

# Cells that fail today, each with its cause in ivr/ (none: every cell passes).
XFAIL: dict[tuple[str, str], str] = {}


def _killed_marks(column: str) -> list:
    why = XFAIL.get(("killed", column))
    return [pytest.mark.xfail(strict=True, reason=why)] if why else []


def cells():
    for row in ROWS:
        for column in COLUMNS:
            marks = []
            why = XFAIL.get((row, column))
            if why:
                marks.append(pytest.mark.xfail(strict=True, reason=why))
            yield pytest.param(row, column, id=f"{row}-{column}", marks=marks)


# --- the table ---------------------------------------------------------------------------


@pytest.mark.parametrize("row,column", list(cells()))
def test_fault(rig, row, column):
    fault = ROWS[row]()
    app = rig.app
    if column in ("sequencer", "spool_drain"):
        stories = strike_background(rig, fault, column)
    else:
        story = Story(rig, transfer=column.startswith("transfer"))
        story.steps_before(column)
        fault.arm(rig)
        try:
            reply, seconds = story.send(column)
            assert fault.struck(rig), f"{row}: the fault was never met"
            waiting = spool_depth(app)
        finally:
            fault.disarm(rig)
        story.check(column, reply, seconds)
        assert (waiting == 0) if fault.live else (waiting >= 1), waiting
        story.steps_after(column)
        stories = [story]
    assert_recovered(app, stories)


def strike_background(rig, fault: Fault, column: str) -> list[Story]:
    """The sequencer's pass or a spool drain under the fault, while a new caller dials."""
    app = rig.app
    story = Story(rig)
    if column == "spool_drain":
        rig.proxy.cut()  # the whole call waits in the spool
        story.run()
        rig.proxy.restore()
        assert spool_depth(app) == 4
    else:
        story.run()
        with database(app).sessionmaker() as s:
            queued = s.scalar(select(func.count()).select_from(AuditQueue))
        assert queued > 0
    newcomer = Story(rig)
    box: dict = {}
    fault.arm(rig)
    try:
        worker = threading.Thread(target=background, args=(app, column, box), daemon=True)
        worker.start()
        worker.join(0.3)
        newcomer.check("incoming", *newcomer.send("incoming"))
        if not isinstance(fault, Frozen):
            worker.join(15)
            assert not worker.is_alive(), f"the {column} did not end under the fault"
        assert fault.struck(rig)
    finally:
        fault.disarm(rig)
    worker.join(15)
    assert not worker.is_alive(), f"the {column} did not end after recovery"
    if column == "sequencer":
        if isinstance(fault, Frozen):  # it waited for the database, then did its work
            assert box["result"].integrated > 0, box
        else:  # the pass failed; every leaf is still queued
            assert "error" in box, box
            with database(app).sessionmaker() as s:
                assert s.scalar(select(func.count()).select_from(AuditQueue)) >= queued
    else:
        result = box["result"]
        assert "Traceback" not in result.output, result.output
        assert "quarantined 0" in result.output, result.output
        assert result.exit_code in (0, 1), result.output
    for step in newcomer.steps[1:]:
        newcomer.step(step)
    return [story, newcomer]


def background(app, column: str, box: dict) -> None:
    try:
        if column == "sequencer":
            with app.app_context():
                box["result"] = run_pass(app)
        else:
            box["result"] = app.test_cli_runner().invoke(cli, ["spool", "drain"])
    except Exception as exc:  # the fault's error, looked at by the test
        box["error"] = exc


# --- the worker killed ------------------------------------------------------------------
#
# A request blocked inside the database (another session holds the lock its statement
# needs) when its process is SIGKILLed, as the OOM killer or a crash does; PostgreSQL ends
# the dead client's statement (client_connection_check_interval, ivr/storage/deadline.py),
# and Twilio retries the webhook with the same I-Twilio-Idempotency-Token. The webhooks run
# under gunicorn, one server for the module; the sequencer's pass and the spool drain run
# as the CLI processes they are in production.

KILLED_WEBHOOKS = ("incoming", "gather", "status", "recording", "transfer_start",
                   "transfer_return")


class KilledRig:
    """Gunicorn serving a schema of the module's; `app` is an in-process app on the same
    schema and instance folder (the agents' API calls, the checks, the CLI)."""

    def __init__(self, url: str, folder):
        self.db_url = url
        audio = folder / "audio"
        audio.mkdir()
        cfg = {"TESTING": True, "DATABASE_URL": url, "INSTANCE_DIR": str(folder / "instance"),
               "AUDIO_DIR": str(audio), "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
               "TWILIO_ACCOUNT_SID": ACCOUNT, "PUBLIC_URL": "http://ivr.test",
               "FLOW": str(ROOT / "flows" / "consent.yaml"), "FLOWS_DIR": str(ROOT / "flows"),
               "DB_CONNECT_TIMEOUT": DEADLINE, "AUDIT_SEQUENCER": "off"}
        first = create_app(cfg)
        database(first).create_all()
        database(first).engine.dispose()
        cfg.update(PII_KEY=first.config["PII_KEY"], HMAC_KEY=first.config["HMAC_KEY"])
        self.fake = FakeTwilio(account_sid=ACCOUNT, auth_token=AUTH_TOKEN).start()
        self.server = Gunicorn(cfg, workers=2)
        self.url = self.server.url
        self.app = create_app({**cfg, "PUBLIC_URL": self.url, "TWILIO_API_URL": self.fake.url,
                               "TWILIO_TIMEOUT": 5})
        self._agent = None

    def request_transfer(self, sid: str) -> tuple[str, str]:
        return request_transfer(self, self.app, sid)

    def stop(self) -> None:
        self.server.stop()
        self.fake.stop()
        database(self.app).engine.dispose()


@pytest.fixture(scope="module")
def killed_rig(tmp_path_factory):
    schema = pg_schema_url()
    r = KilledRig(next(schema), tmp_path_factory.mktemp("killed"))
    yield r
    r.stop()
    next(schema, None)


@pytest.mark.parametrize("column", [pytest.param(c, id=f"killed-{c}",
                                                 marks=_killed_marks(c))
                                    for c in KILLED_WEBHOOKS])
def test_worker_killed(killed_rig, column):
    rig = killed_rig
    story = Story(rig, transfer=column.startswith("transfer"))
    story.steps_before(column)
    token = "killed-" + secrets.token_hex(8)
    lock = HeldLock(rig.db_url)
    box: dict = {}

    def send():
        try:
            box["reply"] = story.send(column, token)[0]
        except requests.RequestException as exc:
            box["error"] = exc

    request = threading.Thread(target=send, daemon=True)
    request.start()
    try:
        wait_for(lock.waiters, 5, "the request to wait on the lock")
        assert rig.server.kill_workers()
        request.join(10)
        wait_for(lambda: not lock.waiters(), 5, "the server to end the dead worker's statement")
    finally:
        lock.release()
    assert "error" in box or box["reply"].status != 200, box
    rig.server.wait_ready()
    story.check(column, *story.send(column, token))  # Twilio's retry
    again, _ = story.send(column, token)
    assert again.status == 200
    story.steps_after(column)
    assert_recovered(rig.app, [story])


def cli_process(rig: Rig, *args: str) -> subprocess.Popen:
    """`python -m ivr ARGS` on the rig's database (directly) and instance folder."""
    app = rig.app
    env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
    env.update({"IVR_DATABASE_URL": rig.db_url, "IVR_INSTANCE_DIR": app.config["INSTANCE_DIR"],
                "IVR_AUDIO_DIR": app.config["AUDIO_DIR"], "IVR_PUBLIC_URL": rig.url,
                "IVR_FLOW": app.config["FLOW"], "IVR_FLOWS_DIR": app.config["FLOWS_DIR"],
                "IVR_PII_KEY": app.config["PII_KEY"], "IVR_HMAC_KEY": app.config["HMAC_KEY"],
                "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_ACCOUNT_SID": ACCOUNT})
    return subprocess.Popen([sys.executable, "-m", "ivr", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("row,column", [
    pytest.param("killed", c, id=f"killed-{c}", marks=_killed_marks(c))
    for c in ("sequencer", "spool_drain")])
def test_process_killed(rig, row, column):
    """The sequencer's pass, or a spool drain, killed while its transaction waits: the
    leaves stay queued (the record stays spooled) and the next pass (drain) applies them
    once."""
    app = rig.app
    story = Story(rig)
    if column == "spool_drain":
        rig.proxy.cut()
        story.run()
        rig.proxy.restore()
        assert spool_depth(app) == 4
        args = ("spool", "drain")
    else:
        story.run()
        args = ("audit", "integrate", "--once")
    with database(app).sessionmaker() as s:
        queued = s.scalar(select(func.count()).select_from(AuditQueue))
    newcomer = Story(rig)
    lock = HeldLock(rig.db_url)
    try:
        proc = cli_process(rig, *args)
        try:
            wait_for(lock.waiters, 20, f"`{' '.join(args)}` to wait on the lock")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        wait_for(lambda: not lock.waiters(), 5, "the server to end the dead process's statement")
        newcomer.check("incoming", *newcomer.send("incoming"))  # the lock still holds
    finally:
        lock.release()
    with database(app).sessionmaker() as s:
        assert s.scalar(select(func.count()).select_from(AuditQueue)) >= queued
    if column == "spool_drain":
        assert spool_depth(app) >= 4
    for step in newcomer.steps[1:]:
        newcomer.step(step)
    assert_recovered(app, [story, newcomer])


# --- the daily aggregates' recount ---------------------------------------------------------
#
# After integrating, a server's sequencer pass counts the marked days before today again
# (ivr/services/daily_aggregates.py). That is a background write of its own, so it meets
# the same faults: its transaction waits on the aggregates (another session holds them)
# when the fault strikes. A failed recount leaves every mark where it was, the pages keep
# counting the marked day from the stored rows, and the next pass counts it once.

RECOUNT_ROWS = ("refused", "reset", "frozen", "admin_shutdown", "killed")
AGGREGATES = "daily_consents"  # a table the recount writes, and no webhook does
AGGREGATE_TABLES = (DailyConsents, DailyNotices, DailyRuns, DailyHangups)


class PastClock:
    """The webhooks' clock two days back, a second further at each reading: the calls
    belong to a day the recount counts (it leaves today to the pages)."""

    def __init__(self):
        self.at = utcnow().replace(microsecond=0) - timedelta(days=2)

    def __call__(self) -> datetime:
        self.at += timedelta(seconds=1)
        return self.at


@pytest.fixture
def past_rig(app_config, twilio):
    clock = PastClock()
    app_config["CLOCK"] = clock
    r = Rig(app_config, twilio, statement_timeout=False)
    r.day = clock.at.astimezone(LOCAL).date()
    yield r
    r.stop()


def day_counts(rig) -> tuple[int, int, int]:
    """(marks, aggregated consents, consents the pages count) of the rig's past day, read
    on a connection of its own."""
    engine = create_engine(rig.db_url)
    try:
        with Session(engine) as s:
            marks = len(daily_aggregates.marked_days(s, rig.day, rig.day))
            stored = s.scalar(select(func.coalesce(func.sum(DailyConsents.consents), 0))
                              .where(DailyConsents.day == rig.day))
            read = daily_aggregates.Reader(s, rig.day, rig.day, None).consents()
            return marks, int(stored), sum(n for *_, n in read)
    finally:
        engine.dispose()


def recount_pass(app, box: dict) -> None:
    """The sequencer's pass in a thread, as a server's runs: it may first wait for the lock
    a pass of the test before still holds while its server ends that session."""
    try:
        with app.app_context():
            box["result"] = run_pass(app, wait=10.0)
    except Exception as exc:  # the fault's error, looked at by the test
        box["error"] = exc


def aggregate_rows(app) -> dict[str, list[tuple]]:
    """Every row of the daily aggregates, table by table."""
    with database(app).sessionmaker() as s:
        return {model.__tablename__: sorted(tuple(r) for r in s.execute(
            select(*model.__table__.columns))) for model in AGGREGATE_TABLES}


@pytest.mark.parametrize("row", RECOUNT_ROWS)
def test_recount_under_fault(past_rig, row):
    rig, app = past_rig, past_rig.app
    story = Story(rig)
    story.run()
    assert day_counts(rig) == (1, 0, 1)  # marked, not yet counted; the pages count it
    newcomer = Story(rig)
    lock = HeldLock(rig.db_url, table=AGGREGATES)
    box: dict = {}
    proc = None
    try:
        if row == "refused":  # the pass cannot even connect
            database(app).engine.dispose()
            rig.proxy.cut()
            background(app, "sequencer", box)
        elif row == "killed":  # `audit integrate --once` in production, as a process
            proc = cli_process(rig, "audit", "integrate", "--once")
            wait_for(lock.waiters, 20, "the recount to wait on the aggregates")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            wait_for(lambda: not lock.waiters(), 5, "the server to end the dead statement")
        else:
            worker = threading.Thread(target=recount_pass, args=(app, box), daemon=True)
            worker.start()
            wait_for(lambda: lock.waiters() or box, 20, "the recount to wait on the aggregates")
            assert lock.waiters(), f"the pass ended before its recount: {box}"
            if row == "reset":
                rig.proxy.cut()  # every connection dropped mid-statement
            elif row == "frozen":
                rig.proxy.freeze()
            else:
                admin = AdminShutdown(lock)
                wait_for(lambda: admin.ended, 5, "the administrator to end the recount")
                admin.stop()
            if row != "frozen":
                worker.join(15)
                assert not worker.is_alive(), "the pass did not end under the fault"
        newcomer.check("incoming", *newcomer.send("incoming"))  # callers go on meanwhile
        if row != "frozen":  # the recount failed: the mark stays, the pages still count
            assert row == "killed" or "error" in box, box
            assert day_counts(rig) == (1, 0, 1)
    finally:
        rig.proxy.restore()
        lock.release()
        if proc is not None and proc.poll() is None:
            proc.kill()
    if row == "frozen":  # it waited for the database, then counted the day
        worker.join(15)
        assert not worker.is_alive() and "error" not in box, box
        assert box["result"].recounted_days == 1
    else:
        again = cli_process(rig, "audit", "integrate", "--once")
        assert again.wait(60) == 0
    assert day_counts(rig) == (0, 1, 1)  # counted once, the mark gone
    maintained = aggregate_rows(app)
    result = app.test_cli_runner().invoke(cli, ["db", "rebuild-aggregates"])
    assert result.exit_code == 0, result.output
    assert aggregate_rows(app) == maintained  # what the recount stored is what a rebuild counts
    for step in newcomer.steps[1:]:
        newcomer.step(step)
    assert_recovered(app, [story, newcomer])
