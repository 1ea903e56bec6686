"""Appends from many OS processes at once (gunicorn workers) queue their leaves without any
lock; one sequencer integrates each exactly once, with no gap: 8 spawned processes append to
the same database."""

from __future__ import annotations

import json
import multiprocessing

import pytest
from sqlalchemy import text

from ivr.storage import audit_store
from ivr.storage.audit_store import _PG_LOCK_KEY
from ivr.web.current import database
from tests.support.audit import invoke

PROCESSES = 8
TRANSACTIONS = 12  # per process; each appends 1 to 3 entries
ROUND = 4  # the workers meet at a barrier every ROUND transactions and start each round together


@pytest.fixture
def app_config(app_config):
    """No sequencer in the test's own process: the test decides when one runs."""
    return {**app_config, "AUDIT_SEQUENCER": "off"}


def _append_worker(url: str, worker: int, go, ready, rounds) -> None:
    """One process: its own engine, TRANSACTIONS appends, each in its own transaction.

    Left alone, the OS may run one worker's appends in a single slice, so the workers meet at
    a barrier every ROUND transactions: every round starts with all eight contending at once."""
    from ivr.storage import audit_store
    from ivr.storage.db import Database

    db = Database(url)
    with db.engine.connect():
        pass  # connect before the start line, so the appends really overlap
    ready.release()
    go.wait(120)
    for i in range(TRANSACTIONS):
        if i and i % ROUND == 0:
            rounds.wait(120)
        with db.sessionmaker() as s, s.begin():
            audit_store.append(s, [("test.concurrent", f"w{worker}",
                                    {"worker": worker, "i": i, "part": part})
                             for part in range(1 + (worker + i) % 3)])
    db.engine.dispose()


def expected_entries() -> int:
    return sum(1 + (w + i) % 3 for w in range(PROCESSES) for i in range(TRANSACTIONS))


def test_eight_processes_append_without_fork_or_gap(app):
    ctx = multiprocessing.get_context("spawn")
    go, ready, rounds = ctx.Event(), ctx.Semaphore(0), ctx.Barrier(PROCESSES)
    url = app.config["DATABASE_URL"]
    procs = [ctx.Process(target=_append_worker, args=(url, w, go, ready, rounds))
             for w in range(PROCESSES)]
    for p in procs:
        p.start()
    for _ in procs:
        assert ready.acquire(timeout=120), "a worker did not start"
    go.set()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0] * PROCESSES

    total = expected_entries()
    with database(app).engine.connect() as conn:
        queued = conn.execute(text("SELECT COUNT(*) FROM audit_queue")).scalar()
    assert queued == total  # the workers ran no sequencer: every leaf waits in the queue
    result = invoke(app, "audit", "integrate", "--once")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"integrated {total} leaves; tree size {total}; signed ")
    with database(app).engine.connect() as conn:
        seqs = [r[0] for r in conn.execute(text("SELECT seq FROM audit_log ORDER BY seq"))]
        bodies_once = conn.execute(text("SELECT COUNT(DISTINCT body), COUNT(*) FROM audit_log"))
        distinct, count = bodies_once.one()
        refs = [r[0] for r in conn.execute(text("SELECT ref FROM audit_log ORDER BY seq"))]
        assert conn.execute(text("SELECT COUNT(*) FROM audit_queue")).scalar() == 0
    assert seqs == list(range(1, total + 1))  # no gap
    assert distinct == count == total  # every leaf integrated exactly once
    assert len(set(refs)) == PROCESSES
    # The appends really interleaved: each round holds every worker, so the chain switches
    # workers at least PROCESSES - 1 times a round.
    switches = sum(1 for a, b in zip(refs, refs[1:], strict=False) if a != b)
    assert switches >= (PROCESSES - 1) * (TRANSACTIONS // ROUND)

    result = invoke(app, "audit", "verify")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"ok: {total} leaves, 1 signed checkpoints, root ")
    # Each worker's own entries are there, in its own order.
    with database(app).engine.connect() as conn:
        bodies = [r[0] for r in conn.execute(text("SELECT body FROM audit_log ORDER BY seq"))]
    for w in range(PROCESSES):
        mine = [(d["data"]["i"], d["data"]["part"]) for d in map(json.loads, bodies)
                if d["data"]["worker"] == w]
        assert mine == [(i, part) for i in range(TRANSACTIONS)
                        for part in range(1 + (w + i) % 3)]


def test_appends_take_no_lock_and_commit_while_the_sequencer_is_held(app):
    """Two webhooks' transactions of different calls commit while another process holds the
    sequencer's lock, and neither holds an advisory lock of its own."""
    db = database(app)
    with db.engine.connect() as holder:
        holder.exec_driver_sql(f"SELECT pg_advisory_lock({_PG_LOCK_KEY})")
        holder.commit()
        sessions = [db.sessionmaker() for _ in range(2)]
        pids = []
        for n, s in enumerate(sessions):
            s.begin()
            audit_store.append(s, [("call.status", f"CAcall{n}", {"status": "ringing"})])
            s.flush()
            pids.append(s.execute(text("SELECT pg_backend_pid()")).scalar())
        with db.engine.connect() as probe:
            held = probe.execute(text(
                "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND pid = ANY(:pids)"), {"pids": pids}).scalar()
        assert held == 0
        for s in sessions:
            s.commit()  # both commit while the sequencer is paused
            s.close()
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM audit_queue")).scalar() == 2
            assert conn.execute(text("SELECT COUNT(*) FROM audit_log")).scalar() == 0
        holder.exec_driver_sql(f"SELECT pg_advisory_unlock({_PG_LOCK_KEY})")
        holder.commit()
    result = invoke(app, "audit", "integrate", "--once")
    assert result.exit_code == 0 and result.output.startswith("integrated 2 leaves"), \
        result.output
