"""Helpers for the audit tests: fill the chain, and play an attacker who has the database."""

from __future__ import annotations

from sqlalchemy import text

from ivr.audit import chain
from ivr.cli.main import cli
from ivr.storage.db import database


def append_entries(app, count: int, *, per_transaction: int = 4, ref: str | None = "CAtest"):
    """Append `count` entries through the real append, a few per transaction."""
    db = database(app)
    n = 0
    while n < count:
        with db.sessionmaker() as s, s.begin():
            batch = []
            for _ in range(min(per_transaction, count - n)):
                n += 1
                batch.append(("test.fact", ref, {"n": n, "digits": "1", "note": "çağrı"}))
            chain.append(s, batch)


def rows(app) -> list[tuple]:
    """Every (seq, prev_hash, body, hash) in order."""
    with database(app).engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            text("SELECT seq, prev_hash, body, hash FROM audit_log ORDER BY seq"))]


def drop_guards(app) -> None:
    """What an attacker with database access does first: remove the append-only triggers."""
    engine = database(app).engine
    dialect = engine.dialect.name
    with engine.begin() as conn:
        for name in chain.TRIGGERS[dialect]:
            on = " ON audit_log" if dialect == "postgresql" else ""
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}{on}")


def tamper(app, *statements: str, **params) -> None:
    """Run SQL as the attacker, after dropping the guards, in one transaction."""
    drop_guards(app)
    with database(app).engine.begin() as conn:
        for sql in statements:
            conn.execute(text(sql), params)


def shift_up(app, from_seq: int) -> None:
    """Renumber entries from_seq.. one up (in two steps: the primary key is checked per row)."""
    tamper(app, "UPDATE audit_log SET seq = -seq WHERE seq >= :s",
           "UPDATE audit_log SET seq = 1 - seq WHERE seq < 0", s=from_seq)


def rehash_from(app, seq: int) -> None:
    """Recompute every link and hash from `seq` to the head: a careful rewrite."""
    drop_guards(app)
    all_rows = rows(app)
    prev = all_rows[seq - 2][3] if seq > 1 else chain.FIRST_PREV
    with database(app).engine.begin() as conn:
        for s, _p, body, _h in all_rows[seq - 1:]:
            h = chain.entry_hash(prev, body.encode())
            conn.execute(text("UPDATE audit_log SET prev_hash = :p, hash = :h WHERE seq = :s"),
                         {"p": prev, "h": h, "s": s})
            prev = h


def invoke(app, *args: str):
    """`python -m ivr ARGS...` against this app."""
    return app.test_cli_runner().invoke(cli, list(args))
