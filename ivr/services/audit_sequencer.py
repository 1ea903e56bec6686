"""The sequencer: integrates queued leaves into the Merkle tree and signs checkpoints.

One sequencer runs at a time: the holder of a session advisory try-lock. A pass takes every
visible queued leaf in queue-id order, in short transactions of at most BATCH leaves, each
one call of ivr_audit_integrate (which gives them the next indexes, stores their leaf hashes
and the tree's completed nodes, deletes them from the queue), and signs a checkpoint (a
C2SP tlog-checkpoint in a signed note) when the tree has grown and the last one is
CHECKPOINT_INTERVAL old, or when asked to.

Every server process runs a pass each MMD / 2 in a background thread; whichever gets the
lock integrates, the others skip. A dead leader's lock goes with its connection, so another
process takes over within one MMD.

After integrating, the pass counts again the days of the daily aggregates that writes
marked (ivr/services/daily_aggregates.py), at most every AGGREGATE_EVERY seconds; the
inline pass of the tests, which runs inside a request, leaves that to the others.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from sqlalchemy import event, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ivr.audit import note
from ivr.audit.errors import AuditError
from ivr.domain.times import LOCAL, utcnow
from ivr.storage import anchor_store
from ivr.storage.audit_store import _PG_LOCK_KEY, QUEUED_FLAG, queue_report, try_lock
from ivr.storage.audit_tree import StoredTree, latest_head
from ivr.storage.db import Database, database
from ivr.storage.models import AuditTreeHead, Setting

from . import anchoring, audit_keys, daily_aggregates, notice_dropoff

log = logging.getLogger(__name__)

BATCH = 5000
# Seconds between counts of the marked days (ivr/services/daily_aggregates). A server's pass
# counts only the days before today: while calls come in, today is marked again within
# seconds of any count, and the pages count a marked day from the stored rows themselves.
# Counting today every 5 s re-read the whole day in a server's thread, held the sequencer
# behind it and took the fresh-caller ratio from 0.568 to 0.509 (benchmarks/README.md).
AGGREGATE_EVERY = 60.0
_AGGREGATED = "ivr_aggregated_at"
MMD_ENV = "IVR_AUDIT_MMD"
INTERVAL_ENV = "IVR_AUDIT_CHECKPOINT_INTERVAL"
ORIGIN_SETTING = "audit.log_origin"


def mmd(app: Flask) -> float:
    """The maximum merge delay in seconds (IVR_AUDIT_MMD, default 1)."""
    return float(app.config.get("AUDIT_MMD") or os.environ.get(MMD_ENV) or 1.0)


def checkpoint_interval(app: Flask) -> float:
    """Seconds between checkpoints while the tree grows (IVR_AUDIT_CHECKPOINT_INTERVAL)."""
    return float(app.config.get("AUDIT_CHECKPOINT_INTERVAL") or os.environ.get(INTERVAL_ENV)
                 or 60.0)


def mode(app: Flask) -> str:
    """'thread' (servers), 'inline' (tests: a pass after every commit that queued), or 'off'."""
    return app.config.get("AUDIT_SEQUENCER") or ("inline" if app.testing else "thread")


# --- the log's name -------------------------------------------------------------------


def default_origin(app: Flask) -> str:
    """This log's origin line: the public host, then /audit-log."""
    host = urlsplit(app.config.get("PUBLIC_URL") or "").netloc or "ivr"
    return f"{host}/audit-log"


def log_origin(conn, app: Flask) -> str:
    """The origin pinned by the first checkpoint, else the one the next would take."""
    stored = conn.scalar(select(Setting.value).where(Setting.name == ORIGIN_SETTING))
    return stored or default_origin(app)


def note_verifier(app: Flask, origin: str, key: Ed25519PrivateKey | None = None) -> note.Verifier:
    """The log's signed-note verifier: its origin as the key name, its Ed25519 key."""
    return note.verifier(origin, key or _signing_key(app))


def _signing_key(app: Flask) -> Ed25519PrivateKey:
    # audit_keys.signing_key makes a missing key; its None is for create=False only.
    key = audit_keys.signing_key(app.config)
    if key is None:
        raise RuntimeError("audit_keys.signing_key made no key")
    return key


# --- one pass -------------------------------------------------------------------------


@dataclass
class PassResult:
    """What one sequencer pass did."""

    integrated: int = 0
    tree_size: int = 0
    checkpoint: AuditTreeHead | None = None
    refused: str | None = None
    recounted_days: int = 0  # days of the daily aggregates counted again


def _integrate_batch(conn: Connection, now: datetime) -> tuple[int, int, StoredTree]:
    """Integrate up to BATCH queued leaves with ivr_audit_integrate (ivr/storage/
    audit_functions.py): (how many, the tree's size after, the stored tree)."""
    integrated, size = conn.exec_driver_sql(
        "SELECT integrated, size FROM ivr_audit_integrate(%(batch)s, %(now)s)",
        {"batch": BATCH, "now": now}).one()
    return integrated, size, StoredTree(conn)


def sign_checkpoint(conn: Connection, app: Flask, key: Ed25519PrivateKey, size: int,
                    root: bytes, now: datetime) -> AuditTreeHead:
    """Sign and store the checkpoint of the tree at `size` (pins the log's origin)."""
    origin = conn.scalar(select(Setting.value).where(Setting.name == ORIGIN_SETTING))
    if origin is None:
        origin = default_origin(app)
        conn.execute(insert(Setting).values(name=ORIGIN_SETTING, value=origin))
    text = note.sign_checkpoint(note.Checkpoint(origin, size, root), origin, key)
    row_id = conn.execute(insert(AuditTreeHead).values(
        tree_size=size, root_hash=root.hex(), at=now, note=text)
        .returning(AuditTreeHead.id)).scalar_one()
    return AuditTreeHead(id=row_id, tree_size=size, root_hash=root.hex(), at=now, note=text)


def _due(conn: Connection, size: int, now: datetime, interval: float, force: bool) -> bool:
    last = latest_head(conn)
    if last is None:
        return size > 0
    if size <= last.tree_size:
        return False
    # At the first pass after an Istanbul midnight the tree is signed at once, so the
    # day's last leaves are in a checkpoint that gets time-stamped (ivr/services/anchoring.py).
    return (force or now - last.at >= timedelta(seconds=interval)
            or anchoring.new_day(last.at, now))


def _fork(conn: Connection, app: Flask, key: Ed25519PrivateKey, tree: StoredTree,
          size: int) -> str | None:
    """Why signing the tree at `size` would publish a second history (None when it extends
    the latest checkpoint in the database and the one kept outside it)."""
    known = []
    last = latest_head(conn)
    if last is not None:
        known.append((f"checkpoint #{last.id}", last.tree_size, bytes.fromhex(last.root_hash)))
    outside = anchoring.read_published(anchoring.settings(app),
                                       note_verifier(app, log_origin(conn, app), key))
    if outside is not None:
        known.append((f"the published checkpoint kept in "
                      f"{anchoring.settings(app).published_file}", outside.size, outside.root))
    return anchoring.check_published(tree, size, known)


def run_pass(app: Flask, *, force_checkpoint: bool = False, wait: float = 0.0,
             key: Ed25519PrivateKey | None = None, recount: bool = True) -> PassResult | None:
    """Integrate every visible queued leaf and sign a checkpoint when due; None when
    another sequencer holds the lock (after waiting up to `wait` seconds)."""
    db: Database = database(app)
    result = PassResult()
    with db.engine.connect() as conn:
        if not try_lock(conn, _PG_LOCK_KEY, wait):
            return None
        try:
            interval = checkpoint_interval(app)
            while True:
                with conn.begin():
                    now = utcnow()
                    count, size, tree = _integrate_batch(conn, now)
                    result.integrated += count
                    result.tree_size = size
                    more = count == BATCH
                    if not more and _due(conn, size, now, interval, force_checkpoint):
                        key = key or _signing_key(app)
                        result.refused = _fork(conn, app, key, tree, size)
                        if result.refused is None:
                            result.checkpoint = sign_checkpoint(conn, app, key, size,
                                                                tree.root(size), now)
                        _note_refusal(conn, result.refused)
                    if not more:
                        anchoring.mark_wanted(conn, anchoring.settings(app), result.checkpoint,
                                              now)
                if not more:
                    if result.checkpoint is not None:
                        anchoring.write_published(anchoring.settings(app),
                                                  result.checkpoint.note, size)
                    break
            if recount:
                result.recounted_days = _recount_marked_days(app, db)
            return result
        finally:
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_PG_LOCK_KEY})")
            conn.commit()


def _recount_marked_days(app: Flask, db: Database) -> int:
    """Count the days a write marked again (the daily aggregates), at most every
    AGGREGATE_EVERY seconds (every pass of a testing app's CLI); returns how many days."""
    now = time.monotonic()
    every = 0.0 if mode(app) == "inline" else AGGREGATE_EVERY
    if now - app.extensions.get(_AGGREGATED, -every) < every:
        return 0
    s = db.sessionmaker()
    try:
        with s.begin():
            days = daily_aggregates.refresh(
                s, notice_dropoff.audio_seconds(app.config["AUDIO_DIR"]),
                before=None if every == 0.0 else utcnow().astimezone(LOCAL).date())
    finally:
        s.close()
    app.extensions[_AGGREGATED] = now
    return days


def _note_refusal(conn: Connection, reason: str | None) -> None:
    """Record why no checkpoint may be signed (for /readyz), or that it may again."""
    if reason is not None and anchor_store.refused(conn) != reason:
        log.error("audit sequencer: refusing to sign a checkpoint: %s", reason)
    anchor_store.set_refused(conn, reason)


def queue_check(app: Flask, engine) -> str:
    """The /readyz line: always 'ok' (a slow sequencer must not stop calls), with the queue
    depth and the oldest leaf's age, flagged when it exceeds the MMD."""
    depth, age = queue_report(engine)
    if depth != depth:  # NaN: the database check says why
        return "ok (queue unreadable)"
    late = "; over the MMD: is a sequencer running?" if age > mmd(app) else ""
    return f"ok ({int(depth)} queued, oldest {age:.1f} s{late})"


# --- running it -----------------------------------------------------------------------


class SequencerThread(threading.Thread):
    """The background sequencer of one server process. It holds its app weakly: it ends
    when the app is gone (or on stop())."""

    def __init__(self, app: Flask):
        super().__init__(name="ivr-audit-sequencer", daemon=True)
        self.app_ref = weakref.ref(app)
        self.period = mmd(app) / 2
        self.stopping = threading.Event()

    def run(self) -> None:
        failing = ""
        while not self.stopping.wait(self.period):
            app = self.app_ref()
            if app is None:
                return
            try:
                run_pass(app)
                failing = ""
            except Exception as e:  # a failed pass is retried; leaves stay queued
                # Log a failure once, not every MMD / 2, until a pass succeeds again.
                if str(e) != failing:
                    log.exception("audit sequencer pass failed; retrying every %.1f s",
                                  self.period)
                failing = str(e)
            del app

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread (tests; a server's ends with its process)."""
        self.stopping.set()
        self.join(timeout)


_THREAD = "ivr_audit_sequencer"
_lock = threading.Lock()


def ensure_thread(app: Flask) -> None:
    """Start this process's sequencer thread for the app once (after a fork, the child
    starts its own)."""
    pid = os.getpid()
    running = app.extensions.get(_THREAD)
    if running is not None and running[0] == pid:
        return
    with _lock:
        running = app.extensions.get(_THREAD)
        if running is None or running[0] != pid:
            t = SequencerThread(app)
            t.start()
            app.extensions[_THREAD] = (pid, t)


def stop_thread(app: Flask) -> None:
    """Stop the app's sequencer thread in this process, if it runs."""
    running = app.extensions.pop(_THREAD, None)
    if running is not None and running[0] == os.getpid():
        running[1].stop()


def _inline_pass(app: Flask) -> None:
    # Not the daily aggregates: this pass runs inside the request that committed, and the
    # pages count a marked day from the stored rows until a thread or CLI pass counts it.
    try:
        run_pass(app, wait=30.0, recount=False)
    except AuditError:
        raise
    except Exception:  # the leaves stay queued for the next pass
        log.exception("inline audit sequencer pass failed")


def _inline_after_commit(app: Flask):
    def after_commit(session: Session) -> None:
        if session.info.pop(QUEUED_FLAG, False):
            _inline_pass(app)

    return after_commit


def leaves_committed(app: Flask) -> None:
    """Leaves were committed outside a session (ivr/services/webhooks.py): an inline
    sequencer integrates them now, as it does after a session's commit."""
    if mode(app) == "inline":
        _inline_pass(app)


def _forget_queued(session: Session, *_args) -> None:
    session.info.pop(QUEUED_FLAG, None)


def init_app(app: Flask) -> None:
    """Start the sequencer as configured: a thread per server process, or inline."""
    how = mode(app)
    if how == "inline":
        maker = database(app).sessionmaker
        event.listen(maker, "after_commit", _inline_after_commit(app))
        event.listen(maker, "after_rollback", _forget_queued)
    elif how == "thread":
        app.before_request(lambda: ensure_thread(app))
        app.before_request(lambda: anchoring.ensure_thread(app))
