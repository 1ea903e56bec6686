"""The sequencer as operators run it: a background thread in every server process (one at a
time integrates), the checkpoint interval, and the queue in /metrics and /readyz."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select, text

from ivr import create_app
from ivr.adapters.simulate import Caller, http_transport
from ivr.services import audit_keys, audit_sequencer
from ivr.storage.audit_store import _PG_LOCK_KEY
from ivr.storage.models import AuditEntry
from ivr.web.current import database
from tests.integration.conftest import AUTH_TOKEN
from tests.support.audit import append_entries, invoke
from tests.support.gunicorn_server import Gunicorn


@pytest.fixture
def app_config(app_config):
    """The test decides when the sequencer runs."""
    return {**app_config, "AUDIT_SEQUENCER": "off"}


def queued(app) -> int:
    with database(app).engine.connect() as conn:
        return conn.execute(text("SELECT COUNT(*) FROM audit_queue")).scalar()


def heads(app) -> int:
    with database(app).engine.connect() as conn:
        return conn.execute(text("SELECT COUNT(*) FROM audit_tree_heads")).scalar()


def metric(client, name: str) -> float:
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_queue_in_metrics_and_readyz(app, client):
    assert metric(client, "ivr_audit_queue_depth") == 0
    assert metric(client, "ivr_audit_queue_oldest_seconds") == 0
    append_entries(app, 3)
    assert metric(client, "ivr_audit_queue_depth") == 3
    assert metric(client, "ivr_audit_queue_oldest_seconds") > 0
    check = client.get("/readyz").get_json()["checks"]["audit_queue"]
    assert check.startswith("ok (3 queued, oldest ")
    with app.app_context():
        audit_sequencer.run_pass(app)
    assert metric(client, "ivr_audit_queue_depth") == 0
    assert client.get("/readyz").get_json()["checks"]["audit_queue"] == \
        "ok (0 queued, oldest 0.0 s)"


def test_checkpoint_interval(app_config):
    app = create_app({**app_config, "AUDIT_CHECKPOINT_INTERVAL": 3600})
    database(app).create_all()
    try:
        with app.app_context():
            append_entries(app, 2)
            assert audit_sequencer.run_pass(app).checkpoint is not None  # the first one at once
            append_entries(app, 2)
            result = audit_sequencer.run_pass(app)
            assert result.integrated == 2 and result.checkpoint is None  # not due yet
            assert audit_sequencer.run_pass(app, force_checkpoint=True).checkpoint.tree_size == 4
            app.config["AUDIT_CHECKPOINT_INTERVAL"] = 0.001
            append_entries(app, 1)
            time.sleep(0.01)  # longer than the interval since the last checkpoint
            assert audit_sequencer.run_pass(app).checkpoint.tree_size == 5  # due: the tree grew
            assert audit_sequencer.run_pass(app).checkpoint is None  # it did not grow since
    finally:
        database(app).engine.dispose()


def _wait_until(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def threaded(app_config):
    """An app whose sequencer is the background thread, with an MMD of 0.2 s."""
    app = create_app({**app_config, "AUDIT_SEQUENCER": "thread", "AUDIT_MMD": 0.2})
    database(app).create_all()
    yield app
    audit_sequencer.stop_thread(app)
    database(app).engine.dispose()


def test_the_background_thread_integrates_within_the_mmd(threaded):
    threaded.test_client().get("/healthz")  # the first request starts this process's thread
    append_entries(threaded, 5)
    assert _wait_until(lambda: queued(threaded) == 0, 2 * 0.2 + 1.0)
    assert heads(threaded) == 1
    with database(threaded).sessionmaker() as s:
        rows = s.execute(select(AuditEntry.queued_at, AuditEntry.integrated_at)).all()
    delays = [(b - a).total_seconds() for a, b in rows]
    assert len(delays) == 5 and max(delays) <= 1.0, delays  # within IVR_AUDIT_MMD's default


def test_only_the_lock_holder_integrates_and_another_takes_over(threaded):
    # Another process is the sequencer: this one's thread must leave the queue alone...
    with database(threaded).engine.connect() as leader:
        leader.exec_driver_sql(f"SELECT pg_advisory_lock({_PG_LOCK_KEY})")
        leader.commit()
        threaded.test_client().get("/healthz")
        append_entries(threaded, 4)
        time.sleep(3 * 0.2)
        assert queued(threaded) == 4
        leader.invalidate()  # the leader's process dies: its connection closes
    # ...until that process dies (its connection, and so its lock, is gone): this one takes
    # over within 2 MMD.
    assert _wait_until(lambda: queued(threaded) == 0, 2 * 0.2 + 1.0)


@pytest.mark.slow
def test_two_servers_share_one_sequencer_and_survive_a_kill(app, app_config):
    """Two gunicorn servers on one PostgreSQL take calls at once; each runs sequencer
    threads. SIGKILL one server's workers, and the other keeps integrating: every leaf is
    integrated exactly once, and verify is green."""
    with app.app_context():
        # One key file, made before either server could race for it.
        audit_keys.signing_key(app.config)
    config = {**app_config, "AUDIT_SEQUENCER": "thread"}
    a, b = Gunicorn(config, workers=2), Gunicorn(config, workers=2)
    try:
        def calls(server, n):
            for _ in range(n):
                c = Caller(server.url, AUTH_TOKEN, http_transport())
                c.press(c.dial(), "1")
                c.hang_up()

        threads = [threading.Thread(target=calls, args=(s, 3)) for s in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert _wait_until(lambda: queued(app) == 0, 5.0)
        a.kill_workers()
        calls(b, 3)
        assert _wait_until(lambda: queued(app) == 0, 5.0)
    finally:
        a.stop()
        b.stop()
    with database(app).engine.connect() as conn:
        seqs = [r[0] for r in conn.execute(text("SELECT seq FROM audit_log ORDER BY seq"))]
        distinct = conn.execute(text("SELECT COUNT(DISTINCT body) FROM audit_log")).scalar()
    assert seqs == list(range(1, len(seqs) + 1)) and distinct == len(seqs)
    result = invoke(app, "audit", "verify")
    assert result.exit_code == 0, result.output
