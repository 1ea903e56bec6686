"""The hash chain: canonical entry bodies, domain-separated hashes, and appends.

An entry's hash is SHA-256(0x00 || previous hash (32 bytes) || canonical JSON body);
a checkpoint's signed message starts with 0x01 instead, so one can never pass for the
other. The first entry's previous hash is 32 zero bytes (`FIRST_PREV`).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import rfc8785
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ..storage.db import utcnow
from ..storage.models import AuditEntry

ENTRY_PREFIX = b"\x00"
CHECKPOINT_PREFIX = b"\x01"
FIRST_PREV = "00" * 32
# Any constant: the key of the PostgreSQL advisory lock that serialises appends.
_PG_LOCK_KEY = 0x1FC0_AD17


def canonical(data) -> bytes:
    """RFC 8785 canonical JSON bytes."""
    return rfc8785.dumps(data)


def entry_hash(prev_hash: str, body: bytes) -> str:
    """The hash of one entry, chained to the previous one."""
    return hashlib.sha256(ENTRY_PREFIX + bytes.fromhex(prev_hash) + body).hexdigest()


def iso(dt: datetime) -> str:
    """ISO 8601 UTC with microseconds and a Z, as stored in bodies."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lock_head(session: Session) -> None:
    """Hold the chain head until this transaction ends (appends and checkpoints)."""
    # Appends from every process are serialised until commit: on PostgreSQL by a
    # transaction-scoped advisory lock, on SQLite by BEGIN IMMEDIATE (see db.py).
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})


def head(session: Session) -> tuple[int, str]:
    """The (seq, hash) of the newest entry; (0, FIRST_PREV) for an empty log."""
    row = session.execute(
        select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
    ).first()
    return (row.seq, row.hash) if row else (0, FIRST_PREV)


def append(session: Session, entries: list[tuple[str, str | None, dict]],
           at: datetime | None = None) -> list[AuditEntry]:
    """Append (kind, ref, data) entries at the head of the chain, in this transaction.

    Call it last in a transaction: the head stays locked until commit.
    """
    if not entries:
        return []
    lock_head(session)
    session.flush()
    seq, prev = head(session)
    stamp = iso(at or utcnow())
    rows = []
    for kind, ref, data in entries:
        seq += 1
        body = canonical({"seq": seq, "kind": kind, "at": stamp, "ref": ref, "data": data})
        h = entry_hash(prev, body)
        rows.append(AuditEntry(seq=seq, prev_hash=prev, body=body.decode(), hash=h,
                               kind=kind, ref=ref))
        prev = h
    session.add_all(rows)
    session.flush()
    return rows


# UPDATE, DELETE and TRUNCATE are refused outright; an INSERT must extend the head (next
# seq, previous hash), so even a buggy writer cannot leave a gap or fork the chain. The
# first entry's previous hash, FIRST_PREV, is 64 zeros: repeat('0', 64), hex(zeroblob(32)).
_PG_GUARD = """
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION USING MESSAGE = 'audit_log is append-only: ' || TG_OP || ' is not allowed';
END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION audit_log_extend_head() RETURNS trigger AS $$
DECLARE
  head_seq bigint := 0;
  head_hash text := repeat('0', 64);
BEGIN
  SELECT seq, hash INTO head_seq, head_hash FROM audit_log ORDER BY seq DESC LIMIT 1;
  IF NOT FOUND THEN
    head_seq := 0;
    head_hash := repeat('0', 64);
  END IF;
  IF NEW.seq IS DISTINCT FROM head_seq + 1 OR NEW.prev_hash IS DISTINCT FROM head_hash THEN
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

_SQLITE_GUARD = [
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE is not allowed'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: DELETE is not allowed'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_log_extend_head BEFORE INSERT ON audit_log
       WHEN NEW.seq IS NOT (SELECT COALESCE(MAX(seq), 0) + 1 FROM audit_log)
         OR NEW.prev_hash IS NOT COALESCE(
              (SELECT hash FROM audit_log WHERE seq = NEW.seq - 1), hex(zeroblob(32)))
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: an entry must extend the head');
       END""",
]

# The trigger names, so tests that play the attacker (who has the database) can drop them.
TRIGGERS = {"postgresql": ["audit_log_append_only", "audit_log_no_truncate",
                           "audit_log_extend_head"],
            "sqlite": ["audit_log_no_update", "audit_log_no_delete", "audit_log_extend_head"]}


def guard_statements(dialect: str) -> list[str]:
    """SQL that makes the audit table reject UPDATE and DELETE on this backend."""
    return [_PG_GUARD] if dialect == "postgresql" else list(_SQLITE_GUARD)


def install_append_only_guard(engine: Engine) -> None:
    """Install the append-only triggers on the audit table."""
    with engine.begin() as conn:
        for stmt in guard_statements(engine.dialect.name):
            conn.exec_driver_sql(stmt)
