"""Helpers for the audit tests: fill the chain, and play an attacker who has the database."""

from __future__ import annotations

from sqlalchemy import text

from ivr.audit import leaves
from ivr.cli.main import cli
from ivr.storage import audit_store
from ivr.web.current import database


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
            audit_store.append(s, batch)


def rows(app) -> list[tuple]:
    """Every (seq, prev_hash, body, hash) in order."""
    with database(app).engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            text("SELECT seq, prev_hash, body, hash FROM audit_log ORDER BY seq"))]


def drop_guards(app) -> None:
    """What an attacker with database access does first: remove the append-only triggers."""
    with database(app).engine.begin() as conn:
        for name in audit_store.TRIGGERS:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON audit_log")


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
    prev = all_rows[seq - 2][3] if seq > 1 else leaves.FIRST_PREV
    with database(app).engine.begin() as conn:
        for s, _p, body, _h in all_rows[seq - 1:]:
            h = leaves.entry_hash(prev, body.encode())
            conn.execute(text("UPDATE audit_log SET prev_hash = :p, hash = :h WHERE seq = :s"),
                         {"p": prev, "h": h, "s": s})
            prev = h


def invoke(app, *args: str):
    """`python -m ivr ARGS...` against this app."""
    return app.test_cli_runner().invoke(cli, list(args))


def make_legacy_log(app, count: int, checkpoint_at: int | None = None,
                    ref: str = "CAold") -> None:
    """A database as the release before the Merkle log left it: the schema at revision 0002
    and a hash chain of `count` entries (and, after entry `checkpoint_at`, a signed chain
    checkpoint with its audit.checkpoint entry), then `db upgrade` to the head."""
    import base64

    from ivr.audit import checkpoint as cps
    from ivr.services import audit_keys
    from ivr.storage.migrate import upgrade

    upgrade(app, "0002")
    with app.app_context():
        key = audit_keys.signing_key(app.config)
    prev, seq, rows_ = leaves.FIRST_PREV, 0, []
    cps_rows = []

    def add(kind, ref_, data):
        nonlocal prev, seq
        seq += 1
        body = leaves.canonical({"seq": seq, "kind": kind, "at": "2026-11-01T10:00:00.000000Z",
                                "ref": ref_, "data": data})
        h = leaves.entry_hash(prev, body)
        rows_.append({"seq": seq, "p": prev, "b": body.decode(), "h": h, "k": kind, "r": ref_})
        prev = h

    for n in range(1, count + 1):
        add("test.fact", ref, {"n": n, "digits": "1", "note": "çağrı"})
        if n == checkpoint_at:
            cp = cps.Checkpoint(seq, prev, "2026-11-01T10:00:01.000000Z", cps.key_id(key), "")
            sig = base64.b64encode(key.sign(cp.message())).decode()
            cps_rows.append({"seq": seq, "h": prev, "kid": cp.key_id, "sig": sig,
                             "body": cp.body().decode()})
            add(cps.ENTRY_KIND, None, {"checkpoint_id": 1, "seq": cp.seq, "hash": cp.hash,
                                       "at": cp.at, "key_id": cp.key_id, "signature": sig})
    from datetime import UTC, datetime

    with database(app).engine.begin() as conn:
        for i in range(0, len(rows_), 1000):
            conn.execute(text("INSERT INTO audit_log (seq, prev_hash, body, hash, kind, ref) "
                              "VALUES (:seq, :p, :b, :h, :k, :r)"), rows_[i:i + 1000])
        for r in cps_rows:
            conn.execute(text("INSERT INTO audit_checkpoints (seq, hash, at, key_id, "
                              "signature, body) VALUES (:seq, :h, :at, :kid, :sig, :body)"),
                         {**r, "at": datetime(2026, 11, 1, 10, 0, 1, tzinfo=UTC)})
    upgrade(app)
