"""The audit store: the queue an entry joins with its fact, the append-only triggers on the
integrated log, the sequencer's lock key, and the queue's status.

`append` only queues an entry (ivr/audit/leaves.py makes its bytes), in the caller's
transaction, with no head read and no lock; the sequencer (ivr/services/audit_sequencer.py)
gives it its index later.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ivr.audit.leaves import leaf_body
from ivr.domain.times import AUDIT, utc_iso, utcnow

from .models import AuditQueue

log = logging.getLogger(__name__)

# Any constant: the key of the PostgreSQL advisory lock that one sequencer holds at a time.
_PG_LOCK_KEY = 0x1FC0_AD17
QUEUED_FLAG = "ivr_audit_queued"


def try_lock(conn, key: int, wait: float) -> bool:
    """Take a session advisory lock, trying for up to `wait` seconds (0: once)."""
    deadline = time.monotonic() + wait
    while True:
        got = conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({int(key)})").scalar()
        conn.commit()
        if got or time.monotonic() >= deadline:
            return bool(got)
        time.sleep(0.02)


def append(session: Session, entries: list[tuple[str, str | None, dict]],
           at: datetime | None = None) -> list[AuditQueue]:
    """Queue (kind, ref, data) entries as leaves in this transaction: they commit with the
    fact or not at all. No head is read and no lock is taken; order within the call is kept."""
    if not entries:
        return []
    now = utcnow()
    stamp = utc_iso(at or now, AUDIT)
    rows = [AuditQueue(kind=kind, ref=ref, body=leaf_body(kind, ref, data, stamp).decode(),
                       queued_at=now) for kind, ref, data in entries]
    session.add_all(rows)
    # Tells an inline sequencer (tests, `AUDIT_SEQUENCER=inline`) to run after the commit.
    session.info[QUEUED_FLAG] = True
    return rows


def leaf_columns(entries: list[tuple[str, str | None, dict]], at: datetime
                 ) -> tuple[list[str], list[str | None], list[str]]:
    """(kinds, refs, bodies) of entries queued at `at`, as `append` would queue them (for
    ivr/storage/webhook_functions.py, which queues them in the database)."""
    stamp = utc_iso(at, AUDIT)
    return ([kind for kind, _r, _d in entries], [ref for _k, ref, _d in entries],
            [leaf_body(kind, ref, data, stamp).decode() for kind, ref, data in entries])


# UPDATE, DELETE and TRUNCATE are refused outright; an INSERT must take the next seq, so even
# a buggy writer cannot leave a gap. Only the sequencer inserts here (one at a time).
_PG_GUARD = """
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION USING MESSAGE = 'audit_log is append-only: ' || TG_OP || ' is not allowed';
END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION audit_log_extend_head() RETURNS trigger AS $$
DECLARE
  head_seq bigint := 0;
BEGIN
  SELECT seq INTO head_seq FROM audit_log ORDER BY seq DESC LIMIT 1;
  IF NOT FOUND THEN
    head_seq := 0;
  END IF;
  IF NEW.seq IS DISTINCT FROM head_seq + 1 THEN
    RAISE EXCEPTION USING MESSAGE = 'audit_log is append-only: entry ' || NEW.seq
      || ' must extend the head (seq ' || head_seq || ')';
  END IF;
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS audit_log_extend_head ON audit_log;
CREATE TRIGGER audit_log_extend_head BEFORE INSERT ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_log_extend_head();
DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
"""

# The trigger names, so tests that play the attacker (who has the database) can drop them.
TRIGGERS = ["audit_log_append_only", "audit_log_no_truncate", "audit_log_extend_head"]


def guard_statements() -> list[str]:
    """SQL that makes the audit table reject UPDATE, DELETE and TRUNCATE."""
    return [_PG_GUARD]


def install_append_only_guard(engine: Engine) -> None:
    """Install the append-only triggers on the audit table."""
    with engine.begin() as conn:
        for stmt in guard_statements():
            conn.exec_driver_sql(stmt)


def queue_status(conn) -> tuple[int, float]:
    """(queued leaves, age in seconds of the oldest one; 0 when the queue is empty)."""
    depth, oldest = conn.execute(select(func.count(), func.min(AuditQueue.queued_at))).one()
    if not depth or oldest is None:
        return 0, 0.0
    return depth, max(0.0, (utcnow() - oldest).total_seconds())


def queue_report(engine) -> tuple[float, float]:
    """(queued leaves, oldest one's age in s) through this engine; NaNs when unreadable."""
    try:
        with engine.connect() as conn:
            depth, age = queue_status(conn)
    except SQLAlchemyError:
        log.warning("audit queue status unavailable", exc_info=True)
        return float("nan"), float("nan")
    return float(depth), age

